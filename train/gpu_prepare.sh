#!/usr/bin/env bash
# Before a lent-GPU run of train/gpu_run.sh (train/README.md, "On a lent GPU"), here on the CPU:
#   1. the parsed text sources the GPU machine cannot build (no WordNet, no `bible` CLI) into
#      train/runs/gpu-carry/ (carry that path with the device call);
#   2. the diffusion models' weights out of the working tree (a device call copies at most 64 MiB;
#      the run needs only the AR twin), kept in train/runs/held-weights/;
#   3. the size of what the device call will copy.
# `bash train/gpu_prepare.sh --restore` puts the weights back (after unpacking the run's models,
# it leaves the new ones in place and only restores what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
HELD=train/runs/held-weights
MOVE=(quench-tiny quench-tiny-bd)

if [ "${1:-}" = --restore ]; then
  for m in "${MOVE[@]}"; do
    if [ -f "$HELD/$m.safetensors" ] && [ ! -f "models/$m/model.safetensors" ]; then mv "$HELD/$m.safetensors" "models/$m/model.safetensors"; echo "restored models/$m/model.safetensors"; fi
  done
  exit 0
fi

mkdir -p train/runs/cache train/runs/gpu-carry "$HELD"
[ -f train/runs/cache/text_sources.json.gz ] || "$PY" train/tasks.py --write-text-cache
cp train/runs/cache/text_sources.json.gz train/runs/gpu-carry/
plain=$(cd train && "$PY" -c "import data; print(data.plain_cache_path('tokenizer/tokenizer.json'))")
# (the plain-text token cache is written by the first run that reads the data: one step makes it)
[ -f "$plain" ] || "$PY" train/train.py --kind ar --steps 1 --minutes 1 --threads 2 --out /tmp/quench-prepare-step > /dev/null
gzip -c "$plain" > train/runs/gpu-carry/plain.npy.gz
for m in "${MOVE[@]}"; do
  if [ -f "models/$m/model.safetensors" ]; then mv "models/$m/model.safetensors" "$HELD/$m.safetensors"; echo "moved models/$m/model.safetensors to $HELD/"; fi
done
# (tracked files still here: the moved weights are not copied)
tree=$(git ls-files -z | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}' || true)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r stat -c %s | awk '{s+=$1} END {print s+0}')
carry=$(du -sb train/runs/gpu-carry | cut -f1)
total=$((tree + untracked + carry))
awk -v t="$total" -v a="$tree" -v u="$untracked" -v c="$carry" 'BEGIN { m = 1048576; printf "the device call copies %.1f MiB (tracked %.1f, untracked %.1f, carry %.1f); the limit is 64 MiB\n", t / m, a / m, u / m, c / m }'
[ "$total" -lt $((64 * 1048576)) ] || { echo "too large: move more out of the tree" >&2; exit 1; }
echo 'ready: run train/gpu_run.sh on the device with carry ["train/runs/gpu-carry"]; afterwards: bash train/gpu_prepare.sh --restore'
