// Parity: the ORT graph of each architecture against the naive Float64 reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadReference, referenceForward } from './reference.ts';
import { fixtureModel, visibility, range, type Rule } from './helpers.ts';
import type { FixtureArch, FixtureOptions } from '../src/formats/fixtures.ts';
import type { Model } from '../src/models/registry.ts';

const ARCHS: { arch: FixtureArch; rule: Rule; kvHeads?: number; tied?: boolean; dtype?: 'BF16' | 'F16' | 'F32'; shards?: number; headDim?: number; moe?: Partial<FixtureOptions>; label?: string }[] = [
  { arch: 'llada', rule: 'full' },
  { arch: 'llada', rule: { block: 4 }, kvHeads: 2, tied: true, dtype: 'F16', shards: 3 },
  { arch: 'dream', rule: 'full', kvHeads: 2 },
  { arch: 'sdar', rule: { block: 4 }, kvHeads: 2 },
  { arch: 'fast_dllm_v2', rule: { block: 4 }, kvHeads: 2 },
  { arch: 'llama', rule: 'causal', dtype: 'F32' },
  { arch: 'qwen2', rule: 'causal', kvHeads: 1 },
  { arch: 'qwen3', rule: 'causal', kvHeads: 2, headDim: 32 },
  { arch: 'coda', rule: 'full', kvHeads: 2, headDim: 32 },
  // LLaDA-MoE: 6 experts, 2 per token; then a dense first layer, a shared expert, GQA and clip_qkv
  { arch: 'llada_moe', rule: 'full', moe: { experts: 6, expertsPerToken: 2, expertSize: 24 } },
  { arch: 'llada_moe', rule: 'full', kvHeads: 2, moe: { experts: 5, expertsPerToken: 3, expertSize: 16, sharedSize: 40, moeLayers: [0, 1], clipQkv: 1.5 }, label: 'dense layer 0, shared expert, clip_qkv' },
  // LLaDA2.0: fused qkv, half-rotary RoPE, sigmoid router with expert bias and groups, a dense first layer, a shared expert
  { arch: 'llada2', rule: { block: 4 }, kvHeads: 2, moe: { experts: 16, expertsPerToken: 3, expertSize: 16, groups: 4, groupsKept: 2, sharedExperts: 1, firstDense: 1 } },
  // RND1: Qwen3-MoE, softmax routing renormalized over the chosen experts, bidirectional
  { arch: 'rnd1', rule: 'full', kvHeads: 2, moe: { experts: 6, expertsPerToken: 3, expertSize: 24 }, label: 'renormalized routing' },
  // SDAR-MoE (SDAR-30B-A3B): Qwen3-MoE block diffusion; a dense layer (mlp_only_layers), and routing without renormalization
  { arch: 'sdar_moe', rule: { block: 4 }, kvHeads: 2, moe: { experts: 6, expertsPerToken: 2, expertSize: 24, moeLayers: [0, 1] }, label: 'a dense first layer' },
  { arch: 'sdar_moe', rule: { block: 4 }, moe: { experts: 5, expertsPerToken: 2, expertSize: 16, normTopk: false }, label: 'norm_topk_prob false' },
  { arch: 'sdar_moe', rule: { block: 4 }, moe: { experts: 5, expertsPerToken: 2, expertSize: 16, sparseStep: 2, normTopk: null }, label: 'decoder_sparse_step 2, norm_topk_prob absent' },
  { arch: 'llada2', rule: { block: 4 }, moe: { experts: 6, expertsPerToken: 1, expertSize: 16, groups: 1, groupsKept: 1, sharedExperts: 0, firstDense: 0, rotaryFactor: 0.25, routedScale: 1.7 }, label: 'one expert per token, no groups, no shared expert, rotary 1/4' },
];

function rand(seed: number) {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function assertClose(got: Float32Array, want: Float64Array[], rows: number[], V: number, what: string) {
  const scale = Math.max(...want.map(maxAbs));
  let worst = 0;
  rows.forEach((r, qi) => {
    for (let t = 0; t < V; t++) worst = Math.max(worst, Math.abs(got[qi * V + t] - want[r][t]));
  });
  assert.ok(worst <= 1e-4 * scale, `${what}: max |diff| ${worst} > 1e-4 x ${scale}`);
}

async function forwardFull(model: Model, ids: number[], rule: Rule, queries: number[]) {
  const pos = range(0, ids.length);
  const [r] = await model.forward([
    { ids: Int32Array.from(ids), positions: Int32Array.from(pos), visible: visibility(rule, pos, pos), queries: Int32Array.from(queries), wantLogits: true, wantPresent: true },
  ]);
  return r;
}

for (const c of ARCHS) {
  const label = `${c.arch} ${typeof c.rule === 'object' ? `block-causal(${c.rule.block})` : c.rule}${c.kvHeads ? ` gqa(${c.kvHeads})` : ''}${c.tied ? ' tied' : ''}${c.shards ? ' sharded' : ''}${c.headDim ? ` head_dim ${c.headDim}` : ''}${c.label ? ` ${c.label}` : ''}`;
  test(`parity with the Float64 reference: ${label}`, async () => {
    const { model, dir } = await fixtureModel({ arch: c.arch, kvHeads: c.kvHeads, tied: c.tied, dtype: c.dtype, shards: c.shards, headDim: c.headDim, hidden: 64, heads: 4, layers: 2, ...c.moe });
    const ref = await loadReference(dir);
    const V = model.args.vocabSize;
    const r = rand(7);
    const tok = () => Math.floor(r() * (V - 8));

    // B = 1, no cache, every row
    const ids = Array.from({ length: 11 }, tok);
    const pos = range(0, ids.length);
    const want = referenceForward(ref, ids, pos, visibility(c.rule, pos, pos));
    const full = await forwardFull(model, ids, c.rule, pos);
    assertClose(full.logits!, want, pos, V, 'B=1 uncached');
    // top-k, lse, entropy agree with the logits
    for (let q = 0; q < pos.length; q++) {
      const row = Array.from(full.logits!.subarray(q * V, (q + 1) * V));
      const mx = Math.max(...row);
      const lse = mx + Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0));
      const ent = -row.reduce((s, x) => s + Math.exp(x - lse) * (x - lse), 0);
      assert.ok(Math.abs(full.lse[q] - lse) < 1e-4, 'lse');
      assert.ok(Math.abs(full.entropy[q] - ent) < 1e-3, 'entropy');
      assert.equal(full.topLogits[q * model.topK], mx, 'top-1 logit is the max');
      assert.equal(row[full.topIds[q * model.topK]], mx, 'top-1 id holds the max');
    }

    // cached: K/V of the first p positions from the full pass, then the rest against it
    const p = 6;
    const cache = full.takeCache!([], range(0, p));
    const rest = range(p, ids.length);
    const vis = visibility(c.rule, [...range(0, p), ...rest], rest);
    const [cached] = await model.forward([
      { ids: Int32Array.from(rest.map((i) => ids[i])), positions: Int32Array.from(rest), past: cache, visible: vis, queries: Int32Array.from(range(0, rest.length)), wantLogits: true },
    ]);
    assertClose(cached.logits!, want, rest, V, 'cached');

    // B = 3 with padding: different lengths, one with a cache of a different length
    const seqs = [5, 13, 8].map((n) => Array.from({ length: n }, tok));
    const ref3 = seqs.map((s) => {
      const ps = range(0, s.length);
      return referenceForward(ref, s, ps, visibility(c.rule, ps, ps));
    });
    const pre = await forwardFull(model, seqs[2], c.rule, [0]);
    const cache2 = pre.takeCache!([], range(0, 3));
    const reqs = seqs.map((s, b) => {
      const start = b === 2 ? 3 : 0;
      const rows = range(start, s.length);
      const cols = [...range(0, start), ...rows];
      return {
        ids: Int32Array.from(rows.map((i) => s[i])),
        positions: Int32Array.from(rows),
        past: b === 2 ? cache2 : undefined,
        visible: visibility(c.rule, cols, rows),
        queries: Int32Array.from(range(0, rows.length)),
        wantLogits: true,
      };
    });
    const outs = await model.forward(reqs);
    outs.forEach((o, b) => assertClose(o.logits!, ref3[b], range(b === 2 ? 3 : 0, seqs[b].length), V, `B=3 row ${b}`));
    await model.close();
  });
}

test('a batch packed into memory an earlier batch used sees none of its rows (not even NaN)', async () => {
  const { model } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2 });
  const V = model.args.vocabSize;
  const r = rand(11);
  const seq = (n: number) => Array.from({ length: n }, () => Math.floor(r() * (V - 8)));
  const [a, c, d] = [seq(20), seq(6), seq(5)];
  const cached = async (s: number[]) => (await forwardFull(model, s.slice(0, -1), 'causal', [0])).takeCache!([], range(0, s.length - 1));
  const last = (s: number[], past: Awaited<ReturnType<typeof cached>>) => ({
    ids: Int32Array.of(s[s.length - 1]),
    positions: Int32Array.of(s.length - 1),
    past,
    visible: visibility('causal', range(0, s.length), [s.length - 1]),
    queries: Int32Array.of(0),
    wantLogits: true,
  });
  // c's last position, computed alone
  const [alone] = await model.forward([last(c, await cached(c))]);
  // a batch whose first row holds 20 cache entries of NaN
  const poisoned = await cached(a);
  for (const t of [...poisoned.keys, ...poisoned.values]) t.fill(NaN);
  await model.forward([last(a, poisoned), last(d, await cached(d))]);
  // another batch evicts the least recently used packed slot (the `alone` batch's); the next
  // one (same size, other sequences) is packed into the other slot's memory, the poisoned one:
  // c's row 0 has 5 entries, its hidden columns 5..19 are where a's NaN rows were
  await model.forward([last(d, await cached(d)), last(c, await cached(c))]);
  const before = model.stats.repacks;
  const [withC] = await model.forward([last(c, await cached(c)), last(d, await cached(d))]);
  assert.equal(model.stats.repacks, before + 1);
  assert.ok(withC.logits!.every(Number.isFinite), 'no NaN leaks into another sequence');
  for (let t = 0; t < V; t++) assert.ok(Math.abs(withC.logits![t] - alone.logits![t]) < 1e-4, `logit ${t}`);
});

test('two batches taking turns keep their packed caches (only new rows copied), in this thread and in the graph worker', async () => {
  for (const worker of [false, true]) {
    const { model } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2 }, { worker });
    const { generate, Generation } = await import('../src/decode/generation.ts');
    // two sequences decoding one token per step in their own forwards, turn about, against each alone
    const prompts = [[3, 9, 27, 81, 5], [7, 7, 1]];
    const alone = await Promise.all(prompts.map((p) => generate(model, p, { maxTokens: 8, stopTokens: [] })));
    const gens = prompts.map((p) => new Generation(model, p, { maxTokens: 8, stopTokens: [] }));
    const repacks: number[] = [];
    for (let step = 0; step < 8; step++)
      for (const g of gens) {
        const before = model.stats.repacks;
        g.accept((await model.forward([g.plan()]))[0]);
        repacks.push(model.stats.repacks - before);
      }
    gens.forEach((g, i) => assert.deepEqual(g.result().tokens, alone[i].tokens, `worker ${worker}`));
    // packs from scratch: the first decode step of each (their prefills have no past), and
    // whenever a cache outgrows the buffer's power-of-two columns; never because the other ran
    assert.ok(repacks.slice(4).every((n) => n === 0), `worker ${worker}: repacks per forward ${repacks}`);
    await model.close();
  }
});

test('packed slots stay true to their buffers: a forward failing beside others (worker), a layout that fails (memory)', async () => {
  const { PackedStore } = await import('../src/runtime/packed-store.mjs');
  for (const worker of [true, false]) {
    const { model } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2 }, { worker });
    const V = model.args.vocabSize;
    const r = rand(5);
    const seq = (n: number) => Array.from({ length: n }, () => Math.floor(r() * (V - 8)));
    const [a, b, c, d] = [seq(9), seq(12), seq(7), seq(10)];
    const cached = async (s: number[]) => (await forwardFull(model, s.slice(0, -1), 'causal', [0])).takeCache!([], range(0, s.length - 1));
    const last = (s: number[], past: Awaited<ReturnType<typeof cached>>, id = s[s.length - 1]) => ({
      ids: Int32Array.of(id),
      positions: Int32Array.of(s.length - 1),
      past,
      visible: visibility('causal', range(0, s.length), [s.length - 1]),
      queries: Int32Array.of(0),
      wantLogits: true,
    });
    const [ca, cb, cc, cd] = await Promise.all([cached(a), cached(b), cached(c), cached(d)]);
    const good = () => model.forward([last(c, cc), last(d, cd)]);
    const want = (await good())[0].logits!;
    await model.forward([last(a, ca), last(b, cb)]);
    // overlapping forwards, one of them failing in the graph (a token id outside the vocabulary)
    const results = await Promise.allSettled([model.forward([last(a, ca), last(b, cb, V + 5)]), good()]);
    assert.equal(results[0].status, 'rejected', `worker ${worker}`);
    const again = (await good())[0].logits!;
    for (let t = 0; t < V; t++) assert.ok(Math.abs(again[t] - want[t]) < 1e-4, `worker ${worker}: logit ${t} after the failure`);
    if (!worker) {
      // a layout that fails leaves no slot claiming rows it never got: the slot it was to reuse
      // holds a batch of NaN rows (as in the poisoned-memory test above)
      const long = seq(20);
      const poisoned = await cached(long);
      for (const x of [...poisoned.keys, ...poisoned.values]) x.fill(NaN);
      await model.forward([last(long, poisoned), last(d, cd)]);
      await model.forward([last(c, cc), last(d, cd)]); // the poisoned batch is least recently used
      const orig = PackedStore.prototype.layout;
      PackedStore.prototype.layout = function () {
        PackedStore.prototype.layout = orig;
        throw new RangeError('Array buffer allocation failed');
      };
      const e = seq(11);
      const ce = await cached(e);
      await assert.rejects(model.forward([last(e, ce), last(a, ca)]), RangeError);
      const [retry] = await model.forward([last(e, ce), last(a, ca)]);
      const [fresh] = await model.forward([last(e, ce)]);
      assert.ok(retry.logits!.every(Number.isFinite), 'no NaN from the slot whose layout failed');
      for (let t = 0; t < V; t++) assert.ok(Math.abs(retry.logits![t] - fresh.logits![t]) < 1e-4, `logit ${t} after a failed layout`);
    }
    await model.close();
  }
});

test('logprobs: each token of a causal generation carries its log-softmax under the Float64 reference', async () => {
  const { model, dir } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2 });
  const ref = await loadReference(dir);
  const { generate } = await import('../src/decode/generation.ts');
  const prompt = [3, 9, 27, 81];
  const r = await generate(model, prompt, { maxTokens: 8, temperature: 0, stopTokens: [], logprobs: 3 });
  assert.equal(r.logprobs!.length, r.tokens.length);
  const ids = [...prompt, ...r.tokens];
  const pos = range(0, ids.length);
  const rows = referenceForward(ref, ids, pos, visibility('causal', pos, pos));
  r.tokens.forEach((t, i) => {
    const row = rows[prompt.length - 1 + i]; // the row that predicts output token i
    let mx = -Infinity;
    for (const x of row) mx = Math.max(mx, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - mx);
    const logp = (k: number) => row[k] - mx - Math.log(z);
    const lp = r.logprobs![i];
    assert.equal(lp.token, t);
    assert.ok(Math.abs(lp.logprob - logp(t)) < 1e-4, `token ${i}: ${lp.logprob} vs ${logp(t)}`);
    const best = Array.from(row.keys()).sort((a, b) => row[b] - row[a]).slice(0, 3);
    assert.deepEqual(lp.top.map((a) => a.token), best, `token ${i}: the 3 best alternatives`);
    lp.top.forEach((a) => assert.ok(Math.abs(a.logprob - logp(a.token)) < 1e-4));
  });
});

test('logprobs of diffusion decoding (LLaDA, and Dream with shifted logits): one entry per token, the committed candidate at temperature 0', async () => {
  const { generate } = await import('../src/decode/generation.ts');
  for (const arch of ['llada', 'dream'] as const) {
    const { model } = await fixtureModel({ arch, hidden: 64, heads: 4, layers: 2 });
    // several positions per step (4 steps for 16 tokens), and a second block
    const r = await generate(model, [3, 9, 27], { maxTokens: 16, blockLength: 8, steps: 4, policy: 'low_confidence', temperature: 0, stopTokens: [], logprobs: 2 });
    assert.equal(r.tokens.length, 16);
    assert.equal(r.logprobs!.length, 16, arch);
    r.logprobs!.forEach((lp, i) => {
      assert.ok(lp, `${arch}: entry ${i} filled`);
      assert.equal(lp.token, r.tokens[i], `${arch}: entry ${i} is its token`);
      assert.ok(lp.logprob <= 0);
      assert.equal(lp.top.length, 2);
      assert.equal(lp.top[0].token, lp.token, `${arch}: greedy commits the best candidate`);
      assert.ok(Math.abs(lp.top[0].logprob - lp.logprob) < 1e-6);
      assert.ok(lp.top[1].logprob <= lp.top[0].logprob);
    });
    await model.close();
  }
});

test('a checkpoint tensor the graph would not read is refused (a bias variant), not dropped; stored RoPE frequencies are fine', async () => {
  const { tempDir, CACHE } = await import('./helpers.ts');
  const { writeFixture } = await import('../src/formats/fixtures.ts');
  const { Checkpoint, writeSafetensors } = await import('../src/formats/safetensors.ts');
  const { loadModel } = await import('../src/models/registry.ts');
  const { join } = await import('node:path');
  const dir = await tempDir('quench-extra-');
  await writeFixture(dir, { arch: 'llama', hidden: 32, heads: 2, layers: 1, std: 0.3 });
  const ck = await Checkpoint.open(dir);
  const tensors: import("../src/formats/safetensors.ts").TensorToWrite[] = [];
  for (const name of ck.names()) {
    const info = ck.info(name);
    tensors.push({ name, dtype: info.dtype, shape: info.shape, data: new Uint8Array(await ck.read(name)) });
  }
  await ck.close();
  const withExtra = async (name: string, shape: number[]) =>
    writeSafetensors(join(dir, 'model.safetensors'), [...tensors, { name, dtype: 'F32' as const, shape, data: new Uint8Array(4 * shape.reduce((a, b) => a * b, 1)) }]);
  await withExtra('model.layers.0.self_attn.o_proj.bias', [32]);
  await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1 }), (e: any) => e.code === 'unused_tensor' && /o_proj\.bias/.test(e.message));
  await withExtra('model.layers.0.self_attn.rotary_emb.inv_freq', [8]);
  const m = await loadModel(dir, { cacheDir: CACHE, threads: 1 });
  await m.close();
});

test('a weight that is NaN or infinite is refused by name at conversion (in every format), not carried into the graph', async () => {
  const { tempDir, CACHE } = await import('./helpers.ts');
  const { writeFixture } = await import('../src/formats/fixtures.ts');
  const { Checkpoint } = await import('../src/formats/safetensors.ts');
  const { loadModel } = await import('../src/models/registry.ts');
  const { open } = await import('node:fs/promises');
  const { join } = await import('node:path');
  for (const [bad, dtype] of [[NaN, 'fp32'], [Infinity, 'int4'], [-Infinity, 'int8']] as const) {
    const dir = await tempDir('quench-nonfinite-');
    await writeFixture(dir, { arch: 'llada', hidden: 32, heads: 2, layers: 1, dtype: 'F32' });
    const ck = await Checkpoint.open(dir);
    const t = ck.info('model.transformer.blocks.0.up_proj.weight');
    await ck.close();
    const f = await open(join(dir, 'model.safetensors'), 'r+');
    const b = Buffer.alloc(4);
    b.writeFloatLE(bad);
    await f.write(b, 0, 4, t.offset + 4 * 37);
    await f.close();
    await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1, dtype }), (e: any) => e.code === 'tensor_not_finite' && /up_proj\.weight holds -?(NaN|Infinity) at index 37/.test(e.message), `${bad} ${dtype}`);
  }
});
