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

  /** why the worker can no longer run forwards (it stopped, or failed to receive), or null */
  get dead(): Error | null {
    return this.failed;
  }

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
