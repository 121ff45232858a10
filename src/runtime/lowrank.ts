// A low-rank update W + L @ R on ORT's MatMul (a LoRA merge: rows x cols from a rank-r product),
// one small session reused for every tensor of a conversion. In JS the product ran at
// ~0.5-0.8 GFLOP/s: minutes for an 8B model's adapter.

import ort from 'onnxruntime-node';
import { DT, Graph } from './graph.ts';

export class LowRankUpdate {
  private session: Promise<ort.InferenceSession> | null = null;

  private open(): Promise<ort.InferenceSession> {
    if (!this.session) {
      const g = new Graph(null);
      const w = g.input('w', DT.FLOAT, ['rows', 'cols']);
      const l = g.input('l', DT.FLOAT, ['rows', 'r']);
      const r = g.input('r', DT.FLOAT, ['r', 'cols']);
      g.op('Add', [w, g.op('MatMul', [l, r])], {}, { output: 'y' });
      g.output('y', DT.FLOAT, ['rows', 'cols']);
      this.session = ort.InferenceSession.create(g.toBytes(), { graphOptimizationLevel: 'all' });
    }
    return this.session;
  }

  /** w [rows, cols] + l [rows, rank] @ r [rank, cols], as a new array. */
  async apply(w: Float32Array, rows: number, cols: number, l: Float32Array, r: Float32Array, rank: number): Promise<Float32Array> {
    const s = await this.open();
    const out = await s.run({
      w: new ort.Tensor('float32', w, [rows, cols]),
      l: new ort.Tensor('float32', l, [rows, rank]),
      r: new ort.Tensor('float32', r, [rank, cols]),
    });
    return out.y.data as Float32Array;
  }

  async close(): Promise<void> {
    const s = this.session;
    this.session = null;
    // (a session that failed to start has nothing to release; its error was the caller's)
    const session = s ? await s.catch(() => null) : null;
    await session?.release();
  }
}
