// The step loop that many requests share. Requests queue; each iteration batches up to
// maxBatch active generations into one forward (their windows padded through the
// visibility mask), applies each result, and lets finished sequences leave and queued ones
// join before the next step: continuous batching at step granularity. A cancelled request
// leaves before the next forward is planned, so its slot frees within one step. A request
// starts from the prefix store's keys and values of its prompt's leading tokens when another
// request computed them (causal and block-causal models; engine/prefix-cache.ts), and runs a
// long prompt in chunks of at most prefillChunk rows per step, so that the sequences beside it
// keep decoding (chunked prefill). A fault in one sequence (its plan, its result, its forward)
// fails that sequence only, a request cancelled during another group's forward never runs its own,
// and observer hooks cannot stop the loop.

import { CancelledError, UnavailableError } from '../errors.ts';
import { Generation, PROMPT_SCORE_CHUNK, type Denoiser, type GenerateResult, type StepEvent } from '../decode/generation.ts';
import type { GenerateOptions } from '../decode/options.ts';
import type { ForwardRequest, ForwardResult } from '../runtime/session.ts';
import type { KVCache } from '../runtime/kv.ts';
import { commonPrefix, PrefixCache, PREFIX_CHUNK } from './prefix-cache.ts';

export interface SchedulerOptions {
  maxBatch?: number;
  maxQueue?: number;
  /** bytes of prompt prefixes kept for reuse across requests (0: none; default 256 MiB) */
  prefixCacheBytes?: number;
  /** most prompt rows one sequence runs per step (chunked prefill; 0: whole prompts; default 256) */
  prefillChunk?: number;
}

export const DEFAULT_PREFILL_CHUNK = 256;

export const DEFAULT_PREFIX_CACHE_BYTES = 256 * 2 ** 20;

export interface Submission {
  prompt: ArrayLike<number>;
  options: GenerateOptions;
  /** prefix cache isolation: entries are shared only between requests with the same salt */
  cacheSalt?: string;
  onStep?: (e: StepEvent) => void;
  signal?: AbortSignal;
}

export interface SchedulerHooks {
  onStep?: (batchSize: number, seconds: number) => void;
  onFinish?: (r: GenerateResult) => void;
  onCancel?: () => void;
}

interface Job {
  gen: Generation;
  sub: Submission;
  /** its prompt's reusable prefix is in the store (or never will be) */
  stored: boolean;
  /** entries of it stored so far (a chunked prefill stores each chunk, for requests arriving meanwhile) */
  storedRows: number;
  resolve: (r: GenerateResult) => void;
  reject: (e: unknown) => void;
}

export class OverloadedError extends UnavailableError {
  constructor(message: string) {
    super(message, 'overloaded');
  }
}

export class Scheduler {
  readonly maxBatch: number;
  readonly maxQueue: number;
  readonly prefillChunk: number;
  private model: Denoiser;
  private queue: Job[] = [];
  private active: Job[] = [];
  private running = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  hooks: SchedulerHooks = {};
  /** prompt prefixes shared across requests; null when off */
  readonly prefixes: PrefixCache | null;

  constructor(model: Denoiser, o: SchedulerOptions = {}) {
    this.model = model;
    this.maxBatch = Math.max(1, o.maxBatch ?? 4);
    this.maxQueue = Math.max(0, o.maxQueue ?? 64);
    this.prefillChunk = Math.max(0, o.prefillChunk ?? DEFAULT_PREFILL_CHUNK);
    const bytes = o.prefixCacheBytes ?? DEFAULT_PREFIX_CACHE_BYTES;
    const a = model.args;
    this.prefixes = bytes > 0 && a.attention !== 'bidirectional' ? new PrefixCache({ layers: a.numLayers, kvHeads: a.numKvHeads, headDim: a.headDim }, bytes) : null;
  }

  get queued(): number {
    return this.queue.length;
  }
  get activeCount(): number {
    return this.active.length;
  }

  /** Validate and enqueue. Throws at once on bad options or a full queue. */
  submit(sub: Submission): Promise<GenerateResult> {
    if (this.closed) throw new OverloadedError('the server is shutting down');
    if (sub.signal?.aborted) throw new CancelledError();
    const gen = new Generation(this.model, sub.prompt, sub.options); // throws typed errors on bad input
    // (arrivals wait in the queue until the next step admits them: the free batch slots count as
    // room, the queue's own cap on top, however many arrive during one forward)
    if (this.queue.length >= this.maxQueue + Math.max(0, this.maxBatch - this.active.length))
      throw new OverloadedError(`the server is at capacity (${this.maxBatch} running, ${this.queue.length} queued); retry later`);
    return new Promise<GenerateResult>((resolve, reject) => {
      this.queue.push({ gen, sub, resolve, reject, stored: false, storedRows: 0 });
      void this.loop();
    });
  }

  /** Stop taking requests; resolves when everything queued and running has finished. */
  async drain(): Promise<void> {
    this.closed = true;
    if (!this.running && this.queue.length === 0 && this.active.length === 0) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private admit(): void {
    for (let i = 0; i < this.queue.length && this.active.length < this.maxBatch; ) {
      const j = this.queue[i];
      if (this.waitsForPrefix(j)) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      try {
        // (a long prompt runs in chunks, one per step, beside the others' decoding)
        j.gen.prefillChunk = this.prefillChunk;
        // (looked up as it starts, so a request queued behind one with the same system prompt
        // finds what that one computed)
        if (this.prefixes && j.gen.reusablePrompt > 0) {
          const hit = this.prefixes.lookup(j.sub.prompt, j.sub.cacheSalt);
          this.prefixes.reused(hit ? j.gen.startFrom(hit.cache, hit.tokens) : 0);
        } else j.stored = true;
      } catch (e) {
        j.reject(e);
        continue;
      }
      this.active.push(j);
    }
  }

  /**
   * A request whose prompt starts as a running one's does, when that one has not stored those
   * entries yet, waits until it has (a step or a few): it then starts from them instead of
   * computing them beside it. The n choices of one request, or requests with one system prompt
   * arriving together, run their common prefix once (vLLM's parallel sampling shares it so).
   */
  private waitsForPrefix(j: Job): boolean {
    if (!this.prefixes || j.gen.reusablePrompt === 0) return false;
    for (const a of this.active) {
      if (a.stored || a.sub.cacheSalt !== j.sub.cacheSalt) continue;
      const shared = commonPrefix(a.sub.prompt, j.sub.prompt, Math.min(a.gen.reusablePrompt, j.gen.reusablePrompt, a.sub.prompt.length, j.sub.prompt.length));
      if (shared >= PREFIX_CHUNK && a.storedRows < Math.floor(shared / PREFIX_CHUNK) * PREFIX_CHUNK) return true;
    }
    return false;
  }

  /** After a step: keep a request's prompt prefix once its keys and values are all computed. */
  private store(j: Job): void {
    if (j.stored || !this.prefixes) return;
    const pc = j.gen.promptCache();
    if (!pc || pc.length <= j.storedRows) return;
    j.stored = pc.done;
    j.storedRows = pc.length;
    this.keep(pc, j.sub.cacheSalt);
  }

  /** Into the prefix store; the store is an optimisation: its failure (memory) fails no request. */
  private keep(e: { tokens: ArrayLike<number>; cache: KVCache; length: number }, salt?: string): void {
    try {
      this.prefixes?.insert(e.tokens, e.cache, e.length, salt);
    } catch {
      // the request goes on without it
    }
  }

  /** Take a job out of the running set. */
  private leave(j: Job): void {
    this.active = this.active.filter((x) => x !== j);
  }

  /** Reject a job and take it out of the running set. */
  private fail(j: Job, e: unknown): void {
    this.leave(j);
    j.reject(e);
  }

  /** A hook is an observer: its failure fails no request and never stops the loop. */
  private observe(f: () => void): void {
    try {
      f();
    } catch {
      // (metrics and logging hooks; the requests go on)
    }
  }

  private cancelled(j: Job): boolean {
    if (!j.sub.signal?.aborted) return false;
    j.reject(new CancelledError());
    this.observe(() => this.hooks.onCancel?.());
    return true;
  }

  private dropCancelled(): void {
    this.queue = this.queue.filter((j) => !this.cancelled(j));
    this.active = this.active.filter((j) => !this.cancelled(j));
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        try {
          if (!(await this.step())) break;
        } catch (e) {
          // a fault outside any one request's work (none is known): the requests running
          // fail with it rather than wait forever, and the queued ones go on
          for (const j of this.active.splice(0)) j.reject(e);
        }
        // let I/O (new requests, disconnects) in between steps
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.running = false;
      // (a request submitted while the last step wound down, from a rejection's handler say,
      // found the loop still running: it starts again for it)
      if (this.queue.length > 0 || this.active.length > 0) void this.loop();
      else for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** One step of every running sequence; false when there is nothing to run. */
  private async step(): Promise<boolean> {
    this.dropCancelled();
    this.admit();
    if (this.active.length === 0) return false;
    const plans: { job: Job; req: ForwardRequest }[] = [];
    for (const j of this.active) {
      try {
        plans.push({ job: j, req: j.gen.plan() });
      } catch (e) {
        this.fail(j, e); // (this sequence's plan failed, memory for its cache say: the others run)
      }
    }
    for (const group of groupByWindow(plans, this.model.args.hiddenSize)) {
      // (a request cancelled while an earlier group ran leaves before its own forward)
      const live = group.filter((g) => {
        if (!this.cancelled(g.job)) return true;
        this.leave(g.job);
        return false;
      });
      if (live.length === 0) continue;
      const batch = live.map((g) => g.job);
      const t0 = performance.now();
      let results;
      try {
        results = await this.model.forward(live.map((g) => g.req));
      } catch (e) {
        // a failed forward fails the sequences in it, not the server
        for (const j of batch) this.fail(j, e);
        continue;
      }
      this.observe(() => this.hooks.onStep?.(batch.length, (performance.now() - t0) / 1000));
      this.apply(batch, results);
    }
    return true;
  }

  private apply(batch: Job[], results: ForwardResult[]): void {
    for (let i = 0; i < batch.length; i++) {
      const j = batch[i];
      let r: GenerateResult;
      try {
        const ev = j.gen.accept(results[i]);
        this.store(j);
        j.sub.onStep?.(ev);
        if (!j.gen.done) continue;
        // (the whole sequence: a next chat turn repeats this prompt and its answer)
        const fc = this.prefixes ? j.gen.finalCache() : null;
        if (fc) this.keep(fc, j.sub.cacheSalt);
        r = j.gen.result();
      } catch (e) {
        this.fail(j, e);
        continue;
      }
      this.leave(j);
      this.observe(() => this.hooks.onFinish?.(r));
      j.resolve(r);
    }
  }
}

/**
 * Split one step's plans into forwards whose padding stays small. A batch runs every
 * sequence at the longest window and the longest cache in it. On a CPU the window rows are
 * what costs (each runs through every weight matrix); a cache column costs about 1/(6D) of
 * a row (one dot product per head against the 12 D^2 of the linear layers). Padding rows are
 * pure loss once a forward is compute-bound, which a diffusion canvas already is, while
 * decode steps (one row each) batch freely whatever their cache lengths. Plans are sorted by
 * rows; a plan joins the current forward while running at its size costs that plan at most
 * a quarter more than running alone, and a forward returning full logits rows returns at most
 * WIDE_LOGITS_ROWS of them.
 */
export function groupByWindow<T extends { req: ForwardRequest }>(plans: T[], hidden: number): T[][] {
  const rows = (p: T) => p.req.ids.length;
  const cols = (p: T) => p.req.ids.length + (p.req.past?.length ?? 0);
  const cost = (L: number, T: number) => L * (1 + T / (6 * hidden));
  // (of equal windows, those returning many full logits rows last, so the others batch together)
  const heavy = (p: T) => (p.req.wantLogits ? p.req.queries.length : 0);
  const sorted = [...plans].sort((a, b) => rows(b) - rows(a) || cols(b) - cols(a) || heavy(a) - heavy(b));
  const groups: T[][] = [];
  let cur: T[] = [];
  let maxL = 0;
  let maxT = 0;
  let maxQ = 0;
  let logits = false;
  for (const p of sorted) {
    // join only if running at the group's size costs this sequence at most a quarter more, and,
    // where the forward returns full logits rows (for all its sequences, each padded to the most
    // query rows), they stay within WIDE_LOGITS_ROWS (a scored prompt chunk runs alone)
    const T = Math.max(maxT, cols(p));
    const Q = Math.max(maxQ, p.req.queries.length);
    const wide = (logits || !!p.req.wantLogits) && (cur.length + 1) * Q > WIDE_LOGITS_ROWS;
    if (cur.length > 0 && (cost(maxL, T) > 1.25 * cost(rows(p), cols(p)) + 1 || wide)) {
      groups.push(cur);
      cur = [];
      maxT = 0;
      maxQ = 0;
      logits = false;
    }
    if (cur.length === 0) maxL = rows(p);
    cur.push(p);
    maxT = Math.max(maxT, cols(p));
    maxQ = Math.max(maxQ, p.req.queries.length);
    logits ||= !!p.req.wantLogits;
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
}

/** Most padded full-logits rows one forward returns (sequences x their most query rows). */
const WIDE_LOGITS_ROWS = PROMPT_SCORE_CHUNK;
