// An ORT session over one model graph, and the packing of several sequences' forward
// requests into one batched run (padding handled through the attention bias).

import ort from 'onnxruntime-node';
import { GraphWorker, sessionOptions, type Outputs } from './graph-thread.ts';
import type { KVCache } from './kv.ts';
import { PackedStore } from './packed-store.mjs';
import { extendCache, growCapacity } from './kv.ts';

export const HIDDEN = -1e9;
/** packed batches kept for their next step (see OrtRunner.packBatch); the worker also has a scratch slot */
export const PACKED_SLOTS = 2;
/** graph worker restarts allowed per minute before its error is final */
export const RESTARTS_PER_MINUTE = 3;

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
  /** run the graph in a worker thread, off the event loop (see graph-thread.ts) */
  worker?: boolean;
  /** worker mode: seconds a forward may run before the worker is stopped and started again
   * (its batch fails; 0: no deadline). A forward in this thread cannot be interrupted. */
  forwardTimeout?: number;
}

/** Where packBatch's layouts and row writes go: a store in this thread, or the worker's queue. */
interface PackSink {
  layout(size: number, room: number): void;
  write(l: number, kv: 0 | 1, at: number, rows: Float32Array): void;
}

/** Worker mode: layouts and writes queued in order, sent with the next forward. */
class PackJournal implements PackSink {
  ops: ({ size: number; room: number } | { l: number; kv: 0 | 1; at: number; rows: Float32Array })[] = [];
  layout(size: number, room: number): void {
    this.ops.push({ size, room });
  }
  write(l: number, kv: 0 | 1, at: number, rows: Float32Array): void {
    this.ops.push({ l, kv, at, rows });
  }
  /** PackedStore.apply's encoding: four ints per op, the rows back to back (copied now: the
   * caches they come from keep growing). Empties the queue. */
  take(): { rows: Float32Array; index: Int32Array } {
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
    return { rows, index };
  }
}

export class OrtRunner {
  readonly shape: SessionShape;
  private session: ort.InferenceSession | null;
  private worker: GraphWorker | null;
  /** worker mode: what the worker's packed buffers still have to receive */
  private journal = new PackJournal();
  /** forward passes run, rows processed (for throughput accounting), and batches packed from scratch */
  stats = { forwards: 0, rows: 0, batches: 0, repacks: 0 };
  /**
   * The last batches' packed caches, kept for their next step (see packBatch), most recently
   * used last: PACKED_SLOTS of them, so that two batches taking turns (a prefill chunk and the
   * others' decoding, a canvas and decode rows) each find theirs. Each slot has its own buffers:
   * in this thread a PackedStore, in worker mode the worker's store of the same index.
   */
  private slots: { id: number; batch: PackedBatch; store: PackedStore }[] = [];
  private running = 0;
  /** worker mode: how to start the worker again if it dies, and when it was restarted */
  private spawn: (() => Promise<GraphWorker>) | null = null;
  private restarts: number[] = [];
  private restarting: Promise<void> | null = null;
  private spawnError: Error | null = null;
  private closed = false;
  /** worker mode: a worker given up at a forward's deadline, still inside that forward (at most one) */
  private retiring = new Set<GraphWorker>();
  /** worker mode: a forward's deadline in seconds (SessionOptions.forwardTimeout) */
  forwardTimeout: number | undefined;

  private constructor(session: ort.InferenceSession | null, worker: GraphWorker | null, shape: SessionShape) {
    this.session = session;
    this.worker = worker;
    this.shape = shape;
  }

  static async create(modelPath: string, shape: SessionShape, opts: SessionOptions = {}): Promise<OrtRunner> {
    if (!opts.worker) return new OrtRunner(await ort.InferenceSession.create(modelPath, sessionOptions(opts)), null, shape);
    const spawn = () => GraphWorker.create(modelPath, opts);
    const r = new OrtRunner(null, await spawn(), shape);
    r.spawn = spawn;
    r.forwardTimeout = opts.forwardTimeout;
    return r;
  }

  async release(): Promise<void> {
    this.closed = true;
    await this.restarting?.catch(() => undefined);
    if (this.worker) await this.worker.release();
    else await this.session!.release();
    // (a thread still inside a given-up forward stops when it returns: the process may not
    // exit before, which would abort it)
    await Promise.all([...this.retiring].map((w) => w.exited));
  }

  /**
   * Worker mode: a worker that died (an uncaught error in it, a failed message) is started
   * again before the next forward, with empty buffers (the next batch repacks). Forwards in
   * flight when it died have failed with its error. At most RESTARTS_PER_MINUTE restarts in
   * any minute: beyond that, forwards fail (naming the worker's error) until the oldest
   * restart is a minute old.
   */
  private async ensureWorker(): Promise<void> {
    const dead = this.worker?.dead;
    if (!dead || this.closed) return;
    if (!this.restarting) {
      const now = Date.now();
      this.restarts = this.restarts.filter((t) => now - t < 60_000);
      if (this.restarts.length >= RESTARTS_PER_MINUTE)
        throw new Error(
          `the graph worker died ${RESTARTS_PER_MINUTE + 1} times within a minute, not restarting it until a minute has passed: ${dead.message}` +
            (this.spawnError ? ` (the last restart failed: ${this.spawnError.message})` : ''),
        );
      // a forward given up at its deadline goes on in its thread until ORT returns: one such
      // thread at a time, so that forwards that never return do not pile up copies of the model
      const old = this.worker!;
      if (old.busy) {
        if (this.retiring.size > 0) throw new Error(`${dead.message}; an earlier forward given up at its deadline is still running, so no new graph worker starts until it returns`);
        this.retiring.add(old);
        void old.exited.then(() => this.retiring.delete(old));
      }
      this.restarts.push(now);
      // a worker that failed to receive a message may still be running: stop it
      void old.release().catch(() => undefined);
      this.restarting = this.spawn!()
        .then((w) => {
          this.spawnError = null;
          this.worker = w;
          this.forgetPacked();
        })
        .catch((e: Error) => {
          this.spawnError = e;
          throw e;
        })
        .finally(() => (this.restarting = null));
    }
    await this.restarting;
  }

  /** Run several sequences' windows as one batch. */
  async forward(reqs: ForwardRequest[]): Promise<ForwardResult[]> {
    try {
      return await this.forwardOnce(reqs);
    } catch (e) {
      // worker mode: what the worker's buffers hold is no longer known (a failed request after
      // packing, or a worker error part-way)
      if (this.worker) this.forgetPacked();
      throw e;
    }
  }

  /** Worker mode: the worker's buffers are unknown or empty: drop what was queued for them,
   * the next batch repacks. */
  private forgetPacked(): void {
    this.journal.ops = [];
    this.slots = [];
  }

  private async forwardOnce(reqs: ForwardRequest[]): Promise<ForwardResult[]> {
    // (before packing: a restarted worker's buffers are empty)
    if (this.worker) await this.ensureWorker();
    const { layers, kvHeads: H, headDim: Dh, vocab: V } = this.shape;
    const B = reqs.length;
    const L = Math.max(...reqs.map((r) => r.ids.length));
    // Caches feed a packed [B, Hkv, P, Dh] batch buffer that persists across steps (only new
    // rows are copied in), P a power of two: few distinct shapes, and no column read that no
    // sequence uses beyond that rounding (a cache's own capacity can be its whole canvas).
    const anyPast = reqs.some((r) => (r.past?.length ?? 0) > 0);
    // (checked before packing: a request that fails after it would leave the slots' records
    // ahead of their buffers)
    for (const r of reqs) {
      const l = r.ids.length;
      const p = r.past?.length ?? 0;
      if (r.visible.length !== l * (p + l)) throw new Error(`visibility has ${r.visible.length} entries, expected ${l * (p + l)}`);
    }
    const packed = anyPast ? this.packBatch(reqs.map((r) => r.past)) : null;
    // worker mode: the pack's layout and writes leave with this forward and no other (a failure
    // from here on makes forward() forget what the worker's buffers hold)
    const ops = this.worker ? this.journal.take() : null;
    return this.runPacked(reqs, packed, ops);
  }

  private async runPacked(reqs: ForwardRequest[], packed: Packed | null, ops: { rows: Float32Array; index: Int32Array } | null): Promise<ForwardResult[]> {
    const { layers, kvHeads: H, headDim: Dh, vocab: V } = this.shape;
    const B = reqs.length;
    const L = Math.max(...reqs.map((r) => r.ids.length));
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
        const data = packed ? (kind === 'key' ? packed.store!.keys[l] : packed.store!.values[l]) : new Float32Array(0);
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
      out = this.worker ? await this.runInWorker(feeds, fetches, packed, ops!) : ((await this.session!.run(feeds, fetches)) as unknown as Outputs);
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
  private async runInWorker(feeds: Record<string, ort.Tensor>, fetches: string[], packed: Packed | null, ops: { rows: Float32Array; index: Int32Array }): Promise<Outputs> {
    const plain: Record<string, { type: string; data: unknown; dims: readonly number[] }> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [k, t] of Object.entries(feeds)) {
      if (k.startsWith('past_')) continue;
      plain[k] = { type: t.type, data: t.data, dims: t.dims };
      transfer.push((t.data as Float32Array).buffer as ArrayBuffer);
    }
    const { rows, index } = ops;
    transfer.push(rows.buffer as ArrayBuffer, index.buffer as ArrayBuffer);
    const { layers, kvHeads: H, headDim: Dh } = this.shape;
    const B = (feeds.input_ids.dims[0] as number) ?? 0;
    // (a pack beside a forward in flight is the worker's too: scratch memory, not kept)
    const past = { layers, dims: [B, H, packed ? packed.cap : 0, Dh], rows, index, slot: packed ? packed.slot : 0, scratch: packed?.slot === PACKED_SLOTS };
    return (await this.worker!.call({ op: 'run', feeds: plain, past, fetches }, transfer, (this.forwardTimeout ?? 0) * 1000))!;
  }

  /**
   * Pack the sequences' caches into [B, Hkv, cap, Dh] buffers, cap = growCapacity(longest).
   * In steady decoding the batch is the same sequences step after step and each cache only
   * grew at its tip, so that batch's buffers are kept and only the new rows are copied in;
   * anything else (another batch, a cache that was reallocated or branched, a longer cache than
   * the buffers hold) repacks, into the least recently used slot's memory. While another
   * forward of this runner is in flight its buffers are left alone: the pack gets scratch
   * memory (worker mode: the worker's scratch slot), not kept.
   */
  private packBatch(caches: (KVCache | undefined)[]): Packed {
    const { layers, kvHeads: H, headDim: Dh } = this.shape;
    const B = caches.length;
    const lens = caches.map((c) => c?.length ?? 0);
    const maxLen = Math.max(...lens);
    const idle = this.running === 0;
    const fits = (pb: PackedBatch) => pb.tips.length === B && pb.cap >= maxLen && caches.every((c, b) => (c?.tip ?? null) === pb.tips[b] && lens[b] >= pb.lens[b]);
    let slot = idle ? this.slots.find((x) => fits(x.batch)) : undefined;
    if (!slot) {
      this.stats.repacks++;
      const cap = growCapacity(maxLen);
      const batch: PackedBatch = { cap, tips: caches.map((c) => c?.tip ?? null), lens: new Array(B).fill(0) };
      // (a free slot, else the least recently used one's memory; scratch beside a forward in flight)
      let id = PACKED_SLOTS;
      let store: PackedStore;
      if (!idle) store = new PackedStore(layers);
      else if (this.slots.length < PACKED_SLOTS) {
        const used = new Set(this.slots.map((x) => x.id));
        id = 0;
        while (used.has(id)) id++;
        store = new PackedStore(layers);
      } else ({ id, store } = this.slots[0]);
      // the slot is dropped first and kept only once laid out: a layout that fails (memory)
      // leaves no record of buffers that were not written
      this.slots = this.slots.filter((x) => x.id !== id);
      const sink: PackSink = this.worker ? this.journal : store;
      // new memory has room for a batch that grows to the next power of two
      sink.layout(B * H * cap * Dh, 2 ** Math.ceil(Math.log2(B)) * H * cap * Dh);
      slot = { id, batch, store };
    }
    if (idle) this.slots = [...this.slots.filter((x) => x !== slot), slot];
    const sink: PackSink = this.worker ? this.journal : slot.store;
    const p = slot.batch;
    caches.forEach((c, b) => {
      const from = p.lens[b];
      if (!c || lens[b] === from) return;
      for (let l = 0; l < layers; l++)
        for (const kv of [0, 1] as const) {
          const src = kv === 0 ? c.keys[l] : c.values[l];
          for (let h = 0; h < H; h++)
            sink.write(l, kv, ((b * H + h) * p.cap + from) * Dh, src.subarray((h * c.capacity + from) * Dh, (h * c.capacity + lens[b]) * Dh));
        }
      p.lens[b] = lens[b];
    });
    return { cap: p.cap, slot: slot.id, store: this.worker ? null : slot.store };
  }
}

/** A batch's packed caches: its columns, its slot, and in this thread the buffers themselves. */
interface Packed {
  cap: number;
  slot: number;
  store: PackedStore | null;
}

/** What the packed buffers hold: columns per row, and per row the cache buffer it was packed
 * from and how many of its entries. */
interface PackedBatch {
  cap: number;
  tips: ({ used: number } | null)[];
  lens: number[];
}
