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
 */
export function growCapacity(n: number): number {
  let c = 32;
  while (c < n + 1) c *= 2;
  return c;
}

export function allocCache(s: CacheShape, capacity: number): KVCache {
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

export function emptyCache(s: CacheShape): KVCache {
  return allocCache(s, 0);
}

/** Copy rows [0, n) of every head from one buffer layout to another. */
function copyRows(src: Float32Array, srcCap: number, dst: Float32Array, dstCap: number, H: number, Dh: number, n: number): void {
  for (let h = 0; h < H; h++) dst.set(src.subarray(h * srcCap * Dh, (h * srcCap + n) * Dh), h * dstCap * Dh);
}

/**
 * A cache holding `past`'s entries [pastKeep...] followed by rows [windowKeep...] of a forward's
 * window K/V (present: per layer [B, Hkv, Lw, Dh], batch row b). Appends in place when
 * pastKeep is all of past in order and past is at its buffer's tip.
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
): KVCache {
  const { layers, kvHeads: H, headDim: Dh } = s;
  const p = past?.length ?? 0;
  const nKeep = pastKeep.length;
  for (let i = 0; i < nKeep; i++) if (pastKeep[i] >= p || pastKeep[i] < 0) throw new Error('cache index out of range');
  const n = nKeep + windowKeep.length;
  let isPrefix = past !== undefined && nKeep === p;
  for (let i = 0; isPrefix && i < nKeep; i++) isPrefix = pastKeep[i] === i;

  let c: KVCache;
  if (past && isPrefix && past.tip.used === p) {
    if (past.capacity >= n) c = { ...past, length: p };
    else {
      c = allocCache(s, growCapacity(n));
      for (let l = 0; l < layers; l++) {
        copyRows(past.keys[l], past.capacity, c.keys[l], c.capacity, H, Dh, p);
        copyRows(past.values[l], past.capacity, c.values[l], c.capacity, H, Dh, p);
      }
      c.positions.set(past.positions.subarray(0, p));
      c.length = p;
    }
  } else {
    c = allocCache(s, growCapacity(n));
    if (past && nKeep > 0) {
      for (let l = 0; l < layers; l++)
        for (const [src, dst] of [[past.keys[l], c.keys[l]], [past.values[l], c.values[l]]] as const)
          for (let h = 0; h < H; h++)
            for (let i = 0; i < nKeep; i++) {
              const from = (h * past.capacity + pastKeep[i]) * Dh;
              dst.set(src.subarray(from, from + Dh), (h * c.capacity + i) * Dh);
            }
      for (let i = 0; i < nKeep; i++) c.positions[i] = past.positions[pastKeep[i]];
    }
    c.length = nKeep;
  }

  // append window rows, runs of consecutive rows in one copy
  const base = c.length;
  const m = windowKeep.length;
  for (let l = 0; l < layers; l++)
    for (const [src, dst] of [[presentK[l], c.keys[l]], [presentV[l], c.values[l]]] as const)
      for (let h = 0; h < H; h++) {
        const sBase = (b * H + h) * Lw * Dh;
        const dBase = (h * c.capacity + base) * Dh;
        let i = 0;
        while (i < m) {
          let j = i + 1;
          while (j < m && windowKeep[j] === windowKeep[j - 1] + 1) j++;
          dst.set(src.subarray(sBase + windowKeep[i] * Dh, sBase + (windowKeep[j - 1] + 1) * Dh), dBase + i * Dh);
          i = j;
        }
      }
  for (let i = 0; i < m; i++) c.positions[base + i] = windowPositions[windowKeep[i]];
  c.length = n;
  c.tip.used = n;
  return c;
}
