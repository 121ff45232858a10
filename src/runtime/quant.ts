// Linear layers in each weight format. fp32 is a plain MatMul; int8 quantizes weights per
// output channel (symmetric) and runs ORT's DynamicQuantizeMatMul, which quantizes the
// activations per call and uses the CPU's int8 matrix units; int4 packs blocks of 32
// weights for MatMulNBits (int8 compute), which halves the bytes read again for
// memory-bound steps. Weights arrive as fp32 [in, out] (x @ W).

import { readFileSync } from 'node:fs';
import { DT, Graph, I, f32Bytes } from './graph.ts';

export type WeightFormat = 'fp32' | 'int8' | 'int4';
export const INT4_BLOCK = 32;

/**
 * How int8 weights are handed to DynamicQuantizeMatMul (the same codes either way):
 *   s8  signed codes: ORT's u8 x s8 kernel, exact where the CPU has int8 dot products (AVX-512
 *       VNNI, AVX-VNNI, AMX, ARM);
 *   u8  the codes + 128 with zero point 128: ORT's u8 x u8 kernel. On x86 CPUs without VNNI the
 *       u8 x s8 kernel adds pairs of products in saturating 16-bit lanes (vpmaddubsw), which clips
 *       a large weight against a large activation (0.032 relative error on the tests' matrix,
 *       against 0.006); u8 x u8 widens to 16 bits first, exact, at the same speed there.
 */
export type Int8Encoding = 's8' | 'u8';

/** The exact encoding for a CPU: its architecture and its /proc/cpuinfo flags (null: unknown). */
export function int8EncodingFor(arch: string, cpuFlags: string | null): Int8Encoding {
  if (arch !== 'x64' && arch !== 'ia32') return 's8';
  // (flags unknown, e.g. not Linux: the encoding that is exact on every x86 CPU)
  return cpuFlags !== null && /(^|\s)(avx512_vnni|avx_vnni|amx_int8)(\s|$)/.test(cpuFlags) ? 's8' : 'u8';
}

let detected: Int8Encoding | undefined;

/** This machine's exact int8 encoding. */
export function int8Encoding(): Int8Encoding {
  if (detected) return detected;
  let flags: string | null = null;
  try {
    flags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? null;
  } catch {
    // no /proc/cpuinfo
  }
  return (detected = int8EncodingFor(process.arch, flags));
}

/** Symmetric per-output-channel int8: q[k, n] = round(w[k, n] / s[n]), s[n] = max|w[:, n]| / 127. */
export function quantizeInt8(w: Float32Array, K: number, N: number): { q: Int8Array; scale: Float32Array } {
  const scale = new Float32Array(N);
  for (let k = 0; k < K; k++) {
    const row = k * N;
    for (let n = 0; n < N; n++) {
      const a = Math.abs(w[row + n]);
      if (a > scale[n]) scale[n] = a;
    }
  }
  for (let n = 0; n < N; n++) scale[n] = scale[n] > 0 ? scale[n] / 127 : 1;
  const inv = scale.map((s) => 1 / s);
  const q = new Int8Array(K * N);
  for (let k = 0; k < K; k++) {
    const row = k * N;
    for (let n = 0; n < N; n++) q[row + n] = Math.max(-127, Math.min(127, Math.round(w[row + n] * inv[n])));
  }
  return { q, scale };
}

/**
 * One block of 4-bit codes (value = (code - 8) * d). Values already on a 4-bit grid, as a Q4_0
 * file's blocks decode, keep it exactly: the step is the largest magnitude over the code it must
 * have had (-8 first, then -7, 7, -6, ...), the first that puts every value on an integer code in
 * [-8, 7]; an importance-matrix Q4_0 file's blocks often lack a -8. Other values take ggml's Q4_0
 * rule: the largest magnitude maps to -8 exactly (d = that value / -8, negative where it is
 * positive), every other to min(15, trunc(v / d + 8.5)), so all 16 levels are used (11-14 % less
 * error than a symmetric max/7 step on Gaussian weights). Reads x[0..n), writes codes[0..n); returns d.
 */
function q4Block(x: Float32Array, n: number, codes: Uint8Array): number {
  return symmetricBlock(x, n, codes) ?? q40Block(x, n, codes);
}

/** q4Block's first reading: the block's step when it lies on a symmetric 4-bit grid (codes written), else null. */
function symmetricBlock(x: Float32Array, n: number, codes: Uint8Array): number | null {
  const max = largest(x, n);
  if (max === 0) {
    codes.fill(8, 0, n);
    return 0;
  }
  for (const c of Q4_CODES) {
    const d = max / c;
    let j = 0;
    for (; j < n; j++) {
      const q = x[j] / d;
      const r = Math.round(q);
      if (Math.abs(q - r) > 1e-5 || r < -8 || r > 7) break;
    }
    if (j < n) continue;
    for (j = 0; j < n; j++) codes[j] = Math.round(x[j] / d) + 8;
    return d;
  }
  return null;
}

/** q4Block's second: ggml's Q4_0 rule (codes written), for a block on no grid. */
function q40Block(x: Float32Array, n: number, codes: Uint8Array): number {
  const d = largest(x, n) / -8;
  const id = 1 / d;
  for (let j = 0; j < n; j++) codes[j] = Math.min(15, Math.trunc(x[j] * id + 8.5));
  return d;
}

/** The value of largest magnitude among x[0..n). */
function largest(x: Float32Array, n: number): number {
  let max = 0;
  for (let j = 0; j < n; j++) if (Math.abs(x[j]) > Math.abs(max)) max = x[j];
  return max;
}

/** the code a block's value of largest magnitude can have, most likely first */
const Q4_CODES = [-8, -7, 7, -6, 6, -5, 5, -4, 4, -3, 3, -2, 2, -1, 1];

/**
 * A block whose values lie on an affine 4-bit grid, min + s * j with j in 0..15, as the blocks of
 * an asymmetric 4-bit format decode (Q4_K's sub-blocks: d * scale * q - dmin * min; Q4_1's: d * q
 * + m): the coarsest such grid (the fewest steps over the block's span), codes j (written to
 * `codes`), and the block as s * (code - 8) + off. Null when no grid of at most 15 steps holds
 * every value (within float rounding).
 */
function affineBlock(x: Float32Array, n: number, codes: Uint8Array): { s: number; off: number } | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (let j = 0; j < n; j++) (lo = Math.min(lo, x[j])), (hi = Math.max(hi, x[j]));
  const span = hi - lo;
  if (!(span > 0)) return null;
  for (let L = 1; L <= 15; L++) {
    const s = span / L;
    let j = 0;
    for (; j < n; j++) {
      const q = (x[j] - lo) / s;
      if (Math.abs(q - Math.round(q)) > 1e-4) break;
    }
    if (j < n) continue;
    // (codes centred on the zero point 8: the kernel's weights s * (code - 8) stay small, and
    // with them its int8 activations' error)
    const c0 = (15 - L) >> 1;
    for (j = 0; j < n; j++) codes[j] = Math.round((x[j] - lo) / s) + c0;
    return { s, off: lo + (8 - c0) * s };
  }
  return null;
}

/**
 * A quarter of a tensor's blocks on affine grids (and off the symmetric ones): it came from an
 * asymmetric 4-bit format, wholly or in part (a fused q/k/v whose v a Q4_K_M file keeps in Q6_K);
 * the blocks off every grid take the Q4_0 rule with offset 0, at no extra cost.
 */
const AFFINE_SHARE = 0.25;

/**
 * MatMulNBits layout: B [N, K/32, 16] uint8, two 4-bit codes per byte (low nibble first),
 * w = (code - 8) * s per block of 32 along K (ggml's Q4_0 rule, q4Block), scales [N * K/32]
 * (column-major blocks); K is padded with zeros to whole blocks. A tensor whose blocks are
 * mostly on affine 4-bit grids (an asymmetric 4-bit format's: Q4_K, Q4_1; K a multiple of 32)
 * keeps them: w = (code - 8) * s + off, `offsets` [N * K/32] (0 for the blocks on symmetric
 * grids and those quantized by the Q4_0 rule), which addLinear adds back exactly; otherwise
 * `offsets` is null.
 */
export function quantizeInt4(w: Float32Array, K: number, N: number): { packed: Uint8Array; scales: Float32Array; offsets: Float32Array | null; kPadded: number } {
  const blocks = Math.ceil(K / INT4_BLOCK);
  const blob = INT4_BLOCK / 2;
  const packed = new Uint8Array(N * blocks * blob);
  const scales = new Float32Array(N * blocks);
  // the affine reading of each block that has one beside the symmetric one (NaN scale: none),
  // allocated at the first such block
  let affine: { packed: Uint8Array; scales: Float32Array; offsets: Float32Array } | null = null;
  let affineBlocks = 0;
  const codes = new Uint8Array(INT4_BLOCK);
  const x = new Float32Array(INT4_BLOCK); // (one column's block, gathered; zeros past K)
  const pack = (into: Uint8Array, base: number) => {
    for (let j = 0; j < blob; j++) into[base + j] = codes[2 * j] | (codes[2 * j + 1] << 4);
  };
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      for (let j = 0, k = b * INT4_BLOCK; j < INT4_BLOCK; j++, k++) x[j] = k < K ? w[k * N + n] : 0;
      const at = n * blocks + b;
      // (a block on a symmetric grid, a Q4_0 one, needs no offset; K must be whole blocks)
      const d = symmetricBlock(x, INT4_BLOCK, codes);
      scales[at] = d ?? q40Block(x, INT4_BLOCK, codes);
      pack(packed, at * blob);
      if (d !== null || K % INT4_BLOCK !== 0) continue;
      const a = affineBlock(x, INT4_BLOCK, codes);
      if (!a) continue;
      affine ??= { packed: new Uint8Array(N * blocks * blob), scales: new Float32Array(N * blocks).fill(NaN), offsets: new Float32Array(N * blocks) };
      affine.scales[at] = a.s;
      affine.offsets[at] = a.off;
      pack(affine.packed, at * blob);
      affineBlocks++;
    }
  }
  if (!affine || affineBlocks < AFFINE_SHARE * N * blocks) return { packed, scales, offsets: null, kPadded: blocks * INT4_BLOCK };
  for (let at = 0; at < N * blocks; at++) {
    if (Number.isNaN(affine.scales[at])) continue;
    scales[at] = affine.scales[at];
    packed.set(affine.packed.subarray(at * blob, (at + 1) * blob), at * blob);
  }
  return { packed, scales, offsets: affine.offsets, kPadded: blocks * INT4_BLOCK };
}


/** x [.., K] @ W [K, N] in the chosen weight format; returns the output name. */
export function addLinear(
  g: Graph,
  name: string,
  x: string,
  w: Float32Array,
  K: number,
  N: number,
  format: WeightFormat,
  opts: { output?: string; int8?: Int8Encoding } = {},
): string {
  const { output } = opts;
  g.paramCount += format === 'fp32' ? 0 : K * N;
  if (format === 'fp32') return g.op('MatMul', [x, g.weight(name, DT.FLOAT, [K, N], f32Bytes(w))], {}, { output });
  if (format === 'int8') {
    const { q, scale } = quantizeInt8(w, K, N);
    const ws = g.weight(`${name}.scale`, DT.FLOAT, [N], f32Bytes(scale), false);
    if ((opts.int8 ?? int8Encoding()) === 's8') {
      const wq = g.weight(`${name}.q8`, DT.INT8, [K, N], new Uint8Array(q.buffer));
      return g.op('DynamicQuantizeMatMul', [x, wq, ws], {}, { domain: 'com.microsoft', output });
    }
    // (+128 mod 256 is the sign bit flipped: in place, since a head of 150M codes must not
    // pass through a JS array)
    const u = new Uint8Array(q.buffer, q.byteOffset, q.length);
    for (let i = 0; i < u.length; i++) u[i] ^= 0x80;
    const wq = g.weight(`${name}.u8`, DT.UINT8, [K, N], u);
    const zp = g.weight(`${name}.zero`, DT.UINT8, [], new Uint8Array([128]), false); // one zero point for the tensor
    return g.op('DynamicQuantizeMatMul', [x, wq, ws, zp], {}, { domain: 'com.microsoft', output });
  }
  const { packed, scales, offsets } = quantizeInt4(w, K, N);
  const blocks = Math.ceil(K / INT4_BLOCK);
  const wq = g.weight(`${name}.q4`, DT.UINT8, [N, blocks, INT4_BLOCK / 2], packed);
  const ws = g.weight(`${name}.scales`, DT.FLOAT, [N * blocks], f32Bytes(scales), false);
  const attrs = { K: I(K), N: I(N), bits: I(4), block_size: I(INT4_BLOCK), accuracy_level: I(4) };
  if (!offsets) return g.op('MatMulNBits', [x, wq, ws], attrs, { domain: 'com.microsoft', output });
  // affine blocks: x @ W = MatMulNBits(x) + sum over blocks b of off[n, b] * (x's sum over block b),
  // the second a [.., K/32] @ [K/32, N] MatMul in fp32 (a quarter of the int4 weights' bytes);
  // MatMulNBits' own zero points are 4-bit integers, and its float ones dequantize the whole
  // matrix at every call (~80x slower here)
  const y = g.op('MatMulNBits', [x, wq, ws], attrs, { domain: 'com.microsoft' });
  const C = new Float32Array(blocks * N);
  for (let n = 0; n < N; n++) for (let b = 0; b < blocks; b++) C[b * N + n] = offsets[n * blocks + b];
  const sums = g.op('ReduceSum', [g.op('Reshape', [x, g.i64([-1, blocks, INT4_BLOCK])]), g.i64([-1])], { keepdims: I(0) });
  const correction = g.op('MatMul', [sums, g.weight(`${name}.offsets`, DT.FLOAT, [blocks, N], f32Bytes(C), false)]);
  return g.op('Add', [y, g.op('Reshape', [correction, g.op('Shape', [y])])], {}, { output });
}

/**
 * QMoE's expert layout: rows [R, C] (the checkpoint's [out, in]) quantized per row, or per block
 * of `block` columns (0: the whole row): 8 bits symmetric (codes + 128, s = max|w| / 127), 4 bits
 * by ggml's Q4_0 rule (q4Block: codes with zero point 8, two per byte, low nibble first); scales
 * [R] or [R, C / block].
 */
export function quantizeRows(w: Float32Array, R: number, C: number, bits: 8 | 4, block = 0): { packed: Uint8Array; scales: Float32Array } {
  const B = block || C;
  if (C % B !== 0 || (bits === 4 && C % 2 !== 0)) throw new Error(`quantizeRows: ${C} columns do not split into blocks of ${B}`);
  const nb = C / B;
  const scales = new Float32Array(R * nb);
  const packed = new Uint8Array(bits === 8 ? R * C : (R * C) / 2);
  const codes = new Uint8Array(B);
  for (let r = 0; r < R; r++)
    for (let b = 0; b < nb; b++) {
      const at = r * C + b * B;
      if (bits === 4) {
        scales[r * nb + b] = q4Block(w.subarray(at, at + B), B, codes);
        for (let j = 0; j < B; j++) packed[(at + j) >> 1] |= (at + j) & 1 ? codes[j] << 4 : codes[j];
        continue;
      }
      let amax = 0;
      for (let j = 0; j < B; j++) amax = Math.max(amax, Math.abs(w[at + j]));
      const s = amax > 0 ? amax / 127 : 1;
      scales[r * nb + b] = s;
      for (let j = 0; j < B; j++) packed[at + j] = Math.max(-127, Math.min(127, Math.round(w[at + j] / s))) + 128;
    }
  return { packed, scales };
}
