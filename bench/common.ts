// Shared bits of the benchmarks: argument parsing, timing, a bare-MatMul baseline, generated models.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { writeFixture } from '../src/formats/fixtures.ts';
import { loadModel } from '../src/models/registry.ts';
import { Graph, DT } from '../src/runtime/graph.ts';
import { addLinear, type Int8Encoding, type WeightFormat } from '../src/runtime/quant.ts';

export function parseArgs(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const [k, v] = a.slice(2).split('=');
    if (v !== undefined) out[k] = v;
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[k] = argv[++i];
    else out[k] = 'true';
  }
  return out;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median milliseconds of `fn` over `runs` runs after `warmup` runs. */
export async function timeMs(fn: () => Promise<unknown>, runs: number, warmup = 2): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

/** Two workloads timed in turn, each twice (a, b, a, b): the means of their two medians, so a drift
 * of the machine during the measurement falls on both. */
export async function interleavedMs(a: () => Promise<unknown>, b: () => Promise<unknown>, runs: number): Promise<[number, number]> {
  const [a1, b1, a2, b2] = [await timeMs(a, runs), await timeMs(b, runs), await timeMs(a, runs), await timeMs(b, runs)];
  return [(a1 + a2) / 2, (b1 + b2) / 2];
}

/** A session holding one [K, N] weight in the given format, fed [M, K] activations. */
export async function bareMatMul(K: number, N: number, format: WeightFormat, threads: number, int8?: Int8Encoding): Promise<(M: number) => Promise<number>> {
  const g = new Graph(null);
  const w = new Float32Array(K * N);
  for (let i = 0; i < w.length; i++) w[i] = Math.sin(i * 0.37) * 0.05;
  const x = g.input('x', DT.FLOAT, ['M', K]);
  const y = addLinear(g, 'w', x, w, K, N, format, { int8 });
  g.op('Identity', [y], {}, { output: 'y' });
  g.output('y', DT.FLOAT, ['M', N]);
  const s = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: threads, graphOptimizationLevel: 'all', executionMode: 'sequential' });
  return async (M: number) => {
    const a = new Float32Array(M * K).map((_, i) => Math.cos(i * 0.11));
    const feeds = { x: new ort.Tensor('float32', a, [M, K]) };
    // the machine's rate: the fastest of several runs (a conservative yardstick for ratios)
    const runs = M <= 8 ? 40 : M <= 128 ? 20 : 8;
    for (let i = 0; i < 3; i++) await s.run(feeds);
    let best = Infinity;
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await s.run(feeds);
      best = Math.min(best, performance.now() - t0);
    }
    return (2 * M * K * N) / (best * 1e6); // GFLOP/s
  };
}

export function fmt(n: number, d = 1): string {
  return n.toFixed(d);
}

export interface ModelShape {
  D: number;
  layers: number;
  Fi: number;
  V: number;
  heads: number;
  threads: number;
}

/** The generated model's shape from --hidden --layers --ffn --vocab --heads --threads. */
export function modelShape(a: Record<string, string>, defaults: { hidden: number; ffn: number; layers?: number }): ModelShape {
  const D = Number(a.hidden ?? defaults.hidden);
  return {
    D,
    layers: Number(a.layers ?? defaults.layers ?? 12),
    Fi: Number(a.ffn ?? defaults.ffn),
    V: Number(a.vocab ?? 32000),
    heads: Number(a.heads ?? D / 64),
    threads: Number(a.threads ?? 2),
  };
}

/** Parameters of a generated model of this shape: its blocks' linear layers, and in all. */
export function paramCount(s: ModelShape): { linear: number; total: number } {
  const linear = s.layers * (4 * s.D * s.D + 3 * s.D * s.Fi);
  return { linear, total: linear + 2 * s.V * s.D };
}

/** Write a random bf16 checkpoint of this shape to `dir`, unless one is already there. */
export async function ensureFixture(dir: string, arch: 'llada' | 'llama' | 'sdar' | 'fast_dllm_v2', s: ModelShape, extra: { maxPositions?: number; shards?: number; blockSize?: number } = {}): Promise<void> {
  if (existsSync(join(dir, 'config.json'))) return;
  console.error(`writing a random ${arch} checkpoint to ${dir} ...`);
  await writeFixture(dir, { arch, hidden: s.D, layers: s.layers, heads: s.heads, intermediate: s.Fi, vocab: s.V, dtype: 'BF16', std: 0.02, ...extra });
}

/**
 * Two generated checkpoints timed against each other, one weight format at a time: ms per forward
 * of `rows` canvas positions (bidirectional, no cache, scores for up to 32), the means of two
 * interleaved medians (`runs(rows)` each), and the ratio a / b, printed as rows of a markdown table
 * whose header the caller prints: | dtype | rows | a ms | b ms | a / b |.
 */
export async function forwardVersus(dirA: string, dirB: string, dtypes: WeightFormat[], rows: number[], V: number, threads: number, cacheDir: string | undefined, runs: (rows: number) => number): Promise<void> {
  for (const dtype of dtypes) {
    const a = await loadModel(dirA, { threads, dtype, cacheDir });
    const b = await loadModel(dirB, { threads, dtype, cacheDir });
    for (const L of rows) {
      const pos = Int32Array.from({ length: L }, (_, i) => i);
      const req = { ids: pos.map((i) => (i * 7919) % (V - 16)), positions: pos, visible: new Uint8Array(L * L).fill(1), queries: Int32Array.from({ length: Math.min(L, 32) }, (_, i) => i) };
      const [ma, mb] = await interleavedMs(() => a.forward([req]), () => b.forward([req]), runs(L));
      console.log(`| ${dtype} | ${L} | ${fmt(ma, 2)} | ${fmt(mb, 2)} | ${fmt(ma / mb, 2)}x |`);
    }
    await a.close();
    await b.close();
  }
}
