// The batch's packed cache buffers, [B, Hkv, cap, Dh] per layer for keys and for values: what
// a forward reads as past_key_* / past_value_*. Shared by the in-thread runner (session.ts)
// and the graph worker (graph-worker.mjs), so it is plain JavaScript: a worker thread does not
// inherit the main thread's TypeScript loader. Types: packed-store.d.mts.

export class PackedStore {
  constructor(layers) {
    this.layers = layers;
    this.pool = null;
    this.keys = [];
    this.values = [];
  }

  /**
   * Views of `size` floats per layer. Memory that is large enough is reused and zeroed: it holds
   * other sequences' rows, and hidden columns must be finite (a NaN would survive the attention
   * bias), as new memory is. New memory gets `room` floats, so a growing batch fits later; memory
   * over four times the room is given back (one long batch does not hold it for good).
   */
  layout(size, room) {
    if (this.pool === null || this.pool.keys[0].length < size || this.pool.keys[0].length > 4 * room) {
      const alloc = () => Array.from({ length: this.layers }, () => new Float32Array(room));
      this.pool = { keys: alloc(), values: alloc() };
    } else for (const a of [...this.pool.keys, ...this.pool.values]) a.fill(0, 0, size);
    this.keys = this.pool.keys.map((k) => k.subarray(0, size));
    this.values = this.pool.values.map((v) => v.subarray(0, size));
  }

  /** Rows of layer `l`'s keys (kv 0) or values (kv 1), at float offset `at`. */
  write(l, kv, at, rows) {
    (kv === 0 ? this.keys : this.values)[l].set(rows, at);
  }

  /**
   * Replay an encoded op list: per op four ints in `index`, [-1, size, room, 0] for a layout,
   * [layer, kv, at, length] for a write of the next `length` floats of `rows`.
   */
  apply(rows, index) {
    for (let i = 0, o = 0; i < index.length; i += 4) {
      if (index[i] === -1) this.layout(index[i + 1], index[i + 2]);
      else {
        this.write(index[i], index[i + 1], index[i + 2], rows.subarray(o, o + index[i + 3]));
        o += index[i + 3];
      }
    }
  }
}
