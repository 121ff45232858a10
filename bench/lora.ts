// The LoRA merge (runtime/lowrank.ts: W + s B @ A on ORT's MatMul) against a plain JS loop
// over the same product, per tensor shape and rank, in one process: what an adapter adds to a
// model's first conversion. Shapes default to LLaDA-8B's (attention 4096 x 4096, feed-forward
// 12288 x 4096), ranks 16 and 64.
//
//   npx tsx bench/lora.ts [--shapes 4096x4096,12288x4096] [--ranks 16,64] [--runs 5]

import { LowRankUpdate } from '../src/runtime/lowrank.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';
import { fmt, parseArgs, timeMs } from './common.ts';

/** The baseline: the product added row by row in JS (as quench first did). */
function jsMerge(w: Float32Array, rows: number, cols: number, l: Float32Array, r: Float32Array, rank: number): Float32Array {
  const out = w.slice();
  for (let o = 0; o < rows; o++)
    for (let k = 0; k < rank; k++) {
      const s = l[o * rank + k];
      for (let i = 0; i < cols; i++) out[o * cols + i] += s * r[k * cols + i];
    }
  return out;
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const shapes = (a.shapes ?? '4096x4096,12288x4096').split(',').map((s) => s.split('x').map(Number) as [number, number]);
  const ranks = (a.ranks ?? '16,64').split(',').map(Number);
  const runs = Number(a.runs ?? 5);
  const rand = mulberry32(3);
  const update = new LowRankUpdate();
  console.log(`LoRA merge, median of ${runs} runs: ORT MatMul (quench) vs a JS loop\n`);
  console.log('| tensor | rank | JS ms | ORT ms | speed-up | max abs diff |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const [rows, cols] of shapes)
    for (const rank of ranks) {
      const w = Float32Array.from({ length: rows * cols }, () => rand() - 0.5);
      const l = Float32Array.from({ length: rows * rank }, () => (rand() - 0.5) * 0.1);
      const r = Float32Array.from({ length: rank * cols }, () => (rand() - 0.5) * 0.1);
      const want = jsMerge(w, rows, cols, l, r, rank);
      const got = await update.apply(w, rows, cols, l, r, rank);
      let diff = 0;
      for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(want[i] - got[i]));
      const js = await timeMs(async () => jsMerge(w, rows, cols, l, r, rank), Math.min(runs, 3), 1);
      const ort = await timeMs(() => update.apply(w, rows, cols, l, r, rank), runs, 1);
      console.log(`| ${rows} x ${cols} | ${rank} | ${fmt(js, 0)} | ${fmt(ort, 0)} | ${fmt(js / ort, 1)}x | ${diff.toExponential(1)} |`);
    }
  await update.close();
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
