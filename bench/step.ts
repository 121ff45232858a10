// Decode-step latency of B sequences stepping together (the scheduler's steady state, without
// HTTP): each sequence is prefilled alone, then all B run one batched forward per step until
// max_tokens; median and p90 step time over 3 repetitions. Prompts are synthetic token ids of
// slightly different lengths, as real requests have.
//
//   npx tsx bench/step.ts [--model quench-tiny-ar] [--batch 1,4] [--prompt 40] [--max-tokens 64] [--threads 2]

import { loadModel } from '../src/models/registry.ts';
import { Generation } from '../src/decode/generation.ts';
import { resolveModel } from '../src/cli/paths.ts';
import { fmt, median, parseArgs } from './common.ts';

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const model = await loadModel(resolveModel(a.model ?? 'quench-tiny-ar'), { threads: Number(a.threads ?? 2) });
  const plen = Number(a.prompt ?? 40);
  const maxTokens = Number(a['max-tokens'] ?? 64);
  console.log(`model ${model.id} (${model.dtype}), prompt ~${plen} tokens, ${maxTokens} new tokens, ignore_eos\n`);
  console.log('| batch | steps | median step ms | p90 step ms | per-sequence speed-up vs the first row |');
  console.log('|---:|---:|---:|---:|---:|');
  let single = 0;
  for (const B of (a.batch ?? '1,4').split(',').map(Number)) {
    const times: number[] = [];
    for (let rep = 0; rep < 4; rep++) {
      const gens = Array.from({ length: B }, (_, i) => new Generation(model, Array.from({ length: plen + i }, (_, j) => 10 + ((j * 7 + i) % 500)), { maxTokens, stopTokens: [], modelDefaults: false }));
      for (const g of gens) g.accept((await model.forward([g.plan()]))[0]);
      for (let live = gens; live.length > 0; live = live.filter((g) => !g.done)) {
        const reqs = live.map((g) => g.plan());
        const t0 = performance.now();
        const res = await model.forward(reqs);
        if (rep > 0 && live.length === B) times.push(performance.now() - t0); // rep 0 warms up
        live.forEach((g, i) => g.accept(res[i]));
      }
    }
    const med = median(times);
    times.sort((x, y) => x - y);
    if (single === 0) single = med / B; // per-sequence cost of the first batch size listed
    console.log(`| ${B} | ${times.length} | ${fmt(med, 2)} | ${fmt(times[Math.floor(times.length * 0.9)], 2)} | ${fmt(single / (med / B), 2)}x |`);
  }
  await model.close();
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
