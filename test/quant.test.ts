// Quantized weights: the packing against a naive dequantization, the ORT kernels against
// that reference, thresholds that broken quantizers fail, and fp32-vs-quantized logits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { addLinear, int8Encoding, int8EncodingFor, quantizeInt8, quantizeInt4, INT4_BLOCK, type Int8Encoding } from '../src/runtime/quant.ts';
import { Graph, DT, I, f32Bytes } from '../src/runtime/graph.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { convertModel, loadModel } from '../src/models/registry.ts';
import { writeFixture } from '../src/formats/fixtures.ts';
import { OptionError } from '../src/errors.ts';
import { CACHE, fixtureModel, range, tempDir } from './helpers.ts';

function randn(n: number, seed: number, std = 1): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (r() + r() + r() + r() - 2) * std * 1.7);
}

/** naive x [M, K] @ W [K, N] in float64 */
function matmul(x: Float32Array, w: ArrayLike<number>, M: number, K: number, N: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) y[m * N + n] += x[m * K + k] * w[k * N + n];
  return y;
}

function dequant8(q: Int8Array, scale: Float32Array, K: number, N: number): Float64Array {
  return Float64Array.from({ length: K * N }, (_, i) => q[i] * scale[i % N]);
}

function dequant4(packed: Uint8Array, scales: Float32Array, K: number, N: number, zero = 8): Float64Array {
  const blocks = Math.ceil(K / INT4_BLOCK);
  const w = new Float64Array(K * N);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / INT4_BLOCK), j = k % INT4_BLOCK;
      const byte = packed[(n * blocks + b) * (INT4_BLOCK / 2) + (j >> 1)];
      const code = j & 1 ? byte >> 4 : byte & 15;
      w[k * N + n] = (code - zero) * scales[n * blocks + b];
    }
  return w;
}

async function runLinear(build: (g: Graph, x: string) => string, x: Float32Array, M: number, K: number): Promise<Float32Array> {
  const g = new Graph(null);
  const xi = g.input('x', DT.FLOAT, ['M', K]);
  g.op('Identity', [build(g, xi)], {}, { output: 'y' });
  g.output('y', DT.FLOAT, ['M', 'N']);
  const s = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: 1 });
  const out = await s.run({ x: new ort.Tensor('float32', x, [M, K]) });
  return out.y.data as Float32Array;
}

function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let e = 0, m = 0;
  for (let i = 0; i < want.length; i++) {
    e = Math.max(e, Math.abs(got[i] - want[i]));
    m = Math.max(m, Math.abs(want[i]));
  }
  return e / m;
}

const K = 96, N = 40, M = 5;
const W = randn(K * N, 1, 0.05);
// a few columns with a much larger range: per-channel scales matter
for (let k = 0; k < K; k++) W[k * N + 3] *= 20;
const X = randn(M * K, 2);
const exact = matmul(X, W, M, K, N);

test('int8: per-output-channel symmetric scales; dequantized weights within half a step', () => {
  const { q, scale } = quantizeInt8(W, K, N);
  for (let n = 0; n < N; n++) {
    let amax = 0;
    for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(W[k * N + n]));
    assert.ok(Math.abs(scale[n] - amax / 127) < 1e-9 * amax + 1e-12);
    for (let k = 0; k < K; k++) assert.ok(Math.abs(q[k * N + n] * scale[n] - W[k * N + n]) <= scale[n] / 2 + 1e-7);
  }
});

test('int4: blocks of 32 per column, low nibble first, zero point 8; within half a step', () => {
  const { packed, scales } = quantizeInt4(W, K, N);
  const d = dequant4(packed, scales, K, N);
  const blocks = K / INT4_BLOCK;
  for (let i = 0; i < K * N; i++) {
    const n = i % N, k = Math.floor(i / N);
    assert.ok(Math.abs(d[i] - W[i]) <= scales[n * blocks + Math.floor(k / INT4_BLOCK)] / 2 + 1e-6);
  }
});

test('int8 encoding: signed codes only where the CPU has int8 dot products', () => {
  // flags as /proc/cpuinfo lists them (abridged): a Sapphire Rapids VM, an AMD EPYC without VNNI
  // (where the u8 x s8 kernel clipped: the test below), a Skylake-SP (AVX-512 without VNNI)
  assert.equal(int8EncodingFor('x64', ' fpu sse4_2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_tile'), 's8');
  assert.equal(int8EncodingFor('x64', ' fpu sse4_2 fma avx2 sha_ni vaes vpclmulqdq rdpid fsrm'), 'u8');
  assert.equal(int8EncodingFor('x64', ' fpu avx2 avx512f avx512dq avx512bw avx512vl'), 'u8');
  assert.equal(int8EncodingFor('x64', ' fpu avx2 avx_vnni'), 's8');
  assert.equal(int8EncodingFor('x64', null), 'u8');
  assert.equal(int8EncodingFor('arm64', null), 's8');
});

test('ORT int8 and int4 kernels compute x @ dequant(W); broken quantizers miss the same threshold', async () => {
  const { q, scale } = quantizeInt8(W, K, N);
  const ref8 = matmul(X, dequant8(q, scale, K, N), M, K, N);
  // u8 (codes + 128, zero point 128) is exact on every CPU; s8 where this machine has int8 dot
  // products, which is what int8Encoding() reports (on x86 without VNNI its kernel clips)
  const encodings: Int8Encoding[] = int8Encoding() === 's8' ? ['u8', 's8'] : ['u8'];
  for (const int8 of encodings) {
    const y8 = await runLinear((g, x) => addLinear(g, 'w', x, W, K, N, 'int8', { int8 }), X, M, K);
    assert.ok(relErr(y8, ref8) < 0.02, `int8 (${int8}) kernel vs dequantized reference: ${relErr(y8, ref8)}`);
    assert.ok(relErr(y8, exact) < 0.03, `int8 (${int8}) vs fp64: ${relErr(y8, exact)}`);
  }
  // the other encoding still builds and runs everywhere (on x86 without VNNI s8 clips: loosely)
  if (int8Encoding() === 'u8') {
    const s8 = await runLinear((g, x) => addLinear(g, 'w', x, W, K, N, 'int8', { int8: 's8' }), X, M, K);
    assert.ok(relErr(s8, exact) < 0.1, `int8 (s8) vs fp64: ${relErr(s8, exact)}`);
  }

  const { packed, scales } = quantizeInt4(W, K, N);
  const nbits = (p: Uint8Array, s: Float32Array) => (g: Graph, x: string) =>
    g.op('MatMulNBits', [x, g.weight('w', DT.UINT8, [N, K / INT4_BLOCK, INT4_BLOCK / 2], p), g.weight('s', DT.FLOAT, [s.length], f32Bytes(s))], { K: I(K), N: I(N), bits: I(4), block_size: I(INT4_BLOCK), accuracy_level: I(4) }, { domain: 'com.microsoft' });
  const y4 = await runLinear(nbits(packed, scales), X, M, K);
  const ref4 = matmul(X, dequant4(packed, scales, K, N), M, K, N);
  assert.ok(relErr(y4, ref4) < 0.02, `int4 kernel vs dequantized reference: ${relErr(y4, ref4)}`);
  assert.ok(relErr(y4, exact) < 0.25, `int4 vs fp64: ${relErr(y4, exact)}`);

  // Broken variants must fail the thresholds above.
  const u8 = (codes: ArrayLike<number>, sc: Float32Array) => (g: Graph, x: string) =>
    g.op('DynamicQuantizeMatMul', [x, g.weight('w', DT.UINT8, [K, N], Uint8Array.from(codes, (v) => v + 128)), g.weight('s', DT.FLOAT, [N], f32Bytes(sc)), g.weight('z', DT.UINT8, [N], new Uint8Array(N).fill(128))], {}, { domain: 'com.microsoft' });
  assert.ok(relErr(await runLinear(u8(q, scale), X, M, K), exact) < 0.03, 'the hand-built u8 layout is right');
  const wrongAxis = await runLinear(u8(q, scale.slice().reverse()), X, M, K);
  assert.ok(relErr(wrongAxis, exact) > 0.03, 'wrong scale axis is caught');
  const wrongSign = await runLinear(u8(Int8Array.from(q, (v) => -v), scale), X, M, K);
  assert.ok(relErr(wrongSign, exact) > 0.03, 'wrong sign is caught');
  const shifted = Uint8Array.from(packed, (b) => (((b & 15) + 1) & 15) | ((((b >> 4) + 1) & 15) << 4)); // zero point off by one
  const wrongZero = await runLinear(nbits(shifted, scales), X, M, K);
  assert.ok(relErr(wrongZero, exact) > 0.25, 'wrong zero point is caught');
});

/** top-1 agreement and mean KL(fp32 || q) over queried positions, from full logits */
function compare(a: Float32Array, b: Float32Array, V: number) {
  const rows = a.length / V;
  let agree = 0, kl = 0;
  for (let r = 0; r < rows; r++) {
    const x = a.subarray(r * V, (r + 1) * V), y = b.subarray(r * V, (r + 1) * V);
    const lse = (v: Float32Array) => {
      const m = Math.max(...v);
      return m + Math.log(v.reduce((s, t) => s + Math.exp(t - m), 0));
    };
    const la = lse(x), lb = lse(y);
    let am = 0, bm = 0;
    for (let i = 0; i < V; i++) {
      if (x[i] > x[am]) am = i;
      if (y[i] > y[bm]) bm = i;
      const p = Math.exp(x[i] - la);
      kl += p * (x[i] - la - (y[i] - lb));
    }
    if (am === bm) agree++;
  }
  return { top1: agree / rows, kl: kl / rows };
}

test('quantized models vs fp32 on a fixture: top-1 agreement and mean KL', async () => {
  const { model: fp, dir } = await fixtureModel({ arch: 'llada', hidden: 128, heads: 4, layers: 3, intermediate: 352, std: 0.08 }, { dtype: 'fp32' });
  const V = fp.args.vocabSize;
  const L = 48;
  const ids = Int32Array.from(range(0, L), (i) => (i * 37 + 11) % (V - 8));
  const req = { ids, positions: Int32Array.from(range(0, L)), visible: new Uint8Array(L * L).fill(1), queries: Int32Array.from(range(0, L)), wantLogits: true };
  const [ref] = await fp.forward([req]);
  const results: Record<string, { top1: number; kl: number }> = {};
  for (const dtype of ['int8', 'int4'] as const) {
    const q = await loadModel(dir, { dtype, cacheDir: CACHE, threads: 2 });
    assert.equal(q.dtype, dtype);
    const [out] = await q.forward([req]);
    results[dtype] = compare(ref.logits!, out.logits!, V);
    await q.close();
  }
  await fp.close();
  assert.ok(results.int8.top1 >= 0.9 && results.int8.kl < 0.02, `int8 ${JSON.stringify(results.int8)}`);
  assert.ok(results.int4.top1 >= 0.7 && results.int4.kl < 0.15, `int4 ${JSON.stringify(results.int4)}`);
  assert.ok(results.int4.kl > results.int8.kl, 'int4 is coarser than int8');
});

test('the int8 encoding is part of the conversion cache key (not for fp32), the child process keeps it, and a bad one is refused', async () => {
  const dir = await tempDir('quench-int8-key-');
  await writeFixture(dir, { arch: 'llada', hidden: 64, heads: 4, layers: 2 });
  const key = async (dtype: 'fp32' | 'int8' | 'int4', int8: Int8Encoding) => (await convertModel(dir, { dtype, int8, cacheDir: CACHE })).target;
  assert.notEqual(await key('int8', 's8'), await key('int8', 'u8'));
  assert.notEqual(await key('int4', 's8'), await key('int4', 'u8')); // (the int4 model's head is int8)
  assert.equal(await key('fp32', 's8'), await key('fp32', 'u8'));
  // converted in a child process: the graph holds the encoding's weights
  const fresh = await tempDir('quench-int8-child-');
  for (const int8 of ['u8', 's8'] as const) {
    const r = await convertModel(dir, { dtype: 'int8', int8, isolate: true, cacheDir: fresh });
    const graph = await readFile(join(r.target, 'model.onnx'), 'latin1');
    assert.equal(graph.includes('head.u8'), int8 === 'u8', int8);
    assert.equal(graph.includes('head.q8'), int8 === 's8', int8);
  }
  await assert.rejects(convertModel(dir, { dtype: 'int8', int8: 'i8' as Int8Encoding, cacheDir: CACHE }), (e: Error) => e instanceof OptionError && /int8 must be s8 or u8/.test(e.message));
});
