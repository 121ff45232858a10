// The graph in a worker thread (graph-worker.mjs), so that the event loop keeps serving HTTP,
// streams and disconnects while a forward runs: ORT's node binding runs a forward synchronously
// on the calling thread. ORT refuses tensors over SharedArrayBuffer, so the batch's packed cache
// buffers live in the worker and each forward ships only what changed in them (the new rows of
// each cache in steady decoding, everything after a repack); outputs come back by transfer.

import ort from 'onnxruntime-node';
import { Worker } from 'node:worker_threads';

export interface GraphOptions {
  threads?: number;
}

/** ORT session options of both modes. */
export function sessionOptions(o: GraphOptions): ort.InferenceSession.SessionOptions {
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

export type Outputs = Record<string, { data: Float32Array | BigInt64Array; dims: readonly number[] }>;

export class GraphWorker {
  private next = 1;
  private waiting = new Map<number, (r: { ok: boolean; message?: string; outputs?: Outputs }) => void>();
  private failed: Error | null = null;
  /** messages sent and not yet answered (the worker is inside one while this is > 0) */
  private inflight = 0;
  private stopWhenIdle = false;
  /** settles when the thread has stopped */
  readonly exited: Promise<void>;
  private markExited!: () => void;

  /** inside a message (a forward given up at its deadline may still be running) */
  get busy(): boolean {
    return this.inflight > 0;
  }

  /** why the worker can no longer run forwards (it stopped, or failed to receive), or null */
  get dead(): Error | null {
    return this.failed;
  }

  private constructor(private worker: Worker) {
    this.exited = new Promise((r) => (this.markExited = r));
    worker.on('message', (r: { id: number; ok: boolean; message?: string; outputs?: Outputs }) => {
      this.answered();
      const done = this.waiting.get(r.id);
      this.waiting.delete(r.id);
      done?.(r);
    });
    worker.on('error', (e) => this.fail(e));
    worker.on('messageerror', (e) => {
      this.answered(); // (a reply that could not be read: the worker has left the forward)
      this.fail(e);
    });
    worker.on('exit', (code) => {
      this.inflight = 0; // (a thread that died inside a forward is in nothing any more)
      this.fail(new Error(`the graph worker stopped (exit code ${code})`));
      this.markExited();
    });
  }

  private answered(): void {
    this.inflight = Math.max(0, this.inflight - 1);
    if (this.stopWhenIdle && this.inflight === 0) void this.worker.terminate();
  }

  /** The worker can run nothing more: every call waiting fails with this error. */
  private fail(e: Error): void {
    this.failed ??= e;
    for (const done of this.waiting.values()) done({ ok: false, message: e.message });
    this.waiting.clear();
  }

  static async create(modelPath: string, o: GraphOptions): Promise<GraphWorker> {
    const g = new GraphWorker(new Worker(new URL('./graph-worker.mjs', import.meta.url)));
    try {
      await g.call({ op: 'load', modelPath, options: sessionOptions(o) }, []);
    } catch (e) {
      await g.worker.terminate();
      throw e;
    }
    return g;
  }

  /**
   * One message and its reply. With a deadline (ms > 0), a call still running when it passes
   * gives the worker up: this call and any others waiting fail, and the worker is dead (the
   * runner starts another). ORT cannot interrupt a forward, and stopping the thread inside one
   * aborts the process, so the thread is stopped when the forward returns (a forward that never
   * returns keeps its thread).
   */
  async call(msg: Record<string, unknown>, transfer: ArrayBuffer[], deadlineMs = 0): Promise<Outputs | undefined> {
    if (this.failed) throw this.failed;
    const id = this.next++;
    // the worker keeps the process alive only while a call waits on it (an idle model left
    // unclosed does not hold the process open)
    this.worker.ref();
    let timer: NodeJS.Timeout | undefined;
    const reply = await new Promise<{ ok: boolean; message?: string; outputs?: Outputs }>((resolve) => {
      this.waiting.set(id, resolve);
      try {
        this.worker.postMessage({ ...msg, id }, transfer);
        this.inflight++;
      } catch (e) {
        this.waiting.delete(id);
        resolve({ ok: false, message: `could not send to the graph worker: ${(e as Error).message}` });
        return;
      }
      // (setTimeout's longest delay is 2^31 - 1 ms; a longer deadline is none)
      if (deadlineMs > 0 && deadlineMs < 2 ** 31)
        timer = setTimeout(() => {
          this.fail(new Error(`a forward ran past its deadline (${deadlineMs / 1000} s, --forward-timeout): the graph worker was given up`));
          void this.stop();
        }, deadlineMs);
    });
    clearTimeout(timer);
    // (a thread left to finish a forward keeps the process up until it has stopped: exiting
    // while it is inside ORT would abort)
    if (this.waiting.size === 0 && !this.stopWhenIdle) this.worker.unref();
    if (!reply.ok) throw new Error(reply.message);
    return reply.outputs;
  }

  async release(): Promise<void> {
    if (!this.failed) await this.call({ op: 'release' }, []).catch(() => undefined);
    await this.stop();
  }

  /** Stop the thread, at once when it is idle, else when it leaves what it is running; settles when it has stopped. */
  private async stop(): Promise<void> {
    if (this.inflight > 0) {
      this.stopWhenIdle = true;
      this.worker.ref();
      return this.exited;
    }
    await this.worker.terminate();
  }
}
