"""Sanity-check sampler for a checkpoint or an exported model directory.

/usr/bin/python3 train/sample.py --ckpt train/runs/diffusion/ckpt.pt --kind diffusion --n 5
/usr/bin/python3 train/sample.py --model models/quench-tiny --kind diffusion --n 5
Diffusion: LLaDA low-confidence remasking (canvas = prompt + gen_len masks; each step commits the most
confident masked positions). AR: greedy decoding.
"""
import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402
from model import ModelConfig, Transformer, autocast, pick_precision, torch_load  # noqa: E402

CPU = torch.device('cpu')
from tokenizer import DEFAULT_DIR, EOS, EOT, MASK, Tokenizer, render_chat  # noqa: E402


def load_model(args):
    """-> (model, shift): shift = the diffusion model's logits are Dream-style shifted."""
    if args.ckpt:
        ck = torch_load(args.ckpt, 'cpu')
        m = Transformer(ModelConfig(**ck['config']))
        m.load_state_dict(ck['model'])
        return m, bool(ck['args'].get('shift'))
    from export import load_exported
    m, _, shift = load_exported(args.model)
    return m, shift


@torch.no_grad()
def gen_diffusion(model, prompt, gen_len=48, steps=24, shift=False):
    x = torch.tensor([prompt + [MASK] * gen_len])
    P = len(prompt)
    per = [gen_len // steps + (1 if i < gen_len % steps else 0) for i in range(steps)]
    for k in per:
        with autocast(CPU):
            out = model(x, causal=False)[0]
            logits = (out[P - 1:-1] if shift else out[P:]).float()
        conf, pred = logits.softmax(-1).max(-1)
        masked = x[0, P:] == MASK
        if not masked.any():
            break
        conf = torch.where(masked, conf, torch.full_like(conf, -1.0))
        idx = conf.topk(min(k, int(masked.sum()))).indices
        x[0, P + idx] = pred[idx]
    return x[0, P:].tolist()


@torch.no_grad()
def gen_ar(model, prompt, max_new=64):
    x = list(prompt)
    for _ in range(max_new):
        with autocast(CPU):
            nxt = int(model(torch.tensor([x]), causal=True)[0, -1].float().argmax())
        x.append(nxt)
        if nxt in (EOS, EOT):
            break
    return x[len(prompt):]


def answer_text(tok, ids):
    out = []
    for i in ids:
        if i in (EOS, EOT):
            break
        out.append(i)
    return tok.decode([i for i in out if i != MASK], skip_special=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ckpt')
    ap.add_argument('--model')
    ap.add_argument('--kind', choices=['diffusion', 'ar'], required=True)
    ap.add_argument('--n', type=int, default=3, help='held-out instances per family')
    ap.add_argument('--gen-len', type=int, default=48)
    ap.add_argument('--steps', type=int, default=24)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--precision', choices=['auto', 'bf16', 'fp32'], default='auto',
                    help='bf16 autocast or fp32; auto: whichever this CPU multiplies faster')
    ap.add_argument('--families', default='')
    ap.add_argument('--prompt', action='append', default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pick_precision(CPU, args.precision)
    tok = Tokenizer.load(DEFAULT_DIR)
    model, shift = load_model(args)
    model.eval()

    def run(p):
        ids = tok.encode(render_chat([{'role': 'user', 'content': p}]))
        out = gen_diffusion(model, ids, args.gen_len, args.steps, shift) if args.kind == 'diffusion' else \
            gen_ar(model, ids, args.gen_len)
        return answer_text(tok, out)

    for p in args.prompt:
        print(repr(p), '->', repr(run(p)), flush=True)
    if args.n <= 0:
        return
    fams = args.families.split(',') if args.families else list(tasks.FAMILIES)
    per = collections.defaultdict(list)
    for r in tasks.load_heldout():
        if r['family'] in fams and len(per[r['family']]) < args.n:
            per[r['family']].append(r)
    tot = ok_tot = 0
    for fam in fams:
        ok = 0
        for i, r in enumerate(per[fam]):
            a = run(r['prompt'])
            good = tasks.check(fam, r['prompt'], a)
            ok += good
            if i == 0:
                print(f'[{fam}] {r["prompt"]!r} -> {a!r} (gold {r["answer"]!r}) {"OK" if good else "X"}', flush=True)
        print(f'  {fam}: {ok}/{len(per[fam])}', flush=True)
        tot += len(per[fam])
        ok_tot += ok
    print(f'overall {ok_tot}/{tot} = {ok_tot / max(1, tot):.3f}')


if __name__ == '__main__':
    main()
