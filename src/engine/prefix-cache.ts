// Prompt prefixes shared across requests (automatic prefix caching): the keys and values of a
// prompt's leading positions, kept after one request computed them, so that the next request
// whose prompt starts with the same tokens (a system prompt, a few-shot preamble, the earlier
// turns of a chat) runs only the rest. Exact for causal and block-causal models, whose prompt
// entries never see what follows (Generation.reusablePrompt says how far); bidirectional
// diffusion models never store or reuse. Entries are compact copies, evicted least recently
// used first beyond a byte budget.

import { cacheBytes, sliceCache, type CacheShape, type KVCache } from '../runtime/kv.ts';

/** Prompts are indexed at multiples of this many tokens. */
export const PREFIX_CHUNK = 16;

interface Entry {
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

/** Two 32-bit FNV-1a style hashes of the tokens so far, as a key; updated token by token. */
function hasher() {
  let a = 0x811c9dc5 | 0;
  let b = 0x01000193 | 0;
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
  lookup(prompt: ArrayLike<number>): { cache: KVCache; tokens: number } | null {
    const h = hasher();
    let best: Entry | null = null;
    for (let i = 0; i < prompt.length; i++) {
      h.push(prompt[i]);
      if ((i + 1) % PREFIX_CHUNK === 0) {
        const e = this.index.get(h.key(i + 1));
        if (e) best = e; // (a later chunk boundary is a longer match)
      }
    }
    const shared = best ? commonPrefix(best.tokens, prompt, Math.min(best.tokens.length, prompt.length)) : 0;
    if (!best || shared < PREFIX_CHUNK) {
      this.s.misses++;
      return null;
    }
    this.entries.delete(best);
    this.entries.add(best);
    this.s.hits++;
    return { cache: best.cache, tokens: shared };
  }

  /** A request used this many tokens of a lookup (for the stats). */
  reused(n: number): void {
    this.s.reusedTokens += n;
  }

  /** Keep a copy of the first n entries of a request's cache, its prompt's first n tokens. */
  insert(prompt: ArrayLike<number>, cache: KVCache, n: number): void {
    if (n < PREFIX_CHUNK) return;
    const bytes = cacheBytes(this.shape, n);
    if (bytes > this.budget) return;
    // already covered by a stored prompt that starts the same way and is as long
    const h = hasher();
    const keys: string[] = [];
    for (let i = 0; i < n; i++) {
      h.push(prompt[i]);
      if ((i + 1) % PREFIX_CHUNK === 0) keys.push(h.key(i + 1));
    }
    const cover = this.index.get(keys[keys.length - 1]);
    if (cover && cover.tokens.length >= n && commonPrefix(cover.tokens, prompt, n) === n) return;
    while (this.s.bytes + bytes > this.budget) this.evict();
    const e: Entry = { tokens: Int32Array.from({ length: n }, (_, i) => prompt[i]), cache: sliceCache(this.shape, cache, n), bytes, keys };
    this.entries.add(e);
    for (const k of keys) this.index.set(k, e);
    this.s.bytes += bytes;
  }

  private evict(): void {
    const old = this.entries.values().next().value as Entry;
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
