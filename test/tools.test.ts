// Function calling: the call constraints against an independent checker, reading calls back
// from text, the prompt for templates with and without tool support, streaming that never
// shows a call as content, and the server end to end with the official client.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { compileSchema, schemaComplete, schemaFeed, type SchemaState } from '../src/decode/json-schema.ts';
import { callsConstraint, MAX_CALLS } from '../src/decode/tool-calls.ts';
import { mulberry32, fixtureTokenizer } from '../src/formats/fixtures.ts';
import { TextCodec } from '../src/formats/tokenizer.ts';
import { OptionError } from '../src/errors.ts';
import { answerCalls, chatMessages, encodeToolChat, parseTaggedCalls, textToolMessages, toolRequest, type ToolRequest } from '../src/server/tools.ts';
import { beforeMarker, FinalTextTracker } from '../src/server/stream.ts';
import type { StepEvent } from '../src/decode/generation.ts';
import type { Model } from '../src/models/registry.ts';
import { fixtureModel } from './helpers.ts';
import { startServer } from './serve.ts';
import { prefer, scriptedModel } from './mock.ts';
import { schemaWalk } from './schema-walk.ts';

const enc = (s: string) => Buffer.from(s, 'utf8');
const FNS = {
  get: { type: 'object', properties: {} },
  get_weather: { type: 'object', properties: { city: { type: 'string' }, unit: { enum: ['c', 'f'] } }, required: ['city', 'unit'], additionalProperties: false },
  add: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' }, tags: { type: 'array', items: { enum: ['x', 'y'] } } } },
} as const;
const compiled = Object.entries(FNS).map(([name, s]) => ({ name, parameters: compileSchema(s) }));

/** Independent check: a call of one of FNS whose arguments have its schema's keys in order and value types. */
function isCall(v: unknown): boolean {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  const o = v as { name?: unknown; arguments?: unknown };
  if (JSON.stringify(Object.keys(o)) !== '["name","arguments"]' || typeof o.name !== 'string' || !(o.name in FNS)) return false;
  return fitsArgs(o.name as keyof typeof FNS, o.arguments);
}
function fitsArgs(name: keyof typeof FNS, args: unknown): boolean {
  if (!args || typeof args !== 'object' || Array.isArray(args)) return false;
  const a = args as Record<string, unknown>;
  const keys = Object.keys(FNS[name].properties);
  if (JSON.stringify(Object.keys(a)) !== JSON.stringify(keys)) return false;
  if (name === 'get_weather') return typeof a.city === 'string' && (a.unit === 'c' || a.unit === 'f');
  if (name === 'add') return Number.isInteger(a.a) && Number.isInteger(a.b) && Array.isArray(a.tags) && a.tags.every((t) => t === 'x' || t === 'y');
  return true;
}

/** Random byte walks through a recognizer; the texts that end in a whole document. */
function walks(start: () => SchemaState, seed: number, count: number): string[] {
  const r = mulberry32(seed);
  return Array.from({ length: count }, () => schemaWalk(start(), r, { maxBytes: 400, closing: '"}],0', lean: 0.6 }))
    .filter((w) => w.complete)
    .map((w) => w.text);
}

test('call constraint: walks end in calls of offered functions with fitting arguments; lists are non-empty', () => {
  for (const many of [false, true]) {
    const c = callsConstraint(compiled, many, []);
    const done = walks(() => c.start() as SchemaState, many ? 2 : 1, 300);
    assert.ok(done.length > 150, `walks that ended (${done.length})`);
    const seen = new Set<string>();
    for (const text of done) {
      const v = JSON.parse(text);
      const calls = many ? v : [v];
      if (many) assert.ok(Array.isArray(v) && v.length >= 1, text);
      for (const call of calls) {
        assert.ok(isCall(call), text);
        seen.add(call.name);
      }
    }
    // every function is reachable, also one whose name is a prefix of another's
    assert.deepEqual([...seen].sort(), ['add', 'get', 'get_weather']);
  }
  const one = callsConstraint(compiled, false, []);
  const list = callsConstraint(compiled, true, []);
  const accepts = (c: typeof one, t: string) => {
    const s = schemaFeed(c.start() as SchemaState, enc(t));
    return !!s && schemaComplete(s);
  };
  assert.ok(accepts(one, '{"name":"get","arguments":{}}'));
  assert.ok(accepts(one, '{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}'));
  assert.ok(accepts(list, '[{"name":"get","arguments":{}},{"name":"add","arguments":{"a":1,"b":-2,"tags":["y"]}}]'));
  for (const t of ['[]', '{"name":"nope","arguments":{}}', '{"name":"get","arguments":{"x":1}}', '{"name":"get_weather","arguments":{"city":"Oslo","unit":"k"}}', '{"arguments":{},"name":"get"}'])
    assert.ok(!accepts(list, t) && !accepts(one, t), t);
  // at most MAX_CALLS calls in a list
  const call = '{"name":"get","arguments":{}}';
  assert.ok(accepts(list, `[${Array(MAX_CALLS).fill(call).join(',')}]`));
  assert.ok(!accepts(list, `[${Array(MAX_CALLS + 1).fill(call).join(',')}]`));
  // a named function: a call of that one function
  const named = callsConstraint([compiled[1]], false, []);
  assert.ok(accepts(named, '{"name":"get_weather","arguments":{"city":"Rome","unit":"f"}}'));
  assert.ok(!accepts(named, '{"city":"Rome","unit":"f"}') && !accepts(named, '{"name":"get","arguments":{}}'));
});

const NAMES = new Set(['get', 'get_weather']);
test('calls read back from <tool_call> text; anything that is not a clean answer of calls stays text', () => {
  const p = parseTaggedCalls('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>{"name":"get","parameters":{}}</tool_call>\n', NAMES);
  assert.ok(p);
  assert.equal(p.content, 'Let me look.\n');
  assert.deepEqual(p.calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]), [['get_weather', { city: 'Oslo' }], ['get', {}]]);
  assert.ok(p.calls.every((c) => /^call_[0-9a-f]{24}$/.test(c.id) && c.type === 'function'));
  assert.notEqual(p.calls[0].id, p.calls[1].id);
  // the last block may lack its close
  assert.equal(parseTaggedCalls('<tool_call>{"name":"get","arguments":{}}', NAMES)?.calls.length, 1);
  for (const t of ['no calls here', '<tool_call>{"name":"nope","arguments":{}}</tool_call>', '<tool_call>{"name":"get","arguments":[1]}</tool_call>', '<tool_call>{not json}</tool_call>', '<tool_call>{"name":"get","arguments":{}}</tool_call> and then more text'])
    assert.equal(parseTaggedCalls(t, NAMES), null, t);
  const req = toolRequest({ tools: [{ type: 'function', function: { name: 'get' } }, { type: 'function', function: { name: 'get_weather', parameters: FNS.get_weather } }] })!;
  const shape = (a: ReturnType<typeof answerCalls>) => ({ content: a.content, calls: a.calls?.map((c) => [c.function.name, c.function.arguments]) ?? null, finish: a.finish });
  assert.deepEqual(shape(answerCalls(req, 'plain answer', 'stop')), { content: 'plain answer', calls: null, finish: 'stop' });
  assert.deepEqual(shape(answerCalls(req, ' \n<tool_call>{"name":"get","arguments":{}}</tool_call>', 'stop')), { content: null, calls: [['get', '{}']], finish: 'tool_calls' });
  // arguments come back as written (a 24-digit integer stays one; spacing kept)
  assert.deepEqual(shape(answerCalls(req, '<tool_call>{"name": "get_weather", "arguments": {"city": "x", "n": 123456789012345678901234}}</tool_call>', 'stop')).calls, [['get_weather', '{"city": "x", "n": 123456789012345678901234}']]);
  // an unclosed block is a call only when the model ended its turn there, not when max_tokens cut it
  assert.equal(answerCalls(req, '<tool_call>{"name":"get","arguments":{}}', 'stop').calls?.length, 1);
  assert.deepEqual(shape(answerCalls(req, '<tool_call>{"name":"get","arguments":{}}', 'length')), { content: '<tool_call>{"name":"get","arguments":{}}', calls: null, finish: 'length' });
  // parallel_tool_calls false: one call at most
  const two = '<tool_call>{"name":"get","arguments":{}}</tool_call><tool_call>{"name":"get_weather","arguments":{"city":"a","unit":"c"}}</tool_call>';
  assert.equal(answerCalls(req, two, 'stop').calls?.length, 2);
  assert.equal(answerCalls({ ...req, parallel: false }, two, 'stop').calls?.length, 1);
  // constrained answers: a whole document; a list cut by max_tokens keeps its whole calls
  const required = { ...req, choice: { kind: 'required' as const } };
  assert.deepEqual(shape(answerCalls(required, '[{"name":"get","arguments":{}}]', 'stop')), { content: null, calls: [['get', '{}']], finish: 'tool_calls' });
  assert.deepEqual(shape(answerCalls(required, '[{"name":"get","arguments":{}},{"name":"get_weather","argu', 'length')), { content: null, calls: [['get', '{}']], finish: 'length' });
  assert.deepEqual(shape(answerCalls(required, '[{"name":"get","argu', 'length')), { content: '[{"name":"get","argu', calls: null, finish: 'length' });
  const named: ToolRequest = { ...req, choice: { kind: 'named', name: 'get_weather' } };
  assert.deepEqual(shape(answerCalls(named, '{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}', 'stop')).calls, [['get_weather', '{"city":"Oslo","unit":"c"}']]);
  assert.equal(answerCalls(named, '{"name":"get_weather","arguments":{"ci', 'length').calls, null);
});

test('tools and tool_choice are validated with the field named', () => {
  const f = (name: string, extra: object = {}) => ({ type: 'function', function: { name, ...extra } });
  const refuse = (body: Record<string, unknown>, param: RegExp) =>
    assert.throws(() => toolRequest(body), (e: unknown) => e instanceof OptionError && param.test(e.param ?? ''), JSON.stringify(body));
  refuse({ tools: [{ type: 'retrieval' }] }, /^tools\[0\]$/);
  refuse({ tools: [f('has space')] }, /^tools\[0\]\.function\.name$/);
  refuse({ tools: [f('a'), f('a')] }, /^tools\[1\]\.function\.name$/);
  refuse({ tools: [f('a', { parameters: [] })] }, /parameters$/);
  refuse({ tools: [f('a')], tool_choice: { type: 'function', function: { name: 'b' } } }, /^tool_choice$/);
  refuse({ tool_choice: 'required' }, /^tool_choice$/);
  refuse({ tools: [f('a')], tool_choice: 'sometimes' }, /^tool_choice$/);
  refuse({ tools: Array.from({ length: 129 }, (_, i) => f(`f${i}`)) }, /^tools$/);
  assert.equal(toolRequest({}), null);
  assert.equal(toolRequest({ tools: [f('a')], tool_choice: 'none' }), null);
  assert.deepEqual(toolRequest({ tools: [f('a')] })?.choice, { kind: 'auto' });
  assert.equal(toolRequest({ tools: [f('a')], parallel_tool_calls: false })?.parallel, false);
  assert.throws(() => chatMessages([{ role: 'assistant', content: null, tool_calls: [{ id: 'x', type: 'function', function: { name: 'a', arguments: '{oops' } }] }]), /arguments must be JSON text/);
  assert.throws(() => chatMessages([{ role: 'tool', content: 'r' }]), /tool_call_id/);
  assert.throws(() => chatMessages([{ role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'a', arguments: '{}' } }] }]), /a tool call is/);
  // parameters {} is a function without arguments
  assert.deepEqual(toolRequest({ tools: [f('a', { parameters: {} })] })?.tools[0].function.parameters, { type: 'object', properties: {} });
});

// a chat template that writes tools and calls itself (the ChatML form of Qwen2.5-style models)
const TOOL_TEMPLATE =
  '{% if tools %}<|im_start|>system\nFunctions:\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}' +
  "{% for m in messages %}{% if m['role'] == 'tool' %}<|im_start|>user\n<tool_response>{{ m['content'] }}</tool_response><|im_end|>\n" +
  "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% endif %}<|im_end|>\n{% endif %}{% endfor %}" +
  '{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';

function codecWith(template: string | null): TextCodec {
  const t = fixtureTokenizer('dream');
  return new TextCodec(t.tokenizer, { ...t.config, chat_template: template ?? undefined });
}

const CONVERSATION = chatMessages([
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Weather in Oslo and Rome?' },
  { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo","unit":"c"}' } }, { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome","unit":"c"}' } }] },
  { role: 'tool', tool_call_id: 'call_1', content: '-3' },
  { role: 'tool', tool_call_id: 'call_2', content: '14' },
]);
const REQ = toolRequest({ tools: [{ type: 'function', function: { name: 'get_weather', description: 'Current temperature', parameters: FNS.get_weather } }] });

test('the prompt: a template with tool support gets tools and calls; one without gets them written as text', () => {
  const native = codecWith(TOOL_TEMPLATE);
  assert.deepEqual(native.toolSupport, { tools: true, toolCalls: true });
  const a = native.decode(encodeToolChat(native, CONVERSATION, REQ), false);
  // (the template's tojson writes Python's separators)
  assert.ok(a.includes('{"type": "function", "function": {"name": "get_weather", "description": "Current temperature", "parameters": {"type": "object"'), a);
  assert.ok(a.includes('<tool_call>get_weather {"city": "Oslo", "unit": "c"}</tool_call>'), a);
  assert.ok(a.includes('<tool_response>14</tool_response>'), a);

  const plain = codecWith(fixtureTokenizer('llada').config.chat_template as string);
  assert.deepEqual(plain.toolSupport, { tools: false, toolCalls: false });
  const msgs = textToolMessages(CONVERSATION);
  assert.deepEqual(msgs.map((m) => m.role), ['system', 'user', 'assistant', 'user']);
  assert.equal(msgs[2].content, '<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}\n</tool_call>\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Rome","unit":"c"}}\n</tool_call>');
  assert.equal(msgs[3].content, '<tool_response>\n-3\n</tool_response>\n<tool_response>\n14\n</tool_response>');
  const text = new TextDecoder().decode(new Uint8Array(encodeToolChat(plain, CONVERSATION, REQ).flatMap((id) => [...(plain.tokenBytes(id) ?? [])])));
  // the functions go into the (first) system message, after its own text
  assert.match(text, /Be brief\.\n\nFunctions you can call[^]*"name":"get_weather"/);
  // tool_choice none: no functions in the prompt, the conversation's calls still are
  const none = plain.decode(encodeToolChat(plain, CONVERSATION, null), false);
  assert.ok(!none.includes('Functions you can call') && none.includes('"city":"Rome"'), none);
  // no template at all: the plain transcript, the functions in its system line
  const bare = codecWith(null);
  assert.deepEqual(bare.toolSupport, { tools: false, toolCalls: false });
  assert.match(bare.decode(encodeToolChat(bare, CONVERSATION, REQ), false), /^system: Be brief\.\n\nFunctions you can call, one per line:\n\{"name":"get_weather"/);
  // a user turn that merely starts like a tool result is not merged with the results after it
  const lookalike = textToolMessages(chatMessages([{ role: 'user', content: '<tool_response> is a tag' }, { role: 'tool', tool_call_id: 'c', content: 'r' }]));
  assert.equal(lookalike.length, 2);
});

function event(draft: number[], finalized: number): StepEvent {
  return { step: 0, block: 0, committed: [], revoked: [], draft: Int32Array.from(draft), final: new Uint8Array(draft.length), finalized, done: false, stats: {} as StepEvent['stats'] };
}

test('streaming with tools: text before a call streams; the call (and any start of its tag) never does', () => {
  assert.equal(beforeMarker('abc<tool_call>x', '<tool_call>'), 3);
  assert.equal(beforeMarker('abc<tool', '<tool_call>'), 3);
  assert.equal(beforeMarker('abc<', '<tool_call>'), 3);
  assert.equal(beforeMarker('abc', '<tool_call>'), 3);
  // a character-per-token decode: token i is text[i]
  const text = 'Sure.<tool_call>{"name":"get","arguments":{}}</tool_call>';
  const ids = [...text].map((ch) => ch.charCodeAt(0));
  const decode = (xs: number[]) => String.fromCharCode(...xs);
  const t = new FinalTextTracker(decode, [], { marker: '<tool_call>' });
  let streamed = '';
  for (let n = 1; n <= ids.length; n++) streamed += t.step(event(ids, n));
  assert.equal(streamed, 'Sure.');
  assert.equal(t.finish('Sure.'), '');
  // only whitespace before the call: nothing is content
  const ws = new FinalTextTracker(decode, [], { marker: '<tool_call>' });
  const ids2 = [...'\n <tool_call>'].map((ch) => ch.charCodeAt(0));
  let s2 = '';
  for (let n = 1; n <= ids2.length; n++) s2 += ws.step(event(ids2, n));
  assert.equal(s2, '');
  // everything held (a constrained call)
  const all = new FinalTextTracker(decode, [], 'all');
  assert.equal(all.step(event(ids, ids.length)), '');
});

// ---------------------------------------------------------------- the server

const { model } = await fixtureModel({ arch: 'llada', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 1024 });
const servers: { close(): Promise<unknown> }[] = [];
after(async () => {
  for (const s of servers) await s.close();
  await model.close();
});

const start = (m: Model) => startServer(m, servers, { maxTokens: 48 });

const TOOLS = [
  { type: 'function' as const, function: { name: 'get_weather', description: 'Current temperature', parameters: { type: 'object', properties: { unit: { enum: ['c', 'f'] }, days: { enum: [1, 2, 3] } }, required: ['unit', 'days'], additionalProperties: false } } },
  { type: 'function' as const, function: { name: 'ping', parameters: { type: 'object', properties: {} } } },
];
const user = [{ role: 'user' as const, content: 'What is the weather?' }];
type FnCall = { id: string; type: 'function'; function: { name: string; arguments: string } };

test('server: tool_choice "required" and named give calls of the offered functions, streamed the same', async () => {
  const { client, base } = await start(model);
  const answered = new Map<string, number>();
  for (let seed = 0; seed < 4; seed++) {
    for (const tool_choice of ['required', { type: 'function', function: { name: 'get_weather' } }] as const) {
      const req = { model: model.id, messages: user, tools: TOOLS, tool_choice, parallel_tool_calls: seed % 2 === 0, temperature: seed === 0 ? 0 : 1, seed, max_tokens: 200 };
      const r = await client.chat.completions.create(req);
      const c = r.choices[0];
      if (c.finish_reason === 'length' && !c.message.tool_calls) continue; // cut inside the first call: returned as text
      const label = `${typeof tool_choice === 'string' ? tool_choice : 'named'} parallel=${req.parallel_tool_calls}`;
      answered.set(label, (answered.get(label) ?? 0) + 1);
      assert.equal(c.finish_reason, c.message.tool_calls && c.finish_reason === 'length' ? 'length' : 'tool_calls');
      assert.equal(c.message.content, null);
      const got = c.message.tool_calls as unknown as FnCall[];
      assert.ok(got.length >= 1 && (req.parallel_tool_calls || got.length === 1));
      for (const call of got) {
        assert.ok(call.type === 'function' && call.id.startsWith('call_'));
        const args = JSON.parse(call.function.arguments);
        if (typeof tool_choice === 'object') assert.equal(call.function.name, 'get_weather');
        if (call.function.name === 'get_weather') assert.ok(['c', 'f'].includes(args.unit) && [1, 2, 3].includes(args.days), call.function.arguments);
        else assert.deepEqual(args, {});
      }
      // the stream: no content, the same calls (ids differ per response)
      let content = '';
      const streamed: { name: string; args: string }[] = [];
      let finish: string | null = null;
      let first: unknown;
      for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
        const d = ch.choices[0]?.delta;
        if (first === undefined && d) first = d.content;
        content += d?.content ?? '';
        for (const tc of d?.tool_calls ?? []) streamed[tc.index] = { name: tc.function?.name ?? '', args: tc.function?.arguments ?? '' };
        finish = ch.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(content, '');
      assert.equal(first, null, 'the first chunk says content null');
      assert.equal(finish, c.finish_reason);
      assert.deepEqual(streamed, got.map((x) => ({ name: x.function.name, args: x.function.arguments })));
    }
  }
  // every kind of forced call was answered with calls at least once
  assert.deepEqual([...answered.keys()].sort(), ['named parallel=false', 'named parallel=true', 'required parallel=false', 'required parallel=true']);
  // bad combinations answer 400 naming the field; the server keeps serving
  const post = (body: object) => fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: user, ...body }) }).then(async (r) => ({ status: r.status, json: await r.json() }));
  for (const [body, param] of [
    [{ tools: TOOLS, tool_choice: 'required', response_format: { type: 'json_object' } }, 'tool_choice'],
    [{ tools: TOOLS, stream: true, diffusing: true }, 'diffusing'],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'string', pattern: 'x' } } } } }], tool_choice: 'required' }, 'tools[0].function.parameters'],
  ] as const) {
    const r = await post(body);
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.equal(r.json.error.param, param);
  }
  const comp = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', tools: TOOLS }) });
  assert.equal(comp.status, 400);
  const ok = await client.chat.completions.create({ model: model.id, messages: user, max_tokens: 4 });
  assert.equal(ok.choices.length, 1);
});

test('server: tool_choice "auto" reads calls out of the answer, and a conversation with calls and results goes on', async () => {
  // a scripted model that answers with text and a call, in the form the prompt asks for
  const answer = 'Checking.<tool_call>{"name": "get_weather", "arguments": {"unit": "c", "days": 2}}</tool_call>';
  const target = model.codec.encode(answer, false);
  const stop = model.special.stop[0];
  const vocab = model.args.vocabSize;
  const convo = [...user, { role: 'assistant' as const, content: null, tool_calls: [{ id: 'call_a', type: 'function' as const, function: { name: 'ping', arguments: '{}' } }] }, { role: 'tool' as const, tool_call_id: 'call_a', content: 'pong' }];
  let promptLen = encodeToolChat(model.codec, chatMessages(convo), toolRequest({ tools: TOOLS })).length;
  const scripted = scriptedModel(vocab, (pos) => prefer(vocab, pos - promptLen < target.length ? target[pos - promptLen] : stop, 12));
  const { client } = await start({ ...model, forward: scripted.forward });
  const req = { model: model.id, messages: convo, tools: TOOLS, temperature: 0, max_tokens: 160 };
  const r = await client.chat.completions.create(req);
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.content, 'Checking.');
  assert.deepEqual((c.message.tool_calls as unknown as FnCall[]).map((x) => [x.function.name, JSON.parse(x.function.arguments)]), [['get_weather', { unit: 'c', days: 2 }]]);
  let content = '';
  let name = '';
  for await (const ch of await client.chat.completions.create({ ...req, stream: true })) {
    content += ch.choices[0]?.delta?.content ?? '';
    name += ch.choices[0]?.delta?.tool_calls?.[0]?.function?.name ?? '';
  }
  assert.equal(content, 'Checking.');
  assert.equal(name, 'get_weather');
  // tool_choice none: the functions are not in the prompt, and the same answer is plain text
  promptLen = encodeToolChat(model.codec, chatMessages(convo), null).length;
  const none = await client.chat.completions.create({ ...req, tool_choice: 'none' });
  assert.equal(none.choices[0].message.tool_calls, undefined);
  assert.equal(none.choices[0].message.content, answer);
  assert.equal(none.choices[0].finish_reason, 'stop');
});
