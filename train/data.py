"""Training data stream: chat-format sequences (synthetic + English families) and plain-text chunks,
padded with <|endoftext|> into length buckets; batches come from one bucket at a time."""
import hashlib
import os
import random

import numpy as np
import torch

import tasks
from tokenizer import BOS, EOS, EOT, Tokenizer, render_chat

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKETS = (64, 128, 192)
MIX = (0.85, 0.10, 0.05)  # synthetic chat, English chat, plain text
PLAIN_BUCKET_P = (0.4, 0.3, 0.3)


def plain_cache_path(tok_path, tiny=False):
    """Where plain_stream caches the encoded plain text (keyed by the tokenizer file)."""
    h = hashlib.md5(open(tok_path, 'rb').read()).hexdigest()[:10]
    return os.path.join(HERE, 'runs', 'cache', f'plain_{h}{"_tiny" if tiny else ""}.npy')


def plain_stream(tok, tok_path, tiny=False):
    """All plain documents encoded and concatenated (separated by a blank line); cached as .npy."""
    cache = plain_cache_path(tok_path, tiny)
    if os.path.exists(cache):
        return np.load(cache)
    docs = tasks.plain_documents()
    if tiny:
        docs = docs[:100] + docs[-100:]
    sep = tok.encode_plain('\n\n')
    ids = []
    for d in docs:
        ids.extend(tok.encode_plain(d))
        ids.extend(sep)
    arr = np.array(ids, dtype=np.int16)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = cache + f'.{os.getpid()}.tmp.npy'
    np.save(tmp, arr)
    os.replace(tmp, cache)
    return arr


def encode_chat(tok, prompt, answer):
    """(ids, prompt_len): rendered prompt (with generation header) + answer + <|eot_id|>.
    Prompt and answer are tokenized separately, exactly as at inference time."""
    p = tok.encode(render_chat([{'role': 'user', 'content': prompt}]))
    return p + tok.encode_plain(answer) + [EOT], len(p)


class DataStream:
    def __init__(self, tok, tok_path, seed=0, batch=32, tiny=False, heldout_prompts=(), family_weights=None, mix=None):
        self.tok = tok
        self.rng = random.Random(seed)
        self.heldout = set(heldout_prompts)
        self.plain = plain_stream(tok, tok_path, tiny)
        self.fams = list(tasks.FAMILIES)
        weights = {**tasks.FAMILY_WEIGHTS, **(family_weights or {})}
        self.fam_w = [weights[f] for f in self.fams]
        self.eng = list(tasks.ENGLISH)
        self.eng_w = [weights.get(f, 1.0) for f in self.eng]
        self.mix = mix or MIX
        self.bs = {64: batch, 128: max(1, batch // 2), 192: max(1, batch // 3)}
        self.queues = {b: [] for b in BUCKETS}

    def example(self):
        rng = self.rng
        r = rng.random()
        if r < self.mix[0] + self.mix[1]:
            if r < self.mix[0]:
                gen = tasks.FAMILIES[rng.choices(self.fams, self.fam_w)[0]][0]
            else:
                gen = tasks.ENGLISH[rng.choices(self.eng, self.eng_w)[0]]
            while True:
                p, a = gen(rng)
                if p not in self.heldout:
                    break
            ids, plen = encode_chat(self.tok, p, a)
            n = len(ids)
            if n > BUCKETS[-1]:
                return None
            k = next(i for i, b in enumerate(BUCKETS) if b >= n)
            if k + 1 < len(BUCKETS) and rng.random() < 0.2:
                k += 1
            L = BUCKETS[k]
            return ids + [EOS] * (L - n), plen, n
        L = rng.choices(BUCKETS, PLAIN_BUCKET_P)[0]
        i = rng.randrange(0, len(self.plain) - L)
        return [BOS] + self.plain[i:i + L - 1].tolist(), 1, L

    def next_batch(self):
        """x [n, L] long, prompt_len [n], real_len [n] (real_len = tokens before <|endoftext|> padding)."""
        while True:
            ex = self.example()
            if ex is None:
                continue
            L = len(ex[0])
            q = self.queues[L]
            q.append(ex)
            if len(q) >= self.bs[L]:
                self.queues[L] = []
                return (torch.tensor([e[0] for e in q], dtype=torch.long),
                        torch.tensor([e[1] for e in q], dtype=torch.long),
                        torch.tensor([e[2] for e in q], dtype=torch.long))
