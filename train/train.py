"""Train quench-tiny: masked diffusion (LLaDA-style) or autoregressive, same model/data/budget.

/usr/bin/python3 train/train.py --kind diffusion|ar --out DIR --minutes M --threads N [--steps S] [--tiny]
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402
from data import DataStream  # noqa: E402
from model import TINY, ModelConfig, Transformer, n_params  # noqa: E402
from tokenizer import DEFAULT_DIR, MASK, Tokenizer  # noqa: E402

EPS_T = 1e-3


def diffusion_loss(model, x, plen, real_len):
    n, L = x.shape
    dev = x.device
    pos = torch.arange(L, device=dev)[None]
    resp = pos >= plen[:, None]  # answer + <|eot_id|> + <|endoftext|> padding (plain text: all but bos)
    t = (1 - EPS_T) * torch.rand(n, device=dev) + EPS_T
    m = (torch.rand(n, L, device=dev) < t[:, None]) & resp
    xin = torch.where(m, torch.full_like(x, MASK), x)
    logits = model(xin, causal=False)
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x.reshape(-1), reduction='none').view(n, L)
    loss = ((ce * m).sum(1) / t / resp.sum(1)).mean()
    return loss, n * L


def ar_loss(model, x, plen, real_len):
    Lm = int(real_len.max())
    x = x[:, :Lm]
    logits = model(x[:, :-1], causal=True)
    tgt = x[:, 1:]
    pos = torch.arange(1, Lm, device=x.device)[None]
    lm = (pos >= plen[:, None]) & (pos < real_len[:, None])  # answer + <|eot_id|>; all of plain text
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction='none')
    loss = (ce.view_as(tgt) * lm).sum() / lm.sum()
    return loss, x.numel()


def lr_at(p, max_lr, warm=0.03, min_ratio=0.1):
    if p < warm:
        return max_lr * max(p, 1e-3) / warm
    q = min(1.0, (p - warm) / (1 - warm))
    return max_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * q)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kind', choices=['diffusion', 'ar'], required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--minutes', type=float, default=100)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--steps', type=int, default=0, help='hard step cap (0 = none)')
    ap.add_argument('--tiny', action='store_true')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--batch', type=int, default=32, help='sequences per batch in the 64-token bucket')
    ap.add_argument('--tokenizer', default=DEFAULT_DIR)
    ap.add_argument('--ckpt-every', type=float, default=300, help='seconds')
    ap.add_argument('--device', default='cpu', help='cpu or cuda (a lent GPU: raise --batch too)')
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, 'ckpt.pt')
    log = open(os.path.join(args.out, 'train.log'), 'a')

    def say(s):
        print(s, flush=True)
        log.write(s + '\n')
        log.flush()

    tok_path = os.path.join(args.tokenizer, 'tokenizer.json')
    tok = Tokenizer.load(args.tokenizer)
    mc = ModelConfig(vocab_size=len(tok), **(TINY if args.tiny else {}))
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    model = Transformer(mc).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    heldout = [r['prompt'] for r in tasks.load_heldout()]
    data = DataStream(tok, tok_path, seed=args.seed, batch=args.batch, tiny=args.tiny, heldout_prompts=heldout)

    step, elapsed0, tokens = 0, 0.0, 0
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=dev)
        assert ck['kind'] == args.kind
        model.load_state_dict(ck['model'])
        opt.load_state_dict(ck['opt'])
        step, elapsed0, tokens = ck['step'], ck['elapsed'], ck['tokens']
        data.rng.setstate(ck['data_rng'])
        torch.set_rng_state(ck['torch_rng'].cpu())
        say(f'resumed from {ckpt_path} at step {step}, elapsed {elapsed0:.0f}s')
    else:
        say(f'start kind={args.kind} params={n_params(model)} cfg={mc.to_dict()} args={vars(args)}')

    budget = args.minutes * 60.0
    loss_fn = diffusion_loss if args.kind == 'diffusion' else ar_loss
    last_loss = float('nan')

    def save(done=False):
        ck = {'model': model.state_dict(), 'opt': opt.state_dict(), 'step': step, 'elapsed': elapsed(),
              'tokens': tokens, 'data_rng': data.rng.getstate(), 'torch_rng': torch.get_rng_state(),
              'kind': args.kind, 'config': mc.to_dict(), 'args': vars(args), 'done': done, 'last_loss': last_loss}
        tmp = ckpt_path + '.tmp'
        torch.save(ck, tmp)
        os.replace(tmp, ckpt_path)

    t_start = time.time()

    def elapsed():
        return elapsed0 + time.time() - t_start

    def progress():
        p = elapsed() / budget
        if args.steps:
            p = max(p, step / args.steps)
        return p

    last_ck, t_log, tok_log, loss_acc, n_acc = time.time(), time.time(), 0, 0.0, 0
    log_every = 1 if args.tiny else 10
    model.train()
    while progress() < 1.0:
        lr = lr_at(progress(), args.lr)
        for g in opt.param_groups:
            g['lr'] = lr
        x, plen, rlen = (t.to(dev) for t in data.next_batch())
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss, ntok = loss_fn(model, x, plen, rlen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += ntok
        tok_log += ntok
        loss_acc += loss.item()
        n_acc += 1
        if step % log_every == 0:
            now = time.time()
            last_loss = loss_acc / n_acc
            say(f'step {step} elapsed {elapsed():.0f}s loss {last_loss:.4f} tok/s {tok_log / (now - t_log):.0f} '
                f'lr {lr:.2e} gnorm {float(gn):.2f} tokens {tokens}')
            t_log, tok_log, loss_acc, n_acc = now, 0, 0.0, 0
        if time.time() - last_ck > args.ckpt_every:
            save()
            last_ck = time.time()
    if n_acc:
        last_loss = loss_acc / n_acc
    save(done=True)
    say(f'done step {step} elapsed {elapsed():.0f}s tokens {tokens} final_loss {last_loss:.4f}')


if __name__ == '__main__':
    main()
