// GGUF: the reader against files written by the fixture encoder, the hardening cases of
// llama.cpp's GGUF tests, and each decoded type against the values it encodes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GgufFile, dequantize, openGguf, type GgufValue } from '../src/formats/gguf.ts';
import { tokenizerOf } from '../src/models/gguf.ts';
import { TextCodec } from '../src/formats/tokenizer.ts';
import { f16ToF32 } from '../src/formats/safetensors.ts';
import { encodeGguf, ggmlEncode, mulberry32, writeFixture, writeGgufFromFixture, type FixtureOptions, type GgufEntry } from '../src/formats/fixtures.ts';
import { loadModel, type Model } from '../src/models/registry.ts';
import { FormatError } from '../src/errors.ts';
import { CACHE, tempDir } from './helpers.ts';
import { resolveModelEntry } from '../src/cli/paths.ts';

const dir = await tempDir('quench-gguf-');
let n = 0;
async function write(bytes: Uint8Array): Promise<string> {
  const p = join(dir, `f${n++}.gguf`);
  await writeFile(p, bytes);
  return p;
}
const rand = (count: number, seed = 1) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: count }, () => (r() - 0.5) * 4);
};
const META: GgufEntry[] = [
  ['general.architecture', 8, 'llada'],
  ['general.alignment', 4, 32],
  ['x.count', 10, 7],
  ['x.list', 9, ['a', 'bé', ''], 8],
  ['x.nums', 9, [1, 2, 3], 5],
  ['x.flag', 7, true],
  ['x.f', 6, 0.5],
];

test('gguf: a leading byte-order mark in a string is kept', async () => {
  const f = await GgufFile.open(await write(encodeGguf({ metadata: [['x', 8, '\ufeffhi']], tensors: [] })));
  assert.equal(f.metadata.get('x'), '\ufeffhi');
  await f.close();
});

test('gguf: metadata of every kind and tensors of each type read back', async () => {
  const x = rand(64 * 3);
  const tensors = [0, 1, 30, 8, 2].map((type) => ({ name: `t${type}`, dims: [64, 3], type, data: ggmlEncode(type, x) }));
  const f = await GgufFile.open(await write(encodeGguf({ metadata: META, tensors })));
  try {
    assert.equal(f.version, 3);
    assert.equal(f.metadata.get('general.architecture'), 'llada');
    assert.equal(f.metadata.get('x.count'), 7n);
    assert.deepEqual(f.metadata.get('x.list'), ['a', 'bé', '']);
    assert.deepEqual(f.metadata.get('x.nums'), [1, 2, 3]);
    assert.equal(f.metadata.get('x.flag'), true);
    assert.equal(f.metadata.get('x.f'), 0.5);
    assert.deepEqual(f.tensors.get('t8')!.dims, [64, 3]);
    const tol: Record<number, number> = { 0: 0, 1: 2e-3, 30: 2e-2, 8: 2 / 127 + 1e-3, 2: 2 / 8 + 1e-3 };
    for (const type of [0, 1, 30, 8, 2]) {
      const got = await f.readF32(`t${type}`);
      assert.equal(got.length, x.length);
      // each value within its format's step: half a quantization step of the block's scale (|x| <= 2)
      let worst = 0;
      for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(got[i] - x[i]));
      assert.ok(worst <= tol[type], `type ${type}: worst error ${worst}`);
    }
  } finally {
    await f.close();
  }
});

test('gguf: Q8_0 and Q4_0 decode by their published layouts (hand-built blocks)', () => {
  // Q8_0: fp16 scale 0.5 (0x3800), then int8 values
  const q8 = Buffer.alloc(34);
  q8.writeUInt16LE(0x3800, 0);
  for (let j = 0; j < 32; j++) q8.writeInt8(j - 16, 2 + j);
  assert.deepEqual(Array.from(dequantize(8, q8, 32)), Array.from({ length: 32 }, (_, j) => 0.5 * (j - 16)));
  // Q4_0: scale 2 (0x4000); byte j holds value j (low nibble) and value j + 16 (high nibble), minus 8
  const q4 = Buffer.alloc(18);
  q4.writeUInt16LE(0x4000, 0);
  for (let j = 0; j < 16; j++) q4.writeUInt8((j & 15) | ((15 - j) << 4), 2 + j);
  const want = [...Array.from({ length: 16 }, (_, j) => 2 * (j - 8)), ...Array.from({ length: 16 }, (_, j) => 2 * (15 - j - 8))];
  assert.deepEqual(Array.from(dequantize(2, q4, 32)), want);
  // BF16: the high half of an fp32
  const bf = Buffer.alloc(4);
  bf.writeUInt16LE(0x3fc0, 0); // 1.5
  bf.writeUInt16LE(0xc040, 2); // -3
  assert.deepEqual(Array.from(dequantize(30, bf, 2)), [1.5, -3]);
});

test('gguf: malformed files are refused with a typed error, never a crash (llama.cpp test-gguf cases)', async () => {
  const good = { metadata: META, tensors: [{ name: 'w', dims: [32, 2], type: 8, data: ggmlEncode(8, rand(64)) }] };
  const bytes = encodeGguf(good);
  const refuse = async (b: Uint8Array, code: RegExp, label: string) => {
    await assert.rejects(GgufFile.open(await write(b)), (e: unknown) => e instanceof FormatError && code.test(e.code), label);
  };
  const patched = (at: number, f: (b: Buffer) => void) => {
    const b = Buffer.from(bytes);
    f(b);
    return b;
  };
  await refuse(patched(0, (b) => b.write('GGUX', 0)), /gguf_magic/, 'bad magic');
  await refuse(patched(4, (b) => b.writeUInt32LE(1, 4)), /gguf_version/, 'version 1');
  await refuse(patched(4, (b) => b.writeUInt32LE(4, 4)), /gguf_version/, 'version 4');
  await refuse(patched(8, (b) => b.writeBigUInt64LE(1n << 40n, 8)), /gguf_count/, 'huge tensor count');
  await refuse(patched(16, (b) => b.writeBigUInt64LE(1n << 62n, 16)), /gguf_count/, 'huge kv count');
  // the first key's length (right after the 24-byte header) larger than the rest of the file
  await refuse(patched(24, (b) => b.writeBigUInt64LE(BigInt(bytes.length), 24)), /gguf_count/, 'string past the end');
  await refuse(bytes.subarray(0, 40), /gguf_truncated|gguf_count/, 'truncated header');
  await refuse(bytes.subarray(0, bytes.length - 40), /gguf_tensor_bounds/, 'tensor data past the end');
  const variant = (o: Partial<typeof good> & { alignment?: number }) => encodeGguf({ ...good, ...o });
  await refuse(variant({ tensors: [{ name: 'w', dims: [32, 2, 1, 1, 1], type: 8, data: ggmlEncode(8, rand(64)) }] }), /gguf_dims/, 'five dimensions');
  await refuse(variant({ tensors: [{ name: 'w', dims: [2 ** 40, 2 ** 20], type: 0, data: new Uint8Array(0) }] }), /gguf_dims|gguf_tensor_bounds/, 'dimension overflow');
  await refuse(variant({ tensors: [{ name: 'w', dims: [33, 2], type: 8, data: new Uint8Array(68) }] }), /gguf_dims/, 'rows that are not whole blocks');
  await refuse(variant({ tensors: [{ name: 'w', dims: [256], type: 16, data: new Uint8Array(66) }] }), /gguf_tensor_type/, 'a type not decoded (IQ2_XXS)');
  await refuse(variant({ tensors: [{ name: 'w', dims: [4], type: 99, data: new Uint8Array(16) }] }), /gguf_tensor_type/, 'an unknown type');
  const w = { name: 'w', dims: [32], type: 0, data: new Uint8Array(128) };
  await refuse(variant({ tensors: [w, w] }), /gguf_duplicate_tensor/, 'duplicate tensor names');
  await refuse(variant({ metadata: [...META, ['x.count', 10, 8]] }), /gguf_duplicate_key/, 'duplicate keys');
  await refuse(variant({ metadata: [['general.alignment', 4, 24]] }), /gguf_alignment/, 'alignment not a power of two');
  await refuse(variant({ metadata: [['x', 9, [[1]], [9, 5]]] }), /gguf_nested_array/, 'an array of arrays');
  await refuse(variant({ metadata: [['x', 9, Array(5_000_000).fill(0), 0], ['y', 9, Array(5_000_000).fill(0), 0]] }), /gguf_count/, 'more array items in the file than the limit');
  await refuse(variant({ metadata: [['', 4, 1]] }), /gguf_key/, 'an empty key');
  await refuse(variant({ tensors: [{ name: 'n'.repeat(64), dims: [32], type: 0, data: new Uint8Array(128) }] }), /gguf_tensor_name/, 'a tensor name of 64 bytes');
  const bad8 = Buffer.from(variant({ metadata: [['x', 8, 'ab']] }));
  bad8[24 + 8 + 1 + 4 + 8] = 0xff; // the string's first byte: not UTF-8
  await refuse(bad8, /gguf_string_utf8/, 'a string that is not UTF-8');
  const typed = Buffer.from(variant({ metadata: [['x', 4, 0]] }));
  typed.writeUInt32LE(13, 24 + 8 + 1); // the value type after the key "x"
  await refuse(typed, /gguf_value_type/, 'unknown value type');
  // a misaligned tensor offset: patch the stored offset of the only tensor (its last 8 header bytes)
  const one = encodeGguf({ metadata: [], tensors: [w], alignment: 32 });
  const infoEnd = 24 + 8 + 1 + 4 + 8 + 4 + 8; // header, name "w", n_dims, dims, type, offset
  const mis = Buffer.from(one);
  mis.writeBigUInt64LE(4n, infoEnd - 8);
  await refuse(mis, /gguf_alignment/, 'misaligned offset');
});

// ---------------------------------------------------------------- models from GGUF files

/** A metadata value read back, as an entry to write again (its GGUF type from its JS type). */
const asEntry = ([k, v]: [string, unknown]): GgufEntry =>
  Array.isArray(v) ? [k, 9, v, typeof v[0] === 'string' ? 8 : 5] : typeof v === 'string' ? [k, 8, v] : typeof v === 'boolean' ? [k, 7, v] : Number.isInteger(v) ? [k, 4, v] : [k, 6, v];

/** A one-layer fixture of `arch` written as the converter writes it, read back as parts to edit and write again. */
async function convertedParts(arch: 'llada' | 'dream' | 'rnd1') {
  const hfDir = await tempDir(`quench-gguf-${arch}-parts-`);
  await writeFixture(hfDir, { arch, hidden: 64, heads: 4, layers: 1, dtype: 'F32', ...(arch === 'rnd1' ? { experts: 4, expertsPerToken: 2, expertSize: 32 } : {}) });
  const file = join(dir, `${arch}-parts-${n++}.gguf`);
  await writeGgufFromFixture(hfDir, file, 0);
  const f = await GgufFile.open(file);
  try {
    const tensors = await Promise.all([...f.tensors.values()].map(async (t) => ({ name: t.name, dims: t.dims, type: 0, data: ggmlEncode(0, await f.readF32(t.name)) })));
    return { entries: [...f.metadata.entries()].map(asEntry), tensors };
  } finally {
    await f.close();
  }
}

const loaded: Model[] = [];
after(async () => {
  for (const m of loaded) await m.close();
});

/** One full forward over `ids`: every position's logits row. */
async function logits(m: Model, ids: number[]): Promise<Float32Array> {
  const L = ids.length;
  const causal = m.args.attention === 'causal';
  const visible = new Uint8Array(L * L).map((_, k) => (!causal || k % L <= Math.floor(k / L) ? 1 : 0));
  const [r] = await m.forward([{ ids: Int32Array.from(ids), positions: Int32Array.from(ids.map((_, i) => i)), visible, queries: Int32Array.from(ids.map((_, i) => i)), wantLogits: true }]);
  return r.logits!;
}

test('gguf models: llada, llada-moe, llada2, rnd1, dream, llama, qwen2 and qwen3 files (as the converter writes them) give the logits of their Hugging Face checkpoints', async () => {
  const cases: [FixtureOptions, number, number][] = [
    [{ arch: 'llada', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, dtype: 'F32' }, 0, 1e-3],
    [{ arch: 'dream', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, dtype: 'F32' }, 0, 1e-3],
    [{ arch: 'llama', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, dtype: 'F32' }, 0, 1e-3],
    [{ arch: 'qwen2', hidden: 64, heads: 4, layers: 2, std: 0.3, dtype: 'F32', tied: true }, 1, 2e-2],
    [{ arch: 'qwen3', hidden: 64, heads: 4, kvHeads: 2, headDim: 32, layers: 2, std: 0.3, dtype: 'F32' }, 0, 1e-3],
    [{ arch: 'llada', hidden: 64, heads: 4, layers: 2, std: 0.3, dtype: 'F32' }, 8, 0.15],
    // LLaDA-MoE: a layer's experts stacked into ffn_{gate,up,down}_exps, the router ffn_gate_inp
    [{ arch: 'llada_moe', hidden: 64, heads: 4, kvHeads: 2, headDim: 32, layers: 2, std: 0.3, dtype: 'F32', experts: 5, expertsPerToken: 2, expertSize: 32 }, 0, 1e-3],
    [{ arch: 'llada_moe', hidden: 64, heads: 4, layers: 2, std: 0.3, dtype: 'F32', experts: 4, expertsPerToken: 2, expertSize: 32 }, 8, 0.15],
    // RND1 (llama.cpp's rnd1): Qwen3-MoE tensors, q/k norms, renormalized routing, unpermuted q/k, no shift key
    [{ arch: 'rnd1', hidden: 64, heads: 4, kvHeads: 2, headDim: 32, layers: 2, std: 0.3, dtype: 'F32', experts: 5, expertsPerToken: 2, expertSize: 32 }, 0, 1e-3],
    [{ arch: 'rnd1', hidden: 64, heads: 4, layers: 2, std: 0.3, dtype: 'F32', experts: 4, expertsPerToken: 2, expertSize: 32 }, 8, 0.15],
    // LLaDA2.0 (llama.cpp's open llada2 layout): the fused qkv, partial RoPE, a dense first layer,
    // grouped sigmoid routing with the expert bias, a shared expert
    [{ arch: 'llada2', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, dtype: 'F32', experts: 8, expertsPerToken: 2, expertSize: 32, groups: 4, groupsKept: 2, sharedExperts: 1, firstDense: 1 }, 0, 1e-3],
    // (in Q8_0 every expert runs, all groups kept: sigmoid routing between near-equal experts would
    // flip on the quantization's perturbation, which is not what this compares; F32 checks the choice)
    [{ arch: 'llada2', hidden: 64, heads: 4, layers: 2, std: 0.3, dtype: 'F32', experts: 4, expertsPerToken: 4, expertSize: 32, groups: 2, groupsKept: 2, sharedExperts: 2, firstDense: 0 }, 8, 0.15],
  ];
  for (const [o, type, tol] of cases) {
    const hfDir = await tempDir(`quench-gguf-${o.arch}-`);
    await writeFixture(hfDir, o);
    const file = join(dir, `${o.arch}-${type}.gguf`);
    await writeGgufFromFixture(hfDir, file, type);
    const hf = await loadModel(hfDir, { cacheDir: CACHE, threads: 1 });
    const gg = await loadModel(file, { cacheDir: CACHE, threads: 1 });
    loaded.push(hf, gg);
    const label = `${o.arch} type ${type}`;
    // (GGUF stores eps as f32; a config.json without bos_token_id (LLaDA2.0's fixture) leaves
    // args.bosTokenId null where the GGUF carries the tokenizer's: the codecs' specials agree, below)
    assert.deepEqual({ ...gg.args, rmsNormEps: 0, bosTokenId: hf.args.bosTokenId === null ? null : gg.args.bosTokenId }, { ...hf.args, rmsNormEps: 0 }, label);
    assert.ok(Math.abs(gg.args.rmsNormEps - hf.args.rmsNormEps) < 1e-9);
    assert.equal(gg.id, `${o.arch}-${type}`);
    assert.deepEqual(resolveModelEntry(file), { dir: file, name: `${o.arch}-${type}` });
    const ids = [3, 17, 40, 41, 99, 7, 12, 64];
    const a = await logits(hf, ids);
    const b = await logits(gg, ids);
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < a.length; i++) (worst = Math.max(worst, Math.abs(a[i] - b[i]))), (scale = Math.max(scale, Math.abs(a[i])));
    assert.ok(worst <= tol * Math.max(1, scale), `${label}: logits differ by ${worst} (scale ${scale})`);
    // the tokenizer and chat template from the metadata agree with tokenizer.json
    const text = 'hello there 12 and the end';
    assert.deepEqual(gg.codec.encode(text), hf.codec.encode(text), label);
    assert.equal(gg.codec.decode(hf.codec.encode(text)), text);
    const chat = [{ role: 'user', content: 'Hi there.' }];
    assert.deepEqual(gg.codec.encodeChat(chat), hf.codec.encodeChat(chat), label);
    assert.deepEqual(gg.special, hf.special, label);
  }
});

test('gguf: a Q4_K file under --dtype int4 keeps its 4-bit blocks (no second rounding): closer to the file\'s fp32 logits than the same weights rounded again', async () => {
  const hfDir = await tempDir('quench-gguf-q4k-');
  await writeFixture(hfDir, { arch: 'llama', hidden: 256, heads: 4, kvHeads: 2, layers: 1, intermediate: 512, std: 0.3, dtype: 'F32' });
  const file = join(dir, 'q4k.gguf');
  await writeGgufFromFixture(hfDir, file, 12);
  // the same weights as F32, each moved off its grid by 1e-5: int4 rounds them again (the Q4_0 rule)
  const f = await GgufFile.open(file);
  const entries = [...f.metadata.entries()].map(asEntry);
  const tensors = await Promise.all(
    [...f.tensors.values()].map(async (t) => {
      const x = await f.readF32(t.name);
      if (t.dims.length === 2) for (let i = 0; i < x.length; i += 3) x[i] += 1e-5;
      return { name: t.name, dims: t.dims, type: 0, data: ggmlEncode(0, x) };
    }),
  );
  await f.close();
  const jittered = join(dir, 'q4k-jittered.gguf');
  await writeFile(jittered, encodeGguf({ metadata: entries, tensors }));
  const ids = [3, 17, 40, 41, 99, 7, 12, 64];
  const fp = await loadModel(file, { cacheDir: CACHE, threads: 1, dtype: 'fp32' });
  loaded.push(fp);
  const want = await logits(fp, [3, 17, 40, 41, 99, 7, 12, 64]);
  const gap = async (path: string) => {
    const q = await loadModel(path, { cacheDir: CACHE, threads: 1, dtype: 'int4' });
    loaded.push(q);
    const got = await logits(q, ids);
    let sq = 0;
    let norm = 0;
    for (let i = 0; i < want.length; i++) (sq += (got[i] - want[i]) ** 2), (norm += want[i] ** 2);
    return Math.sqrt(sq / norm);
  };
  const kept = await gap(file);
  const rounded = await gap(jittered);
  // (what is left when kept: MatMulNBits' int8 activations and the int8 head, in both)
  assert.ok(kept < 0.25 * rounded, `Q4_K under int4: ${kept} of the logits' norm, rounded again: ${rounded}`);
});

test('gguf: a split file (gguf-split parts) loads from any part as the one file does; a missing, foreign or overlapping part is refused by name', async () => {
  const hfDir = await tempDir('quench-gguf-split-');
  await writeFixture(hfDir, { arch: 'llama', hidden: 64, heads: 4, kvHeads: 2, layers: 2, std: 0.3, dtype: 'F32' });
  const whole = join(dir, 'split-whole.gguf');
  await writeGgufFromFixture(hfDir, whole, 8);
  const base = join(dir, 'split-m-Q8_0.gguf');
  await writeGgufFromFixture(hfDir, base, 8, 3);
  const part = (k: number) => base.replace(/\.gguf$/, `-0000${k}-of-00003.gguf`);
  const one = await loadModel(whole, { cacheDir: CACHE, threads: 1 });
  loaded.push(one);
  const ids = [3, 17, 40, 41, 99, 7];
  const want = await logits(one, ids);
  for (const k of [1, 3]) {
    const m = await loadModel(part(k), { cacheDir: CACHE, threads: 1 });
    loaded.push(m);
    assert.equal(m.id, 'split-m-Q8_0', 'named without the part suffix');
    assert.deepEqual(await logits(m, ids), want, `opened from part ${k}`);
  }
  assert.equal(resolveModelEntry(part(1)).name, 'split-m-Q8_0');
  const src = await openGguf(part(2));
  assert.deepEqual(src.files, [1, 2, 3].map(part));
  assert.equal(src.tensors.size, (await GgufFile.open(whole).then(async (f) => { const n = f.tensors.size; await f.close(); return n; })));
  await src.close();
  // refusals
  const refuse = async (path: string, code: string, re: RegExp, what: string) =>
    assert.rejects(openGguf(path), (e: unknown) => e instanceof FormatError && e.code === code && re.test(e.message), what);
  const bytes = readFileSync(part(2));
  rmSync(part(2));
  await refuse(part(1), 'gguf_split', /part 2 of 3 .* is missing/, 'a missing part');
  writeFileSync(part(2), readFileSync(part(3)));
  await refuse(part(1), 'gguf_split', /is not part 2 of 3/, 'a part that says it is another');
  writeFileSync(part(2), bytes);
  const renamed = join(dir, 'split-renamed.gguf');
  writeFileSync(renamed, readFileSync(part(1)));
  await refuse(renamed, 'gguf_split', /one of 3 parts/, 'a part not named as one');
  // a part whose tensor is also in another part, and a total that does not match
  const f1 = await GgufFile.open(part(1));
  const firstName = [...f1.tensors.keys()][0];
  const t1 = f1.tensors.get(firstName)!;
  const data1 = ggmlEncode(0, await f1.readF32(firstName));
  await f1.close();
  const f3 = await GgufFile.open(part(3));
  const t3 = await Promise.all([...f3.tensors.values()].map(async (t) => ({ name: t.name, dims: t.dims, type: 0, data: ggmlEncode(0, await f3.readF32(t.name)) })));
  await f3.close();
  const split3 = (total: number): GgufEntry[] => [['split.no', 2, 2], ['split.count', 2, 3], ['split.tensors.count', 5, total]];
  const keep = readFileSync(part(3));
  writeFileSync(part(3), encodeGguf({ metadata: split3(0), tensors: [...t3, { name: firstName, dims: t1.dims, type: 0, data: data1 }] }));
  await refuse(part(1), 'gguf_duplicate_tensor', /is in two parts/, 'a tensor in two parts');
  writeFileSync(part(3), encodeGguf({ metadata: split3(0), tensors: t3.slice(1) }));
  await refuse(part(1), 'gguf_split', /split.tensors.count says/, 'a tensor short');
  writeFileSync(part(3), keep);
  const ok = await openGguf(part(1));
  await ok.close();
});

test('gguf models: metadata that cannot make a model is refused by name', async () => {
  const { entries, tensors: data } = await convertedParts('dream');
  const meta = entries.map(([k, , v]) => [k, v] as [string, unknown]);
  const variant = async (edit: (m: [string, unknown][]) => [string, unknown][], tensorsOf = data) => {
    const p = join(dir, `variant-${n++}.gguf`);
    await writeFile(p, encodeGguf({ metadata: edit(meta.map(([k, v]) => [k, v])).map(asEntry), tensors: tensorsOf }));
    return p;
  };
  const refuse = async (p: string, re: RegExp) => assert.rejects(loadModel(p, { cacheDir: CACHE }), (e: unknown) => e instanceof FormatError && re.test(e.message));
  await refuse(await variant((m) => m.map(([k, v]) => [k, k === 'general.architecture' ? 'mamba' : v])), /architecture "mamba" is not supported/);
  await refuse(await variant((m) => m.filter(([k]) => k !== 'tokenizer.ggml.mask_token_id')), /mask_token_id/);
  await refuse(await variant((m) => m.map(([k, v]) => [k, k === 'dream.attention.head_count' ? 5 : v])), /metadata/);
  await refuse(await variant((m) => m.map(([k, v]) => [k, k === 'tokenizer.ggml.pre' ? 'tekken' : v])), /tokenizer\.ggml\.pre "tekken" is not supported/);
  await refuse(await variant((m) => m.map(([k, v]) => [k, k === 'tokenizer.ggml.model' ? 'llama' : v])), /tokenizer\.ggml\.model "llama"/);
  await refuse(await variant((m) => m.map(([k, v]) => [k, k === 'tokenizer.ggml.eos_token_id' ? 99999 : v])), /eos_token_id/);
  await refuse(await variant((m) => m, data.filter((t) => t.name !== 'blk.0.ffn_up.weight')), /ffn_up/);
  await refuse(await variant((m) => m.map(([k, v]) => [k, k === 'dream.embedding_length' ? 128 : v])), /token_embd|embedding|shape/);
  // per-layer arrays: one value for every layer loads as that value; others are refused by name
  await refuse(await variant((m) => m.map(([k, v]) => [k, k === 'dream.attention.head_count_kv' ? [4, 2] : v])), /dream\.attention\.head_count_kv differs per layer \(\[4,2\] for 1 layer\)/);
  loaded.push(await loadModel(await variant((m) => m.map(([k, v]) => [k, k === 'dream.attention.head_count_kv' ? [4] : v])), { cacheDir: CACHE }));
  await refuse(await variant((m) => [...m, ['dream.attention.value_length', 8]]), /value_length 8 differs from the key size/);
  const ll = await convertedParts('llada');
  const llmeta = ll.entries.map(([k, , v]) => [k, v] as [string, unknown]);
  const llfile = join(dir, `variant-${n++}.gguf`);
  await writeFile(llfile, encodeGguf({ metadata: [...llmeta, ['llada.attention.key_length', 32] as [string, unknown]].map(asEntry), tensors: ll.tensors }));
  await refuse(llfile, /llada\.attention\.key_length 32 is not embedding_length \/ head_count \(64 \/ 4\)/);
  // rnd1: its config class would fill a missing key with Qwen3-30B-A3B's value (top 8, eps 1e-6);
  // from a GGUF file that is refused by name (the file as written loads)
  const r = await convertedParts('rnd1');
  const rmeta = r.entries.map(([k, , v]) => [k, v] as [string, unknown]);
  const rvariant = async (drop: string) => {
    const p = join(dir, `variant-${n++}.gguf`);
    await writeFile(p, encodeGguf({ metadata: rmeta.filter(([k]) => k !== drop).map(asEntry), tensors: r.tensors }));
    return p;
  };
  loaded.push(await loadModel(await rvariant('none'), { cacheDir: CACHE }));
  for (const key of ['rnd1.expert_used_count', 'rnd1.attention.layer_norm_rms_epsilon', 'rnd1.context_length']) await refuse(await rvariant(key), new RegExp(`${key.replace(/\./g, '\\.')} is missing`));
  // llada2 likewise (its config class would take eps 1e-5)
  const l2dir = await tempDir('quench-gguf-llada2-keys-');
  await writeFixture(l2dir, { arch: 'llada2', hidden: 64, heads: 4, layers: 1, dtype: 'F32', experts: 4, expertsPerToken: 2, expertSize: 32, groups: 2, groupsKept: 1 });
  const l2file = join(dir, `llada2-keys-${n++}.gguf`);
  await writeGgufFromFixture(l2dir, l2file, 0);
  const l2 = await GgufFile.open(l2file);
  const l2parts = { entries: [...l2.metadata.entries()].map(asEntry), tensors: await Promise.all([...l2.tensors.values()].map(async (t) => ({ name: t.name, dims: t.dims, type: 0, data: ggmlEncode(0, await l2.readF32(t.name)) }))) };
  await l2.close();
  const p2 = join(dir, `variant-${n++}.gguf`);
  await writeFile(p2, encodeGguf({ metadata: l2parts.entries.filter(([k]) => k !== 'llada2.attention.layer_norm_rms_epsilon'), tensors: l2parts.tensors }));
  await refuse(p2, /llada2\.attention\.layer_norm_rms_epsilon is missing/);
});

// ---------------------------------------------------------------- the 5-bit and K quant types

/** ggml's reference dequantizers in their own loop order (block by block, as ggml-quants.c walks them). */
function referenceBlocks(type: number, b: Uint8Array, n: number): Float32Array {
  const f = Math.fround;
  const h = (o: number) => f16ToF32(b[o] | (b[o + 1] << 8));
  const y = new Float32Array(n);
  let k = 0;
  const scaleMin = (j: number, o: number) =>
    j < 4 ? [b[o + j] & 63, b[o + j + 4] & 63] : [(b[o + j + 4] & 0xf) | ((b[o + j - 4] >> 6) << 4), (b[o + j + 4] >> 4) | ((b[o + j] >> 6) << 4)];
  if (type === 3 || type === 6 || type === 7) {
    const size = { 3: 20, 6: 22, 7: 24 }[type];
    for (let at = 0; k < n; at += size) {
      const d = h(at);
      const m = type === 6 ? 0 : h(at + 2);
      const qhAt = type === 6 ? 2 : 4;
      const qh = type === 3 ? 0 : (b[at + qhAt] | (b[at + qhAt + 1] << 8) | (b[at + qhAt + 2] << 16) | (b[at + qhAt + 3] << 24)) >>> 0;
      const qs = at + (type === 3 ? 4 : type === 6 ? 6 : 8);
      for (let j = 0; j < 16; j++) {
        const xh0 = type === 3 ? 0 : ((qh >>> j) << 4) & 0x10;
        const xh1 = type === 3 ? 0 : (qh >>> (j + 12)) & 0x10;
        const x0 = (b[qs + j] & 0x0f) | xh0;
        const x1 = (b[qs + j] >> 4) | xh1;
        y[k + j] = type === 6 ? f((x0 - 16) * d) : f(f(x0 * d) + m);
        y[k + j + 16] = type === 6 ? f((x1 - 16) * d) : f(f(x1 * d) + m);
      }
      k += 32;
    }
  } else if (type === 12 || type === 13) {
    const size = type === 12 ? 144 : 176;
    for (let at = 0; k < n; at += size) {
      const d = h(at);
      const min = h(at + 2);
      let q = at + (type === 12 ? 16 : 48);
      let is = 0;
      let u1 = 1;
      let u2 = 2;
      for (let j = 0; j < 256; j += 64) {
        const [sc1, m1s] = scaleMin(is, at + 4);
        const [sc2, m2s] = scaleMin(is + 1, at + 4);
        const d1 = f(d * sc1), m1 = f(min * m1s), d2 = f(d * sc2), m2 = f(min * m2s);
        for (let l = 0; l < 32; l++) y[k++] = f(f(d1 * ((b[q + l] & 0xf) + (type === 13 && b[at + 16 + l] & u1 ? 16 : 0))) - m1);
        for (let l = 0; l < 32; l++) y[k++] = f(f(d2 * ((b[q + l] >> 4) + (type === 13 && b[at + 16 + l] & u2 ? 16 : 0))) - m2);
        q += 32;
        is += 2;
        u1 <<= 2;
        u2 <<= 2;
      }
    }
  } else if (type === 10) {
    // dequantize_row_q2_K
    for (let at = 0; k < n; at += 84) {
      const d = h(at + 80);
      const min = h(at + 82);
      let q = at + 16;
      let is = 0;
      for (let nn = 0; nn < 256; nn += 128) {
        let shift = 0;
        for (let j = 0; j < 4; j++) {
          for (const off of [0, 16]) {
            const sc = b[at + is++];
            const dl = f(d * (sc & 0xf));
            const ml = f(min * (sc >> 4));
            for (let l = 0; l < 16; l++) y[k++] = f(f(dl * ((b[q + l + off] >> shift) & 3)) - ml);
          }
          shift += 2;
        }
        q += 32;
      }
    }
  } else if (type === 11) {
    // dequantize_row_q3_K: the 12 scale bytes read as three u32 words and repacked into 16 int8
    for (let at = 0; k < n; at += 110) {
      const d = h(at + 108);
      const w = (o: number) => (b[at + 96 + o] | (b[at + 97 + o] << 8) | (b[at + 98 + o] << 16) | (b[at + 99 + o] << 24)) >>> 0;
      const [a0, a1, tmp] = [w(0), w(4), w(8)];
      const k1 = 0x03030303;
      const k2 = 0x0f0f0f0f;
      const aux = new Uint32Array([(a0 & k2) | (((tmp >>> 0) & k1) << 4), (a1 & k2) | (((tmp >>> 2) & k1) << 4), ((a0 >>> 4) & k2) | (((tmp >>> 4) & k1) << 4), ((a1 >>> 4) & k2) | (((tmp >>> 6) & k1) << 4)]);
      const scales = new Int8Array(aux.buffer);
      let q = at + 32;
      let m = 1;
      let is = 0;
      for (let nn = 0; nn < 256; nn += 128) {
        let shift = 0;
        for (let j = 0; j < 4; j++) {
          for (const off of [0, 16]) {
            const dl = f(d * (scales[is++] - 32));
            for (let l = 0; l < 16; l++) y[k++] = f(dl * (((b[q + l + off] >> shift) & 3) - (b[at + l + off] & m ? 0 : 4)));
          }
          shift += 2;
          m <<= 1;
        }
        q += 32;
      }
    }
  } else if (type === 20 || type === 23) {
    // dequantize_row_iq4_nl / dequantize_row_iq4_xs
    const kv = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
    for (let at = 0; k < n; at += type === 20 ? 18 : 136) {
      const d = h(at);
      if (type === 20) {
        for (let j = 0; j < 16; j++) {
          y[k + j] = f(d * kv[b[at + 2 + j] & 0xf]);
          y[k + j + 16] = f(d * kv[b[at + 2 + j] >> 4]);
        }
        k += 32;
        continue;
      }
      const scalesH = b[at + 2] | (b[at + 3] << 8);
      let qs = at + 8;
      for (let ib = 0; ib < 8; ib++) {
        const ls = ((b[at + 4 + Math.floor(ib / 2)] >> (4 * (ib % 2))) & 0xf) | (((scalesH >> (2 * ib)) & 3) << 4);
        const dl = f(d * (ls - 32));
        for (let j = 0; j < 16; j++) {
          y[k + j] = f(dl * kv[b[qs + j] & 0xf]);
          y[k + j + 16] = f(dl * kv[b[qs + j] >> 4]);
        }
        k += 32;
        qs += 16;
      }
    }
  } else if (type === 14) {
    for (let at = 0; k < n; at += 210) {
      const d = h(at + 208);
      let ql = at;
      let qh = at + 128;
      let sc = at + 192;
      for (let half = 0; half < 2; half++) {
        for (let l = 0; l < 32; l++) {
          const is = l >> 4;
          const s8 = (o: number) => (b[sc + o] << 24) >> 24;
          const q1 = ((b[ql + l] & 0xf) | (((b[qh + l] >> 0) & 3) << 4)) - 32;
          const q2 = ((b[ql + l + 32] & 0xf) | (((b[qh + l] >> 2) & 3) << 4)) - 32;
          const q3 = ((b[ql + l] >> 4) | (((b[qh + l] >> 4) & 3) << 4)) - 32;
          const q4 = ((b[ql + l + 32] >> 4) | (((b[qh + l] >> 6) & 3) << 4)) - 32;
          y[k + l] = f(f(d * s8(is)) * q1);
          y[k + l + 32] = f(f(d * s8(is + 2)) * q2);
          y[k + l + 64] = f(f(d * s8(is + 4)) * q3);
          y[k + l + 96] = f(f(d * s8(is + 6)) * q4);
        }
        k += 128;
        ql += 64;
        qh += 32;
        sc += 8;
      }
    }
  }
  return y;
}

test('gguf: Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS decode bit for bit as ggml\'s reference loops', () => {
  const r = mulberry32(9);
  for (const [type, block, bytes, halves] of [[3, 32, 20, [0, 2]], [6, 32, 22, [0]], [7, 32, 24, [0, 2]], [10, 256, 84, [80, 82]], [11, 256, 110, [108]], [12, 256, 144, [0, 2]], [13, 256, 176, [0, 2]], [14, 256, 210, [208]], [20, 32, 18, [0]], [23, 256, 136, [0]]] as const) {
    const blocks = 40;
    const b = new Uint8Array(blocks * bytes).map(() => Math.floor(r() * 256));
    for (let i = 0; i < blocks; i++)
      for (const o of halves) {
        // a finite fp16 scale: exponent 0..30, any sign and mantissa (subnormals included)
        const bits = (Math.floor(r() * 2) << 15) | (Math.floor(r() * 31) << 10) | Math.floor(r() * 1024);
        b[i * bytes + o] = bits & 0xff;
        b[i * bytes + o + 1] = bits >> 8;
      }
    const got = dequantize(type, b, blocks * block);
    const want = referenceBlocks(type, b, blocks * block);
    assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer), `type ${type}`);
    assert.ok(got.some((x) => x !== 0));
  }
  // a hand-built Q6_K block: d = 1 (last), scale of values 16..31 is -2, value 17 is q = (0x5 | 0b10 << 4) - 32 = 5
  const q6 = new Uint8Array(210);
  q6[208] = 0x00;
  q6[209] = 0x3c; // fp16 1.0
  q6[192 + 1] = 0xfe; // int8 -2
  q6[17] = 0x05; // low nibble of value 17
  q6[128 + 17] = 0b10; // its 2 high bits
  assert.equal(dequantize(14, q6, 256)[17], -2 * ((0x5 | (0b10 << 4)) - 32));
  // a hand-built Q3_K block: d = 1; value 130 (second half, plane 0, l = 2): low bits 0b11 in byte
  // 32 + 32 + 2, its high bit (bit 4 of byte 2) clear, so q = 3 - 4 = -1; its scale is number 8
  // (130 >> 4): low nibble = high nibble of byte 0, high 2 bits = bits 4-5 of byte 8 + 0
  const q3 = new Uint8Array(110);
  q3[108] = 0x00;
  q3[109] = 0x3c;
  q3[64 + 2] = 0b11;
  q3[96 + 0] = 0x50; // scale 8 low nibble 5
  q3[96 + 8] = 0b10 << 4; // scale 8 high bits 2: 5 | 2 << 4 = 37, minus 32 = 5
  const x3 = dequantize(11, q3, 256);
  assert.equal(x3[130], 5 * -1);
  assert.equal(x3[131], 5 * -4, 'a value with all bits clear is -4 (its high bit clear)');
  assert.equal(x3[0], 128, 'scale 0 is 0 - 32 = -32, q 0 with its high bit clear is -4');
  // a hand-built IQ4_XS block: d = 0.5; sub-block 3's scale: low nibble 1 (high nibble of byte
  // 4 + 1), high bits 0b10 (bits 6-7 of scales_h): 1 | 2 << 4 = 33, minus 32 = 1; its value 20
  // is the high nibble of its byte 4 -> level 4 of the table, -49
  const iq = new Uint8Array(136);
  iq[0] = 0x00;
  iq[1] = 0x38; // fp16 0.5
  iq[2] = 0b10 << 6;
  iq[4 + 1] = 0x10;
  iq[8 + 16 * 3 + 4] = 0x40;
  assert.equal(dequantize(23, iq, 256)[3 * 32 + 20], 0.5 * 1 * -49);
});

test('gguf tokenizer: tokens named like object properties, user-defined added tokens, filler ids, the Llama 3 merges flag', () => {
  const toks = ['c', 'o', 'n', 's', 't', 'r', 'u', '_', 'p', 'constructor', '__proto__', '<tool>', '<|eot|>', '[PAD13]'];
  const meta = new Map<string, GgufValue>([
    ['tokenizer.ggml.model', 'gpt2'],
    ['tokenizer.ggml.pre', 'llama-bpe'],
    ['tokenizer.ggml.tokens', toks],
    ['tokenizer.ggml.token_type', [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 3, 5]],
    ['tokenizer.ggml.merges', []],
    ['tokenizer.ggml.eos_token_id', 12],
  ]);
  const { json, config } = tokenizerOf(meta, 14);
  assert.equal((json.model as { ignore_merges: boolean }).ignore_merges, true);
  const vocab = (json.model as { vocab: Record<string, number> }).vocab;
  assert.equal(vocab.constructor, 9);
  assert.equal(vocab.__proto__, 10);
  assert.ok(!('[PAD13]' in vocab));
  assert.equal(config.eos_token, '<|eot|>');
  const codec = new TextCodec(json, config);
  assert.deepEqual(codec.encode('constructor'), [9]);
  assert.deepEqual(codec.encode('s<tool>'), [3, 11]);
  assert.equal(codec.decode([11, 9], false), '<tool>constructor');
  // qwen2 text is NFC-normalized first, as its tokenizer.json does
  meta.set('tokenizer.ggml.pre', 'qwen2');
  assert.deepEqual(tokenizerOf(meta, 14).json.normalizer, { type: 'NFC' });
});

/** llama.cpp's BailingMoE pre-tokenizer rules for ASCII text, written as a scanner (no regex). */
function bailingSplit(text: string): string[] {
  const letter = (c: string | undefined) => c !== undefined && /[A-Za-z]/.test(c);
  const digit = (c: string | undefined) => c !== undefined && c >= '0' && c <= '9';
  const space = (c: string | undefined) => c !== undefined && ' \t\n\r\f\v'.includes(c);
  const newline = (c: string | undefined) => c === '\n' || c === '\r';
  const punct = (c: string | undefined) => c !== undefined && !space(c) && !letter(c) && !digit(c);
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const at = (k: number) => text[i + k];
    let n = 0;
    const two = (at(1) ?? '') + (at(2) ?? '');
    if (at(0) === "'" && 'sdmt'.includes((at(1) ?? '#').toLowerCase())) n = 2;
    else if (at(0) === "'" && ['ll', 've', 're'].includes(two.toLowerCase())) n = 3;
    else if (letter(at(0)) || (!newline(at(0)) && !letter(at(0)) && !digit(at(0)) && letter(at(1)))) {
      n = letter(at(0)) ? 0 : 1;
      while (letter(at(n))) n++;
    } else if (digit(at(0))) n = 1;
    else if (punct(at(0)) || (at(0) === ' ' && punct(at(1)))) {
      n = at(0) === ' ' ? 1 : 0;
      while (punct(at(n))) n++;
      while (newline(at(n))) n++;
    } else {
      let run = 0;
      while (space(at(run))) run++;
      let lastNewline = -1;
      for (let k = 0; k < run; k++) if (newline(at(k))) lastNewline = k;
      if (lastNewline >= 0) n = lastNewline + 1; // \s*[\r\n]
      else if (i + run < text.length && run > 1) n = run - 1; // \s+(?!\S): the last space goes with what follows
      else n = run; // \s+
    }
    out.push(text.slice(i, i + n));
    i += n;
  }
  return out;
}

test('gguf tokenizer: Ling / LLaDA-MoE / LLaDA2 files (tokenizer.ggml.pre bailingmoe, bailingmoe2, llada-moe) split as llama.cpp does', () => {
  const toks = [...'abcdefghijklmnopqrstuvwxyzILRVEY'.split(''), 'Ġ', 'Ċ', 'ĉ', 'č', "'", '!', ',', '?', '.', '0', '1', '2', '4'];
  const meta = new Map<string, GgufValue>([
    ['tokenizer.ggml.model', 'gpt2'],
    ['tokenizer.ggml.tokens', toks],
    ['tokenizer.ggml.token_type', toks.map(() => 1)],
    ['tokenizer.ggml.merges', []],
  ]);
  // (byte-level pieces back to text, for ASCII)
  const plain = (p: string) => p.replace(/Ġ/g, ' ').replace(/Ċ/g, '\n').replace(/ĉ/g, '\t').replace(/č/g, '\r');
  const texts = [
    "It's 2024, isn't it?\n\n  Yes!!\n ok  \t go's 'LL x'Re 'VE",
    'a  b   c\t\td \n\n\t e\r\nf ?! .\n\n,, 12ab',
    "  lead and trail  ' '' 'x 'ss  ",
  ];
  for (const pre of ['bailingmoe', 'bailingmoe2', 'llada-moe']) {
    meta.set('tokenizer.ggml.pre', pre);
    const { json, config } = tokenizerOf(meta, toks.length);
    assert.equal(json.normalizer, null, 'no NFC, as llama.cpp');
    const codec = new TextCodec(json, config);
    for (const t of texts) {
      assert.deepEqual(codec.tokenizer.pre_tokenizer!.pre_tokenize(t).map(plain), bailingSplit(t), `${pre}: ${JSON.stringify(t)}`);
      assert.equal(codec.decode(codec.encode(t), false), t);
    }
  }
});

test('gguf models: tensors the graph would not read (a variant quench does not build) are refused, not dropped', async () => {
  const { entries, tensors } = await convertedParts('llada');
  for (const [extra, re] of [['blk.0.attn_q_norm.weight', /attn_q_norm.*no place/], ['rope_freqs.weight', /rope_freqs/]] as const) {
    const p = join(dir, `extra-${n++}.gguf`);
    await writeFile(p, encodeGguf({ metadata: entries, tensors: [...tensors, { name: extra, dims: [16], type: 0, data: ggmlEncode(0, new Float32Array(16)) }] }));
    await assert.rejects(loadModel(p, { cacheDir: CACHE }), (e: unknown) => e instanceof FormatError && re.test(e.message), extra);
  }
});
