// Load generator: `quench serve` started as its own process on a free loopback port, N
// concurrent clients (this process) each sending chat requests back to back (held-out task
// prompts); aggregate completion tokens/s for each N, as a ratio to one client on the same server.
//
//   npx tsx bench/load.ts [--model quench-tiny] [--clients 1,4,16] [--requests 8] [--max-batch 16]
//                         [--max-tokens 64] [--ignore-eos] [--policy P] [--effort E] [--rounds 3]
//                         [--graph-thread auto|on|off]
//
// --ignore-eos makes every answer max_tokens long (as vLLM's serving benchmark does), so the
// measure is decoding throughput rather than the per-request overhead of 5-token answers.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import OpenAI from 'openai';
import { PACKAGE_ROOT } from '../src/cli/paths.ts';
import { loadTasks } from './eval.ts';
import { fmt, median, parseArgs } from './common.ts';

/** The server's step counters from /metrics (summed histograms), to diff around a run. */
async function engineCounters(base: string): Promise<{ steps: number; stepSeconds: number; sequences: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const num = (name: string) => {
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    if (!m) throw new Error(`/metrics has no ${name} line`);
    return Number(m[1]);
  };
  return { steps: num('quench_step_seconds_count'), stepSeconds: num('quench_step_seconds_sum'), sequences: num('quench_batch_size_sum') };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const clients = (a.clients ?? '1,4,16').split(',').map(Number);
  const perClient = Number(a.requests ?? 8);
  const maxBatch = Number(a['max-batch'] ?? 16);
  const threads = Number(a.threads ?? 2);
  const rounds = Number(a.rounds ?? 3);
  const maxTokens = Number(a['max-tokens'] ?? 64);
  const ignoreEos = a['ignore-eos'] === 'true';
  const dtype = a.dtype ?? 'auto';
  // The server is its own process, as in production: the clients' HTTP and JSON work must not
  // share the event loop that runs the engine's steps.
  const port = await freePort();
  const server = spawn(process.execPath, [join(PACKAGE_ROOT, 'bin', 'quench.js'), 'serve', '--model', a.model ?? 'quench-tiny', '--port', String(port),
    '--max-batch', String(maxBatch), '--max-queue', '1024', '--threads', String(threads), '--dtype', dtype,
    '--graph-thread', a['graph-thread'] ?? 'auto'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  server.stderr.on('data', (d) => (log += d));
  try {
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      if (server.exitCode !== null) throw new Error(`quench serve exited: ${log}`);
      const ok = await fetch(`${base}/health`).then((r) => r.ok, () => false);
      if (ok) break;
      if (i > 1200) throw new Error(`quench serve did not become ready: ${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
    const info = await client.models.list();
    // the served format, from serve's "ready: <id> (<arch>, <dtype>, ...)" line
    const model = { id: info.data[0].id, dtype: (/ready: \S+ \([^,]+, (\w+)/.exec(log) ?? [])[1] ?? dtype };
    const tasks = loadTasks(50);
    const extra = { ...(a.policy ? { policy: a.policy } : {}), ...(a.effort ? { reasoning_effort: a.effort } : {}), ...(ignoreEos ? { ignore_eos: true } : {}) };
    console.log(`model ${model.id} (${model.dtype}), ${a.effort ? `reasoning_effort ${a.effort}, ` : ''}max-batch ${maxBatch}, ${perClient} requests per client, max_tokens ${maxTokens}${ignoreEos ? ' (ignore_eos)' : ''}, temperature 0, median of ${rounds} interleaved rounds, threads ${threads}`);
    console.log('\n| clients | requests | completion tokens | seconds | aggregate tokens/s | vs 1 client | mean latency ms | forwards | sequences/forward | forward ms | time in forwards |');
    console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    // Rounds are interleaved across client counts (1, 4, 16, 1, 4, 16, ...), so a drift in the
    // machine's speed (this VM's varies by tens of percent over minutes) hits every count alike.
    const runs = new Map<number, { rate: number; tokens: number; sec: number; lat: number; steps: number; perStep: number; stepMs: number; busy: number }[]>(clients.map((n) => [n, []]));
    for (let round = 0; round < rounds + 1; round++)
      for (const n of clients) {
        let tokens = 0;
        const lats: number[] = [];
        const c0 = await engineCounters(base);
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
        const c1 = await engineCounters(base);
        if (round === 0) continue; // warm-up
        const steps = c1.steps - c0.steps;
        const busy = c1.stepSeconds - c0.stepSeconds;
        runs.get(n)!.push({
          rate: tokens / sec, tokens, sec, lat: lats.reduce((x, y) => x + y, 0) / lats.length,
          steps, perStep: (c1.sequences - c0.sequences) / Math.max(1, steps), stepMs: (busy / Math.max(1, steps)) * 1000, busy: busy / sec,
        });
      }
    const single = median(runs.get(clients[0])!.map((r) => r.rate));
    for (const n of clients) {
      const rs = runs.get(n)!;
      const rate = median(rs.map((r) => r.rate));
      const last = rs[rs.length - 1];
      const med = (f: (r: (typeof rs)[number]) => number) => median(rs.map(f));
      console.log(
        `| ${n} | ${n * perClient} | ${last.tokens} | ${fmt(last.sec, 2)} | ${fmt(rate)} | ${fmt(rate / single, 2)}x | ${fmt(last.lat, 0)} | ${last.steps} | ${fmt(med((r) => r.perStep), 2)} | ${fmt(med((r) => r.stepMs), 2)} | ${fmt(med((r) => r.busy) * 100, 0)} % |`,
      );
    }
  } finally {
    if (server.exitCode === null) {
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
