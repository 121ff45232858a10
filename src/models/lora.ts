// A base checkpoint with a LoRA adapter merged in as its tensors are read (what PEFT's
// merge_and_unload computes, in fp32): the graph, the quantizer and the cache see one
// ordinary checkpoint, so an adapted model runs exactly as fast as its base.

import { toFloat32, type TensorInfo } from '../formats/safetensors.ts';
import type { LoraAdapter, LoraDelta } from '../formats/lora.ts';
import { LowRankUpdate } from '../runtime/lowrank.ts';
import type { WeightReader } from './transformer.ts';

export class LoraWeights {
  private readonly update = new LowRankUpdate();

  constructor(
    private readonly base: WeightReader & { close(): Promise<void> },
    private readonly adapter: LoraAdapter,
  ) {}

  info(name: string): TensorInfo {
    return this.base.info(name);
  }

  async readF32(name: string): Promise<Float32Array> {
    // (a tensor saved whole, a targeted embedding's for one, is the one its pair updates)
    const whole = this.adapter.replaced.get(name);
    const w = whole !== undefined ? await this.adapterF32(whole) : await this.base.readF32(name);
    const d = this.adapter.deltas.get(name);
    if (!d) return w;
    const [rows, cols] = this.info(name).shape;
    const [l, r] = factors(d, rows, cols, await this.adapterF32(d.a), await this.adapterF32(d.b));
    return this.update.apply(w, rows, cols, l, r, d.rank);
  }

  private async adapterF32(key: string): Promise<Float32Array> {
    return toFloat32(this.adapter.file.tensors.get(key)!.dtype, await this.adapter.file.read(key));
  }

  async close(): Promise<void> {
    try {
      await this.update.close();
    } finally {
      try {
        await this.adapter.close();
      } finally {
        await this.base.close();
      }
    }
  }
}

/**
 * The update as L [rows, r] @ R [r, cols] for a base tensor [rows, cols]. Linear: W [out, in] +=
 * s * B [out, r] @ A [r, in]. Embedding: E [V, D] += s * (B [D, r] @ A [r, V])^T = (s * A^T) @ B^T.
 */
export function factors(d: LoraDelta, rows: number, cols: number, a: Float32Array, b: Float32Array): [Float32Array, Float32Array] {
  const r = d.rank;
  if (d.kind === 'linear') return [b.map((x) => x * d.scale), a];
  const l = new Float32Array(rows * r);
  for (let k = 0; k < r; k++) for (let v = 0; v < rows; v++) l[v * r + k] = d.scale * a[k * rows + v];
  const rt = new Float32Array(r * cols);
  for (let j = 0; j < cols; j++) for (let k = 0; k < r; k++) rt[k * cols + j] = b[j * r + k];
  return [l, rt];
}
