// The DiT graph's cost (MDLM / BD3-LM: LayerNorm with a bias, the adaLN fold, GELU feed-forward
// with biases, a head bias) against a LLaDA-layout model of the same width, depth, heads and
// vocabulary whose SwiGLU is as wide as makes the same FLOPs (3 D F = 2 D 4D: F = 8D/3): ms per
// forward (median of several runs, each model timed twice, interleaved) at several row counts,
// per weight format, and the ratio. A DiT graph as fast as the Llama block would be 1.0x.
//
//   npx tsx bench/dit.ts [--hidden 768 --layers 12 --heads 12 --vocab 50258]
//                        [--dtype fp32,int8] [--rows 1,16,64,256] [--threads 2]

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { writeFixture } from '../src/formats/fixtures.ts';
import type { WeightFormat } from '../src/runtime/quant.ts';
import { forwardVersus, parseArgs } from './common.ts';

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const D = Number(a.hidden ?? 768), layers = Number(a.layers ?? 12), heads = Number(a.heads ?? 12), V = Number(a.vocab ?? 50258);
  const threads = Number(a.threads ?? 2);
  const rows = (a.rows ?? '1,16,64,256').split(',').map(Number);
  const dtypes = (a.dtype ?? 'fp32,int8').split(',') as WeightFormat[];
  const Fi = Math.round((8 * D) / 3);
  const ditDir = join(tmpdir(), `quench-bench-mdlm-${D}x${layers}x${V}`);
  const twinDir = join(tmpdir(), `quench-bench-mdlm-twin-${D}x${layers}x${Fi}x${V}`);
  const common = { hidden: D, layers, heads, std: 0.02, maxPositions: 1024 };
  // (the DiT fixture's tokenizer is GPT-2-like; its vocabulary is padded to V as a real one is)
  if (!existsSync(join(ditDir, 'config.json'))) await writeFixture(ditDir, { arch: 'mdlm', ...common, vocab: V, condDim: 128, dtype: 'F32' });
  if (!existsSync(join(twinDir, 'config.json'))) await writeFixture(twinDir, { arch: 'llada', ...common, vocab: V, intermediate: Fi, dtype: 'BF16' });
  console.log(`MDLM shape: d ${D}, ${layers} layers, ${heads} heads, GELU feed-forward 4d = ${4 * D}; LLaDA twin: SwiGLU ${Fi} (the same FLOPs); vocab ${V}; ${threads} threads\n`);
  console.log('| dtype | rows | DiT ms/forward | LLaDA twin ms/forward | DiT / twin |');
  console.log('|---|---:|---:|---:|---:|');
  await forwardVersus(ditDir, twinDir, dtypes, rows, V, threads, a.cache, (L) => (L <= 16 ? 20 : 8));
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
