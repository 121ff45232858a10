// Prompt prefixes shared across requests: the store's bookkeeping, and requests that start
// from another request's keys and values decode exactly what they decode alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixCache, PREFIX_CHUNK } from '../src/engine/prefix-cache.ts';
import { Scheduler } from '../src/engine/scheduler.ts';
import { generate, type GenerateResult } from '../src/decode/generation.ts';
import { cacheBytes, type KVCache } from '../src/runtime/kv.ts';
import type { Model } from '../src/models/registry.ts';
import type { FixtureArch } from '../src/formats/fixtures.ts';
import { fixtureModel, range } from './helpers.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';

const SHAPE = { layers: 2, kvHeads: 1, headDim: 2 };

/** A cache of n entries at positions 0..n-1 whose values say which prompt they came from. */
function cacheOf(n: number, tag: number): KVCache {
  const f = () => Float32Array.from({ length: n * 2 }, (_, i) => tag * 1000 + i);
  return { length: n, capacity: n, positions: Int32Array.from(range(0, n)), keys: [f(), f()], values: [f(), f()], tip: { used: n } };
}

test('prefix store: the longest shared prefix wins, copies are compact, least recently used go first beyond the budget', () => {
  const per = cacheBytes(SHAPE, 1);
  const store = new PrefixCache(SHAPE, 130 * per);
  const sys = range(100, 100 + 2 * PREFIX_CHUNK); // a 32-token "system prompt"
  const a = [...sys, ...range(500, 520)];
  const b = [...sys, ...range(600, 640)];
  assert.equal(store.lookup(a), null);
  const live = { ...cacheOf(60, 1), capacity: 60 };
  store.insert(a, live, a.length);
  live.keys[0][0] = -1; // the store holds a copy, not the request's buffer
  const hit = store.lookup(b)!;
  assert.equal(hit.tokens, sys.length, 'b shares the system prompt with a');
  assert.equal(hit.cache.keys[0][0], 1000);
  assert.equal(hit.cache.capacity, a.length, 'compact');
  assert.equal(store.lookup([...a, 1, 2, 3])!.tokens, a.length, 'a longer prompt that starts with all of a');
  assert.equal(store.lookup(range(0, 40)), null, 'nothing shared');
  assert.equal(store.lookup(sys.slice(0, PREFIX_CHUNK - 1)), null, 'less than a chunk is not looked up');
  // b (72 tokens) fits beside a (52); a third prompt of 40 evicts the least recently used (a)
  store.insert(b, cacheOf(b.length, 2), b.length);
  assert.equal(store.stats.entries, 2);
  store.lookup(b); // b is now the most recently used
  const c = range(700, 740);
  store.insert(c, cacheOf(c.length, 3), c.length);
  assert.ok(store.stats.bytes <= 130 * per);
  assert.equal(store.stats.entries, 2);
  assert.equal(store.lookup(a)!.tokens, sys.length, "a is gone: its system prompt is still found through b's entry");
  assert.equal(store.lookup(c)!.tokens, c.length);
  // a prompt already covered is not stored twice; one larger than the budget is not stored
  const before = store.stats.entries;
  store.insert(b.slice(0, 48), cacheOf(48, 4), 48);
  assert.equal(store.stats.entries, before);
  store.insert(range(0, 200), cacheOf(200, 5), 200);
  assert.equal(store.lookup(range(0, 200)), null);
});

test('prefix store: evicting an entry hands its shared keys back to an older one; salts never share; covered entries go', () => {
  const per = cacheBytes(SHAPE, 1);
  const store = new PrefixCache(SHAPE, 130 * per);
  const sys = range(100, 132);
  const a = [...sys, ...range(500, 520)]; // 52
  const b = [...sys, ...range(600, 640)]; // 72: takes over the system prompt's keys
  store.insert(a, cacheOf(a.length, 1), a.length);
  store.insert(b, cacheOf(b.length, 2), b.length);
  store.lookup(a); // a is the most recently used: c evicts b
  store.insert(range(700, 740), cacheOf(40, 3), 40);
  const hit = store.lookup([...sys, 1, 2, 3])!;
  assert.equal(hit.tokens, sys.length, "the system prompt is found through a's entry");
  assert.equal(hit.cache.keys[0][0], 1000);
  // another salt sees nothing of these; its own entries only
  assert.equal(store.lookup(a, 'tenant-2'), null);
  store.insert(a, cacheOf(a.length, 4), a.length, 'tenant-2');
  assert.equal(store.lookup(a, 'tenant-2')!.cache.keys[0][0], 4000);
  assert.equal(store.lookup(a)!.cache.keys[0][0], 1000);
  // a longer entry that starts with all of a (same salt) replaces it
  const before = store.stats.entries;
  store.insert([...a, 7, 8, 9, 10], cacheOf(a.length + 4, 5), a.length + 4);
  assert.equal(store.stats.entries, before);
  assert.equal(store.lookup(a)!.cache.keys[0][0], 5000);
});

/** The store's rules written out plainly: every entry compared on every call, no index. */
class NaiveStore {
  entries: { salt: string; tokens: number[]; n: number; tag: number; stored: number }[] = []; // least recently used first
  clock = 0;
  constructor(private budget: number, private per: number) {}
  private touch(e: NaiveStore['entries'][number]) {
    this.entries = [...this.entries.filter((x) => x !== e), e];
  }
  lookup(p: number[], salt: string): { tokens: number; tag: number } | null {
    const shared = (e: { tokens: number[] }) => {
      let n = 0;
      while (n < Math.min(e.tokens.length, p.length) && e.tokens[n] === p[n]) n++;
      return n;
    };
    const mine = this.entries.filter((e) => e.salt === salt);
    // the entry sharing the most (of the few a test stores, all are compared); of equals, the one stored first
    const most = Math.max(0, ...mine.map(shared));
    if (most < PREFIX_CHUNK) return null;
    const best = mine.filter((e) => shared(e) === most).sort((a, b) => a.stored - b.stored)[0];
    this.touch(best);
    return { tokens: shared(best), tag: best.tag };
  }
  insert(t: number[], n: number, salt: string, tag: number) {
    if (t.length < PREFIX_CHUNK || n * this.per > this.budget) return;
    const startsWith = (long: number[], short: number[]) => short.every((x, i) => long[i] === x);
    // (of the entries covering this one, the one stored first is the one used)
    const cover = this.entries.filter((e) => e.salt === salt && e.tokens.length >= t.length && e.n >= n && startsWith(e.tokens, t)).sort((a, b) => a.stored - b.stored)[0];
    if (cover) return this.touch(cover);
    this.entries = this.entries.filter((e) => !(e.salt === salt && e.tokens.length <= t.length && e.n <= n && startsWith(t, e.tokens)));
    while ((this.entries.reduce((a, e) => a + e.n, 0) + n) * this.per > this.budget) this.entries.shift();
    this.entries.push({ salt, tokens: t, n, tag, stored: ++this.clock });
  }
}

test('prefix store against a plain reference: random prompts sharing stems, two salts, evictions', () => {
  const per = cacheBytes(SHAPE, 1);
  for (const seed of [1, 2, 3]) {
    const rnd = mulberry32(seed);
    const pick = (k: number) => Math.floor(rnd() * k);
    const stems = Array.from({ length: 4 }, (_, s) => range(0, 8 + pick(60)).map((i) => (i * (s + 3)) % 11));
    const prompt = () => [...stems[pick(4)], ...Array.from({ length: pick(40) }, () => pick(3))];
    const store = new PrefixCache(SHAPE, 400 * per);
    const naive = new NaiveStore(400 * per, per);
    for (let op = 0; op < 600; op++) {
      const p = prompt();
      const salt = pick(5) === 0 ? 'b' : '';
      if (pick(2) === 0) {
        const n = Math.max(1, p.length - pick(3));
        store.insert(p, cacheOf(n, op), n, salt);
        naive.insert(p, n, salt, op);
      } else {
        const got = store.lookup(p, salt);
        const want = naive.lookup(p, salt);
        assert.deepEqual(got && { tokens: got.tokens, tag: Math.floor(got.cache.keys[0][0] / 1000) }, want, `seed ${seed} op ${op}`);
      }
      assert.equal(store.stats.entries, naive.entries.length, `seed ${seed} op ${op}: entries`);
      assert.equal(store.stats.bytes, naive.entries.reduce((a, e) => a + e.n, 0) * per, `seed ${seed} op ${op}: bytes`);
    }
  }
});

/** forward windows (rows) a model runs and the candidates' logits it returns, recorded */
function counting(m: Model): { rows: number[]; logits: Float32Array[] } {
  const seen = { rows: [] as number[], logits: [] as Float32Array[] };
  const orig = m.forward.bind(m);
  m.forward = async (reqs) => {
    for (const r of reqs) seen.rows.push(r.ids.length);
    const out = await orig(reqs);
    for (const o of out) seen.logits.push(o.topLogits);
    return out;
  };
  return seen;
}

const CASES: { arch: FixtureArch; blockSize?: number; opts: object }[] = [
  { arch: 'llama', opts: {} },
  { arch: 'qwen3', opts: {} },
  { arch: 'sdar', blockSize: 4, opts: { policy: 'threshold', threshold: 0.3 } },
  { arch: 'fast_dllm_v2', blockSize: 8, opts: { policy: 'threshold', threshold: 0.3 } },
];

for (const c of CASES) {
  test(`prefix cache, ${c.arch}: a request sharing another's system prompt runs only the rest and decodes exactly as alone`, async () => {
    const { model } = await fixtureModel({ arch: c.arch, hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, blockSize: c.blockSize });
    const V = model.args.vocabSize;
    const sys = range(0, 37).map((i) => (i * 13 + 5) % (V - 10));
    const p1 = [...sys, 3, 4, 5];
    const p2 = [...sys, 9, 8, 7, 6, 5];
    const opts = { maxTokens: 12, stopTokens: [], ...c.opts };
    const seen = counting(model);
    const alone = await generate(model, p2, opts);
    const aloneFirst = seen.rows[0];
    const s = new Scheduler(model, { maxBatch: 2 });
    const r1 = await s.submit({ prompt: p1, options: opts });
    const from = seen.rows.length;
    const r2: GenerateResult = await s.submit({ prompt: p2, options: opts });
    assert.deepEqual(r2.tokens, alone.tokens, 'same answer as without the store');
    // causal: all 37 shared tokens; a block model: the blocks both prompts hold whole
    const want = c.blockSize ? Math.floor(sys.length / c.blockSize) * c.blockSize : sys.length;
    assert.equal(r1.stats.cached, 0);
    assert.equal(r2.stats.cached, want, 'the shared part came from the store');
    assert.equal(seen.rows[from], aloneFirst - want, 'its first forward starts after the cached entries');
    // and scores what the whole prompt scores (entries that saw other tokens would not)
    const [x, y] = [seen.logits[0], seen.logits[from]];
    assert.equal(y.length, x.length);
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= 1e-4 * Math.max(1, Math.abs(x[i])), `logit ${i}: ${y[i]} against ${x[i]} alone`);
    assert.equal(s.prefixes!.stats.hits, 1);
    await model.close();
  });
}

test('prefix cache: bidirectional models neither store nor reuse; off with 0 bytes', async () => {
  const { model } = await fixtureModel({ arch: 'llada', hidden: 64, heads: 4, layers: 2 });
  assert.equal(new Scheduler(model).prefixes, null);
  await model.close();
  const { model: ar } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2 });
  assert.equal(new Scheduler(ar, { prefixCacheBytes: 0 }).prefixes, null);
  await ar.close();
});

for (const c of CASES) {
  test(`prefix cache, ${c.arch}: a next turn that repeats the prompt and the answer starts from both`, async () => {
    const { model } = await fixtureModel({ arch: c.arch, hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, blockSize: c.blockSize });
    const V = model.args.vocabSize;
    const p1 = range(0, 21).map((i) => (i * 7 + 3) % (V - 10));
    const opts = { maxTokens: 12, stopTokens: [], ...c.opts };
    const s = new Scheduler(model, { maxBatch: 2 });
    const r1 = await s.submit({ prompt: p1, options: opts });
    const p2 = [...p1, ...r1.tokens, 5, 6, 7];
    const seen = counting(model);
    const alone = await generate(model, p2, opts);
    const r2 = await s.submit({ prompt: p2, options: opts });
    assert.deepEqual(r2.tokens, alone.tokens);
    // causal: every token of turn one but its last (never run); a block model: its finished blocks
    if (!c.blockSize) assert.equal(r2.stats.cached, p1.length + r1.tokens.length - 1);
    else {
      // (whole blocks; with shifted logits the window starts one row before a block)
      const shift = c.arch === 'fast_dllm_v2' ? 1 : 0;
      assert.ok(r2.stats.cached > Math.floor(p1.length / c.blockSize) * c.blockSize - shift && (r2.stats.cached + shift) % c.blockSize === 0, `cached ${r2.stats.cached}`);
    }
    // (the first forward alone, and the turn's first forward after it)
    const [x, y] = [seen.logits[0], seen.logits[alone.stats.forwards]];
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= 1e-4 * Math.max(1, Math.abs(x[i])), `logit ${i}: ${y[i]} against ${x[i]} alone`);
    await model.close();
  });
}

for (const c of CASES) {
  test(`prefix cache, ${c.arch}: the same prompt again reuses all but its last row; a prompt that is a prefix of a stored one reuses its blocks`, async () => {
    const { model } = await fixtureModel({ arch: c.arch, hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, blockSize: c.blockSize });
    const V = model.args.vocabSize;
    const p = range(0, 40).map((i) => (i * 11 + 2) % (V - 10));
    const opts = { maxTokens: 8, stopTokens: [], ...c.opts };
    const alone = await generate(model, p, opts);
    const s = new Scheduler(model, { maxBatch: 2 });
    await s.submit({ prompt: p, options: opts });
    const again = await s.submit({ prompt: p, options: opts });
    assert.deepEqual(again.tokens, alone.tokens);
    assert.equal(again.stats.cached, p.length - 1, 'all but the row whose scores start the answer');
    const short = p.slice(0, 35);
    const shortAlone = await generate(model, short, opts);
    const r = await s.submit({ prompt: short, options: opts });
    assert.deepEqual(r.tokens, shortAlone.tokens);
    const mb = c.blockSize ?? 1;
    const shift = c.arch === 'fast_dllm_v2' ? 1 : 0;
    assert.equal(r.stats.cached, Math.min(short.length - 1, Math.floor(short.length / mb) * mb - (mb > 1 ? shift : 0)));
    await model.close();
  });
}

test('prefix cache: hits count reuse; a store that fails (memory) fails no request; salts keep requests apart', async () => {
  const { model } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3 });
  const p = range(0, 40).map((i) => (i * 5 + 1) % 200);
  const opts = { maxTokens: 4, stopTokens: [] };
  const s = new Scheduler(model, { maxBatch: 1 });
  await s.submit({ prompt: p, options: opts });
  assert.equal((await s.submit({ prompt: p, options: opts, cacheSalt: 'other' })).stats.cached, 0, 'another salt');
  assert.equal((await s.submit({ prompt: p, options: opts })).stats.cached, p.length - 1);
  assert.deepEqual({ hits: s.prefixes!.stats.hits, misses: s.prefixes!.stats.misses }, { hits: 1, misses: 2 });
  s.prefixes!.insert = () => {
    throw new RangeError('Array buffer allocation failed');
  };
  const r = await s.submit({ prompt: [...p, 9], options: opts });
  assert.equal(r.tokens.length, 4);
  await model.close();
});

test('prefix cache: requests arriving together with one prompt (n choices) run it once; each answers as alone', async () => {
  const { model } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3 });
  const V = model.args.vocabSize;
  const prompt = range(0, 70).map((i) => (i * 13 + 5) % (V - 10));
  const busy = range(0, 20).map((i) => (i * 7 + 1) % (V - 10)); // (unrelated: keeps the loop running)
  const opts = { maxTokens: 8, stopTokens: [], temperature: 0 };
  const alone = await generate(model, prompt, opts);
  const seen = counting(model);
  const s = new Scheduler(model, { maxBatch: 4 });
  // (the first starts the loop; the three arrive while its first forward runs, and reach the
  // next step together)
  const first = s.submit({ prompt: busy, options: { ...opts, maxTokens: 24 } });
  const rs = await Promise.all([prompt, prompt, prompt].map((p) => s.submit({ prompt: p, options: opts })));
  await first;
  rs.forEach((r) => assert.deepEqual(r.tokens, alone.tokens));
  assert.deepEqual(rs.map((r) => r.stats.cached), [0, 69, 69], 'the later two start from the first one\'s entries');
  const promptRows = seen.rows.filter((n) => n >= prompt.length).length;
  assert.equal(promptRows, 1, `one forward ran the prompt (rows per forward: ${seen.rows})`);
  await model.close();
});
