// generation_config.json: a checkpoint's preferred decoding, as transformers' generate() and
// vLLM read it, plus quench's own fields; every request field overrides it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generationDefaults } from '../src/formats/generation-config.ts';
import { checkModelDefaults, generate, Generation, type StepEvent } from '../src/decode/generation.ts';
import { FormatError } from '../src/errors.ts';
import { generationOptions } from '../src/server/fields.ts';
import { writeFixture } from '../src/formats/fixtures.ts';
import { loadModel } from '../src/models/registry.ts';
import { CACHE, tempDir } from './helpers.ts';
import { startServer } from './serve.ts';
import { scriptedModel, prefer, MOCK_EOS } from './mock.ts';

const invalid = (e: unknown) => e instanceof FormatError && e.code === 'generation_config_invalid';

test('generation_config.json keys: sampling as transformers reads them, quench fields by their request names', () => {
  assert.deepEqual(generationDefaults(null), {});
  assert.deepEqual(generationDefaults({ bos_token_id: 1, eos_token_id: [0, 4], max_new_tokens: 64 }), { maxTokens: 64 });
  assert.deepEqual(generationDefaults({ do_sample: true, temperature: 0.6, top_p: 0.95, top_k: 20 }), { temperature: 0.6, topP: 0.95, topK: 20 });
  // do_sample false is greedy whatever the temperature; do_sample alone samples at 1.0
  assert.deepEqual(generationDefaults({ do_sample: false, temperature: 0.6, top_p: 0.9 }), { temperature: 0 });
  assert.deepEqual(generationDefaults({ do_sample: true }), { temperature: 1 });
  // switched-off values are no preference: top_k 0, top_p 1, max_new_tokens 0
  assert.deepEqual(generationDefaults({ top_k: 0, top_p: 1.0, max_new_tokens: 0 }), {});
  // Dream's reference-sampler keys are not quench's decoding
  assert.deepEqual(generationDefaults({ alg: 'entropy', steps: 512, alg_temp: 0 }), {});
  assert.deepEqual(generationDefaults({ max_new_tokens: 32, quench: { policy: 'threshold', threshold: 0.95, in_order: true, cache: 'dual', initial_canvas: 8 } }), {
    maxTokens: 32, policy: 'threshold', threshold: 0.95, inOrder: true, cache: 'dual', initialCanvas: 8,
  });
  assert.deepEqual(generationDefaults({ quench: { early_commit: 5 } }), { earlyCommit: 5 });
  // the quench object wins over the transformers keys it repeats
  assert.deepEqual(generationDefaults({ temperature: 0.7, quench: { temperature: 0 } }), { temperature: 0 });
  // (block_length and steps must divide a request's max_tokens: no file sets them)
  for (const gc of [{ quench: { in_ordr: true } }, { quench: { threshold: '0.9' } }, { quench: { early_commit: true } }, { quench: { block_length: 32 } }, { quench: { steps: 64 } }, { quench: [1] }, { temperature: 'hot' }, { do_sample: false, temperature: 'hot' }, { max_new_tokens: 1.5 },
    { do_sample: 'yes' }, { top_p: 1.5 }, { top_p: 0 }, { top_k: -3 }, { max_new_tokens: -5 }, { temperature: -1 }])
    assert.throws(() => generationDefaults(gc as Record<string, unknown>), invalid, JSON.stringify(gc));
});

test('a model\'s defaults fill what a request leaves unset; request fields, and a fixed-count policy, override them', async () => {
  const P = 2;
  // confident about the second half first: free order commits it in step 1, in order from the left
  const logits = (pos: number) => (pos < P + 2 ? prefer(16, 5 + pos - P, 2) : pos < P + 4 ? prefer(16, 9, 12) : prefer(16, MOCK_EOS, 12));
  const m = { ...scriptedModel(16, logits), defaults: { inOrder: true, threshold: 0.9, cache: 'none', canvas: 'fixed', maxTokens: 8 } };
  const first = async (o: Parameters<typeof generate>[2]) => {
    const steps: number[][] = [];
    const r = await generate(m, [0, 0], { blockLength: 8, ...o, onStep: (ev: StepEvent) => steps.push(ev.committed.map((c) => c.position)) });
    return { tokens: r.tokens, first: steps[0] };
  };
  const byDefault = await first({});
  assert.deepEqual(byDefault.first, [0], 'the model\'s in_order applies');
  assert.deepEqual(byDefault.tokens, [5, 6, 9, 9]);
  // the same options named by the caller, the defaults switched off: the same run
  const explicit = await first({ inOrder: true, threshold: 0.9, cache: 'none', canvas: 'fixed', maxTokens: 8, modelDefaults: false });
  assert.deepEqual(explicit, byDefault);
  // a request field overrides the default
  assert.deepEqual((await first({ inOrder: false })).first, [2, 3, 4, 5, 6, 7]);
  assert.deepEqual((await first({ modelDefaults: false, canvas: 'fixed', maxTokens: 8, cache: 'none' })).first, [2, 3, 4, 5, 6, 7]);
  // a fixed-count policy cannot run in order: the model's in_order steps aside instead of failing the request
  const lc = await first({ policy: 'low_confidence', steps: 8 });
  assert.equal(lc.first.length, 1);
  assert.deepEqual(lc.tokens, [5, 6, 9, 9]);
  // ... but a request asking for both is still refused by name
  await assert.rejects(first({ policy: 'low_confidence', inOrder: true }), (e: any) => e.param === 'in_order');
  // and the other way round: a model's fixed-count policy steps aside for a request's in_order
  const lcModel = { ...m, defaults: { policy: 'low_confidence', cache: 'none', canvas: 'fixed', maxTokens: 8 } };
  assert.deepEqual((await generate(lcModel, [0, 0], { blockLength: 8, inOrder: true })).tokens, [5, 6, 9, 9]);
  // wino runs with none of the model's in_order / separate_twins, and with its own draft threshold
  const winoOver = new Generation({ ...m, defaults: { inOrder: true, separateTwins: true, threshold: 0.95 } }, [0, 0], { policy: 'wino' });
  assert.equal(winoOver.opts.inOrder, false);
  assert.equal(winoOver.opts.separateTwins, false);
  assert.equal(winoOver.opts.params.threshold, 0.6);
  // a model whose policy is wino keeps its threshold for it, and gives way to a request's in_order
  assert.equal(new Generation({ ...m, defaults: { policy: 'wino', threshold: 0.5 } }, [0, 0], {}).opts.params.threshold, 0.5);
  assert.equal(new Generation({ ...m, defaults: { policy: 'wino', threshold: 0.5 } }, [0, 0], { inOrder: true }).opts.policy, 'threshold');
  assert.equal(new Generation({ ...m, defaults: { policy: 'wino', threshold: 0.5 } }, [0, 0], { policy: 'threshold' }).opts.params.threshold, 0.9);
  assert.equal(generationOptions({ reasoning_effort: 'high', policy: 'wino' }, {}).threshold, undefined, "a preset's threshold is not wino's");
  assert.equal(generationOptions({ reasoning_effort: 'high', policy: 'wino', threshold: 0.7 }, {}).threshold, 0.7);
  // the model's answer budget is cut to the room a long prompt leaves (context 512), not a 400
  const long = await generate({ ...m, defaults: { maxTokens: 64, canvas: 'fixed', cache: 'none' } }, Array(500).fill(0), { stopTokens: [] });
  assert.equal(long.tokens.length, 12);
  await assert.rejects(generate(m, Array(500).fill(0), { maxTokens: 64 }), (e: any) => e.code === 'context_length_exceeded', 'a request\'s own max_tokens is still checked');
});

test('defaults that cannot decode are the checkpoint\'s error, found at load, naming the file', () => {
  const m = scriptedModel(16, () => prefer(16, 5));
  for (const defaults of [{ threshold: 2 }, { policy: 'fastest' }, { policy: 'low_confidence', inOrder: true }, { topK: 99 }, { cache: 'triple' }])
    assert.throws(() => checkModelDefaults({ ...m, defaults }), (e: unknown) => invalid(e) && (e as Error).message.startsWith('generation_config.json: '), JSON.stringify(defaults));
  checkModelDefaults({ ...m, defaults: { policy: 'threshold', threshold: 0.95, inOrder: true, maxTokens: 64 } });
  // wino on a model with shifted logits cannot verify: found at load too
  assert.throws(() => checkModelDefaults({ ...scriptedModel(16, () => prefer(16, 5), 4, true), defaults: { policy: 'wino' } }), invalid);
  checkModelDefaults({ ...m, defaults: { policy: 'wino' } });
  checkModelDefaults(m);
  // an answer budget past the context is cut to the room a prompt leaves, as vLLM does: no error
  checkModelDefaults({ ...m, defaults: { maxTokens: 100000 } });
});

test('server: a model\'s defaults under the request; a named reasoning_effort over them', async () => {
  assert.equal(generationOptions({}, { threshold: 0.95 }).threshold, 0.95);
  assert.equal(generationOptions({ reasoning_effort: 'high' }, { threshold: 0.95 }).threshold, 0.99);
  assert.equal(generationOptions({ reasoning_effort: 'high', threshold: 0.5 }, { threshold: 0.95 }).threshold, 0.5);
  assert.equal(generationOptions({}, {}).threshold, undefined, 'no effort named: the engine\'s defaults (the medium preset\'s values)');

  // over HTTP, on a loaded checkpoint whose generation_config.json asks for 12 tokens sampled at 1.5
  const dir = await tempDir('quench-gencfg-');
  await writeFixture(dir, { arch: 'llada', hidden: 32, heads: 2, layers: 1, std: 0.3 });
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ max_new_tokens: 12, do_sample: true, temperature: 1.5, quench: { threshold: 0.95, in_order: true } }));
  const model = await loadModel(dir, { cacheDir: CACHE, threads: 1 });
  const servers: { close(): Promise<unknown> }[] = [];
  after(async () => {
    for (const s of servers) await s.close();
    await model.close();
  });
  assert.deepEqual(model.defaults, { maxTokens: 12, temperature: 1.5, threshold: 0.95, inOrder: true });
  const { client } = await startServer(model, servers);
  const ask = async (c: typeof client, more: Record<string, unknown>) => {
    const r = await c.chat.completions.create({ model: model.id, messages: [{ role: 'user', content: 'hi' }], seed: 3, ignore_eos: true, ...more } as any);
    return { n: r.usage!.completion_tokens, text: r.choices[0].message.content };
  };
  const byFile = await ask(client, {});
  assert.equal(byFile.n, 12);
  assert.deepEqual(await ask(client, { temperature: 1.5, max_tokens: 12 }), byFile, 'the file\'s temperature reached the decoder');
  const greedy = await ask(client, { temperature: 0 });
  assert.notEqual(greedy.text, byFile.text, 'sampling at 1.5 is not the greedy answer');
  assert.equal((await ask(client, { max_tokens: 5 })).n, 5);
  // with a fixed-count policy named, the model's in_order steps aside (200, not a 400)
  assert.equal((await ask(client, { policy: 'low_confidence', steps: 12 })).n, 12);
  // the Responses API reports the temperature decoding used
  const resp = await client.responses.create({ model: model.id, input: 'hi', store: false } as any);
  assert.equal(resp.temperature, 1.5);
  // `quench serve` flags (ServerOptions.defaults) stand over the file
  const flagged = await startServer(model, servers, { temperature: 0 });
  assert.deepEqual(await ask(flagged.client, {}), greedy);

  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ quench: { threshold: 1.5 } }));
  const bad = await loadModel(dir, { cacheDir: CACHE, threads: 1 });
  try {
    assert.throws(() => checkModelDefaults(bad), invalid);
    // a server refuses it when it attaches the model (`quench serve` reports the load as failed)
    await assert.rejects(startServer(bad, servers), invalid);
  } finally {
    await bad.close();
  }
  await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ quench: { thresh: 0.9 } }));
  await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1 }), invalid);
});
