// A quench server on a loopback port for tests, with the official client pointed at it.
import OpenAI from 'openai';
import { attachScheduler, buildServer, type ServingState, type ServerOptions } from '../src/server/app.ts';
import type { Model } from '../src/models/registry.ts';

/** Start a server for `model`; `servers` collects it for closing after the tests. */
export async function startServer(model: Model, servers: { close(): Promise<unknown> }[], defaults: ServerOptions['defaults'] = {}, more: Partial<ServerOptions> = {}) {
  const state: ServingState = { model: null, scheduler: null };
  const opts: ServerOptions = { maxBatch: 4, maxQueue: 64, host: '127.0.0.1', defaults, ...more };
  const { app, metrics } = await buildServer(state, opts);
  attachScheduler(state, model, opts, metrics);
  await app.listen({ host: '127.0.0.1', port: 0 });
  servers.push(app);
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  return { base, client: new OpenAI({ baseURL: `${base}/v1`, apiKey: 'x', maxRetries: 0 }) };
}
