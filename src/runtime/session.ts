// An ORT session over one model graph, and the packing of several sequences' forward
// requests into one batched run (padding handled through the attention bias).

import ort from 'onnxruntime-node';
import { Worker } from 'node:worker_threads';
import type { KVCache } from './kv.ts';
import { extendCache, growCapacity } from './kv.ts';

export const HIDDEN = -1e9;

/** One sequence's forward: a window of tokens attending to its cache and to itself. */
export interface ForwardRequest {
  /** token ids of the window [L] */
  ids: Int32Array;
  /** RoPE position of each window token [L] */
  positions: Int32Array;
  /** cached context (P entries); absent = none */
  past?: KVCache;
  /** visible[i * (P + L) + j]: window row i sees column j (cache entries first, then the window) */
  visible: Uint8Array;
  /** window rows whose scores are wanted [Q] */
  queries: Int32Array;
  /** return the K/V of this forward so the caller can keep part of it */
  wantPresent?: boolean;
  /** entries this sequence's cache will grow to, when it is appended in place: a cache kept
   * from this forward is allocated for that many at once, so it never reallocates */
  cacheRows?: number;
  /** return full logits rows (sampling over the whole vocabulary, logprobs) */
  wantLogits?: boolean;
}

export interface ForwardResult {
  /** [Q * K] candidate ids / logits, best first */
  topIds: Int32Array;
  topLogits: Float32Array;
  /** [Q] log-sum-exp and entropy (nats) of each queried row */
  lse: Float32Array;
  entropy: Float32Array;
  /** [Q * V] when asked for */
  logits?: Float32Array;
  /** keep some cache entries (indices into past) and some window rows as a new cache */
  takeCache?: (pastKeep: ArrayLike<number>, windowKeep: ArrayLike<number>) => KVCache;
}

export interface SessionShape {
  layers: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  topK: number;
}

export interface SessionOptions {
  threads?: number;
  /** run the graph in a worker thread, off the event loop (see GraphWorker) */
  worker?: boolean;
}

function sessionOptions(o: SessionOptions): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: o.threads ?? 0,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    enableCpuMemArena: true,
    logSeverityLevel: 3,
  };
}

type Outputs = Record<string, { data: Float32Array | BigInt64Array; dims: readonly number[] }>;

/** One write into the packed cache buffers: layer, keys (0) or values (1), offset, rows. */
interface PackWrite {
  l: number;
  kv: 0 | 1;
  at: number;
  rows: Float32Array;
}

/**
 * The graph in a worker thread (graph-worker.mjs), so that the event loop keeps serving HTTP,
 * streams and disconnects while a forward runs: ORT's node binding runs a forward synchronously
 * on the calling thread. ORT refuses tensors over SharedArrayBuffer, so the packed cache
 * buffers live in the worker and each forward ships only what changed in them (the new rows of
 * each cache in steady decoding, everything after a repack); outputs come back by transfer.
 */
class GraphWorker {
  private next = 1;
  private waiting = new Map<number, (r: { ok: boolean; message?: string; outputs?: Outputs }) => void>();
  private failed: Error | null = null;

  private constructor(private worker: Worker) {
    worker.on('message', (r: { id: number; ok: boolean; message?: string; outputs?: Outputs }) => {
      const done = this.waiting.get(r.id);
      this.waiting.delete(r.id);
      done?.(r);
    });
    const fail = (e: Error) => {
      this.failed ??= e;
      for (const done of this.waiting.values()) done({ ok: false, message: e.message });
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('messageerror', fail);
    worker.on('exit', (code) => fail(new Error(`the graph worker stopped (exit code ${code})`)));
  }

  static async create(modelPath: string, o: SessionOptions): Promise<GraphWorker> {
    const g = new GraphWorker(new Worker(new URL('./graph-worker.mjs', import.meta.url)));
    try {
      await g.call({ op: 'load', modelPath, options: sessionOptions(o) }, []);
    } catch (e) {
      await g.worker.terminate();
      throw e;
    }
    return g;
  }

  async call(msg: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<Outputs | undefined> {
    if (this.failed) throw this.failed;
    const id = this.next++;
    // the worker keeps the process alive only while a call waits on it (an idle model left
    // unclosed does not hold the process open)
    this.worker.ref();
    const reply = await new Promise<{ ok: boolean; message?: string; outputs?: Outputs }>((resolve) => {
      this.waiting.set(id, resolve);
      try {
        this.worker.postMessage({ ...msg, id }, transfer);
      } catch (e) {
        this.waiting.delete(id);
        resolve({ ok: false, message: `could not send to the graph worker: ${(e as Error).message}` });
      }
    });
    if (this.waiting.size === 0) this.worker.unref();
    if (!reply.ok) throw new Error(reply.message);
    return reply.outputs;
  }

  async release(): Promise<void> {
    if (!this.failed) await this.call({ op: 'release' }, []).catch(() => undefined);
    await this.worker.terminate();
  }
}

export class OrtRunner {
  readonly shape: SessionShape;
  private session: ort.InferenceSession | null;
  private worker: GraphWorker | null;
  /** worker mode: layouts of and writes into the worker's packed buffers, in order, sent with
   * the next forward */
  private ops: ({ size: number; room: number } | PackWrite)[] = [];
  /** forward passes run, and rows processed (for throughput accounting) */
  stats = { forwards: 0, rows: 0, batches: 0 };
  /** the last batch's packed caches, kept for the next step (see packBatch) */
  private packed: PackedBatch | null = null;
  /** the memory behind `packed`, reused by repacks that fit */
  private pool: { keys: Float32Array[]; values: Float32Array[] } | null = null;
  private running = 0;

  private constructor(session: ort.InferenceSession | null, worker: GraphWorker | null, shape: SessionShape) {
    this.session = session;
    this.worker = worker;
    this.shape = shape;
  }

  static async create(modelPath: string, shape: SessionShape, opts: SessionOptions = {}): Promise<OrtRunner> {
    if (opts.worker) return new OrtRunner(null, await GraphWorker.create(modelPath, opts), shape);
    return new OrtRunner(await ort.InferenceSession.create(modelPath, sessionOptions(opts)), null, shape);
  }

  async release(): Promise<void> {
    if (this.worker) await this.worker.release();
    else await this.session!.release();
  }

  /** Run several sequences' windows as one batch. */
  async forward(reqs: ForwardRequest[]): Promise<ForwardResult[]> {
    try {
      return await this.forwardOnce(reqs);
    } catch (e) {
      // worker mode: what the worker's buffers hold is no longer known (a failed request after
      // packing, or a worker error part-way): drop what was queued, the next batch repacks
      if (this.worker) {
        this.ops = [];
        this.packed = null;
      }
      throw e;
    }
  }

  private async forwardOnce(reqs: ForwardRequest[]): Promise<ForwardResult[]> {
    const { layers, kvHeads: H, headDim: Dh, vocab: V } = this.shape;
    const B = reqs.length;
    const L = Math.max(...reqs.map((r) => r.ids.length));
    // Caches feed a packed [B, Hkv, P, Dh] batch buffer that persists across steps (only new
    // rows are copied in), P a power of two: few distinct shapes, and no column read that no
    // sequence uses beyond that rounding (a cache's own capacity can be its whole canvas).
    const anyPast = reqs.some((r) => (r.past?.length ?? 0) > 0);
    const packed = anyPast ? this.packBatch(reqs.map((r) => r.past)) : null;
    const P = packed ? packed.cap : 0;
    const Q = Math.max(1, ...reqs.map((r) => r.queries.length));
    const T = P + L;

    const ids = new BigInt64Array(B * L);
    const pos = new BigInt64Array(B * L);
    const bias = new Float32Array(B * L * T).fill(HIDDEN);
    const qidx = new BigInt64Array(B * Q);
    reqs.forEach((r, b) => {
      const l = r.ids.length;
      const p = r.past?.length ?? 0;
      if (r.visible.length !== l * (p + l)) throw new Error(`visibility has ${r.visible.length} entries, expected ${l * (p + l)}`);
      for (let i = 0; i < l; i++) {
        ids[b * L + i] = BigInt(r.ids[i]);
        pos[b * L + i] = BigInt(r.positions[i]);
        const row = (b * L + i) * T;
        const vrow = i * (p + l);
        for (let j = 0; j < p; j++) if (r.visible[vrow + j]) bias[row + j] = 0;
        for (let j = 0; j < l; j++) if (r.visible[vrow + p + j]) bias[row + P + j] = 0;
      }
      // padding rows see themselves only, so their softmax stays finite
      for (let i = l; i < L; i++) bias[(b * L + i) * T + P + i] = 0;
      r.queries.forEach((q, i) => (qidx[b * Q + i] = BigInt(q)));
    });

    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, L]),
      position_ids: new ort.Tensor('int64', pos, [B, L]),
      attention_bias: new ort.Tensor('float32', bias, [B, L, T]),
      query_index: new ort.Tensor('int64', qidx, [B, Q]),
    };
    // (worker mode: the worker feeds the caches from its own buffers)
    for (let l = 0; l < layers && !this.worker; l++) {
      for (const kind of ['key', 'value'] as const) {
        const data = packed ? (kind === 'key' ? packed.keys[l] : packed.values[l]) : new Float32Array(0);
        feeds[`past_${kind}_${l}`] = new ort.Tensor('float32', data, [B, H, P, Dh]);
      }
    }
    const wantPresent = reqs.some((r) => r.wantPresent);
    const wantLogits = reqs.some((r) => r.wantLogits);
    const fetches = ['top_values', 'top_ids', 'lse', 'entropy'];
    if (wantLogits) fetches.push('logits');
    if (wantPresent) for (let l = 0; l < layers; l++) fetches.push(`present_key_${l}`, `present_value_${l}`);

    this.running++;
    let out: Outputs;
    try {
      out = this.worker ? await this.runInWorker(feeds, fetches, packed) : ((await this.session!.run(feeds, fetches)) as unknown as Outputs);
    } finally {
      this.running--;
    }
    this.stats.forwards += 1;
    this.stats.batches += B;
    this.stats.rows += B * L;

    const K = out.top_values.dims[2] as number;
    const tv = out.top_values.data as Float32Array;
    const ti = out.top_ids.data as BigInt64Array;
    const lse = out.lse.data as Float32Array;
    const ent = out.entropy.data as Float32Array;
    const logits = wantLogits ? (out.logits.data as Float32Array) : null;
    const presentK = wantPresent ? Array.from({ length: layers }, (_, l) => out[`present_key_${l}`].data as Float32Array) : [];
    const presentV = wantPresent ? Array.from({ length: layers }, (_, l) => out[`present_value_${l}`].data as Float32Array) : [];

    return reqs.map((r, b) => {
      const q = r.queries.length;
      const topIds = new Int32Array(q * K);
      for (let i = 0; i < q * K; i++) topIds[i] = Number(ti[b * Q * K + i]);
      const res: ForwardResult = {
        topIds,
        topLogits: tv.slice(b * Q * K, b * Q * K + q * K),
        lse: lse.slice(b * Q, b * Q + q),
        entropy: ent.slice(b * Q, b * Q + q),
      };
      if (r.wantLogits && logits) res.logits = logits.slice(b * Q * V, b * Q * V + q * V);
      if (r.wantPresent)
        res.takeCache = (pastKeep, windowKeep) =>
          extendCache(this.shape, r.past, pastKeep, presentK, presentV, b, L, windowKeep, r.positions, r.cacheRows);
      return res;
    });
  }

  /** The worker builds the past_* feeds from its own packed buffers after applying the writes. */
  private async runInWorker(feeds: Record<string, ort.Tensor>, fetches: string[], packed: PackedBatch | null): Promise<Outputs> {
    const plain: Record<string, { type: string; data: unknown; dims: readonly number[] }> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [k, t] of Object.entries(feeds)) {
      if (k.startsWith('past_')) continue;
      plain[k] = { type: t.type, data: t.data, dims: t.dims };
      transfer.push((t.data as Float32Array).buffer as ArrayBuffer);
    }
    // everything queued since the last forward, in order: [-1, size, room, 0] lays the buffers
    // out, [layer, 0 = keys / 1 = values, at, length] writes rows; the rows travel back to back
    // in one array (copied now: the caches they come from keep growing)
    let total = 0;
    for (const op of this.ops) if ('rows' in op) total += op.rows.length;
    const rows = new Float32Array(total);
    const index = new Int32Array(this.ops.length * 4);
    let o = 0;
    this.ops.forEach((op, i) => {
      if (!('rows' in op)) return index.set([-1, op.size, op.room, 0], i * 4);
      rows.set(op.rows, o);
      index.set([op.l, op.kv, op.at, op.rows.length], i * 4);
      o += op.rows.length;
    });
    this.ops = [];
    transfer.push(rows.buffer, index.buffer);
    const { layers, kvHeads: H, headDim: Dh } = this.shape;
    const B = (feeds.input_ids.dims[0] as number) ?? 0;
    const past = { layers, dims: [B, H, packed ? packed.cap : 0, Dh], rows, index };
    return (await this.worker!.call({ op: 'run', feeds: plain, past, fetches }, transfer))!;
  }

  /**
   * Pack the sequences' caches into [B, Hkv, cap, Dh] buffers, cap = growCapacity(longest).
   * In steady decoding the batch is the same sequences step after step and each cache only
   * grew at its tip, so the last step's buffers are kept and only the new rows are copied in;
   * anything else (another batch, a cache that was reallocated or branched, a longer cache than
   * the buffers hold) repacks, into the same memory when it is large enough. While another
   * forward of this runner is in flight its buffers are left alone.
   */
  private packBatch(caches: (KVCache | undefined)[]): PackedBatch {
    const { layers, kvHeads: H, headDim: Dh } = this.shape;
    const B = caches.length;
    const lens = caches.map((c) => c?.length ?? 0);
    const maxLen = Math.max(...lens);
    const idle = this.running === 0;
    let pb = idle ? this.packed : null;
    const reuse =
      pb !== null &&
      pb.tips.length === B &&
      pb.cap >= maxLen &&
      caches.every((c, b) => (c?.tip ?? null) === pb!.tips[b] && lens[b] >= pb!.lens[b]);
    if (!reuse && this.worker) {
      // the buffers are the worker's: it lays them out (reusing and zeroing, or growing) and
      // gets every row; forwards reach it in order, so an in-flight one is never disturbed
      const cap = growCapacity(maxLen);
      const size = B * H * cap * Dh;
      this.ops.push({ size, room: 2 ** Math.ceil(Math.log2(B)) * H * cap * Dh });
      pb = { cap, tips: caches.map((c) => c?.tip ?? null), lens: new Array(B).fill(0), keys: [], values: [] };
    } else if (!reuse) {
      const cap = growCapacity(maxLen);
      const size = B * H * cap * Dh;
      const pool = idle && this.pool !== null && this.pool.keys[0].length >= size ? this.pool : null;
      // new memory has room for a batch that grows to the next power of two
      const room = 2 ** Math.ceil(Math.log2(B)) * H * cap * Dh;
      const buffers = pool ?? {
        keys: Array.from({ length: layers }, () => new Float32Array(room)),
        values: Array.from({ length: layers }, () => new Float32Array(room)),
      };
      if (idle) this.pool = buffers;
      pb = {
        cap,
        tips: caches.map((c) => c?.tip ?? null),
        lens: new Array(B).fill(0),
        keys: buffers.keys.map((k) => k.subarray(0, size)),
        values: buffers.values.map((v) => v.subarray(0, size)),
      };
      // reused memory holds other sequences' rows; hidden columns must hold finite values (a
      // NaN there would survive the attention bias), so they start from zero as new memory does
      if (pool) for (const a of [...pb.keys, ...pb.values]) a.fill(0);
    }
    const p = pb!;
    caches.forEach((c, b) => {
      const from = p.lens[b];
      if (!c || lens[b] === from) return;
      for (let l = 0; l < layers; l++)
        for (const kv of [0, 1] as const) {
          const src = kv === 0 ? c.keys[l] : c.values[l];
          for (let h = 0; h < H; h++) {
            const rows = src.subarray((h * c.capacity + from) * Dh, (h * c.capacity + lens[b]) * Dh);
            const at = ((b * H + h) * p.cap + from) * Dh;
            if (this.worker) this.ops.push({ l, kv, at, rows });
            else (kv === 0 ? p.keys[l] : p.values[l]).set(rows, at);
          }
        }
      p.lens[b] = lens[b];
    });
    // worker mode: a pack made while another forward was in flight rewrote the worker's buffers
    // behind the kept batch's back, so the next pack starts over
    if (idle) this.packed = p;
    else if (this.worker) this.packed = null;
    return p;
  }
}

interface PackedBatch {
  cap: number;
  /** the cache buffer each row was packed from, and how many of its entries */
  tips: ({ used: number } | null)[];
  lens: number[];
  keys: Float32Array[];
  values: Float32Array[];
}
