"""Train quench-tiny: masked diffusion (LLaDA-style) or autoregressive, same model/data/budget.

/usr/bin/python3 train/train.py --kind diffusion|ar|both --out DIR --minutes M --threads N [--steps S] [--tiny]

--kind both trains the two models in one process on the very same batches (same data, same steps, same
wall clock), writing OUT/diffusion/ckpt.pt and OUT/ar/ckpt.pt. --workers N generates batches in N processes
(needed to keep a GPU fed).
"""
import argparse
import math
import multiprocessing as mp
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402
from data import MIX, DataStream  # noqa: E402
import model as model_mod  # noqa: E402
from model import TINY, ModelConfig, Transformer, autocast, check_attention, n_params, pick_precision, torch_load  # noqa: E402
from tokenizer import DEFAULT_DIR, MASK, Tokenizer  # noqa: E402

EPS_T = 1e-3


def diffusion_loss(model, x, plen, real_len, lmax, pad_weight=1.0, shift=False, edit_noise=0.0):
    """LLaDA SFT loss. Every response position (answer, <|eot_id|>, <|endoftext|> padding) is masked with
    probability t; the 1/t-weighted CE on masked positions is normalised per sequence. `pad_weight` scales the
    padding positions (in the loss and in the normaliser): with weight 1 a 5-token answer in a 64-token bucket
    gives its answer tokens ~1/10 of the sequence's loss, the rest goes to predicting the padding.
    `shift` (Dream-style): the prediction for position i is read from the output at i - 1, as in the causal model
    the diffusion model is adapted from.
    `edit_noise` (token editing, after LLaDA2.1's token-to-token training): each response position left visible is
    replaced by a random ordinary token with probability edit_noise * t, and the loss covers those positions too,
    so that the model's rows at committed positions learn to restore a wrong token (decoding with
    editing_threshold reads exactly those rows). 0: the plain objective."""
    n, L = x.shape
    dev = x.device
    pos = torch.arange(L, device=dev)[None]
    resp = pos >= plen[:, None]  # answer + <|eot_id|> + <|endoftext|> padding (plain text: all but bos)
    w = torch.where(pos < real_len[:, None], 1.0, pad_weight) * resp
    t = (1 - EPS_T) * torch.rand(n, device=dev) + EPS_T
    m = (torch.rand(n, L, device=dev) < t[:, None]) & resp
    xin = torch.where(m, torch.full_like(x, MASK), x)
    if edit_noise > 0:
        e = ~m & resp & (torch.rand(n, L, device=dev) < edit_noise * t[:, None])
        xin = torch.where(e, torch.randint(MASK + 1, model.cfg.vocab_size, (n, L), device=dev), xin)
        m = m | e
    logits = model(xin, causal=False)
    tgt, mt, wt = x, m, w
    if shift:  # row i - 1 predicts position i; position 0 (bos, never masked) has no row
        logits, tgt, mt, wt = logits[:, :-1], x[:, 1:], m[:, 1:], w[:, 1:]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction='none')
    loss = ((ce.view_as(tgt) * mt * wt).sum(1) / t / w.sum(1)).mean()
    return loss, n * L


def block_attention(L, block, dev):
    """The [2L, 2L] attention of block-diffusion training on [clean copy ; noisy copy] of one sequence, with
    blocks of `block` positions aligned to position 0: a clean row sees the clean copy up to the end of its own
    block (block-causal, as the inference cache holds finished blocks), a noisy row sees the clean blocks before
    its own and its own noisy block (bidirectional), never another noisy block."""
    b = torch.arange(L, device=dev) // block
    before_or_same = b[None, :] <= b[:, None]
    clean = torch.cat([before_or_same, torch.zeros(L, L, dtype=torch.bool, device=dev)], 1)
    noisy = torch.cat([b[None, :] < b[:, None], b[None, :] == b[:, None]], 1)
    return torch.cat([clean, noisy], 0)


def block_diffusion_loss(model, x, plen, real_len, lmax, pad_weight=1.0, block=8):
    """Block diffusion SFT loss with shifted logits (Fast-dLLM v2 style): each block of response positions is
    masked with its own t ~ U(eps, 1); the model reads [clean ; noisy] under `block_attention`; the prediction for
    position i is read from row i - 1 of the noisy copy, or, for the first position of a block, from the clean
    copy's last row of the previous block (as the cache holds it at inference). 1/t-weighted CE on masked
    positions, normalised per sequence as in `diffusion_loss`."""
    n, L = x.shape
    dev = x.device
    pos = torch.arange(L, device=dev)
    resp = pos[None] >= plen[:, None]
    w = torch.where(pos[None] < real_len[:, None], 1.0, pad_weight) * resp
    nb = (L + block - 1) // block
    t = ((1 - EPS_T) * torch.rand(n, nb, device=dev) + EPS_T)[:, pos // block]
    m = (torch.rand(n, L, device=dev) < t) & resp
    xin = torch.where(m, torch.full_like(x, MASK), x)
    out = model(torch.cat([x, xin], 1), mask=block_attention(L, block, dev), positions=torch.cat([pos, pos]))
    clean, noisy = out[:, :L - 1], out[:, L:2 * L - 1]  # rows 0..L-2 predict positions 1..L-1
    starts = (pos[1:] % block == 0)[None, :, None]
    logits = torch.where(starts, clean, noisy)
    tgt, mt, wt, tt = x[:, 1:], m[:, 1:], w[:, 1:], t[:, 1:]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction='none')
    loss = ((ce.view_as(tgt) * mt * wt / tt).sum(1) / w.sum(1)).mean()
    return loss, n * L


def block_layout_gap(model, x, m, block):
    """The largest |difference| between the logits of the training layout ([clean ; noisy] under
    `block_attention`) and those of the inference view, where block b is read as one sequence: the clean blocks
    before it, then block b as masked by m (bool, like x), under block-causal attention. Zero up to rounding when
    the training layout is right (a check of the recipe, run in the tests)."""
    n, L = x.shape
    pos = torch.arange(L, device=x.device)
    xin = torch.where(m, torch.full_like(x, MASK), x)
    out = model(torch.cat([x, xin], 1), mask=block_attention(L, block, x.device), positions=torch.cat([pos, pos]))
    blk = pos // block
    gap = 0.0
    for s in range(0, L, block):
        e = min(L, s + block)
        view = model(torch.cat([x[:, :s], xin[:, s:e]], 1), mask=blk[None, :e] <= blk[:e, None])
        gap = max(gap, float((view[:, s:e] - out[:, L + s:L + e]).abs().max()),
                  float((view[:, :s] - out[:, :s]).abs().max()) if s else 0.0)
    return gap


def ar_loss(model, x, plen, real_len, lmax, pad_weight=None):
    Lm = lmax  # longest real length in the batch, read on the host before the copy to the device
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


def parse_family_weights(spec):
    """'mul=4,describe=3' -> {'mul': 4.0, 'describe': 3.0}: task families weigh within the synthetic share,
    English families within the English share (each defaults to 1 there); unknown families are an error."""
    out = {}
    known = [*tasks.FAMILIES, *tasks.ENGLISH]
    for part in filter(None, (p.strip() for p in spec.split(','))):
        name, _, w = part.partition('=')
        if name not in known:
            raise SystemExit(f'--family-weights: unknown family {name!r} (families: {", ".join(known)})')
        out[name] = float(w)
    return out


def parse_mix(spec):
    """'0.6,0.35,0.05' -> the shares of synthetic chat, English chat and plain text (normalised)."""
    if not spec:
        return None
    try:
        parts = [float(x) for x in spec.split(',')]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise SystemExit(f'--mix: three non-negative shares (synthetic,english,plain), not {spec!r}')
    return tuple(x / sum(parts) for x in parts)


def same_shift(what, was, now, verb):
    """A diffusion model goes on only with the logit alignment it was trained with."""
    if was != now:
        raise SystemExit(f'{what} {"with" if was else "without"} shifted logits (--shift): '
                         f'{"add" if was else "drop"} --shift to {verb} it')


def _worker(q, make_stream, seed):
    torch.set_num_threads(1)
    data = make_stream(seed)
    while True:
        x, plen, rlen = data.next_batch()
        q.put((x.to(torch.int16).numpy(), plen.numpy(), rlen.numpy()))


class Batches:
    """Batches from the in-process stream (workers=0, exact resume) or from worker processes."""

    def __init__(self, args, tok, heldout, seed):
        self.procs = []

        def make_stream(s):
            return DataStream(tok, os.path.join(args.tokenizer, 'tokenizer.json'), seed=s, batch=args.batch,
                              tiny=args.tiny, heldout_prompts=heldout,
                              family_weights=parse_family_weights(args.family_weights),
                              mix=parse_mix(args.mix))

        if args.workers <= 0:
            self.data = make_stream(seed)
            return
        self.data = None
        ctx = mp.get_context('fork')  # the workers inherit the tokenizer and the stream factory
        self.q = ctx.Queue(maxsize=8 * args.workers)
        for i in range(args.workers):
            p = ctx.Process(target=_worker, daemon=True, args=(self.q, make_stream, seed * 1000 + i + 1))
            p.start()
            self.procs.append(p)

    def next(self):
        if self.data is not None:
            return self.data.next_batch()
        x, plen, rlen = self.q.get(timeout=120)
        return torch.from_numpy(x).long(), torch.from_numpy(plen), torch.from_numpy(rlen)

    def close(self):
        for p in self.procs:
            p.terminate()


class Run:
    """One model being trained: weights, optimizer, checkpoint file."""

    def __init__(self, kind, out, mc, args, dev):
        self.kind, self.out = kind, out
        self.ckpt_path = os.path.join(out, 'ckpt.pt')
        os.makedirs(out, exist_ok=True)
        torch.manual_seed(args.seed)
        self.model = Transformer(mc).to(dev)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1},
                                      {'params': no_decay, 'weight_decay': 0.0}],
                                     lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
        self.loss_fn = ar_loss if kind == 'ar' else block_diffusion_loss if args.block else diffusion_loss
        self.loss_kw = {'pad_weight': args.pad_weight}
        if kind == 'diffusion':
            self.loss_kw.update({'block': args.block} if args.block else {'shift': args.shift})
            if args.edit_noise:
                self.loss_kw['edit_noise'] = args.edit_noise
        self.loss_acc = torch.zeros((), device=dev)
        self.gn = torch.zeros((), device=dev)
        self.last_loss = float('nan')

    def step(self, x, plen, rlen, lmax, dev, lr):
        for g in self.opt.param_groups:
            g['lr'] = lr
        with autocast(dev):
            loss, ntok = self.loss_fn(self.model, x, plen, rlen, lmax, **self.loss_kw)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        # a non-finite gradient (one bad batch) is zeroed on the device, without a host sync, so it
        # cannot poison the Adam moments (that step still decays the weights and the moments)
        ok = torch.isfinite(self.gn)
        for p in self.model.parameters():
            p.grad.copy_(torch.where(ok, p.grad, torch.zeros_like(p.grad)))
        self.opt.step()
        self.loss_acc += torch.where(ok, loss.detach(), torch.zeros_like(loss))
        return ntok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kind', choices=['diffusion', 'ar', 'both'], required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--minutes', type=float, default=100)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--steps', type=int, default=0, help='hard step cap (0 = none)')
    ap.add_argument('--tiny', action='store_true')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--batch', type=int, default=32, help='sequences per batch in the 64-token bucket')
    ap.add_argument('--n-layers', type=int, default=0, help='override the number of layers (0 = default)')
    ap.add_argument('--workers', type=int, default=0, help='data generator processes (0 = in-process)')
    ap.add_argument('--log-every', type=int, default=0)
    ap.add_argument('--pad-weight', type=float, default=0.1,
                    help='diffusion loss weight of <|endoftext|> padding positions relative to answer positions')
    ap.add_argument('--shift', action='store_true',
                    help='diffusion: Dream-style shifted logits (row i - 1 predicts position i), exported in the '
                         'Dream layout; the natural choice when adapting from the AR twin')
    ap.add_argument('--block', type=int, default=0,
                    help='diffusion: block diffusion with blocks of this many positions (causal across blocks, '
                         'bidirectional within one, shifted logits; Fast-dLLM v2 style), exported in the Fast-dLLM v2 '
                         'layout; needs --shift')
    ap.add_argument('--edit-noise', type=float, default=0.0,
                    help='diffusion (not --block): replace visible response tokens by random ones with probability '
                         'this x t and learn to restore them (for decoding with token editing, editing_threshold)')
    ap.add_argument('--init-from', default='',
                    help='start every model from this exported model directory (either layout), e.g. a diffusion '
                         'model adapted from the AR twin')
    ap.add_argument('--init-diffusion', default='',
                    help='start the diffusion model from this exported model directory instead (with --kind both: '
                         'continue each bundled model from its own weights)')
    ap.add_argument('--family-weights', default='',
                    help='override synthetic families\' sampling weights, e.g. "mul=4,reverse_word=3"')
    ap.add_argument('--mix', default='',
                    help='shares of synthetic chat, English chat and plain text, e.g. 0.6,0.35,0.05 '
                         f'(default {",".join(str(x) for x in MIX)})')
    ap.add_argument('--tokenizer', default=DEFAULT_DIR)
    ap.add_argument('--ckpt-every', type=float, default=300, help='seconds')
    ap.add_argument('--device', default='cpu', help='cpu or cuda (a lent GPU: raise --batch and --workers too)')
    ap.add_argument('--precision', choices=['auto', 'bf16', 'fp32'], default='auto',
                    help='bf16 autocast or fp32; auto: bf16 on a GPU, on a CPU whichever multiplies faster here')
    args = ap.parse_args()
    if args.block and not args.shift:
        raise SystemExit('--block needs --shift (block diffusion reads its predictions from the previous row)')
    if args.edit_noise and (args.block or args.kind == 'ar' or not 0 < args.edit_noise <= 1):
        raise SystemExit('--edit-noise takes a probability in (0, 1] and the non-block diffusion objective (--kind diffusion or both)')

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    kinds = ['diffusion', 'ar'] if args.kind == 'both' else [args.kind]
    log = open(os.path.join(args.out, 'train.log'), 'a')

    def say(s):
        print(s, flush=True)
        log.write(s + '\n')
        log.flush()

    tok = Tokenizer.load(args.tokenizer)
    shape = dict(TINY) if args.tiny else {}
    if args.n_layers:
        shape['n_layers'] = args.n_layers
    mc = ModelConfig(vocab_size=len(tok), **shape)
    dev = torch.device(args.device)
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        say(f'device {torch.cuda.get_device_name(0)} torch {torch.__version__}')
    heldout = [r['prompt'] for r in tasks.load_heldout()]
    out_of = {k: args.out if len(kinds) == 1 else os.path.join(args.out, k) for k in kinds}
    first_ckpt = os.path.join(out_of[kinds[0]], 'ckpt.pt')
    step, elapsed0, tokens, seed, ck = 0, 0.0, 0, args.seed, None
    if os.path.exists(first_ckpt):
        ck = torch_load(first_ckpt, 'cpu')
        if 'diffusion' in kinds:
            same_shift(f'{first_ckpt} was trained', bool(ck['args'].get('shift')), args.shift, 'resume')
            if ck['args'].get('block', 0) != args.block:
                raise SystemExit(f"{first_ckpt} was trained with --block {ck['args'].get('block', 0)}: resume with it")
        step, elapsed0, tokens = ck['step'], ck['elapsed'], ck['tokens']
        if args.workers:
            seed = args.seed + step  # worker streams cannot be resumed exactly: continue with fresh seeds
    data = Batches(args, tok, heldout, seed)  # workers fork before CUDA starts
    if ck is not None and data.data is not None and ck['data_rng'] is not None:  # None after a worker run
        data.data.rng.setstate(ck['data_rng'])
    runs = [Run(k, out_of[k], mc, args, dev) for k in kinds]
    if ck is not None:
        for r in runs:  # load_state_dict copies onto the model's device
            rck = ck if r.ckpt_path == first_ckpt else torch_load(r.ckpt_path, 'cpu')
            assert rck['kind'] == r.kind and rck['step'] == step
            r.model.load_state_dict(rck['model'])
            r.opt.load_state_dict(rck['opt'])
        torch.set_rng_state(ck['torch_rng'].cpu())
        say(f'resumed at step {step}, elapsed {elapsed0:.0f}s')
    else:
        from export import load_exported
        for r in runs:
            src = args.init_diffusion if r.kind == 'diffusion' and args.init_diffusion else args.init_from
            if not src:
                continue
            init, init_kind, init_shift = load_exported(src)
            if r.kind == 'diffusion' and init_kind == 'diffusion':
                same_shift(f'{src} is a diffusion model', init_shift, args.shift, 'continue')
            assert init.cfg.to_dict() == mc.to_dict(), (init.cfg.to_dict(), mc.to_dict())
            r.model.load_state_dict(init.state_dict())
            say(f'{r.kind} model initialised from {src} ({init_kind} model{", shifted logits" if init_shift else ""})')
        say(f'start kinds={kinds} params={n_params(runs[0].model)} cfg={mc.to_dict()} args={vars(args)}')
    # (a resumed auto run keeps the precision it started with: one run, one number format)
    resumed = ck.get('precision') if ck is not None and args.precision == 'auto' else None
    pick_precision(dev, resumed or args.precision, say)
    check_attention(runs[0].model, dev, say)

    budget = args.minutes * 60.0
    t_start = time.time()

    def elapsed():
        return elapsed0 + time.time() - t_start

    def progress():
        p = elapsed() / budget
        if args.steps:
            p = max(p, step / args.steps)
        return p

    def save(done=False):
        for r in runs:
            ck = {'model': r.model.state_dict(), 'opt': r.opt.state_dict(), 'step': step, 'elapsed': elapsed(),
                  'tokens': tokens, 'data_rng': data.data.rng.getstate() if data.data else None,
                  'torch_rng': torch.get_rng_state(), 'kind': r.kind, 'config': mc.to_dict(), 'args': vars(args),
                  'done': done, 'last_loss': r.last_loss, 'english': list(tasks.ENGLISH),
                  'device': torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'cpu',
                  'precision': 'bf16' if model_mod.BF16 else 'fp32'}
            tmp = r.ckpt_path + '.tmp'
            torch.save(ck, tmp)
            os.replace(tmp, r.ckpt_path)

    last_ck, t_log, tok_log, n_acc = time.time(), time.time(), 0, 0
    log_every = args.log_every or (1 if args.tiny else 10)
    for r in runs:
        r.model.train()
    try:
        while progress() < 1.0:
            lr = lr_at(progress(), args.lr)
            batch = data.next()
            lmax = int(batch[2].max())  # on the host: no device sync in the step
            x, plen, rlen = (t.to(dev, non_blocking=True) for t in batch)
            ntok = [r.step(x, plen, rlen, lmax, dev, lr) for r in runs][0]
            step += 1
            tokens += ntok
            tok_log += ntok
            n_acc += 1
            if step % log_every == 0:
                now = time.time()
                parts = []
                for r in runs:
                    r.last_loss = float(r.loss_acc) / n_acc
                    r.loss_acc.zero_()
                    parts.append(f'{r.kind} loss {r.last_loss:.4f} gnorm {float(r.gn):.2f}')
                say(f'step {step} elapsed {elapsed():.0f}s {" | ".join(parts)} tok/s {tok_log / (now - t_log):.0f} '
                    f'lr {lr:.2e} tokens {tokens}')
                t_log, tok_log, n_acc = now, 0, 0
            if time.time() - last_ck > args.ckpt_every:
                save()
                last_ck = time.time()
    finally:
        data.close()
    for r in runs:
        if n_acc:
            r.last_loss = float(r.loss_acc) / n_acc
    save(done=True)
    say(f'done step {step} elapsed {elapsed():.0f}s tokens {tokens} final_loss '
        + ' '.join(f'{r.kind} {r.last_loss:.4f}' for r in runs))


if __name__ == '__main__':
    main()
