// Quantized weights: the packing against a naive dequantization, the ORT kernels against
// that reference, thresholds that broken quantizers fail, and fp32-vs-quantized logits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { addLinear, int8Encoding, int8EncodingFor, quantizeInt8, quantizeInt4, quantizeRows, INT4_BLOCK, type Int8Encoding } from '../src/runtime/quant.ts';
import { mixture } from '../src/models/transformer.ts';
import type { ModelArgs } from '../src/formats/config.ts';
import { Graph, DT, I, f32Bytes } from '../src/runtime/graph.ts';
import { ggmlEncode, mulberry32, type FixtureOptions } from '../src/formats/fixtures.ts';
import { dequantize } from '../src/formats/gguf.ts';
import type { ForwardResult } from '../src/runtime/session.ts';
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

/** ggml's Q4_0 rule, checked on one block's dequantized values: the value of largest magnitude
 *  comes back exactly (code 0 = -8 steps), the others within half a step, or within one where
 *  code 15 clips a value of the other sign beyond 7.5 steps. */
function checkQ4Block(orig: ArrayLike<number>, deq: ArrayLike<number>, step: number, label: string) {
  let big = 0;
  for (let j = 1; j < orig.length; j++) if (Math.abs(orig[j]) > Math.abs(orig[big])) big = j;
  assert.ok(Math.abs(deq[big] - orig[big]) <= 1e-6 * Math.abs(orig[big]), `${label}: the largest value ${orig[big]} comes back (${deq[big]})`);
  assert.ok(Math.abs(Math.abs(step) * 8 - Math.abs(orig[big])) <= 1e-6 * Math.abs(orig[big]), `${label}: step = largest / 8`);
  for (let j = 0; j < orig.length; j++) {
    const clipped = Math.abs(deq[j] - 7 * step) < 1e-9 && orig[j] / step > 7.5;
    assert.ok(Math.abs(deq[j] - orig[j]) <= Math.abs(step) * (clipped ? 1 : 0.5) + 1e-6, `${label} at ${j}: ${orig[j]} -> ${deq[j]}`);
  }
}

test('int4: blocks of 32 per column by ggml\'s Q4_0 rule, low nibble first, zero point 8', () => {
  const { packed, scales } = quantizeInt4(W, K, N);
  const d = dequant4(packed, scales, K, N);
  const blocks = K / INT4_BLOCK;
  for (let n = 0; n < N; n++)
    for (let b = 0; b < blocks; b++) {
      const at = (j: number) => (b * INT4_BLOCK + j) * N + n;
      const idx = range(0, INT4_BLOCK).map(at);
      checkQ4Block(idx.map((i) => W[i]), idx.map((i) => d[i]), scales[n * blocks + b], `column ${n} block ${b}`);
    }
});

test('int4 and QMoE 4-bit codes take a Q4_0 file\'s blocks back bit for bit (reference or importance-matrix quantizer), int8 expert blocks a Q8_0 file\'s (its values decoded by the GGUF reader)', () => {
  const R = 8, C = 96;
  // values [R, C] (rows = out, blocks along C) through QMoE's rows and MatMulNBits' columns
  // (quantizeInt4 takes [K, N] = the transpose): each must come back exactly (=== : -0 is 0)
  const roundTrip = (v: Float32Array, label: string) => {
    const rows = quantizeRows(v, R, C, 4, 32);
    const T = new Float32Array(C * R);
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) T[c * R + r] = v[r * C + c];
    const cols = quantizeInt4(T, C, R);
    const d4 = dequant4(cols.packed, cols.scales, C, R);
    for (let r = 0; r < R; r++)
      for (let c = 0; c < C; c++) {
        const i = r * C + c;
        const code = ((i & 1 ? rows.packed[i >> 1] >> 4 : rows.packed[i >> 1]) & 15) - 8;
        assert.ok(code * rows.scales[r * (C / 32) + Math.floor(c / 32)] === v[i], `${label} QMoE row ${r} col ${c}`);
        assert.ok(d4[c * R + r] === v[i], `${label} MatMulNBits row ${r} col ${c}`);
      }
  };
  roundTrip(dequantize(2, ggmlEncode(2, randn(R * C, 21, 0.2)), R * C), 'Q4_0');
  // blocks from an importance-matrix quantizer: a least-squares step, so the largest value may sit
  // on any code (no -8 in the block): they keep their grid too
  const rn = mulberry32(23);
  const grid = new Float32Array(R * C);
  for (let b = 0; b < (R * C) / 32; b++) {
    const d = Math.fround(2 ** -(6 + Math.floor(rn() * 4)) * (1 + Math.floor(rn() * 1024) / 1024)) * (rn() < 0.5 ? -1 : 1);
    const lo = 1 + Math.floor(rn() * 4), hi = 15 - Math.floor(rn() * 4); // codes lo..hi, never 0
    for (let j = 0; j < 32; j++) grid[b * 32 + j] = Math.fround(d * (lo + Math.floor(rn() * (hi - lo + 1)) - 8));
  }
  roundTrip(grid, 'grid');
  // Q8_0 into int8 experts in blocks of 32: the same codes (the scale within an ulp of float math)
  const q80 = dequantize(8, ggmlEncode(8, randn(R * C, 22, 0.2)), R * C);
  const r8 = quantizeRows(q80, R, C, 8, 32);
  for (let i = 0; i < R * C; i++) {
    const v = (r8.packed[i] - 128) * r8.scales[Math.floor(i / C) * (C / 32) + Math.floor((i % C) / 32)];
    assert.ok(Math.abs(v - q80[i]) <= 1e-6 * Math.abs(q80[i]), `Q8_0 at ${i}: ${q80[i]} -> ${v}`);
  }
});

test('int4 keeps an asymmetric 4-bit file\'s blocks (Q4_1, Q4_K: min + step x code) exactly, the offsets added back in the graph; x @ W as the file decodes W', async () => {
  // weights [R = out, C = in] as a GGUF row holds them; blocks run along C (K for x @ W)
  const R = 24, C = 512, M2 = 4;
  const X2 = randn(M2 * C, 31, 1);
  for (const [type, label] of [[3, 'Q4_1'], [12, 'Q4_K']] as const) {
    const orig = randn(R * C, 30 + type, 0.05);
    const v = dequantize(type, ggmlEncode(type, orig), R * C);
    // (the encoder writes what the reader decodes: every value within a step of the original)
    for (let i = 0; i < v.length; i++) assert.ok(Math.abs(v[i] - orig[i]) < 0.05, `${label} encoder at ${i}: ${orig[i]} -> ${v[i]}`);
    const Wt = new Float32Array(C * R); // [K, N]
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) Wt[c * R + r] = v[r * C + c];
    const { packed, scales, offsets } = quantizeInt4(Wt, C, R);
    assert.ok(offsets, `${label}: read as affine blocks`);
    const blocks = C / INT4_BLOCK;
    const d = dequant4(packed, scales, C, R);
    for (let c = 0; c < C; c++)
      for (let r = 0; r < R; r++) {
        const back = d[c * R + r] + offsets[r * blocks + Math.floor(c / INT4_BLOCK)];
        assert.ok(Math.abs(back - Wt[c * R + r]) <= 1e-6 * Math.max(Math.abs(Wt[c * R + r]), 1e-3), `${label} (${c}, ${r}): ${Wt[c * R + r]} -> ${back}`);
      }
    // the graph: MatMulNBits plus the block sums' correction computes x @ W (its activations
    // quantized to int8: the kernel's own error, as for Q4_0's exact blocks)
    const want = matmul(X2, Wt, M2, C, R);
    const y = await runLinear((g, x) => addLinear(g, 'w', x, Wt, C, R, 'int4'), X2, M2, C);
    const err = relErr(y, want);
    assert.ok(err < 0.01, `${label}: int4 vs x @ W: ${err}`);
    // without the offsets (the symmetric re-rounding int4 did before) the error is several times larger
    const sym = new Float64Array(C * R);
    const codes = quantizeInt4(Float32Array.from(Wt, (w, i) => w + (i % 7 === 0 ? 1e-4 : 0)), C, R); // (off every grid: the Q4_0 rule)
    assert.equal(codes.offsets, null);
    sym.set(dequant4(codes.packed, codes.scales, C, R));
    assert.ok(relErr(matmul(X2, sym, M2, C, R), want) > 3 * err, `re-rounded: ${relErr(matmul(X2, sym, M2, C, R), want)} against ${err}`);
  }
  // a fused matrix whose columns are part Q4_K, part off every grid (a Q4_K_M file's q and k beside
  // a Q6_K v): the Q4_K blocks kept, the others by the Q4_0 rule with offset 0
  const q4k = dequantize(12, ggmlEncode(12, randn(20 * C, 40, 0.05)), 20 * C);
  const fused = new Float32Array(C * 26); // [K, N]: columns 0..19 Q4_K, 20..25 fp
  const fp = randn(6 * C, 41, 0.05);
  for (let c = 0; c < C; c++) {
    for (let r = 0; r < 20; r++) fused[c * 26 + r] = q4k[r * C + c];
    for (let r = 0; r < 6; r++) fused[c * 26 + 20 + r] = fp[r * C + c];
  }
  const f = quantizeInt4(fused, C, 26);
  assert.ok(f.offsets, 'a quarter off the grids still reads as affine');
  const fd = dequant4(f.packed, f.scales, C, 26);
  for (let c = 0; c < C; c++)
    for (let r = 0; r < 20; r++) assert.ok(Math.abs(fd[c * 26 + r] + f.offsets[r * (C / INT4_BLOCK) + Math.floor(c / INT4_BLOCK)] - fused[c * 26 + r]) <= 1e-6 * Math.max(Math.abs(fused[c * 26 + r]), 1e-3));
  for (let r = 20; r < 26; r++) assert.equal(f.offsets[r * (C / INT4_BLOCK)], 0);
  // fp weights (off any grid) and a Q4_0 file's blocks (symmetric grids) have no offsets
  assert.equal(quantizeInt4(W, K, N).offsets, null);
  assert.equal(quantizeInt4(dequantize(2, ggmlEncode(2, randn(64 * 32, 9, 0.2)), 64 * 32), 64, 32).offsets, null);
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

/** A fixture run in fp32, int8 and int4 on the same 48 rows: each format's top-1 agreement and mean
 * KL against fp32; `check` sees each quantized forward. */
async function quantizedVsFp32(o: FixtureOptions, visible?: (L: number) => Uint8Array, check?: (dtype: 'int8' | 'int4', out: ForwardResult, V: number) => void) {
  const { model: fp, dir } = await fixtureModel(o, { dtype: 'fp32' });
  const V = fp.args.vocabSize;
  const L = 48;
  const ids = Int32Array.from(range(0, L), (i) => (i * 37 + 11) % (V - 8));
  const req = { ids, positions: Int32Array.from(range(0, L)), visible: visible?.(L) ?? new Uint8Array(L * L).fill(1), queries: Int32Array.from(range(0, L)), wantLogits: true };
  const [ref] = await fp.forward([req]);
  const results: Record<string, { top1: number; kl: number }> = {};
  for (const dtype of ['int8', 'int4'] as const) {
    const q = await loadModel(dir, { dtype, cacheDir: CACHE, threads: 2 });
    assert.equal(q.dtype, dtype);
    const [out] = await q.forward([req]);
    results[dtype] = compare(ref.logits!, out.logits!, V);
    check?.(dtype, out, V);
    await q.close();
  }
  await fp.close();
  return results as { int8: { top1: number; kl: number }; int4: { top1: number; kl: number } };
}

test('quantized models vs fp32 on a fixture: top-1 agreement and mean KL', async () => {
  const results = await quantizedVsFp32({ arch: 'llada', hidden: 128, heads: 4, layers: 3, intermediate: 352, std: 0.08 });
  assert.ok(results.int8.top1 >= 0.9 && results.int8.kl < 0.02, `int8 ${JSON.stringify(results.int8)}`);
  assert.ok(results.int4.top1 >= 0.7 && results.int4.kl < 0.15, `int4 ${JSON.stringify(results.int4)}`);
  assert.ok(results.int4.kl > results.int8.kl, 'int4 is coarser than int8');
});

test('quantized mixture models (LLaDA-MoE, LLaDA2.0, RND1) vs fp32 through loadModel: top-1 agreement and mean KL', async () => {
  for (const o of [
    { arch: 'llada_moe', experts: 8, expertsPerToken: 2, expertSize: 64 },
    { arch: 'llada2', experts: 8, expertsPerToken: 2, expertSize: 64, groups: 4, groupsKept: 2, blockSize: 8 },
    { arch: 'rnd1', experts: 8, expertsPerToken: 2, expertSize: 64 },
  ] as const) {
    const blocks = (L: number) => new Uint8Array(L * L).map((_, k) => (o.arch === 'llada2' && Math.floor((k % L) / 8) > Math.floor(Math.floor(k / L) / 8) ? 0 : 1));
    const results = await quantizedVsFp32({ hidden: 128, heads: 4, layers: 3, intermediate: 352, std: 0.08, ...o }, blocks);
    // (the dense model's bounds; int4's top-1 a little lower: a quantized row can flip a router's
    // choice between near-equal experts, the sigmoid router's most (measured 0.65 / KL 0.026 on
    // the LLaDA2.0 fixture, 0.81 / 0.0044 on LLaDA-MoE's, 0.83 / 0.0050 on RND1's); broken experts fail the KL bounds)
    assert.ok(results.int8.top1 >= 0.9 && results.int8.kl < 0.02, `${o.arch} int8 ${JSON.stringify(results.int8)}`);
    assert.ok(results.int4.top1 >= 0.6 && results.int4.kl < 0.15, `${o.arch} int4 ${JSON.stringify(results.int4)}`);
    assert.ok(results.int4.kl > results.int8.kl, `${o.arch}: int4 is coarser than int8`);
  }
});

test('a quantized DiT (MDLM: LayerNorm, GELU, head bias; the adaLN fold happens before quantizing) vs fp32: top-1 agreement and mean KL; the mask stays out', async () => {
  const results = await quantizedVsFp32({ arch: 'mdlm', hidden: 128, heads: 4, layers: 3, condDim: 32, std: 0.08 }, undefined, (dtype, out, V) => {
    for (let r = 0; r < 48; r++) assert.ok(out.logits![r * V + V - 1] <= -1e8, `${dtype}: the mask's logit is suppressed`);
  });
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

test('expert rows for QMoE: per-row or per-block codes (8 bits symmetric within half a step, 4 bits by the Q4_0 rule), low nibble first', () => {
  const R = 6, C = 64;
  const w = randn(R * C, 5, 0.3);
  for (const [bits, block] of [[8, 0], [8, 32], [4, 0], [4, 32]] as const) {
    const { packed, scales } = quantizeRows(w, R, C, bits, block);
    const B = block || C;
    const deq = Float64Array.from({ length: R * C }, (_, i) => (bits === 8 ? packed[i] - 128 : ((i & 1 ? packed[i >> 1] >> 4 : packed[i >> 1]) & 15) - 8) * scales[Math.floor(i / C) * (C / B) + Math.floor((i % C) / B)]);
    for (let r = 0; r < R; r++)
      for (let b = 0; b < C / B; b++) {
        const idx = range(0, B).map((j) => r * C + b * B + j);
        const s = scales[r * (C / B) + b];
        if (bits === 4) checkQ4Block(idx.map((i) => w[i]), idx.map((i) => deq[i]), s, `bits 4 block ${block} row ${r}.${b}`);
        else for (const i of idx) assert.ok(Math.abs(deq[i] - w[i]) <= s / 2 + 1e-7, `bits 8 block ${block} at ${i}`);
      }
  }
});

test('the mixture of experts (fp32 MoE, int8/int4 QMoE; softmax routing, renormalized or not, and grouped sigmoid routing) against a naive mixture of the same (dequantized) experts', async () => {
  // softmax routing (LLaDA-MoE) with widths that take int4 blocks of 32; grouped sigmoid routing
  // with an expert bias (LLaDA2.0) with an expert width (24) that takes int4 codes per row
  const cases = [
    { scoring: 'softmax', E: 6, K: 2, Fe: 32, groups: 1, groupsKept: 1, scale: 1, expertBias: false, biasMean: 0, int4Block: 32 },
    // (renormalized over the chosen k: RND1's norm_topk_prob; int4 in blocks and per row)
    { scoring: 'softmax', normalize: true, E: 6, K: 3, Fe: 32, groups: 1, groupsKept: 1, scale: 1, expertBias: false, biasMean: 0, int4Block: 32 },
    { scoring: 'softmax', normalize: true, E: 6, K: 3, Fe: 24, groups: 1, groupsKept: 1, scale: 1, expertBias: false, biasMean: 0, int4Block: 0 },
    // (4 experts per group: a group's worth is its best two, not its sum; biases well below 0:
    // experts outside the kept groups must lose even to negative biased scores)
    { scoring: 'sigmoid', E: 16, K: 3, Fe: 24, groups: 4, groupsKept: 2, scale: 2.5, expertBias: true, biasMean: 0, int4Block: 0 },
    { scoring: 'sigmoid', E: 16, K: 3, Fe: 32, groups: 4, groupsKept: 2, scale: 2.5, expertBias: true, biasMean: -1.5, int4Block: 32 },
    { scoring: 'sigmoid', E: 5, K: 1, Fe: 16, groups: 1, groupsKept: 1, scale: 1.5, expertBias: true, biasMean: 0, int4Block: 0 },
  ] as const;
  for (const c of cases) {
    const [N, D] = [7, 64];
    const { E, K, Fe } = c;
    const r = mulberry32(9);
    const rn = (n: number, s: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * s);
    const tensors = new Map<string, Float32Array>();
    const names = { router: 'router', expertBias: c.expertBias ? 'bias' : undefined, experts: Array.from({ length: E }, (_, e) => ({ gate: `g${e}`, up: `u${e}`, down: `d${e}` })), shared: null };
    tensors.set('router', rn(E * D, 1));
    tensors.set('bias', rn(E, 0.3).map((v) => v + c.biasMean));
    for (const ex of names.experts) tensors.set(ex.gate, rn(Fe * D, 0.3)), tensors.set(ex.up, rn(Fe * D, 0.3)), tensors.set(ex.down, rn(D * Fe, 0.3));
    const shapes: Record<string, number[]> = { router: [E, D], bias: [E] };
    for (const ex of names.experts) (shapes[ex.gate] = [Fe, D]), (shapes[ex.up] = [Fe, D]), (shapes[ex.down] = [D, Fe]);
    const ck = { info: (n: string) => ({ name: n, dtype: 'F32' as const, shape: shapes[n], offset: 0, byteLength: 0 }), readF32: async (n: string) => tensors.get(n)! };
    const normalize = 'normalize' in c && c.normalize;
    const moe = { experts: E, topK: K, expertSize: Fe, sharedSize: null, layers: [true], scoring: c.scoring, normalize, groups: c.groups, groupsKept: c.groupsKept, scale: c.scale, expertBias: c.expertBias };
    const args = { hiddenSize: D, moe } as unknown as ModelArgs;
    const x = rn(N * D, 1);
    // naive routing, written out again: the experts each row runs and their weights
    const routing = (xt: Float32Array): [number, number][] => {
      const l = Array.from({ length: E }, (_, e) => xt.reduce((s, v, d) => s + v * tensors.get('router')![e * D + d], 0));
      if (c.scoring === 'softmax') {
        const m = Math.max(...l);
        const p = l.map((v) => Math.exp(v - m));
        const top = [...p.keys()].sort((i, j) => p[j] - p[i]).slice(0, K);
        const z = normalize ? top.reduce((a, e) => a + p[e], 0) : p.reduce((a, b) => a + b);
        return top.map((e) => [e, p[e] / z]);
      }
      const sc = l.map((v) => 1 / (1 + Math.exp(-v)));
      const b = sc.map((v, e) => v + (c.expertBias ? tensors.get('bias')![e] : 0));
      const per = E / c.groups;
      const worth = Array.from({ length: c.groups }, (_, gi) => b.slice(gi * per, (gi + 1) * per).sort((p, q) => q - p).slice(0, 2).reduce((s, v) => s + v, 0));
      const kept = [...worth.keys()].sort((i, j) => worth[j] - worth[i]).slice(0, c.groupsKept);
      const chosen = [...b.keys()].filter((e) => kept.includes(Math.floor(e / per))).sort((i, j) => b[j] - b[i]).slice(0, K);
      const sum = chosen.reduce((s, e) => s + sc[e], 0);
      return chosen.map((e) => [e, (K > 1 ? sc[e] / (sum + 1e-20) : sc[e]) * c.scale]);
    };
    const naive = (deq: (w: Float32Array, R: number, C: number) => Float32Array) => {
      const out = new Float64Array(N * D);
      const W = (n: string, R: number, C: number) => deq(tensors.get(n)!, R, C);
      for (let t = 0; t < N; t++) {
        const xt = x.subarray(t * D, (t + 1) * D);
        for (const [e, we] of routing(xt)) {
          const [G, U, Dn] = [W(`g${e}`, Fe, D), W(`u${e}`, Fe, D), W(`d${e}`, D, Fe)];
          const h = Array.from({ length: Fe }, (_, f) => {
            const g = xt.reduce((s, v, d) => s + v * G[f * D + d], 0);
            const u = xt.reduce((s, v, d) => s + v * U[f * D + d], 0);
            return (g / (1 + Math.exp(-g))) * u;
          });
          for (let d = 0; d < D; d++) out[t * D + d] += we * h.reduce((s, v, f) => s + v * Dn[d * Fe + f], 0);
        }
      }
      return out;
    };
    const dequant = (bits: 8 | 4, block: number) => (w: Float32Array, R: number, C: number) => {
      const { packed, scales } = quantizeRows(w, R, C, bits, block);
      const B = block || C;
      return Float32Array.from({ length: R * C }, (_, i) => {
        const code = bits === 8 ? packed[i] - 128 : ((i & 1 ? packed[i >> 1] >> 4 : packed[i >> 1]) & 15) - 8;
        return code * scales[Math.floor(i / C) * (C / B) + Math.floor((i % C) / B)];
      });
    };
    for (const [weights, deq] of [['fp32', (w: Float32Array) => w], ['int8', dequant(8, c.int4Block)], ['int4', dequant(4, c.int4Block)]] as const) {
      const g = new Graph(null);
      const h = g.input('x', DT.FLOAT, [1, N, D]);
      g.op('Identity', [await mixture(g, 'l0', h, names, args, ck, { topK: 1, weights })], {}, { output: 'y' });
      g.output('y', DT.FLOAT, [1, N, D]);
      const s = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: 1 });
      const y = (await s.run({ x: new ort.Tensor('float32', x, [1, N, D]) })).y.data as Float32Array;
      const want = naive(deq);
      const label = `${c.scoring} k ${K}, ${weights}`;
      // (int8 experts in blocks run a kernel that quantizes the activations too, like the dense
      // int8 layers: held to the dense int8 kernel's bound; the other encodings are exact)
      const bound = weights === 'int8' && c.int4Block ? 0.02 : 1e-5;
      assert.ok(relErr(y, want) < bound, `${label} vs the naive mixture of its experts: ${relErr(y, want)}`);
      if (weights !== 'fp32') assert.ok(relErr(y, naive((w) => w)) > 1e-4, `${label} is quantized`);
    }
  }
});
