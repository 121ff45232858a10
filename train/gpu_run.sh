#!/usr/bin/env bash
# One-shot training of both bundled models on a lent GPU (see train/README.md, "On a lent GPU").
# Expects the parsed text sources in train/runs/gpu-carry/ (text_sources.json.gz, plain.npy.gz), writes the
# exported model directories as a split tarball plus the training log into $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-512}
WORKERS=${WORKERS:-12}
LR=${LR:-1e-3}  # 2e-3 diverged for the diffusion model (train/logs)
INIT=${INIT:-}  # an exported model directory to start both models from (e.g. models/quench-tiny-ar)
INIT_DIFFUSION=${INIT_DIFFUSION:-}  # ... and one for the diffusion model alone (continue each bundled model)
FAMILY_WEIGHTS=${FAMILY_WEIGHTS:-}  # e.g. "mul=4,sort_words=4" (train.py --family-weights)
SHIFT=${SHIFT:-}  # non-empty: adapt the diffusion model Dream-style (train.py --shift; exported in the Dream layout)
NAME=${NAME:-quench-tiny}  # the diffusion model's directory in the tarball (quench-tiny-bd for a --block run)
RUN=${RUN:-/tmp/quench-run}
EXP=${EXP:-/tmp/quench-export}
EXTRA=("$@")  # further train.py arguments (e.g. --block 4, --edit-noise 0.15)
cd "$(dirname "$0")/.."
mkdir -p train/runs/cache "$OUT"
cp train/runs/gpu-carry/text_sources.json.gz train/runs/cache/
gunzip -c train/runs/gpu-carry/plain.npy.gz > "$(cd train && $PY -c "import data; print(data.plain_cache_path('tokenizer/tokenizer.json'))")"
nvidia-smi -L 2>/dev/null; nproc
train() {
  $PY train/train.py --kind both --device "$DEVICE" --minutes "$MINUTES" --batch "$BATCH" --lr "$LR" \
    --log-every 100 --ckpt-every 120 --out "$RUN" ${INIT:+--init-from "$INIT"} \
    ${INIT_DIFFUSION:+--init-diffusion "$INIT_DIFFUSION"} ${FAMILY_WEIGHTS:+--family-weights "$FAMILY_WEIGHTS"} ${SHIFT:+--shift} "${EXTRA[@]}" "$@" 2>&1 | tee -a "$OUT/train.log"
}
# fall back to in-process data generation if the worker processes fail (resumes from the last checkpoint)
train --workers "$WORKERS" || train --workers 0
for kind in diffusion ar; do
  name=$NAME; [ "$kind" = ar ] && name=quench-tiny-ar
  $PY train/export.py --ckpt "$RUN/$kind/ckpt.pt" --kind "$kind" --out "$EXP/$name" 2>&1 | tee -a "$OUT/train.log"
done
tar czf - -C "$EXP" . | split -b 15M - "$OUT/models.tgz."
ls -la "$OUT"
