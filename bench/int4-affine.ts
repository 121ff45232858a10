// int4 on an asymmetric 4-bit file's weights (Q4_K here; src/runtime/quant.ts): kept on their
// affine grids (MatMulNBits plus an fp32 correction of the block offsets) against the same
// weights moved off their grids by 1e-5, which int4 rounds again by ggml's Q4_0 rule, as it did
// for every K-quant before. Each layer's error against an fp64 product with the file's weights,
// and its time (medians, interleaved) at a few row counts.
//
//   npx tsx bench/int4-affine.ts [--k 4096 --n 4096] [--rows 1,16,128] [--threads 2] [--runs 30]

import ort from 'onnxruntime-node';
import { Graph, DT } from '../src/runtime/graph.ts';
import { addLinear } from '../src/runtime/quant.ts';
import { dequantize } from '../src/formats/gguf.ts';
import { ggmlEncode, mulberry32 } from '../src/formats/fixtures.ts';
import { fmt, interleavedMs, parseArgs } from './common.ts';

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const K = Number(a.k ?? 4096), N = Number(a.n ?? 4096), threads = Number(a.threads ?? 2), runs = Number(a.runs ?? 30);
  const rows = (a.rows ?? '1,16,128').split(',').map(Number);
  const r = mulberry32(3);
  const randn = (n: number, std: number) => Float32Array.from({ length: n }, () => (r() + r() + r() + r() - 2) * 1.7 * std);
  // a Q4_K tensor [N rows of K] as the file decodes it, as x @ W's [K, N]
  const file = dequantize(12, ggmlEncode(12, randn(K * N, 0.02)), K * N);
  const kept = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) kept[k * N + n] = file[n * K + k];
  const rounded = Float32Array.from(kept, (w, i) => w + (i % 3 === 0 ? 1e-5 : 0));
  const session = async (w: Float32Array) => {
    const g = new Graph(null);
    const x = g.input('x', DT.FLOAT, ['M', K]);
    g.op('Identity', [addLinear(g, 'w', x, w, K, N, 'int4')], {}, { output: 'y' });
    g.output('y', DT.FLOAT, ['M', N]);
    return ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: threads });
  };
  const [sKept, sRounded] = [await session(kept), await session(rounded)];
  // error: 8 rows against fp64 x @ (the file's W)
  const M = 8;
  const x = randn(M * K, 1);
  const exact = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) { const xv = x[m * K + k]; for (let n = 0; n < N; n++) exact[m * N + n] += xv * kept[k * N + n]; }
  const err = async (s: ort.InferenceSession) => {
    const y = (await s.run({ x: new ort.Tensor('float32', x, [M, K]) })).y.data as Float32Array;
    let e = 0, norm = 0;
    for (let i = 0; i < y.length; i++) (e += (y[i] - exact[i]) ** 2), (norm += exact[i] ** 2);
    return Math.sqrt(e / norm);
  };
  console.log(`int4 of a Q4_K tensor [${K} x ${N}], ${threads} threads; relative L2 error against fp64 x @ W: kept ${(await err(sKept)).toExponential(2)}, rounded again ${(await err(sRounded)).toExponential(2)}`);
  console.log('\n| rows | rounded again (ms) | kept, with the offsets (ms) | kept / rounded |\n|---:|---:|---:|---:|');
  for (const m of rows) {
    const feeds = { x: new ort.Tensor('float32', randn(m * K, 1), [m, K]) };
    const [tr, tk] = await interleavedMs(() => sRounded.run(feeds), () => sKept.run(feeds), runs);
    console.log(`| ${m} | ${fmt(tr, 3)} | ${fmt(tk, 3)} | ${fmt(tk / tr, 2)}x |`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
