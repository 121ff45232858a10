// safetensors: the weight format of every checkpoint quench loads.
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data buffer. Offsets are relative to the data buffer.
// The reader validates everything before it allocates anything sized by the file, and
// reads tensors one at a time from the file descriptor: a shard is never held whole.

import { open, type FileHandle, readFile } from 'node:fs/promises';
import { openSync, writeSync, closeSync } from 'node:fs';
import { join, basename } from 'node:path';
import { FormatError } from '../errors.ts';
import { readExactly } from './read.ts';

export const DTYPE_SIZES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};
export type DType = keyof typeof DTYPE_SIZES;

export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** absolute byte offset in the file */
  offset: number;
  byteLength: number;
}

function fail(code: string, msg: string): never {
  throw new FormatError(code, `safetensors: ${msg}`);
}

/** Parse and validate a header given the file size. Pure: exported for tests. */
export function parseHeader(headerBytes: Uint8Array, fileSize: number): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  const n = headerBytes.length;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    fail('safetensors_header_utf8', 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    fail('safetensors_header_json', 'header is not valid JSON');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail('safetensors_header_json', 'header is not a JSON object');
  const dataStart = 8 + n;
  const dataLength = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('safetensors_metadata', '__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail('safetensors_metadata', `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (raw === null || typeof raw !== 'object') fail('safetensors_entry', `entry ${JSON.stringify(name)} is not an object`);
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_SIZES)) fail('safetensors_dtype', `tensor ${JSON.stringify(name)} has unknown dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || e.shape.length > 8) fail('safetensors_shape', `tensor ${JSON.stringify(name)} has an invalid shape`);
    let count = 1n;
    for (const d of e.shape) {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) fail('safetensors_shape', `tensor ${JSON.stringify(name)} has an invalid dimension ${JSON.stringify(d)}`);
      count *= BigInt(d);
    }
    if (!Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) fail('safetensors_offsets', `tensor ${JSON.stringify(name)} needs data_offsets [begin, end]`);
    const [begin, end] = e.data_offsets as unknown[];
    if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0)
      fail('safetensors_offsets', `tensor ${JSON.stringify(name)} has non-integer offsets`);
    if (end < begin) fail('safetensors_offsets', `tensor ${JSON.stringify(name)} ends before it begins`);
    const expected = count * BigInt(DTYPE_SIZES[e.dtype]);
    if (BigInt(end - begin) !== expected)
      fail('safetensors_size', `tensor ${JSON.stringify(name)} holds ${end - begin} bytes but its shape and dtype need ${expected}`);
    if (end > dataLength) fail('safetensors_bounds', `tensor ${JSON.stringify(name)} ends past the end of the file`);
    tensors.push({ name, dtype: e.dtype as DType, shape: e.shape as number[], offset: dataStart + begin, byteLength: end - begin });
  }
  // Contiguous and non-overlapping, covering the whole data buffer.
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let cursor = dataStart;
  for (const t of sorted) {
    if (t.offset < cursor) fail('safetensors_overlap', `tensor ${JSON.stringify(t.name)} overlaps another tensor`);
    if (t.offset > cursor) fail('safetensors_gap', `gap in the data buffer before tensor ${JSON.stringify(t.name)}`);
    cursor = t.offset + t.byteLength;
  }
  if (cursor !== fileSize) fail('safetensors_trailing', `data buffer is ${dataLength} bytes but the tensors cover ${cursor - dataStart}`);
  return { tensors, metadata };
}

export class SafetensorsFile {
  readonly path: string;
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private fh: FileHandle;

  private constructor(path: string, fh: FileHandle, tensors: TensorInfo[], metadata: Record<string, string>) {
    this.path = path;
    this.fh = fh;
    this.tensors = new Map(tensors.map((t) => [t.name, t]));
    this.metadata = metadata;
  }

  static async open(path: string): Promise<SafetensorsFile> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      if (size < 8) fail('safetensors_truncated', `file is ${size} bytes, shorter than the 8-byte header length`);
      const ended = () => fail('safetensors_truncated', 'the file ended while reading the header');
      const lenBuf = await readExactly(fh, 8, 0, ended);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES)) fail('safetensors_header_too_large', `header length ${n} exceeds ${MAX_HEADER_BYTES} bytes`);
      if (n + 8n > BigInt(size)) fail('safetensors_header_bounds', `header length ${n} runs past the end of the ${size}-byte file`);
      // (read in full: one read() may return fewer bytes, from a pipe or a network file system)
      const header = await readExactly(fh, Number(n), 8, ended);
      const { tensors, metadata } = parseHeader(header, size);
      return new SafetensorsFile(path, fh, tensors, metadata);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Raw bytes of one tensor, read straight from the file. */
  async read(name: string): Promise<Buffer> {
    const t = this.tensors.get(name);
    if (!t) throw new FormatError('tensor_missing', `tensor ${JSON.stringify(name)} is not in ${basename(this.path)}`);
    return readExactly(this.fh, t.byteLength, t.offset, () => fail('safetensors_truncated', `file ended while reading ${name}`));
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** A checkpoint: one safetensors file or shards listed by model.safetensors.index.json. */
export class Checkpoint {
  private byName = new Map<string, SafetensorsFile>();
  private files: SafetensorsFile[] = [];

  static async open(dir: string): Promise<Checkpoint> {
    const ck = new Checkpoint();
    let index: string | null = null;
    try {
      index = await readFile(join(dir, 'model.safetensors.index.json'), 'utf8');
    } catch {
      index = null;
    }
    try {
      if (index !== null) {
        const shards = parseIndex(index);
        const opened = new Map<string, SafetensorsFile>();
        for (const [name, file] of shards) {
          let f = opened.get(file);
          if (!f) {
            f = await SafetensorsFile.open(join(dir, file));
            opened.set(file, f);
            ck.files.push(f);
          }
          if (!f.tensors.has(name)) fail('safetensors_index', `index maps ${JSON.stringify(name)} to ${file}, which does not hold it`);
          ck.byName.set(name, f);
        }
      } else {
        const f = await SafetensorsFile.open(join(dir, 'model.safetensors'));
        ck.files.push(f);
        for (const name of f.tensors.keys()) ck.byName.set(name, f);
      }
    } catch (e) {
      await ck.close();
      throw e;
    }
    return ck;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  info(name: string): TensorInfo {
    const f = this.byName.get(name);
    if (!f) throw new FormatError('tensor_missing', `checkpoint has no tensor ${JSON.stringify(name)}`);
    return f.tensors.get(name)!;
  }
  async read(name: string): Promise<Buffer> {
    const f = this.byName.get(name);
    if (!f) throw new FormatError('tensor_missing', `checkpoint has no tensor ${JSON.stringify(name)}`);
    return f.read(name);
  }
  /** Read a float tensor and convert it to fp32. */
  async readF32(name: string): Promise<Float32Array> {
    return toFloat32(this.info(name).dtype, await this.read(name));
  }
  async close(): Promise<void> {
    for (const f of this.files) await f.close();
    this.files = [];
  }
}

/** A shard file name must name a file beside the index: no directories, no escapes. */
export function isSafeShardName(file: string): boolean {
  if (file.length === 0 || file.length > 255) return false;
  if (file.includes('/') || file.includes('\\') || file.includes('\0')) return false;
  if (file === '.' || file === '..' || /^[A-Za-z]:/.test(file)) return false;
  return file.endsWith('.safetensors');
}

export function parseIndex(text: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    fail('safetensors_index', 'model.safetensors.index.json is not valid JSON');
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) fail('safetensors_index', 'index has no weight_map object');
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== 'string' || !isSafeShardName(file)) fail('safetensors_index_path', `index maps ${JSON.stringify(name)} to an unsafe file name ${JSON.stringify(file)}`);
    out.set(name, file);
  }
  return out;
}

// ---------------------------------------------------------------- dtype conversion

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export function f16ToF32(h: number): number {
  const s = (h & 0x8000) >> 15;
  const e = (h & 0x7c00) >> 10;
  const f = h & 0x03ff;
  let v: number;
  if (e === 0) v = f * 2 ** -24;
  else if (e === 31) v = f ? NaN : Infinity;
  else v = (1 + f / 1024) * 2 ** (e - 15);
  return s ? -v : v;
}

export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if (Number.isNaN(x)) return 0x7fc0;
  // round to nearest even
  return ((u + 0x7fff + ((u >> 16) & 1)) >>> 16) & 0xffff;
}

export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = sign | (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return half;
}

/** Convert raw little-endian bytes of a float dtype to a fresh Float32Array. */
export function toFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength / DTYPE_SIZES[dtype];
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    case 'BF16': {
      const o32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o32[i] = dv.getUint16(i * 2, true) << 16;
      return out;
    }
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
      return out;
    default:
      throw new FormatError('safetensors_dtype', `tensor dtype ${dtype} is not a float type`);
  }
}

/** Encode fp32 values in a float dtype (little-endian). */
export function fromFloat32(dtype: DType, values: Float32Array): Uint8Array {
  const size = DTYPE_SIZES[dtype];
  const out = new Uint8Array(values.length * size);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (dtype === 'F32') dv.setFloat32(i * 4, x, true);
    else if (dtype === 'F64') dv.setFloat64(i * 8, x, true);
    else if (dtype === 'BF16') dv.setUint16(i * 2, f32ToBf16Bits(x), true);
    else if (dtype === 'F16') dv.setUint16(i * 2, f32ToF16Bits(x), true);
    else throw new FormatError('safetensors_dtype', `cannot encode floats as ${dtype}`);
  }
  return out;
}

// ---------------------------------------------------------------- writer

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** Write tensors in the given order; the header is space-padded to 8-byte alignment. */
export function encodeSafetensorsHeader(tensors: TensorToWrite[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const need = t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZES[t.dtype];
    if (need !== t.data.byteLength) throw new FormatError('safetensors_size', `tensor ${t.name}: ${t.data.byteLength} bytes for shape [${t.shape}] ${t.dtype}`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  // pad by UTF-8 bytes, not UTF-16 units: non-ASCII names would otherwise misalign the data
  json += ' '.repeat((8 - ((Buffer.byteLength(json, 'utf8') + 8) % 8)) % 8);
  const hb = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  return Buffer.concat([len, hb]);
}

export async function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): Promise<void> {
  const head = encodeSafetensorsHeader(tensors, metadata);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, head);
    for (const t of tensors) writeSync(fd, t.data);
  } finally {
    closeSync(fd);
  }
}
