// Cached keys and values of context positions, one sequence. Per layer the buffer is
// [Hkv, capacity, Dh]; the first `length` rows of each head are in use. Entries are already
// rotated by RoPE at their own positions, so a cache may hold any set of positions (a prefix,
// or a prefix plus a suffix for the dual cache): visibility is decided per forward by the
// attention bias, not by the order of entries.
//
// A step appends the window's new rows in place (amortised growth), so caches are neither
// rebuilt nor repacked per step. Caches are persistent values: several KVCache objects may
// share one buffer, each seeing its own `length`; only the one at the buffer's tip (the
// longest written) may append in place, any other copies first.

export interface KVCache {
  /** number of entries in use */
  length: number;
  /** rows allocated per head */
  capacity: number;
  /** canvas position of each entry [capacity]; the first `length` are meaningful */
  positions: Int32Array;
  /** per layer [Hkv, capacity, Dh] */
  keys: Float32Array[];
  values: Float32Array[];
  /** rows written to the shared buffer so far */
  tip: { used: number };
}

export interface CacheShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

/**
 * Room for n entries plus slack: powers of two from 32, so appending one row per step
 * reallocates rarely and the graph sees few distinct cache shapes (each new shape costs ORT
 * a slower first run). At most 2x the entries; attention over the unused columns is masked.
 * Also the column count of the runner's packed batch buffers.
 */
export function growCapacity(n: number): number {
  let c = 32;
  while (c < n + 1) c *= 2;
  return c;
}

function allocCache(s: CacheShape, capacity: number): KVCache {
  const size = s.kvHeads * capacity * s.headDim;
  return {
    length: 0,
    capacity,
    positions: new Int32Array(capacity),
    keys: Array.from({ length: s.layers }, () => new Float32Array(size)),
    values: Array.from({ length: s.layers }, () => new Float32Array(size)),
    tip: { used: 0 },
  };
}

/**
 * For each of H heads, copy rows src[srcBase(h) + idx[i]] to dst[dstBase(h) + i] (rows of
 * Dh floats; bases in rows), runs of consecutive indices in one call.
 */
export function copyRuns(src: Float32Array, srcBase: (h: number) => number, idx: ArrayLike<number>, dst: Float32Array, dstBase: (h: number) => number, H: number, Dh: number): void {
  const n = idx.length;
  for (let h = 0; h < H; h++) {
    const sb = srcBase(h);
    const db = dstBase(h);
    let i = 0;
    while (i < n) {
      let j = i + 1;
      while (j < n && idx[j] === idx[j - 1] + 1) j++;
      dst.set(src.subarray((sb + idx[i]) * Dh, (sb + idx[j - 1] + 1) * Dh), (db + i) * Dh);
      i = j;
    }
  }
}

/**
 * A cache holding `past`'s entries [pastKeep...] followed by rows [windowKeep...] of a forward's
 * window K/V (present: per layer [B, Hkv, Lw, Dh], batch row b). Appends in place when
 * pastKeep is all of past in order, past is at its buffer's tip and the buffer has room;
 * otherwise copies into a new buffer: exactly `reserve` entries when the caller knows how far
 * the cache will grow (a causal sequence's canvas), so later steps append in place, else
 * growCapacity(n).
 */
export function extendCache(
  s: CacheShape,
  past: KVCache | undefined,
  pastKeep: ArrayLike<number>,
  presentK: Float32Array[],
  presentV: Float32Array[],
  b: number,
  Lw: number,
  windowKeep: ArrayLike<number>,
  windowPositions: ArrayLike<number>,
  reserve = 0,
): KVCache {
  const { layers, kvHeads: H, headDim: Dh } = s;
  const p = past?.length ?? 0;
  const nKeep = pastKeep.length;
  const n = nKeep + windowKeep.length;
  let isPrefix = nKeep === p;
  for (let i = 0; i < nKeep; i++) {
    if (pastKeep[i] >= p || pastKeep[i] < 0) throw new Error('cache index out of range');
    isPrefix &&= pastKeep[i] === i;
  }

  let c: KVCache;
  if (past && isPrefix && past.tip.used === p && past.capacity >= n) c = { ...past, length: p };
  else {
    c = allocCache(s, reserve >= n ? reserve : growCapacity(n));
    if (past && nKeep > 0) {
      for (let l = 0; l < layers; l++) {
        copyRuns(past.keys[l], (h) => h * past.capacity, pastKeep, c.keys[l], (h) => h * c.capacity, H, Dh);
        copyRuns(past.values[l], (h) => h * past.capacity, pastKeep, c.values[l], (h) => h * c.capacity, H, Dh);
      }
      for (let i = 0; i < nKeep; i++) c.positions[i] = past.positions[pastKeep[i]];
    }
    c.length = nKeep;
  }

  const base = c.length;
  for (let l = 0; l < layers; l++) {
    copyRuns(presentK[l], (h) => (b * H + h) * Lw, windowKeep, c.keys[l], (h) => h * c.capacity + base, H, Dh);
    copyRuns(presentV[l], (h) => (b * H + h) * Lw, windowKeep, c.values[l], (h) => h * c.capacity + base, H, Dh);
  }
  for (let i = 0; i < windowKeep.length; i++) c.positions[base + i] = windowPositions[windowKeep[i]];
  c.length = n;
  c.tip.used = n;
  return c;
}

/** A compact copy of c's first n entries (its own buffer, exactly n rows): what a prefix store keeps. */
export function sliceCache(s: CacheShape, c: KVCache, n: number): KVCache {
  if (!Number.isInteger(n) || n < 0 || n > c.length) throw new Error('cache slice out of range');
  const out = allocCache(s, n);
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let l = 0; l < s.layers; l++) {
    copyRuns(c.keys[l], (h) => h * c.capacity, idx, out.keys[l], (h) => h * n, s.kvHeads, s.headDim);
    copyRuns(c.values[l], (h) => h * c.capacity, idx, out.values[l], (h) => h * n, s.kvHeads, s.headDim);
  }
  out.positions.set(c.positions.subarray(0, n));
  out.length = n;
  out.tip.used = n;
  return out;
}

/** Bytes a cache of n entries holds (keys and values, fp32). */
export function cacheBytes(s: CacheShape, n: number): number {
  return 2 * s.layers * s.kvHeads * n * s.headDim * 4;
}
