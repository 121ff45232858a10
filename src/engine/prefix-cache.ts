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

/** Entries compared at a lookup's boundary (a system prompt may be shared by thousands). */
const LOOKUP_SCAN = 64;

interface Entry {
  salt: string;
  /** the tokens the entries depend on */
  tokens: Int32Array;
  cache: KVCache;
  bytes: number;
  /** the hash keys of its chunk boundaries, in order */
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

/** How many leading tokens a and b share, at most max. */
export function commonPrefix(a: ArrayLike<number>, b: ArrayLike<number>, max: number): number {
  let i = 0;
  while (i < max && a[i] === b[i]) i++;
  return i;
}

export class PrefixCache {
  private readonly shape: CacheShape;
  private readonly budget: number;
  /** least recently used first */
  private entries = new Set<Entry>();
  /** chunk boundary key -> the entries whose tokens pass through it */
  private index = new Map<string, Set<Entry>>();
  /** an entry's last boundary key -> the entries ending there (the ones a longer prompt can cover) */
  private ends = new Map<string, Set<Entry>>();
  private s = { hits: 0, misses: 0, reusedTokens: 0, bytes: 0 };

  constructor(shape: CacheShape, budgetBytes: number) {
    this.shape = shape;
    this.budget = Math.max(0, budgetBytes);
  }

  get stats(): PrefixStats {
    return { entries: this.entries.size, bytes: this.s.bytes, hits: this.s.hits, misses: this.s.misses, reusedTokens: this.s.reusedTokens };
  }

  /**
   * A stored entry sharing at least one chunk with this prompt, and how many tokens it shares:
   * of the entries through the longest chunk boundary the prompt has in the index (all of them
   * share the prompt up to that boundary; past it, fewer than a chunk's tokens more), the one
   * sharing the most among the first LOOKUP_SCAN stored, the first stored of equals.
   */
  lookup(prompt: ArrayLike<number>, salt = ''): { cache: KVCache; tokens: number } | null {
    const h = hasher(salt);
    let holders: Set<Entry> | undefined;
    for (let i = 0; i < prompt.length; i++) {
      h.push(prompt[i]);
      if ((i + 1) % PREFIX_CHUNK === 0) holders = this.index.get(h.key(i + 1)) ?? holders; // (a later boundary is a longer match)
    }
    let best: Entry | undefined;
    let shared = 0;
    let seen = 0;
    for (const e of holders ?? []) {
      if (++seen > LOOKUP_SCAN) break;
      const n = e.salt === salt ? commonPrefix(e.tokens, prompt, Math.min(e.tokens.length, prompt.length)) : 0;
      if (n > shared) [best, shared] = [e, n];
    }
    if (!best || shared < PREFIX_CHUNK) return null;
    this.touch(best);
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
    // an entry that starts with all of these tokens and holds as many entries covers this one
    // (it passes through this one's last boundary); entries this one covers go (each ends at one
    // of this one's boundaries)
    // (compared from the end: entries through the same boundaries differ in their tails)
    const within = (e: Entry, len: number) => {
      if (e.salt !== salt) return false;
      for (let i = len - 1; i >= 0; i--) if (e.tokens[i] !== tokens[i]) return false;
      return true;
    };
    for (const e of this.index.get(keys[keys.length - 1]) ?? [])
      if (e.tokens.length >= tokens.length && e.cache.length >= n && within(e, tokens.length)) return this.touch(e);
    for (const k of keys)
      for (const e of this.ends.get(k) ?? []) if (e.tokens.length <= tokens.length && e.cache.length <= n && within(e, e.tokens.length)) this.remove(e);
    while (this.s.bytes + bytes > this.budget) this.remove(this.entries.values().next().value as Entry);
    const e: Entry = { salt, tokens: Int32Array.from(tokens), cache: sliceCache(this.shape, cache, n), bytes, keys };
    this.touch(e);
    for (const k of keys) add(this.index, k, e);
    add(this.ends, keys[keys.length - 1], e);
    this.s.bytes += bytes;
  }

  /** Most recently used now. */
  private touch(e: Entry): void {
    this.entries.delete(e);
    this.entries.add(e);
  }

  private remove(old: Entry): void {
    this.entries.delete(old);
    for (const k of old.keys) drop(this.index, k, old);
    drop(this.ends, old.keys[old.keys.length - 1], old);
    this.s.bytes -= old.bytes;
  }
}

function add(m: Map<string, Set<Entry>>, k: string, e: Entry): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(e);
}

function drop(m: Map<string, Set<Entry>>, k: string, e: Entry): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(e);
  if (s.size === 0) m.delete(k);
}
