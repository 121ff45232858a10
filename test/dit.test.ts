// MDLM and BD3-LM (the DiT backbone): the ORT graph, whose adaLN modulation is folded into the
// weights at load, against a naive Float64 forward that computes the modulation per block as
// their modeling code does, read straight from config.json's keys and the checkpoint's names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../src/formats/safetensors.ts';
import { parseConfig } from '../src/formats/config.ts';
import { FormatError } from '../src/errors.ts';
import { loadModel, type Model } from '../src/models/registry.ts';
import { CACHE, fixtureModel, range, tempDir, visibility, type Rule } from './helpers.ts';
import { writeFixture } from '../src/formats/fixtures.ts';

type T = { data: Float64Array; shape: number[] };

async function readAll(dir: string): Promise<Map<string, T>> {
  const ck = await Checkpoint.open(dir);
  const w = new Map<string, T>();
  for (const n of ck.names()) w.set(n, { data: Float64Array.from(await ck.readF32(n)), shape: ck.info(n).shape });
  await ck.close();
  return w;
}

/** y = W x + b, W [out, in] */
function lin(W: T, x: Float64Array, b?: T): Float64Array {
  const [out, inp] = W.shape;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b.data[o] : 0;
    for (let i = 0; i < inp; i++) s += W.data[o * inp + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** F.layer_norm without affine (eps 1e-5), then times the weight */
function layerNorm(x: Float64Array, w: Float64Array): Float64Array {
  const mean = x.reduce((a, v) => a + v, 0) / x.length;
  const varc = x.reduce((a, v) => a + (v - mean) ** 2, 0) / x.length;
  const r = 1 / Math.sqrt(varc + 1e-5);
  return x.map((v, i) => (v - mean) * r * w[i]);
}

const silu = (v: number) => v / (1 + Math.exp(-v));
const geluTanh = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));

/** The DiT forward of the MDLM / BD3-LM modeling code, sigma 0, every row; logits with the subs
 * parameterization's -inf at the mask (the last id). */
function ditForward(raw: Record<string, any>, w: Map<string, T>, ids: number[], visible: Uint8Array): Float64Array[] {
  const get = (n: string) => {
    const t = w.get(n);
    if (!t) throw new Error(`missing ${n}`);
    return t;
  };
  const D: number = raw.hidden_dim, H: number = raw.n_heads, Dh = D / H, V: number = raw.vocab_size;
  const adaln = raw.model_type === 'mdlm' || raw.adaln !== false;
  const L = ids.length;
  // c = silu(sigma_map(0)): GLIDE's timestep features of t = 0 are cos(0) = 1, then sin(0) = 0
  let c = new Float64Array(0);
  if (adaln) {
    const feat = Float64Array.from({ length: 256 }, (_, i) => (i < 128 ? Math.cos(0) : Math.sin(0)));
    const h = lin(get('backbone.sigma_map.mlp.0.weight'), feat, get('backbone.sigma_map.mlp.0.bias')).map(silu);
    c = lin(get('backbone.sigma_map.mlp.2.weight'), h, get('backbone.sigma_map.mlp.2.bias')).map(silu);
  }
  const chunks = (prefix: string, n: number) => {
    // (without adaLN: no shift, no scale, gates of 1)
    if (!adaln) return Array.from({ length: n }, (_, k) => new Float64Array(D).fill(k % 3 === 2 ? 1 : 0));
    const m = lin(get(`${prefix}.adaLN_modulation.weight`), c, get(`${prefix}.adaLN_modulation.bias`));
    return Array.from({ length: n }, (_, k) => m.slice(k * D, (k + 1) * D));
  };
  const modulate = (y: Float64Array, shift: Float64Array, scale: Float64Array) => y.map((v, i) => v * (1 + scale[i]) + shift[i]);
  const emb = get('backbone.vocab_embed.embedding');
  let x = ids.map((t) => emb.data.slice(t * D, (t + 1) * D));
  const rope = (v: Float64Array, pos: number) => {
    const out = Float64Array.from(v);
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Dh / 2; i++) {
        const f = Math.fround(1 / 10000 ** ((2 * i) / Dh));
        const cs = Math.cos(pos * f), sn = Math.sin(pos * f);
        const a = v[h * Dh + i], b = v[h * Dh + Dh / 2 + i];
        out[h * Dh + i] = a * cs - b * sn;
        out[h * Dh + Dh / 2 + i] = b * cs + a * sn;
      }
    return out;
  };
  for (let l = 0; l < raw.n_blocks; l++) {
    const b = `backbone.blocks.${l}`;
    const [shiftA, scaleA, gateA, shiftM, scaleM, gateM] = chunks(b, 6);
    const hs = x.map((xi) => modulate(layerNorm(xi, get(`${b}.norm1.weight`).data), shiftA, scaleA));
    const qkv = hs.map((h) => lin(get(`${b}.attn_qkv.weight`), h));
    const q = qkv.map((t, i) => rope(t.slice(0, D), i));
    const k = qkv.map((t, i) => rope(t.slice(D, 2 * D), i));
    const v = qkv.map((t) => t.slice(2 * D, 3 * D));
    const ctx = x.map(() => new Float64Array(D));
    for (let h = 0; h < H; h++)
      for (let i = 0; i < L; i++) {
        const s = Array.from({ length: L }, (_, j) => {
          if (!visible[i * L + j]) return -Infinity;
          let d = 0;
          for (let e = 0; e < Dh; e++) d += q[i][h * Dh + e] * k[j][h * Dh + e];
          return d / Math.sqrt(Dh);
        });
        const mx = Math.max(...s);
        const p = s.map((z) => Math.exp(z - mx));
        const sum = p.reduce((a, z) => a + z, 0);
        for (let j = 0; j < L; j++) for (let e = 0; e < Dh; e++) ctx[i][h * Dh + e] += (p[j] / sum) * v[j][h * Dh + e];
      }
    x = x.map((xi, i) => {
      const o = lin(get(`${b}.attn_out.weight`), ctx[i]);
      return xi.map((t, d) => t + gateA[d] * o[d]);
    });
    x = x.map((xi) => {
      const h = modulate(layerNorm(xi, get(`${b}.norm2.weight`).data), shiftM, scaleM);
      const m = lin(get(`${b}.mlp.2.weight`), lin(get(`${b}.mlp.0.weight`), h, get(`${b}.mlp.0.bias`)).map(geluTanh), get(`${b}.mlp.2.bias`));
      return xi.map((t, d) => t + gateM[d] * m[d]);
    });
  }
  const [shift, scale] = adaln ? chunks('backbone.output_layer', 2) : [new Float64Array(D), new Float64Array(D)];
  return x.map((xi) => {
    const logits = lin(get('backbone.output_layer.linear.weight'), modulate(layerNorm(xi, get('backbone.output_layer.norm_final.weight').data), shift, scale), get('backbone.output_layer.linear.bias'));
    logits[V - 1] = -Infinity;
    return logits;
  });
}

function assertClose(got: Float32Array, want: Float64Array[], rows: number[], V: number, what: string) {
  let scale = 0;
  for (const r of want) for (const v of r) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  rows.forEach((r, qi) => {
    for (let t = 0; t < V; t++) {
      if (!Number.isFinite(want[r][t])) {
        assert.ok(got[qi * V + t] <= -1e8, `${what}: the mask's logit ${got[qi * V + t]} is not suppressed`);
        continue;
      }
      worst = Math.max(worst, Math.abs(got[qi * V + t] - want[r][t]));
    }
  });
  assert.ok(worst <= 1e-4 * scale, `${what}: max |diff| ${worst} > 1e-4 x ${scale}`);
}

const CASES: { label: string; arch: 'mdlm' | 'bd3lm'; rule: Rule; extra?: Record<string, unknown> }[] = [
  { label: 'MDLM (bidirectional)', arch: 'mdlm', rule: 'full' },
  { label: 'BD3-LM, blocks of 4', arch: 'bd3lm', rule: { block: 4 } },
  { label: 'BD3-LM without adaLN, blocks of 2', arch: 'bd3lm', rule: { block: 2 }, extra: { adaln: false, blockSize: 2 } },
];

for (const c of CASES)
  test(`DiT parity with the naive forward of the modeling code: ${c.label}`, async () => {
    const { model, dir } = await fixtureModel({ arch: c.arch, hidden: 64, heads: 4, layers: 2, condDim: 24, std: 0.2, ...c.extra });
    try {
      const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      const w = await readAll(dir);
      const V = model.args.vocabSize;
      assert.equal(model.special.mask, V - 1, 'the mask is the last id');
      assert.equal(model.args.attention, c.rule === 'full' ? 'bidirectional' : 'block_causal');
      let s = 3;
      const ids = Array.from({ length: 11 }, () => (s = (s * 7 + 5) % (V - 1)));
      ids[4] = ids[7] = V - 1; // masks in the canvas
      const pos = range(0, ids.length);
      const want = ditForward(raw, w, ids, visibility(c.rule, pos, pos));
      const [full] = await model.forward([{ ids: Int32Array.from(ids), positions: Int32Array.from(pos), visible: visibility(c.rule, pos, pos), queries: Int32Array.from(pos), wantLogits: true, wantPresent: true }]);
      assertClose(full.logits!, want, pos, V, 'uncached');
      // the first 6 positions' keys and values from the full pass, the rest against them
      const cache = full.takeCache!([], range(0, 6));
      const rest = range(6, ids.length);
      const [cached] = await model.forward([{ ids: Int32Array.from(rest.map((i) => ids[i])), positions: Int32Array.from(rest), past: cache, visible: visibility(c.rule, pos, rest), queries: Int32Array.from(range(0, rest.length)), wantLogits: true }]);
      assertClose(cached.logits!, want, rest, V, 'cached');
    } finally {
      await model.close();
    }
  });

test('DiT configs: the released keys parse; time conditioning, the causal baseline and bad sizes are refused by name', () => {
  // kuleshov-group/mdlm-owt's config.json keys (MDLMConfig)
  const mdlm = parseConfig({ architectures: ['MDLM'], model_type: 'mdlm', vocab_size: 50258, model_length: 1024, hidden_dim: 768, cond_dim: 128, n_blocks: 12, n_heads: 12, dropout: 0.1, time_conditioning: false, return_dict: false });
  assert.equal(mdlm.arch, 'mdlm');
  assert.equal(mdlm.maskTokenId, 50257);
  assert.equal(mdlm.attention, 'bidirectional');
  assert.equal(mdlm.shiftedLogits, false);
  assert.equal(mdlm.headDim, 64);
  assert.equal(mdlm.intermediateSize, 3072);
  assert.equal(mdlm.maxPositions, 1024);
  assert.deepEqual(mdlm.dit, { condDim: 128, adaln: true });
  // kuleshov-group/bd3lm-owt-block_size4's (BD3LMConfig)
  const bd = parseConfig({ architectures: ['BD3LM'], model_type: 'bd3lm', block_size: 4, vocab_size: 50258, model_length: 1024, cross_attn: true, adaln: true, attn_backend: 'sdpa', causal: false, hidden_dim: 768, cond_dim: 128, n_blocks: 12, n_heads: 12, dropout: 0.1, time_conditioning: false, var_min: true, sampling_eps_min: 1e-3, sampling_eps_max: 1 });
  assert.equal(bd.arch, 'bd3lm');
  assert.equal(bd.attention, 'block_causal');
  assert.equal(bd.blockSize, 4);
  // a block spanning the model (or no cross_attn) is the bidirectional model
  assert.equal(parseConfig({ model_type: 'bd3lm', block_size: 1024, model_length: 1024, vocab_size: 50258, hidden_dim: 64, n_blocks: 1, n_heads: 4 }).attention, 'bidirectional');
  assert.equal(parseConfig({ model_type: 'bd3lm', block_size: 4, cross_attn: false, vocab_size: 50258, hidden_dim: 64, n_blocks: 1, n_heads: 4 }).attention, 'bidirectional');
  const refused = (cfg: Record<string, unknown>, re: RegExp) => assert.throws(() => parseConfig({ model_type: 'mdlm', vocab_size: 100, hidden_dim: 64, n_blocks: 1, n_heads: 4, ...cfg }), (e: unknown) => e instanceof FormatError && re.test(e.message));
  refused({ time_conditioning: true }, /time_conditioning/);
  refused({ model_type: 'bd3lm', causal: true }, /causal/);
  refused({ n_heads: 5 }, /head dimension/);
  refused({ hidden_dim: 0 }, /hidden_dim/);
  refused({ mask_token_id: 100 }, /mask_token_id/);
});

test('DiT checkpoints without a tokenizer: a clear error, and --tokenizer (LoadOptions.tokenizer) supplies GPT-2\'s files with its special tokens map', async () => {
  const root = await tempDir('quench-dit-');
  const dir = join(root, 'model');
  const tok = join(root, 'gpt2');
  try {
    await writeFixture(dir, { arch: 'bd3lm', hidden: 32, heads: 2, layers: 1, condDim: 8 });
    mkdirSync(tok);
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
      copyFileSync(join(dir, f), join(tok, f));
      rmSync(join(dir, f));
    }
    await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1 }), (e: unknown) => e instanceof FormatError && e.code === 'tokenizer_missing' && /--tokenizer/.test(e.message));
    const m = await loadModel(dir, { cacheDir: CACHE, threads: 1, tokenizer: tok });
    try {
      const eot = m.codec.encode('<|endoftext|>');
      assert.equal(eot.length, 1);
      assert.deepEqual(m.special.stop, eot, "GPT-2's <|endoftext|> (named only in special_tokens_map.json) ends the text");
      assert.equal(m.special.bos, eot[0]);
      assert.deepEqual(m.codec.encodePrompt('the'), [eot[0], ...m.codec.encode('the')], 'a prompt starts with BOS, as the training sequences do');
      assert.equal(m.special.mask, m.args.vocabSize - 1);
    } finally {
      await m.close();
    }
    // the tokenizer_config.json's own entries win over the map's
    writeFileSync(join(tok, 'tokenizer_config.json'), JSON.stringify({ eos_token: null, add_bos_token: false }));
    const m2 = await loadModel(dir, { cacheDir: CACHE, threads: 1, tokenizer: tok });
    try {
      assert.deepEqual(m2.codec.encodePrompt('the'), m2.codec.encode('the'));
    } finally {
      await m2.close();
    }
    // GPT-2's own files name no special token at all: its tokenizer class's <|endoftext|> is both
    rmSync(join(tok, 'special_tokens_map.json'));
    writeFileSync(join(tok, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 1024 }));
    const m3 = await loadModel(dir, { cacheDir: CACHE, threads: 1, tokenizer: tok });
    try {
      const eot = m3.codec.encode('<|endoftext|>')[0];
      assert.deepEqual(m3.special.stop, [eot]);
      assert.equal(m3.special.bos, eot);
      assert.equal(m3.codec.encodePrompt('the')[0], eot);
    } finally {
      await m3.close();
    }
    // a tokenizer with its own mask token: MDLM uses it, so config.json must name it
    writeFileSync(join(tok, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 1024, mask_token: 'the' }));
    await assert.rejects(loadModel(dir, { cacheDir: CACHE, threads: 1, tokenizer: tok }), (e: unknown) => e instanceof FormatError && e.code === 'config_mismatch' && /mask_token_id/.test(e.message));
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, mask_token_id: m3.codec.encode('the')[0] }));
    const m4 = await loadModel(dir, { cacheDir: CACHE, threads: 1, tokenizer: tok });
    try {
      assert.equal(m4.special.mask, m4.codec.encode('the')[0]);
    } finally {
      await m4.close();
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
