// An ORT session over one model graph, and the packing of several sequences' forward
// requests into one batched run (padding handled through the attention bias).

import ort from 'onnxruntime-node';
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
}

export class OrtRunner {
  readonly shape: SessionShape;
  private session: ort.InferenceSession;
  /** forward passes run, and rows processed (for throughput accounting) */
  stats = { forwards: 0, rows: 0, batches: 0 };
  /** the last batch's packed caches, kept for the next step (see packBatch) */
  private packed: PackedBatch | null = null;
  /** the memory behind `packed`, reused by repacks that fit */
  private pool: { keys: Float32Array[]; values: Float32Array[] } | null = null;
  private running = 0;

  private constructor(session: ort.InferenceSession, shape: SessionShape) {
    this.session = session;
    this.shape = shape;
  }

  static async create(modelPath: string, shape: SessionShape, opts: SessionOptions = {}): Promise<OrtRunner> {
    const session = await ort.InferenceSession.create(modelPath, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: opts.threads ?? 0,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      enableCpuMemArena: true,
      logSeverityLevel: 3,
    });
    return new OrtRunner(session, shape);
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /** Run several sequences' windows as one batch. */
  async forward(reqs: ForwardRequest[]): Promise<ForwardResult[]> {
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
    for (let l = 0; l < layers; l++) {
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
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await this.session.run(feeds, fetches);
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
    if (!reuse) {
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
        for (const [src, dst] of [[c.keys[l], p.keys[l]], [c.values[l], p.values[l]]] as const)
          for (let h = 0; h < H; h++) dst.set(src.subarray((h * c.capacity + from) * Dh, (h * c.capacity + lens[b]) * Dh), ((b * H + h) * p.cap + from) * Dh);
      p.lens[b] = lens[b];
    });
    if (idle) this.packed = p;
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
