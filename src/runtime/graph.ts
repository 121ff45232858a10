// A small ONNX graph builder. Architectures describe their forward pass once, in TS,
// through these calls; ORT executes the result. Weights live in an external-data file
// beside the .onnx (an ONNX protobuf is capped at 2 GB), page-aligned so ORT can map it.

import { closeSync, openSync, writeSync } from 'node:fs';
import protobuf from 'onnx-proto';

const { onnx } = protobuf as unknown as { onnx: typeof import('onnx-proto').onnx };

export const DT = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9, FLOAT16: 10 } as const;
export type DataType = (typeof DT)[keyof typeof DT];

const BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 9: 1, 10: 2 };

type AttrValue = { i: number } | { f: number } | { ints: number[] } | { floats: number[] } | { s: string } | { t: import('onnx-proto').onnx.ITensorProto };
export const I = (i: number): AttrValue => ({ i });
export const F = (f: number): AttrValue => ({ f });
export const Is = (ints: number[]): AttrValue => ({ ints });
export const S = (s: string): AttrValue => ({ s });

function attribute(name: string, v: AttrValue): import('onnx-proto').onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if ('i' in v) return { name, type: T.INT, i: v.i };
  if ('f' in v) return { name, type: T.FLOAT, f: v.f };
  if ('ints' in v) return { name, type: T.INTS, ints: v.ints };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  if ('s' in v) return { name, type: T.STRING, s: new TextEncoder().encode(v.s) };
  return { name, type: T.TENSOR, t: v.t };
}

/** Appends weight bytes to one external-data file, page-aligned per tensor. */
export class WeightWriter {
  readonly file: string;
  readonly location: string;
  private fd: number;
  private offset = 0;
  static readonly ALIGN = 4096;

  constructor(path: string, location: string) {
    this.file = path;
    this.location = location;
    this.fd = openSync(path, 'w');
  }

  append(bytes: Uint8Array): { offset: number; length: number } {
    const pad = (WeightWriter.ALIGN - (this.offset % WeightWriter.ALIGN)) % WeightWriter.ALIGN;
    if (pad) {
      writeSync(this.fd, new Uint8Array(pad));
      this.offset += pad;
    }
    const at = this.offset;
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, bytes.byteLength - done);
    this.offset += bytes.byteLength;
    return { offset: at, length: bytes.byteLength };
  }

  get bytesWritten(): number {
    return this.offset;
  }

  close(): void {
    closeSync(this.fd);
  }
}

export type Dim = number | string;

export class Graph {
  private nodes: import('onnx-proto').onnx.INodeProto[] = [];
  private inits: import('onnx-proto').onnx.ITensorProto[] = [];
  private inputs: import('onnx-proto').onnx.IValueInfoProto[] = [];
  private outputs: import('onnx-proto').onnx.IValueInfoProto[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();
  readonly weights: WeightWriter | null;
  /** parameter count of float weights added (for FLOP accounting) */
  paramCount = 0;

  constructor(weights: WeightWriter | null) {
    this.weights = weights;
  }

  private valueInfo(name: string, type: DataType, dims: Dim[]) {
    return {
      name,
      type: { tensorType: { elemType: type, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
    };
  }

  input(name: string, type: DataType, dims: Dim[]): string {
    this.inputs.push(this.valueInfo(name, type, dims));
    return name;
  }

  output(name: string, type: DataType, dims: Dim[]): void {
    this.outputs.push(this.valueInfo(name, type, dims));
  }

  fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }

  /** Add a node; returns its output names. */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { outputs?: number | string[]; domain?: string; name?: string } = {}): string[] {
    const outs = Array.isArray(opts.outputs) ? opts.outputs : Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(op));
    this.nodes.push({
      opType: op,
      input: inputs,
      output: outs,
      name: opts.name ?? this.fresh(`n_${op}`),
      domain: opts.domain ?? '',
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outs;
  }

  /** Single-output node. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { output?: string; domain?: string } = {}): string {
    return this.node(op, inputs, attrs, { outputs: opts.output ? [opts.output] : 1, domain: opts.domain })[0];
  }

  /** A small constant stored inline in the graph. */
  constant(type: DataType, dims: number[], values: ArrayLike<number>): string {
    const key = `${type}:${dims}:${Array.from(values).join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh('const');
    this.inits.push({ name, dataType: type, dims, rawData: rawBytes(type, values) });
    this.constCache.set(key, name);
    return name;
  }
  i64(values: number[], dims: number[] = [values.length]): string {
    return this.constant(DT.INT64, dims, values);
  }
  f32(values: number[], dims: number[] = [values.length]): string {
    return this.constant(DT.FLOAT, dims, values);
  }

  /** A weight tensor; large ones go to the external-data file. */
  weight(name: string, type: DataType, dims: number[], data: Uint8Array, countsAsParams = true): string {
    if (countsAsParams && type === DT.FLOAT) this.paramCount += data.byteLength / 4;
    if (this.weights && data.byteLength >= 1024) {
      const { offset, length } = this.weights.append(data);
      this.inits.push({
        name,
        dataType: type,
        dims,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: this.weights.location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(length) },
        ],
      });
    } else {
      this.inits.push({ name, dataType: type, dims, rawData: data.slice() });
    }
    return name;
  }

  toBytes(opsets: Record<string, number> = { '': 17, 'com.microsoft': 1 }): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'quench',
      opsetImport: Object.entries(opsets).map(([domain, version]) => ({ domain, version })),
      graph: { name: 'quench', node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function rawBytes(type: DataType, values: ArrayLike<number>): Uint8Array {
  const n = values.length;
  const out = new Uint8Array(n * BYTES[type]);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (type === DT.FLOAT) dv.setFloat32(i * 4, v, true);
    else if (type === DT.INT64) dv.setBigInt64(i * 8, BigInt(v), true);
    else if (type === DT.INT32) dv.setInt32(i * 4, v, true);
    else if (type === DT.INT8) dv.setInt8(i, v);
    else if (type === DT.UINT8 || type === DT.BOOL) dv.setUint8(i, v);
    else throw new Error(`constant of type ${type} unsupported`);
  }
  return out;
}

export function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
