// LoRA adapters (PEFT's format) merged at load: the adapted model against the Float64 reference
// with the adapter merged in by hand (W + alpha/r * B @ A in plain loops), PEFT's scaling rules,
// and the adapters quench refuses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadReference, referenceForward, type RefModel } from './reference.ts';
import { CACHE, range, tempDir, visibility, type Rule } from './helpers.ts';
import { writeFixture, writeLoraFixture, writeGgufFromFixture, type FixtureOptions, type LoraFixtureOptions } from '../src/formats/fixtures.ts';
import { SafetensorsFile, toFloat32, writeSafetensors, Checkpoint, type TensorToWrite } from '../src/formats/safetensors.ts';
import { loadModel, type Model, type LoadOptions } from '../src/models/registry.ts';
import { loraScale, parseLoraConfig } from '../src/formats/lora.ts';
import { QuenchError } from '../src/errors.ts';

const PFX = 'base_model.model.';

/** The adapter's tensors, read with the safetensors reader only (not through formats/lora.ts). */
async function adapterTensors(dir: string): Promise<Map<string, { shape: number[]; x: Float64Array }>> {
  const f = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const out = new Map<string, { shape: number[]; x: Float64Array }>();
  for (const [name, t] of f.tensors) out.set(name, { shape: t.shape, x: Float64Array.from(toFloat32(t.dtype, await f.read(name))) });
  await f.close();
  return out;
}

/** Merge by hand into a name -> [rows, cols] Float64 map: the oracle. scale(module) gives alpha / r.
 * Tensors saved whole (modules_to_save; a targeted module's own, under base_layer) replace the
 * base's first; the pairs add to what is there then. */
function mergeByHand(w: Map<string, { data: Float64Array; rows: number; cols: number }>, t: Awaited<ReturnType<typeof adapterTensors>>, scale: (module: string) => number): string[] {
  const touched: string[] = [];
  for (const [key, a] of t) {
    const name = key.slice(PFX.length);
    if (/\.lora_(A|B)\.weight$|\.lora_embedding_(A|B)$/.test(name)) continue;
    const target = name.replace('.base_layer.', '.');
    w.get(target)!.data.set(a.x);
    touched.push(target);
  }
  for (const [key, a] of t) {
    const name = key.slice(PFX.length);
    let m: RegExpExecArray | null;
    if ((m = /^(.*)\.lora_A\.weight$/.exec(name))) {
      const W = w.get(`${m[1]}.weight`)!, B = t.get(`${PFX}${m[1]}.lora_B.weight`)!;
      const r = a.shape[0], s = scale(m[1]);
      for (let o = 0; o < W.rows; o++)
        for (let i = 0; i < W.cols; i++) {
          let d = 0;
          for (let k = 0; k < r; k++) d += B.x[o * r + k] * a.x[k * W.cols + i];
          W.data[o * W.cols + i] += s * d;
        }
      touched.push(`${m[1]}.weight`);
    } else if ((m = /^(.*)\.lora_embedding_A$/.exec(name))) {
      // E [V, D] += s * (B [D, r] @ A [r, V])^T
      const E = w.get(`${m[1]}.weight`)!, B = t.get(`${PFX}${m[1]}.lora_embedding_B`)!;
      const r = a.shape[0], s = scale(m[1]);
      for (let v = 0; v < E.rows; v++)
        for (let j = 0; j < E.cols; j++) {
          let d = 0;
          for (let k = 0; k < r; k++) d += B.x[j * r + k] * a.x[k * E.rows + v];
          E.data[v * E.cols + j] += s * d;
        }
      touched.push(`${m[1]}.weight`);
    }
  }
  return touched;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

async function logits(model: Model, ids: number[], rule: Rule): Promise<Float32Array> {
  const pos = range(0, ids.length);
  const [r] = await model.forward([{ ids: Int32Array.from(ids), positions: Int32Array.from(pos), visible: visibility(rule, pos, pos), queries: Int32Array.from(pos), wantLogits: true }]);
  return r.logits!;
}

function worstDiff(got: Float32Array, want: Float64Array[], V: number): number {
  let worst = 0;
  want.forEach((row, q) => {
    for (let t = 0; t < V; t++) worst = Math.max(worst, Math.abs(got[q * V + t] - row[t]));
  });
  return worst;
}

const CASES: { label: string; base: FixtureOptions; rule: Rule; lora: LoraFixtureOptions; scale: (m: string) => number; saved?: string[] }[] = [
  {
    label: 'llada: q/v/ff_out pairs, an embedding pair, a replaced head, alpha_pattern',
    base: { arch: 'llada', hidden: 64, heads: 4, layers: 2, dtype: 'BF16' },
    rule: 'full',
    lora: { targets: ['q_proj', 'v_proj', 'ff_out'], r: 4, alpha: 8, alphaPattern: { 'blocks.1.q_proj': 2 }, embedding: 'model.transformer.wte.weight', embeddingBase: 0.05, replace: ['model.transformer.ff_out.weight'] },
    // (alpha 8 / r 4, but block 1's q_proj alpha 2 / 4; the top-level ff_out is replaced, not a pair)
    scale: (m) => (m === 'model.transformer.blocks.1.q_proj' ? 0.5 : 2),
  },
  {
    label: 'dream (Qwen2 layout): rslora, rank_pattern, every projection, trained q/k/v biases and embedding saved under base_layer',
    base: { arch: 'dream', hidden: 64, heads: 4, kvHeads: 2, layers: 2 },
    rule: 'full',
    lora: { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], r: 8, alpha: 16, rslora: true, rankPattern: { down_proj: 2 }, dtype: 'BF16', std: 0.15, biases: true, embedding: 'model.embed_tokens.weight', embeddingBase: 0.1 },
    scale: (m) => (m.endsWith('down_proj') ? 16 / Math.sqrt(2) : 16 / Math.sqrt(8)),
    saved: ['model.layers.0.self_attn.q_proj.base_layer.bias', 'model.layers.1.self_attn.v_proj.base_layer.bias', 'model.embed_tokens.base_layer.weight', 'model.embed_tokens.lora_embedding_A'],
  },
  {
    label: 'llada_moe: pairs on the experts and the router',
    base: { arch: 'llada_moe', hidden: 64, heads: 4, layers: 2, experts: 4, expertsPerToken: 2, expertSize: 24 },
    rule: 'full',
    lora: { targets: ['gate_proj', 'up_proj', 'down_proj', 'gate', 'q_proj'], r: 2, alpha: 4, std: 0.25 },
    scale: () => 2,
  },
];

for (const c of CASES) {
  test(`LoRA merged at load matches the Float64 reference merged by hand: ${c.label}`, async () => {
    const base = await tempDir('quench-lora-base-');
    const ad = await tempDir('quench-lora-');
    await writeFixture(base, c.base);
    await writeLoraFixture(ad, base, c.lora);
    const ref: RefModel = await loadReference(base);
    const tensors = await adapterTensors(ad);
    // (the names PEFT writes, e.g. a targeted module's bias under its base_layer)
    for (const n of c.saved ?? []) assert.ok(tensors.has(PFX + n), `the adapter holds ${n}`);
    const touched = mergeByHand(ref.w, tensors, c.scale);
    assert.ok(touched.length >= 3, `the adapter touches ${touched.length} tensors`);
    const plain = await loadModel(base, { cacheDir: CACHE, threads: 2 });
    const model = await loadModel(base, { cacheDir: CACHE, threads: 2, lora: ad });
    try {
      assert.equal(model.id, ad.split('/').pop(), 'served under the adapter\'s name');
      const V = model.args.vocabSize;
      const ids = [3, 9, 14, 2, 7, 21, 5, 11, 30, 4];
      const want = referenceForward(ref, ids, range(0, ids.length), visibility(c.rule, range(0, ids.length), range(0, ids.length)));
      const scale = Math.max(...want.map(maxAbs));
      const got = await logits(model, ids, c.rule);
      const diff = worstDiff(got, want, V);
      assert.ok(diff <= 1e-4 * scale, `adapted: max |diff| ${diff} > 1e-4 x ${scale}`);
      // (and the adapter matters: the base alone is far from the merged reference)
      const off = worstDiff(await logits(plain, ids, c.rule), want, V);
      assert.ok(off > 100 * Math.max(diff, 1e-6 * scale), `the base alone differs by ${off} only`);
    } finally {
      await model.close();
      await plain.close();
    }
  });
}

test('LoRA on a DiT (MDLM): merged before the adaLN fold, the same as loading the merged checkpoint', async () => {
  const base = await tempDir('quench-lora-dit-');
  const ad = await tempDir('quench-lora-');
  const merged = await tempDir('quench-lora-merged-');
  await writeFixture(base, { arch: 'mdlm', hidden: 64, heads: 4, layers: 2, condDim: 32 });
  await writeLoraFixture(ad, base, { targets: ['attn_qkv', 'attn_out', '0', '2'], r: 3, alpha: 6 });
  // the merged checkpoint, written by hand
  const ck = await Checkpoint.open(base);
  const w = new Map<string, { data: Float64Array; rows: number; cols: number }>();
  for (const n of ck.names()) {
    const i = ck.info(n);
    w.set(n, { data: Float64Array.from(await ck.readF32(n)), rows: i.shape[0], cols: i.shape[1] ?? 1 });
  }
  const shapes = new Map(ck.names().map((n) => [n, ck.info(n).shape]));
  await ck.close();
  const touched = mergeByHand(w, await adapterTensors(ad), () => 2);
  assert.ok(touched.some((n) => n.endsWith('attn_qkv.weight')) && touched.some((n) => n.endsWith('mlp.2.weight')), touched.join());
  const tensors: TensorToWrite[] = [...w].map(([name, m]) => ({ name, dtype: 'F32', shape: shapes.get(name)!, data: new Uint8Array(Float32Array.from(m.data).buffer) }));
  await writeSafetensors(join(merged, 'model.safetensors'), tensors);
  for (const f of await readdir(base)) if (!f.endsWith('.safetensors')) await copyFile(join(base, f), join(merged, f));
  const a = await loadModel(base, { cacheDir: CACHE, threads: 2, lora: ad });
  const b = await loadModel(merged, { cacheDir: CACHE, threads: 2 });
  try {
    const ids = [1, 5, 9, 2, 40, 7];
    const x = await logits(a, ids, 'full'), y = await logits(b, ids, 'full');
    let worst = 0;
    for (let i = 0; i < x.length; i++) if (Number.isFinite(y[i])) worst = Math.max(worst, Math.abs(x[i] - y[i]));
    assert.ok(worst <= 1e-4 * maxAbs(y.filter(Number.isFinite)), `max |diff| ${worst}`);
  } finally {
    await a.close();
    await b.close();
  }
});

test("PEFT's scaling: alpha / r, alpha / sqrt(r) with use_rslora, patterns matched on a module's name ending", () => {
  const cfg = parseLoraConfig(JSON.stringify({ peft_type: 'LORA', r: 16, lora_alpha: 32, rank_pattern: { 'layers.3.mlp.down_proj': 4 }, alpha_pattern: { q_proj: 8, 'layers\\.[12]\\.self_attn\\.v_proj': 64 } }));
  assert.deepEqual(loraScale(cfg, 'model.layers.0.self_attn.k_proj'), { rank: 16, scale: 2 });
  assert.deepEqual(loraScale(cfg, 'model.layers.0.self_attn.q_proj'), { rank: 16, scale: 0.5 });
  // (the pattern must end at the module's end and start after a dot: not a substring match)
  assert.deepEqual(loraScale(cfg, 'model.layers.0.self_attn.xq_proj'), { rank: 16, scale: 2 });
  assert.deepEqual(loraScale(cfg, 'model.layers.0.self_attn.q_proj.inner'), { rank: 16, scale: 2 });
  assert.deepEqual(loraScale(cfg, 'model.layers.2.self_attn.v_proj'), { rank: 16, scale: 4 });
  assert.deepEqual(loraScale(cfg, 'model.layers.3.self_attn.v_proj'), { rank: 16, scale: 2 });
  assert.deepEqual(loraScale(cfg, 'model.layers.3.mlp.down_proj'), { rank: 4, scale: 8 });
  assert.deepEqual(loraScale(cfg, 'model.layers.13.mlp.down_proj'), { rank: 16, scale: 2 });
  const rs = parseLoraConfig(JSON.stringify({ r: 16, lora_alpha: 32, use_rslora: true }));
  assert.deepEqual(loraScale(rs, 'a.b'), { rank: 16, scale: 8 });
  // (PEFT's defaults: r 8, lora_alpha 8)
  assert.deepEqual(loraScale(parseLoraConfig('{}'), 'x'), { rank: 8, scale: 1 });
});

async function expectCode(p: Promise<unknown>, code: string, what: string) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof QuenchError, `${what}: ${String(e)}`);
    assert.equal(e.code, code, `${what}: ${e.message}`);
    return true;
  });
}

test('adapters quench cannot merge exactly are refused with a typed error naming the reason', async () => {
  const base = await tempDir('quench-lora-bad-');
  await writeFixture(base, { arch: 'llada', hidden: 32, heads: 2, layers: 1, dtype: 'F32' });
  const load = (ad: string, o: LoadOptions = {}) => loadModel(base, { cacheDir: CACHE, threads: 1, lora: ad, ...o }).then((m) => m.close());
  const fresh = async (o: LoraFixtureOptions = { targets: ['q_proj'] }) => {
    const d = await tempDir('quench-lora-');
    await writeLoraFixture(d, base, o);
    return d;
  };
  const editConfig = async (d: string, f: (c: Record<string, unknown>) => void) => {
    const c = JSON.parse(await readFile(join(d, 'adapter_config.json'), 'utf8'));
    f(c);
    await writeFile(join(d, 'adapter_config.json'), JSON.stringify(c));
  };
  const rewrite = async (d: string, f: (t: TensorToWrite[]) => TensorToWrite[]) => {
    const file = await SafetensorsFile.open(join(d, 'adapter_model.safetensors'));
    const t: TensorToWrite[] = [];
    for (const [name, i] of file.tensors) t.push({ name, dtype: i.dtype, shape: i.shape, data: new Uint8Array(await file.read(name)) });
    await file.close();
    await writeSafetensors(join(d, 'adapter_model.safetensors'), f(t));
  };

  let d = await fresh();
  await editConfig(d, (c) => (c.use_dora = true));
  await expectCode(load(d), 'adapter_unsupported', 'DoRA');
  d = await fresh();
  await editConfig(d, (c) => (c.peft_type = 'IA3'));
  await expectCode(load(d), 'adapter_unsupported', 'another PEFT method');
  // initialisations that rebuild a residual base at load, and variants that are no plain low-rank sum
  for (const [k, v] of [['init_lora_weights', 'pissa_niter_4'], ['init_lora_weights', 'olora'], ['init_lora_weights', 'loftq'], ['alora_invocation_tokens', [5, 6]], ['use_qalora', true], ['target_parameters', ['mlp.experts.gate_up_proj']], ['layer_replication', [[0, 1]]]] as const) {
    d = await fresh();
    await editConfig(d, (c) => (c[k] = v));
    await expectCode(load(d), 'adapter_unsupported', `${k} ${JSON.stringify(v)}`);
  }
  // (initialisations that leave the base alone merge as any adapter)
  d = await fresh();
  await editConfig(d, (c) => ((c.init_lora_weights = 'gaussian'), (c.target_parameters = null), (c.layer_replication = null)));
  await load(d);
  d = await fresh({ targets: [], embedding: 'model.transformer.wte.weight', embeddingBase: 0 });
  await rewrite(d, (t) => [...t, ...t.filter((x) => x.name.endsWith('.base_layer.weight')).map((x) => ({ ...x, name: x.name.replace('.base_layer', '') }))]);
  await expectCode(load(d), 'adapter_tensor_unknown', 'one tensor saved twice (whole and under base_layer)');
  // patterns that could backtrack catastrophically (a repeated group) are refused before any match
  for (const key of ['([\\w.]+)+!', '(a|aa)*', '.*.*.*!', 'x'.repeat(300)]) {
    d = await fresh();
    await editConfig(d, (c) => (c.rank_pattern = { [key]: 4 }));
    await expectCode(load(d), 'adapter_config_invalid', `pattern ${key.slice(0, 20)}`);
  }
  d = await fresh();
  await editConfig(d, (c) => (c.alpha_pattern = { 'layers\\.\\d+\\.q_proj': 4, '(q|k)_proj': 2 }));
  await load(d);
  // a rank past the tensor's smaller side (32 here)
  d = await fresh({ targets: ['q_proj'], r: 33 });
  await expectCode(load(d), 'config_mismatch', 'rank over the tensor');
  d = await fresh();
  await editConfig(d, (c) => (c.r = 3));
  await expectCode(load(d), 'config_mismatch', 'r disagrees with the tensors');
  d = await fresh();
  await rewrite(d, (t) => t.filter((x) => !x.name.endsWith('lora_B.weight')));
  await expectCode(load(d), 'adapter_tensor_missing', 'lora_A without lora_B');
  d = await fresh();
  await rewrite(d, (t) => t.map((x) => (x.name.endsWith('lora_A.weight') ? { ...x, name: x.name.replace('q_proj', 'qq_proj') } : x)));
  await expectCode(load(d), 'adapter_tensor_missing', 'a pair split across two modules');
  d = await fresh();
  await rewrite(d, (t) => t.map((x) => ({ ...x, name: x.name.replace('q_proj', 'qq_proj') })));
  await expectCode(load(d), 'adapter_tensor_unknown', 'a module the base lacks');
  d = await fresh();
  await rewrite(d, (t) => t.map((x) => ({ ...x, name: x.name.replace(PFX, '') })));
  await expectCode(load(d), 'adapter_tensor_unknown', 'names without base_model.model.');
  d = await fresh();
  await rewrite(d, (t) => [...t, { name: `${PFX}model.transformer.blocks.0.q_proj.lora_magnitude_vector`, dtype: 'F32', shape: [32], data: new Uint8Array(128) }]);
  await expectCode(load(d), 'adapter_unsupported', 'a DoRA magnitude without use_dora');
  d = await fresh({ targets: ['q_proj'], r: 2 });
  await rewrite(d, (t) => t.map((x) => (x.name.endsWith('lora_B.weight') ? { ...x, shape: [16, 2], data: x.data.subarray(0, 16 * 2 * 4) } : x)));
  await expectCode(load(d), 'config_mismatch', 'B rows that do not fit the base');
  d = await fresh({ targets: [], replace: ['model.transformer.wte.weight'] });
  await rewrite(d, (t) => t.map((x) => ({ ...x, shape: [x.shape[0] - 1, x.shape[1]], data: x.data.subarray(0, (x.shape[0] - 1) * x.shape[1] * 4) })));
  await expectCode(load(d), 'config_mismatch', 'a resized vocabulary');
  d = await fresh({ targets: [] });
  await expectCode(load(d), 'adapter_empty', 'no tensors');
  d = await fresh();
  await rm(join(d, 'adapter_model.safetensors'));
  await writeFile(join(d, 'adapter_model.bin'), 'pickle');
  await assert.rejects(load(d), /pickle/);
  d = await fresh({ targets: ['q_proj'], std: 1e30 });
  await expectCode(load(d), 'tensor_not_finite', 'an overflowing merge');
  // a tied embedding: PEFT changes the input side only, a merge would change the head too
  const tied = await tempDir('quench-lora-tied-');
  await writeFixture(tied, { arch: 'llama', hidden: 32, heads: 2, layers: 1, tied: true, dtype: 'F32' });
  d = await tempDir('quench-lora-');
  await writeLoraFixture(d, tied, { targets: ['q_proj'], embedding: 'model.embed_tokens.weight' });
  await expectCode(loadModel(tied, { cacheDir: CACHE, lora: d }).then((m) => m.close()), 'adapter_unsupported', 'embedding of a tied model');
  // quench show makes the same checks
  const { describe } = await import('../src/cli/show.ts');
  await expectCode(describe(tied, undefined, undefined, d), 'adapter_unsupported', 'show: embedding of a tied model');
  // GGUF files carry no PEFT names
  const gguf = join(await tempDir('quench-lora-gguf-'), 'm.gguf');
  await writeGgufFromFixture(base, gguf, 0);
  await expectCode(loadModel(gguf, { cacheDir: CACHE, lora: await fresh() }).then((m) => m.close()), 'invalid_option', 'a GGUF base');
});

test("an adapter's own tokenizer files are used; a changed adapter converts again", async () => {
  const base = await tempDir('quench-lora-tok-');
  await writeFixture(base, { arch: 'llada', hidden: 32, heads: 2, layers: 1, dtype: 'F32' });
  const ad = await tempDir('quench-lora-');
  await writeLoraFixture(ad, base, { targets: ['q_proj', 'k_proj'], seed: 1 });
  const cfg = JSON.parse(await readFile(join(base, 'tokenizer_config.json'), 'utf8'));
  for (const f of await readdir(base)) if (f.startsWith('tokenizer') || f === 'special_tokens_map.json') await copyFile(join(base, f), join(ad, f));
  await writeFile(join(ad, 'tokenizer_config.json'), JSON.stringify({ ...cfg, chat_template: 'ADAPTED {{ messages[0].content }}' }));
  const cacheDir = await tempDir('quench-lora-cache-');
  const a = await loadModel(base, { cacheDir, threads: 1, lora: ad });
  const first = await logits(a, [3, 4, 5], 'full');
  assert.equal(a.codec.applyChatTemplate([{ role: 'user', content: 'hi' }]), 'ADAPTED hi');
  await a.close();
  // a new adapter in the same place: its own cache entry, its own output
  await writeLoraFixture(ad, base, { targets: ['q_proj', 'k_proj'], seed: 2 });
  const b = await loadModel(base, { cacheDir, threads: 1, lora: ad });
  assert.equal(b.cached, false, 'converted again');
  const second = await logits(b, [3, 4, 5], 'full');
  await b.close();
  assert.ok(maxAbs(first.map((x, i) => x - second[i])) > 1e-3, 'the new adapter changes the output');
  const c = await loadModel(base, { cacheDir, threads: 1, lora: ad });
  assert.equal(c.cached, true, 'and is cached');
  await c.close();
});
