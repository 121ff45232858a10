// GGUF: the single-file format of llama.cpp (also for its diffusion models, LLaDA and Dream).
// Layout (little-endian): "GGUF", u32 version (2 or 3), u64 tensor count, u64 metadata count;
// metadata as (string key, u32 type, value); tensor infos as (string name, u32 n_dims,
// u64 dims[n_dims] innermost first, u32 ggml type, u64 offset); padding to `general.alignment`
// (default 32); then the data section, which the offsets are relative to. A string is a u64
// length and UTF-8 bytes; an array a u32 item type, a u64 count and the items.
//
// The reader checks everything it is about to trust (the hardening cases of llama.cpp's own
// GGUF tests): counts and lengths against what is left of the file, dimensions and their
// product, types, alignment, duplicates, and data that would run past the end. Tensors are
// read one at a time and decoded to fp32: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the
// K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (what llama.cpp's Q2_K / Q3_K_M / Q4_K_M / Q5_K_M /
// Q6_K files hold) and the non-linear IQ4_NL / IQ4_XS, exactly as ggml's reference
// dequantizers compute them in float32.

import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { FormatError } from '../errors.ts';
import { readExactly } from './read.ts';
import { f16ToF32 } from './safetensors.ts';

export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** A path that names a GGUF file (by its extension, as llama.cpp's tools take them). */
export const isGguf = (path: string) => path.toLowerCase().endsWith('.gguf');

/** A part of a split GGUF (llama.cpp's gguf-split names them PREFIX-00001-of-00003.gguf). */
export const SPLIT_PART = /-(\d{5})-of-(\d{5})\.gguf$/i;

/** Part i (0-based) of the split GGUF that `name` is a part of (its extension's case kept). */
export function splitPartName(name: string, i: number): string {
  const m = SPLIT_PART.exec(name);
  if (!m) throw new Error(`${name} is not a split GGUF part`);
  return name.slice(0, m.index) + `-${String(i + 1).padStart(5, '0')}-of-${m[2]}` + name.slice(name.length - 5);
}

/** A GGUF file's model name: its file name without `.gguf` (nor a split part's -00001-of-0000N). */
export const ggufModelName = (file: string) => basename(file).replace(SPLIT_PART, '').replace(/\.gguf$/i, '');

/** A file a model list shows: any GGUF but the second and later parts of a split one. */
export const isFirstGgufPart = (file: string) => {
  const m = SPLIT_PART.exec(file);
  return !m || Number(m[1]) === 1;
};

/** What a model reads of a GGUF: one file, or the parts of a split one as one. */
export interface GgufSource {
  readonly path: string;
  /** every file it reads (the parts of a split one, in order) */
  readonly files: string[];
  readonly metadata: Map<string, GgufValue>;
  readonly tensors: Map<string, GgufTensor>;
  readF32(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/** ggml tensor types quench decodes: id -> elements per block and bytes per block */
export const GGML_TYPES: Record<number, { name: string; block: number; bytes: number }> = {
  0: { name: 'F32', block: 1, bytes: 4 },
  1: { name: 'F16', block: 1, bytes: 2 },
  2: { name: 'Q4_0', block: 32, bytes: 18 },
  3: { name: 'Q4_1', block: 32, bytes: 20 },
  6: { name: 'Q5_0', block: 32, bytes: 22 },
  7: { name: 'Q5_1', block: 32, bytes: 24 },
  8: { name: 'Q8_0', block: 32, bytes: 34 },
  10: { name: 'Q2_K', block: 256, bytes: 84 },
  11: { name: 'Q3_K', block: 256, bytes: 110 },
  12: { name: 'Q4_K', block: 256, bytes: 144 },
  13: { name: 'Q5_K', block: 256, bytes: 176 },
  14: { name: 'Q6_K', block: 256, bytes: 210 },
  20: { name: 'IQ4_NL', block: 32, bytes: 18 },
  23: { name: 'IQ4_XS', block: 256, bytes: 136 },
  30: { name: 'BF16', block: 1, bytes: 2 },
};
/** names of other ggml types, for a clear refusal */
const OTHER_TYPES: Record<number, string> = { 9: 'Q8_1', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S', 21: 'IQ3_S', 22: 'IQ2_S', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 29: 'IQ1_M' };

/** arrayItems: all array items in the file together (a large vocabulary's tokens, types and merges are ~1M) */
export const GGUF_LIMITS = { tensors: 1 << 16, metadata: 1 << 16, stringBytes: 64 << 20, arrayItems: 1 << 23, dims: 4, headerBytes: 1 << 30, nameBytes: 63 };

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface GgufTensor {
  name: string;
  /** dimensions, innermost (contiguous) first, as GGUF stores them */
  dims: number[];
  type: number;
  /** absolute byte offset in the file */
  offset: number;
  byteLength: number;
}

function fail(code: string, msg: string): never {
  throw new FormatError(code, `gguf: ${msg}`);
}

const SCALAR_SIZES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readScalar(b: Buffer, i: number, type: number): GgufValue {
  switch (type) {
    case 0: return b.readUInt8(i);
    case 1: return b.readInt8(i);
    case 2: return b.readUInt16LE(i);
    case 3: return b.readInt16LE(i);
    case 4: return b.readUInt32LE(i);
    case 5: return b.readInt32LE(i);
    case 6: return b.readFloatLE(i);
    case 7: return b.readUInt8(i) !== 0;
    case 10: return b.readBigUInt64LE(i);
    case 11: return b.readBigInt64LE(i);
    default: return b.readDoubleLE(i);
  }
}

/** A cursor over the file's header, reading ahead in chunks; every read is bounds-checked. */
class HeaderReader {
  private buf: Buffer = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;
  /** array items still allowed in this file */
  items = GGUF_LIMITS.arrayItems;
  constructor(
    private fh: FileHandle,
    readonly size: number,
  ) {}

  private async need(n: number): Promise<void> {
    if (n < 0 || this.pos + n > this.size) fail('gguf_truncated', `the header runs past the end of the ${this.size}-byte file`);
    if (this.pos + n > GGUF_LIMITS.headerBytes) fail('gguf_header_too_large', `the header is larger than ${GGUF_LIMITS.headerBytes} bytes`);
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.buf.length) return;
    const len = Math.min(this.size - this.pos, Math.max(n, 1 << 20));
    this.buf = await readExactly(this.fh, len, this.pos, () => fail('gguf_truncated', 'the file ended while reading the header'));
    this.bufStart = this.pos;
  }
  private at(): number {
    return this.pos - this.bufStart;
  }
  async u32(): Promise<number> {
    await this.need(4);
    const v = this.buf.readUInt32LE(this.at());
    this.pos += 4;
    return v;
  }
  async u64(): Promise<bigint> {
    await this.need(8);
    const v = this.buf.readBigUInt64LE(this.at());
    this.pos += 8;
    return v;
  }
  /** a u64 count that must fit what is left of the file at `minBytes` per item, and a limit */
  async count(what: string, minBytes: number, limit: number): Promise<number> {
    const n = await this.u64();
    if (n > BigInt(limit)) fail('gguf_count', `${what} count ${n} exceeds the limit of ${limit}`);
    const c = Number(n);
    if (c * minBytes > this.size - this.pos) fail('gguf_count', `${what} count ${c} does not fit in the rest of the file`);
    return c;
  }
  async string(): Promise<string> {
    const n = await this.count('string byte', 1, GGUF_LIMITS.stringBytes);
    await this.need(n);
    let s: string;
    try {
      // (a leading U+FEFF is text, kept)
      s = utf8.decode(this.buf.subarray(this.at(), this.at() + n));
    } catch {
      fail('gguf_string_utf8', 'a string is not valid UTF-8');
    }
    this.pos += n;
    return s;
  }
  async scalar(type: number): Promise<GgufValue> {
    const size = SCALAR_SIZES[type];
    if (size === undefined) fail('gguf_value_type', `unknown metadata value type ${type}`);
    await this.need(size);
    const i = this.at();
    this.pos += size;
    return readScalar(this.buf, i, type);
  }
  async value(type: number): Promise<GgufValue> {
    if (type === 8) return this.string();
    if (type !== 9) return this.scalar(type);
    const itemType = await this.u32();
    // (as llama.cpp's reader: no arrays of arrays)
    if (itemType === 9) fail('gguf_nested_array', 'arrays of arrays are not supported');
    const size = SCALAR_SIZES[itemType];
    if (itemType !== 8 && size === undefined) fail('gguf_value_type', `unknown array item type ${itemType}`);
    const n = await this.count('array item', size ?? 8, this.items);
    this.items -= n;
    const out: GgufValue[] = new Array(n);
    if (itemType === 8) {
      for (let i = 0; i < n; i++) out[i] = await this.string();
      return out;
    }
    // numbers: one read for the whole array
    await this.need(n * size);
    const at = this.at();
    this.pos += n * size;
    for (let i = 0; i < n; i++) out[i] = readScalar(this.buf, at + i * size, itemType);
    return out;
  }
}

/** An open GGUF file: its metadata and tensor table, validated; tensors read on demand. */
export class GgufFile {
  private constructor(
    readonly path: string,
    private fh: FileHandle,
    readonly version: number,
    readonly metadata: Map<string, GgufValue>,
    readonly tensors: Map<string, GgufTensor>,
  ) {}

  get files(): string[] {
    return [this.path];
  }

  static async open(path: string): Promise<GgufFile> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const r = new HeaderReader(fh, size);
      if (size < 24) fail('gguf_truncated', `file is ${size} bytes, shorter than a GGUF header`);
      const magic = await r.u32();
      if (magic !== 0x46554747) fail('gguf_magic', 'not a GGUF file (bad magic)');
      const version = await r.u32();
      if (version !== 2 && version !== 3) fail('gguf_version', `GGUF version ${version} is not supported (2 or 3)`);
      const nTensors = await r.count('tensor', 8 + 4 + 4 + 8, GGUF_LIMITS.tensors);
      const nKv = await r.count('metadata', 8 + 4, GGUF_LIMITS.metadata);
      const metadata = new Map<string, GgufValue>();
      for (let i = 0; i < nKv; i++) {
        const key = await r.string();
        if (key === '') fail('gguf_key', 'a metadata key is empty');
        if (metadata.has(key)) fail('gguf_duplicate_key', `metadata key ${JSON.stringify(key)} appears twice`);
        metadata.set(key, await r.value(await r.u32()));
      }
      const align = metadata.get('general.alignment') ?? 32;
      if (typeof align !== 'number' || !Number.isInteger(align) || align < 1 || align > 1 << 16 || (align & (align - 1)) !== 0)
        fail('gguf_alignment', `general.alignment ${String(align)} is not a power of two up to 65536`);
      const infos: { name: string; dims: number[]; type: number; rel: bigint }[] = [];
      const names = new Set<string>();
      for (let i = 0; i < nTensors; i++) {
        const name = await r.string();
        if (Buffer.byteLength(name) > GGUF_LIMITS.nameBytes) fail('gguf_tensor_name', `tensor name ${JSON.stringify(name.slice(0, 80))} is longer than ${GGUF_LIMITS.nameBytes} bytes`);
        if (names.has(name)) fail('gguf_duplicate_tensor', `tensor ${JSON.stringify(name)} appears twice`);
        names.add(name);
        const nDims = await r.u32();
        if (nDims < 1 || nDims > GGUF_LIMITS.dims) fail('gguf_dims', `tensor ${JSON.stringify(name)} has ${nDims} dimensions (1 to ${GGUF_LIMITS.dims})`);
        const dims: number[] = [];
        let elements = 1;
        for (let d = 0; d < nDims; d++) {
          const n = await r.u64();
          if (n < 1n || n > BigInt(Number.MAX_SAFE_INTEGER)) fail('gguf_dims', `tensor ${JSON.stringify(name)} has dimension ${n}`);
          dims.push(Number(n));
          elements *= Number(n);
          if (!Number.isSafeInteger(elements)) fail('gguf_dims', `tensor ${JSON.stringify(name)} has too many elements`);
        }
        const type = await r.u32();
        infos.push({ name, dims, type, rel: await r.u64() });
      }
      const dataStart = Math.ceil(r.pos / align) * align;
      const tensors = new Map<string, GgufTensor>();
      for (const t of infos) {
        if (t.rel % BigInt(align) !== 0n) fail('gguf_alignment', `tensor ${JSON.stringify(t.name)} is not aligned to ${align} bytes`);
        const byteLength = tensorBytes(t.name, t.dims, t.type);
        const offset = dataStart + Number(t.rel);
        if (t.rel > BigInt(size) || offset + byteLength > size) fail('gguf_tensor_bounds', `tensor ${JSON.stringify(t.name)} runs past the end of the file`);
        tensors.set(t.name, { name: t.name, dims: t.dims, type: t.type, offset, byteLength });
      }
      // tensor data never overlaps
      const spans = [...tensors.values()].sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < spans.length; i++)
        if (spans[i - 1].offset + spans[i - 1].byteLength > spans[i].offset) fail('gguf_tensor_bounds', `tensors ${JSON.stringify(spans[i - 1].name)} and ${JSON.stringify(spans[i].name)} overlap`);
      return new GgufFile(path, fh, version, metadata, tensors);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** A tensor decoded to fp32, in GGUF's element order (innermost dimension fastest). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.tensors.get(name);
    if (!t) fail('tensor_missing', `tensor ${JSON.stringify(name)} is not in ${basename(this.path)}`);
    const buf = await readExactly(this.fh, t.byteLength, t.offset, () => fail('gguf_truncated', `the file ended while reading ${name}`));
    return dequantize(t.type, buf, t.dims.reduce((a, b) => a * b, 1));
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Open a GGUF file, or, for a part of a split one (split.count > 1 in its metadata), every part:
 * the metadata of the first (split.no 0; the others hold only the split keys), the tensors of all,
 * each read from its own part. Any part's path opens the set; each part must say which it is
 * (split.no, split.count) and the parts' tensors must be disjoint and number split.tensors.count.
 */
export async function openGguf(path: string): Promise<GgufSource> {
  const first = await GgufFile.open(path);
  const count = first.metadata.get('split.count');
  if (count === undefined || count === 1) return first;
  const parts: GgufFile[] = [first];
  try {
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > 9999) fail('gguf_split', `split.count ${String(count)} is not a part count`);
    const m = SPLIT_PART.exec(path);
    if (!m || Number(m[2]) !== count) fail('gguf_split', `${basename(path)} says it is one of ${String(count)} parts; name the parts PREFIX-00001-of-${String(count).padStart(5, '0')}.gguf as gguf-split does`);
    const partPath = (i: number) => splitPartName(path, i);
    const byNo: GgufFile[] = [];
    const mine = Number(m[1]) - 1;
    for (let i = 0; i < count; i++) {
      let f: GgufFile;
      if (i === mine) f = first;
      else {
        try {
          f = await GgufFile.open(partPath(i));
        } catch (e) {
          if ((e as { code?: string }).code === 'ENOENT') fail('gguf_split', `part ${i + 1} of ${count} (${basename(partPath(i))}) is missing`);
          throw e;
        }
        parts.push(f);
      }
      if (f.metadata.get('split.no') !== i || f.metadata.get('split.count') !== count) fail('gguf_split', `${basename(partPath(i))} is not part ${i + 1} of ${count} (its split.no / split.count say otherwise)`);
      byNo.push(f);
    }
    const tensors = new Map<string, GgufTensor>();
    const owner = new Map<string, GgufFile>();
    for (const f of byNo)
      for (const [name, t] of f.tensors) {
        if (tensors.has(name)) fail('gguf_duplicate_tensor', `tensor ${JSON.stringify(name)} is in two parts`);
        tensors.set(name, t);
        owner.set(name, f);
      }
    const total = byNo[0].metadata.get('split.tensors.count');
    if (total !== undefined && total !== tensors.size) fail('gguf_split', `the parts hold ${tensors.size} tensors; split.tensors.count says ${String(total)}`);
    return {
      path: partPath(0),
      files: byNo.map((f) => f.path),
      metadata: byNo[0].metadata,
      tensors,
      readF32: (name) => (owner.get(name) ?? byNo[0]).readF32(name),
      close: async () => {
        for (const f of parts) await f.close();
      },
    };
  } catch (e) {
    for (const f of parts) await f.close();
    throw e;
  }
}

/** Bytes of a tensor of `type` with these dimensions; a type quench cannot decode is refused here. */
export function tensorBytes(name: string, dims: number[], type: number): number {
  const t = GGML_TYPES[type];
  if (!t) {
    const known = OTHER_TYPES[type];
    fail('gguf_tensor_type', `tensor ${JSON.stringify(name)} is ${known ?? `of unknown type ${type}`}; quench decodes ${Object.values(GGML_TYPES).map((x) => x.name).join(', ')}${known ? ' (convert the model to one of those, e.g. Q8_0)' : ''}`);
  }
  if (dims[0] % t.block !== 0) fail('gguf_dims', `tensor ${JSON.stringify(name)}: its rows of ${dims[0]} are not whole ${t.name} blocks of ${t.block}`);
  return (dims.reduce((a, b) => a * b, 1) / t.block) * t.bytes;
}

/** Decode `n` elements of a ggml type to fp32. */
export function dequantize(type: number, b: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  switch (type) {
    case 0:
      for (let i = 0; i < n; i++) out[i] = v.getFloat32(4 * i, true);
      return out;
    case 1:
      for (let i = 0; i < n; i++) out[i] = f16ToF32(v.getUint16(2 * i, true));
      return out;
    case 30: {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = v.getUint16(2 * i, true) << 16;
      return out;
    }
    case 8: // Q8_0: per 32 values an fp16 scale d, then 32 int8 q: x = d * q
      for (let blk = 0; blk < n / 32; blk++) {
        const at = blk * 34;
        const d = f16ToF32(v.getUint16(at, true));
        for (let j = 0; j < 32; j++) out[blk * 32 + j] = d * v.getInt8(at + 2 + j);
      }
      return out;
    case 2: // Q4_0: an fp16 scale d, then 16 bytes: value j in the low nibble of byte j, value j + 16 in its high nibble, each minus 8
      for (let blk = 0; blk < n / 32; blk++) {
        const at = blk * 18;
        const d = f16ToF32(v.getUint16(at, true));
        for (let j = 0; j < 16; j++) {
          const q = b[at + 2 + j];
          out[blk * 32 + j] = d * ((q & 0x0f) - 8);
          out[blk * 32 + j + 16] = d * ((q >> 4) - 8);
        }
      }
      return out;
    case 3: // Q4_1: fp16 d, fp16 m, 16 bytes of nibbles (as Q4_0, unsigned): x = q * d + m
    case 6: // Q5_0: fp16 d, u32 of 5th bits (bit e for value e), 16 bytes of nibbles: x = (q - 16) * d
    case 7: {
      // Q5_1: fp16 d, fp16 m, u32 of 5th bits, 16 bytes of nibbles: x = q * d + m
      const { bytes } = GGML_TYPES[type];
      const hasMin = type !== 6;
      const five = type !== 3;
      const qsAt = (hasMin ? 4 : 2) + (five ? 4 : 0);
      for (let blk = 0; blk < n / 32; blk++) {
        const at = blk * bytes;
        const d = f16ToF32(v.getUint16(at, true));
        const m = hasMin ? f16ToF32(v.getUint16(at + 2, true)) : 0;
        const qh = five ? v.getUint32(at + (hasMin ? 4 : 2), true) : 0;
        for (let e = 0; e < 32; e++) {
          const byte = b[at + qsAt + (e & 15)];
          let q = e < 16 ? byte & 0x0f : byte >> 4;
          if (five) q |= ((qh >>> e) & 1) << 4;
          out[blk * 32 + e] = hasMin ? f(f(q * d) + m) : f((q - 16) * d);
        }
      }
      return out;
    }
    case 12: // Q4_K
    case 13: {
      // Q5_K. fp16 d and dmin, 12 bytes of 6-bit scales and mins (8 sub-blocks of 32), [Q5_K: 32
      // bytes of 5th bits, bit s of byte l for value l of sub-block s], 128 bytes of nibbles:
      // value l of sub-block s is in byte 32*(s>>1) + l, low nibble for even s, high for odd;
      // x = d * scale_s * q - dmin * min_s
      const q5 = type === 13;
      const bytes = q5 ? 176 : 144;
      const qsAt = q5 ? 48 : 16;
      for (let blk = 0; blk < n / 256; blk++) {
        const at = blk * bytes;
        const d = f16ToF32(v.getUint16(at, true));
        const dmin = f16ToF32(v.getUint16(at + 2, true));
        for (let s = 0; s < 8; s++) {
          const [sc, mn] = scaleMinK4(b, at + 4, s);
          const ds = f(d * sc);
          const ms = f(dmin * mn);
          for (let l = 0; l < 32; l++) {
            const byte = b[at + qsAt + 32 * (s >> 1) + l];
            let q = s & 1 ? byte >> 4 : byte & 0x0f;
            if (q5) q += ((b[at + 16 + l] >> s) & 1) << 4;
            out[blk * 256 + 32 * s + l] = f(f(ds * q) - ms);
          }
        }
      }
      return out;
    }
    case 10: // Q2_K: 16 bytes of 4-bit scale (low) and min (high) per 16 values, 64 bytes of 2-bit q, fp16 d, fp16 dmin
    case 11: {
      // Q3_K: 32 bytes of high bits, 64 bytes of 2-bit low q, 12 bytes of 6-bit scales (16 of them), fp16 d.
      // Value e: h = e >> 7 (half), g = (e >> 5) & 3 (its 2-bit plane), l = e & 31; low bits in byte
      // 32h + l at shift 2g; scale (one per 16 values) number e >> 4; Q3_K's high bit: bit 4h + g of
      // byte l (set: q as is, clear: q - 4). Q2_K: x = d*scale*q - dmin*min; Q3_K: x = d*(scale - 32)*q
      const q2 = type === 10;
      const bytes = q2 ? 84 : 110;
      const qsAt = q2 ? 16 : 32;
      const sc3 = new Int8Array(16);
      for (let blk = 0; blk < n / 256; blk++) {
        const at = blk * bytes;
        const d = f16ToF32(v.getUint16(at + (q2 ? 80 : 108), true));
        const dmin = q2 ? f16ToF32(v.getUint16(at + 82, true)) : 0;
        if (!q2) for (let j = 0; j < 16; j++) sc3[j] = scaleK3(b, at + 96, j) - 32;
        for (let e = 0; e < 256; e++) {
          const h = e >> 7;
          const g = (e >> 5) & 3;
          const l = e & 31;
          const q = (b[at + qsAt + 32 * h + l] >> (2 * g)) & 3;
          if (q2) {
            const sm = b[at + (e >> 4)];
            out[blk * 256 + e] = f(f(f(d * (sm & 0x0f)) * q) - f(dmin * (sm >> 4)));
          } else out[blk * 256 + e] = f(f(d * sc3[e >> 4]) * (q - ((b[at + l] >> (4 * h + g)) & 1 ? 0 : 4)));
        }
      }
      return out;
    }
    case 20: // IQ4_NL: fp16 d, 16 bytes of nibbles laid out as Q4_0's; x = d * IQ4_VALUES[q]
      for (let blk = 0; blk < n / 32; blk++) {
        const at = blk * 18;
        const d = f16ToF32(v.getUint16(at, true));
        for (let j = 0; j < 32; j++) out[blk * 32 + j] = f(d * IQ4_VALUES[j < 16 ? b[at + 2 + j] & 0x0f : b[at + 2 + j - 16] >> 4]);
      }
      return out;
    case 23: // IQ4_XS: fp16 d, u16 of high scale bits (2 per sub-block of 32), 4 bytes of low scale nibbles, 128 bytes of nibbles (Q4_0's layout per sub-block)
      for (let blk = 0; blk < n / 256; blk++) {
        const at = blk * 136;
        const d = f16ToF32(v.getUint16(at, true));
        const high = v.getUint16(at + 2, true);
        for (let s = 0; s < 8; s++) {
          const ls = ((b[at + 4 + (s >> 1)] >> (4 * (s & 1))) & 0x0f) | (((high >> (2 * s)) & 3) << 4);
          const dl = f(d * (ls - 32));
          for (let j = 0; j < 32; j++) out[blk * 256 + 32 * s + j] = f(dl * IQ4_VALUES[j < 16 ? b[at + 8 + 16 * s + j] & 0x0f : b[at + 8 + 16 * s + j - 16] >> 4]);
        }
      }
      return out;
    case 14: // Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales (one per 16 values), fp16 d last
      for (let blk = 0; blk < n / 256; blk++) {
        const at = blk * 210;
        const d = f16ToF32(v.getUint16(at + 208, true));
        for (let e = 0; e < 256; e++) {
          const half = e >> 7;
          const g = (e >> 5) & 3;
          const l = e & 31;
          const lb = b[at + 64 * half + 32 * (g & 1) + l];
          const lo = g >= 2 ? lb >> 4 : lb & 0x0f;
          const hi = (b[at + 128 + 32 * half + l] >> (2 * g)) & 3;
          out[blk * 256 + e] = f(f(d * v.getInt8(at + 192 + (e >> 4))) * ((lo | (hi << 4)) - 32));
        }
      }
      return out;
    default:
      return fail('gguf_tensor_type', `cannot decode ggml type ${type}`);
  }
}

const f = Math.fround;

/** the 16 levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl) */
const IQ4_VALUES = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** Q3_K's 6-bit scale j (0..15, unsigned, before the -32) from its 12 packed bytes at `o`:
 *  the low 4 bits are nibbles of bytes 0-7 (j < 8: low nibble of byte j, else high nibble of
 *  byte j - 8), the high 2 bits come from bytes 8-11 (byte 8 + j % 4, bits 2 * (j >> 2)). */
function scaleK3(q: Uint8Array, o: number, j: number): number {
  const low = j < 8 ? q[o + j] & 0x0f : q[o + j - 8] >> 4;
  return low | (((q[o + 8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4);
}

/** The 6-bit scale and min of sub-block j from a K-quant's 12 packed bytes at `o`. */
function scaleMinK4(q: Uint8Array, o: number, j: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [(q[o + j + 4] & 0x0f) | ((q[o + j - 4] >> 6) << 4), (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)];
}
