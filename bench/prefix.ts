// Prefix cache: requests sharing a system prompt, served through the scheduler with the
// prefix store on and off (one process, rounds interleaved): time to serve all of them, the
// mean time to the first token's forward, and the prompt rows each configuration ran.
//
//   npx tsx bench/prefix.ts [--model quench-tiny-ar,quench-tiny-bd] [--requests 8] [--batch 4]
//                           [--system-words 60] [--rounds 5] [--threads 2]

import { loadModel, type Model } from '../src/models/registry.ts';
import { Scheduler } from '../src/engine/scheduler.ts';
import { resolveModel } from '../src/cli/paths.ts';
import { fmt, median, parseArgs } from './common.ts';

const QUESTIONS = ['What is 27 + 58?', 'Sort these numbers: 9, 2, 7', 'Spell the word harbor.', 'What is 12 x 4?', 'Reverse the word stone.', 'How many letters are in apple?', 'What is 90 - 38?', 'Sort these words: pear, fig, apple'];

async function serveAll(model: Model, prompts: number[][], batch: number, prefixBytes: number) {
  const s = new Scheduler(model, { maxBatch: batch, maxQueue: prompts.length, prefixCacheBytes: prefixBytes });
  let rows = 0;
  const orig = model.forward;
  model.forward = async (reqs) => {
    for (const r of reqs) rows += r.ids.length;
    return orig(reqs);
  };
  const t0 = performance.now();
  const firsts: number[] = [];
  try {
    await Promise.all(
      prompts.map((p) => {
        let seen = false;
        return s.submit({ prompt: p, options: { maxTokens: 16, temperature: 0, seed: 0 }, onStep: () => !seen && ((seen = true), firsts.push(performance.now() - t0)) });
      }),
    );
  } finally {
    model.forward = orig;
  }
  return { ms: performance.now() - t0, first: firsts.reduce((a, b) => a + b, 0) / firsts.length, rows, cached: s.prefixes?.stats.reusedTokens ?? 0 };
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const n = Number(a.requests ?? 8), batch = Number(a.batch ?? 4), rounds = Number(a.rounds ?? 5), threads = Number(a.threads ?? 2);
  const system = Array.from({ length: Number(a['system-words'] ?? 60) }, (_, i) => ['You', 'answer', 'the', 'question', 'below', 'briefly', 'and', 'exactly'][i % 8]).join(' ') + '.';
  console.log(`${n} requests sharing a system prompt of ${system.split(' ').length} words, batch ${batch}, max_tokens 16, ${threads} threads, median of ${rounds} rounds\n`);
  console.log('| model | prompt tokens (shared) | prefix cache | all served, ms | mean first step, ms | prompt+window rows run | cached tokens | speed-up |');
  console.log('|---|---:|---|---:|---:|---:|---:|---:|');
  for (const name of (a.model ?? 'quench-tiny-ar,quench-tiny-bd').split(',')) {
    const model = await loadModel(resolveModel(name), { threads });
    const prompts = Array.from({ length: n }, (_, i) => model.codec.encodeChat([{ role: 'system', content: system }, { role: 'user', content: QUESTIONS[i % QUESTIONS.length] }]));
    const shared = prompts.slice(1).reduce((m, p) => Math.min(m, p.findIndex((t, i) => t !== prompts[0][i])), prompts[0].length);
    await serveAll(model, prompts, batch, 0); // warm-up
    const runs: Record<'off' | 'on', Awaited<ReturnType<typeof serveAll>>[]> = { off: [], on: [] };
    for (let r = 0; r < rounds; r++) {
      runs.off.push(await serveAll(model, prompts, batch, 0));
      runs.on.push(await serveAll(model, prompts, batch, 256 * 2 ** 20));
    }
    const off = median(runs.off.map((x) => x.ms));
    for (const k of ['off', 'on'] as const) {
      const ms = median(runs[k].map((x) => x.ms));
      const first = median(runs[k].map((x) => x.first));
      const last = runs[k][runs[k].length - 1];
      console.log(`| ${model.id} | ${Math.round(prompts.reduce((s, p) => s + p.length, 0) / n)} (${shared}) | ${k} | ${fmt(ms)} | ${fmt(first)} | ${last.rows} | ${last.cached} | ${fmt(off / ms, 2)}x |`);
    }
    await model.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
