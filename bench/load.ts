// Load generator: a real server on an ephemeral loopback port, N concurrent clients each
// sending chat requests back to back (held-out task prompts), aggregate completion
// tokens/s for each N, as a ratio to one client measured in the same process.
//
//   npx tsx bench/load.ts [--model quench-tiny] [--clients 1,4,16] [--requests 8] [--max-batch 16]
//                         [--max-tokens 64] [--ignore-eos] [--policy P] [--effort E] [--rounds 3]
//
// --ignore-eos makes every answer max_tokens long (as vLLM's serving benchmark does), so the
// measure is decoding throughput rather than the per-request overhead of 5-token answers.

import OpenAI from 'openai';
import { loadModel } from '../src/models/registry.ts';
import { attachScheduler, buildServer, type ServingState } from '../src/server/app.ts';
import { resolveModel } from '../src/cli/paths.ts';
import { loadTasks } from './eval.ts';
import { fmt, median, parseArgs } from './common.ts';

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const clients = (a.clients ?? '1,4,16').split(',').map(Number);
  const perClient = Number(a.requests ?? 8);
  const maxBatch = Number(a['max-batch'] ?? 16);
  const threads = Number(a.threads ?? 2);
  const rounds = Number(a.rounds ?? 3);
  const maxTokens = Number(a['max-tokens'] ?? 64);
  const ignoreEos = a['ignore-eos'] === 'true';
  const model = await loadModel(resolveModel(a.model ?? 'quench-tiny'), { threads, dtype: (a.dtype as 'fp32') ?? 'auto' });
  const state: ServingState = { model: null, scheduler: null };
  const opts = { maxBatch, maxQueue: 1024, host: '127.0.0.1' };
  const { app, metrics } = await buildServer(state, opts);
  attachScheduler(state, model, opts, metrics);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
  const tasks = loadTasks(50);
  const extra = { ...(a.policy ? { policy: a.policy } : {}), ...(a.effort ? { reasoning_effort: a.effort } : {}), ...(ignoreEos ? { ignore_eos: true } : {}) };
  console.log(`model ${model.id} (${model.dtype}), ${a.effort ? `reasoning_effort ${a.effort}, ` : ''}max-batch ${maxBatch}, ${perClient} requests per client, max_tokens ${maxTokens}${ignoreEos ? ' (ignore_eos)' : ''}, temperature 0, median of ${rounds} rounds, threads ${threads}`);
  console.log('\n| clients | requests | completion tokens | seconds | aggregate tokens/s | vs 1 client | mean latency ms |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|');
  let single = 0;
  for (const n of clients) {
    const rates: number[] = [];
    let last = { tokens: 0, sec: 0, lat: 0 };
    for (let round = 0; round < rounds + 1; round++) {
      let tokens = 0;
      const lats: number[] = [];
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: n }, async (_, c) => {
          for (let i = 0; i < perClient; i++) {
            const t = tasks[(c * perClient + i + round * 97) % tasks.length];
            const s = performance.now();
            const r = await client.chat.completions.create({ model: model.id, messages: [{ role: 'user', content: t.prompt }], max_tokens: maxTokens, temperature: 0, ...extra } as never);
            lats.push(performance.now() - s);
            tokens += (r as { usage?: { completion_tokens: number } }).usage?.completion_tokens ?? 0;
          }
        }),
      );
      const sec = (performance.now() - t0) / 1000;
      if (round === 0) continue; // warm-up
      rates.push(tokens / sec);
      last = { tokens, sec, lat: lats.reduce((x, y) => x + y, 0) / lats.length };
    }
    const rate = median(rates);
    if (n === clients[0]) single = rate;
    console.log(`| ${n} | ${n * perClient} | ${last.tokens} | ${fmt(last.sec, 2)} | ${fmt(rate)} | ${fmt(rate / single, 2)}x | ${fmt(last.lat, 0)} |`);
  }
  await app.close();
  await model.close();
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
