import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, OverloadedError, groupByWindow } from '../src/engine/scheduler.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';
import { generate, type StepEvent } from '../src/decode/generation.ts';
import { CancelledError, OptionError } from '../src/errors.ts';
import { scriptedModel, prefer } from './mock.ts';

const model = () => scriptedModel(32, (p) => prefer(32, 4 + ((p * 7) % 20), 3 + (p % 4)));
const opts = { maxTokens: 12, blockLength: 4, policy: 'low_confidence' as const, steps: 6, cache: 'none' as const, stopTokens: [] };

test('more requests than batch slots: all finish, each equal to its solo run, batched forwards', async () => {
  const m = model();
  const prompts = Array.from({ length: 7 }, (_, i) => [i, i + 1]);
  const solo = await Promise.all(prompts.map((p) => generate(m, p, opts)));
  const calls = m.calls;
  const s = new Scheduler(m, { maxBatch: 3, maxQueue: 10 });
  const sizes: number[] = [];
  s.hooks.onStep = (b) => sizes.push(b);
  const rs = await Promise.all(prompts.map((p) => s.submit({ prompt: p, options: opts })));
  rs.forEach((r, i) => assert.deepEqual(r.tokens, solo[i].tokens));
  assert.ok(Math.max(...sizes) === 3 && m.calls - calls < 7 * 6, 'steps were batched');
});

test('bad options reject at submit; a full queue gives OverloadedError; cancelled requests leave', async () => {
  const s = new Scheduler(model(), { maxBatch: 1, maxQueue: 1 });
  assert.throws(() => s.submit({ prompt: [1], options: { ...opts, steps: 0 } }), OptionError);
  const a = s.submit({ prompt: [1], options: opts });
  const ac = new AbortController();
  const b = s.submit({ prompt: [2], options: opts, signal: ac.signal });
  assert.throws(() => s.submit({ prompt: [3], options: opts }), OverloadedError);
  ac.abort();
  await assert.rejects(b, CancelledError);
  assert.equal((await a).tokens.length, 12);
  assert.equal((await s.submit({ prompt: [4], options: opts })).tokens.length, 12);
  // a burst within one forward: the batch's free slots and the queue's cap, no more
  const burst = new Scheduler(model(), { maxBatch: 4, maxQueue: 1 });
  const taken: Promise<unknown>[] = [];
  let refused = 0;
  for (let i = 0; i < 50; i++) {
    try {
      taken.push(burst.submit({ prompt: [i % 7], options: opts }));
    } catch (e) {
      assert.ok(e instanceof OverloadedError);
      refused++;
    }
  }
  assert.equal(taken.length, 4 + 1);
  assert.equal(refused, 45);
  await Promise.all(taken);
});

test('a failing forward fails its batch only; the loop keeps serving; drain waits for work', async () => {
  const m = model();
  let fail = true;
  const orig = m.forward.bind(m);
  m.forward = async (r) => {
    if (fail) {
      fail = false;
      throw new Error('device error');
    }
    return orig(r);
  };
  const s = new Scheduler(m, { maxBatch: 4 });
  await assert.rejects(s.submit({ prompt: [1], options: opts }), /device error/);
  const ok = s.submit({ prompt: [2], options: opts });
  const drained = s.drain();
  assert.equal((await ok).tokens.length, 12);
  await drained;
  assert.throws(() => s.submit({ prompt: [3], options: opts }), OverloadedError, 'no new work after drain');
});

test('groupByWindow: decode rows batch whatever their caches; long canvases are not padded', () => {
  const plan = (L: number, P: number, id: number) => ({ id, req: { ids: new Int32Array(L), positions: new Int32Array(L), visible: new Uint8Array(0), queries: new Int32Array(0), past: P ? ({ length: P } as never) : undefined } });
  // four one-row decode steps with caches of 20..300 entries: one forward
  const decode = [plan(1, 20, 0), plan(1, 300, 1), plan(1, 90, 2), plan(1, 150, 3)];
  const g1 = groupByWindow(decode, 384);
  assert.equal(g1.length, 1);
  // a 90-row canvas next to three 64-row windows: the canvas runs alone, the windows together
  const mixed = [plan(64, 30, 0), plan(90, 0, 1), plan(64, 30, 2), plan(64, 30, 3)];
  const g2 = groupByWindow(mixed, 384);
  assert.deepEqual(g2.map((g) => g.map((p) => p.id).sort()), [[1], [0, 2, 3]]);
  // a forward returning full logits rows (all its sequences', padded to the most query rows)
  // returns at most 256: a scored prompt chunk (256 queries) runs alone, while biased or sampled
  // canvases (32) batch with each other and with greedy ones, and one-row decode steps whatever they ask
  const windows = [plan(64, 30, 0), plan(64, 30, 1), plan(64, 30, 2)];
  const wants = windows.map((p, i) => ({ ...p, req: { ...p.req, queries: new Int32Array(i === 1 ? 256 : 8), wantLogits: i === 1 } }));
  assert.deepEqual(groupByWindow(wants, 384).map((g) => g.map((p) => p.id).sort()).sort(), [[0, 2], [1]]);
  const scored = windows.map((p) => ({ ...p, req: { ...p.req, queries: new Int32Array(256), wantLogits: true } }));
  assert.equal(groupByWindow(scored, 384).length, 3);
  const mixed32 = windows.map((p, i) => ({ ...p, req: { ...p.req, queries: new Int32Array(32), wantLogits: i !== 0 } }));
  assert.equal(groupByWindow(mixed32, 384).length, 1);
  const oneRow = decode.map((p, i) => ({ ...p, req: { ...p.req, queries: new Int32Array(1), wantLogits: i === 2 } }));
  assert.equal(groupByWindow(oneRow, 384).length, 1);
  // property: every plan exactly once; padded rows within a quarter (+ slack) of the real rows
  const rnd = mulberry32(5);
  for (let t = 0; t < 200; t++) {
    const ps = Array.from({ length: 1 + Math.floor(rnd() * 12) }, (_, i) => plan(1 + Math.floor(rnd() * 100), Math.floor(rnd() * 200), i));
    const gs = groupByWindow(ps, 512);
    assert.deepEqual(gs.flat().map((p) => p.id).sort((a, b) => a - b), ps.map((p) => p.id));
    for (const g of gs) {
      if (g.length < 2) continue;
      const L = Math.max(...g.map((p) => p.req.ids.length));
      const real = g.reduce((a, p) => a + p.req.ids.length, 0);
      assert.ok(g.length * L <= 1.25 * real * (1 + 400 / 3072) + g.length, `padding ${g.length * L} vs ${real}`);
    }
  }
});

for (const [arch, blockSize] of [['llama', undefined], ['qwen3', undefined], ['sdar', 4], ['fast_dllm_v2', 8]] as const) {
  test(`chunked prefill, ${arch}: a long prompt runs in chunks and decodes exactly as in one forward`, async () => {
    const { fixtureModel, range } = await import('./helpers.ts');
    const { model } = await fixtureModel({ arch, hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, blockSize });
    const V = model.args.vocabSize;
    const prompt = range(0, 53).map((i) => (i * 17 + 4) % (V - 10));
    const opts = { maxTokens: 10, stopTokens: [], ...(blockSize ? { policy: 'threshold' as const, threshold: 0.3 } : {}) };
    const seen: { rows: number; logits: Float32Array }[] = [];
    const orig = model.forward.bind(model);
    model.forward = async (reqs) => {
      const out = await orig(reqs);
      reqs.forEach((r, i) => seen.push({ rows: r.ids.length, logits: out[i].topLogits }));
      return out;
    };
    const alone = await generate(model, prompt, opts);
    const first = seen[0];
    seen.length = 0;
    const s = new Scheduler(model, { prefillChunk: 16, prefixCacheBytes: 0 });
    const events: number[] = [];
    const flags: boolean[] = [];
    const r = await s.submit({ prompt, options: opts, onStep: (e) => (events.push(e.committed.length), flags.push(e.prefill === true)) });
    assert.deepEqual(r.tokens, alone.tokens);
    const chunks = events.findIndex((n) => n > 0);
    assert.ok(chunks >= 3, `${chunks} prefill chunks before the first commit`);
    // chunks only before the answer: every later forward is one the whole-prompt run made too
    assert.equal(r.stats.prefill, chunks);
    assert.deepEqual(flags, events.map((_, i) => i < chunks), 'chunk events say so');
    assert.equal(r.stats.forwards, alone.stats.forwards + chunks);
    assert.ok(seen.slice(0, chunks).every((x) => x.rows <= 16), `chunk rows ${seen.slice(0, chunks).map((x) => x.rows)}`);
    assert.equal(seen.slice(0, chunks + 1).reduce((n, x) => n + x.rows, 0), first.rows, 'the chunks and the first scoring forward cover what one forward ran');
    const y = seen[chunks].logits;
    for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i] - first.logits[i]) <= 1e-4 * Math.max(1, Math.abs(first.logits[i])), `logit ${i}`);
    await model.close();
  });
}

test('chunked prefill: a short request beside a long prompt starts answering before the long prompt is read', async () => {
  const { fixtureModel, range } = await import('./helpers.ts');
  const { model } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2, std: 0.3 });
  const s = new Scheduler(model, { maxBatch: 2, prefillChunk: 8, prefixCacheBytes: 0 });
  const order: string[] = [];
  const opts = { maxTokens: 3, stopTokens: [] };
  const onStep = (who: string) => (e: StepEvent) => {
    if (e.committed.length > 0) order.push(who);
  };
  await Promise.all([
    s.submit({ prompt: range(0, 80).map((i) => (i * 3 + 1) % 100), options: opts, onStep: onStep('long') }),
    s.submit({ prompt: [5, 6, 7], options: opts, onStep: onStep('short') }),
  ]);
  assert.deepEqual(order.slice(0, 3), ['short', 'short', 'short'], order.join(' '));
  await model.close();
});

test('chunked prefill with the prefix cache: a request arriving during a long prefill starts from the chunks run so far', async () => {
  const { fixtureModel, range } = await import('./helpers.ts');
  for (const [arch, blockSize] of [['llama', undefined], ['fast_dllm_v2', 8]] as const) {
    const { model } = await fixtureModel({ arch, hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, blockSize });
    const sys = range(0, 96).map((i) => (i * 7 + 3) % 150);
    const opts = { maxTokens: 6, stopTokens: [], ...(blockSize ? { policy: 'threshold' as const, threshold: 0.3 } : {}) };
    const pb = [...sys, 9, 9, 9];
    const alone = await generate(model, pb, opts);
    const s = new Scheduler(model, { maxBatch: 2, prefillChunk: 16 });
    let b: Promise<Awaited<ReturnType<Scheduler['submit']>>> | null = null;
    let steps = 0;
    const a = s.submit({
      prompt: [...sys, 1, 2],
      options: opts,
      // B arrives after A's third chunk
      onStep: () => {
        if (++steps === 3) b = s.submit({ prompt: pb, options: opts });
      },
    });
    await a;
    const rb = await b!;
    assert.deepEqual(rb.tokens, alone.tokens, arch);
    assert.ok(rb.stats.cached >= 48, `${arch}: B started from A's chunks (${rb.stats.cached} cached)`);
    await model.close();
  }
});

test('a sequence whose step cannot be planned fails alone; throwing hooks stop nothing', async () => {
  const { Generation } = await import('../src/decode/generation.ts');
  const m = model();
  const prompts = [[1], [1, 2, 3], [4, 5]];
  const solo = await Promise.all(prompts.map((p) => generate(m, p, opts)));
  const plan = Generation.prototype.plan;
  let planned = 0;
  // fault injection: the 3-token prompt's third step cannot allocate
  Generation.prototype.plan = function (this: InstanceType<typeof Generation>) {
    if (this.promptLength === 3 && ++planned === 3) throw new RangeError('Array buffer allocation failed');
    return plan.call(this);
  };
  try {
    const s = new Scheduler(m, { maxBatch: 4 });
    s.hooks.onStep = () => {
      throw new Error('metrics broke');
    };
    s.hooks.onFinish = () => {
      throw new Error('log broke');
    };
    const rs = await Promise.allSettled(prompts.map((p) => s.submit({ prompt: p, options: opts })));
    assert.equal(rs[1].status, 'rejected');
    assert.match(String((rs[1] as PromiseRejectedResult).reason), /allocation failed/);
    for (const i of [0, 2]) assert.deepEqual((rs[i] as PromiseFulfilledResult<{ tokens: number[] }>).value.tokens, solo[i].tokens);
    // and the loop still serves
    assert.deepEqual((await s.submit({ prompt: [1, 2, 3], options: opts })).tokens, solo[1].tokens);
  } finally {
    Generation.prototype.plan = plan;
  }
});

test('a request cancelled while an earlier forward of the same step runs leaves before its own', async () => {
  const m = model();
  const ac = new AbortController();
  const afterAbort: number[] = [];
  let longForwards = 0;
  const orig = m.forward.bind(m);
  m.forward = async (reqs) => {
    if (ac.signal.aborted) afterAbort.push(...reqs.map((r) => r.ids.length));
    // (the long canvas runs in its own forward, first in each step; the short one is
    // cancelled during the second step's)
    if (reqs[0].ids.length > 50 && ++longForwards === 2) ac.abort();
    return orig(reqs);
  };
  const s = new Scheduler(m, { maxBatch: 4 });
  const long = s.submit({ prompt: Array.from({ length: 100 }, (_, i) => i % 30), options: opts });
  const short = s.submit({ prompt: [3, 4], options: opts, signal: ac.signal });
  await assert.rejects(short, CancelledError);
  assert.equal((await long).tokens.length, 12);
  assert.ok(afterAbort.length > 0 && afterAbort.every((r) => r > 50), `forward rows after the cancel: ${afterAbort}`);
});

test('a request submitted from a rejection handler as the loop winds down still runs; drain then resolves', async () => {
  const m = model();
  const s = new Scheduler(m, { maxBatch: 4 });
  const ac = new AbortController();
  const orig = m.forward.bind(m);
  m.forward = async (r) => {
    ac.abort(); // (cancelled during its own forward: it leaves at the next step, which then finds nothing to run)
    return orig(r);
  };
  const second = new Promise<unknown>((resolve, reject) => {
    s.submit({ prompt: [1], options: opts, signal: ac.signal }).catch(() => {
      m.forward = orig;
      s.submit({ prompt: [2], options: opts }).then(resolve, reject);
    });
  });
  const r = (await Promise.race([second, new Promise((res) => setTimeout(() => res('hung'), 5000))])) as { tokens: number[] } | string;
  assert.notEqual(r, 'hung', 'the request submitted from the handler ran');
  assert.equal((r as { tokens: number[] }).tokens.length, 12);
  await s.drain();
});
