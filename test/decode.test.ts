import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkModelDefaults, generate, Generation, type StepEvent } from '../src/decode/generation.ts';
import type { ForwardRequest } from '../src/runtime/session.ts';
import { resolveOptions, withModelDefaults, type GenerateOptions } from '../src/decode/options.ts';
import { transferCounts, dreamCount } from '../src/decode/schedule.ts';
import { OptionError, CancelledError, FormatError } from '../src/errors.ts';
import type { Model } from '../src/models/registry.ts';
import { CACHE, fixtureModel, range, tempDir } from './helpers.ts';
import { join } from 'node:path';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { convertModel, loadModel } from '../src/models/registry.ts';
import { OrtRunner } from '../src/runtime/session.ts';
import { fixtureTokenizer, mulberry32, writeFixture } from '../src/formats/fixtures.ts';
import { biasScores } from '../src/decode/sampling.ts';
import { earlyCommit, holdEnds, inOrder, separateTwins } from '../src/decode/policies.ts';
import { topGap } from '../src/decode/sampling.ts';
import { scriptedModel, prefer, MOCK_EOS, MOCK_MASK } from './mock.ts';

const llada = fixtureModel({ arch: 'llada', hidden: 64, heads: 4, layers: 2, std: 0.3 });
const llama = fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2, std: 0.3 });
const dream = fixtureModel({ arch: 'dream', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3 });

/** LLaDA's generate loop, written plainly: full canvas every step, argmax, softmax
 * confidence of the argmax, top-k per the even split of each block's masks. */
async function referenceLlada(model: Model, prompt: number[], gen: number, block: number, steps: number, cfg = 0, pen = { freq: 0, presence: 0 }, shift = 0): Promise<number[]> {
  const mask = model.special.mask!;
  const V = model.args.vocabSize;
  const x = [...prompt, ...Array(gen).fill(mask)];
  const nBlocks = gen / block;
  const per = steps / nBlocks;
  for (let b = 0; b < nBlocks; b++) {
    const s = prompt.length + b * block;
    const e = s + block;
    const nMask = x.slice(s, e).filter((t) => t === mask).length;
    const counts = Array.from({ length: per }, (_, i) => Math.floor(nMask / per) + (i < nMask % per ? 1 : 0));
    for (let i = 0; i < per; i++) {
      const pos = x.map((_, j) => j);
      const run = async (ids: number[]) => (await model.forward([{ ids: Int32Array.from(ids), positions: Int32Array.from(pos), visible: new Uint8Array(x.length * x.length).fill(1), queries: Int32Array.from(pos), wantLogits: true }]))[0].logits!;
      let logits = await run(x);
      if (cfg > 0) {
        // classifier-free guidance: a second, separate forward with the prompt masked
        const un = await run(x.map((t, j) => (j < prompt.length ? mask : t)));
        logits = logits.map((c, i) => un[i] + (cfg + 1) * (c - un[i]));
      }
      // OpenAI's penalties over the answer's committed tokens (the model's end tokens aside), at every row
      if (pen.freq !== 0 || pen.presence !== 0) {
        logits = Float32Array.from(logits);
        const count = new Map<number, number>();
        for (const t of x.slice(prompt.length)) if (t !== mask && !model.special.stop.includes(t)) count.set(t, (count.get(t) ?? 0) + 1);
        for (let p = 0; p < x.length; p++) for (const [t, n] of count) logits[p * V + t] -= pen.freq * n + pen.presence;
      }
      const conf: { p: number; c: number; t: number }[] = [];
      for (let p = 0; p < x.length; p++) {
        // (a shifted model's prediction for p is row p - 1)
        const r = Math.max(0, p - shift);
        const row = logits.subarray(r * V, (r + 1) * V);
        let best = 0;
        for (let t = 1; t < V; t++) if (row[t] > row[best]) best = t;
        const z = row.reduce((acc, l) => acc + Math.exp(l - row[best]), 0);
        const c = p >= s && p < e && x[p] === mask ? 1 / z : -Infinity;
        conf.push({ p, c, t: best });
      }
      conf.sort((a, b2) => b2.c - a.c || a.p - b2.p);
      for (const k of conf.slice(0, counts[i])) x[k.p] = k.t;
    }
  }
  return x.slice(prompt.length);
}

test('low_confidence matches a plain LLaDA loop (several steps / length / block combinations; LLaDA, LLaDA-MoE, and RND1, Dream and CoDA read one row early)', async () => {
  const { model: moe } = await fixtureModel({ arch: 'llada_moe', hidden: 64, heads: 4, layers: 2, std: 0.3, experts: 6, expertsPerToken: 2, expertSize: 32 });
  const { model: rnd1 } = await fixtureModel({ arch: 'rnd1', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, experts: 6, expertsPerToken: 2, expertSize: 32 });
  const { model: coda } = await fixtureModel({ arch: 'coda', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3 });
  const prompt = [5, 9, 13, 7, 21];
  for (const model of [(await llada).model, moe, rnd1, (await dream).model, coda]) {
    for (const [gen, block, steps] of [[8, 8, 8], [8, 8, 4], [16, 4, 8], [12, 4, 6], [12, 12, 5]]) {
      const want = await referenceLlada(model, prompt, gen, block, steps, 0, undefined, model.args.shiftedLogits ? 1 : 0);
      const got = await generate(model, prompt, { maxTokens: gen, blockLength: block, steps, policy: 'low_confidence', cache: 'none', stopTokens: [] });
      assert.deepEqual(got.tokens, want, `${model.args.arch}: gen ${gen} block ${block} steps ${steps}`);
      assert.equal(got.stats.forwards, steps);
    }
  }
  assert.equal(rnd1.args.attention, 'bidirectional');
  assert.equal(rnd1.special.mask, rnd1.codec.encode('<|MASK|>')[0]);
  assert.deepEqual([coda.args.attention, coda.args.shiftedLogits, coda.special.mask, coda.args.tiedEmbeddings], ['bidirectional', true, coda.codec.encode('<|mask|>')[0], false]);
  // (a CoDA checkpoint saved with its head tied to the embedding holds no lm_head: read tied)
  const { model: tiedCoda } = await fixtureModel({ arch: 'coda', hidden: 64, heads: 4, kvHeads: 2, layers: 2, tied: true });
  assert.equal(tiedCoda.args.tiedEmbeddings, true);
  await tiedCoda.close();
  await moe.close();
  await rnd1.close();
  await coda.close();
});

test('frequency / presence penalties: equal to plain loops that subtract them from every scored row (LLaDA low_confidence, greedy AR); they change the output; refused with wino and token editing', async () => {
  const model = (await llada).model;
  const prompt = [5, 9, 13, 7, 21];
  let changed = false;
  for (const pen of [{ freq: 0.8, presence: 0.5 }, { freq: 2, presence: 0 }, { freq: -1, presence: 0.3 }])
    for (const [gen, block, steps] of [[12, 4, 12], [12, 12, 6]]) {
      const got = await generate(model, prompt, { maxTokens: gen, blockLength: block, steps, policy: 'low_confidence', cache: 'none', stopTokens: [], frequencyPenalty: pen.freq, presencePenalty: pen.presence });
      assert.deepEqual(got.tokens, await referenceLlada(model, prompt, gen, block, steps, 0, pen), `${JSON.stringify(pen)} gen ${gen} block ${block} steps ${steps}`);
      const plain = await generate(model, prompt, { maxTokens: gen, blockLength: block, steps, policy: 'low_confidence', cache: 'none', stopTokens: [] });
      if (plain.tokens.join() !== got.tokens.join()) changed = true;
    }
  assert.ok(changed, 'the penalties change some output');
  // a causal model, greedy: each step's argmax after the penalties over the tokens so far
  const ar = (await llama).model;
  const V = ar.args.vocabSize;
  const x = [...prompt];
  for (let i = 0; i < 10; i++) {
    const pos = range(0, x.length);
    const [r] = await ar.forward([{ ids: Int32Array.from(x), positions: Int32Array.from(pos), visible: new Uint8Array(x.length * x.length).map((_, k) => (k % x.length <= Math.floor(k / x.length) ? 1 : 0)), queries: Int32Array.of(x.length - 1), wantLogits: true }]);
    const row = Float32Array.from(r.logits!);
    const count = new Map<number, number>();
    for (const t of x.slice(prompt.length)) count.set(t, (count.get(t) ?? 0) + 1);
    for (const [t, n] of count) row[t] -= 1.5 * n + 0.5;
    let best = 0;
    for (let t = 1; t < V; t++) if (row[t] > row[best]) best = t;
    x.push(best);
  }
  const got = await generate(ar, prompt, { maxTokens: 10, stopTokens: [], frequencyPenalty: 1.5, presencePenalty: 0.5 });
  assert.deepEqual(got.tokens, x.slice(prompt.length));
  // the model's end tokens are never counted (a canvas pads its tail with them), even when the
  // request ignores them as ends: a favoured end token stays favoured, an ordinary one gives way
  const eot = model.special.stop[0];
  const run = async (favour: number, fp: number) => (await generate(model, prompt, { maxTokens: 12, blockLength: 12, steps: 12, policy: 'low_confidence', cache: 'none', stopTokens: [], logitBias: { [favour]: 20 }, frequencyPenalty: fp })).tokens.filter((t) => t === favour).length;
  assert.equal(await run(eot, 2), 12);
  assert.equal(await run(7, 0), 12);
  assert.ok((await run(7, 2)) < 12, 'an ordinary token is penalised');
  for (const o of [{ policy: 'wino' as const }, { editingThreshold: 0.5 }])
    assert.throws(() => new Generation(model, prompt, { ...o, presencePenalty: 0.5 }), (e: unknown) => e instanceof OptionError && e.param === 'presence_penalty');
  assert.throws(() => new Generation(model, prompt, { frequencyPenalty: 2.5 }), (e: unknown) => e instanceof OptionError && e.param === 'frequency_penalty');
});

test('classifier-free guidance matches a plain LLaDA loop that runs the unguided canvas as its own forward', async () => {
  const { model } = await llada;
  const prompt = [5, 9, 13, 7, 21];
  for (const [gen, block, steps, cfg] of [[8, 8, 8, 1], [12, 4, 6, 0.5], [16, 8, 8, 3]]) {
    const want = await referenceLlada(model, prompt, gen, block, steps, cfg);
    // (no cache named: guidance decodes without one)
    let calls = 0;
    const counted = { ...model, forward: (r: Parameters<Model['forward']>[0]) => (calls++, model.forward(r)) };
    const got = await generate(counted, prompt, { maxTokens: gen, blockLength: block, steps, policy: 'low_confidence', cfgScale: cfg, canvas: 'fixed', stopTokens: [] });
    assert.deepEqual(got.tokens, want, `gen ${gen} block ${block} steps ${steps} cfg ${cfg}`);
    assert.equal(calls, steps, 'both passes in one forward');
    // and guidance changes the answer of this random model (else the check above could not tell)
    const plain = await referenceLlada(model, prompt, gen, block, steps);
    assert.notDeepEqual(want, plain, `cfg ${cfg} changes something`);
  }
  // a canvas that fills most of the context: the guided window (two copies) is longer than the context
  const { model: short } = await fixtureModel({ arch: 'llada', hidden: 32, heads: 2, layers: 1, std: 0.3, maxPositions: 24 });
  try {
    const want = await referenceLlada(short, prompt, 16, 16, 8, 1);
    const got = await generate(short, prompt, { maxTokens: 16, blockLength: 16, steps: 8, policy: 'low_confidence', cfgScale: 1, canvas: 'fixed', stopTokens: [] });
    assert.deepEqual(got.tokens, want);
  } finally {
    await short.close();
  }
  const { model: ar } = await llama;
  assert.throws(() => new Generation(ar, prompt, { cfgScale: 1 }), (e: unknown) => e instanceof OptionError && e.param === 'cfg_scale');
  assert.throws(() => new Generation(model, prompt, { cfgScale: 1, cache: 'prefix' }), (e: unknown) => e instanceof OptionError && e.param === 'cache');
  assert.throws(() => new Generation(model, prompt, { cfgScale: -1 }), (e: unknown) => e instanceof OptionError && e.param === 'cfg_scale');
  assert.equal(new Generation(model, prompt, { cfgScale: 1 }).opts.cache, 'none');
});

test('guidance packed in one sequence scores as two separate forwards: Dream (shifted) on an adaptive canvas, LLaDA filling in the middle', async () => {
  // every guided forward is run again as its two halves, one sequence each; the packed scores must match
  // (the suffix, when there is one, sits from capEnd on)
  const checked = (m: Model, promptLength: number, capEnd: number) => {
    let forwards = 0;
    const forward = async (reqs: Parameters<Model['forward']>[0]) => {
      const out = await m.forward(reqs);
      for (let i = 0; i < reqs.length; i++) {
        const r = reqs[i];
        const R = r.ids.length / 2;
        const Qh = r.queries.length / 2;
        const half = (h: number) => ({
          ids: r.ids.slice(h * R, (h + 1) * R),
          positions: r.positions.slice(h * R, (h + 1) * R),
          visible: Uint8Array.from({ length: R * R }, (_, k) => r.visible[(h * R + Math.floor(k / R)) * 2 * R + h * R + (k % R)]),
          queries: r.queries.slice(h * Qh, (h + 1) * Qh).map((q) => q - h * R),
          wantLogits: true,
        });
        const [cond, un] = await m.forward([half(0), half(1)]);
        // the second copy is the first with the prompt and the suffix masked
        for (let k = 0; k < R; k++) {
          const p = r.positions[k];
          assert.equal(r.ids[R + k], p < promptLength || p >= capEnd ? m.special.mask : r.ids[k], `position ${p}`);
        }
        const V = m.args.vocabSize;
        for (let q = 0; q < Qh; q++)
          for (const [src, row] of [[cond, q], [un, q]] as const) {
            const packedRow = src === cond ? q : Qh + q;
            for (let v = 0; v < V; v++) assert.ok(Math.abs(out[i].logits![packedRow * V + v] - src.logits![row * V + v]) < 1e-3, `row ${packedRow} token ${v}`);
          }
        forwards++;
      }
      return out;
    };
    return { model: { ...m, forward }, forwards: () => forwards };
  };
  const { model: dm } = await dream;
  const d = checked(dm, 3, 3 + 32);
  const r = await generate(d.model, [5, 9, 13], { maxTokens: 32, initialCanvas: 8, cfgScale: 1, policy: 'threshold', threshold: 0.9 });
  assert.ok(d.forwards() >= 2 && r.tokens.length > 0);
  assert.ok(r.stats.discarded > 0, 'the adaptive canvas grew (discarded probes, read from the first copy of the rows)');
  const { model: lm } = await llada;
  const l = checked(lm, 3, 3 + 8);
  const f = await generate(l.model, [5, 9, 13], { maxTokens: 8, suffix: [7, 8], cfgScale: 2, policy: 'low_confidence', steps: 4, canvas: 'fixed', stopTokens: [] });
  assert.equal(f.tokens.length, 8);
  assert.equal(l.forwards(), 4);
});

/** WINO written plainly: the whole canvas plus a shadow copy of the block (all masks) every step;
 * window rows do not see the shadow, a shadow row sees all but its own position; draft above tau1
 * (at most max(5, 70 % of the masks), at most 20, at least the best one); when more than one was
 * drafted, mask again the block's earlier tokens whose shadow probability is below tau2 (if as
 * many as the previous step drafted, only the lowest previous - 1). */
async function referenceWino(model: Model, prompt: number[], gen: number, block: number, tau1: number, tau2: number): Promise<{ tokens: number[]; remasked: number; forwards: number }> {
  const mask = model.special.mask!;
  const V = model.args.vocabSize;
  const x = [...prompt, ...Array(gen).fill(mask)];
  const N = x.length;
  let remasked = 0;
  let forwards = 0;
  const prob = (row: Float32Array, t: number) => {
    const mx = Math.max(...row);
    return Math.exp(row[t] - mx) / row.reduce((s, l) => s + Math.exp(l - mx), 0);
  };
  for (let b = 0; b < gen / block; b++) {
    const bs = prompt.length + b * block;
    const be = bs + block;
    let last = 30;
    while (x.slice(bs, be).includes(mask)) {
      assert.ok(forwards < 500, 'the reference loop ends');
      const T = N + block;
      const ids = [...x, ...Array(block).fill(mask)];
      const pos = [...range(0, N), ...range(bs, be)];
      const vis = new Uint8Array(T * T);
      for (let i = 0; i < T; i++)
        for (let j = 0; j < T; j++) vis[i * T + j] = i < N ? (j < N ? 1 : 0) : j === bs + (i - N) ? 0 : 1;
      const [r] = await model.forward([{ ids: Int32Array.from(ids), positions: Int32Array.from(pos), visible: vis, queries: Int32Array.from(range(0, T)), wantLogits: true }]);
      forwards++;
      const row = (i: number) => r.logits!.subarray(i * V, (i + 1) * V);
      const masked = range(bs, be).filter((p) => x[p] === mask);
      const earlier = range(bs, be).filter((p) => x[p] !== mask);
      const draft = masked.map((p) => {
        const l = row(p);
        // (the mask token is never an answer)
        let t = mask === 0 ? 1 : 0;
        for (let v = 0; v < V; v++) if (v !== mask && l[v] > l[t]) t = v;
        return { p, t, c: prob(l, t) };
      });
      const cap = Math.min(Math.max(Math.floor(masked.length * 0.7), 5), 20);
      let take = draft.filter((d) => d.c > tau1);
      if (take.length > cap) take = [...take].sort((a, b2) => b2.c - a.c || a.p - b2.p).slice(0, cap);
      if (take.length === 0) take = [[...draft].sort((a, b2) => b2.c - a.c || a.p - b2.p)[0]];
      let back: number[] = [];
      if (take.length > 1) {
        const belief = earlier.map((p) => ({ p, c: prob(row(N + p - bs), x[p]) }));
        let low = belief.filter((e) => e.c < tau2);
        if (low.length >= last) low = [...belief].sort((a, b2) => a.c - b2.c || a.p - b2.p).slice(0, last - 1);
        back = low.map((e) => e.p);
      }
      for (const d of take) x[d.p] = d.t;
      for (const p of back) x[p] = mask;
      remasked += back.length;
      last = take.length;
    }
  }
  return { tokens: x.slice(prompt.length), remasked, forwards };
}

test('wino: drafts wide, masks again what it no longer believes; equal to a plain WINO loop', async () => {
  const { model } = await llada;
  const prompt = [5, 9, 13, 7, 21];
  let revocations = 0;
  for (const [gen, block, tau1, tau2] of [[16, 16, 0.05, 0.5], [16, 8, 0.08, 0.6], [12, 12, 0.03, 0.3]]) {
    const want = await referenceWino(model, prompt, gen, block, tau1, tau2);
    const got = await generate(model, prompt, { maxTokens: gen, blockLength: block, steps: 8 * gen, policy: 'wino', threshold: tau1, verifyThreshold: tau2, cache: 'none', canvas: 'fixed', stopTokens: [] });
    assert.deepEqual(got.tokens, want.tokens, `gen ${gen} block ${block} tau ${tau1}/${tau2}`);
    assert.equal(got.stats.forwards, want.forwards);
    assert.equal(got.stats.remasked, want.remasked);
    revocations += want.remasked;
  }
  assert.ok(revocations > 0, 'the cases revoke something (else the narrow-out half went untested)');
  // with the prefix and dual caches: every shadow hides from its row exactly the window row at
  // its own position and nothing else, window rows never see it, and what is streamed as final
  // is never revoked; on an adaptive canvas (an end token this random model does produce) too
  const laidOut = { ...model, forward: async (reqs: Parameters<Model['forward']>[0]) => {
    for (const q of reqs) {
      const L = q.ids.length;
      const P = q.past?.length ?? 0;
      let R = 1;
      while (R < L && q.positions[R] > q.positions[R - 1]) R++;
      const T = P + L;
      for (let r = 0; r < L; r++) {
        const hidden = range(0, T).filter((c) => !q.visible[r * T + c]);
        if (r < R) assert.deepEqual(hidden, range(P + R, T), 'a window row sees no shadow');
        else {
          assert.equal(q.ids[r], model.special.mask);
          assert.deepEqual(hidden, [P + q.positions[r] - q.positions[0]], 'a shadow row hides its own position only');
        }
      }
    }
    return model.forward(reqs);
  } };
  let shadows = 0;
  for (const [cache, stop] of [['prefix', []], ['dual', []], ['prefix', [284]]] as const) {
    const finals: number[][] = [];
    const r = await generate(laidOut, prompt, {
      maxTokens: 32, blockLength: 8, initialCanvas: 8, policy: 'wino', threshold: 0.05, verifyThreshold: 0.6, cache, stopTokens: [...stop],
      onStep: (ev) => {
        finals.push(Array.from(ev.draft.subarray(0, ev.finalized)));
        shadows += ev.revoked.length;
      },
    });
    assert.ok(r.stats.remasked > 0, `revocations happened (${cache})`);
    for (let i = 1; i < finals.length; i++) assert.deepEqual(finals[i].slice(0, finals[i - 1].length), finals[i - 1], `step ${i}: a final prefix changed`);
    assert.deepEqual(finals.at(-1), r.tokens);
    if (stop.length) assert.ok(r.tokens.length < 32 && r.finishReason === 'stop', 'ended at the end token');
  }
  assert.ok(shadows > 0, 'events list the revocations');
  // the smallest budget (one step per block) commits every block in one step: no revocation
  const one = await generate(model, prompt, { maxTokens: 16, blockLength: 8, steps: 2, policy: 'wino', threshold: 0.05, cache: 'none', canvas: 'fixed', stopTokens: [] });
  assert.equal(one.stats.forwards, 2);
  assert.equal(one.stats.remasked, 0);
  // the defaults are its authors' (0.6 / 0.9); the pick filters and shifted models are refused
  assert.equal(new Generation(model, prompt, { policy: 'wino' }).opts.params.threshold, 0.6);
  assert.equal(new Generation(model, prompt, { policy: 'wino' }).opts.params.verifyThreshold, 0.9);
  assert.throws(() => new Generation(model, prompt, { policy: 'wino', inOrder: true }), (e: unknown) => e instanceof OptionError && e.param === 'in_order');
  const { model: dm } = await dream;
  assert.throws(() => new Generation(dm, prompt, { policy: 'wino' }), (e: unknown) => e instanceof OptionError && e.param === 'policy');
  const { model: ar } = await llama;
  assert.throws(() => new Generation(ar, prompt, { policy: 'wino' }), (e: unknown) => e instanceof OptionError && e.param === 'policy');
});

test('threshold with tau = 1 commits exactly one token per step', async () => {
  const { model } = await llada;
  const events: StepEvent[] = [];
  const r = await generate(model, [3, 4, 5], { maxTokens: 16, blockLength: 8, policy: 'threshold', threshold: 1, cache: 'none', stopTokens: [], onStep: (e) => events.push(e) });
  assert.equal(r.stats.forwards, 16);
  assert.ok(events.every((e) => e.committed.length === 1));
});

/**
 * A block diffusion model's decoder written plainly (the oracle for SDAR and Fast-dLLM v2):
 * decoding blocks end at multiples of `decodeBlock`; every step runs the whole canvas so far
 * with attention causal over `modelBlock`-blocks aligned to position 0 (no cache), reads
 * position p from row p - shift, and commits the masks above tau, or else the most confident.
 * `lead` (Fast-dLLM v2's decoder): a model block that starts after the prompt first gets its first
 * token alone, the argmax of the previous block's last row, from a forward of its own.
 */
async function plainBlockDecode(model: Model, prompt: number[], maxTokens: number, o: { modelBlock: number; decodeBlock: number; shift: number; tau: number; lead?: boolean }): Promise<number[]> {
  const V = model.args.vocabSize;
  const mask = model.special.mask!;
  // the last model block is whole: masks past max_tokens to its end, seen and never decoded
  const end = prompt.length + maxTokens;
  const x = [...prompt, ...Array(Math.ceil(end / o.modelBlock) * o.modelBlock - prompt.length).fill(mask)];
  for (let s0 = prompt.length; s0 < end; ) {
    const e = Math.min(end, (Math.floor(s0 / o.decodeBlock) + 1) * o.decodeBlock);
    // the forward runs to the end of the model block (a sub-block sees its block's later masks)
    const w = Math.ceil(e / o.modelBlock) * o.modelBlock;
    if (o.lead && s0 % o.modelBlock === 0 && x[s0] === mask) {
      const pos = range(0, w);
      const vis = new Uint8Array(w * w).map((_, k) => (Math.floor((k % w) / o.modelBlock) <= Math.floor(Math.floor(k / w) / o.modelBlock) ? 1 : 0));
      const [r] = await model.forward([{ ids: Int32Array.from(x.slice(0, w)), positions: Int32Array.from(pos), visible: vis, queries: Int32Array.of(s0 - o.shift), wantLogits: true }]);
      let t = mask === 0 ? 1 : 0;
      for (let v = 0; v < V; v++) if (v !== mask && r.logits![v] > r.logits![t]) t = v;
      x[s0] = t;
    }
    while (x.slice(s0, e).includes(mask)) {
      const pos = range(0, w);
      const vis = new Uint8Array(w * w).map((_, k) => (Math.floor((k % w) / o.modelBlock) <= Math.floor(Math.floor(k / w) / o.modelBlock) ? 1 : 0));
      const [r] = await model.forward([{ ids: Int32Array.from(x.slice(0, w)), positions: Int32Array.from(pos), visible: vis, queries: Int32Array.from(range(s0 - o.shift, e - o.shift)), wantLogits: true }]);
      const c: { p: number; t: number; conf: number }[] = [];
      for (let p = s0; p < e; p++) {
        if (x[p] !== mask) continue;
        const row = r.logits!.subarray((p - s0) * V, (p - s0 + 1) * V);
        // (the mask token is never an answer token; the confidence is over the whole row)
        let t = mask === 0 ? 1 : 0;
        for (let v = 0; v < V; v++) if (v !== mask && row[v] > row[t]) t = v;
        const mx = Math.max(...row);
        const z = row.reduce((a, l) => a + Math.exp(l - mx), 0);
        c.push({ p, t, conf: Math.exp(row[t] - mx) / z });
      }
      const high = c.filter((q) => q.conf > o.tau);
      for (const q of high.length ? high : [c.reduce((a, q) => (q.conf > a.conf ? q : a))]) x[q.p] = q.t;
    }
    s0 = e;
  }
  return x.slice(prompt.length, end);
}

/** Threshold decoding of a block model in blocks of 4 (tau 0.3, 10 tokens) equals the plain block
 * loop for two prompts (one ending mid-block), in each cache mode. */
async function assertDecodesAsPlainBlocks(model: Model, caches: readonly ('none' | 'prefix' | 'dual')[]): Promise<void> {
  for (const prompt of [[5, 9, 11, 20, 33, 7], [5, 9, 11, 20]]) {
    const want = await plainBlockDecode(model, prompt, 10, { modelBlock: 4, decodeBlock: 4, shift: 0, tau: 0.3 });
    for (const cache of caches) {
      const r = await generate(model, prompt, { maxTokens: 10, policy: 'threshold', threshold: 0.3, cache, stopTokens: [] });
      assert.deepEqual(r.tokens, want, `${model.args.arch}, prompt of ${prompt.length}, cache ${cache}`);
    }
  }
}

test('SDAR: block by block from position 0 (the first block finishes the prompt\'s), equal to a plain SDAR loop, with and without caches', async () => {
  const { model } = await fixtureModel({ arch: 'sdar', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.5 });
  try {
    assert.equal(model.args.attention, 'block_causal');
    assert.equal(model.args.blockSize, 4);
    assert.equal(model.args.shiftedLogits, false);
    const B = 4;
    const V = model.args.vocabSize;
    const mask = model.special.mask!;
    const tau = 0.3;
    const plain = (prompt: number[], maxTokens: number) => plainBlockDecode(model, prompt, maxTokens, { modelBlock: B, decodeBlock: B, shift: 0, tau });
    for (const prompt of [[5, 9, 11, 20, 33, 7], [5, 9, 11, 20]]) {
      const want = await plain(prompt, 10);
      for (const cache of ['none', 'prefix', 'dual'] as const) {
        const r = await generate(model, prompt, { maxTokens: 10, policy: 'threshold', threshold: tau, cache, stopTokens: [] });
        assert.deepEqual(r.tokens, want, `prompt of ${prompt.length}, cache ${cache}`);
      }
    }
    // block_length: whole multiples of the model's block only
    assert.throws(() => new Generation(model, [1, 2, 3], { blockLength: 6 }), (e: unknown) => e instanceof OptionError && e.param === 'block_length');
    // a first block that the prompt's tail shares keeps the full block's schedule as far as its
    // masks go: blocks of 8 in 2 steps are [4, 4]; 5 masks after a 3-token prompt: [4, 1]
    const first = await generate(model, [5, 9, 11], { maxTokens: 5, blockLength: 8, steps: 2, policy: 'low_confidence', cache: 'none', stopTokens: [] });
    assert.equal(first.stats.forwards, 2);
    // a block-causal model never sees what follows: no fill in the middle
    assert.throws(() => new Generation(model, [1, 2, 3], { suffix: [4, 5] }), (e: unknown) => e instanceof OptionError && e.param === 'suffix');
  } finally {
    await model.close();
  }
});

test('SDAR-MoE: a Qwen3-MoE block-diffusion model decodes block by block from position 0 as the plain loop does, with and without caches', async () => {
  const { model } = await fixtureModel({ arch: 'sdar_moe', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.5, experts: 6, expertsPerToken: 2, expertSize: 16, moeLayers: [0, 1] });
  try {
    assert.deepEqual([model.args.attention, model.args.blockSize, model.args.shiftedLogits, model.args.moe!.layers], ['block_causal', 4, false, [false, true]]);
    await assertDecodesAsPlainBlocks(model, ['none', 'prefix', 'dual']);
  } finally {
    await model.close();
  }
});

test('LLaDA2.0: a mixture block-diffusion model decodes block by block from position 0 as the plain loop does, with and without caches', async () => {
  const { model } = await fixtureModel({ arch: 'llada2', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.5, blockSize: 4, experts: 8, expertsPerToken: 2, expertSize: 16, groups: 4, groupsKept: 2 });
  try {
    assert.equal(model.args.attention, 'block_causal');
    assert.equal(model.args.blockSize, 4);
    assert.equal(model.args.shiftedLogits, false);
    await assertDecodesAsPlainBlocks(model, ['none', 'prefix', 'dual']);
  } finally {
    await model.close();
  }
});

/**
 * LLaDA2.1's draft-and-edit loop, written out from its generate(): per block, each forward scores
 * the block; masks above tau are committed (else the most confident one), and from the same
 * forward every committed answer token of the block whose best candidate differs and is above
 * editTau is replaced; a block ends after a forward that began without masks and edited nothing,
 * or when such mask-free forwards would exceed maxPost. Block-causal attention over blocks of
 * `block` from position 0 (the model's own blocks), or `full`: a bidirectional model's whole
 * canvas, blocks from the prompt's end, logits read one row early when shifted. No cache; the
 * mask token is never an answer, as everywhere in quench.
 */
async function plainEditDecode(model: Model, prompt: number[], maxTokens: number, o: { block: number; tau: number; editTau: number; maxPost: number; full?: boolean }) {
  const V = model.args.vocabSize;
  const mask = model.special.mask!;
  const shift = model.args.shiftedLogits ? 1 : 0;
  const B = o.block;
  const end = prompt.length + maxTokens;
  const x = [...prompt, ...Array((o.full ? end : Math.ceil(end / B) * B) - prompt.length).fill(mask)];
  let edits = 0;
  let forwards = 0;
  for (let s0 = prompt.length; s0 < end; ) {
    const e = Math.min(end, o.full ? s0 + B : (Math.floor(s0 / B) + 1) * B);
    const w = o.full ? x.length : Math.ceil(e / B) * B;
    let post = 0;
    for (;;) {
      const masked = x.slice(s0, e).includes(mask);
      if (!masked) post++;
      if (post > o.maxPost) break;
      const vis = new Uint8Array(w * w).map((_, k) => (o.full || Math.floor((k % w) / B) <= Math.floor(Math.floor(k / w) / B) ? 1 : 0));
      const [r] = await model.forward([{ ids: Int32Array.from(x.slice(0, w)), positions: Int32Array.from(range(0, w)), visible: vis, queries: Int32Array.from(range(s0 - shift, e - shift)), wantLogits: true }]);
      forwards++;
      const best = range(s0, e).map((p) => {
        const row = r.logits!.subarray((p - s0) * V, (p - s0 + 1) * V);
        let t = mask === 0 ? 1 : 0;
        for (let v = 0; v < V; v++) if (v !== mask && row[v] > row[t]) t = v;
        const mx = Math.max(...row);
        const z = row.reduce((a, l) => a + Math.exp(l - mx), 0);
        return { p, t, conf: Math.exp(row[t] - mx) / z };
      });
      const open = best.filter((c) => x[c.p] === mask);
      const high = open.filter((c) => c.conf > o.tau);
      const commits = open.length === 0 ? [] : high.length ? high : [open.reduce((a, c) => (c.conf > a.conf ? c : a))];
      const changes = best.filter((c) => x[c.p] !== mask && c.t !== x[c.p] && c.conf > o.editTau);
      for (const c of [...commits, ...changes]) x[c.p] = c.t;
      edits += changes.length;
      if (!masked && changes.length === 0) break;
    }
    s0 = e;
  }
  return { tokens: x.slice(prompt.length, end), edits, forwards };
}

test('token editing (editing_threshold, LLaDA2.1\'s draft-and-edit) on a block model equals its plain loop, with and without caches; max_post_steps bounds it; bad combinations are refused', async () => {
  const { model } = await fixtureModel({ arch: 'llada2', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.5, blockSize: 4, experts: 8, expertsPerToken: 2, expertSize: 16, groups: 2, groupsKept: 1 });
  try {
    let edited = 0;
    for (const [tau, editTau, maxPost] of [[0.3, 0, 16], [0.5, 0.2, 16], [0.3, 0, 1], [0.3, 0, 0]] as const) {
      for (const prompt of [[5, 9, 11, 20, 33, 7], [5, 9, 11, 20]]) {
        const want = await plainEditDecode(model, prompt, 12, { block: 4, tau, editTau, maxPost });
        edited += want.edits;
        for (const cache of ['none', 'prefix', 'dual'] as const) {
          const r = await generate(model, prompt, { maxTokens: 12, policy: 'threshold', threshold: tau, editingThreshold: editTau, maxPostSteps: maxPost, cache, stopTokens: [] });
          const label = `tau ${tau} edit ${editTau} post ${maxPost}, prompt of ${prompt.length}, cache ${cache}`;
          assert.deepEqual(r.tokens, want.tokens, label);
          assert.equal(r.stats.edited, want.edits, label);
          assert.equal(r.stats.forwards, want.forwards, label);
        }
      }
    }
    assert.ok(edited > 0, 'the fixture edits (or the comparison could not tell)');
    // streaming: a token in the final (streamable) prefix is never edited afterwards
    const seen: number[] = [];
    let edits = 0;
    const r = await generate(model, [5, 9, 11, 20, 33, 7], {
      maxTokens: 12, policy: 'threshold', threshold: 0.3, editingThreshold: 0, stopTokens: [],
      onStep: (ev) => {
        for (let i = 0; i < seen.length; i++) assert.equal(ev.draft[i], seen[i], `final position ${i} changed`);
        for (let i = seen.length; i < ev.finalized; i++) seen.push(ev.draft[i]);
        edits = ev.stats.edited;
      },
    });
    assert.ok(edits > 0);
    assert.deepEqual(seen, r.tokens);
    // editing off: the plain threshold loop
    const off = await generate(model, [5, 9, 11, 20], { maxTokens: 12, policy: 'threshold', threshold: 0.3, stopTokens: [] });
    assert.deepEqual(off.tokens, await plainBlockDecode(model, [5, 9, 11, 20], 12, { modelBlock: 4, decodeBlock: 4, shift: 0, tau: 0.3 }));
    assert.equal(off.stats.edited, 0);
    const refused = (o: GenerateOptions, param: string) => assert.throws(() => new Generation(model, [1, 2, 3], o), (e: unknown) => e instanceof OptionError && e.param === param, param);
    refused({ editingThreshold: 1.5 }, 'editing_threshold');
    refused({ maxPostSteps: 3 }, 'max_post_steps');
    refused({ editingThreshold: 0.5, maxPostSteps: -1 }, 'max_post_steps');
    const { model: ar } = await llama;
    assert.throws(() => new Generation(ar, [1, 2, 3], { editingThreshold: 0.5 }), (e: unknown) => e instanceof OptionError && e.param === 'editing_threshold');
    const { model: bidir } = await llada;
    assert.throws(() => new Generation(bidir, [1, 2, 3], { editingThreshold: 0.5, policy: 'wino' }), (e: unknown) => e instanceof OptionError && e.param === 'policy');
    assert.throws(() => new Generation(bidir, [1, 2, 3], { editingThreshold: 0.5, cfgScale: 1 }), (e: unknown) => e instanceof OptionError && e.param === 'cfg_scale');
  } finally {
    await model.close();
  }
});

test('token editing on bidirectional models (LLaDA, Dream with shifted logits) equals the plain loop over the whole canvas', async () => {
  for (const arch of ['llada', 'dream'] as const) {
    const { model } = arch === 'llada' ? await llada : await dream;
    let total = 0;
    for (const [tau, editTau, maxPost] of [[0.3, 0, 16], [0.5, 0.2, 3], [0.3, 0, 0]] as const) {
      const prompt = [5, 9, 11, 20, 33, 7];
      const want = await plainEditDecode(model, prompt, 12, { block: 4, tau, editTau, maxPost, full: true });
      total += want.edits;
      const r = await generate(model, prompt, { maxTokens: 12, blockLength: 4, steps: 12, canvas: 'fixed', policy: 'threshold', threshold: tau, editingThreshold: editTau, maxPostSteps: maxPost, cache: 'none', stopTokens: [] });
      const label = `${arch}: tau ${tau} edit ${editTau} post ${maxPost}`;
      assert.deepEqual(r.tokens, want.tokens, label);
      assert.equal(r.stats.edited, want.edits, label);
      assert.equal(r.stats.forwards, want.forwards, label);
    }
    assert.ok(total > 0, `${arch} edits`);
  }
});

test('token editing: an end token edited into a block ends the output there, one edited out does not; model defaults give way', async () => {
  const V = 20;
  const row = (tok: number, s = 8) => Float32Array.from({ length: V }, (_, v) => (v === tok ? s : 0));
  const tokAt = (r: ForwardRequest, pos: number) => r.ids[Array.from(r.positions).indexOf(pos)] ?? -1;
  // position 5 of the answer: drafted as a word and edited to the end token ('in'), or drafted
  // as the end token and edited to a word ('out'); the canvas ends in end tokens from 12 on
  for (const scenario of ['in', 'out'] as const) {
    const m = scriptedModel(V, (pos, r) => {
      const t = tokAt(r, pos);
      const i = pos - 3;
      if (i >= 12) return row(MOCK_EOS, 12);
      const drafted = t !== MOCK_MASK && t !== -1;
      if (i === 5) return scenario === 'in' ? (drafted ? row(MOCK_EOS, 9) : row(3 + (pos % 5))) : drafted ? row(7, 9) : row(MOCK_EOS, 9);
      return row(3 + (pos % 5));
    });
    const r = await generate(m, [5, 6, 7], { maxTokens: 64, blockLength: 4, threshold: 0.9, editingThreshold: 0.5 });
    assert.equal(r.finishReason, 'stop', scenario);
    assert.equal(r.tokens.length, scenario === 'in' ? 5 : 12, `${scenario}: ${r.tokens}`);
    assert.ok(!r.tokens.includes(MOCK_EOS), scenario);
  }
  // a model whose defaults turn editing on: JSON mode, wino and guidance requests still run,
  // null turns it off through the server's fields; a model's wino gives way to a request's editing
  const { model } = await llada;
  const saved = model.defaults;
  try {
    model.defaults = { editingThreshold: 0.5 };
    const { jsonObjectConstraint } = await import('../src/decode/json-grammar.ts');
    assert.equal(new Generation(model, [5, 6], { constraint: jsonObjectConstraint(model.codec.vocabBytes(model.args.vocabSize)) }).opts.editingThreshold, null);
    assert.equal(new Generation(model, [5, 6], { policy: 'wino' }).opts.editingThreshold, null);
    assert.equal(new Generation(model, [5, 6], {}).opts.editingThreshold, 0.5);
    const { generationOptions } = await import('../src/server/fields.ts');
    assert.equal(new Generation(model, [5, 6], generationOptions({ editing_threshold: null }, {})).opts.editingThreshold, null);
    model.defaults = { policy: 'wino' };
    const g = new Generation(model, [5, 6], { editingThreshold: 0.5 });
    assert.equal(g.opts.policy, 'threshold');
    assert.equal(g.opts.editingThreshold, 0.5);
    model.defaults = { maxPostSteps: -3 };
    assert.throws(() => checkModelDefaults(model), /max_post_steps/);
  } finally {
    model.defaults = saved;
  }
});

test('dllm A2D models (a2d-qwen3): bidirectional, unshifted, the tokenizer\'s <|mask|>, decoded as the plain LLaDA loop; with a block size, the bd3lm form as the plain block loop', async () => {
  const { model, dir } = await fixtureModel({ arch: 'qwen3', a2d: true, hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, headDim: 32 });
  try {
    assert.equal(model.args.arch, 'qwen3');
    assert.equal(model.args.attention, 'bidirectional');
    assert.equal(model.args.shiftedLogits, false);
    assert.equal(model.args.maskTokenId, null);
    assert.equal(model.special.mask, model.codec.encode('<|mask|>')[0], 'the mask token comes from the tokenizer');
    const prompt = [5, 9, 13, 7, 21];
    for (const [gen, block, steps] of [[8, 8, 8], [12, 4, 6]]) {
      const got = await generate(model, prompt, { maxTokens: gen, blockLength: block, steps, policy: 'low_confidence', cache: 'none', stopTokens: [] });
      assert.deepEqual(got.tokens, await referenceLlada(model, prompt, gen, block, steps), `gen ${gen} block ${block} steps ${steps}`);
    }
  } finally {
    await model.close();
  }
  const bd3lm = await loadModel(dir, { cacheDir: CACHE, threads: 2, blockSize: 4 });
  try {
    assert.equal(bd3lm.args.attention, 'block_causal');
    await assertDecodesAsPlainBlocks(bd3lm, ['none', 'prefix']);
  } finally {
    await bd3lm.close();
  }
  // a tokenizer_config.json without mask_token: the added <|mask|> is found by name
  const cfgPath = join(dir, 'tokenizer_config.json');
  const tc = JSON.parse(readFileSync(cfgPath, 'utf8'));
  const want = tc.mask_token;
  delete tc.mask_token;
  writeFileSync(cfgPath, JSON.stringify(tc));
  const bare = await loadModel(dir, { cacheDir: CACHE, threads: 2 });
  try {
    assert.equal(bare.special.mask, bare.codec.encode(want)[0]);
  } finally {
    await bare.close();
  }
});

test('MDLM and BD3-LM (DiT): MDLM decodes as the plain LLaDA loop; BD3-LM block by block from position 0 as the plain block loop, with and without caches', async () => {
  const { model: mdlm } = await fixtureModel({ arch: 'mdlm', hidden: 64, heads: 4, layers: 2, condDim: 16, std: 0.3 });
  try {
    const prompt = [0, 9, 13, 7, 21];
    // (trained on unpadded text: the canvas is fixed by default, max_tokens positions from the start)
    const byDefault = await generate(mdlm, prompt, { maxTokens: 24, policy: 'threshold', threshold: 0.99 });
    const fixed = await generate(mdlm, prompt, { maxTokens: 24, policy: 'threshold', threshold: 0.99, canvas: 'fixed' });
    assert.deepEqual([byDefault.tokens, byDefault.stats.forwards], [fixed.tokens, fixed.stats.forwards]);
    const limits = { maxPositions: 1024, vocabSize: 100, attention: 'bidirectional' as const, stopTokens: [1], causal: false, topK: 16 };
    assert.equal(resolveOptions({}, 3, { ...limits, unpadded: true }).canvas, 'fixed');
    assert.equal(resolveOptions({ canvas: 'adaptive' }, 3, { ...limits, unpadded: true }).canvas, 'adaptive');
    assert.equal(resolveOptions({}, 3, limits).canvas, 'adaptive');
    for (const [gen, block, steps] of [[8, 8, 8], [12, 4, 6]]) {
      const got = await generate(mdlm, prompt, { maxTokens: gen, blockLength: block, steps, policy: 'low_confidence', cache: 'none', stopTokens: [] });
      const want = await referenceLlada(mdlm, prompt, gen, block, steps);
      assert.deepEqual(got.tokens, want, `gen ${gen} block ${block} steps ${steps}`);
      assert.ok(!got.tokens.includes(mdlm.special.mask!), 'the mask is never an answer');
    }
  } finally {
    await mdlm.close();
  }
  const { model: bd3lm } = await fixtureModel({ arch: 'bd3lm', hidden: 64, heads: 4, layers: 2, condDim: 16, std: 0.5, blockSize: 4 });
  try {
    assert.equal(bd3lm.args.attention, 'block_causal');
    await assertDecodesAsPlainBlocks(bd3lm, ['none', 'prefix', 'dual']);
  } finally {
    await bd3lm.close();
  }
});

test('--diffusion: a causal layout\'s checkpoint declared a diffusion model (Open-dCoder) decodes shifted as its Dream-config twin does, unshifted as the plain LLaDA loop; plain loads stay causal or refused', async () => {
  const root = await tempDir('quench-declared-');
  const dir = join(root, 'qwen2');
  const twin = join(root, 'dream');
  try {
    // a Qwen2 checkpoint whose tokenizer declares an added <|mask|> (as Open-dCoder's declares <M>)
    await writeFixture(dir, { arch: 'qwen2', a2d: true, hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3 });
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'] }));
    cpSync(dir, twin, { recursive: true });
    const plain = await loadModel(dir, { cacheDir: CACHE, threads: 2 });
    const maskId = plain.codec.encode('<|mask|>')[0];
    assert.equal(plain.args.attention, 'causal');
    assert.equal(plain.special.mask, null);
    await plain.close();
    // the same weights under the Dream config (bidirectional, shifted, tested against its reference)
    writeFileSync(join(twin, 'config.json'), JSON.stringify({ ...cfg, model_type: 'Dream', architectures: ['DreamModel'], mask_token_id: maskId }));
    const dream = await loadModel(twin, { cacheDir: CACHE, threads: 2 });
    const shifted = await loadModel(dir, { cacheDir: CACHE, threads: 2, diffusion: 'shifted' });
    try {
      assert.equal(shifted.args.attention, 'bidirectional');
      assert.equal(shifted.args.shiftedLogits, true);
      assert.equal(shifted.special.mask, maskId);
      const prompt = [5, 9, 13, 7, 21];
      for (const o of [{ policy: 'threshold', threshold: 0.5, cache: 'prefix' }, { policy: 'low_confidence', steps: 12, blockLength: 4, cache: 'none' }] as GenerateOptions[]) {
        const a = await generate(shifted, prompt, { maxTokens: 12, stopTokens: [], ...o });
        const b = await generate(dream, prompt, { maxTokens: 12, stopTokens: [], ...o });
        assert.deepEqual([a.tokens, a.stats.forwards], [b.tokens, b.stats.forwards], JSON.stringify(o));
      }
    } finally {
      await shifted.close();
      await dream.close();
    }
    const unshifted = await loadModel(dir, { cacheDir: CACHE, threads: 2, diffusion: 'unshifted' });
    try {
      assert.equal(unshifted.args.shiftedLogits, false);
      const prompt = [5, 9, 13, 7, 21];
      const got = await generate(unshifted, prompt, { maxTokens: 12, blockLength: 4, steps: 6, policy: 'low_confidence', cache: 'none', stopTokens: [] });
      assert.deepEqual(got.tokens, await referenceLlada(unshifted, prompt, 12, 4, 6));
    } finally {
      await unshifted.close();
    }
    // a graph converted for the causal model is not the diffusion model's (RoPE tables for guided windows)
    assert.notEqual((await convertModel(dir, { cacheDir: CACHE })).target, (await convertModel(dir, { cacheDir: CACHE, diffusion: 'shifted' })).target);
    // a config that says is_causal false: refused plainly, with the way out named; loaded when declared
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], is_causal: false }));
    await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1 }), (e: unknown) => e instanceof FormatError && /--diffusion shifted/.test(e.message));
    await (await loadModel(dir, { cacheDir: CACHE, threads: 1, diffusion: 'shifted' })).close();
    // no mask anywhere: a clear error at load; generation_config.json's mask_token_id (Open-dLLM's sampler config) is one
    const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    for (const t of tj.added_tokens) if (t.content === '<|mask|>') t.content = '<|hole|>';
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tj));
    const tc = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    delete tc.mask_token;
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tc));
    await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1, diffusion: 'shifted' }), (e: unknown) => e instanceof FormatError && /names no mask token/.test(e.message));
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ mask_token_id: maskId }));
    const fromGen = await loadModel(dir, { cacheDir: CACHE, threads: 1, diffusion: 'shifted' });
    assert.equal(fromGen.special.mask, maskId);
    await fromGen.close();
    // a model that is a diffusion model by its config refuses the declaration
    await assert.rejects(loadModel(twin, { cacheDir: CACHE, threads: 1, diffusion: 'shifted' }), (e: unknown) => e instanceof OptionError && e.param === 'diffusion');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('Fast-dLLM v2: sub-blocks inside blocks aligned to position 0, logits shifted within the block, a block\'s first position read from the previous block\'s last row; equal to a plain loop, with and without caches', async () => {
  const { model } = await fixtureModel({ arch: 'fast_dllm_v2', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.5, blockSize: 8 });
  try {
    assert.equal(model.args.attention, 'block_causal');
    assert.equal(model.args.blockSize, 8);
    assert.equal(model.args.shiftedLogits, true);
    const MB = 8;
    const SB = 4; // sub-blocks (the released model: 32 and 8)
    const V = model.args.vocabSize;
    const mask = model.special.mask!;
    const tau = 0.3;
    const plain = (prompt: number[], maxTokens: number, lead = true) => plainBlockDecode(model, prompt, maxTokens, { modelBlock: MB, decodeBlock: SB, shift: 1, tau, lead });
    // (its decoder commits a block's first token alone, from the previous block's last row: the
    // test tells that apart from the threshold rule on some of these)
    let differs = 0;
    for (const prompt of [[5, 9, 11, 20, 33, 7, 8, 9, 12, 14, 3], [5, 9, 11, 20, 33, 7, 8, 9], [5, 9, 11, 20, 33, 7, 8, 9, 12, 14, 3, 30, 31, 32, 40, 41], [7, 3, 9]]) {
      const want = await plain(prompt, 13);
      if (JSON.stringify(want) !== JSON.stringify(await plain(prompt, 13, false))) differs++;
      for (const cache of ['none', 'prefix', 'dual'] as const) {
        const r = await generate(model, prompt, { maxTokens: 13, blockLength: SB, policy: 'threshold', threshold: tau, cache, stopTokens: [] });
        assert.deepEqual(r.tokens, want, `prompt of ${prompt.length}, cache ${cache}`);
      }
    }
    assert.ok(differs > 0, 'the lead rule changes some output here');
    // an end token as a block's first token ends the output with that forward
    const eot = model.special.stop[0];
    const ended = await generate(model, [5, 9, 11, 20, 33, 7, 8, 9], { maxTokens: 13, blockLength: SB, policy: 'threshold', threshold: tau, cache: 'prefix', logitBias: { [eot]: 30 } });
    assert.deepEqual([ended.tokens, ended.finishReason, ended.stats.forwards], [[], 'stop', 1]);
    // a decoding block longer than the model's would start model blocks mid-block: no lead there
    assert.throws(() => new Generation(model, [1, 2, 3], { blockLength: 2 * MB, leadToken: true }), (e: unknown) => e instanceof OptionError && e.param === 'lead_token');
    assert.equal(new Generation(model, [1, 2, 3], { blockLength: 2 * MB }).opts.leadToken, false);
    // a model's lead_token default gives way to a request that decodes with other attention
    assert.equal(withModelDefaults({ attention: 'bidirectional' }, { leadToken: true }).leadToken, undefined);
    assert.equal(withModelDefaults({ blockLength: 2 * MB }, { leadToken: true }).leadToken, undefined);
    assert.equal(withModelDefaults({ blockLength: MB }, { leadToken: false }).leadToken, false);
    assert.equal(withModelDefaults({}, { leadToken: true }).leadToken, true);
    // lead_token false: the block's first position decoded with the others, by the threshold rule
    for (const prompt of [[5, 9, 11, 20, 33, 7, 8, 9], [7, 3, 9]])
      assert.deepEqual((await generate(model, prompt, { maxTokens: 13, blockLength: SB, policy: 'threshold', threshold: tau, cache: 'prefix', stopTokens: [], leadToken: false })).tokens, await plain(prompt, 13, false));
    // only a block model with shifted logits reads a block's first position from a finished row
    const sdar = (await fixtureModel({ arch: 'sdar', hidden: 64, heads: 4, kvHeads: 2, layers: 2 })).model;
    for (const m of [sdar, (await llada).model]) assert.throws(() => new Generation(m, [1, 2, 3], { leadToken: true }), (e: unknown) => e instanceof OptionError && e.param === 'lead_token');
    assert.equal(new Generation(sdar, [1, 2, 3], {}).opts.leadToken, false);
    await sdar.close();
    // the default decoding block is the model's sub-block (8 of a 32-block; here the whole 8-block)
    assert.throws(() => new Generation(model, [1, 2, 3], { blockLength: 3 }), (e: unknown) => e instanceof OptionError && e.param === 'block_length');
  } finally {
    await model.close();
  }
});

test('the mask token is never an answer token: a model that prefers it gets its next choice, greedy or sampled', async () => {
  const m = scriptedModel(16, () => {
    const l = prefer(16, 1, 12); // the mock's mask id
    l[6] = 9;
    return l;
  });
  for (const o of [{ temperature: 0 }, { temperature: 1, seed: 3 }, { temperature: 1, topK: 3, seed: 4 }]) {
    const r = await generate(m, [0, 0], { maxTokens: 6, policy: 'threshold', threshold: 0.9, cache: 'none', stopTokens: [], ...o });
    assert.ok(r.tokens.length === 6 && r.tokens.every((t) => t !== 1), JSON.stringify(r.tokens));
    if (o.temperature === 0) assert.deepEqual(r.tokens, Array(6).fill(6));
  }
});

test('block_size at load: an SDAR checkpoint decoded with blocks of 2 equals the plain loop with blocks of 2; other models refuse it', async () => {
  const { model, dir } = await fixtureModel({ arch: 'sdar', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.5 }, { blockSize: 2 });
  try {
    assert.equal(model.args.blockSize, 2);
    let differs = 0;
    for (const prompt of [[5, 9, 11, 20, 33], [5, 9, 11, 20]]) {
      const want = await plainBlockDecode(model, prompt, 7, { modelBlock: 2, decodeBlock: 2, shift: 0, tau: 0.3 });
      // (the config's blocks of 4 would decode otherwise, or the test could not tell)
      if (JSON.stringify(await plainBlockDecode(model, prompt, 7, { modelBlock: 4, decodeBlock: 4, shift: 0, tau: 0.3 })) !== JSON.stringify(want)) differs++;
      for (const cache of ['none', 'prefix'] as const) assert.deepEqual((await generate(model, prompt, { maxTokens: 7, policy: 'threshold', threshold: 0.3, cache, stopTokens: [] })).tokens, want, cache);
    }
    assert.ok(differs > 0, 'blocks of 2 and of 4 decode differently here');
    const { loadModel } = await import('../src/models/registry.ts');
    await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1, blockSize: 0 }), (e: unknown) => e instanceof OptionError && e.param === 'block_size');
  } finally {
    await model.close();
  }
  const { loadModel } = await import('../src/models/registry.ts');
  const llada = await fixtureModel({ arch: 'llada', hidden: 32, heads: 2, layers: 1 });
  await llada.model.close();
  await assert.rejects(loadModel(llada.dir, { cacheDir: CACHE, threads: 1, blockSize: 4 }), (e: unknown) => e instanceof OptionError && e.param === 'block_size');
  // Fast-dLLM v2 decodes in sub-blocks: the largest divisor of an overridden block up to 8, so
  // requests without block_length still work
  const v2 = await fixtureModel({ arch: 'fast_dllm_v2', hidden: 32, heads: 2, layers: 1, blockSize: 8 }, { blockSize: 12 });
  try {
    assert.deepEqual([v2.model.args.blockSize, v2.model.args.subBlock], [12, 6]);
    assert.equal((await generate(v2.model, [5, 9, 11], { maxTokens: 10, stopTokens: [] })).tokens.length, 10);
  } finally {
    await v2.model.close();
  }
  // one candidate per position could be the mask token alone: a diffusion model needs two
  await assert.rejects(loadModel(llada.dir, { cacheDir: CACHE, threads: 1, topK: 1 }), (e: unknown) => e instanceof OptionError && e.param === 'topK');
});

test('separateTwins: neighbours committed in one step never share a token (stop tokens exempt); the most confident are kept', () => {
  const c = (token: number, prob: number) => ({ token, prob, logprob: Math.log(prob), margin: 0, entropy: 0 });
  // positions 10..15: tokens 7 7 7 8 2 2 (2 a stop token), confidence varies
  const choices = [c(7, 0.96), c(7, 0.99), c(7, 0.97), c(8, 0.98), c(2, 0.99), c(2, 0.99)];
  const kept = separateTwins([0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15], choices, new Set([2]));
  // 11 (the most confident 7) stays, its neighbours 10 and 12 wait; 8 and the stop tokens stay
  assert.deepEqual(kept, [1, 3, 4, 5]);
  // independent check: no two kept neighbours share a non-stop token, and nothing kept could be added back
  const pos = [10, 11, 12, 13, 14, 15];
  const r = mulberry32(3);
  for (let trial = 0; trial < 200; trial++) {
    const ch = pos.map(() => c(Math.floor(r() * 3), 0.5 + r() / 2));
    const picks = pos.map((_, i) => i).filter(() => r() < 0.8);
    const k = separateTwins(picks, pos, ch, new Set([0]));
    const twin = (i: number, j: number) => Math.abs(pos[i] - pos[j]) === 1 && ch[i].token === ch[j].token && ch[i].token !== 0;
    for (const i of k) for (const j of k) assert.ok(!twin(i, j));
    for (const i of picks) if (!k.includes(i)) assert.ok(k.some((j) => twin(i, j) && ch[j].prob >= ch[i].prob), 'a dropped pick has a kept, at least as confident twin');
  }
});

test('holdEnds: an end is committed only after the text before it; otherwise the first open position goes first', async () => {
  const c = (token: number, prob: number) => ({ token, prob, logprob: Math.log(prob), margin: 0, entropy: 0 });
  const stops = new Set([2]);
  // targets t0..t4; picks: text at 0 and 1, ends at 2 and 4
  const ch = [c(5, 0.99), c(6, 0.99), c(2, 0.99), c(7, 0.5), c(2, 0.99)];
  assert.deepEqual(holdEnds([0, 1, 2, 4], ch, stops), [0, 1, 2]);
  assert.deepEqual(holdEnds([2, 4], ch, stops), [0], 'all held: the first target instead');
  assert.deepEqual(holdEnds([1, 4], ch, stops), [1]);
  assert.deepEqual(holdEnds([0], [c(2, 0.99)], stops), [0], 'an end at the first open position stays');
  // in a generation: the model thinks the answer ends at p2 while p0 and p1 are still masks, and
  // writes 9 there once they are text; its true end is p3 (P = the prompt's length)
  const P = 2;
  const m = scriptedModel(16, (pos, req) => {
    const at = (q: number) => req.ids[Array.from(req.positions).indexOf(q)];
    if (pos === P) return prefer(16, 5, 3);
    if (pos === P + 1) return prefer(16, 6, 3);
    if (pos === P + 2) return at(P) === MOCK_MASK || at(P + 1) === MOCK_MASK ? prefer(16, MOCK_EOS, 12) : prefer(16, 9, 12);
    return prefer(16, MOCK_EOS, 12);
  });
  const o = { maxTokens: 8, blockLength: 8, policy: 'threshold', threshold: 0.9, cache: 'none', canvas: 'fixed' } as const;
  const cut = await generate(m, [0, 0], o);
  assert.deepEqual(cut.tokens, [5, 6], 'without: cut where the end was guessed early');
  const held = await generate(m, [0, 0], { ...o, holdEnds: true });
  assert.deepEqual(held.tokens, [5, 6, 9]);
});

test("early commit (Prophet): the bar is 1.5 g, g, g / 2 by thirds of the block; the mean gap, not the largest, decides", () => {
  assert.equal(earlyCommit([7.5, 7.5], 0, 5), true);
  assert.equal(earlyCommit([7.4, 7.5], 0, 5), false, 'under 1.5 g in the first third');
  assert.equal(earlyCommit([5, 5], 0.32, 5), false);
  assert.equal(earlyCommit([5, 5], 1 / 3, 5), true, 'g from a third on');
  assert.equal(earlyCommit([2.5, 2.5], 0.66, 5), false);
  assert.equal(earlyCommit([2.5, 2.5], 2 / 3, 5), true, 'g / 2 from two thirds on');
  assert.equal(earlyCommit([20, 0, 0, 0], 0, 5), false, 'one sure position does not carry the others');
  assert.equal(earlyCommit([Infinity, 9, 9], 0, 5), true);
  assert.equal(earlyCommit([], 0.9, 5), false);
  // the gap leaves the mask out; one candidate left: no rival at all
  assert.equal(topGap([4, 1, 7], [9, 8, 5], 1), 4);
  assert.equal(topGap([1, 4, 7], [9, 8, 5], 1), 3);
  // (one candidate besides the mask: the last listed logit bounds every other token)
  assert.equal(topGap([4, 1], [9, 8], 1), 1);
  assert.equal(topGap([1, 4], [9, 8], 1), 0);
});

test('early commit in a generation: the rest of the block in one step once the gap clears the bar of its phase', async () => {
  // every position prefers its own token by a logit gap of 4 (the other logits 0)
  const m = scriptedModel(16, (pos) => prefer(16, 3 + (pos % 10), 4));
  const o: GenerateOptions = { maxTokens: 8, blockLength: 8, policy: 'low_confidence', steps: 8, cache: 'none', canvas: 'fixed', stopTokens: [] };
  const base = await generate(m, [0, 0], o);
  assert.equal(base.stats.forwards, 8, 'one token per step without it');
  // g 2: bar 3 from the start; g 3: bar 4.5 until a third (3 of 8) is committed, then 3;
  // g 5: 7.5, 5, then 2.5 once 6 of 8 are; g 8 reaches its last bar, 4, exactly; g 9 never (4 < 4.5)
  for (const [g, forwards] of [[2, 1], [3, 4], [5, 7], [8, 7], [9, 8]] as const) {
    const r = await generate(m, [0, 0], { ...o, earlyCommit: g });
    assert.equal(r.stats.forwards, forwards, `g ${g}`);
    assert.deepEqual(r.tokens, base.tokens, `g ${g}: the same answer`);
  }
  // refused where it cannot apply; null is off (a model's default turned off)
  for (const bad of [0, -1, 1001]) assert.throws(() => new Generation(m, [0, 0], { ...o, earlyCommit: bad }), (e: unknown) => e instanceof OptionError && e.param === 'early_commit');
  assert.throws(() => new Generation(m, [0, 0], { ...o, policy: 'wino', steps: undefined, earlyCommit: 5 }), (e: unknown) => e instanceof OptionError && e.param === 'early_commit');
  assert.equal((await generate(m, [0, 0], { ...o, earlyCommit: null })).stats.forwards, 8);
  // a model's default gives way to a request's wino
  assert.equal(withModelDefaults({ policy: 'wino' }, { earlyCommit: 5 }).earlyCommit, undefined);
  assert.equal(withModelDefaults({}, { earlyCommit: 5 }).earlyCommit, 5);
  assert.equal(withModelDefaults({ constraint: {} as never }, { earlyCommit: 5 }).earlyCommit, undefined, 'nor to JSON mode');
  // the answer's gaps decide, not its ends': a sure end padding the tail (gap 20) beside unsure
  // text (gap 1) would average 10.5 and clear even the first bar, 7.5
  const padded = scriptedModel(16, (pos) => (pos >= 6 ? prefer(16, MOCK_EOS, 20) : prefer(16, 3 + pos, 1)));
  const po: GenerateOptions = { ...o, stopTokens: [MOCK_EOS] };
  const plain = await generate(padded, [0, 0], po);
  const early = await generate(padded, [0, 0], { ...po, earlyCommit: 5 });
  assert.equal(plain.stats.forwards, 8);
  assert.equal(early.stats.forwards, 8, 'text of gap 1 never clears a bar');
  assert.deepEqual(early.tokens, plain.tokens);
});

test('early commit on a block model: a bar any gap clears commits each block at its first forward, as threshold 0 does', async () => {
  const { model } = await fixtureModel({ arch: 'sdar', hidden: 32, heads: 2, layers: 1, blockSize: 4 });
  try {
    const prompt = [3, 4, 5, 6, 7];
    const o: GenerateOptions = { maxTokens: 12, policy: 'low_confidence', steps: 4, cache: 'prefix', stopTokens: [], modelDefaults: false };
    const slow = await generate(model, prompt, o);
    const early = await generate(model, prompt, { ...o, earlyCommit: 1e-6 });
    const all = await generate(model, prompt, { ...o, policy: 'threshold', threshold: 0, steps: undefined });
    assert.deepEqual(early.tokens, all.tokens);
    assert.equal(early.stats.forwards, all.stats.forwards);
    assert.ok(early.stats.forwards < slow.stats.forwards, `${early.stats.forwards} vs ${slow.stats.forwards} forwards`);
  } finally {
    await model.close();
  }
});

test('inOrder: a step commits a left-to-right run from the first open position', async () => {
  assert.deepEqual(inOrder([0, 1, 3]), [0, 1]);
  assert.deepEqual(inOrder([2, 3]), [0], 'nothing at the first open position: that one alone');
  assert.deepEqual(inOrder([1, 0, 2]), [0, 1, 2]);
  assert.deepEqual(inOrder([]), [], 'a step whose schedule commits nothing stays empty');
  assert.deepEqual(holdEnds([], [], new Set()), []);
  // a fixed count per step is a schedule these would break: refused by name
  for (const [k, param] of [['inOrder', 'in_order'], ['holdEnds', 'hold_ends']] as const)
    for (const policy of ['low_confidence', 'margin', 'random', 'entropy'] as const)
      assert.throws(() => new Generation(scriptedModel(16, () => prefer(16, 5)), [0, 0], { maxTokens: 8, policy, [k]: true }), (e: unknown) => e instanceof OptionError && e.param === param);
  // a model confident about the second half first: free order commits it at once, in order
  // commits position by position from the left, and the answer is the same
  const P = 2;
  const m = scriptedModel(16, (pos) => (pos < P + 2 ? prefer(16, 5 + pos - P, 2) : pos < P + 4 ? prefer(16, 9, 12) : prefer(16, MOCK_EOS, 12)));
  const o = { maxTokens: 8, blockLength: 8, policy: 'threshold', threshold: 0.9, cache: 'none', canvas: 'fixed' } as const;
  const free = await generate(m, [0, 0], o);
  const ordered = await generate(m, [0, 0], { ...o, inOrder: true });
  assert.deepEqual(ordered.tokens, free.tokens);
  assert.deepEqual(free.tokens, [5, 6, 9, 9]);
  // free: step 1 commits 9 9 and the ends, then 5, then 6 (3 forwards); in order: 5, 6, then 9 9 and the end
  assert.equal(free.stats.forwards, 3);
  assert.equal(ordered.stats.forwards, 3);
  const firstStep: number[][] = [];
  await generate(m, [0, 0], { ...o, inOrder: true, onStep: (ev) => firstStep.push(ev.committed.map((c) => c.position)) });
  assert.deepEqual(firstStep[0], [0]);
});

test('threshold with separated twins: a confident run of one token is committed in halves, not at once; the output is the same', async () => {
  const m = scriptedModel(16, () => prefer(16, 5, 12));
  const off = await generate(m, [0, 0], { maxTokens: 8, blockLength: 8, policy: 'threshold', threshold: 0.9, cache: 'none', stopTokens: [] });
  const on = await generate(m, [0, 0], { maxTokens: 8, blockLength: 8, policy: 'threshold', threshold: 0.9, cache: 'none', stopTokens: [], separateTwins: true });
  assert.deepEqual(on.tokens, off.tokens);
  assert.equal(off.stats.forwards, 1);
  // 8 -> 4 kept (alternate positions), then the 4 gaps have committed neighbours on both sides: one step
  assert.equal(on.stats.forwards, 2);
});

test('threshold commits every position above tau and more than one per step on a confident model', async () => {
  const m = scriptedModel(16, (p) => prefer(16, 3 + (p % 5), 12));
  const r = await generate(m, [0, 0], { maxTokens: 8, blockLength: 8, policy: 'threshold', threshold: 0.9, cache: 'none', stopTokens: [] });
  assert.equal(r.stats.forwards, 1);
  assert.deepEqual(r.tokens, [5, 6, 7, 3, 4, 5, 6, 7]);
});

test('block-causal and causal models: prefix-cached decoding equals uncached, token for token', async () => {
  const { model: l } = await llada;
  for (const policy of ['low_confidence', 'threshold'] as const) {
    const opts = { maxTokens: 16, blockLength: 4, policy, attention: 'block_causal' as const, stopTokens: [], threshold: 0.2 };
    const a = await generate(l, [7, 8, 9], { ...opts, cache: 'none' });
    const b = await generate(l, [7, 8, 9], { ...opts, cache: 'prefix' });
    const c = await generate(l, [7, 8, 9], { ...opts, cache: 'dual' });
    assert.deepEqual(b.tokens, a.tokens, policy);
    assert.deepEqual(c.tokens, a.tokens, policy);
  }
  const { model: ar } = await llama;
  const a = await generate(ar, [7, 8, 9, 10], { maxTokens: 12, cache: 'none', stopTokens: [] });
  const b = await generate(ar, [7, 8, 9, 10], { maxTokens: 12, cache: 'prefix', stopTokens: [] });
  assert.deepEqual(b.tokens, a.tokens);
  assert.equal(b.stats.forwards, 12, 'one token per forward');
  // the cached path runs one row per step after the prompt
  assert.equal(b.tokens.length, 12);
});

test('prefix and dual caches on a bidirectional model run and agree with the uncached run at the first block', async () => {
  const { model } = await llada;
  const base = { maxTokens: 16, blockLength: 8, policy: 'low_confidence' as const, stopTokens: [] };
  const none = await generate(model, [4, 5, 6], { ...base, cache: 'none' });
  for (const cache of ['prefix', 'dual'] as const) {
    const r = await generate(model, [4, 5, 6], { ...base, cache });
    assert.equal(r.tokens.length, 16);
    // the first step of each block is a full forward, so the first commit matches
    assert.equal(r.tokens.filter((t, i) => t === none.tokens[i]).length > 0, true);
  }
});

test('Dream: shifted logits, and each alg commits floor(n * (1 - s/t)) per step', async () => {
  const { model } = await dream;
  for (const policy of ['dream_maskgit_plus', 'dream_topk_margin', 'dream_entropy'] as const) {
    const counts: number[] = [];
    const r = await generate(model, [3, 4, 5, 6], { maxTokens: 16, blockLength: 16, steps: 6, policy, cache: 'none', stopTokens: [], onStep: (e) => counts.push(e.committed.length) });
    let left = 16;
    const want = Array.from({ length: 6 }, (_, i) => {
      const k = dreamCount(left, i, 6, 1e-3);
      left -= k;
      return k;
    });
    assert.deepEqual(counts, want, policy);
    assert.equal(r.tokens.length, 16);
  }
  const o = await generate(model, [3, 4, 5, 6], { maxTokens: 16, blockLength: 16, steps: 4, policy: 'dream_origin', cache: 'none', stopTokens: [], seed: 3 });
  assert.equal(o.tokens.length, 16);
  assert.ok(!o.tokens.includes(model.special.mask!));
});

test('entropy_bounded: each step commits the largest lowest-entropy-first set whose entropy sum less its largest is within gamma (the EB-Sampler rule)', async () => {
  const { model } = await llada;
  for (const gamma of [0, 6, 12, 1e6]) {
    const gen = new Generation(model, [5, 6], { maxTokens: 8, blockLength: 8, policy: 'entropy_bounded', gamma, cache: 'none', stopTokens: [] });
    let masked = Array.from({ length: 8 }, (_, i) => i);
    let steps = 0;
    while (!gen.done) {
      const [res] = await model.forward([gen.plan()]);
      const ev = gen.accept(res);
      steps++;
      const ent = new Map(masked.map((pos, q) => [pos, res.entropy[q]]));
      const picked = ev.committed.map((c) => ent.get(c.position)!);
      const sum = picked.reduce((s2, x) => s2 + x, 0);
      assert.ok(sum - Math.max(...picked) <= gamma + 1e-9, `sum ${sum} less the largest ${Math.max(...picked)} within gamma ${gamma}`);
      const rest = masked.filter((pos) => !ev.committed.some((c) => c.position === pos)).map((pos) => ent.get(pos)!);
      assert.ok(rest.every((e) => e >= Math.max(...picked) - 1e-9), 'lowest entropies first');
      // the largest such set: the next lowest would break the bound (its own entropy is the new max)
      if (rest.length > 0) assert.ok(sum > gamma - 1e-9, `one more fits: ${sum} <= ${gamma}`);
      masked = masked.filter((pos) => !ev.committed.some((c) => c.position === pos));
    }
    if (gamma === 0) assert.equal(steps, 8);
    if (gamma === 1e6) assert.equal(steps, 1);
  }
});

test('fixed-step schedule: counts split evenly, first steps take the remainder', () => {
  assert.deepEqual(transferCounts(10, 4), [3, 3, 2, 2]);
  assert.deepEqual(transferCounts(3, 5), [1, 1, 1, 0, 0]);
});

/** Step several generations together, one batched forward per step, until all are done. */
async function stepTogether(model: Model, gens: Generation[]): Promise<void> {
  while (gens.some((g) => !g.done)) {
    const live = gens.filter((g) => !g.done);
    const res = await model.forward(live.map((g) => g.plan()));
    live.forEach((g, i) => g.accept(res[i]));
  }
}

test('same seed, same output; batch of 3 equals one at a time; different seeds differ', async () => {
  const { model } = await llada;
  const opts = { maxTokens: 16, blockLength: 8, policy: 'low_confidence' as const, temperature: 1, cache: 'prefix' as const, stopTokens: [] };
  const a = await generate(model, [5, 6, 7], { ...opts, seed: 11 });
  const b = await generate(model, [5, 6, 7], { ...opts, seed: 11 });
  assert.deepEqual(a.tokens, b.tokens);
  const others = await Promise.all([12, 13, 14].map((seed) => generate(model, [5, 6, 7], { ...opts, seed })));
  assert.ok(others.some((o) => o.tokens.join() !== a.tokens.join()), 'different seeds give different outputs');

  // batched: three generations with different prompts stepped together in one forward
  const prompts = [[5, 6, 7], [9, 10], [11, 12, 13, 14, 15]];
  const alone = await Promise.all(prompts.map((p, i) => generate(model, p, { ...opts, seed: 100 + i })));
  const gens = prompts.map((p, i) => new Generation(model, p, { ...opts, seed: 100 + i }));
  await stepTogether(model, gens);
  gens.forEach((g, i) => assert.deepEqual(g.result().tokens, alone[i].tokens, `sequence ${i}`));
});

for (const worker of [false, true])
test(`causal model batched with caches${worker ? ' (graph in a worker thread)' : ''}: equals each alone while the batch changes and caches grow`, async () => {
  // steady steps reuse the runner's packed batch buffers, a finished sequence changes the
  // batch (repack into the same memory), and 40 tokens outgrow the packed buffers' first
  // capacity (repack into larger ones); in a worker the buffers are the worker's
  const { model } = worker ? await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2, std: 0.3 }, { worker: true }) : await llama;
  const prompts = [[5, 6, 7], [9, 10], [11, 12, 13, 14, 15], [20]];
  const maxTokens = [40, 12, 30, 25];
  const opts = (i: number) => ({ maxTokens: maxTokens[i], temperature: 0, cache: 'prefix' as const, stopTokens: [] });
  const alone: Awaited<ReturnType<typeof generate>>[] = [];
  for (let i = 0; i < prompts.length; i++) alone.push(await generate(model, prompts[i], opts(i)));
  const gens = prompts.map((p, i) => new Generation(model, p, opts(i)));
  for (let step = 0; gens.some((g) => !g.done); step++) {
    const live = gens.filter((g) => !g.done);
    if (step === 5) {
      // a batch in another order that fails after its caches were packed: the runner must not
      // keep anything of it (in a worker, its queued writes would land in the next layout)
      const bad = live.map((g) => g.plan()).reverse();
      bad[0] = { ...bad[0], visible: new Uint8Array(1) };
      await assert.rejects(model.forward(bad), /visibility/);
    }
    const res = await model.forward(live.map((g) => g.plan()));
    live.forEach((g, i) => g.accept(res[i]));
  }
  gens.forEach((g, i) => assert.deepEqual(g.result().tokens, alone[i].tokens, `sequence ${i}`));
  assert.ok(new Set(alone.map((a) => a.tokens.join())).size > 1, 'sequences differ from one another');
  if (worker) {
    // and the same tokens as the in-thread runner
    const inline = (await llama).model;
    for (let i = 0; i < prompts.length; i++) assert.deepEqual((await generate(inline, prompts[i], opts(i))).tokens, alone[i].tokens, `worker = inline, sequence ${i}`);
    await model.close();
  }
});

test('graph worker: one that dies is started again and the generation goes on equal to the in-thread run; a fourth death within a minute is not restarted', async () => {
  const { model: inline, dir } = await llama;
  const { target } = await convertModel(dir, { cacheDir: CACHE });
  const a = inline.args;
  const runner = await OrtRunner.create(join(target, 'model.onnx'), { layers: a.numLayers, kvHeads: a.numKvHeads, headDim: a.headDim, vocab: a.vocabSize, topK: inline.topK }, { threads: 2, worker: true });
  const model = { args: a, special: inline.special, topK: inline.topK, forward: (r: Parameters<typeof runner.forward>[0]) => runner.forward(r) };
  const kill = () => (runner as unknown as { worker: { release(): Promise<void> } }).worker.release();
  const opts = { maxTokens: 24, temperature: 0, cache: 'prefix' as const, stopTokens: [] };
  const want = await generate(inline, [5, 6, 7], opts);
  // killed mid-generation, between two forwards: the caches kept so far are repacked into
  // the new worker's buffers
  const g = new Generation(model, [5, 6, 7], opts);
  for (let step = 0; !g.done; step++) {
    if (step === 6) await kill();
    g.accept((await model.forward([g.plan()]))[0]);
  }
  assert.deepEqual(g.result().tokens, want.tokens);
  // two more restarts fit in the minute, the next death is final
  for (let i = 0; i < 2; i++) {
    await kill();
    assert.deepEqual((await generate(model, [5, 6, 7], opts)).tokens, want.tokens, `after restart ${i + 2}`);
  }
  await kill();
  await assert.rejects(generate(model, [5, 6, 7], opts), /died 4 times within a minute.*graph worker stopped/);
  await runner.release();
  // a worker that failed to receive a message is still running: the restart stops it
  const second = await OrtRunner.create(join(target, 'model.onnx'), { layers: a.numLayers, kvHeads: a.numKvHeads, headDim: a.headDim, vocab: a.vocabSize, topK: inline.topK }, { threads: 2, worker: true });
  const m2 = { ...model, forward: (r: Parameters<typeof runner.forward>[0]) => second.forward(r) };
  const thread = (second as unknown as { worker: { worker: import('node:worker_threads').Worker } }).worker.worker;
  thread.emit('messageerror', new Error('could not deserialise'));
  assert.deepEqual((await generate(m2, [5, 6, 7], opts)).tokens, want.tokens);
  if (thread.threadId !== -1) await new Promise((res) => thread.once('exit', res));
  assert.equal(thread.threadId, -1, 'the old worker thread has stopped');
  await second.release();
});

test('graph worker: a forward past its deadline stops the worker and fails its batch; the next forward runs in a new one', async () => {
  const { model: inline, dir } = await llama;
  const { target } = await convertModel(dir, { cacheDir: CACHE });
  const a = inline.args;
  const runner = await OrtRunner.create(join(target, 'model.onnx'), { layers: a.numLayers, kvHeads: a.numKvHeads, headDim: a.headDim, vocab: a.vocabSize, topK: inline.topK }, { threads: 1, worker: true, forwardTimeout: 0.001 });
  const model = { args: a, special: inline.special, topK: inline.topK, forward: (r: Parameters<typeof runner.forward>[0]) => runner.forward(r) };
  const thread = (runner as unknown as { worker: { worker: import('node:worker_threads').Worker } }).worker.worker;
  const opts = { maxTokens: 4, temperature: 0, cache: 'prefix' as const, stopTokens: [] };
  // (a 500-token prompt's forward takes far longer than 1 ms)
  const prompt = Array.from({ length: 500 }, (_, i) => (i * 7 + 3) % (a.vocabSize - 8));
  await assert.rejects(generate(model, prompt, opts), /ran past its deadline \(0\.001 s, --forward-timeout\): the graph worker was given up/);
  // (the given-up thread stops once ORT returns from its forward; it holds the process up until then)
  runner.forwardTimeout = 60;
  assert.deepEqual((await generate(model, prompt, opts)).tokens, (await generate(inline, prompt, opts)).tokens, 'a new worker answers as the in-thread run');
  await runner.release();
  assert.equal(thread.threadId, -1, 'release waited for the given-up thread to stop');
});

test('prompt log-probabilities (causal models): each prompt token given the ones before it, as the Float64 reference scores it, in one forward or in prefill chunks', async () => {
  const { loadReference, referenceForward } = await import('./reference.ts');
  const { visibility } = await import('./helpers.ts');
  const { Scheduler } = await import('../src/engine/scheduler.ts');
  const { model, dir } = await llama;
  const V = model.args.vocabSize;
  const prompt = range(0, 41).map((i) => (i * 13 + 7) % (V - 8));
  const ref = referenceForward(await loadReference(dir), prompt, range(0, prompt.length), visibility('causal', range(0, prompt.length), range(0, prompt.length)));
  const logSoftmax = (row: Float64Array) => {
    const mx = Math.max(...row);
    const lse = mx + Math.log(row.reduce((a, x) => a + Math.exp(x - mx), 0));
    return Array.from(row, (x) => x - lse);
  };
  const opts = { maxTokens: 6, temperature: 0, stopTokens: [], promptLogprobs: 3 };
  const plain = await generate(model, prompt, { ...opts, promptLogprobs: undefined });
  const runs = {
    'one forward': await generate(model, prompt, opts),
    'prefill chunks of 8': await new Scheduler(model, { prefillChunk: 8 }).submit({ prompt, options: opts }),
  };
  for (const [how, r] of Object.entries(runs)) {
    assert.deepEqual(r.tokens, plain.tokens, `${how}: the answer is unchanged`);
    const lp = r.promptLogprobs!;
    assert.equal(lp.length, prompt.length);
    assert.equal(lp[0], null, 'the first token has no context');
    for (let p = 1; p < prompt.length; p++) {
      const want = logSoftmax(ref[p - 1]);
      assert.equal(lp[p]!.token, prompt[p]);
      assert.ok(Math.abs(lp[p]!.logprob - want[prompt[p]]) < 1e-3, `${how}, position ${p}: ${lp[p]!.logprob} against ${want[prompt[p]]}`);
      assert.equal(lp[p]!.rank, 1 + want.filter((x) => x > want[prompt[p]]).length, `${how}, position ${p}: rank`);
      const best = Array.from(want.keys()).sort((a, b) => want[b] - want[a]).slice(0, 3);
      assert.deepEqual(lp[p]!.top.map((x) => x.token), best, `${how}, position ${p}: alternatives`);
      lp[p]!.top.forEach((x, k) => assert.ok(Math.abs(x.logprob - want[best[k]]) < 1e-3));
    }
  }
  // a sampled answer is the one drawn without them (the candidates, not the full rows, are sampled from)
  const sampled = { maxTokens: 12, temperature: 1, topK: 5, seed: 5, stopTokens: [] };
  assert.deepEqual((await generate(model, prompt, { ...sampled, promptLogprobs: 2 })).tokens, (await generate(model, prompt, sampled)).tokens);
  // a long prompt is scored in chunks of at most 256 rows, whatever the prefill setting
  const long = range(0, 300).map((i) => (i * 11 + 5) % (V - 8));
  const queries: number[] = [];
  const orig = model.forward.bind(model);
  model.forward = async (reqs) => {
    queries.push(...reqs.map((r) => r.queries.length));
    return orig(reqs);
  };
  try {
    const r = await new Scheduler(model, { prefillChunk: 0, prefixCacheBytes: 0 }).submit({ prompt: long, options: { ...opts, maxTokens: 1 } });
    assert.ok(Math.max(...queries) <= 256, `query rows per forward: ${queries}`);
    assert.ok(r.promptLogprobs!.slice(1).every((x, p) => x !== null && x.token === long[p + 1]), 'every prompt token scored');
  } finally {
    model.forward = orig;
  }
  assert.throws(() => new Generation(model, prompt, { ...opts, cache: 'none' }), (e: unknown) => e instanceof OptionError && e.param === 'prompt_logprobs' && /not with cache "none"/.test(e.message));
  const { model: diffusion } = await fixtureModel({ arch: 'llada', hidden: 32, heads: 2, layers: 1 });
  assert.throws(() => new Generation(diffusion, [3, 4], { promptLogprobs: 1 }), (e: unknown) => e instanceof OptionError && e.param === 'prompt_logprobs' && /need a causal model/.test(e.message));
  await diffusion.close();
});

test('end-of-text committed with nothing masked before it ends the generation', async () => {
  // EOS wins at position 3 of the output; tokens before it are plain
  const m = scriptedModel(16, (p) => (p === 2 + 3 ? prefer(16, MOCK_EOS, 20) : prefer(16, 4 + (p % 3), 6)));
  const r = await generate(m, [0, 0], { maxTokens: 16, blockLength: 4, policy: 'low_confidence', steps: 16, cache: 'none' });
  assert.equal(r.finishReason, 'stop');
  assert.deepEqual(r.tokens, [6, 4, 5]);
  assert.ok(m.calls <= 4, `stopped in the first block (${m.calls} forwards)`);
  // a fixture whose weights make end-of-text win everywhere stops at once with no tokens
  const eos = fixtureTokenizer('llada').specials['<|endoftext|>'];
  const { model } = await fixtureModel({ arch: 'llada', favourToken: eos });
  const e = await generate(model, [5, 6], { maxTokens: 32, blockLength: 8, policy: 'threshold' });
  assert.equal(e.finishReason, 'stop');
  assert.deepEqual(e.tokens, []);
  assert.equal(e.stats.forwards, 1);
  await model.close();
});

test('maxTokens bounds the output with finish reason length', async () => {
  const m = scriptedModel(16, () => prefer(16, 7, 9));
  const r = await generate(m, [0], { maxTokens: 6, blockLength: 3, cache: 'none' });
  assert.equal(r.finishReason, 'length');
  assert.equal(r.tokens.length, 6);
});

test('stop strings end the text at the string, including one spanning two tokens', async () => {
  const pieces: Record<number, string> = { 4: 'ab', 5: 'cd', 6: 'ef', 7: 'gh' };
  const detok = (ids: number[]) => ids.map((t) => pieces[t] ?? '?').join('');
  const m = scriptedModel(16, (p) => prefer(16, 4 + ((p - 1) % 4), 9));
  const r = await generate(m, [0], { maxTokens: 8, blockLength: 8, cache: 'none', stopStrings: ['de'], detokenize: detok, stopTokens: [] });
  assert.equal(r.finishReason, 'stop');
  assert.equal(r.text, 'abc');
  assert.deepEqual(r.tokens, [4, 5]);
  const one = await generate(m, [0], { maxTokens: 8, blockLength: 8, cache: 'none', stopStrings: ['gh'], detokenize: detok, stopTokens: [] });
  assert.equal(one.text, 'abcdef');
});

// An answer of A tokens after a prompt of 2 that the model "knows": content at its positions,
// end-of-text after. At the canvas's last position a full-window forward (a block start)
// predicts content when the canvas is too short for the answer and end-of-text when it fits,
// as a model trained with end padding does. `lastLies`: a probe that is wrong: at block starts
// the last position leans to end-of-text (~0.57, too weakly to commit at threshold 0.9) whatever
// the canvas, and the narrower forwards after a block start put content (token 9) there.
function knowsLength(A: number, lastLies = false, shifted = false) {
  return scriptedModel(16, (p, r) => {
    const end = Math.max(...r.positions) + 1;
    const fullWindow = r.positions[0] === 0;
    if (p === end - 1 && lastLies) {
      if (!fullWindow) return prefer(16, 9, 9);
      const l = prefer(16, MOCK_EOS, 4);
      l[9] = 3.3;
      return l;
    }
    if (p === end - 1 && fullWindow && end < 2 + A + 1) return prefer(16, 9, 6);
    return p < 2 + A ? prefer(16, 4 + (p % 5), 9) : prefer(16, MOCK_EOS, 9);
  }, 4, shifted);
}

test('adaptive canvas: grows while the end probe says the answer does not fit, then decodes as a fixed canvas of that size', async () => {
  const A = 20;
  const answer = Array.from({ length: A }, (_, i) => 4 + ((2 + i) % 5));
  for (const [cache, shifted] of [['none', false], ['prefix', false], ['dual', false], ['none', true], ['prefix', true], ['dual', true]] as const) {
    const o = { maxTokens: 64, blockLength: 32, policy: 'threshold' as const, cache };
    const m = knowsLength(A, false, shifted);
    const windows: number[] = [];
    const fwd = m.forward.bind(m);
    m.forward = (reqs) => (windows.push(reqs[0].ids.length), fwd(reqs));
    const drafts: number[] = [];
    const r = await generate(m, [0, 0], { ...o, initialCanvas: 8, onStep: (e) => drafts.push(e.draft.length) });
    const label = `${cache}${shifted ? ', shifted' : ''}`;
    assert.deepEqual(r.tokens, answer, label);
    assert.equal(r.finishReason, 'stop');
    // probes at 8 and 16 positions fail (discarded forwards), 32 fits
    assert.deepEqual(windows.slice(0, 3), [2 + 8, 2 + 16, 2 + 32], label);
    assert.ok(Math.max(...windows) <= 2 + 32, `${label}: no forward beyond the grown canvas (${windows})`);
    assert.deepEqual(drafts.slice(0, 3), [16, 32, 32], `the draft is the current canvas (${drafts})`);
    // the same as a fixed canvas of the grown size, plus the two discarded forwards
    const fixed = await generate(knowsLength(A, false, shifted), [0, 0], { ...o, maxTokens: 32, canvas: 'fixed' });
    assert.deepEqual(fixed.tokens, answer);
    assert.equal(r.stats.forwards, fixed.stats.forwards + 2, label);
    assert.equal(r.stats.discarded, 2);
    assert.equal(r.stats.canvas, 32);
    assert.equal(fixed.stats.discarded, 0);
    // and a fixed canvas of max_tokens runs its first forward over all 64 positions
    const full = knowsLength(A, false, shifted);
    const seen: number[] = [];
    const ff = full.forward.bind(full);
    full.forward = (reqs) => (seen.push(reqs[0].ids.length), ff(reqs));
    assert.deepEqual((await generate(full, [0, 0], { ...o, canvas: 'fixed' })).tokens, answer);
    assert.equal(seen[0], 2 + 64);
  }
  // a canvas that fits from the start never grows; max_tokens caps growth
  const short = await generate(knowsLength(5), [0, 0], { maxTokens: 64, policy: 'threshold', initialCanvas: 8 });
  assert.deepEqual(short.tokens, answer.slice(0, 5));
  assert.equal(short.stats.forwards, 1);
  const capped = await generate(knowsLength(A), [0, 0], { maxTokens: 12, blockLength: 12, policy: 'threshold', initialCanvas: 8 });
  assert.equal(capped.finishReason, 'length');
  assert.equal(capped.tokens.length, 12);
});

test('adaptive canvas: a fixed-count policy keeps its tokens per step on a short block (no steps that commit nothing)', async () => {
  // the 16-position canvas is one block of 16: steps = max_tokens is one token per step, and
  // steps = max_tokens / 2 two per step (with the full block's 16 steps it would be one)
  const counts: number[] = [];
  const r = await generate(knowsLength(5), [0, 0], { maxTokens: 64, blockLength: 32, steps: 64, policy: 'low_confidence', cache: 'prefix', onStep: (e) => counts.push(e.committed.length) });
  assert.deepEqual(r.tokens, [6, 7, 8, 4, 5]);
  assert.ok(counts.length > 1 && counts.every((c) => c === 1), `tokens per step: ${counts}`);
  // two tokens per step likewise
  const two: number[] = [];
  await generate(knowsLength(5), [0, 0], { maxTokens: 64, blockLength: 32, steps: 32, policy: 'low_confidence', onStep: (e) => two.push(e.committed.length) });
  assert.ok(two.every((c) => c === 2), `tokens per step: ${two}`);
  // a fixed canvas keeps the reference schedule: each block (a last short one too) steps/blocks
  const fixed = await generate(knowsLength(60), [0, 0], { maxTokens: 48, steps: 10, policy: 'low_confidence', canvas: 'fixed', stopTokens: [] });
  assert.equal(fixed.stats.steps, 10);
});

test('adaptive canvas: a canvas that fills without an end grows by blocks and decoding continues', async () => {
  const A = 20;
  const answer = Array.from({ length: A }, (_, i) => 4 + ((2 + i) % 5));
  const m = knowsLength(A, true);
  const windows: number[] = [];
  const fwd = m.forward.bind(m);
  m.forward = (reqs) => (windows.push(reqs[0].ids.length), fwd(reqs));
  const r = await generate(m, [0, 0], { maxTokens: 64, blockLength: 8, policy: 'threshold', cache: 'prefix', initialCanvas: 16 });
  // the 16-position canvas is decoded whole (its last token the wrong probe's content 9), then
  // grows to 32 and the answer ends in the new blocks
  assert.deepEqual(r.tokens, [...answer.slice(0, 15), 9, ...answer.slice(16)]);
  assert.equal(r.finishReason, 'stop');
  assert.equal(Math.max(...windows), 2 + 32);
  // without end tokens to probe for, the canvas is max_tokens from the start
  const noEnd = await generate(knowsLength(A), [0, 0], { maxTokens: 24, blockLength: 8, policy: 'threshold', initialCanvas: 8, stopTokens: [] });
  assert.equal(noEnd.tokens.length, 24);
  assert.equal(noEnd.stats.forwards, 3, 'one forward per block, no probes');
});

test('adaptive canvas: committed end tokens at the tail cut the canvas, later forwards skip them', async () => {
  // answer tokens are uncertain (~0.57, one committed per step), the padding after it certain
  const A = 5;
  const model = () => scriptedModel(16, (p) => (p < 2 + A ? prefer(16, 4 + (p % 5), 3) : prefer(16, MOCK_EOS, 9)));
  for (const cache of ['none', 'prefix', 'dual'] as const) {
    const m = model();
    const windows: number[] = [];
    const fwd = m.forward.bind(m);
    m.forward = (reqs) => (windows.push(reqs[0].ids.length), fwd(reqs));
    const o = { maxTokens: 64, blockLength: 16, policy: 'threshold' as const, cache };
    const r = await generate(m, [0, 0], o);
    const fixed = await generate(model(), [0, 0], { ...o, canvas: 'fixed' });
    assert.deepEqual(r.tokens, fixed.tokens, cache);
    assert.equal(r.tokens.length, A);
    // the first forward commits the padding; after it the canvas ends one past the answer
    assert.equal(windows[0], 2 + 16, cache);
    assert.ok(windows.slice(1).every((w) => w <= 2 + A + 1), `${cache}: ${windows}`);
    assert.equal(windows.length, 1 + A, cache);
  }
});

test('stop strings: one that a decoder rewrite creates across pushes is found', async () => {
  // clean_up_tokenization_spaces-like: " cat " then "." becomes " cat." (the stop string "t."
  // appears only once the space before the mark is removed, before the searched tail)
  const pieces: Record<number, string> = { 4: ' the', 5: ' cat ', 6: '.', 7: ' sat', 8: ' on', 9: ' a', 10: ' mat' };
  const cleanup = (ids: number[]) => ids.map((i) => pieces[i] ?? '').join('').replace(/ ([.!,])/g, '$1');
  const answer = [4, 5, 6, 7, 8, 9, 10];
  // one answer token per step, left to right (a position is confident once the one before is committed)
  const m = scriptedModel(16, (p, req) => {
    const i = p - 1;
    if (i >= answer.length) return prefer(16, MOCK_EOS, 9);
    const prev = req.positions.indexOf(p - 1);
    return prefer(16, answer[i], i === 0 || (prev >= 0 && req.ids[prev] !== 1) ? 9 : 1);
  });
  const r = await generate(m, [3], { maxTokens: 8, blockLength: 8, canvas: 'fixed', stopStrings: ['t.'], detokenize: cleanup });
  assert.equal(r.finishReason, 'stop');
  assert.equal(r.text, ' the ca');
});

test('bad options get typed errors', async () => {
  const { model } = await llada;
  const cases: [object, string][] = [
    [{ steps: 0 }, 'steps'],
    [{ maxTokens: 16, blockLength: 5 }, 'block_length'],
    [{ maxTokens: 16, blockLength: 8, steps: 3 }, 'steps'],
    [{ maxTokens: 5000 }, 'max_tokens'],
    [{ maxTokens: -1 }, 'max_tokens'],
    [{ temperature: -0.5 }, 'temperature'],
    [{ topP: 0 }, 'top_p'],
    [{ topP: 1.5 }, 'top_p'],
    [{ policy: 'nope' }, 'policy'],
    [{ cache: 'huge' }, 'cache'],
    [{ canvas: 'huge' }, 'canvas'],
    [{ initialCanvas: 0 }, 'initial_canvas'],
    [{ logitBias: { 5: 101 } }, 'logit_bias'],
    [{ logitBias: { 99999: 1 } }, 'logit_bias'],
    [{ logitBias: { '-1': 1 } }, 'logit_bias'],
    [{ logitBias: { x: 1 } }, 'logit_bias'],
    [{ logitBias: { 5: '1' } }, 'logit_bias'],
  ];
  for (const [opts, param] of cases) {
    assert.throws(() => new Generation(model, [1, 2], opts), (e: unknown) => e instanceof OptionError && e.param === param, JSON.stringify(opts));
  }
  assert.throws(() => new Generation(model, [1, 99999], {}), (e: unknown) => e instanceof OptionError && e.code === 'invalid_token');
  assert.throws(() => new Generation(model, [1, 2], { logitBias: { [model.special.mask!]: 5 } }), (e: unknown) => e instanceof OptionError && e.param === 'logit_bias');
});

test('biasScores: candidates, log-sum-exp and entropy equal a plain recomputation of the biased rows', () => {
  const r = mulberry32(5);
  const V = 50;
  const Q = 3;
  const K = 4;
  const logits = Float32Array.from({ length: Q * V }, () => (r() - 0.5) * 8);
  // a tie near the top (after the +100 token): the lower id comes first
  for (let q = 0; q < Q; q++) logits[q * V + 7] = logits[q * V + 8] = 20;
  const bias = { ids: Int32Array.from([3, 7, 8, 20]), values: Float32Array.from([100, -2.5, -2.5, 4]) };
  const got = biasScores({ topIds: new Int32Array(Q * K), topLogits: new Float32Array(Q * K), lse: new Float32Array(Q), entropy: new Float32Array(Q), logits }, bias, V);
  for (let q = 0; q < Q; q++) {
    const row = Array.from(logits.subarray(q * V, (q + 1) * V));
    bias.ids.forEach((id, i) => (row[id] += bias.values[i]));
    const lse = Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
    const h = -row.reduce((a, x) => a + Math.exp(x - lse) * (x - lse), 0);
    const order = row.map((x, i) => [x, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, K);
    assert.ok(Math.abs(got.lse[q] - lse) < 1e-3 && Math.abs(got.entropy[q] - h) < 1e-3);
    assert.deepEqual(Array.from(got.topIds.subarray(q * K, (q + 1) * K)), order.map((o) => o[1]));
    assert.deepEqual(Array.from(got.topIds.subarray(q * K, q * K + 3)), [3, 7, 8]);
  }
  // the input rows are left as they were
  assert.notEqual(logits[3], got.logits[3]);
});

test('logit_bias: +100 makes a token the whole answer; -100 on the tokens of the unbiased answer keeps every one of them out', async () => {
  for (const m of [llada, llama]) {
    const { model } = await m;
    const plain = await generate(model, [5, 6, 7], { maxTokens: 12, temperature: 0 });
    // (24 > the adaptive canvas's first 16: its end probe must see the bias too, and grow the canvas)
    const forced = await generate(model, [5, 6, 7], { maxTokens: 24, temperature: 0, logitBias: { 40: 100 } });
    assert.deepEqual(forced.tokens, Array(24).fill(40));
    assert.equal(forced.finishReason, 'length');
    const used = new Set(plain.tokens);
    const banned = await generate(model, [5, 6, 7], { maxTokens: 12, temperature: 0, stopTokens: [], logitBias: Object.fromEntries([...used].map((t) => [t, -100])) });
    assert.equal(banned.tokens.length, 12);
    assert.ok(banned.tokens.every((t) => !used.has(t)), `${plain.tokens} / ${banned.tokens}`);
    // sampled, too
    const sampled = await generate(model, [5, 6, 7], { maxTokens: 8, temperature: 1, seed: 3, stopTokens: [], logitBias: Object.fromEntries([...used].map((t) => [t, -100])) });
    assert.ok(sampled.tokens.every((t) => !used.has(t)));
  }
});

test('an aborted signal cancels within a step', async () => {
  const { model } = await llada;
  const ac = new AbortController();
  let steps = 0;
  await assert.rejects(
    generate(model, [1, 2], { maxTokens: 32, policy: 'low_confidence', signal: ac.signal, stopTokens: [], onStep: () => (++steps === 2 ? ac.abort() : undefined) }),
    CancelledError,
  );
  assert.equal(steps, 2);
});

test('events carry the draft, final flags and counters', async () => {
  const { model } = await llada;
  const evs: StepEvent[] = [];
  await generate(model, [1, 2, 3], { maxTokens: 8, blockLength: 4, policy: 'low_confidence', stopTokens: [], onStep: (e) => evs.push(e) });
  evs.forEach((e, i) => {
    assert.equal(e.step, i);
    assert.equal(e.stats.forwards, i + 1);
    assert.equal(e.stats.committed, evs.slice(0, i + 1).reduce((s, x) => s + x.committed.length, 0));
    for (const c of e.committed) assert.equal(e.draft[c.position], c.token);
  });
  assert.equal(evs.at(-1)!.finalized, 8);
  assert.ok(evs.at(-1)!.done);
});

test('teardown', async () => {
  for (const f of [llada, llama, dream]) await (await f).model.close();
});
