"""Byte-level BPE tokenizer (pure Python) compatible with a Hugging Face tokenizer.json using
pre_tokenizer Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=False, use_regex=True)].

Usage: /usr/bin/python3 train/tokenizer.py [--vocab 2048] [--out train/tokenizer]
"""
import argparse
import collections
import json
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, 'tokenizer')
SPECIALS = ['<|endoftext|>', '<|startoftext|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>',
            '<|mdm_mask|>']
EOS, BOS, SH, EH, EOT, MASK = range(6)
MAX_SEQ = 192
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
                 "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
                 "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")

# GPT-2 pattern with \p{L} ~ [^\W\d_], \p{N} ~ \d, [^\s\p{L}\p{N}] ~ (?:[^\s\w]|_)
GPT2_RE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
DIGIT_RE = re.compile(r'(\d)')
SPECIAL_RE = re.compile('(' + '|'.join(re.escape(s) for s in SPECIALS) + ')')


def bytes_to_unicode():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
U2B = {v: k for k, v in B2U.items()}


def pretokenize(text):
    """Digits (individual) then ByteLevel regex, then map bytes -> unicode symbols."""
    out = []
    for piece in DIGIT_RE.split(text):
        if not piece:
            continue
        for m in GPT2_RE.findall(piece):
            out.append(''.join(B2U[b] for b in m.encode('utf-8')))
    return out


class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = vocab  # str -> id
        self.inv = {i: s for s, i in vocab.items()}
        self.merges = merges
        self.ranks = {tuple(m.split(' ')): i for i, m in enumerate(merges)}
        self.cache = {}

    @classmethod
    def load(cls, d=DEFAULT_DIR):
        with open(os.path.join(d, 'tokenizer.json')) as f:
            j = json.load(f)
        return cls(j['model']['vocab'], j['model']['merges'])

    def __len__(self):
        return len(self.vocab)

    def bpe(self, word):
        ids = self.cache.get(word)
        if ids is not None:
            return ids
        syms = list(word)
        while len(syms) > 1:
            best, bi = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = syms[bi], syms[bi + 1]
            new, i = [], 0
            while i < len(syms):
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    new.append(a + b)
                    i += 2
                else:
                    new.append(syms[i])
                    i += 1
            syms = new
        ids = [self.vocab[s] for s in syms]
        if len(self.cache) < 500000:
            self.cache[word] = ids
        return ids

    def encode_plain(self, text):
        ids = []
        for w in pretokenize(text):
            ids.extend(self.bpe(w))
        return ids

    def encode(self, text):
        """Special tokens are matched first as whole tokens; text between goes through pre-tokenizer + BPE."""
        ids = []
        for part in SPECIAL_RE.split(text):
            if not part:
                continue
            if part in SPECIALS:
                ids.append(SPECIALS.index(part))
            else:
                ids.extend(self.encode_plain(part))
        return ids

    def decode(self, ids, skip_special=False):
        out, buf = [], []
        for i in ids:
            i = int(i)
            if i < len(SPECIALS):
                if buf:
                    out.append(bytes(buf).decode('utf-8', errors='replace'))
                    buf = []
                if not skip_special:
                    out.append(SPECIALS[i])
            else:
                buf.extend(U2B[c] for c in self.inv[i])
        if buf:
            out.append(bytes(buf).decode('utf-8', errors='replace'))
        return ''.join(out)


def render_chat(messages, add_generation_prompt=True):
    """Python rendering of CHAT_TEMPLATE."""
    s = SPECIALS[BOS]
    for m in messages:
        s += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
    if add_generation_prompt:
        s += '<|start_header_id|>assistant<|end_header_id|>\n\n'
    return s


def train_bpe(word_counts, vocab_size):
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in range(256):
        vocab[B2U[b]] = len(vocab)
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_counts = collections.Counter()
    where = collections.defaultdict(set)
    for wi, (syms, c) in enumerate(zip(words, counts)):
        for p in zip(syms, syms[1:]):
            pair_counts[p] += c
            where[p].add(wi)
    merges = []
    while len(vocab) < vocab_size and pair_counts:
        best = max(pair_counts.items(), key=lambda kv: kv[1])[0]
        if pair_counts[best] < 2:
            break
        a, b = best
        merges.append(f'{a} {b}')
        vocab[a + b] = len(vocab)
        for wi in list(where[best]):
            syms, c = words[wi], counts[wi]
            for p in zip(syms, syms[1:]):
                pair_counts[p] -= c
                if pair_counts[p] <= 0:
                    del pair_counts[p]
            new, i = [], 0
            while i < len(syms):
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    new.append(a + b)
                    i += 2
                else:
                    new.append(syms[i])
                    i += 1
            words[wi] = new
            for p in zip(new, new[1:]):
                pair_counts[p] += c
                where[p].add(wi)
        pair_counts.pop(best, None)
        where.pop(best, None)
    return vocab, merges


def tokenizer_json(vocab, merges):
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [{'id': i, 'content': s, 'single_word': False, 'lstrip': False, 'rstrip': False,
                          'normalized': False, 'special': True} for i, s in enumerate(SPECIALS)],
        'normalizer': None,
        'pre_tokenizer': {'type': 'Sequence', 'pretokenizers': [
            {'type': 'Digits', 'individual_digits': True},
            {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True}]},
        'post_processor': None,
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': None,
                  'end_of_word_suffix': None, 'fuse_unk': False, 'byte_fallback': False,
                  'vocab': vocab, 'merges': merges},
    }


def tokenizer_config(max_seq=MAX_SEQ):
    return {
        'bos_token': SPECIALS[BOS], 'eos_token': SPECIALS[EOS], 'pad_token': SPECIALS[EOS],
        'mask_token': SPECIALS[MASK], 'model_max_length': max_seq, 'tokenizer_class': 'PreTrainedTokenizerFast',
        'add_bos_token': True,  # training puts <|startoftext|> first: raw prompts get it too
        'clean_up_tokenization_spaces': False,
        'added_tokens_decoder': {str(i): {'content': s, 'lstrip': False, 'normalized': False, 'rstrip': False,
                                          'single_word': False, 'special': True} for i, s in enumerate(SPECIALS)},
        'chat_template': CHAT_TEMPLATE,
    }


def save(d, vocab, merges):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'tokenizer.json'), 'w') as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False)
    with open(os.path.join(d, 'tokenizer_config.json'), 'w') as f:
        json.dump(tokenizer_config(), f, indent=2, ensure_ascii=False)


def corpus_counts(n_task=3000, seed=0):
    import tasks
    rng = random.Random(seed)
    c = collections.Counter()

    def add(t):
        for part in SPECIAL_RE.split(t):
            if part and part not in SPECIALS:
                c.update(pretokenize(part))
    for d in tasks.plain_documents():
        add(d)
    for fam, (gen, _) in tasks.FAMILIES.items():
        for _ in range(n_task):
            p, a = gen(rng)
            add(render_chat([{'role': 'user', 'content': p}]))
            add(a)
    for fam, gen in tasks.ENGLISH.items():
        for _ in range(n_task):
            p, a = gen(rng)
            add(render_chat([{'role': 'user', 'content': p}]))
            add(a)
    return c


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--vocab', type=int, default=2048)
    ap.add_argument('--out', default=DEFAULT_DIR)
    ap.add_argument('--n-task', type=int, default=3000)
    args = ap.parse_args()
    import time
    t0 = time.time()
    wc = corpus_counts(args.n_task)
    print(f'{len(wc)} unique pre-tokens ({time.time() - t0:.1f}s)', flush=True)
    vocab, merges = train_bpe(wc, args.vocab)
    save(args.out, vocab, merges)
    print(f'vocab {len(vocab)} merges {len(merges)} ({time.time() - t0:.1f}s) -> {args.out}')
