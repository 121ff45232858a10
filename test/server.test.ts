// The OpenAI-compatible server, driven by the official `openai` client and raw HTTP.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import OpenAI from 'openai';
import { attachScheduler, buildServer, type ServingState, type ServerOptions } from '../src/server/app.ts';
import type { Model } from '../src/models/registry.ts';
import { fixtureTokenizer } from '../src/formats/fixtures.ts';
import { CACHE, fixtureModel } from './helpers.ts';

const KEY = 'sk-test-0123456789';
// forwards in a worker thread, as `quench serve` runs them
const { model, dir } = await fixtureModel({ arch: 'llada', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 256 }, { worker: true });
const servers: { close(): Promise<unknown> }[] = [];
after(async () => {
  for (const s of servers) await s.close();
  await model.close();
});

async function start(o: Partial<ServerOptions> = {}, loaded: Model | null = model) {
  const state: ServingState = { model: null, scheduler: null };
  const opts: ServerOptions = { apiKey: KEY, maxBatch: 4, maxQueue: 64, host: '127.0.0.1', defaults: { maxTokens: 32 }, ...o };
  const { app, metrics } = await buildServer(state, opts);
  if (loaded) attachScheduler(state, loaded, opts, metrics);
  await app.listen({ host: '127.0.0.1', port: 0 });
  servers.push(app);
  const port = (app.server.address() as { port: number }).port;
  const base = `http://127.0.0.1:${port}`;
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 });
  return { app, state, opts, metrics, base, client };
}

const main = await start();
const chatReq = { model: model.id, messages: [{ role: 'user' as const, content: 'What is 2 + 2?' }], temperature: 0, seed: 7, max_tokens: 32 };

async function post(base: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await r.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* SSE */
  }
  return { status: r.status, json, text, headers: r.headers };
}

function sseEvents(text: string): string[] {
  return text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
}

test('models: list and retrieve', async () => {
  const list = await main.client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [model.id]);
  const m = await main.client.models.retrieve(model.id);
  assert.equal(m.id, model.id);
  assert.equal((m as any).max_model_len, 256, 'the fixture\'s context');
  await assert.rejects(main.client.models.retrieve('nope'), (e: any) => e.status === 404);
});

test('chat: non-streaming and streaming give the same text; chunks are well formed', async () => {
  const r = await main.client.chat.completions.create(chatReq);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  assert.ok((r.usage as any).forward_passes >= 1);
  assert.ok((r.usage as any).tokens_per_forward > 0);

  const stream = await main.client.chat.completions.create({ ...chatReq, stream: true, stream_options: { include_usage: true } });
  let text = '';
  const chunks: any[] = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.ok(chunks.every((c) => c.id === chunks[0].id && c.object === 'chat.completion.chunk' && c.created === chunks[0].created));
  const finals = chunks.filter((c) => c.choices[0]?.finish_reason);
  assert.equal(finals.length, 1);
  assert.equal(finals[0].choices[0].finish_reason, r.choices[0].finish_reason);
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, r.usage!.completion_tokens);
  for (const c of chunks) text += c.choices[0]?.delta?.content ?? '';
  assert.equal(text, r.choices[0].message.content);

  // token editing: a block streams once no step can edit it any more, so the streamed text is the answer
  const editing = { ...chatReq, max_tokens: 48, editing_threshold: 0, threshold: 0.5 };
  const whole = await main.client.chat.completions.create(editing as never);
  let edited = '';
  for await (const c of await main.client.chat.completions.create({ ...editing, stream: true } as never) as unknown as AsyncIterable<any>) edited += c.choices[0]?.delta?.content ?? '';
  assert.equal(edited, (whole as any).choices[0].message.content);

  const raw = await post(main.base, '/v1/chat/completions', { ...chatReq, stream: true });
  assert.equal(raw.status, 200);
  assert.match(raw.headers.get('content-type')!, /text\/event-stream/);
  const ev = sseEvents(raw.text);
  assert.equal(ev.at(-1), '[DONE]');
  for (const e of ev.slice(0, -1)) JSON.parse(e);
});

test('diffusing stream: each chunk is the whole current draft; the last is the answer', async () => {
  const r = await main.client.chat.completions.create(chatReq);
  const raw = await post(main.base, '/v1/chat/completions', { ...chatReq, stream: true, diffusing: true });
  const ev = sseEvents(raw.text).slice(0, -1).map((e) => JSON.parse(e));
  const contents = ev.map((e) => e.choices[0].delta.content).filter((c) => typeof c === 'string' && c.length > 0);
  assert.ok(contents.length >= 2, 'several drafts');
  assert.equal(contents.at(-1), r.choices[0].message.content);
});

test('completions (string, array, echo) and FIM', async () => {
  const c = await main.client.completions.create({ model: model.id, prompt: 'The cat', max_tokens: 16, temperature: 0 });
  assert.equal(c.object, 'text_completion');
  assert.equal(typeof c.choices[0].text, 'string');
  const e = await main.client.completions.create({ model: model.id, prompt: 'The cat', max_tokens: 16, temperature: 0, echo: true });
  assert.equal(e.choices[0].text, 'The cat' + c.choices[0].text);
  const m = await main.client.completions.create({ model: model.id, prompt: ['one', 'two'], max_tokens: 8, temperature: 0 });
  assert.equal(m.choices.length, 2);
  const f = await post(main.base, '/v1/fim/completions', { model: model.id, prompt: 'def add(a, b):\n    return ', suffix: '\n\nprint(add(1, 2))', max_tokens: 16 });
  assert.equal(f.status, 200, f.text);
  assert.equal(typeof f.json.choices[0].text, 'string');
  const s = await main.client.completions.create({ model: model.id, prompt: 'x = ', suffix: ' + 1', max_tokens: 8, temperature: 0 });
  assert.equal(typeof s.choices[0].text, 'string');
  const streamed = await post(main.base, '/v1/completions', { model: model.id, prompt: 'The cat', max_tokens: 16, temperature: 0, stream: true });
  const text = sseEvents(streamed.text).slice(0, -1).map((x) => JSON.parse(x).choices[0].text).join('');
  assert.equal(text, c.choices[0].text);
});

test('logprobs: one entry per completion token, in the chat and the completions shapes', async () => {
  const r = await main.client.chat.completions.create({ ...chatReq, logprobs: true, top_logprobs: 3 });
  const content = r.choices[0].logprobs!.content!;
  assert.equal(content.length, r.usage!.completion_tokens);
  assert.ok(content.length > 0);
  assert.equal(Buffer.from(content.flatMap((t) => t.bytes!)).toString('utf8'), r.choices[0].message.content, 'token bytes spell the answer');
  for (const t of content) {
    assert.ok(t.logprob <= 0 && Number.isFinite(t.logprob));
    assert.equal(t.top_logprobs.length, 3);
    for (let k = 1; k < 3; k++) assert.ok(t.top_logprobs[k].logprob <= t.top_logprobs[k - 1].logprob, 'alternatives best first');
    assert.ok(t.top_logprobs.reduce((a, x) => a + Math.exp(x.logprob), 0) <= 1 + 1e-6);
    // temperature 0 commits the best candidate: the token is its own first alternative
    assert.equal(t.top_logprobs[0].token, t.token);
    assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6);
  }
  // the most a diffusion model's token can list: every candidate but the mask token, always that many
  const most = await main.client.chat.completions.create({ ...chatReq, logprobs: true, top_logprobs: model.topK - 1 });
  for (const t of most.choices[0].logprobs!.content!) assert.equal(t.top_logprobs.length, model.topK - 1);
  const plain = await main.client.chat.completions.create(chatReq);
  assert.equal(plain.choices[0].logprobs, null);
  assert.equal(plain.choices[0].message.content, r.choices[0].message.content, 'asking for logprobs does not change the answer');
  // streamed: the chunks' entries, concatenated, are the non-streamed list
  const stream = await main.client.chat.completions.create({ ...chatReq, logprobs: true, top_logprobs: 3, stream: true });
  const streamed: typeof content = [];
  for await (const ch of stream) streamed.push(...(ch.choices[0]?.logprobs?.content ?? []));
  assert.deepEqual(streamed, content);
  // with stop strings the entries wait for the final chunk, and still add up to the same list;
  // the stop string is a piece of the answer, so it really cuts it
  const answer = r.choices[0].message.content!;
  let at = Math.floor(answer.length / 2);
  while (at < answer.length - 2 && (answer.slice(at, at + 2).includes('\uFFFD') || answer.indexOf(answer.slice(at, at + 2)) !== at)) at++;
  const cut = answer.slice(at, at + 2);
  assert.ok(at > 0 && at < answer.length - 2, 'a stop string that first occurs mid-answer');
  const withStop = { ...chatReq, logprobs: true, top_logprobs: 1, stop: [cut] };
  const stopped = await main.client.chat.completions.create(withStop);
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  assert.equal(stopped.choices[0].message.content, answer.slice(0, at));
  const plainStop = stopped.choices[0].logprobs!.content!;
  assert.ok(plainStop.length < content.length, 'the cut drops the entries of the tokens after it');
  const chunks: (typeof content)[] = [];
  for await (const ch of await main.client.chat.completions.create({ ...withStop, stream: true })) if (ch.choices[0]?.logprobs?.content?.length) chunks.push(ch.choices[0].logprobs.content);
  assert.equal(chunks.length, 1);
  assert.deepEqual(chunks[0], plainStop);
  const c = await main.client.completions.create({ model: model.id, prompt: 'hello', max_tokens: 12, temperature: 0, logprobs: 2 });
  const lp = c.choices[0].logprobs!;
  assert.equal(lp.tokens!.length, c.usage!.completion_tokens);
  // offsets point into the returned text: from 0, never backwards, never past its end
  assert.equal(lp.text_offset![0], 0);
  lp.text_offset!.forEach((o, i) => assert.ok(o >= (lp.text_offset![i - 1] ?? 0) && o <= c.choices[0].text.length, `offset ${i}`));
  // (with echo OpenAI scores the prompt's tokens too, which quench does not: a 400, not a partial list)
  const echoed = await post(main.base, '/v1/completions', { model: model.id, prompt: 'hello', max_tokens: 12, temperature: 0, logprobs: 0, echo: true });
  assert.equal(echoed.status, 400);
  assert.ok(lp.top_logprobs!.every((m) => Object.keys(m).length <= 2));
  const cs = await main.client.completions.create({ model: model.id, prompt: 'hello', max_tokens: 12, temperature: 0, logprobs: 2, stream: true });
  const parts = { tokens: [] as string[], token_logprobs: [] as number[], text_offset: [] as number[] };
  for await (const ch of cs) {
    const l = ch.choices[0]?.logprobs;
    if (!l) continue;
    parts.tokens.push(...l.tokens!);
    parts.token_logprobs.push(...l.token_logprobs!);
    parts.text_offset.push(...l.text_offset!);
  }
  assert.deepEqual(parts, { tokens: lp.tokens, token_logprobs: lp.token_logprobs, text_offset: lp.text_offset });
});

test('ignore_eos: a model that ends at once writes max_tokens tokens instead', async () => {
  const eos = fixtureTokenizer('llada').specials['<|endoftext|>'];
  const { model: eosModel } = await fixtureModel({ arch: 'llada', hidden: 64, heads: 4, layers: 2, favourToken: eos, maxPositions: 256 });
  try {
    const s = await start({}, eosModel);
    const req = { model: eosModel.id, messages: [{ role: 'user' as const, content: 'hi' }], temperature: 0, max_tokens: 12 };
    const stopped = await s.client.chat.completions.create(req);
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    assert.equal(stopped.usage!.completion_tokens, 0);
    const full = await s.client.chat.completions.create({ ...req, ignore_eos: true } as never);
    assert.equal(full.choices[0].finish_reason, 'length');
    assert.equal(full.usage!.completion_tokens, 12);
    const bad = await post(s.base, '/v1/chat/completions', { ...req, ignore_eos: 'yes' });
    assert.equal(bad.status, 400);
  } finally {
    await eosModel.close();
  }
});

test('concurrency: 16 requests with max-batch 4 all succeed, each equal to its solo answer', async () => {
  const prompts = Array.from({ length: 16 }, (_, i) => `question number ${i}`);
  const solo: string[] = [];
  for (const p of prompts) solo.push((await main.client.chat.completions.create({ ...chatReq, messages: [{ role: 'user', content: p }] })).choices[0].message.content!);
  const before = await main.metrics.batchSize.get();
  const together = await Promise.all(prompts.map((p) => main.client.chat.completions.create({ ...chatReq, messages: [{ role: 'user', content: p }] })));
  assert.deepEqual(together.map((r) => r.choices[0].message.content), solo);
  const after = await main.metrics.batchSize.get();
  const sum = (h: typeof before) => h.values.find((v) => v.metricName === 'quench_batch_size_sum')!.value;
  const count = (h: typeof before) => h.values.find((v) => v.metricName === 'quench_batch_size_count')!.value;
  assert.ok((sum(after) - sum(before)) / (count(after) - count(before)) > 1.5, 'forwards were batched');
});

test('a client that disconnects mid-stream frees its slot', async () => {
  const ac = new AbortController();
  const before = (await main.metrics.cancelled.get()).values[0]?.value ?? 0;
  const r = await fetch(`${main.base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ ...chatReq, max_tokens: 192, policy: 'low_confidence', stream: true, diffusing: true }),
    signal: ac.signal,
  });
  const reader = r.body!.getReader();
  await reader.read();
  ac.abort();
  for (let i = 0; i < 100 && main.state.scheduler!.activeCount > 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(main.state.scheduler!.activeCount, 0);
  const now = (await main.metrics.cancelled.get()).values[0]?.value ?? 0;
  assert.equal(now, before + 1);
  const ok = await main.client.chat.completions.create(chatReq);
  assert.ok(ok.choices[0].message.content !== undefined);
});

test('queue overflow answers 503 in the OpenAI envelope, and the server keeps serving', async () => {
  // (a server still loading says when to come back, as a full one does)
  const loading = await start({}, null);
  const early = await post(loading.base, '/v1/chat/completions', chatReq);
  assert.equal(early.status, 503);
  assert.equal(early.headers.get('retry-after'), '1');
  const small = await start({ maxBatch: 1, maxQueue: 1 });
  const rs = await Promise.all(Array.from({ length: 6 }, () => post(small.base, '/v1/chat/completions', { ...chatReq, max_tokens: 64, policy: 'low_confidence' })));
  const codes = rs.map((r) => r.status).sort();
  assert.ok(codes.includes(200) && codes.includes(503), `statuses ${codes}`);
  const busy = rs.find((r) => r.status === 503)!;
  assert.equal(busy.json.error.type, 'overloaded_error');
  const ok = await post(small.base, '/v1/chat/completions', chatReq);
  assert.equal(ok.status, 200);
});

test('bad requests get their 4xx with the OpenAI envelope; a valid request right after succeeds', async () => {
  const bad: [string, unknown, number, string | null][] = [
    ['max_tokens -1', { ...chatReq, max_tokens: -1 }, 400, 'max_tokens'],
    ['max_tokens huge', { ...chatReq, max_tokens: 100000 }, 400, 'max_tokens'],
    ['n too big', { ...chatReq, n: 100 }, 400, 'n'],
    ['steps 0', { ...chatReq, steps: 0 }, 400, 'steps'],
    ['block length does not divide', { ...chatReq, max_tokens: 32, block_length: 5 }, 400, 'block_length'],
    ['temperature < 0', { ...chatReq, temperature: -1 }, 400, 'temperature'],
    ['top_p 0', { ...chatReq, top_p: 0 }, 400, 'top_p'],
    ['top_p > 1', { ...chatReq, top_p: 1.5 }, 400, 'top_p'],
    ['unknown policy', { ...chatReq, policy: 'magic' }, 400, 'policy'],
    ['unknown canvas', { ...chatReq, canvas: 'elastic' }, 400, 'canvas'],
    ['initial canvas 0', { ...chatReq, initial_canvas: 0 }, 400, 'initial_canvas'],
    ['no messages', { model: model.id, messages: [] }, 400, 'messages'],
    ['five stop strings', { ...chatReq, stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'stop'],
    ['a content part without its type', { ...chatReq, messages: [{ role: 'user', content: [{ text: 'hi' }] }] }, 400, 'messages[0].content[0].type'],
    ['an unknown role (named as quench names fields)', { ...chatReq, messages: [{ role: 'user', content: 'a' }, { role: 'robot', content: 'x' }] }, 400, 'messages[1].role'],
    ['logit_bias beyond 100', { ...chatReq, logit_bias: { '5': 150 } }, 400, 'logit_bias'],
    ['logit_bias on a token outside the vocabulary', { ...chatReq, logit_bias: { '999999': 1 } }, 400, 'logit_bias'],
    ['frequency_penalty beyond 2', { ...chatReq, frequency_penalty: 2.5 }, 400, 'frequency_penalty'],
    ['presence_penalty with policy wino', { ...chatReq, presence_penalty: 0.5, policy: 'wino' }, 400, 'presence_penalty'],
    ['early_commit in JSON mode', { ...chatReq, early_commit: 5, response_format: { type: 'json_object' } }, 400, 'early_commit'],
    ['a tool without a valid name', { ...chatReq, tools: [{ type: 'function', function: { name: 'f g' } }] }, 400, 'tools[0].function.name'],
    ['a tool call with arguments that are not JSON', { ...chatReq, messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{' } }] }] }, 400, 'messages[0].tool_calls[0].function.arguments'],
    ['json schema with oneOf', { ...chatReq, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { oneOf: [{ type: 'string' }] } } } } } }, 400, 'response_format'],
    ['json schema without its schema', { ...chatReq, response_format: { type: 'json_schema', json_schema: { name: 'x' } } }, 400, 'response_format'],
    ['response_format grammar', { ...chatReq, response_format: { type: 'grammar' } }, 400, 'response_format'],
    ['logprobs of the diffusing stream', { ...chatReq, logprobs: true, stream: true, diffusing: true }, 400, 'logprobs'],
    ['top_logprobs without logprobs', { ...chatReq, top_logprobs: 2 }, 400, 'top_logprobs'],
    ['top_logprobs over the candidates', { ...chatReq, logprobs: true, top_logprobs: 20 }, 400, 'top_logprobs'],
    ['top_logprobs = the candidates of a diffusion model (one could be the mask)', { ...chatReq, logprobs: true, top_logprobs: 16 }, 400, 'top_logprobs'],
    ['image part', { ...chatReq, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 400, 'messages[0].content[0]'],
    ['unknown model', { ...chatReq, model: 'gpt-9' }, 404, 'model'],
    ['string for a number', { ...chatReq, max_tokens: '12' }, 400, 'max_tokens'],
  ];
  for (const [label, body, status, param] of bad) {
    const r = await post(main.base, '/v1/chat/completions', body);
    assert.equal(r.status, status, `${label}: ${r.text}`);
    assert.ok(r.json?.error?.message, label);
    assert.equal(r.json.error.param, param, label);
    if (label === 'five stop strings') assert.match(r.json.error.message, /more than 4 items/);
    assert.equal(typeof r.json.error.type, 'string');
  }
  // the penalties in range are served (and change nothing at 0)
  const pen = await post(main.base, '/v1/chat/completions', { ...chatReq, frequency_penalty: 0.5, presence_penalty: 0.3 });
  assert.equal(pen.status, 200, pen.text);
  const long = 'word '.repeat(400);
  const ctx = await post(main.base, '/v1/chat/completions', { ...chatReq, messages: [{ role: 'user', content: long }] });
  assert.equal(ctx.status, 400);
  assert.match(ctx.json.error.message, /the prompt is \d+ tokens; the model context is 256 tokens/);
  assert.equal(ctx.json.error.param, 'messages');
  const ctx2 = await post(main.base, '/v1/chat/completions', { ...chatReq, max_tokens: 250 });
  assert.equal(ctx2.status, 400);
  assert.match(ctx2.json.error.message, /250/);
  assert.match(ctx2.json.error.message, /256/);
  // the field named as the request sent it: a completion's prompt, max_completion_tokens
  const ctx3 = await post(main.base, '/v1/completions', { model: model.id, prompt: long, max_tokens: 4 });
  assert.equal(ctx3.json.error.param, 'prompt', ctx3.text);
  const ctx4 = await post(main.base, '/v1/chat/completions', { ...chatReq, max_tokens: undefined, max_completion_tokens: 250 });
  assert.equal(ctx4.status, 400);
  assert.equal(ctx4.json.error.param, 'max_completion_tokens', ctx4.text);
  const ids = await post(main.base, '/v1/completions', { model: model.id, prompt: [1, 2, 999999], max_tokens: 4 });
  assert.equal(ids.status, 400);
  assert.equal(ids.json.error.code, 'invalid_token');
  // a later prompt that fails validation after an earlier one was queued: a 400, and the queued
  // one's cancellation is handled (unhandled, it would end the process)
  const later = await post(main.base, '/v1/completions', { model: model.id, prompt: [[1, 2, 3], [1, 999999]], max_tokens: 4 });
  assert.equal(later.status, 400, later.text);
  await new Promise((r) => setTimeout(r, 100));
  const json = await post(main.base, '/v1/chat/completions', '{"model": "x", "messages": [');
  assert.equal(json.status, 400);
  assert.equal(json.json.error.type, 'invalid_request_error');
  const big = await post(main.base, '/v1/chat/completions', { ...chatReq, messages: [{ role: 'user', content: 'x'.repeat(5 * 1024 * 1024) }] });
  assert.equal(big.status, 413);
  assert.ok(big.json.error);
  const ok = await main.client.chat.completions.create(chatReq);
  assert.ok(ok.choices.length === 1);
});

test('security: API key, Host check, CORS off by default, CORS on for named origins', async () => {
  const none = await post(main.base, '/v1/chat/completions', chatReq, { authorization: '' });
  assert.equal(none.status, 401);
  assert.equal(none.json.error.type, 'authentication_error');
  const wrong = await post(main.base, '/v1/chat/completions', chatReq, { authorization: 'Bearer sk-wrong' });
  assert.equal(wrong.status, 401);
  const models = await fetch(`${main.base}/v1/models`);
  assert.equal(models.status, 401);
  // the key is checked on the route the router matched: /v1/ spelled with escapes, a target in
  // absolute form and an unknown route get 401 too; the probes need none
  const raw = (method: string, path: string) =>
    new Promise<number>((resolve, reject) => {
      const u = new URL(main.base);
      const r = http.request({ host: u.hostname, port: u.port, method, path, headers: { host: u.host, 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      r.on('error', reject);
      r.end(method === 'POST' ? JSON.stringify(chatReq) : undefined);
    });
  for (const path of ['/%761/chat/completions', '/v%31/chat/completions', '/%76%31/responses', `http://${new URL(main.base).host}/v1/chat/completions`, '/v1/fim/completions', '/v1/nothing-here'])
    assert.equal(await raw('POST', path), 401, path);
  assert.equal(await raw('GET', '/v%31/models'), 401);
  assert.equal(await raw('GET', '/health'), 200);
  assert.equal(await raw('GET', '/metrics'), 200);
  // fetch cannot set Host; a raw request can, as a DNS-rebinding page's browser would
  const rebinding = await new Promise<number>((resolve, reject) => {
    const u = new URL(main.base);
    const r = http.request({ host: u.hostname, port: u.port, path: '/v1/models', headers: { host: 'evil.example.com', authorization: `Bearer ${KEY}` } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    r.on('error', reject);
    r.end();
  });
  assert.equal(rebinding, 403);
  const pre = await fetch(`${main.base}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'http://evil.example.com', 'access-control-request-method': 'POST' } });
  assert.equal(pre.headers.get('access-control-allow-origin'), null);
  const withCors = await start({ corsOrigins: ['http://app.example.com'] });
  const pre2 = await fetch(`${withCors.base}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'http://app.example.com', 'access-control-request-method': 'POST' } });
  assert.equal(pre2.headers.get('access-control-allow-origin'), 'http://app.example.com');
  const pre3 = await fetch(`${withCors.base}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'http://other.example.com', 'access-control-request-method': 'POST' } });
  assert.notEqual(pre3.headers.get('access-control-allow-origin'), 'http://other.example.com');
  // a streamed answer carries the CORS headers too (the stream writes its own head)
  const streamed = await fetch(`${withCors.base}/v1/chat/completions`, { method: 'POST', headers: { origin: 'http://app.example.com', 'content-type': 'application/json', authorization: `Bearer ${KEY}` }, body: JSON.stringify({ ...chatReq, stream: true }) });
  assert.equal(streamed.status, 200);
  assert.equal(streamed.headers.get('access-control-allow-origin'), 'http://app.example.com');
  await streamed.text();
  const ok = await main.client.chat.completions.create(chatReq);
  assert.equal(ok.choices.length, 1);
});

test('health is 503 while loading and 200 when ready; metrics speak Prometheus', async () => {
  const s = await start({}, null);
  const h1 = await fetch(`${s.base}/health`);
  assert.equal(h1.status, 503);
  const c1 = await post(s.base, '/v1/chat/completions', chatReq);
  assert.equal(c1.status, 503);
  // a load that failed says why, without the server's paths
  s.state.error = `no adapter_config.json in the adapter directory "/home/op/secret-models/x" (ENOENT: open '/srv/m/model.safetensors')`;
  const failed = await post(s.base, '/v1/chat/completions', chatReq);
  assert.equal(failed.status, 503);
  assert.equal(failed.json.error.code, 'model_load_failed');
  assert.match(failed.json.error.message, /no adapter_config\.json/);
  assert.ok(!/secret-models|\/srv\//.test(failed.json.error.message), failed.json.error.message);
  s.state.error = undefined;
  attachScheduler(s.state, model, s.opts, s.metrics);
  const h2 = await fetch(`${s.base}/health`);
  assert.equal(h2.status, 200);
  const m = await (await fetch(`${main.base}/metrics`)).text();
  for (const name of ['quench_requests_total', 'quench_generated_tokens_total', 'quench_queue_depth', 'quench_step_seconds_bucket', 'quench_batch_size_bucket', 'quench_discarded_forwards_total']) assert.ok(m.includes(name), name);
  // discarded forwards: what an adaptive canvas costs beyond a fixed one that decodes the same
  // answer (this random fixture never says that 16 positions fit: one discarded probe, then 32)
  const discarded = async () => (await main.metrics.discarded.get()).values[0]?.value ?? 0;
  const d0 = await discarded();
  const fixed = await main.client.chat.completions.create({ ...chatReq, canvas: 'fixed' } as never);
  const d1 = await discarded();
  const adaptive = await main.client.chat.completions.create(chatReq);
  const d2 = await discarded();
  assert.equal(d1, d0, 'a fixed canvas discards nothing');
  assert.equal(adaptive.choices[0].message.content, fixed.choices[0].message.content);
  const usage = (r: typeof fixed) => (r.usage as unknown as { forward_passes: number }).forward_passes;
  assert.equal(d2 - d1, usage(adaptive) - usage(fixed));
  assert.equal(d2 - d1, 1);
});

/** `quench serve` as its own process, ready; a long request running in it (and `more` queued). */
async function servingChild(extra: string[] = [], more = 0) {
  const child = spawn(process.execPath, ['bin/quench.js', 'serve', '--model', dir, '--port', '0', '--threads', '1', ...extra], {
    env: { ...process.env, QUENCH_CACHE: CACHE, QUENCH_API_KEY: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // ('close': after the exit and the last of its stderr)
  const out = { child, log: '', exited: new Promise<number | null>((r) => child.on('close', (code) => r(code))) };
  child.stderr.on('data', (d) => (out.log += d));
  // (--port 0: a free port, which the log names)
  for (let i = 0; i < 200 && !/listening on http:\/\/127\.0\.0\.1:\d+/.test(out.log); i++) await new Promise((r) => setTimeout(r, 50));
  const base = `http://127.0.0.1:${/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out.log)?.[1]}`;
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${base}/health`)).status === 200) break;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  // (a process that exits mid-request fails the fetch: kept as the value, not an unhandled rejection)
  const ask = () => fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...chatReq, max_tokens: 192, policy: 'low_confidence' }) }).catch((e: Error) => e);
  const pending = ask();
  for (let i = 0; i < more; i++) void ask();
  await new Promise((r) => setTimeout(r, 150));
  // (the same object: its log keeps growing)
  return Object.assign(out, { pending });
}

test('quench serve: SIGTERM lets the running request finish, then exits 0; past --drain-timeout, or at a second signal, it exits 1', async () => {
  const a = await servingChild();
  a.child.kill('SIGTERM');
  const res = await a.pending;
  assert.ok(res instanceof Response, String(res));
  assert.equal(res.status, 200, a.log);
  const body = (await res.json()) as any;
  assert.equal(body.object, 'chat.completion');
  assert.equal(await a.exited, 0, a.log);
  // (192 one-token steps, 8 more requests queued behind, outlast 50 ms)
  const b = await servingChild(['--drain-timeout', '0.05'], 8);
  b.child.kill('SIGTERM');
  assert.equal(await b.exited, 1, b.log);
  assert.match(b.log, /still draining after 0.05 s/);
  assert.ok(!((await b.pending) instanceof Response && (await b.pending as Response).ok), 'the request was cut');
  // a copy of the signal within a second (npx forwards the terminal's Ctrl-C) still drains
  const c = await servingChild();
  c.child.kill('SIGINT');
  await new Promise((r) => setTimeout(r, 10));
  c.child.kill('SIGINT');
  assert.equal(await c.exited, 0, c.log);
  assert.ok((await c.pending) instanceof Response);
  // a second signal later exits at once (40 queued requests outlast the wait)
  const d = await servingChild([], 40);
  d.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1200));
  d.child.kill('SIGTERM');
  assert.equal(await d.exited, 1, d.log);
  assert.match(d.log, /SIGTERM again: exiting without waiting/);
  // a drain timeout that no timer can hold is refused at the start
  assert.throws(() => execFileSync(process.execPath, ['bin/quench.js', 'serve', '--drain-timeout', '30s'], { stdio: 'pipe' }), /not a number of seconds/);
});

test('reasoning_effort presets: each sets its policy, explicit fields and the operator\'s other defaults stand', async () => {
  const { generationOptions, PRESETS } = await import('../src/server/fields.ts');
  assert.equal(generationOptions({ reasoning_effort: 'high' }, {}).threshold, 0.99);
  // no effort named: nothing set here, the model's file or the engine's defaults (medium's values) decide
  assert.equal(generationOptions({}, {}).threshold, undefined);
  assert.equal(generationOptions({ reasoning_effort: 'medium' }, {}).threshold, 0.9);
  // guidance runs without a cache: a preset's cache steps aside, a named one stays (and gets its 400 later)
  assert.equal(generationOptions({ reasoning_effort: 'high', cfg_scale: 1 }, {}).cache, undefined);
  assert.equal(generationOptions({ realtime: true, cfg_scale: 1 }, {}).cache, undefined);
  assert.equal(generationOptions({ reasoning_effort: 'high', cfg_scale: 1, cache: 'prefix' }, {}).cache, 'prefix');
  const guided = await post(main.base, '/v1/chat/completions', { ...chatReq, reasoning_effort: 'high', cfg_scale: 1, max_tokens: 8 });
  assert.equal(guided.status, 200, guided.text);
  assert.equal(generationOptions({ realtime: true }, {}).cache, 'dual', 'realtime is instant');
  assert.equal(generationOptions({ reasoning_effort: 'high', threshold: 0.5, cache: 'none' }, {}).threshold, 0.5);
  assert.equal(generationOptions({ reasoning_effort: 'high', threshold: 0.5, cache: 'none' }, {}).cache, 'none');
  assert.equal(generationOptions({ reasoning_effort: 'low' }, { blockLength: 16, canvas: 'fixed' }).blockLength, 16);
  assert.equal(generationOptions({ reasoning_effort: 'low' }, { blockLength: 16, canvas: 'fixed' }).canvas, 'fixed');
  assert.equal(generationOptions({ hold_ends: true, separate_twins: true }, {}).holdEnds, true);
  assert.equal(generationOptions({ hold_ends: true, separate_twins: true }, {}).separateTwins, true);
  assert.equal(generationOptions({ in_order: true }, {}).inOrder, true);
  // token editing: the fields reach the decoder; out of range or without editing -> 400 naming the field
  assert.equal(generationOptions({ editing_threshold: 0.5, max_post_steps: 4 }, {}).editingThreshold, 0.5);
  assert.equal(generationOptions({ editing_threshold: 0.5, max_post_steps: 4 }, {}).maxPostSteps, 4);
  const edited = await post(main.base, '/v1/chat/completions', { ...chatReq, editing_threshold: 0.5, max_tokens: 8 });
  assert.equal(edited.status, 200, edited.text);
  // Prophet's early commit: the field reaches the decoder (null: off); 0 or below -> 400
  assert.equal(generationOptions({ early_commit: 5 }, {}).earlyCommit, 5);
  assert.equal(generationOptions({ early_commit: null }, {}).earlyCommit, null);
  const early = await post(main.base, '/v1/chat/completions', { ...chatReq, early_commit: 5, max_tokens: 8 });
  assert.equal(early.status, 200, early.text);
  for (const [body, param] of [[{ editing_threshold: 1.5 }, 'editing_threshold'], [{ max_post_steps: 4 }, 'max_post_steps'], [{ early_commit: 0 }, 'early_commit'], [{ early_commit: 'yes' }, 'early_commit']] as const) {
    const bad = await post(main.base, '/v1/chat/completions', { ...chatReq, ...body, max_tokens: 8 });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(JSON.parse(bad.text).error.param, param, bad.text);
  }
  for (const effort of Object.keys(PRESETS)) {
    const r = await main.client.chat.completions.create({ ...chatReq, max_tokens: 12, reasoning_effort: effort } as never);
    assert.ok(r.choices[0].finish_reason === 'length' || r.choices[0].finish_reason === 'stop', effort);
  }
  // OpenAI's other efforts map onto the presets; null is no effort
  for (const [effort, preset] of [['none', 'instant'], ['minimal', 'instant'], ['xhigh', 'high'], ['max', 'high']] as const) {
    assert.deepEqual(generationOptions({ reasoning_effort: effort }, {}), generationOptions({ reasoning_effort: preset }, {}), effort);
    const r = await post(main.base, '/v1/chat/completions', { ...chatReq, max_tokens: 8, reasoning_effort: effort });
    assert.equal(r.status, 200, r.text);
  }
  assert.equal(generationOptions({ reasoning_effort: null }, {}).threshold, undefined);
});

test('OpenAI request shapes: null for unset, token-id prompt lists, the prompt counted once in usage; fields quench cannot honour are a 400', async () => {
  // null is "unset" on the fields OpenAI declares nullable
  const nulls = await post(main.base, '/v1/chat/completions', { ...chatReq, n: null, stream: null, user: null, reasoning_effort: null, parallel_tool_calls: null, max_tokens: 8 });
  assert.equal(nulls.status, 200, nulls.text);
  const nullc = await post(main.base, '/v1/completions', { model: model.id, prompt: 'The cat', max_tokens: 8, echo: null, best_of: null, n: null });
  assert.equal(nullc.status, 200, nullc.text);
  // a list of token-id prompts: one job each, as for a list of strings
  const ids = [model.codec.encodePrompt('The cat'), model.codec.encodePrompt('A dog')];
  const lists = await post(main.base, '/v1/completions', { model: model.id, prompt: ids, max_tokens: 8, temperature: 0 });
  assert.equal(lists.status, 200, lists.text);
  assert.equal(lists.json.choices.length, 2);
  const one = await post(main.base, '/v1/completions', { model: model.id, prompt: ids[1], max_tokens: 8, temperature: 0 });
  assert.equal(lists.json.choices[1].text, one.json.choices[0].text);
  // usage: the prompt once, whatever n (as OpenAI and vLLM count it)
  const n1 = await post(main.base, '/v1/completions', { model: model.id, prompt: 'The cat', max_tokens: 4 });
  const n3 = await post(main.base, '/v1/completions', { model: model.id, prompt: 'The cat', max_tokens: 4, n: 3 });
  assert.equal(n3.json.usage.prompt_tokens, n1.json.usage.prompt_tokens);
  assert.equal(lists.json.usage.prompt_tokens, ids[0].length + ids[1].length);
  for (const [path, body, param] of [
    ['/v1/completions', { model: model.id, prompt: 'The cat', max_tokens: 4, echo: true, logprobs: 2 }, 'echo'],
    ['/v1/chat/completions', { ...chatReq, functions: [{ name: 'f', parameters: {} }] }, 'functions'],
    ['/v1/chat/completions', { ...chatReq, function_call: 'auto' }, 'function_call'],
    ['/v1/chat/completions', { ...chatReq, modalities: ['text', 'audio'], audio: { voice: 'alloy', format: 'wav' } }, 'audio'],
    ['/v1/chat/completions', { ...chatReq, modalities: ['audio'] }, 'modalities'],
    ['/v1/chat/completions', { ...chatReq, web_search_options: {} }, 'web_search_options'],
  ] as const) {
    const r = await post(main.base, path, body);
    assert.equal(r.status, 400, `${param}: ${r.text}`);
    assert.equal(r.json.error.param, param);
  }
  const text = await post(main.base, '/v1/chat/completions', { ...chatReq, modalities: ['text'], max_tokens: 4 });
  assert.equal(text.status, 200, text.text);
  // a prompt of the wrong shape: the error says what is wrong with it
  for (const [prompt, re] of [
    [5, /^prompt must be string,array$/],
    [[], /^prompt must NOT have fewer than 1 items$/],
    [['a', 3], /^prompt\[1\] is a token id where prompt\[0\] is a string/],
    [[[1, 2], 3], /^prompt\[1\] is a token id where prompt\[0\] is a token-id list/],
    [[[1, 'x']], /^prompt\[0\]\[1\] must be integer$/],
    [[[]], /^prompt\[0\] must NOT have fewer than 1 items$/],
    [Array(65).fill('hi'), /^prompt holds 65 prompts; at most 64 in one request$/],
  ] as const) {
    const r = await post(main.base, '/v1/completions', { model: model.id, prompt, max_tokens: 4 });
    assert.equal(r.status, 400, r.text);
    assert.match(r.json.error.message, re, JSON.stringify(prompt).slice(0, 40));
    assert.match(r.json.error.param, /^prompt/);
  }
  // (a long token-id list is one prompt, not a list of prompts)
  const long = await post(main.base, '/v1/completions', { model: model.id, prompt: Array(70).fill(ids[0][0]), max_tokens: 2 });
  assert.equal(long.status, 200, long.text);
});

test('streamed final text stops at a stop string even when the last token runs past it', async () => {
  const { FinalTextTracker } = await import('../src/server/stream.ts');
  const { generate } = await import('../src/decode/generation.ts');
  const { scriptedModel, prefer } = await import('./mock.ts');
  const pieces: Record<number, string> = { 4: 'Hi', 5: ' there', 6: '.\nBye', 7: ' now' };
  const decode = (ids: number[]) => ids.map((i) => pieces[i] ?? '').join('');
  const answer = [4, 5, 6, 7];
  const m = scriptedModel(16, (p) => (p - 1 < answer.length ? prefer(16, answer[p - 1], 9) : prefer(16, 2, 9)));
  const tracker = new FinalTextTracker(decode, ['\n']);
  let streamed = '';
  const r = await generate(m, [3], { maxTokens: 8, canvas: 'fixed', stopStrings: ['\n'], detokenize: decode, onStep: (e) => (streamed += tracker.step(e)) });
  streamed += tracker.finish(r.text ?? decode(r.tokens));
  assert.equal(r.text, 'Hi there.');
  assert.equal(streamed, r.text);
});

test('a model id with a slash (a pulled Hub model, owner/name): listed, retrieved by id, accepted in requests', async () => {
  const s = await start({ modelId: 'quench-test/llada-tiny' });
  const auth = { authorization: `Bearer ${KEY}` };
  const one = await fetch(`${s.base}/v1/models/quench-test/llada-tiny`, { headers: auth });
  assert.equal(one.status, 200);
  assert.equal((await one.json()).id, 'quench-test/llada-tiny');
  assert.equal((await fetch(`${s.base}/v1/models/quench-test/other`, { headers: auth })).status, 404);
  assert.equal((await fetch(`${s.base}/v1/models/quench-test`, { headers: auth })).status, 404);
  const list = await s.client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ['quench-test/llada-tiny']);
  const r = await post(s.base, '/v1/chat/completions', { ...chatReq, model: 'quench-test/llada-tiny', max_tokens: 4 });
  assert.equal(r.status, 200);
});

test('response_format json_object / json_schema: every answer is one JSON object (or a valid prefix cut by max_tokens), streamed the same', async () => {
  let whole = 0;
  for (let seed = 0; seed < 6; seed++) {
    const req = { ...chatReq, seed, temperature: seed === 0 ? 0 : 1, max_tokens: 48, response_format: { type: 'json_object' as const } };
    const r = await main.client.chat.completions.create(req);
    const c = r.choices[0];
    const text = c.message.content ?? '';
    assert.ok(text.startsWith('{'), JSON.stringify(text));
    if (c.finish_reason === 'stop') {
      const v = JSON.parse(text);
      assert.ok(v && typeof v === 'object' && !Array.isArray(v));
      whole++;
    } else assert.equal(c.finish_reason, 'length');
    // the stream says the same
    let streamed = '';
    for await (const ch of await main.client.chat.completions.create({ ...req, stream: true })) streamed += ch.choices[0]?.delta?.content ?? '';
    assert.equal(streamed, text);
  }
  assert.ok(whole >= 1, 'some answers complete');
  // json_schema: the answer fits the schema (or is cut by max_tokens); keywords outside the subset -> 400 naming them
  const schema = { type: 'object', properties: { ok: { type: 'boolean' }, n: { enum: [1, 2] } }, required: ['ok', 'n'], additionalProperties: false };
  const js = await main.client.chat.completions.create({ ...chatReq, max_tokens: 32, response_format: { type: 'json_schema', json_schema: { name: 'x', schema, strict: true } } });
  const jt = js.choices[0].message.content ?? '';
  if (js.choices[0].finish_reason === 'stop') {
    const v = JSON.parse(jt);
    assert.deepEqual(Object.keys(v), ['ok', 'n']);
    assert.ok(typeof v.ok === 'boolean' && [1, 2].includes(v.n), jt);
  } else assert.ok(jt.startsWith('{"ok":'), jt);
  let jsStreamed = '';
  for await (const ch of await main.client.chat.completions.create({ ...chatReq, max_tokens: 32, stream: true, response_format: { type: 'json_schema', json_schema: { name: 'x', schema, strict: true } } }))
    jsStreamed += ch.choices[0]?.delta?.content ?? '';
  assert.equal(jsStreamed, jt);
  const bad = await post(main.base, '/v1/chat/completions', { ...chatReq, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'string', pattern: 'x+' } } } } } });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /properties\.a: "pattern" is not supported/);
  // JSON mode is a chat feature (a completions prompt may be echoed in front of the object)
  const comp = await post(main.base, '/v1/completions', { model: model.id, prompt: 'x', max_tokens: 4, response_format: { type: 'json_object' } });
  assert.equal(comp.status, 400);
  assert.equal(comp.json.error.param, 'response_format');
});

test('prefix cache: a second chat sharing the system message reports its cached prompt tokens (usage, Responses, /metrics); a bidirectional model reports none', async () => {
  const { model: ar } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 256 });
  const s = await start({}, ar);
  const system = { role: 'system' as const, content: 'You answer in one word. '.repeat(6) };
  const ask = (content: string) => s.client.chat.completions.create({ model: ar.id, messages: [system, { role: 'user', content }], temperature: 0, max_tokens: 4 });
  const first = await ask('Hello there.');
  assert.equal((first.usage as any).prompt_tokens_details.cached_tokens, 0);
  const second = await ask('Goodbye now.');
  const cached = (second.usage as any).prompt_tokens_details.cached_tokens;
  assert.ok(cached >= 16 && cached < second.usage!.prompt_tokens, `cached ${cached} of ${second.usage!.prompt_tokens}`);
  const metrics = await (await fetch(`${s.base}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
  assert.match(metrics, new RegExp(`quench_prompt_tokens_cached_total ${cached}\\b`));
  const resp = await s.client.responses.create({ model: ar.id, instructions: system.content, input: 'Goodbye now.', max_output_tokens: 4, temperature: 0 });
  assert.ok(resp.usage!.input_tokens_details.cached_tokens >= 16);
  await ar.close();
  const bidir = await main.client.chat.completions.create({ ...chatReq, messages: [system, { role: 'user', content: 'Hello there.' }] });
  await main.client.chat.completions.create({ ...chatReq, messages: [system, { role: 'user', content: 'Hello again.' }] }).then((r) => assert.equal((r.usage as any).prompt_tokens_details.cached_tokens, 0));
  assert.equal((bidir.usage as any).prompt_tokens_details.cached_tokens, 0);
});

test('several models in one server (LoRA modules): each request runs on the model it names; one loading or failed answers 503 alone', async () => {
  const { model: second } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 128 });
  await assert.rejects(buildServer({ model: null, scheduler: null, extra: new Map([['default', { parent: 'm' }]]) }), /is the main model's/);
  const state: ServingState = { model: null, scheduler: null, extra: new Map([['second', { parent: model.id }], ['broken', { parent: model.id }]]) };
  const opts: ServerOptions = { maxBatch: 4, maxQueue: 64, host: '127.0.0.1', defaults: { maxTokens: 8 } };
  const { app, metrics } = await buildServer(state, opts);
  attachScheduler(state, model, opts, metrics);
  await app.listen({ host: '127.0.0.1', port: 0 });
  servers.push(app);
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const ask = (name: string, path = '/v1/chat/completions') =>
    post(base, path, path === '/v1/responses' ? { model: name, input: 'What is 2 + 2?', temperature: 0, max_output_tokens: 8 } : { ...chatReq, model: name, max_tokens: 8 });
  const loading = await ask('second');
  assert.equal(loading.status, 503);
  assert.equal(loading.json.error.code, 'model_loading');
  assert.equal(loading.headers.get('retry-after'), '1');
  assert.equal((await ask(model.id)).status, 200, 'the main model serves meanwhile');
  assert.deepEqual(await (await fetch(`${base}/health`)).json(), { status: 'ok', model: model.id, models: { second: 'loading', broken: 'loading' } });
  attachScheduler(state, second, opts, metrics, 'second');
  state.extra!.get('broken')!.error = 'weights at /srv/secret/model.safetensors are truncated';
  const { generate } = await import('../src/decode/generation.ts');
  const prompt = second.codec.encodeChat(chatReq.messages);
  const solo = await generate(second, prompt, { maxTokens: 8, temperature: 0, stopTokens: second.special.stop });
  const want = { tokens: solo.tokens, text: second.codec.decode(solo.tokens, true) };
  const r = await ask('second');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.model, 'second');
  assert.equal(r.json.choices[0].message.content, want.text, "the second model's own answer");
  assert.equal(r.json.usage.completion_tokens, want.tokens.length);
  const main1 = await ask(model.id);
  assert.equal(main1.json.model, model.id);
  assert.notEqual(main1.json.choices[0].message.content, r.json.choices[0].message.content);
  const resp = await ask('second', '/v1/responses');
  assert.equal(resp.status, 200, resp.text);
  assert.equal(resp.json.model, 'second');
  assert.equal(resp.json.output[0].content[0].text, want.text);
  assert.deepEqual((await (await fetch(`${base}/health`)).json()).models, { second: 'ok', broken: 'error' });
  const broken = await ask('broken');
  assert.equal(broken.status, 503);
  assert.equal(broken.json.error.code, 'model_load_failed');
  assert.match(broken.json.error.message, /^model broken failed to load: weights at <path> are truncated$/);
  assert.equal(broken.headers.get('retry-after'), null);
  const models = (await (await fetch(`${base}/v1/models`)).json()) as { data: { id: string; parent: string | null; max_model_len?: number }[] };
  assert.deepEqual(models.data.map((m) => [m.id, m.parent, m.max_model_len]), [[model.id, null, 256], ['second', model.id, 128], ['broken', model.id, undefined]]);
  assert.equal((await (await fetch(`${base}/v1/models/second`)).json()).parent, model.id);
  await second.close();
});

test('completions echo with logprobs (causal models): the prompt tokens scored first, as the engine scores them; max_tokens 0 scores the prompt only', async () => {
  const { model: causal } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 128 });
  const s = await start({ modelId: 'causal' }, causal);
  const prompt = 'The cat sat on the mat';
  const ids = causal.codec.encodePrompt(prompt);
  const { generate } = await import('../src/decode/generation.ts');
  const want = await generate(causal, ids, { maxTokens: 4, temperature: 0, stopTokens: causal.special.stop, promptLogprobs: 2, logprobs: 2 });
  const r = await post(s.base, '/v1/completions', { model: 'causal', prompt, max_tokens: 4, temperature: 0, echo: true, logprobs: 2 });
  assert.equal(r.status, 200, r.text);
  const c = r.json.choices[0];
  const answer = causal.codec.decode(want.tokens, true);
  assert.equal(c.text, prompt + answer);
  const lp = c.logprobs;
  assert.equal(lp.tokens.length, ids.length + want.tokens.length);
  assert.deepEqual(lp.tokens.slice(0, ids.length), ids.map((t) => causal.codec.decode([t], false)));
  assert.equal(lp.token_logprobs[0], null);
  assert.equal(lp.top_logprobs[0], null);
  for (let p = 1; p < ids.length; p++) {
    assert.ok(Math.abs(lp.token_logprobs[p] - want.promptLogprobs![p]!.logprob) < 1e-4, `prompt token ${p}`);
    // (two alternatives may decode to one text: OpenAI's shape keys them by text)
    const alts = Object.keys(lp.top_logprobs[p]).length;
    assert.ok(alts >= 1 && alts <= 2);
  }
  want.logprobs!.forEach((x, k) => assert.ok(Math.abs(lp.token_logprobs[ids.length + k] - x.logprob) < 1e-4, `answer token ${k}`));
  // offsets: each token's place in the text, the prompt's from 0, the answer's after the prompt
  assert.equal(lp.text_offset[0], 0);
  assert.equal(lp.text_offset[ids.length], prompt.length);
  for (let k = 1; k < lp.text_offset.length; k++) assert.ok(lp.text_offset[k] >= lp.text_offset[k - 1]);
  // max_tokens 0: the prompt alone, scored
  const only = await post(s.base, '/v1/completions', { model: 'causal', prompt, max_tokens: 0, echo: true, logprobs: 1 });
  assert.equal(only.status, 200, only.text);
  assert.equal(only.json.choices[0].text, prompt);
  assert.equal(only.json.choices[0].logprobs.tokens.length, ids.length);
  assert.equal(only.json.choices[0].logprobs.token_logprobs[0], null);
  for (let p = 1; p < ids.length; p++) assert.ok(Math.abs(only.json.choices[0].logprobs.token_logprobs[p] - lp.token_logprobs[p]) < 1e-4);
  assert.equal(only.json.usage.completion_tokens, 0);
  for (const [body, param, re] of [
    [{ max_tokens: 0 }, 'max_tokens', /needs echo: true/],
    [{ max_tokens: 4, echo: true, logprobs: 1, cache: 'none' }, 'echo', /not with cache "none"/],
  ] as const) {
    const bad = await post(s.base, '/v1/completions', { model: 'causal', prompt, ...body });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.json.error.param, param);
    assert.match(bad.json.error.message, re);
  }
  // streamed: the echo and its tokens' scores in one chunk once the prompt is read, then the
  // answer's, together as the whole response has them
  const st = await post(s.base, '/v1/completions', { model: 'causal', prompt, max_tokens: 4, temperature: 0, echo: true, logprobs: 2, stream: true, prompt_logprobs: 1 });
  assert.equal(st.status, 200, st.text);
  const chunks = sseEvents(st.text).filter((x) => x !== '[DONE]').map((x) => JSON.parse(x).choices[0]);
  assert.equal(chunks[0].text, prompt);
  assert.deepEqual(chunks[0].logprobs.tokens, lp.tokens.slice(0, ids.length));
  chunks[0].logprobs.token_logprobs.forEach((x: number | null, p: number) => assert.ok(p === 0 ? x === null : Math.abs(x! - lp.token_logprobs[p]) < 1e-4));
  assert.equal(chunks[0].prompt_logprobs.length, ids.length);
  assert.equal(chunks.map((x) => x.text).join(''), c.text);
  const streamedTokens = chunks.flatMap((x) => x.logprobs?.tokens ?? []);
  assert.deepEqual(streamedTokens, lp.tokens);
  assert.deepEqual(chunks.flatMap((x) => x.logprobs?.text_offset ?? []), lp.text_offset);
  // FIM takes no echo: its logprobs are the answer's alone
  const fim = await post(s.base, '/v1/fim/completions', { model: 'causal', prompt, max_tokens: 4, temperature: 0, echo: true, logprobs: 1 });
  assert.equal(fim.status, 200, fim.text);
  assert.equal(fim.json.choices[0].logprobs.tokens.length, 4);
  // a diffusion model: refused, saying why
  const d = await post(main.base, '/v1/completions', { model: model.id, prompt, max_tokens: 4, echo: true, logprobs: 1 });
  assert.equal(d.status, 400);
  assert.match(d.json.error.message, /only a causal model/);
  await causal.close();
});

test('/tokenize and /detokenize (vLLM): a prompt or chat messages encoded as requests are, ids back to text; bad input is a 400', async () => {
  const text = 'The cat sat. 12 + 30';
  const t = await post(main.base, '/tokenize', { model: model.id, prompt: text, return_token_strs: true });
  assert.equal(t.status, 200, t.text);
  assert.deepEqual(t.json.tokens, model.codec.encodePrompt(text));
  assert.equal(t.json.count, t.json.tokens.length);
  assert.equal(t.json.max_model_len, 256);
  // (the vocabulary's pieces: byte-level, a space as Ġ)
  assert.deepEqual(t.json.token_strs, t.json.tokens.map((id: number) => model.codec.tokenPiece(id)));
  assert.ok(t.json.token_strs.some((p: string) => p.startsWith('Ġ')), t.json.token_strs.join('|'));
  const bare = await post(main.base, '/tokenize', { prompt: text, add_special_tokens: false });
  assert.deepEqual(bare.json.tokens, model.codec.encode(text, false));
  // chat messages: the count a chat request reports as its prompt tokens
  const chat = await post(main.base, '/tokenize', { messages: chatReq.messages });
  assert.equal(chat.status, 200, chat.text);
  const answered = await post(main.base, '/v1/chat/completions', { ...chatReq, max_tokens: 2 });
  assert.equal(chat.json.count, answered.json.usage.prompt_tokens);
  const d = await post(main.base, '/detokenize', { model: model.id, tokens: t.json.tokens });
  assert.equal(d.status, 200, d.text);
  assert.equal(d.json.prompt, model.codec.decode(t.json.tokens, false));
  assert.ok(d.json.prompt.endsWith(text));
  for (const [path, body, status, param] of [
    ['/tokenize', {}, 400, 'prompt'],
    ['/tokenize', { prompt: 'a', messages: chatReq.messages }, 400, 'messages'],
    ['/tokenize', { messages: chatReq.messages, add_generation_prompt: false }, 400, 'add_generation_prompt'],
    ['/tokenize', { prompt: 'a', model: 'nope' }, 404, 'model'],
    ['/detokenize', { tokens: [1, 1e6] }, 400, 'tokens[1]'],
    ['/detokenize', { tokens: [-1] }, 400, 'tokens[0]'],
    ['/detokenize', {}, 400, 'tokens'],
  ] as const) {
    const r = await post(main.base, path, body);
    assert.equal(r.status, status, `${path} ${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.param, param, r.text);
  }
  // (the key guards them as every inference route)
  assert.equal((await fetch(`${main.base}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'a' }) })).status, 401);
});

test("vLLM's prompt_logprobs (causal models): each prompt token's score, rank and alternatives on completions and chat; refused where it cannot be given", async () => {
  const { model: causal } = await fixtureModel({ arch: 'llama', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 128 });
  const s = await start({ modelId: 'causal' }, causal);
  const { generate } = await import('../src/decode/generation.ts');
  const prompt = 'The cat sat on the mat';
  const ids = causal.codec.encodePrompt(prompt);
  const want = await generate(causal, ids, { maxTokens: 2, temperature: 0, stopTokens: causal.special.stop, promptLogprobs: 3 });
  const r = await post(s.base, '/v1/completions', { model: 'causal', prompt, max_tokens: 2, temperature: 0, prompt_logprobs: 3 });
  assert.equal(r.status, 200, r.text);
  const pl = r.json.choices[0].prompt_logprobs;
  assert.equal(pl.length, ids.length);
  assert.equal(pl[0], null);
  for (let p = 1; p < ids.length; p++) {
    const entry = pl[p][String(ids[p])];
    assert.ok(Math.abs(entry.logprob - want.promptLogprobs![p]!.logprob) < 1e-4, `token ${p}`);
    // rank: 1 + the tokens the model finds likelier (independently: the alternatives above it)
    const above = want.promptLogprobs![p]!.top.filter((a) => a.logprob > entry.logprob).length;
    if (above < 3) assert.equal(entry.rank, above + 1, `rank of token ${p}`);
    else assert.ok(entry.rank > 3);
    assert.equal(entry.decoded_token, causal.codec.decode([ids[p]], false));
    assert.ok(Object.keys(pl[p]).length >= 3 && Object.keys(pl[p]).length <= 4);
  }
  assert.equal(r.json.choices[0].logprobs, null, 'the answer\'s log-probabilities only when asked for');
  // chat: the templated prompt's tokens
  const c = await post(s.base, '/v1/chat/completions', { model: 'causal', messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 2, prompt_logprobs: 0 });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.json.choices[0].prompt_logprobs.length, c.json.usage.prompt_tokens);
  assert.ok(c.json.choices[0].prompt_logprobs.slice(1).every((x: object) => Object.keys(x).length === 1));
  // streamed: a chunk of their own, after the assistant role's
  const cs = await post(s.base, '/v1/chat/completions', { model: 'causal', messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 2, prompt_logprobs: 0, stream: true });
  const withPrompt = sseEvents(cs.text).filter((x) => x !== '[DONE]').map((x) => JSON.parse(x).choices[0]).filter((x) => x.prompt_logprobs);
  assert.equal(withPrompt.length, 1);
  assert.deepEqual(withPrompt[0].prompt_logprobs, c.json.choices[0].prompt_logprobs);
  const dif = await post(s.base, '/v1/completions', { model: 'causal', prompt, max_tokens: 2, prompt_logprobs: 1, stream: true, diffusing: true });
  assert.equal(dif.status, 400);
  assert.equal(dif.json.error.param, 'diffusing');
  for (const [base, body, re] of [
    [s.base, { model: 'causal', prompt, max_tokens: 2, prompt_logprobs: 17 }, /at most 16/],
    [main.base, { model: model.id, prompt, max_tokens: 2, prompt_logprobs: 2 }, /need a causal model/],
  ] as const) {
    const bad = await post(base, '/v1/completions', body);
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.json.error.param, 'prompt_logprobs');
    assert.match(bad.json.error.message, re);
  }
  await causal.close();
});
