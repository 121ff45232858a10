// Prompt prefixes shared across requests (automatic prefix caching): the keys and values of a
// prompt's leading positions, kept after one request computed them, so that the next request
// whose prompt starts with the same tokens (a system prompt, a few-shot preamble, the earlier
// turns of a chat) runs only the rest. Exact for causal and block-causal models, whose prompt
// entries never see what follows (Generation.reusablePrompt says how far); bidirectional
// diffusion models never store or reuse. Entries are compact copies, evicted least recently
// used first beyond a byte budget. An entry keeps the tokens its keys and values depend on
// (for a block model up to the end of its last block, which may be one more than its entries)
// and a salt: requests share only within one salt (isolation between tenants, as vLLM's
// cache_salt).

import { cacheBytes, sliceCache, type CacheShape, type KVCache } from '../runtime/kv.ts';

/** Prompts are indexed at multiples of this many tokens. */
export const PREFIX_CHUNK = 16;

interface Entry {
  salt: string;
  /** the tokens the entries depend on */
  tokens: Int32Array;
  cache: KVCache;
  bytes: number;
  keys: string[];
}

export interface PrefixStats {
  entries: number;
  bytes: number;
  hits: number;
  misses: number;
  /** prompt positions served from the store */
  reusedTokens: number;
}

/** Two 32-bit FNV-1a style hashes of the salt and the tokens so far, as a key; updated token by token. */
function hasher(salt: string) {
  let a = 0x811c9dc5 | 0;
  let b = 0x01000193 | 0;
  for (let i = 0; i < salt.length; i++) {
    a = Math.imul(a ^ salt.charCodeAt(i), 0x01000193);
    b = Math.imul(b ^ (salt.charCodeAt(i) + 0x7f4a7c15), 0x85ebca6b) ^ (b >>> 13);
  }
  return {
    push(t: number) {
      a = Math.imul(a ^ t, 0x01000193);
      b = Math.imul(b ^ (t + 0x9e3779b9), 0x85ebca6b) ^ (b >>> 13);
    },
    key: (n: number) => `${n}:${a >>> 0}:${b >>> 0}`,
  };
}

function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>, max: number): number {
  let i = 0;
  while (i < max && a[i] === b[i]) i++;
  return i;
}

export class PrefixCache {
  private readonly shape: CacheShape;
  private readonly budget: number;
  /** least recently used first */
  private entries = new Set<Entry>();
  private index = new Map<string, Entry>();
  private s = { hits: 0, misses: 0, reusedTokens: 0, bytes: 0 };

  constructor(shape: CacheShape, budgetBytes: number) {
    this.shape = shape;
    this.budget = Math.max(0, budgetBytes);
  }

  get stats(): PrefixStats {
    return { entries: this.entries.size, bytes: this.s.bytes, hits: this.s.hits, misses: this.s.misses, reusedTokens: this.s.reusedTokens };
  }

  /** The stored entry sharing the longest prefix with this prompt (at least one chunk), and how many tokens it shares. */
  lookup(prompt: ArrayLike<number>, salt = ''): { cache: KVCache; tokens: number } | null {
    const h = hasher(salt);
    let best: Entry | null = null;
    for (let i = 0; i < prompt.length; i++) {
      h.push(prompt[i]);
      if ((i + 1) % PREFIX_CHUNK === 0) {
        const e = this.index.get(h.key(i + 1));
        if (e) best = e; // (a later chunk boundary is a longer match)
      }
    }
    const shared = best && best.salt === salt ? commonPrefix(best.tokens, prompt, Math.min(best.tokens.length, prompt.length)) : 0;
    if (!best || shared < PREFIX_CHUNK) return null;
    this.entries.delete(best);
    this.entries.add(best);
    return { cache: best.cache, tokens: shared };
  }

  /** A request started from this many positions of a lookup (0: a miss), for the stats. */
  reused(n: number): void {
    if (n > 0) this.s.hits++;
    else this.s.misses++;
    this.s.reusedTokens += n;
  }

  /** Keep a copy of the first n entries of a request's cache and the tokens they depend on. */
  insert(tokens: ArrayLike<number>, cache: KVCache, n: number, salt = ''): void {
    if (n <= 0 || tokens.length < PREFIX_CHUNK) return;
    const bytes = cacheBytes(this.shape, n);
    if (bytes > this.budget) return;
    const h = hasher(salt);
    const keys: string[] = [];
    for (let i = 0; i < tokens.length; i++) {
      h.push(tokens[i]);
      if ((i + 1) % PREFIX_CHUNK === 0) keys.push(h.key(i + 1));
    }
    // an entry that starts with all of these tokens and holds as many entries covers this one;
    // entries this one covers go
    const within = (e: Entry, t: ArrayLike<number>, len: number) => e.salt === salt && commonPrefix(e.tokens, t, len) === len;
    const cover = this.index.get(keys[keys.length - 1]);
    if (cover && cover.tokens.length >= tokens.length && cover.cache.length >= n && within(cover, tokens, tokens.length)) return;
    for (const k of keys) {
      const e = this.index.get(k);
      if (e && e.tokens.length <= tokens.length && e.cache.length <= n && within(e, tokens, e.tokens.length)) this.remove(e);
    }
    while (this.s.bytes + bytes > this.budget) this.remove(this.entries.values().next().value as Entry);
    const e: Entry = { salt, tokens: Int32Array.from(tokens), cache: sliceCache(this.shape, cache, n), bytes, keys };
    this.entries.add(e);
    for (const k of keys) this.index.set(k, e);
    this.s.bytes += bytes;
  }

  private remove(old: Entry): void {
    this.entries.delete(old);
    // (a key it took over from an older entry with the same leading chunks goes back to one)
    for (const k of old.keys) {
      if (this.index.get(k) !== old) continue;
      let other: Entry | undefined;
      for (const e of this.entries) if (e.keys.includes(k)) other = e;
      if (other) this.index.set(k, other);
      else this.index.delete(k);
    }
    this.s.bytes -= old.bytes;
  }
}
