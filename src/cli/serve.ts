// quench serve: listen at once (health says 503 while loading), load the model, serve;
// SIGTERM / SIGINT stop accepting, let running generations finish, then exit.

import { loadModel, type DTypeOption } from '../models/registry.ts';
import { applyGenerationConfig, describeDefaults } from './generation-config.ts';
import { attachScheduler, buildServer, type ServingState } from '../server/app.ts';

export interface ServeOptions {
  model: string;
  modelId?: string;
  host: string;
  port: number;
  apiKey?: string;
  maxBatch: number;
  maxQueue: number;
  /** MiB of prompt prefixes kept for reuse across requests (0: off) */
  prefixCacheMb?: number;
  /** most prompt rows a sequence runs per step (0: whole prompts) */
  prefillChunk?: number;
  threads: number;
  dtype: DTypeOption;
  graphThread?: 'auto' | 'on' | 'off';
  /** graph thread: seconds a forward may run before its requests fail and the thread is replaced (0: none) */
  forwardTimeout?: number;
  /** a block diffusion model's block size, instead of its config's */
  blockSize?: number;
  /** a tokenizer directory for checkpoints that ship none (MDLM, BD3-LM) */
  tokenizer?: string;
  /** a causal layout's checkpoint loaded as a masked diffusion model (Open-dCoder) */
  diffusion?: 'shifted' | 'unshifted';
  /** a LoRA adapter's directory, merged into the weights at load */
  lora?: string;
  /** adapters served beside the model under their own ids (--lora-modules), each merged into its own copy of the base */
  loraModules?: { name: string; lora: string }[];
  /** the base model's name, the adapters' parent in /v1/models (default: the model id) */
  loraParent?: string;
  /** the default canvas of requests that name none */
  canvas?: 'adaptive' | 'fixed';
  initialCanvas?: number;
  corsOrigin?: string[];
  log?: boolean;
  /** most Responses API responses kept in memory (0: none) */
  responseStore?: number;
  /** where decoding defaults come from: auto (the model's generation_config.json), none, or a path */
  generationConfig?: string;
  /** seconds a SIGTERM / SIGINT waits for running requests before exiting (default 30) */
  drainTimeout?: number;
}

export async function serve(o: ServeOptions): Promise<void> {
  const state: ServingState = { model: null, scheduler: null };
  const opts = { modelId: o.modelId, apiKey: o.apiKey || undefined, maxBatch: o.maxBatch, maxQueue: o.maxQueue, ...(o.prefixCacheMb !== undefined ? { prefixCacheBytes: o.prefixCacheMb * 2 ** 20 } : {}), prefillChunk: o.prefillChunk, corsOrigins: o.corsOrigin, host: o.host, logger: !!o.log, responseStore: o.responseStore, defaults: { ...(o.canvas ? { canvas: o.canvas } : {}), ...(o.initialCanvas ? { initialCanvas: o.initialCanvas } : {}) } };
  // (the adapters answer 503 while they load, as the main model does)
  const modules = o.loraModules ?? [];
  if (modules.length > 0) state.extra = new Map(modules.map((m) => [m.name, { parent: o.loraParent ?? o.modelId ?? 'quench' }]));
  const { app, metrics } = await buildServer(state, opts);
  await app.listen({ host: o.host, port: o.port });
  // (the port bound: --port 0 takes a free one)
  const bound = app.server.address();
  const port = bound && typeof bound === 'object' ? bound.port : o.port;
  console.error(`quench: listening on http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port} (loading ${o.model})`);
  let stoppedAt = 0;
  const stop = async (sig: string) => {
    // (a second signal, or a drain past its deadline, ends the process with what is running; a
    // copy of the first within a second is not a second: under `npx`, npm forwards the
    // terminal's Ctrl-C to a process that the terminal has already sent it to)
    if (stoppedAt > 0) {
      if (Date.now() - stoppedAt < 1000) return;
      console.error(`quench: ${sig} again: exiting without waiting`);
      process.exit(1);
    }
    stoppedAt = Date.now();
    const seconds = o.drainTimeout ?? 30;
    console.error(`quench: ${sig}: draining (at most ${seconds} s; a second signal exits at once)`);
    setTimeout(() => {
      console.error(`quench: still draining after ${seconds} s: exiting`);
      process.exit(1);
    }, seconds * 1000).unref();
    const closing = app.close();
    const served = [...(state.extra?.values() ?? [])].flatMap((e) => (e.served ? [e.served] : []));
    await Promise.all([state.scheduler?.drain(), ...served.map((x) => x.scheduler.drain())]);
    await closing;
    // (a model that fails to close does not keep the others open)
    await Promise.allSettled([state.model?.close(), ...served.map((x) => x.model.close())]);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // in a worker thread, forwards leave the event loop to HTTP, streams and disconnects
  const worker = o.graphThread === 'on' ? true : o.graphThread === 'off' ? false : 'auto';
  const load = async (lora: string | undefined, as?: string) => {
    const model = await loadModel(o.model, { threads: o.threads, dtype: o.dtype, worker, forwardTimeout: o.forwardTimeout, blockSize: o.blockSize, tokenizer: o.tokenizer, diffusion: o.diffusion, lora, onProgress: (m) => console.error(`quench: ${m}`) });
    try {
      await applyGenerationConfig(model, o.generationConfig);
      attachScheduler(state, model, opts, metrics, as);
    } catch (e) {
      await model.close().catch(() => undefined); // (a loaded copy of the weights not served; the error is the load's)
      throw e;
    }
    console.error(`quench: ready: ${as ?? model.id} (${model.args.arch}, ${model.dtype}, ${(model.params / 1e6).toFixed(1)}M params)`);
    const d = describeDefaults(model.defaults);
    if (d) console.error(`quench: decoding defaults (--generation-config ${o.generationConfig ?? 'auto'}): ${d}`);
  };
  // (the whole message in the server's log, control characters escaped; clients get it
  // without the server's paths: app.ts)
  const failed = (what: string, e: unknown) => {
    const message = e instanceof Error ? e.message : String(e);
    console.error(`quench: failed to load ${what}: ${JSON.stringify(message).slice(1, -1)}`);
    return message;
  };
  try {
    await load(o.lora);
  } catch (e) {
    state.error = failed('the model', e);
  }
  // (one after the other: each conversion is the whole model's)
  for (const m of modules) {
    const entry = state.extra!.get(m.name)!;
    if (state.error) entry.error = `its base model failed to load: ${state.error}`;
    else
      try {
        await load(m.lora, m.name);
      } catch (e) {
        entry.error = failed(`the LoRA module ${m.name}`, e);
      }
  }
}
