// File formats: safetensors reader validation (one malformed file per rule), sharded
// index path safety, writer -> reader round trips, float conversions against independent
// references, and config.json parsing / rejection.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../src/errors.ts';
import {
  Checkpoint,
  DTYPE_SIZES,
  MAX_HEADER_BYTES,
  SafetensorsFile,
  encodeSafetensorsHeader,
  f16ToF32,
  fromFloat32,
  parseHeader,
  parseIndex,
  toFloat32,
  writeSafetensors,
  type DType,
} from '../src/formats/safetensors.ts';
import { parseConfig } from '../src/formats/config.ts';
import { mulberry32, writeFixture, type FixtureArch } from '../src/formats/fixtures.ts';
import { loadModel } from '../src/models/registry.ts';
import { tempDir } from './helpers.ts';

const dirs: string[] = [];
async function tmp(prefix: string): Promise<string> {
  const d = await tempDir(`quench-fmt-${prefix}-`);
  dirs.push(d);
  return d;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Assert that `p` rejects with a FormatError carrying `code`. */
async function rejectsCode(p: Promise<unknown> | (() => Promise<unknown>), code: string, msg?: RegExp): Promise<void> {
  await assert.rejects(typeof p === 'function' ? p() : p, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.equal(e.code, code, `code (message: ${e.message})`);
    if (msg) assert.match(e.message, msg);
    return true;
  });
}

function throwsCode(fn: () => unknown, code: string, msg?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.equal(e.code, code, `code (message: ${e.message})`);
    if (msg) assert.match(e.message, msg);
    return true;
  });
}

// ---------------------------------------------------------------- hand-built safetensors

/** 8-byte LE length + header bytes + data, with an explicit (possibly lying) length. */
function rawFile(header: Uint8Array | string, data: Uint8Array | number = 0, lengthField?: bigint): Buffer {
  const hb = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthField ?? BigInt(hb.length));
  const body = typeof data === 'number' ? Buffer.alloc(data, 0xab) : Buffer.from(data);
  return Buffer.concat([len, hb, body]);
}

function headerJson(h: unknown): string {
  return JSON.stringify(h);
}

let fileNo = 0;
async function writeRaw(buf: Uint8Array): Promise<string> {
  const d = await tmp('st');
  const p = join(d, `f${fileNo++}.safetensors`);
  await writeFile(p, buf);
  return p;
}

async function openRaw(buf: Uint8Array): Promise<SafetensorsFile> {
  return SafetensorsFile.open(await writeRaw(buf));
}

const t = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

describe('safetensors reader validation', () => {
  test('a well-formed hand-built file opens (control for the malformed cases)', async () => {
    const f = await openRaw(
      rawFile(headerJson({ __metadata__: { format: 'pt' }, a: t('F32', [2], [0, 8]), b: t('U8', [3], [8, 11]), z: t('F32', [0, 4], [11, 11]) }), 11),
    );
    try {
      assert.deepEqual([...f.tensors.keys()].sort(), ['a', 'b', 'z']);
      assert.deepEqual(f.metadata, { format: 'pt' });
      assert.equal(f.tensors.get('b')!.offset, 8 + Buffer.byteLength(headerJson({ __metadata__: { format: 'pt' }, a: t('F32', [2], [0, 8]), b: t('U8', [3], [8, 11]), z: t('F32', [0, 4], [11, 11]) })) + 8);
      assert.equal((await f.read('b')).length, 3);
      assert.equal((await f.read('z')).length, 0);
    } finally {
      await f.close();
    }
  });

  test('file shorter than 8 bytes -> safetensors_truncated', async () => {
    await rejectsCode(openRaw(new Uint8Array(0)), 'safetensors_truncated');
    await rejectsCode(openRaw(new Uint8Array([2, 0, 0, 0, 0, 0, 0])), 'safetensors_truncated');
  });

  test('header length over 100 MB -> safetensors_header_too_large (without allocating it)', async () => {
    await rejectsCode(openRaw(rawFile('{}', 0, BigInt(MAX_HEADER_BYTES + 1))), 'safetensors_header_too_large');
    await rejectsCode(openRaw(rawFile('{}', 0, 0xffffffffffffffffn)), 'safetensors_header_too_large');
    // 2^53 + 1 would be rounded by a Number conversion; still too large
    await rejectsCode(openRaw(rawFile('{}', 0, 2n ** 53n + 1n)), 'safetensors_header_too_large');
  });

  test('header length past EOF -> safetensors_header_bounds', async () => {
    await rejectsCode(openRaw(rawFile('{}', 0, 3n)), 'safetensors_header_bounds');
    await rejectsCode(openRaw(rawFile('', 0, 1n)), 'safetensors_header_bounds');
  });

  test('header not UTF-8 -> safetensors_header_utf8', async () => {
    const bad = Buffer.concat([Buffer.from('{"a'), Buffer.from([0xc3, 0x28]), Buffer.from('":{}}')]);
    await rejectsCode(openRaw(rawFile(bad)), 'safetensors_header_utf8');
    await rejectsCode(openRaw(rawFile(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))), 'safetensors_header_utf8');
  });

  test('header not JSON or not an object -> safetensors_header_json', async () => {
    for (const h of ['{', 'not json', '', '[]', '[{"a":1}]', 'null', '42', '"str"', 'true']) {
      await rejectsCode(openRaw(rawFile(h)), 'safetensors_header_json');
    }
  });

  test('unknown dtype -> safetensors_dtype', async () => {
    for (const dt of ['F128', 'float32', 'f32', '', 'Q4_0'])
      await rejectsCode(openRaw(rawFile(headerJson({ w: t(dt, [1], [0, 4]) }), 4)), 'safetensors_dtype');
    await rejectsCode(openRaw(rawFile(headerJson({ w: { shape: [1], data_offsets: [0, 4] } }), 4)), 'safetensors_dtype');
    await rejectsCode(openRaw(rawFile(headerJson({ w: { dtype: 4, shape: [1], data_offsets: [0, 4] } }), 4)), 'safetensors_dtype');
  });

  test('negative, non-integer or huge shape dims -> safetensors_shape', async () => {
    const shapes: unknown[] = [[-1], [2, -3], [1.5], [2 ** 53], [1e300], ['4'], [null], 'abc', { 0: 1 }, null, [1, 1, 1, 1, 1, 1, 1, 1, 1]];
    for (const s of shapes) await rejectsCode(openRaw(rawFile(headerJson({ w: t('F32', s, [0, 4]) }), 4)), 'safetensors_shape');
  });

  test('bad offsets -> safetensors_offsets', async () => {
    const cases: unknown[] = [
      [8, 4], // end < begin
      [0.5, 4.5], // non-integer
      [0, 4.5],
      [-4, 0], // negative
      [0, 2 ** 53 + 2], // unsafe integer
      [2 ** 53, 2 ** 53 + 4],
      [0], // wrong arity
      [0, 4, 8],
      ['0', '4'],
      null,
    ];
    for (const o of cases) await rejectsCode(openRaw(rawFile(headerJson({ w: t('F32', [1], o) }), 16)), 'safetensors_offsets', /w/);
  });

  test('byte size != product(shape) * dtype size -> safetensors_size', async () => {
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('F32', [2, 2], [0, 12]) }), 12)), 'safetensors_size');
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('BF16', [3], [0, 3]) }), 3)), 'safetensors_size');
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('I64', [], [0, 4]) }), 4)), 'safetensors_size');
    // zero-size shape but nonzero bytes
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('F32', [0, 7], [0, 4]) }), 4)), 'safetensors_size');
    // product overflows 2^53 (not exactly representable as a double): still a size mismatch
    const huge = [2 ** 27, 2 ** 27, 2 ** 27 + 1];
    const wrapped = huge.reduce((a, b) => a * b, 1) * 4;
    assert.ok(!Number.isSafeInteger(wrapped));
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('F32', huge, [0, 0]) }), 0)), 'safetensors_size');
    // products that wrap in 32-bit arithmetic to the claimed size (2^32 -> 0, 2^32 + 1 -> 1)
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('U8', [65536, 65536], [0, 0]) }), 0)), 'safetensors_size');
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('U8', [2 ** 32 + 1], [0, 1]) }), 1)), 'safetensors_size');
    // each dim is a safe integer, the product is far beyond 2^53
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('U8', [2 ** 53 - 1, 3], [0, 0]) }), 0)), 'safetensors_size');
  });

  test('tensor ending past the data -> safetensors_bounds', async () => {
    await rejectsCode(openRaw(rawFile(headerJson({ w: t('F32', [4], [0, 16]) }), 12)), 'safetensors_bounds');
    await rejectsCode(openRaw(rawFile(headerJson({ a: t('F32', [1], [0, 4]), b: t('F32', [1], [4, 8]) }), 7)), 'safetensors_bounds');
  });

  test('overlapping tensors -> safetensors_overlap', async () => {
    await rejectsCode(openRaw(rawFile(headerJson({ a: t('F32', [2], [0, 8]), b: t('F32', [2], [4, 12]) }), 12)), 'safetensors_overlap');
    // identical ranges (aliasing)
    await rejectsCode(openRaw(rawFile(headerJson({ a: t('F32', [2], [0, 8]), b: t('F32', [2], [0, 8]) }), 8)), 'safetensors_overlap');
    // an empty tensor placed inside another one
    await rejectsCode(openRaw(rawFile(headerJson({ a: t('F32', [2], [0, 8]), z: t('F32', [0], [4, 4]) }), 8)), 'safetensors_overlap');
  });

  test('a gap in the data buffer -> safetensors_gap', async () => {
    await rejectsCode(openRaw(rawFile(headerJson({ a: t('F32', [1], [4, 8]) }), 8)), 'safetensors_gap');
    await rejectsCode(openRaw(rawFile(headerJson({ a: t('F32', [1], [0, 4]), b: t('F32', [1], [6, 10]) }), 10)), 'safetensors_gap');
  });

  test('trailing bytes after the last tensor -> safetensors_trailing', async () => {
    await rejectsCode(openRaw(rawFile(headerJson({ a: t('F32', [1], [0, 4]) }), 5)), 'safetensors_trailing');
    await rejectsCode(openRaw(rawFile(headerJson({}), 1)), 'safetensors_trailing');
  });

  test('__metadata__ with a non-string value -> safetensors_metadata', async () => {
    for (const m of [{ format: 1 }, { a: 'ok', b: null }, { nested: { x: 'y' } }, { list: ['a'] }, null, 'pt', ['pt']])
      await rejectsCode(openRaw(rawFile(headerJson({ __metadata__: m }), 0)), 'safetensors_metadata');
  });

  test('parseHeader is pure and reports the same codes', () => {
    const h = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
    throwsCode(() => parseHeader(h({ a: t('F32', [1], [0, 4]) }), 8 + h({ a: t('F32', [1], [0, 4]) }).length + 2), 'safetensors_bounds');
    const ok = h({ a: t('I8', [2], [0, 2]) });
    const parsed = parseHeader(ok, 8 + ok.length + 2);
    assert.deepEqual(parsed.tensors, [{ name: 'a', dtype: 'I8', shape: [2], offset: 8 + ok.length, byteLength: 2 }]);
  });
});

// ---------------------------------------------------------------- sharded index

describe('sharded index', () => {
  const UNSAFE = ['../x.safetensors', '/abs.safetensors', 'C:\\x.safetensors', '\\\\server\\share.safetensors', 'sub/dir.safetensors'];

  test('parseIndex rejects unsafe shard names with safetensors_index_path', () => {
    for (const file of [...UNSAFE, 'C:x.safetensors', '..', 'x.safetensors\0.txt', 'config.json', '', 7]) {
      throwsCode(() => parseIndex(JSON.stringify({ weight_map: { w: file } })), 'safetensors_index_path');
    }
    // control: a plain shard name beside the index is accepted
    assert.deepEqual([...parseIndex(JSON.stringify({ weight_map: { w: 'model-00001-of-00002.safetensors' } }))], [['w', 'model-00001-of-00002.safetensors']]);
  });

  test('parseIndex rejects a malformed index with safetensors_index', () => {
    for (const text of ['{', '{}', '{"weight_map": null}', '{"weight_map": []}', 'null', '[]']) throwsCode(() => parseIndex(text), 'safetensors_index');
  });

  test('Checkpoint.open rejects unsafe shard names and never opens them', async () => {
    const root = await tmp('idx');
    // a real, valid shard one level up: '../x.safetensors' must not reach it
    await writeSafetensors(join(root, 'x.safetensors'), [{ name: 'w', dtype: 'U8', shape: [1], data: new Uint8Array([1]) }]);
    const dir = join(root, 'model');
    await mkdir(join(dir, 'sub'), { recursive: true });
    await writeSafetensors(join(dir, 'sub', 'dir.safetensors'), [{ name: 'w', dtype: 'U8', shape: [1], data: new Uint8Array([1]) }]);
    for (const file of UNSAFE) {
      await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: { w: file } }));
      await rejectsCode(Checkpoint.open(dir), 'safetensors_index_path');
    }
  });

  test('Checkpoint.open: index naming a tensor the shard lacks -> safetensors_index', async () => {
    const dir = await tmp('idx2');
    await writeSafetensors(join(dir, 'a.safetensors'), [{ name: 'w1', dtype: 'F32', shape: [2], data: fromFloat32('F32', new Float32Array([1, 2])) }]);
    await writeSafetensors(join(dir, 'b.safetensors'), [{ name: 'w2', dtype: 'F32', shape: [1], data: fromFloat32('F32', new Float32Array([3])) }]);
    // control: the correct index loads, reads across shards
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w1: 'a.safetensors', w2: 'b.safetensors' } }));
    const ck = await Checkpoint.open(dir);
    try {
      assert.deepEqual(ck.names().sort(), ['w1', 'w2']);
      assert.deepEqual([...(await ck.readF32('w2'))], [3]);
    } finally {
      await ck.close();
    }
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w1: 'a.safetensors', w2: 'a.safetensors' } }));
    await rejectsCode(Checkpoint.open(dir), 'safetensors_index', /w2/);
  });
});

// ---------------------------------------------------------------- writer -> reader

const INT_DTYPES: DType[] = ['I32', 'I64', 'U8', 'I8'];
const ALL_DTYPES: DType[] = ['F32', 'F16', 'BF16', ...INT_DTYPES];

describe('safetensors writer -> reader', () => {
  test('random shapes and dtypes round trip byte-identically', async () => {
    const rand = mulberry32(1234);
    const dir = await tmp('rt');
    for (let trial = 0; trial < 6; trial++) {
      const tensors = [];
      const n = 1 + Math.floor(rand() * 8);
      for (let i = 0; i < n; i++) {
        const dtype = ALL_DTYPES[(trial * 3 + i) % ALL_DTYPES.length];
        const rank = Math.floor(rand() * 4); // 0 = scalar []
        const shape = Array.from({ length: rank }, () => Math.floor(rand() * 5)); // includes 0-size dims
        if (i === 0 && trial === 0) shape.splice(0, shape.length); // at least one scalar
        if (i === 1 && trial === 0) shape.splice(0, shape.length, 3, 0, 2); // and one 0-size dim
        const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_SIZES[dtype];
        const data = new Uint8Array(bytes);
        for (let k = 0; k < bytes; k++) data[k] = Math.floor(rand() * 256);
        tensors.push({ name: `t${trial}.${i}.${dtype}`, dtype, shape, data });
      }
      const path = join(dir, `rt${trial}.safetensors`);
      await writeSafetensors(path, tensors, { format: 'pt', trial: String(trial) });
      const f = await SafetensorsFile.open(path);
      try {
        assert.deepEqual(f.metadata, { format: 'pt', trial: String(trial) });
        assert.equal(f.tensors.size, tensors.length);
        for (const w of tensors) {
          const info = f.tensors.get(w.name)!;
          assert.equal(info.dtype, w.dtype);
          assert.deepEqual(info.shape, w.shape);
          const got = await f.read(w.name);
          assert.ok(Buffer.from(w.data).equals(got), `bytes of ${w.name}`);
        }
      } finally {
        await f.close();
      }
      // header is padded so the data buffer starts 8-byte aligned
      const buf = await readFile(path);
      assert.equal(Number(buf.readBigUInt64LE(0)) % 8, 0);
    }
  });

  test('header padding counts UTF-8 bytes, so non-ASCII names keep the data 8-byte aligned', () => {
    for (const name of ['é', 'wé', 'poids.☕', '重み', 'x'.repeat(5) + '€']) {
      for (const pad of ['', 'a', 'ab', 'abc']) {
        const head = encodeSafetensorsHeader([{ name: name + pad, dtype: 'F32', shape: [1], data: new Uint8Array(4) }], { note: 'ü' + pad });
        const n = Number(head.readBigUInt64LE(0));
        assert.equal(head.length, 8 + n);
        assert.equal(head.length % 8, 0, `header for ${JSON.stringify(name + pad)} is ${head.length} bytes`);
        const parsed = parseHeader(head.subarray(8), head.length + 4);
        assert.equal(parsed.tensors[0].name, name + pad);
      }
    }
  });

  test('writer refuses data whose size does not match shape and dtype', () => {
    throwsCode(() => encodeSafetensorsHeader([{ name: 'w', dtype: 'F32', shape: [3], data: new Uint8Array(8) }]), 'safetensors_size');
    throwsCode(() => encodeSafetensorsHeader([{ name: 'w', dtype: 'I64', shape: [], data: new Uint8Array(4) }]), 'safetensors_size');
  });
});

// ---------------------------------------------------------------- float conversions

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number): number => ((f32[0] = x), u32[0]);
const fromBits = (u: number): number => ((u32[0] = u >>> 0), f32[0]);

/** Independent bf16 reference: the nearer of the two neighbouring bf16 values (in exact
 * double arithmetic), ties to the one with an even last mantissa bit; past the largest
 * finite value the upper neighbour is treated as 2^128 (which encodes as Inf). */
function refBf16(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const u = bitsOf(x);
  const lo = (u & 0xffff0000) >>> 0;
  if (u === lo) return fromBits(lo);
  const hi = (lo + 0x10000) >>> 0;
  const vlo = fromBits(lo);
  const vhi = fromBits(hi);
  const xf = fromBits(u);
  const vhiDist = Number.isFinite(vhi) ? vhi : Math.sign(vhi) * 2 ** 128;
  const dlo = Math.abs(xf - vlo);
  const dhi = Math.abs(vhiDist - xf);
  if (dlo < dhi) return vlo;
  if (dhi < dlo) return vhi;
  return ((lo >>> 16) & 1) === 0 ? vlo : vhi;
}

/** Independent f16 decoder (bit fields -> value). */
function refF16Decode(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 31;
  const frac = h & 1023;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  if (exp === 0) return sign * frac * Math.pow(2, -24);
  return sign * Math.pow(2, exp - 15) * (1 + frac / 1024);
}

/** All finite non-negative f16 values, ascending, for nearest-value lookups. */
const F16_POS: number[] = Array.from({ length: 0x7c00 }, (_, h) => refF16Decode(h));

/** Correctly rounded f16 value of x (ties to even), found by search over the table. */
function refF16(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  const s = x < 0 || Object.is(x, -0) ? -1 : 1;
  const max = F16_POS[F16_POS.length - 1];
  // overflow: anything at or beyond max + half an ulp (65520) becomes Inf
  if (a >= 65520) return s * Infinity;
  let lo = 0;
  let hi = F16_POS.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (F16_POS[mid] <= a) lo = mid;
    else hi = mid;
  }
  if (a >= max) return s * max;
  const dl = a - F16_POS[lo];
  const dh = F16_POS[hi] - a;
  const pick = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
  return s * F16_POS[pick];
}

function randomF32(rand: () => number, minExp: number, maxExp: number): number {
  const m = 1 + rand();
  const e = Math.floor(minExp + rand() * (maxExp - minExp));
  return Math.fround((rand() < 0.5 ? -1 : 1) * m * 2 ** e);
}

const same = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

describe('float conversions', () => {
  test('F32 round trips exactly, including specials', () => {
    const rand = mulberry32(7);
    const vals = Float32Array.from({ length: 2000 }, () => randomF32(rand, -140, 127));
    const specials = Float32Array.from([0, -0, Infinity, -Infinity, NaN, 1e-45, -1e-45, 3.4028234663852886e38, 1.1754943508222875e-38]);
    for (const v of [vals, specials]) {
      const bytes = fromFloat32('F32', v);
      assert.equal(bytes.byteLength, v.length * 4);
      const back = toFloat32('F32', bytes);
      for (let i = 0; i < v.length; i++) assert.ok(same(back[i], v[i]), `F32 ${v[i]} -> ${back[i]}`);
    }
  });

  test('BF16 equals round-to-nearest-even truncation of the fp32 bits', () => {
    const rand = mulberry32(11);
    const vals: number[] = [];
    for (let i = 0; i < 4000; i++) vals.push(randomF32(rand, -133, 127));
    // exact halfway cases, both parities, and values just either side of halfway
    for (const base of [0x3f800000, 0x3f810000, 0x40490000, 0xc0490000, 0x00010000, 0x7f7e0000]) {
      vals.push(fromBits(base + 0x8000), fromBits(base + 0x7fff), fromBits(base + 0x8001), fromBits(base + 0x18000));
    }
    vals.push(0, -0, Infinity, -Infinity, fromBits(0x7f7fffff), fromBits(0xff7fffff), fromBits(0x00000001), fromBits(0x807fffff));
    const v = Float32Array.from(vals);
    const bytes = fromFloat32('BF16', v);
    assert.equal(bytes.byteLength, v.length * 2);
    const back = toFloat32('BF16', bytes);
    for (let i = 0; i < v.length; i++) {
      const want = refBf16(v[i]);
      assert.ok(same(back[i], want), `BF16(${v[i]}) = ${back[i]}, want ${want}`);
    }
    // the stored halves are the top 16 bits of the rounded value
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < v.length; i++) assert.equal(dv.getUint16(i * 2, true), bitsOf(refBf16(v[i])) >>> 16);
    // specific: 1 + 2^-8 is a tie and goes to the even neighbour 1; 1 + 3*2^-8 goes up
    assert.deepEqual([...toFloat32('BF16', fromFloat32('BF16', Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8])))], [1, 1 + 2 ** -6]);
    // NaN stays NaN
    assert.ok(Number.isNaN(toFloat32('BF16', fromFloat32('BF16', Float32Array.from([NaN, -NaN])))[0]));
  });

  test('f16 decoder matches an independent bit-field decoder for all 65536 halves', () => {
    for (let h = 0; h < 65536; h++) assert.ok(same(f16ToF32(h), refF16Decode(h)), `half 0x${h.toString(16)}`);
  });

  test('F16 is correctly rounded: relative error <= 2^-11 for normals, exact ties to even, specials', () => {
    const rand = mulberry32(13);
    const vals: number[] = [];
    for (let i = 0; i < 3000; i++) vals.push(randomF32(rand, -14, 16)); // normal range
    for (let i = 0; i < 500; i++) vals.push(randomF32(rand, -26, -14)); // subnormal range and below
    const v = Float32Array.from(vals);
    const back = toFloat32('F16', fromFloat32('F16', v));
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      const want = refF16(x);
      assert.ok(same(back[i], want), `F16(${x}) = ${back[i]}, want ${want}`);
      if (Math.abs(x) >= 2 ** -14 && Math.abs(x) <= 65504) assert.ok(Math.abs(back[i] - x) <= Math.abs(x) * 2 ** -11, `F16 rel error at ${x}`);
    }
    const cases: [number, number][] = [
      [0, 0],
      [-0, -0],
      [Infinity, Infinity],
      [-Infinity, -Infinity],
      [65504, 65504], // max normal
      [65519, 65504], // below the overflow midpoint
      [65520, Infinity], // the overflow midpoint rounds to even = Inf
      [1e6, Infinity],
      [-1e6, -Infinity],
      [2 ** -14, 2 ** -14], // min normal
      [2 ** -24, 2 ** -24], // min subnormal
      [-(2 ** -24), -(2 ** -24)],
      [3 * 2 ** -24, 3 * 2 ** -24], // subnormal
      [1023 * 2 ** -24, 1023 * 2 ** -24], // max subnormal
      [2 ** -25, 0], // halfway to the min subnormal: ties to even (0)
      [-(2 ** -25), -0],
      [1.5 * 2 ** -25, 2 ** -24], // above halfway rounds up
      [3 * 2 ** -25, 2 * 2 ** -24], // halfway between 1 and 2 subnormal ulps -> even (2)
      [2 ** -26, 0],
      [1 + 2 ** -11, 1], // tie -> even
      [1 + 3 * 2 ** -11, 1 + 2 ** -9], // tie -> even (up)
      [1023.75, 1024], // carry across a power of two
    ];
    const got = toFloat32('F16', fromFloat32('F16', Float32Array.from(cases.map((c) => c[0]))));
    cases.forEach(([x, want], i) => assert.ok(same(got[i], want), `F16(${x}) = ${got[i]}, want ${want}`));
    const nan = toFloat32('F16', fromFloat32('F16', Float32Array.from([NaN])));
    assert.ok(Number.isNaN(nan[0]));
  });

  test('toFloat32 / fromFloat32 refuse integer dtypes', () => {
    for (const dt of INT_DTYPES) {
      throwsCode(() => toFloat32(dt, new Uint8Array(8)), 'safetensors_dtype');
      throwsCode(() => fromFloat32(dt, new Float32Array(1)), 'safetensors_dtype');
    }
  });

  test('toFloat32 works on unaligned views (Buffer pool slices)', () => {
    const src = Float32Array.from([1.5, -2.25, 3e-5]);
    for (const dt of ['F32', 'BF16', 'F16'] as DType[]) {
      const enc = fromFloat32(dt, src);
      const padded = new Uint8Array(enc.byteLength + 1);
      padded.set(enc, 1);
      const view = padded.subarray(1);
      const a = toFloat32(dt, view);
      const b = toFloat32(dt, enc);
      assert.deepEqual([...a], [...b]);
    }
  });
});

// ---------------------------------------------------------------- config.json

async function fixtureConfig(arch: FixtureArch, o: { kvHeads?: number } = {}): Promise<{ dir: string; raw: Record<string, unknown>; specials: Record<string, number> }> {
  const dir = await tmp(`cfg-${arch}`);
  const info = await writeFixture(dir, { arch, hidden: 32, layers: 1, heads: 4, kvHeads: o.kvHeads, intermediate: 48 });
  const raw = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  return { dir, raw, specials: info.specials };
}

describe('config.json', () => {
  const archs: FixtureArch[] = ['llada', 'dream', 'llama', 'qwen2'];
  const configs = new Map<FixtureArch, Awaited<ReturnType<typeof fixtureConfig>>>();
  const get = async (a: FixtureArch) => {
    if (!configs.has(a)) configs.set(a, await fixtureConfig(a, { kvHeads: a === 'llada' ? 4 : 2 }));
    return configs.get(a)!;
  };

  test('fixture configs parse to the right architecture arguments', async () => {
    for (const arch of archs) {
      const { raw, specials } = await get(arch);
      const a = parseConfig(raw);
      assert.equal(a.arch, arch);
      assert.equal(a.hiddenSize, 32);
      assert.equal(a.numLayers, 1);
      assert.equal(a.numHeads, 4);
      assert.equal(a.numKvHeads, arch === 'llada' ? 4 : 2);
      assert.equal(a.headDim, 8);
      assert.equal(a.intermediateSize, 48);
      assert.equal(a.vocabSize, raw.vocab_size);
      assert.equal(a.attention, arch === 'llada' || arch === 'dream' ? 'bidirectional' : 'causal', `${arch} attention`);
      assert.equal(a.shiftedLogits, arch !== 'llada', `${arch} shiftedLogits`);
      assert.equal(a.qkvBias, arch === 'dream' || arch === 'qwen2', `${arch} qkvBias`);
      assert.equal(a.tiedEmbeddings, false);
      const mask = arch === 'llada' ? specials['<|mdm_mask|>'] : arch === 'dream' ? specials['<|mask|>'] : null;
      assert.equal(a.maskTokenId, mask, `${arch} mask`);
      assert.equal(typeof a.rmsNormEps, 'number');
      assert.ok(a.eosTokenIds.length >= 1);
    }
  });

  test('sliding-window attention and partial RoPE are refused in every layout that may carry them', async () => {
    for (const arch of ['dream', 'llama', 'qwen2', 'qwen3', 'sdar', 'fast_dllm_v2', 'coda'] as FixtureArch[]) {
      const { raw } = await fixtureConfig(arch, { kvHeads: 2 });
      throwsCode(() => parseConfig({ ...raw, use_sliding_window: true, sliding_window: 16 }), 'config_invalid', /use_sliding_window true \(a window of 16 positions\) is not supported/);
      // (what transformers runs as full attention: no window, or no layer under it)
      const full = parseConfig(raw);
      assert.equal(parseConfig({ ...raw, use_sliding_window: true, sliding_window: null }).arch, full.arch);
      assert.equal(parseConfig({ ...raw, use_sliding_window: true, sliding_window: full.maxPositions }).arch, full.arch);
      assert.equal(parseConfig({ ...raw, use_sliding_window: true, sliding_window: 16, max_window_layers: full.numLayers }).arch, full.arch);
      throwsCode(() => parseConfig({ ...raw, partial_rotary_factor: 0.5 }), 'config_invalid', /partial_rotary_factor 0\.5 is not supported/);
      // (transformers v5 writes it under rope_parameters)
      throwsCode(() => parseConfig({ ...raw, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 } }), 'config_invalid', /partial_rotary_factor 0\.5 is not supported/);
      // (the keys as released configs write them when off)
      assert.equal(parseConfig({ ...raw, use_sliding_window: false, sliding_window: null, partial_rotary_factor: 1 }).arch, parseConfig(raw).arch);
      assert.equal(parseConfig({ ...raw, partial_rotary_factor: null }).rotaryDim, undefined, arch);
    }
  });

  test('architecture is also detected from `architectures` alone', async () => {
    for (const arch of archs) {
      const { raw } = await get(arch);
      const { model_type: _, ...rest } = raw;
      assert.equal(parseConfig(rest).arch, arch);
    }
  });

  const HF_KEYS = { dim: 'hidden_size', layers: 'num_hidden_layers', heads: 'num_attention_heads', kv: 'num_key_value_heads', vocab: 'vocab_size' };
  const LLADA_KEYS = { dim: 'd_model', layers: 'n_layers', heads: 'n_heads', kv: 'n_kv_heads', vocab: 'vocab_size' };

  test('zero / negative / non-integer / absurd / missing dimensions -> config_invalid', async () => {
    const badValues: unknown[] = [0, -1, -64, 32.5, 1e9, 2 ** 53, Number.MAX_SAFE_INTEGER, '32', null, true];
    for (const arch of archs) {
      const { raw } = await get(arch);
      const keys = arch === 'llada' ? LLADA_KEYS : HF_KEYS;
      assert.doesNotThrow(() => parseConfig(raw));
      for (const key of Object.values(keys)) {
        for (const v of badValues) {
          // null for an optional key (kv heads) falls back to the default: not an error
          if (v === null && key === keys.kv) continue;
          throwsCode(() => parseConfig({ ...raw, [key]: v }), 'config_invalid', new RegExp(key));
        }
        if (key !== keys.kv) {
          const { [key]: _, ...missing } = raw;
          throwsCode(() => parseConfig(missing), 'config_invalid', new RegExp(key));
        }
      }
    }
  });

  test('heads not divisible by kv heads -> config_invalid', async () => {
    for (const arch of archs) {
      const { raw } = await get(arch);
      const keys = arch === 'llada' ? LLADA_KEYS : HF_KEYS;
      throwsCode(() => parseConfig({ ...raw, [keys.kv]: 3 }), 'config_invalid', /kv heads/);
      // kv heads > heads
      throwsCode(() => parseConfig({ ...raw, [keys.kv]: 8 }), 'config_invalid');
      // control: a divisor is fine
      assert.equal(parseConfig({ ...raw, [keys.kv]: 1 }).numKvHeads, 1);
    }
  });

  test('hidden size not divisible into even head dims -> config_invalid', async () => {
    const { raw: l } = await get('llada');
    throwsCode(() => parseConfig({ ...l, d_model: 30 }), 'config_invalid'); // 30 / 4 not an integer
    throwsCode(() => parseConfig({ ...l, d_model: 36 }), 'config_invalid'); // 36 / 4 = 9, odd
    const { raw: q } = await get('qwen2');
    throwsCode(() => parseConfig({ ...q, hidden_size: 36 }), 'config_invalid');
  });

  test('llada embedding_size < vocab_size -> config_invalid; larger pads the vocab', async () => {
    const { raw } = await get('llada');
    const V = raw.vocab_size as number;
    throwsCode(() => parseConfig({ ...raw, embedding_size: V - 1 }), 'config_invalid', /embedding_size/);
    const a = parseConfig({ ...raw, embedding_size: V + 64 });
    assert.equal(a.vocabSize, V + 64);
  });

  test('mask / eos / bos ids outside the vocab -> config_invalid', async () => {
    const { raw: l } = await get('llada');
    const VL = l.embedding_size as number;
    throwsCode(() => parseConfig({ ...l, mask_token_id: VL }), 'config_invalid', /mask_token_id/);
    throwsCode(() => parseConfig({ ...l, mask_token_id: VL + 1000 }), 'config_invalid', /mask_token_id/);
    throwsCode(() => parseConfig({ ...l, mask_token_id: -1 }), 'config_invalid', /mask_token_id/);
    throwsCode(() => parseConfig({ ...l, mask_token_id: 1.5 }), 'config_invalid', /mask_token_id/);
    assert.equal(parseConfig({ ...l, mask_token_id: VL - 1 }).maskTokenId, VL - 1);
    const { raw: d } = await get('dream');
    const VD = d.vocab_size as number;
    throwsCode(() => parseConfig({ ...d, mask_token_id: VD }), 'config_invalid', /mask_token_id/);
    throwsCode(() => parseConfig({ ...d, eos_token_id: [1, VD] }), 'config_invalid', /eos_token_id/);
    throwsCode(() => parseConfig({ ...d, bos_token_id: VD }), 'config_invalid', /bos_token_id/);
    // Dream without a mask token cannot decode
    const { mask_token_id: _, ...noMask } = d;
    throwsCode(() => parseConfig(noMask), 'config_invalid', /mask_token_id/);
  });

  test('LLaDA-MoE: the released config (model_type "llada", class LLaDAMoEModelLM, no mask id) and its refusals', () => {
    // the keys of inclusionAI/LLaDA-MoE-7B-A1B-Instruct's config.json
    const raw: Record<string, unknown> = {
      architectures: ['LLaDAMoEModelLM'], model_type: 'llada', hidden_size: 2048, num_hidden_layers: 16, num_attention_heads: 16,
      num_key_value_heads: 16, vocab_size: 157184, max_position_embeddings: 8192, rope_theta: 50000, hidden_act: 'silu',
      num_experts: 64, num_experts_per_tok: 8, expert_intermediate_size: 1024, dense_intermediate_size: 8192,
      shared_expert_intermediate_size: null, moe_layer_freq: Array(16).fill(1), qk_layernorm: true, partial_rotary_factor: 1,
      clip_qkv: null, norm_topk_prob: false, moe_router_enable_expert_bias: false, routed_scaling_factor: 1, attention_bias: false,
      tie_word_embeddings: false, eos_token_id: 156892, pad_token_id: 156892,
    };
    const a = parseConfig(raw);
    assert.equal(a.arch, 'llada_moe');
    assert.equal(a.maskTokenId, 156895);
    assert.equal(a.attention, 'bidirectional');
    assert.equal(a.shiftedLogits, false);
    assert.equal(a.qkNorm, true);
    assert.equal(a.rmsNormEps, 1e-5);
    assert.equal(a.headDim, 128);
    assert.equal(a.clipQkv, undefined);
    assert.deepEqual({ ...a.moe, layers: a.moe!.layers.every(Boolean) }, { experts: 64, topK: 8, expertSize: 1024, sharedSize: null, layers: true, scoring: 'softmax', groups: 1, groupsKept: 1, scale: 1, expertBias: false });
    // the dense LLaDA config is still LLaDA
    assert.equal(parseConfig({ ...raw, architectures: ['LLaDAModelLM'], d_model: 64, n_layers: 1, n_heads: 4, mlp_hidden_size: 128 }).arch, 'llada');
    assert.equal(parseConfig({ ...raw, architectures: undefined, model_type: 'lladamoe' }).arch, 'llada_moe');
    assert.deepEqual(parseConfig({ ...raw, moe_layer_freq: [0, ...Array(15).fill(1)], shared_expert_intermediate_size: 512, clip_qkv: 8 }).moe!.layers.slice(0, 2), [false, true]);
    for (const [change, msg] of [
      [{ moe_router_enable_expert_bias: true }, /expert_bias/],
      [{ partial_rotary_factor: 0.5 }, /partial_rotary_factor/],
      [{ attention_bias: true }, /attention_bias/],
      [{ moe_layer_freq: [1, 1] }, /moe_layer_freq/],
      [{ moe_layer_freq: 2 }, /moe_layer_freq/],
      [{ num_experts_per_tok: 65 }, /num_experts_per_tok/],
      [{ num_experts: 0 }, /num_experts/],
      [{ vocab_size: 1000, eos_token_id: 1, pad_token_id: 1 }, /mask_token_id/], // (no default mask id inside a small vocab)
      [{ shared_expert_intermediate_size: -1 }, /shared_expert_intermediate_size/],
    ] as const)
      throwsCode(() => parseConfig({ ...raw, ...change }), 'config_invalid', msg);
  });

  test('LLaDA2.0: the released mini config (no mask id, no block size) and its refusals', () => {
    const raw: Record<string, unknown> = {
      architectures: ['LLaDA2MoeModelLM'], model_type: 'llada2_moe', hidden_size: 2048, num_hidden_layers: 20, num_attention_heads: 16,
      num_key_value_heads: 4, head_dim: 128, intermediate_size: 5120, moe_intermediate_size: 512, num_experts: 256, num_shared_experts: 1,
      num_experts_per_tok: 8, n_group: 8, topk_group: 4, routed_scaling_factor: 2.5, score_function: 'sigmoid', norm_topk_prob: true,
      moe_router_enable_expert_bias: true, router_dtype: 'fp32', first_k_dense_replace: 1, partial_rotary_factor: 0.5, rope_theta: 600000,
      rope_scaling: null, use_qkv_bias: false, use_bias: false, rms_norm_eps: 1e-6, vocab_size: 157184, max_position_embeddings: 32768,
      tie_word_embeddings: false, pad_token_id: 156892, use_sliding_window: false, hidden_act: 'silu',
    };
    const a = parseConfig(raw);
    assert.equal(a.arch, 'llada2');
    assert.equal(a.maskTokenId, 156895);
    assert.equal(a.attention, 'block_causal');
    assert.equal(a.blockSize, 32);
    assert.equal(a.shiftedLogits, false);
    assert.equal(a.rotaryDim, 64);
    assert.equal(a.qkNorm, true);
    assert.equal(a.intermediateSize, 5120);
    assert.deepEqual({ ...a.moe, layers: a.moe!.layers.map(Number).join('') }, {
      experts: 256, topK: 8, expertSize: 512, sharedSize: 512, layers: '0' + '1'.repeat(19), scoring: 'sigmoid', groups: 8, groupsKept: 4, scale: 2.5, expertBias: true,
    });
    assert.equal(parseConfig({ ...raw, partial_rotary_factor: 1 }).rotaryDim, undefined);
    for (const [change, msg] of [
      [{ score_function: 'softmax' }, /score_function/],
      [{ use_qkv_bias: true }, /use_qkv_bias/],
      [{ n_group: 7 }, /n_group/],
      [{ topk_group: 1, num_experts_per_tok: 40 }, /topk_group/],
      [{ first_k_dense_replace: 21 }, /first_k_dense_replace/],
      [{ partial_rotary_factor: 0.3 }, /partial_rotary_factor/],
      [{ num_shared_experts: -1 }, /num_shared_experts/],
      [{ use_sliding_window: true, sliding_window: 1024 }, /use_sliding_window/],
    ] as const)
      throwsCode(() => parseConfig({ ...raw, ...change }), 'config_invalid', msg);
  });

  test('RND1: the config its class writes (Qwen3-30B-A3B\'s keys, is_causal false, mask 151669), absent keys from its defaults, and refusals', () => {
    const raw: Record<string, unknown> = {
      architectures: ['RND1LM'], model_type: 'rnd1', auto_map: { AutoConfig: 'configuration_rnd.RND1Config', AutoModelForMaskedLM: 'modeling_rnd.RND1LM' },
      attention_bias: false, attention_dropout: 0, decoder_sparse_step: 1, eos_token_id: 151645, head_dim: 128, hidden_act: 'silu', hidden_size: 2048,
      intermediate_size: 6144, max_position_embeddings: 40960, max_window_layers: 48, mlp_only_layers: [], moe_intermediate_size: 768, norm_topk_prob: true,
      num_attention_heads: 32, num_experts: 128, num_experts_per_tok: 8, num_hidden_layers: 48, num_key_value_heads: 4, pad_token_id: 151643,
      rms_norm_eps: 1e-6, rope_scaling: false, rope_theta: 1000000, sliding_window: false, tie_word_embeddings: false, use_cache: false,
      use_sliding_window: false, vocab_size: 151936, moe_backend: 'hf', num_diffusion_steps: 256, mask_token_id: 151669, is_causal: false,
    };
    const a = parseConfig(raw);
    assert.equal(a.arch, 'rnd1');
    assert.equal(a.attention, 'bidirectional');
    assert.equal(a.shiftedLogits, true);
    assert.equal(a.maskTokenId, 151669);
    assert.equal(a.qkNorm, true);
    assert.deepEqual([a.headDim, a.numKvHeads, a.numLayers], [128, 4, 48]);
    assert.deepEqual({ ...a.moe, layers: a.moe!.layers.every(Boolean) }, { experts: 128, topK: 8, expertSize: 768, sharedSize: null, layers: true, scoring: 'softmax', normalize: true, groups: 1, groupsKept: 1, scale: 1, expertBias: false });
    // (its configuration class fills in CONFIG_DEFAULTS: a config with its type alone is the same model)
    const bare = parseConfig({ model_type: 'rnd1' });
    assert.deepEqual([bare.hiddenSize, bare.numLayers, bare.vocabSize, bare.maskTokenId, bare.moe!.experts], [2048, 48, 151936, 151669, 128]);
    // (its layers build the mixture whatever these say, and its class sets norm_topk_prob true)
    assert.ok(parseConfig({ ...raw, mlp_only_layers: [0, 5], decoder_sparse_step: 2 }).moe!.layers.every(Boolean));
    assert.equal(parseConfig({ ...raw, norm_topk_prob: false }).moe!.normalize, true);
    for (const [change, msg] of [
      [{ attention_bias: true }, /attention_bias/],
      [{ use_sliding_window: true, sliding_window: 1024, max_window_layers: 24 }, /use_sliding_window/],
      [{ rope_scaling: { type: 'yarn' } }, /rope_scaling/],
    ] as const)
      throwsCode(() => parseConfig({ ...raw, ...change }), 'config_invalid', msg);
    // transformers v5 writes the RoPE base under rope_parameters: read there, scaling refused
    const { rope_theta: _t, rope_scaling: _s, ...v5 } = raw;
    assert.equal(parseConfig({ ...v5, rope_parameters: { rope_type: 'default', rope_theta: 1000000 } }).ropeTheta, 1000000);
    assert.equal(parseConfig({ ...raw, rope_parameters: { rope_theta: 500000 } }).ropeTheta, 1000000, 'the top-level key first');
    for (const [rp, msg] of [
      [{ rope_type: 'yarn', rope_theta: 1000000, factor: 4 }, /rope_type "yarn"/],
      [{ full_attention: { rope_theta: 1000000 } }, /no rope_theta/],
      [[1], /must be an object/],
    ] as const)
      throwsCode(() => parseConfig({ ...v5, rope_parameters: rp }), 'config_invalid', msg);
  });

  test('SDAR-MoE: Qwen3-30B-A3B\'s keys under SDAR\'s MoE class (no mask id, no block size: 151669 and 4), the Qwen3-MoE layer rules', () => {
    const raw: Record<string, unknown> = {
      architectures: ['SDARMoeForCausalLM'], model_type: 'sdar_moe', attention_bias: false, decoder_sparse_step: 1, head_dim: 128, hidden_act: 'silu',
      hidden_size: 2048, intermediate_size: 6144, max_position_embeddings: 40960, mlp_only_layers: [], moe_intermediate_size: 768, norm_topk_prob: true,
      num_attention_heads: 32, num_experts: 128, num_experts_per_tok: 8, num_hidden_layers: 48, num_key_value_heads: 4, rms_norm_eps: 1e-6,
      rope_scaling: null, rope_theta: 1000000, tie_word_embeddings: false, vocab_size: 151936, eos_token_id: 151645,
    };
    const a = parseConfig(raw);
    assert.deepEqual([a.arch, a.attention, a.blockSize, a.shiftedLogits, a.maskTokenId, a.qkNorm], ['sdar_moe', 'block_causal', 4, false, 151669, true]);
    assert.deepEqual({ ...a.moe, layers: a.moe!.layers.every(Boolean) }, { experts: 128, topK: 8, expertSize: 768, sharedSize: null, layers: true, scoring: 'softmax', normalize: true, groups: 1, groupsKept: 1, scale: 1, expertBias: false });
    assert.deepEqual(parseConfig({ ...raw, mlp_only_layers: [0, 5], decoder_sparse_step: 2 }).moe!.layers.slice(0, 6), [false, true, false, true, false, false]);
    assert.equal(parseConfig({ ...raw, norm_topk_prob: false }).moe!.normalize, false);
    // (absent: renormalized, as SDAR's engine always does)
    const { norm_topk_prob: _n, ...noNorm } = raw;
    assert.equal(parseConfig(noNorm).moe!.normalize, true);
    throwsCode(() => parseConfig({ ...raw, mlp_only_layers: [48] }), 'config_invalid', /mlp_only_layers/);
    throwsCode(() => parseConfig({ ...raw, attention_bias: true }), 'config_invalid', /attention_bias/);
  });

  test('CoDA: its published config.json (model_type CoDA, no tie_word_embeddings key) is the Qwen3 layout, bidirectional, shifted, mask 151669, its own head', () => {
    const raw: Record<string, unknown> = {
      architectures: ['CoDALanguageModel'], attention_bias: false, attention_dropout: 0.0, attention_kernel: 'flash_attention',
      auto_map: { AutoConfig: 'model_config.CoDAConfig', AutoModel: 'modeling_coda.CoDALanguageModel' }, block_masking_probability: [0.25, 0.5, 0.5, 0.75, 0.25],
      head_dim: 128, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02, intermediate_size: 6144, mask_block_sizes: [4, 8, 16, 32],
      mask_token_id: 151669, max_position_embeddings: 40960, max_window_layers: 28, model_type: 'CoDA', num_attention_heads: 16, num_hidden_layers: 28,
      num_key_value_heads: 8, pad_token_id: 151643, prefix_probability: 0, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 1000000,
      sampling_eps: [0.001, 0.25, 0.5, 0.25, 0.001], sliding_window: null, torch_dtype: 'float32', truncate_probability: 0, use_cache: true, use_sliding_window: false, vocab_size: 151936,
    };
    const a = parseConfig(raw);
    assert.deepEqual([a.arch, a.attention, a.shiftedLogits, a.maskTokenId, a.qkNorm, a.tiedEmbeddings, a.headDim], ['coda', 'bidirectional', true, 151669, true, false, 128]);
    assert.equal(parseConfig({ ...raw, tie_word_embeddings: true }).tiedEmbeddings, false);
    throwsCode(() => parseConfig({ ...raw, attention_bias: true }), 'config_invalid', /attention_bias/);
  });

  test('dllm A2D configs: the causal layouts under a2d-* model types are bidirectional diffusion models, block-causal with a block size', () => {
    // Qwen3-0.6B's keys, as dllm's converter saves them (its class and model_type, nothing else added)
    const raw: Record<string, unknown> = {
      architectures: ['A2DQwen3LMHeadModel'], model_type: 'a2d-qwen3', hidden_size: 1024, num_hidden_layers: 28, num_attention_heads: 16,
      num_key_value_heads: 8, head_dim: 128, intermediate_size: 3072, vocab_size: 151936, max_position_embeddings: 40960, rope_theta: 1000000,
      rms_norm_eps: 1e-6, tie_word_embeddings: true, attention_bias: false, hidden_act: 'silu', bos_token_id: 151643, eos_token_id: 151645,
    };
    const a = parseConfig(raw);
    assert.deepEqual([a.arch, a.adapted, a.attention, a.shiftedLogits, a.maskTokenId, a.qkNorm], ['qwen3', 'a2d', 'bidirectional', false, null, true]);
    assert.equal(parseConfig({ ...raw, architectures: undefined }).adapted, 'a2d');
    assert.equal(parseConfig({ ...raw, model_type: undefined }).adapted, 'a2d');
    const bd = parseConfig({ ...raw, block_size: 32 });
    assert.deepEqual([bd.attention, bd.blockSize], ['block_causal', 32]);
    // (a causal export's training context under that key is no diffusion block)
    assert.equal(parseConfig({ ...raw, block_size: 4096 }).attention, 'bidirectional');
    assert.deepEqual([parseConfig({ ...raw, model_type: 'a2d-qwen2', architectures: ['A2DQwen2LMHeadModel'], head_dim: undefined }).arch], ['qwen2']);
    assert.equal(parseConfig({ ...raw, model_type: 'a2d-llama', architectures: ['A2DLlamaLMHeadModel'], head_dim: undefined }).arch, 'llama');
    // the causal model itself stays causal
    const causal = parseConfig({ ...raw, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3' });
    assert.deepEqual([causal.attention, causal.adapted], ['causal', undefined]);
  });

  test('non-object configs -> config_invalid', () => {
    for (const raw of [null, [], 'llada', 42]) throwsCode(() => parseConfig(raw), 'config_invalid');
  });

  test('unsupported architecture -> unsupported_architecture listing the supported ones', () => {
    for (const raw of [{ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], n_embd: 768 }, { model_type: 'mamba' }, {}]) {
      throwsCode(() => parseConfig(raw), 'unsupported_architecture', /llada/);
      try {
        parseConfig(raw);
      } catch (e) {
        const m = (e as Error).message;
        for (const name of ['llada', 'dream', 'llama', 'qwen2', 'qwen3']) assert.ok(m.includes(name), `message lists ${name}: ${m}`);
      }
    }
  });

  test('a diffusion model published under a causal layout (mask token, dlm keys, is_causal false) is refused, not read as the causal LM', () => {
    const qwen3 = { model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 128, num_hidden_layers: 2, vocab_size: 300 };
    const a = parseConfig(qwen3);
    assert.equal(a.arch, 'qwen3');
    assert.equal(a.attention, 'causal');
    assert.equal(a.qkNorm, true);
    assert.equal(a.qkvBias, false);
    throwsCode(() => parseConfig({ ...qwen3, attention_bias: true }), 'config_invalid', /attention_bias/);
    const qwen2 = { ...qwen3, model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'] };
    assert.equal(parseConfig(qwen2).qkNorm, undefined);
    for (const [raw, says] of [
      [{ ...qwen3, mask_token_id: 299 }, /mask_token_id/],
      [{ ...qwen3, dlm_paradigm: 'bidirectional', dlm_type: 'llada' }, /dlm_paradigm, dlm_type/],
      [{ ...qwen2, is_causal: false }, /is_causal false/],
      [{ ...qwen2, model_type: 'llama', architectures: ['LlamaForCausalLM'], mask_token_id: 5 }, /mask_token_id/],
    ] as const)
      throwsCode(() => parseConfig(raw), 'unsupported_architecture', says);
    // a causal export's training context is no mark
    assert.equal(parseConfig({ ...qwen2, model_type: 'llama', architectures: ['LlamaForCausalLM'], block_size: 1024 }).attention, 'causal');
  });

  test('loadModel rejects an embedding whose shape does not match the config with config_mismatch', async () => {
    const cacheDir = await tmp('cache');
    for (const arch of ['llada', 'llama'] as FixtureArch[]) {
      const dir = await tmp(`mismatch-${arch}`);
      await writeFixture(dir, { arch, hidden: 16, layers: 1, heads: 2, intermediate: 16 });
      const path = join(dir, 'config.json');
      const raw = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
      const V = raw.vocab_size as number;
      if (arch === 'llada') {
        raw.vocab_size = V + 16;
        raw.embedding_size = V + 16;
      } else raw.vocab_size = V + 16;
      await writeFile(path, JSON.stringify(raw));
      await rejectsCode(loadModel(dir, { cacheDir, threads: 1 }), 'config_mismatch', /embed|wte/);
    }
  });
});
