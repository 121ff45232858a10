// The OpenAI-compatible HTTP server: Fastify app, security hooks, and routes.
// Nothing below this layer knows HTTP; this file turns requests into scheduler
// submissions and step events into bytes on the wire.

import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import cors from '@fastify/cors';
import { checkModelDefaults, type GenerateResult, type StepEvent, type TokenLogprob } from '../decode/generation.ts';
import type { GenerateOptions } from '../decode/options.ts';
import { CancelledError, NotFoundError, OptionError, QuenchError, UnavailableError } from '../errors.ts';
import type { Model } from '../models/registry.ts';
import { Scheduler } from '../engine/scheduler.ts';
import { apiError, toEnvelope, withoutPaths, type Envelope } from './errors.ts';
import { generationOptions, logprobsOption, promptList, rejectUnsupported, stopStrings, type Body } from './fields.ts';
import { chatLogprobs, completionLogprobs, joinLogprobs, maxAlternatives, outputConstraint, promptLogprobsOf, vllmPromptLogprobs, type TextSoFar } from './output.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { answerOf, chatMessages, encodeToolChat, holdFor, toolRequest, type ToolRequest } from './tools.ts';
import { chatBody, completionBody, fimBody, responsesBody } from './schemas.ts';
import { createResponse } from './responses.ts';
import { checkCodeEditMessages } from './code-edits.ts';
import { registerTokenize } from './tokenize.ts';
import { page, ResponseStore } from './response-store.ts';
import { abortOnClose, draftText, FinalTextTracker, startEventStream } from './stream.ts';
import { IncrementalDecoder } from '../formats/incremental.ts';

/** A choice's text so far, for completions' text offsets (after `base` echoed characters). */

export interface ServerOptions {
  /** model id clients name; default the model directory's name */
  modelId?: string;
  apiKey?: string;
  maxBatch?: number;
  maxQueue?: number;
  /** bytes of prompt prefixes kept for reuse across requests (causal and block models; 0: off; default 256 MiB) */
  prefixCacheBytes?: number;
  /** most prompt rows one sequence runs per step (chunked prefill; 0: whole prompts; default 256) */
  prefillChunk?: number;
  /** origins allowed by CORS (none by default) */
  corsOrigins?: string[];
  /** the address bound; loopback addresses turn on the Host header check */
  host?: string;
  bodyLimit?: number;
  /** defaults for every request (e.g. the bundled model's preferred decoding) */
  defaults?: Partial<GenerateOptions>;
  logger?: boolean;
  /** most Responses API responses kept in memory for previous_response_id and GET (0: none; default 1000) */
  responseStore?: number;
  /** most bytes (their JSON) those responses take (default 64 MiB) */
  responseStoreBytes?: number;
}

/** Filled in once the model is loaded; until then inference routes answer 503. */
export interface ServingState {
  model: Model | null;
  scheduler: Scheduler | null;
  error?: string;
  /** models served beside the main one (its LoRA adapters: --lora-modules), by the id clients
   * name; each answers 503 until its model is attached (or with its load error) */
  extra?: Map<string, { parent: string; served?: Served; error?: string }>;
}

/** A model the server answers for, under the id clients name it by. */
export interface Served {
  id: string;
  model: Model;
  scheduler: Scheduler;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

export function isLoopback(host: string | undefined): boolean {
  return !host || host === 'localhost' || host === '::1' || host.startsWith('127.');
}

function hostName(header: string | undefined): string {
  if (!header) return '';
  if (header.startsWith('[')) return header.slice(0, header.indexOf(']') + 1);
  return header.split(':')[0].toLowerCase();
}

function safeEqual(a: string, b: string): boolean {
  // hash first so lengths match and the compare time does not depend on the key
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

function send(reply: FastifyReply, e: Envelope) {
  // (a full queue, a model still loading: clients that honour Retry-After back off a second)
  if (e.status === 503 && e.body.error.code !== 'model_load_failed') reply.header('retry-after', '1');
  return reply.code(e.status).type('application/json').send(e.body);
}

/**
 * A loaded model's scheduler, and the model served: the main one, or with `as` one of
 * state.extra's (which must name it).
 */
export function attachScheduler(state: ServingState, model: Model, o: ServerOptions, metrics: Metrics, as?: string): void {
  // (a generation_config.json whose defaults cannot decode fails here, not every request)
  checkModelDefaults(model);
  if (as === undefined && o.modelId === undefined && state.extra?.has(model.id)) throw new Error(`attachScheduler: the extra model name ${JSON.stringify(model.id)} is the main model's`);
  const s = new Scheduler(model, { maxBatch: o.maxBatch ?? 4, maxQueue: o.maxQueue ?? 64, prefixCacheBytes: o.prefixCacheBytes, prefillChunk: o.prefillChunk });
  s.hooks = {
    onStep: (b, sec) => {
      metrics.stepSeconds.observe(sec);
      metrics.batchSize.observe(b);
      metrics.forwards.inc();
    },
    onFinish: (r) => {
      metrics.generatedTokens.inc(r.tokens.length);
      metrics.promptTokens.inc(r.promptTokens);
      metrics.cachedPromptTokens.inc(r.stats.cached);
      metrics.discarded.inc(r.stats.discarded);
    },
    // the active / queue-depth gauges are read from the scheduler when /metrics is scraped
    onCancel: () => metrics.cancelled.inc(),
  };
  const extra = as === undefined ? undefined : state.extra?.get(as);
  if (as !== undefined && !extra) throw new Error(`attachScheduler: no extra model ${JSON.stringify(as)} in the serving state`);
  if (extra) extra.served = { id: as!, model, scheduler: s };
  else {
    state.model = model;
    state.scheduler = s;
  }
}

interface Job {
  prompt: number[];
  suffix?: number[];
  /** text put before the generated text (completions echo) */
  echo?: string;
  /** echo with max_tokens 0: the prompt scored, nothing generated (one token runs, and is dropped) */
  scoreOnly?: boolean;
  /** completions' echo with logprobs: the prompt's tokens scored as well */
  scorePrompt?: boolean;
}

/** What a chat answer may call (function calling), or null. */
type Tools = ToolRequest | null;



/** Function calling is a chat feature. */
function noTools(body: Body): void {
  if (Array.isArray(body.tools) && body.tools.length > 0) throw new OptionError('tools', 'tools (function calling) are for /v1/chat/completions');
}

export async function buildServer(state: ServingState, o: ServerOptions = {}): Promise<{ app: FastifyInstance; metrics: Metrics }> {
  const app = Fastify({
    logger: o.logger ? { level: 'info' } : false,
    bodyLimit: o.bodyLimit ?? 4 * 1024 * 1024,
    // (an idle socket may wait out a long answer; a request must arrive whole within a minute,
    // so slow uploads cannot hold sockets)
    connectionTimeout: 10 * 60_000,
    requestTimeout: 60_000,
    keepAliveTimeout: 5_000,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, allowUnionTypes: true } },
    // a malformed URL or an over-long path parameter: the same envelope as every other error
    frameworkErrors: (err, _req, reply) => {
      const e = err as { statusCode?: number; message?: string };
      void send(reply, apiError(e.statusCode && e.statusCode >= 400 && e.statusCode < 500 ? e.statusCode : 400, 'invalid_request_error', 'malformed request URL', 'invalid_url'));
    },
  });
  const metrics = createMetrics();
  const checkHost = isLoopback(o.host);
  // (an extra model under the main one's id or "default" would hide it)
  for (const name of state.extra?.keys() ?? []) if (name === 'default' || name === o.modelId) throw new Error(`buildServer: the extra model name ${JSON.stringify(name)} is the main model's`);

  // (DELETE for stored responses)
  if (o.corsOrigins && o.corsOrigins.length > 0) await app.register(cors, { origin: o.corsOrigins, methods: ['GET', 'HEAD', 'POST', 'DELETE'] });

  app.setErrorHandler((err, _req, reply) => {
    const env = toEnvelope(err);
    if (env.status >= 500) app.log.error(err);
    return send(reply, env);
  });
  app.setNotFoundHandler((req, reply) => send(reply, apiError(404, 'invalid_request_error', `no route ${req.method} ${req.url.split('?')[0].slice(0, 200)}`, 'not_found')));
  app.addHook('onResponse', async (req, reply) => {
    metrics.requests.inc({ route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });
  app.addHook('onRequest', async (req, reply) => {
    // a bodiless request that names a JSON content type (clients send one on every DELETE) has no body to parse
    if ((req.method === 'DELETE' || req.method === 'GET') && !Number(req.headers['content-length'] ?? 0) && req.headers['transfer-encoding'] === undefined) delete req.headers['content-type'];
    if (checkHost && !LOOPBACK_HOSTS.has(hostName(req.headers.host))) return send(reply, apiError(403, 'invalid_request_error', 'Host header not allowed for a loopback-bound server', 'host_not_allowed'));
    // (on the route the router matched, not the raw URL, which may spell /v1/ with escapes or
    // come in absolute form: every route but the probes needs the key, unknown ones too;
    // a CORS preflight carries none)
    const route = req.routeOptions.url;
    if (o.apiKey && route !== '/health' && route !== '/metrics' && req.method !== 'OPTIONS') {
      const h = req.headers.authorization ?? '';
      const key = h.startsWith('Bearer ') ? h.slice(7) : '';
      if (!key || !safeEqual(key, o.apiKey)) return send(reply, apiError(401, 'authentication_error', 'invalid or missing API key', 'invalid_api_key'));
    }
  });

  const modelId = () => o.modelId ?? state.model?.id ?? 'quench';
  const ids = () => [modelId(), ...(state.extra?.keys() ?? [])];
  /** The model a request names (absent or "default": the main one): 404 for one not served, 503 while it loads or when it failed to. */
  const ready = (name: unknown): Served => {
    const extra = typeof name === 'string' ? state.extra?.get(name) : undefined;
    if (extra) {
      if (extra.served) return extra.served;
      throw new UnavailableError(extra.error ? `model ${name} failed to load: ${withoutPaths(extra.error)}` : `the model ${name} is still loading`, extra.error ? 'model_load_failed' : 'model_loading');
    }
    // (until the main model has loaded, its id may not be known: 503 first)
    if (!state.model || !state.scheduler) throw new UnavailableError(state.error ? `model failed to load: ${withoutPaths(state.error)}` : 'the model is still loading', state.error ? 'model_load_failed' : 'model_loading');
    if (typeof name === 'string' && name !== modelId() && name !== 'default')
      throw new NotFoundError('model', `the model ${JSON.stringify(name.slice(0, 100))} does not exist; this server serves ${ids().map((x) => JSON.stringify(x)).join(', ')}`, 'model_not_found');
    return { id: modelId(), model: state.model, scheduler: state.scheduler };
  };
  const schedulers = () => [state.scheduler, ...[...(state.extra?.values() ?? [])].map((e) => e.served?.scheduler)].filter((x): x is Scheduler => !!x);

  // (200 once the main model serves; the models beside it each say where they are)
  app.get('/health', async (_req, reply) => {
    // (names only where anyone may list the models: with a key, /v1/models says them)
    const models = state.extra && !o.apiKey ? { models: Object.fromEntries([...state.extra].map(([id, e]) => [id, e.served ? 'ok' : e.error ? 'error' : 'loading'])) } : {};
    if (state.model) return reply.send({ status: 'ok', model: modelId(), ...models });
    return reply.code(503).send({ status: state.error ? 'error' : 'loading', ...models });
  });
  app.get('/metrics', async (_req, reply) => {
    // (all models served, together)
    metrics.queueDepth.set(schedulers().reduce((n, x) => n + x.queued, 0));
    metrics.active.set(schedulers().reduce((n, x) => n + x.activeCount, 0));
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  // (max_model_len as vLLM reports it: the context a prompt plus its answer must fit; known once loaded)
  // (an adapter as vLLM lists one: root its own id, parent the base's)
  const modelCard = (id: string) => {
    const extra = state.extra?.get(id);
    const m = extra ? extra.served?.model : state.model;
    return { id, object: 'model', created: 0, owned_by: 'quench', root: id, parent: extra ? extra.parent : null, ...(m ? { max_model_len: m.args.maxPositions } : {}) };
  };
  app.get('/v1/models', async () => ({ object: 'list', data: ids().map(modelCard) }));
  // model ids may hold a slash (owner/name of a pulled model)
  app.get<{ Params: { '*': string } }>('/v1/models/*', async (req, reply) => {
    if (!ids().includes(req.params['*'])) return send(reply, apiError(404, 'invalid_request_error', `the model ${JSON.stringify(req.params['*'].slice(0, 100))} does not exist`, 'model_not_found', 'model'));
    return modelCard(req.params['*']);
  });

  // ------------------------------------------------------------ generation runner

  async function run(served: Served, reply: FastifyReply, kind: 'chat' | 'completion', body: Body, jobs: Job[], tools: Tools = null) {
    const { model, scheduler } = served;
    const n = (body.n as number | undefined) ?? 1;
    const stops = stopStrings(body);
    const decode = (ids: number[]) => model.codec.decode(ids, true);
    const base = generationOptions(body, o.defaults ?? {});
    base.logprobs = logprobsOption(body, kind, maxAlternatives(model));
    // (vLLM's prompt_logprobs: each choice carries its prompt's scores; streamed, in a chunk of
    // their own once the prompt is read)
    const promptTop = typeof body.prompt_logprobs === 'number' ? body.prompt_logprobs : null;
    if ((promptTop !== null || jobs.some((j) => j.scorePrompt)) && body.diffusing === true) throw new OptionError('diffusing', "the diffusing stream shows drafts; the prompt's log-probabilities need a stream without diffusing");
    if (promptTop !== null && promptTop > model.topK) throw new OptionError('prompt_logprobs', `prompt_logprobs is at most ${model.topK} for this model (the candidates it scores per position), got ${promptTop}`);
    base.constraint = outputConstraint(model, body, kind, tools);
    const stream = body.stream === true;
    const diffusing = body.diffusing === true;
    if (diffusing && !stream) throw new OptionError('diffusing', 'diffusing needs stream: true');
    if (diffusing && tools) throw new OptionError('diffusing', 'the diffusing stream shows drafts as text; with tools, stream without diffusing');
    // text that may turn into calls is not streamed as content
    const hold = holdFor(tools);
    const includeUsage = (body.stream_options as { include_usage?: boolean } | null | undefined)?.include_usage === true;
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const created = Math.floor(Date.now() / 1000);
    const stopSet = new Set(model.special.stop);
    const abort = new AbortController();
    const offClose = abortOnClose(reply, abort);

    const choices = jobs.flatMap((job, j) =>
      Array.from({ length: n }, (_, i) => ({
        index: j * n + i,
        job,
        options: {
          ...base,
          seed: base.seed === undefined ? undefined : base.seed + i,
          suffix: job.suffix,
          ...(job.scorePrompt || promptTop !== null ? { promptLogprobs: Math.max(job.scorePrompt ? base.logprobs! : 0, promptTop ?? 0) } : {}),
          stopStrings: stops,
          detokenize: decode,
          signal: abort.signal,
        } as GenerateOptions,
      })),
    );

    const chunk = (choice: object) =>
      kind === 'chat'
        ? { id, object: 'chat.completion.chunk', created, model: served.id, system_fingerprint: null, choices: [choice] }
        : { id, object: 'text_completion', created, model: served.id, choices: [choice] };
    // one choice's piece of a stream chunk in the endpoint's shape; text undefined = no content
    const piece = (index: number, text: string | undefined, finish: string | null, logprobs: unknown) =>
      chunk(kind === 'chat' ? { index, delta: text === undefined ? {} : { content: text }, finish_reason: finish, logprobs } : { index, text: text ?? '', finish_reason: finish, logprobs });
    const write = (obj: unknown) => {
      if (!reply.raw.writableEnded) reply.raw.write(`data: ${JSON.stringify(obj)}\n\n`);
    };

    // Submit everything first so validation errors answer 400 before any byte is streamed.
    const trackers = new Map<number, FinalTextTracker>();
    // the prompt's scores, streamed once per choice: echo's text with its tokens' scores
    // (completions), vLLM's prompt_logprobs
    const wantsPrompt = (c: (typeof choices)[number]) => c.job.scorePrompt === true || promptTop !== null;
    const promptSent = new Set<number>();
    const promptChunk = (c: (typeof choices)[number], scores: readonly (TokenLogprob | null)[]) => {
      promptSent.add(c.index);
      const pl = promptTop !== null ? { prompt_logprobs: vllmPromptLogprobs(model.codec, scores, promptTop) } : {};
      if (kind === 'chat') return chunk({ index: c.index, delta: {}, finish_reason: null, logprobs: null, ...pl });
      const echoed = c.job.scorePrompt ? { text: c.job.echo ?? '', logprobs: promptLogprobsOf(model.codec, c.job.prompt, scores, decode, base.logprobs ?? 0) } : { text: '', logprobs: null };
      return chunk({ index: c.index, ...echoed, finish_reason: null, ...pl });
    };
    // per choice: log-probabilities streamed so far, and their tokens (completions' text offsets)
    const streamedLogprobs = new Map(choices.map((c) => [c.index, { sent: 0, text: new IncrementalDecoder(decode), base: c.job.echo?.length ?? 0 }]));
    const logprobsOf = (entries: readonly TokenLogprob[], at: TextSoFar) => {
      if (base.logprobs === undefined) return null;
      return kind === 'chat' ? chatLogprobs(model.codec, entries) : completionLogprobs(model.codec, entries, at);
    };
    let promises: Promise<GenerateResult>[];
    try {
      promises = choices.map((c) => {
        const tracker = new FinalTextTracker(decode, stops, hold);
        trackers.set(c.index, tracker);
        const lp = streamedLogprobs.get(c.index)!;
        const onStep = stream
          ? (ev: StepEvent) => {
              if (diffusing) {
                if (ev.prefill) return; // (no draft yet: nothing to show)
                const text = (c.job.echo ?? '') + draftText(ev, stopSet, decode);
                write(piece(c.index, text, null, null));
                return;
              }
              if (ev.promptLogprobs && wantsPrompt(c) && !promptSent.has(c.index)) write(promptChunk(c, ev.promptLogprobs));
              // the last event's text and log-probabilities go out together in the final chunk
              if (ev.done) return;
              const delta = tracker.step(ev);
              // log-probabilities travel with the tokens finalized since the last chunk; with stop
              // strings they wait for the final chunk (the cut is known only at the end)
              const entries = ev.logprobs && stops.length === 0 ? ev.logprobs.slice(lp.sent, ev.finalized) : [];
              lp.sent += entries.length;
              if (delta || entries.length > 0) write(piece(c.index, delta, null, logprobsOf(entries, lp)));
            }
          : undefined;
        const p = scheduler.submit({ prompt: c.job.prompt, options: c.options, onStep, signal: abort.signal, cacheSalt: body.cache_salt as string | undefined });
        // (handled from the start: if a later choice fails validation, this one is cancelled
        // below, and its rejection must not go unhandled, which would end the process)
        p.catch(() => {});
        return p;
      });
    } catch (e) {
      abort.abort();
      offClose();
      // (the engine names a prompt "messages" and an answer budget "max_tokens": named here as
      // this request sent them)
      if (e instanceof QuenchError && e.param !== null) {
        const sent = kind === 'completion' && e.param === 'messages' ? 'prompt' : e.param === 'max_tokens' && body.max_completion_tokens != null ? 'max_completion_tokens' : e.param === 'prompt_logprobs' && promptTop === null ? 'echo' : e.param;
        if (sent === 'echo') Object.defineProperty(e, 'param', { value: sent });
        else if (sent !== e.param) {
          Object.defineProperty(e, 'param', { value: sent });
          e.message = e.message.replaceAll(e.param === 'prompt' ? 'messages' : 'max_tokens', sent);
        }
      }
      throw e;
    }
    // the requests already queued are cancelled if a later one fails validation; a choice that
    // fails while generating cancels its siblings (the request has failed)
    for (const p of promises) p.catch((e) => !(e instanceof CancelledError) && abort.abort());
    const settled = Promise.allSettled(promises);

    if (!stream) {
      const results = await settled;
      offClose();
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      const failed = rejected.find((r) => !(r.reason instanceof CancelledError)) ?? rejected[0];
      if (failed) {
        if (failed.reason instanceof CancelledError) return reply; // client is gone
        throw failed.reason;
      }
      // (max_tokens 0: the token run to score the prompt is dropped)
      const rs = (results as PromiseFulfilledResult<GenerateResult>[]).map(({ value: r }, i): GenerateResult => (choices[i].job.scoreOnly ? { ...r, tokens: [], text: '', finishReason: 'length', logprobs: r.logprobs && [] } : r));
      const usage = usageOf(rs, jobs, n);
      const out = rs.map((r, i) => {
        const echo = choices[i].job.echo ?? '';
        const text = echo + (r.text ?? decode(r.tokens));
        const a = answerOf(tools, text, r.finishReason);
        const promptScores = promptTop !== null && r.promptLogprobs ? { prompt_logprobs: vllmPromptLogprobs(model.codec, r.promptLogprobs, promptTop) } : {};
        if (kind === 'chat') return { index: i, message: { role: 'assistant', content: a.content, refusal: null, ...(a.calls ? { tool_calls: a.calls } : {}) }, finish_reason: a.finish, logprobs: r.logprobs ? chatLogprobs(model.codec, r.logprobs) : null, ...promptScores };
        const answer = r.logprobs ? completionLogprobs(model.codec, r.logprobs, { text: new IncrementalDecoder(decode), base: echo.length }) : null;
        // (echo: the prompt's tokens first, the first with no log-probability)
        const logprobs = answer && choices[i].job.scorePrompt && r.promptLogprobs ? joinLogprobs(promptLogprobsOf(model.codec, choices[i].job.prompt, r.promptLogprobs, decode, base.logprobs ?? 0), answer) : answer;
        return { index: i, text, finish_reason: r.finishReason, logprobs, ...promptScores };
      });
      return kind === 'chat'
        ? { id, object: 'chat.completion', created, model: served.id, system_fingerprint: null, choices: out, usage }
        : { id, object: 'text_completion', created, model: served.id, choices: out, usage };
    }

    startEventStream(reply);
    // (content null where the answer may be only calls, as OpenAI's first chunk has it then)
    if (kind === 'chat') for (const c of choices) write(chunk({ index: c.index, delta: { role: 'assistant', content: tools ? null : '' }, finish_reason: null, logprobs: null }));
    // (an echo whose tokens are scored goes out with their scores, once the prompt is read)
    else for (const c of choices) if (c.job.echo && !diffusing && !c.job.scorePrompt) write(piece(c.index, c.job.echo, null, null));
    const done: GenerateResult[] = [];
    await Promise.all(
      promises.map(async (p, i) => {
        try {
          const r = await p;
          done[i] = r;
          const c = choices[i];
          if (wantsPrompt(c) && !promptSent.has(c.index) && r.promptLogprobs) write(promptChunk(c, r.promptLogprobs));
          const full = r.text ?? decode(r.tokens);
          const a = answerOf(tools, full, r.finishReason);
          const rest = diffusing ? (c.job.echo ?? '') + full : trackers.get(c.index)!.finish(a.content ?? '');
          const lp = streamedLogprobs.get(c.index)!;
          const last = logprobsOf(r.logprobs?.slice(lp.sent) ?? [], lp);
          if (a.calls) {
            // one chunk: the rest of the content, every call whole, the finish reason
            const delta = { ...(rest ? { content: rest } : {}), tool_calls: a.calls.map((call, k) => ({ index: k, ...call })) };
            write(chunk({ index: c.index, delta, finish_reason: a.finish, logprobs: last }));
          } else write(piece(c.index, rest || undefined, a.finish, last));
        } catch (e) {
          if (!(e instanceof CancelledError)) write(toEnvelope(e).body);
        }
      }),
    );
    if (includeUsage && done.filter(Boolean).length === choices.length) {
      const usage = usageOf(done, jobs, n);
      write(kind === 'chat' ? { id, object: 'chat.completion.chunk', created, model: served.id, choices: [], usage } : { id, object: 'text_completion', created, model: served.id, choices: [], usage });
    }
    if (!reply.raw.writableEnded) reply.raw.end('data: [DONE]\n\n');
    offClose();
  }

  function usageOf(rs: GenerateResult[], jobs: Job[], n: number) {
    // (each prompt once, as OpenAI and vLLM count it, though each of its n choices runs it; its
    // cached tokens: the most any of its choices found in the prefix cache)
    const prompt = jobs.reduce((s, j) => s + j.prompt.length + (j.suffix?.length ?? 0), 0);
    const cached = jobs.reduce((s, _, j) => s + Math.max(0, ...rs.slice(j * n, (j + 1) * n).map((r) => r.stats.cached)), 0);
    const completion = rs.reduce((s, r) => s + r.tokens.length, 0);
    // (prefill chunks score nothing: left out, so chunking does not change the ratio)
    const forwards = rs.reduce((s, r) => s + r.stats.forwards - r.stats.prefill, 0);
    return {
      prompt_tokens: prompt,
      // (OpenAI's field: prompt tokens served from the prefix cache)
      prompt_tokens_details: { cached_tokens: cached },
      completion_tokens: completion,
      total_tokens: prompt + completion,
      forward_passes: forwards,
      tokens_per_forward: forwards > 0 ? Math.round((completion / forwards) * 1000) / 1000 : 0,
    };
  }

  app.post('/v1/chat/completions', { schema: { body: chatBody } }, async (req, reply) => {
    const body = req.body as Body;
    const served = ready(body.model);
    const { model } = served;
    rejectUnsupported(body);
    const tools = toolRequest(body);
    const prompt = encodeToolChat(model.codec, chatMessages(body.messages as { role: string }[]), tools);
    return run(served, reply, 'chat', body, [{ prompt }], tools);
  });

  // apply (merge an update snippet) and next edit: one tagged user message, decoded as chat
  for (const kind of ['apply', 'edit'] as const)
    app.post(`/v1/${kind}/completions`, { schema: { body: chatBody } }, async (req, reply) => {
      const body = req.body as Body;
      const served = ready(body.model);
      const { model } = served;
      rejectUnsupported(body);
      noTools(body);
      if (body.response_format !== undefined && body.response_format !== null) throw new OptionError('response_format', `response_format is for /v1/chat/completions; /v1/${kind}/completions answers with code`);
      checkCodeEditMessages(kind, body.messages);
      const prompt = encodeToolChat(model.codec, chatMessages(body.messages as { role: string }[]), null);
      return run(served, reply, 'chat', body, [{ prompt }], null);
    });

  app.post('/v1/completions', { schema: { body: completionBody } }, async (req, reply) => {
    const body = req.body as Body;
    const served = ready(body.model);
    const { model } = served;
    rejectUnsupported(body);
    noTools(body);
    const p = promptList(body.prompt);
    const suffix = typeof body.suffix === 'string' && body.suffix.length > 0 ? model.codec.encode(body.suffix, false) : undefined;
    const echo = body.echo === true;
    // (OpenAI scores the echoed prompt's tokens too, which a causal model's forward does; a
    // silent omission would skew an evaluation)
    if (echo && typeof body.logprobs === 'number') {
      if (model.args.attention !== 'causal') throw new OptionError('echo', "echo with logprobs needs the prompt's log-probabilities, which only a causal model gives (a diffusion model never scores the prompt it reads); ask for one or the other");
    }
    // (max_tokens 0: the prompt scored, nothing generated, as evaluation harnesses ask)
    const scoreOnly = body.max_tokens === 0;
    if (scoreOnly && (!echo || body.stream === true)) throw new OptionError('max_tokens', 'max_tokens 0 (score the prompt only) needs echo: true, without stream');
    const scorePrompt = echo && typeof body.logprobs === 'number';
    const ofIds = (ids: number[]): Job => ({ prompt: ids, suffix, echo: echo ? model.codec.decode(ids) : undefined, scoreOnly, scorePrompt });
    const jobs: Job[] = p.kind === 'ids' ? p.prompts.map(ofIds) : p.prompts.map((s) => ({ prompt: model.codec.encodePrompt(s), suffix, echo: echo ? s : undefined, scoreOnly, scorePrompt }));
    return run(served, reply, 'completion', scoreOnly ? { ...body, max_tokens: 1, max_completion_tokens: undefined } : body, jobs);
  });

  const store = new ResponseStore({ maxResponses: o.responseStore ?? 1000, maxBytes: o.responseStoreBytes });
  app.post('/v1/responses', { schema: { body: responsesBody } }, async (req, reply) =>
    createResponse({ ready, defaults: o.defaults, store }, req.body as Body, reply),
  );
  const notStored = (id: string) => new NotFoundError('response_id', `No response found with id '${id.slice(0, 100)}'.`, 'response_not_found');
  const stored = (id: string) => {
    const e = store.get(id);
    if (!e) throw notStored(id);
    return e;
  };
  app.get<{ Params: { id: string } }>('/v1/responses/:id', async (req) => stored(req.params.id).response);
  app.delete<{ Params: { id: string } }>('/v1/responses/:id', async (req) => {
    if (!store.delete(req.params.id)) throw notStored(req.params.id);
    return { id: req.params.id, object: 'response.deleted', deleted: true };
  });
  app.get<{ Params: { id: string }; Querystring: Record<string, unknown> }>('/v1/responses/:id/input_items', async (req) => {
    const items = stored(req.params.id).inputItems;
    const q = req.query;
    const limit = q.limit === undefined ? 20 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new OptionError('limit', 'limit is an integer in [1, 100]');
    if (q.order !== undefined && q.order !== 'asc' && q.order !== 'desc') throw new OptionError('order', 'order is "asc" or "desc"');
    if (q.after !== undefined && (typeof q.after !== 'string' || !items.some((x) => x.id === q.after))) throw new OptionError('after', 'after names an input item of this response');
    return page(items, { after: q.after as string | undefined, limit, order: q.order as 'asc' | 'desc' | undefined });
  });

  registerTokenize(app, ready);

  app.post('/v1/fim/completions', { schema: { body: fimBody } }, async (req, reply) => {
    const body = req.body as Body;
    const served = ready(body.model);
    const { model } = served;
    rejectUnsupported(body);
    noTools(body);
    const suffix = typeof body.suffix === 'string' && body.suffix.length > 0 ? model.codec.encode(body.suffix, false) : undefined;
    return run(served, reply, 'completion', body, [{ prompt: model.codec.encodePrompt(body.prompt as string), suffix }]);
  });

  return { app, metrics };
}
