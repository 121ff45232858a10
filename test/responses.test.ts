// The Responses API: each request decodes as its chat equivalent (the oracle: the chat
// endpoint on the same model and seed), streamed as the API's ordered semantic events, with
// function calls as output items and errors naming the Responses fields.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chatBodyOf, inputMessages, responsesParam } from '../src/server/responses.ts';
import { page, ResponseStore } from '../src/server/response-store.ts';
import { chatMessages, encodeToolChat, toolRequest } from '../src/server/tools.ts';
import type { Model } from '../src/models/registry.ts';
import { fixtureModel } from './helpers.ts';
import { startServer } from './serve.ts';
import { prefer, scriptedModel } from './mock.ts';

const { model } = await fixtureModel({ arch: 'llada', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 1024 });
const servers: { close(): Promise<unknown> }[] = [];
after(async () => {
  for (const s of servers) await s.close();
  await model.close();
});

const start = (m: Model) => startServer(m, servers, { maxTokens: 32 });
const main = await start(model);

type Ev = { type: string; sequence_number: number; [k: string]: any };
async function events(body: object): Promise<Ev[]> {
  const out: Ev[] = [];
  const stream = (await main.client.responses.create({ ...body, stream: true } as never)) as unknown as AsyncIterable<Ev>;
  for await (const ev of stream) out.push(ev);
  return out;
}

test('responses: text answers equal the chat endpoint\'s; instructions are the system message; the stream is the ordered events of the same answer', async () => {
  for (const [seed, temperature] of [[1, 0], [2, 1]] as const) {
    const input = [{ role: 'user' as const, content: 'What is 2 + 2?' }];
    const r = await main.client.responses.create({ model: model.id, instructions: 'Be brief.', input, temperature, seed, max_output_tokens: 24 } as never);
    const chat = await main.client.chat.completions.create({ model: model.id, messages: [{ role: 'system', content: 'Be brief.' }, ...input], temperature, seed, max_tokens: 24 } as never);
    const text = chat.choices[0].message.content ?? '';
    assert.equal(r.object, 'response');
    assert.ok(r.id.startsWith('resp_'));
    assert.equal(r.output_text, text);
    assert.equal(r.output.length, 1);
    const msg = r.output[0] as { type: string; role: string; content: { type: string; text: string }[]; status: string };
    assert.equal(msg.type, 'message');
    assert.equal(msg.role, 'assistant');
    assert.equal(r.status, chat.choices[0].finish_reason === 'length' ? 'incomplete' : 'completed');
    if (r.status === 'incomplete') assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(r.usage?.output_tokens, chat.usage?.completion_tokens);
    assert.equal(r.usage?.input_tokens, chat.usage?.prompt_tokens);

    const evs = await events({ model: model.id, instructions: 'Be brief.', input, temperature, seed, max_output_tokens: 24 });
    assert.deepEqual(evs.map((e) => e.sequence_number), evs.map((_, i) => i));
    const types = evs.map((e) => e.type).filter((t, i, a) => t !== 'response.output_text.delta' || a[i - 1] !== t);
    assert.deepEqual(types, ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added', ...(text ? ['response.output_text.delta'] : []), 'response.output_text.done', 'response.content_part.done', 'response.output_item.done', r.status === 'incomplete' ? 'response.incomplete' : 'response.completed']);
    const deltas = evs.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(deltas, text);
    const last = evs[evs.length - 1].response;
    assert.equal(last.output[0].content[0].text, text);
  }
});

test('responses: function tools, tool_choice and text.format decode as their chat equivalents; calls are output items', async () => {
  const tools = [{ type: 'function' as const, name: 'get_weather', description: 'Temperature', parameters: { type: 'object', properties: { unit: { enum: ['c', 'f'] } }, required: ['unit'], additionalProperties: false }, strict: true }];
  const req = { model: model.id, input: 'Weather?', tools, tool_choice: { type: 'function' as const, name: 'get_weather' }, temperature: 0, max_output_tokens: 64 };
  const r = await main.client.responses.create(req as never);
  const calls = r.output.filter((o) => o.type === 'function_call') as { call_id: string; name: string; arguments: string; id: string }[];
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.ok(['c', 'f'].includes(JSON.parse(calls[0].arguments).unit));
  assert.ok(calls[0].call_id.startsWith('call_') && calls[0].id.startsWith('fc_'));
  const chat = await main.client.chat.completions.create({ model: model.id, messages: [{ role: 'user', content: 'Weather?' }], tools: tools.map(({ name, description, parameters }) => ({ type: 'function' as const, function: { name, description, parameters } })), tool_choice: { type: 'function', function: { name: 'get_weather' } }, temperature: 0, max_tokens: 64 });
  assert.equal((chat.choices[0].message.tool_calls![0] as { function: { arguments: string } }).function.arguments, calls[0].arguments);
  // streamed: the call's events, and the same arguments
  const evs = await events(req);
  const done = evs.find((e) => e.type === 'response.function_call_arguments.done')!;
  assert.equal(done.arguments, calls[0].arguments);
  assert.equal(done.name, 'get_weather');
  assert.ok(!evs.some((e) => e.type === 'response.output_text.delta'), 'a call is never text');
  assert.equal(evs[evs.length - 1].type, 'response.completed');
  // text.format json_schema
  const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false };
  const js = await main.client.responses.create({ model: model.id, input: 'ok?', text: { format: { type: 'json_schema', name: 'x', schema, strict: true } }, max_output_tokens: 16, temperature: 0 } as never);
  assert.equal(js.status, 'completed');
  assert.match(js.output_text, /^\{"ok":(true|false)\}$/);
});

test('responses: input items (messages, function calls and their outputs) become the conversation; auto calls come back as items', async () => {
  const items = [
    { role: 'user', content: [{ type: 'input_text', text: 'Weather in Oslo?' }] },
    { type: 'function_call', call_id: 'call_1', name: 'ping', arguments: '{}' },
    { type: 'function_call_output', call_id: 'call_1', output: 'pong' },
  ];
  const msgs = inputMessages({ input: items, instructions: 'sys' });
  assert.deepEqual(msgs.map((m) => m.role), ['system', 'user', 'assistant', 'tool']);
  assert.equal(msgs[2].tool_calls?.[0].function.name, 'ping');
  assert.equal(msgs[3].tool_call_id, 'call_1');
  // a scripted model answering with a call, as the prompt asks
  const tools = [{ type: 'function', name: 'ping', parameters: { type: 'object', properties: {} } }];
  const chat = chatBodyOf({ input: items, tools });
  const promptLen = encodeToolChat(model.codec, chatMessages(chat.messages as { role: string }[]), toolRequest(chat)).length;
  const target = model.codec.encode('<tool_call>{"name": "ping", "arguments": {}}</tool_call>', false);
  const vocab = model.args.vocabSize;
  const scripted = scriptedModel(vocab, (pos) => prefer(vocab, pos - promptLen < target.length ? target[pos - promptLen] : model.special.stop[0], 12));
  const s = await start({ ...model, forward: scripted.forward });
  const r = await s.client.responses.create({ model: model.id, input: items, tools, temperature: 0, max_output_tokens: 96 } as never);
  assert.deepEqual(r.output.map((o) => o.type), ['function_call']);
  assert.equal((r.output[0] as { arguments: string }).arguments, '{}');
  assert.equal(r.output_text, '');
});

test('responses: what is not supported gets a 400 naming the Responses field; the server keeps serving', async () => {
  const post = (body: object) => fetch(`${main.base}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, json: await r.json() }));
  for (const [body, param] of [
    [{ input: 'x', conversation: 'conv_1' }, 'conversation'],
    [{ input: [{ id: 'm1', role: 'user', content: 'a' }, { id: 'm1', role: 'user', content: 'b' }] }, 'input[1].id'],
    [{ input: 'x', background: true }, 'background'],
    [{ input: 'x', tools: [{ type: 'web_search' }] }, 'tools[0]'],
    [{ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'x' }] }] }, 'input[0].content[0]'],
    [{ input: [{ type: 'reasoning', summary: [] }] }, 'input[0].type'],
    [{ input: 'x', text: { format: { type: 'json_schema', name: 'x', schema: { type: 'object', properties: { a: { oneOf: [] } } } } } }, 'text.format'],
    [{ input: 'x', max_output_tokens: 5000 }, 'max_output_tokens'],
    [{ input: 'x', reasoning: { effort: 'extreme' } }, 'reasoning.effort'],
    [{ input: 'x', tools: [{ type: 'function', name: 'bad name' }] }, 'tools[0].name'],
    [{ input: 'x', include: ['file_search_call.results'] }, 'include[0]'],
    [{ input: 'x', truncation: 'middle' }, 'truncation'],
    [{ input: 'x', top_logprobs: 2 }, 'top_logprobs'],
    [{}, 'input'],
  ] as const) {
    const r = await post(body);
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.equal(r.json.error.param, param, JSON.stringify(r.json));
  }
  assert.equal(responsesParam('messages[3].content[0]'), 'input');
  const ok = await main.client.responses.create({ model: model.id, input: 'hi', max_output_tokens: 4 } as never);
  assert.equal(ok.object, 'response');
  // what agents send by default: encrypted reasoning to include (there is none), truncation auto,
  // OpenAI's efforts beyond high
  const agent = await post({ model: model.id, input: 'hi', max_output_tokens: 4, store: false, include: ['reasoning.encrypted_content'], truncation: 'auto', reasoning: { effort: 'xhigh' } });
  assert.equal(agent.status, 200, JSON.stringify(agent.json));
  assert.ok(!agent.json.output.some((o: { type: string }) => o.type === 'reasoning'));
});

test('responses: include message.output_text.logprobs gives the chat endpoint\'s log-probabilities, streamed with their deltas', async () => {
  const input = [{ role: 'user' as const, content: 'What is 2 + 2?' }];
  const req = { model: model.id, input, temperature: 0, max_output_tokens: 16, include: ['message.output_text.logprobs'], top_logprobs: 2 };
  const r = await main.client.responses.create(req as never);
  const lp = (r.output[0] as unknown as { content: { logprobs: { token: string; logprob: number; top_logprobs: unknown[] }[] }[] }).content[0].logprobs;
  const chat = await main.client.chat.completions.create({ model: model.id, messages: input, temperature: 0, max_tokens: 16, logprobs: true, top_logprobs: 2 });
  const want = chat.choices[0].logprobs!.content!;
  assert.equal(lp.length, want.length);
  assert.ok(lp.length > 0);
  lp.forEach((e, i) => {
    assert.equal(e.token, want[i].token);
    assert.ok(Math.abs(e.logprob - want[i].logprob) < 1e-6);
    assert.equal(e.top_logprobs.length, want[i].top_logprobs.length);
  });
  const evs = await events(req);
  const streamed = evs.filter((e) => e.type === 'response.output_text.delta').flatMap((e) => e.logprobs);
  const done = evs.find((e) => e.type === 'response.output_text.done')!;
  assert.deepEqual(streamed, done.logprobs);
  assert.deepEqual(done.logprobs.map((e: { token: string }) => e.token), lp.map((e) => e.token));
});

test('responses: stored by default; previous_response_id continues the conversation as the chat endpoint reads it whole; GET, input items, DELETE', async () => {
  const c = main.client;
  const r1 = await c.responses.create({ model: model.id, instructions: 'Be brief.', input: 'What is 2 + 2?', temperature: 0, max_output_tokens: 12 } as never);
  assert.equal((r1 as unknown as { store: boolean }).store, true);
  assert.deepEqual(await c.responses.retrieve(r1.id), r1);
  // the follow-up: the first turn and its answer, then the new input; the old instructions are not carried over
  for (const instructions of [undefined, 'Answer in words.']) {
    const r2 = await c.responses.create({ model: model.id, previous_response_id: r1.id, ...(instructions ? { instructions } : {}), input: 'And 3 + 3?', temperature: 0, max_output_tokens: 12 } as never);
    assert.equal(r2.previous_response_id, r1.id);
    const messages = [...(instructions ? [{ role: 'system', content: instructions }] : []), { role: 'user', content: 'What is 2 + 2?' }, { role: 'assistant', content: r1.output_text }, { role: 'user', content: 'And 3 + 3?' }];
    const chat = await c.chat.completions.create({ model: model.id, messages, temperature: 0, max_tokens: 12 } as never);
    assert.equal(r2.output_text, chat.choices[0].message.content ?? '');
    assert.equal(r2.usage?.input_tokens, chat.usage?.prompt_tokens);
    // a chain: the third turn reads all three
    const r3 = await c.responses.create({ model: model.id, previous_response_id: r2.id, input: 'Thanks.', temperature: 0, max_output_tokens: 8 } as never);
    const chat3 = await c.chat.completions.create({ model: model.id, messages: [...messages.filter((m) => m.role !== 'system'), { role: 'assistant', content: r2.output_text }, { role: 'user', content: 'Thanks.' }], temperature: 0, max_tokens: 8 } as never);
    assert.equal(r3.output_text, chat3.choices[0].message.content ?? '');
  }
  // input items: the request's input, each with an id; paged
  const items = await c.responses.inputItems.list(r1.id);
  assert.equal(items.data.length, 1);
  const item = items.data[0] as { type: string; role: string; content: { type: string; text: string }[]; id: string };
  assert.deepEqual([item.type, item.role, item.content[0].type, item.content[0].text], ['message', 'user', 'input_text', 'What is 2 + 2?']);
  const many = await c.responses.create({ model: model.id, input: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }], max_output_tokens: 4 } as never);
  const get = (q: string) => fetch(`${main.base}/v1/responses/${many.id}/input_items${q}`).then(async (r) => ({ status: r.status, json: await r.json() }));
  const p1 = (await get('?order=asc&limit=2')).json;
  assert.deepEqual(p1.data.map((x: { content: { text: string }[] }) => x.content[0].text), ['a', 'b']);
  assert.equal(p1.has_more, true);
  const p2 = (await get(`?order=asc&limit=2&after=${p1.last_id}`)).json;
  assert.deepEqual(p2.data.map((x: { content: { text: string }[] }) => x.content[0].text), ['c']);
  assert.equal(p2.has_more, false);
  assert.deepEqual((await get('')).json.data.map((x: { content: { text: string }[] }) => x.content[0].text), ['c', 'b', 'a'], 'newest first by default');
  for (const q of ['?limit=0', '?limit=101', '?order=up', '?after=msg_nope']) assert.equal((await get(q)).status, 400, q);
  // streamed responses are stored too: GET returns the final event's response
  const evs = await events({ model: model.id, input: 'Hello', max_output_tokens: 8, temperature: 0 });
  const final = evs[evs.length - 1].response;
  const { output_text: _text, ...got } = await c.responses.retrieve(final.id); // (the client adds output_text)
  assert.deepEqual(got, final);
  // store: false is not kept; an unknown previous response is a 400 naming the field; the server keeps serving
  const off = await c.responses.create({ model: model.id, input: 'x', store: false, max_output_tokens: 4 } as never);
  assert.equal((off as unknown as { store: boolean }).store, false);
  await assert.rejects(c.responses.retrieve(off.id), (e: { status?: number }) => e.status === 404);
  await assert.rejects(c.responses.create({ model: model.id, input: 'x', previous_response_id: off.id } as never), (e: { status?: number; error?: { param?: string; code?: string } }) => e.status === 400 && e.error?.param === 'previous_response_id' && e.error?.code === 'previous_response_not_found');
  // a follow-up that resends an item of the conversation it continues is refused (it would be read twice)
  const withIds = await c.responses.create({ model: model.id, input: [{ id: 'msg_a1', type: 'message', role: 'user', content: 'Hi' }], max_output_tokens: 4 } as never);
  for (const resent of ['msg_a1', (withIds.output[0] as { id: string }).id])
    await assert.rejects(c.responses.create({ model: model.id, previous_response_id: withIds.id, input: [{ id: resent, type: 'message', role: 'user', content: 'Hi' }] } as never), (e: { status?: number; error?: { param?: string } }) => e.status === 400 && e.error?.param === 'input[0].id');
  // a child still continues after its parent is deleted (each entry holds its whole conversation)
  const child = await c.responses.create({ model: model.id, previous_response_id: withIds.id, input: 'More.', max_output_tokens: 4 } as never);
  assert.equal((await fetch(`${main.base}/v1/responses/${withIds.id}`, { method: 'DELETE', headers: { 'content-type': 'application/json' } })).status, 200, 'DELETE with a JSON content type and no body (as clients send it)');
  const grandchild = await c.responses.create({ model: model.id, previous_response_id: child.id, input: 'Again.', max_output_tokens: 4 } as never);
  assert.equal(grandchild.previous_response_id, child.id);
  // DELETE
  const del = await fetch(`${main.base}/v1/responses/${r1.id}`, { method: 'DELETE' }).then((r) => r.json());
  assert.deepEqual(del, { id: r1.id, object: 'response.deleted', deleted: true });
  await assert.rejects(c.responses.retrieve(r1.id), (e: { status?: number }) => e.status === 404);
  assert.equal((await fetch(`${main.base}/v1/responses/${r1.id}`, { method: 'DELETE' })).status, 404);
  await assert.rejects(c.responses.create({ model: model.id, input: 'x', previous_response_id: r1.id } as never), (e: { status?: number }) => e.status === 400);
});

test('responses: a function call answered with previous_response_id and its output reads as the chat conversation with the call and the tool message', async () => {
  const c = main.client;
  const tools = [{ type: 'function' as const, name: 'get_weather', parameters: { type: 'object', properties: { unit: { enum: ['c', 'f'] } }, required: ['unit'], additionalProperties: false }, strict: true }];
  const r1 = await c.responses.create({ model: model.id, input: 'Weather?', tools, tool_choice: { type: 'function', name: 'get_weather' }, temperature: 0, max_output_tokens: 64 } as never);
  const call = r1.output.find((o) => o.type === 'function_call') as { call_id: string; name: string; arguments: string };
  assert.ok(call);
  const r2 = await c.responses.create({ model: model.id, previous_response_id: r1.id, input: [{ type: 'function_call_output', call_id: call.call_id, output: '15 C' }], tools, tool_choice: 'none', temperature: 0, max_output_tokens: 12 } as never);
  const chat = await c.chat.completions.create({
    model: model.id,
    messages: [
      { role: 'user', content: 'Weather?' },
      { role: 'assistant', content: null, tool_calls: [{ id: call.call_id, type: 'function', function: { name: call.name, arguments: call.arguments } }] },
      { role: 'tool', tool_call_id: call.call_id, content: '15 C' },
    ],
    tools: tools.map(({ name, parameters }) => ({ type: 'function' as const, function: { name, parameters } })),
    tool_choice: 'none',
    temperature: 0,
    max_tokens: 12,
  } as never);
  assert.equal(r2.output_text, chat.choices[0].message.content ?? '');
  assert.equal(r2.usage?.input_tokens, chat.usage?.prompt_tokens);
});

test('responses: the store is bounded (oldest first, by count and by bytes); a server that stores none says so', async () => {
  const entry = (n: number) => ({ response: { id: `r${n}` }, inputItems: [], conversation: ['x'.repeat(n)], itemIds: [] });
  const s = new ResponseStore({ maxResponses: 2, maxBytes: 1000 });
  for (const n of [1, 2, 3]) assert.ok(s.put(`r${n}`, entry(n)));
  assert.deepEqual(['r1', 'r2', 'r3'].map((k) => !!s.get(k)), [false, true, true]);
  assert.ok(s.put('big', entry(700)));
  assert.deepEqual(['r2', 'r3', 'big'].map((k) => !!s.get(k)), [false, true, true], 'bytes over the bound drop the oldest');
  assert.ok(s.bytes <= 1000 && s.size === 2);
  assert.equal(s.put('huge', entry(2000)), false, 'larger than the whole store');
  // an entry is a copy: editing what was put changes nothing stored
  const e = entry(4);
  s.put('r4', e);
  e.conversation.push('y');
  assert.deepEqual(s.get('r4')!.conversation, ['xxxx']);
  assert.ok(s.delete('r4') && !s.delete('r4'));
  assert.deepEqual(page([{ id: 'a' }, { id: 'b' }, { id: 'c' }], { limit: 1, after: 'b' }).data, [{ id: 'a' }]);
  assert.deepEqual(page([{ id: 'a' }, { id: 'b' }, { id: 'c' }], { limit: 5, after: 'a', order: 'asc' }).data, [{ id: 'b' }, { id: 'c' }]);
  // the continued conversation sits between the new instructions and the new input
  const chat = chatBodyOf({ instructions: 'sys', input: 'new' }, [{ role: 'user', content: 'old' }, { role: 'assistant', content: 'ans' }]);
  assert.deepEqual((chat.messages as { role: string; content: string }[]).map((m) => `${m.role}:${m.content}`), ['system:sys', 'user:old', 'assistant:ans', 'user:new']);
  // a response larger than the whole store is not kept, and says so
  const small = await startServer(model, servers, { maxTokens: 8 }, { responseStoreBytes: 200 });
  const big = await small.client.responses.create({ model: model.id, input: 'x'.repeat(300), max_output_tokens: 4 } as never);
  assert.equal((big as unknown as { store: boolean }).store, false);
  await assert.rejects(small.client.responses.retrieve(big.id), (e: { status?: number }) => e.status === 404);
  // a malformed URL gets the API's error envelope
  const badUrl = await fetch(`${main.base}/v1/responses/%E0%A4%A`);
  assert.equal(badUrl.status, 400);
  assert.equal((await badUrl.json()).error.type, 'invalid_request_error');
  const none = await startServer(model, servers, { maxTokens: 8 }, { responseStore: 0 });
  const r = await none.client.responses.create({ model: model.id, input: 'x', max_output_tokens: 4 } as never);
  assert.equal((r as unknown as { store: boolean }).store, false);
  await assert.rejects(none.client.responses.create({ model: model.id, input: 'x', previous_response_id: r.id } as never), (e: { status?: number; error?: { message?: string } }) => e.status === 400 && /--response-store 0/.test(e.error?.message ?? ''));
});
