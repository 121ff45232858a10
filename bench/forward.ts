// quench bench forward: ms per forward of a generated LLaDA-layout model at several row
// counts, achieved GFLOP/s, and the ratio to a bare ORT MatMul of the model's largest
// weight matrix measured in the same run; peak RSS after loading.
//
//   quench bench forward [--hidden 1024 --layers 12 --ffn 2816 --vocab 32000]
//                        [--dtype fp32,int8,int4] [--rows 1,8,32,128,512] [--threads 2]

import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadModel, lastConversionPeakRss } from '../src/models/registry.ts';
import type { WeightFormat } from '../src/runtime/quant.ts';
import { bareMatMul, ensureFixture, fmt, modelShape, paramCount, parseArgs, timeMs } from './common.ts';

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const shape = modelShape(a, { hidden: 1024, ffn: 2816 });
  const { D, layers, Fi, V, threads } = shape;
  const rows = (a.rows ?? '1,8,32,128,512').split(',').map(Number);
  const dtypes = (a.dtype ?? 'fp32').split(',') as WeightFormat[];
  const dir = a.dir ?? join(tmpdir(), `quench-bench-llada-${D}x${layers}x${Fi}x${V}`);
  await ensureFixture(dir, 'llada', shape, { maxPositions: 4096 });
  const { linear: linearParams, total: totalParams } = paramCount(shape);
  console.log(`model: LLaDA layout, d_model ${D}, ${layers} layers, ffn ${Fi}, vocab ${V}: ${(totalParams / 1e6).toFixed(0)}M parameters (${((totalParams * 4) / 2 ** 30).toFixed(2)} GiB fp32); threads ${threads}`);
  for (const dtype of dtypes) {
    const t0 = performance.now();
    const model = await loadModel(dir, { threads, dtype, cacheDir: a.cache });
    const loadMs = performance.now() - t0;
    const rss = process.resourceUsage().maxRSS * 1024;
    const conv = !model.cached && lastConversionPeakRss ? `, conversion child peak RSS ${(lastConversionPeakRss / 2 ** 30).toFixed(2)} GiB` : '';
    console.log(`\n[${dtype}] load ${(loadMs / 1000).toFixed(1)} s (${model.cached ? 'from cache' : 'converted'}${conv}), serving process peak RSS ${(rss / 2 ** 30).toFixed(2)} GiB = ${(rss / (totalParams * 4)).toFixed(2)}x the fp32 weights`);
    // the largest weight matrix of the graph: the fused gate+up projection [D, 2F]
    const bare = await bareMatMul(D, 2 * Fi, dtype, threads);
    console.log('| rows | ms/forward | GFLOP/s | bare MatMul GFLOP/s | ratio |');
    console.log('|---:|---:|---:|---:|---:|');
    for (const L of rows) {
      const Q = Math.min(L, 32);
      const pos = Int32Array.from({ length: L }, (_, i) => i);
      const req = { ids: pos.map((i) => (i * 7) % 1000), positions: pos, visible: new Uint8Array(L * L).fill(1), queries: Int32Array.from({ length: Q }, (_, i) => i) };
      const runs = L <= 8 ? 20 : L <= 128 ? 10 : 5;
      const ms = await timeMs(() => model.forward([req]), runs);
      const flops = 2 * linearParams * L + 4 * layers * L * L * D + 2 * Q * D * V;
      const gflops = flops / (ms * 1e6);
      const bareRate = await bare(L);
      console.log(`| ${L} | ${fmt(ms, 2)} | ${fmt(gflops)} | ${fmt(bareRate)} | ${fmt((gflops / bareRate) * 100, 0)}% |`);
    }
    await model.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
