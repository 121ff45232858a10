// The two encodings of int8 weights (src/runtime/quant.ts) on this machine: the rate of a bare
// int8 MatMul of one weight in each (the fastest of several runs), and each one's error against
// an fp64 product on weights with a few wide columns (where a kernel that adds products in
// saturating 16-bit lanes clips), next to the encoding quench picks here.
//
//   npx tsx bench/int8.ts [--k 1024 --n 5632] [--rows 1,8,32,128] [--threads 2]

import ort from 'onnxruntime-node';
import { Graph, DT } from '../src/runtime/graph.ts';
import { addLinear, int8Encoding, type Int8Encoding } from '../src/runtime/quant.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';
import { bareMatMul, fmt, parseArgs } from './common.ts';

const ENCODINGS: Int8Encoding[] = ['s8', 'u8'];

/** max |y - exact| / max |exact| of x [M, K] @ W [K, N] through one int8 linear layer */
async function relError(int8: Int8Encoding): Promise<number> {
  const K = 256, N = 64, M = 16;
  const r = mulberry32(11);
  const randn = (n: number, std: number) => Float32Array.from({ length: n }, () => (r() + r() + r() + r() - 2) * 1.7 * std);
  const w = randn(K * N, 0.05);
  for (let k = 0; k < K; k++) for (const n of [3, 17, 40]) w[k * N + n] *= 20; // wide columns
  const x = randn(M * K, 2);
  const g = new Graph(null);
  const xi = g.input('x', DT.FLOAT, ['M', K]);
  g.op('Identity', [addLinear(g, 'w', xi, w, K, N, 'int8', { int8 })], {}, { output: 'y' });
  g.output('y', DT.FLOAT, ['M', N]);
  const s = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: 1 });
  const y = (await s.run({ x: new ort.Tensor('float32', x, [M, K]) })).y.data as Float32Array;
  let err = 0, top = 0;
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let e = 0;
      for (let k = 0; k < K; k++) e += x[m * K + k] * w[k * N + n];
      err = Math.max(err, Math.abs(y[m * N + n] - e));
      top = Math.max(top, Math.abs(e));
    }
  return err / top;
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const K = Number(a.k ?? 1024), N = Number(a.n ?? 5632), threads = Number(a.threads ?? 2);
  const rows = (a.rows ?? '1,8,32,128').split(',').map(Number);
  console.log(`int8 weights [${K}, ${N}], ${threads} threads; quench's encoding on this machine: ${int8Encoding()}\n`);
  const rate = await Promise.all(ENCODINGS.map((e) => bareMatMul(K, N, 'int8', threads, e)));
  console.log(`| rows | ${ENCODINGS.map((e) => `${e} GOP/s`).join(' | ')} | u8 / s8 |`);
  console.log(`|---:|${ENCODINGS.map(() => '---:').join('|')}|---:|`);
  for (const M of rows) {
    const r = [];
    for (const f of rate) r.push(await f(M));
    console.log(`| ${M} | ${r.map((x) => fmt(x)).join(' | ')} | ${fmt(r[1] / r[0], 2)}x |`);
  }
  console.log(`\nrelative error against fp64 (wide weight columns): ${(await Promise.all(ENCODINGS.map(async (e) => `${e} ${(await relError(e)).toFixed(4)}`))).join(', ')}`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
