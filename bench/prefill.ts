// Chunked prefill: short requests arriving beside one with a long prompt, served through the
// scheduler with whole-prompt prefill and with chunks (one process, rounds interleaved): the
// short requests' time to their first committed token, and the long one's.
//
//   npx tsx bench/prefill.ts [--model quench-tiny-ar] [--long 170] [--short 3] [--chunk 32] [--rounds 7] [--threads 2]

import { loadModel, type Model } from '../src/models/registry.ts';
import { Scheduler } from '../src/engine/scheduler.ts';
import type { StepEvent } from '../src/decode/generation.ts';
import { resolveModel } from '../src/cli/paths.ts';
import { fmt, median, parseArgs } from './common.ts';

async function round(model: Model, long: number[], shorts: number[][], chunk: number) {
  const s = new Scheduler(model, { maxBatch: 1 + shorts.length, prefillChunk: chunk, prefixCacheBytes: 0 });
  const t0 = performance.now();
  const firstAt = (mark: (ms: number) => void) => {
    let seen = false;
    return (e: StepEvent) => {
      if (!seen && e.committed.length > 0) (seen = true), mark(performance.now() - t0);
    };
  };
  let longFirst = 0;
  const shortFirst: number[] = [];
  const opts = { maxTokens: 8, temperature: 0 };
  await Promise.all([s.submit({ prompt: long, options: opts, onStep: firstAt((ms) => (longFirst = ms)) }), ...shorts.map((p) => s.submit({ prompt: p, options: opts, onStep: firstAt((ms) => shortFirst.push(ms)) }))]);
  return { short: shortFirst.reduce((a, b) => a + b, 0) / shortFirst.length, long: longFirst, all: performance.now() - t0 };
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const name = a.model ?? 'quench-tiny-ar';
  const threads = Number(a.threads ?? 2), rounds = Number(a.rounds ?? 7), chunk = Number(a.chunk ?? 32);
  const model = await loadModel(resolveModel(name), { threads });
  const words = 'the quick answer to every question below is short and exact'.split(' ');
  const longText = Array.from({ length: 400 }, (_, i) => words[i % words.length]).join(' ');
  const longIds = model.codec.encodeChat([{ role: 'system', content: longText }, { role: 'user', content: 'What is 27 + 58?' }]);
  const room = Number(a.long ?? 170);
  const long = [...longIds.slice(0, room - 12), ...longIds.slice(-12)]; // (the chat's ending kept)
  const shorts = ['What is 3 + 4?', 'Spell the word cat.', 'Sort these numbers: 9, 2, 7'].slice(0, Number(a.short ?? 3)).map((q) => model.codec.encodeChat([{ role: 'user', content: q }]));
  await round(model, long, shorts, 0); // warm-up
  const r: Record<string, Awaited<ReturnType<typeof round>>[]> = { whole: [], chunked: [] };
  for (let i = 0; i < rounds; i++) {
    r.whole.push(await round(model, long, shorts, 0));
    r.chunked.push(await round(model, long, shorts, chunk));
  }
  console.log(`${model.id}: one request with a ${long.length}-token prompt beside ${shorts.length} short ones (${shorts.map((p) => p.length).join(', ')} tokens), max_tokens 8, ${threads} threads, median of ${rounds} rounds\n`);
  console.log('| prefill | short requests: first token, ms | long request: first token, ms | all done, ms |');
  console.log('|---|---:|---:|---:|');
  for (const [k, label] of [['whole', 'whole prompt'], ['chunked', `chunks of ${chunk} rows`]] as const)
    console.log(`| ${label} | ${fmt(median(r[k].map((x) => x.short)))} | ${fmt(median(r[k].map((x) => x.long)))} | ${fmt(median(r[k].map((x) => x.all)))} |`);
  await model.close();
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
