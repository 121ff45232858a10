// A base checkpoint with a LoRA adapter merged in as its tensors are read (what PEFT's
// merge_and_unload computes, in fp32): the graph, the quantizer and the cache see one
// ordinary checkpoint, so an adapted model runs exactly as fast as its base.

import { toFloat32, type TensorInfo } from '../formats/safetensors.ts';
import type { LoraAdapter, LoraDelta } from '../formats/lora.ts';
import type { WeightReader } from './transformer.ts';

export class LoraWeights {
  constructor(
    private readonly base: WeightReader & { close(): Promise<void> },
    private readonly adapter: LoraAdapter,
  ) {}

  info(name: string): TensorInfo {
    return this.base.info(name);
  }

  async readF32(name: string): Promise<Float32Array> {
    const whole = this.adapter.replaced.get(name);
    if (whole !== undefined) return this.adapterF32(whole);
    const w = await this.base.readF32(name);
    const d = this.adapter.deltas.get(name);
    if (d) addDelta(w, this.info(name).shape, d, await this.adapterF32(d.a), await this.adapterF32(d.b));
    return w;
  }

  private async adapterF32(key: string): Promise<Float32Array> {
    return toFloat32(this.adapter.file.tensors.get(key)!.dtype, await this.adapter.file.read(key));
  }

  async close(): Promise<void> {
    await this.adapter.close();
    await this.base.close();
  }
}

/**
 * w += scale * B @ A in place, w [rows, cols] row-major. Linear: w [out, in], A [r, in],
 * B [out, r]. Embedding: w [V, D] gets (B @ A)^T with A [r, V], B [D, r], so row v adds
 * scale * sum_k A[k, v] B[:, k].
 */
export function addDelta(w: Float32Array, shape: readonly number[], d: LoraDelta, a: Float32Array, b: Float32Array): void {
  const [rows, cols] = shape;
  const r = d.rank;
  if (d.kind === 'linear') {
    // (row by row: the rank's few rows of A stay in cache; cost rows * r * cols)
    for (let o = 0; o < rows; o++) {
      const row = o * cols;
      for (let k = 0; k < r; k++) {
        const s = d.scale * b[o * r + k];
        if (s === 0) continue;
        const ak = k * cols;
        for (let i = 0; i < cols; i++) w[row + i] += s * a[ak + i];
      }
    }
    return;
  }
  // (B^T as [r, D] rows so the inner loop runs along w's row)
  const bt = new Float32Array(r * cols);
  for (let j = 0; j < cols; j++) for (let k = 0; k < r; k++) bt[k * cols + j] = b[j * r + k];
  for (let v = 0; v < rows; v++) {
    const row = v * cols;
    for (let k = 0; k < r; k++) {
      const s = d.scale * a[k * rows + v];
      if (s === 0) continue;
      const bk = k * cols;
      for (let j = 0; j < cols; j++) w[row + j] += s * bt[bk + j];
    }
  }
}
