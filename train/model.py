"""Llama-block transformer used for both the diffusion (bidirectional) and AR (causal) runs."""
import math
import time
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 2048
    d_model: int = 384
    n_layers: int = 8
    n_heads: int = 6
    mlp_hidden: int = 1024
    max_seq: int = 192
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    def to_dict(self):
        return asdict(self)


USE_SDPA = hasattr(F, 'scaled_dot_product_attention')
TINY = dict(d_model=64, n_layers=2, n_heads=2, mlp_hidden=192)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, H = cfg.d_model, cfg.mlp_hidden
        self.nh, self.hd = cfg.n_heads, cfg.head_dim
        self.attn_norm = RMSNorm(D, cfg.eps)
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, D, bias=False)
        self.attn_out = nn.Linear(D, D, bias=False)
        self.ff_norm = RMSNorm(D, cfg.eps)
        self.ff_proj = nn.Linear(D, H, bias=False)  # gate (silu applied)
        self.up_proj = nn.Linear(D, H, bias=False)
        self.ff_out = nn.Linear(H, D, bias=False)

    def forward(self, x, cos, sin, causal, mask=None):
        B, L, D = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, L, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(B, L, self.nh, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(B, L, self.nh, self.hd).transpose(1, 2)
        q = q.float() * cos + rotate_half(q.float()) * sin
        k = k.float() * cos + rotate_half(k.float()) * sin
        if USE_SDPA:  # torch >= 2: fused (flash) attention; same math as the plain ops
            o = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, attn_mask=mask,
                                               is_causal=causal and mask is None)
        else:
            att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))
            if mask is not None:  # [L, L] bool, True where a query may attend to a key
                att = att.masked_fill(~mask, float('-inf'))
            elif causal:
                att = att.masked_fill(torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1), float('-inf'))
            o = torch.matmul(att.float().softmax(-1), v)
        x = x + self.attn_out(o.transpose(1, 2).reshape(B, L, D))
        m = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = RMSNorm(cfg.d_model, cfg.eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        hd = cfg.head_dim
        inv_freq = cfg.rope_theta ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
        self.register_buffer('inv_freq', inv_freq, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        std = 0.02
        for n, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * self.cfg.n_layers) if n.endswith(('attn_out.weight', 'ff_out.weight')) and 'blocks' in n else std
                nn.init.normal_(p, 0.0, s)

    def rope(self, pos):
        f = torch.outer(pos.float(), self.inv_freq)
        emb = torch.cat((f, f), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, idx, causal=False, mask=None, positions=None):
        """mask: [L, L] bool (True: the query row may attend to the key column), replaces `causal`;
        positions: [L] RoPE positions (default 0..L-1), e.g. two copies of one sequence side by side."""
        B, L = idx.shape
        cos, sin = self.rope(torch.arange(L, device=idx.device) if positions is None else positions)
        x = self.wte(idx)
        for b in self.blocks:
            x = b(x, cos, sin, causal, mask)
        return self.head(self.ln_f(x))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def torch_load(path, map_location):
    """torch.load of a training checkpoint (which holds more than tensors) on old and new torch."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except TypeError:  # torch < 1.13
        return torch.load(path, map_location=map_location)


BF16 = True  # bf16 autocast (pick_precision decides per machine)


def autocast(dev):
    """The training and sampling precision: bf16 autocast, or plain fp32 where bf16 is slow."""
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=BF16)


def pick_precision(dev, choice='auto', say=print):
    """bf16 autocast where bf16 matmuls are fast (GPUs; CPUs with AMX or AVX512-BF16), else fp32.

    A CPU without bf16 units runs torch's bf16 matmul emulated: 4.5 GFLOP/s on a 2-core AMD EPYC
    against 134 in fp32 (OpenBLAS), while on Sapphire Rapids bf16 (AMX) was ~100x faster than
    fp32. auto times both on a training-sized product and keeps the faster."""
    global BF16
    if choice != 'auto' or dev.type != 'cpu':
        BF16 = choice != 'fp32'
        return BF16
    gen = torch.Generator().manual_seed(0)  # (the training RNG's stream stays as it was)
    a, b = torch.randn(256, 384, generator=gen), torch.randn(384, 1024, generator=gen)
    rate = {}
    for name, dt in (('bf16', torch.bfloat16), ('fp32', torch.float32)):
        x, y = a.to(dt), b.to(dt)
        x @ y
        n, t = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t < 0.2:
            x @ y
            n += 1
        rate[name] = 2 * 256 * 384 * 1024 * n / (time.perf_counter() - t) / 1e9
    BF16 = rate['bf16'] >= rate['fp32']
    say(f'matmul on this CPU: bf16 {rate["bf16"]:.1f} GFLOP/s, fp32 {rate["fp32"]:.1f}: '
        f'{"bf16 autocast" if BF16 else "fp32"}')
    return BF16


def check_attention(model, dev, say=print):
    """Keep the fused attention kernel only if it matches the plain-op path on this machine."""
    global USE_SDPA
    if not USE_SDPA:
        return
    x = torch.randint(6, model.cfg.vocab_size, (2, 64), device=dev)
    try:
        with torch.no_grad(), autocast(dev):
            outs = []
            for flag in (True, False):
                USE_SDPA = flag
                outs.append([model(x, causal=c).float() for c in (False, True)])
        err = max(float((a - b).abs().max()) for a, b in zip(*outs))
        USE_SDPA = err < 0.1
        say(f'fused attention max|diff| {err:.4f}: {"on" if USE_SDPA else "off"}')
    except Exception as e:  # noqa: BLE001
        USE_SDPA = False
        say(f'fused attention unavailable ({e}); plain ops')
