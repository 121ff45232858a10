// Mixture-of-experts forward cost: a generated LLaDA-MoE-shaped model (every layer a mixture of
// E experts, k per token) against a dense LLaDA-layout model of the same width, depth and vocab
// whose feed-forward is as wide as the k active experts together (the same FLOPs per token): ms
// per forward (median of several runs) at several row counts, per weight format, and the ratio.
// A mixture kernel that ran only the chosen experts at the dense kernels' rate would be 1.0x;
// it reads all experts' weights once rows choose most of them.
//
// --kernels: the mixture kernel alone (one layer's experts, no model) in each expert encoding:
// fp32 MoE, QMoE 8-bit per row, 4-bit per row, 4-bit per block of 32 / 64 / 128, 8-bit per block of 32 / 128;
// ms per call and each encoding's relative (RMS) error against the fp32 kernel on the same rows.
//
//   npx tsx bench/moe.ts [--hidden 512 --layers 4 --experts 64 --k 8 --expert-ffn 256 --vocab 32000]
//                        [--dtype fp32,int8,int4] [--rows 1,8,32,128] [--threads 2] [--kernels]

import { existsSync } from 'node:fs';
import ort from 'onnxruntime-node';
import { DT, F, Graph, I, S, f32Bytes } from '../src/runtime/graph.ts';
import { quantizeRows } from '../src/runtime/quant.ts';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { mulberry32, writeFixture } from '../src/formats/fixtures.ts';
import type { WeightFormat } from '../src/runtime/quant.ts';
import { fmt, forwardVersus, parseArgs, timeMs } from './common.ts';

/** One mixture kernel over [N, D] rows: fp32 MoE, or QMoE with `bits` codes per row (block 0) or per block. */
async function kernel(D: number, Fe: number, E: number, K: number, threads: number, enc: { bits: 32 | 8 | 4; block: number }) {
  // (random weights and rows, the same for every encoding: structured ones such as sines can
  // cancel in the products and make any quantization look ruinous. Gaussian with one weight in a
  // hundred 8x larger, as trained weights have outliers: what blocks of codes are for)
  const r = mulberry32(5);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()) * (r() < 0.01 ? 8 : 1) * 0.03;
  const fc1 = Float32Array.from({ length: E * 2 * Fe * D }, gauss);
  const fc2 = Float32Array.from({ length: E * D * Fe }, gauss);
  const attrs = { k: I(K), activation_type: S('swiglu'), swiglu_fusion: I(1), activation_alpha: F(1), activation_beta: F(0), normalize_routing_weights: I(1) };
  const g = new Graph(null);
  const x = g.input('x', DT.FLOAT, ['N', D]);
  const ri = g.input('r', DT.FLOAT, ['N', E]);
  if (enc.bits === 32) g.op('MoE', [x, ri, g.weight('w1', DT.FLOAT, [E, 2 * Fe, D], f32Bytes(fc1)), '', g.weight('w2', DT.FLOAT, [E, D, Fe], f32Bytes(fc2))], attrs, { domain: 'com.microsoft', output: 'y' });
  else {
    const { bits, block } = enc;
    const [q1, q2] = [quantizeRows(fc1, E * 2 * Fe, D, bits, block), quantizeRows(fc2, E * D, Fe, bits, block)];
    const per = bits === 8 ? 1 : 2;
    const ins = [x, ri, g.weight('w1', DT.UINT8, [E, 2 * Fe, D / per], q1.packed), g.weight('s1', DT.FLOAT, block ? [E, 2 * Fe, D / block] : [E, 2 * Fe], f32Bytes(q1.scales)), ''];
    ins.push(g.weight('w2', DT.UINT8, [E, D, Fe / per], q2.packed), g.weight('s2', DT.FLOAT, block ? [E, D, Fe / block] : [E, D], f32Bytes(q2.scales)));
    g.op('QMoE', ins, { ...attrs, expert_weight_bits: I(bits), ...(block ? { block_size: I(block) } : {}) }, { domain: 'com.microsoft', output: 'y' });
  }
  g.output('y', DT.FLOAT, ['N', D]);
  const s = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: threads });
  const feeds = (N: number) => {
    const rn = mulberry32(6 + N);
    return { x: new ort.Tensor('float32', Float32Array.from({ length: N * D }, () => rn() * 2 - 1), [N, D]), r: new ort.Tensor('float32', Float32Array.from({ length: N * E }, () => (rn() * 2 - 1) * 3), [N, E]) };
  };
  return {
    time: (N: number) => {
      const f = feeds(N); // (made once: not part of what is timed)
      return timeMs(() => s.run(f), N <= 8 ? 20 : 10);
    },
    output: async (N: number) => (await s.run(feeds(N))).y.data as Float32Array,
  };
}

/** RMS of y - ref over RMS of ref */
function relErr(y: Float32Array, ref: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < y.length; i++) (num += (y[i] - ref[i]) ** 2), (den += ref[i] ** 2);
  return Math.sqrt(num / den);
}

async function kernels(D: number, Fe: number, E: number, K: number, threads: number, rows: number[]): Promise<void> {
  console.log(`mixture kernel alone: ${E} experts of ${D} x ${Fe}, ${K} per row, ${threads} threads; ms per call (median)\n`);
  console.log(`| experts | ${rows.map((n) => `${n} rows`).join(' | ')} | error vs fp32 |`);
  console.log(`|---|${rows.map(() => '---:').join('|')}|---:|`);
  let ref: Float32Array | null = null;
  for (const [label, enc] of [['fp32 (MoE)', { bits: 32, block: 0 }], ['8-bit per row (QMoE)', { bits: 8, block: 0 }], ['4-bit per row (QMoE)', { bits: 4, block: 0 }], ['4-bit per block of 32 (QMoE)', { bits: 4, block: 32 }], ['4-bit per block of 64 (QMoE)', { bits: 4, block: 64 }], ['4-bit per block of 128 (QMoE)', { bits: 4, block: 128 }], ['8-bit per block of 32 (QMoE)', { bits: 8, block: 32 }], ['8-bit per block of 128 (QMoE)', { bits: 8, block: 128 }]] as const) {
    const k = await kernel(D, Fe, E, K, threads, enc);
    const ms: string[] = [];
    for (const n of rows) ms.push(fmt(await k.time(n), 2));
    const y = await k.output(32);
    ref ??= y;
    console.log(`| ${label} | ${ms.join(' | ')} | ${relErr(y, ref).toExponential(1)} |`);
  }
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  if (a.kernels !== undefined) {
    const D = Number(a.hidden ?? 512), Fe = Number(a['expert-ffn'] ?? 256);
    return kernels(D, Fe, Number(a.experts ?? 64), Number(a.k ?? 8), Number(a.threads ?? 2), (a.rows ?? '1,8,32,128').split(',').map(Number));
  }
  const D = Number(a.hidden ?? 512), layers = Number(a.layers ?? 4), E = Number(a.experts ?? 64), K = Number(a.k ?? 8);
  const Fe = Number(a['expert-ffn'] ?? 256), V = Number(a.vocab ?? 32000), threads = Number(a.threads ?? 2);
  const heads = Number(a.heads ?? D / 64);
  const rows = (a.rows ?? '1,8,32,128').split(',').map(Number);
  const dtypes = (a.dtype ?? 'fp32,int8,int4').split(',') as WeightFormat[];
  const moeDir = join(tmpdir(), `quench-bench-moe-${D}x${layers}x${E}x${K}x${Fe}x${V}`);
  const denseDir = join(tmpdir(), `quench-bench-moe-dense-${D}x${layers}x${K * Fe}x${V}`);
  const common = { hidden: D, layers, heads, vocab: V, dtype: 'BF16' as const, std: 0.02, maxPositions: 4096 };
  if (!existsSync(join(moeDir, 'config.json'))) await writeFixture(moeDir, { arch: 'llada_moe', ...common, experts: E, expertsPerToken: K, expertSize: Fe });
  if (!existsSync(join(denseDir, 'config.json'))) await writeFixture(denseDir, { arch: 'llada', ...common, intermediate: K * Fe });
  const expertParams = layers * E * 3 * D * Fe;
  console.log(`LLaDA-MoE shape: d ${D}, ${layers} layers, ${E} experts of ${Fe}, ${K} per token (${(expertParams / 1e6).toFixed(0)}M expert parameters, ${((layers * K * 3 * D * Fe) / 1e6).toFixed(0)}M active); dense twin: ffn ${K * Fe}; vocab ${V}; ${threads} threads\n`);
  console.log('| dtype | rows | MoE ms/forward | dense ms/forward | MoE / dense |');
  console.log('|---|---:|---:|---:|---:|');
  await forwardVersus(moeDir, denseDir, dtypes, rows, V, threads, a.cache, (L) => (L <= 8 ? 20 : 8));
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
