// Types of packed-store.mjs.
export declare class PackedStore {
  constructor(layers: number);
  keys: Float32Array[];
  values: Float32Array[];
  layout(size: number, room: number): void;
  write(l: number, kv: 0 | 1, at: number, rows: Float32Array): void;
  apply(rows: Float32Array, index: Int32Array): void;
}
