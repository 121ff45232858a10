// Cached keys and values of context positions, one sequence. Layout per layer:
// [Hkv, n, Dh] (the B=1 slice of the graph's [B, Hkv, T, Dh]). Entries are already
// rotated by RoPE at their own positions, so a cache may hold any set of positions
// (a prefix, or a prefix plus a suffix for the dual cache): visibility is decided per
// forward by the attention bias, not by the order of entries.

export interface KVCache {
  /** number of cached entries */
  length: number;
  /** canvas position of each entry */
  positions: Int32Array;
  keys: Float32Array[];
  values: Float32Array[];
}

export function emptyCache(layers: number): KVCache {
  return { length: 0, positions: new Int32Array(0), keys: Array.from({ length: layers }, () => new Float32Array(0)), values: Array.from({ length: layers }, () => new Float32Array(0)) };
}

/**
 * Gather entries [srcIndex...] along the time axis of a [B, H, T, Dh] buffer for batch row b
 * into a fresh [H, n, Dh] array.
 */
export function gatherTime(src: Float32Array, b: number, H: number, T: number, Dh: number, index: ArrayLike<number>): Float32Array {
  const n = index.length;
  const out = new Float32Array(H * n * Dh);
  for (let h = 0; h < H; h++) {
    const base = (b * H + h) * T * Dh;
    const obase = h * n * Dh;
    // copy runs of consecutive indices in one call
    let i = 0;
    while (i < n) {
      let j = i + 1;
      while (j < n && index[j] === index[j - 1] + 1) j++;
      out.set(src.subarray(base + index[i] * Dh, base + (index[j - 1] + 1) * Dh), obase + i * Dh);
      i = j;
    }
  }
  return out;
}
