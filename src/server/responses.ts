// The Responses API (POST /v1/responses): a request is turned into the equivalent chat request
// (input items -> messages, `instructions` -> the system message, function tools, `text.format`
// -> response_format, `reasoning.effort` -> the decoding presets) and decoded the same way; the
// answer comes back as output items (a message, function calls), streamed as the API's semantic
// events. Responses are stored (`store`, true by default) in the server's bounded in-memory
// store (response-store.ts), so a follow-up names its `previous_response_id` instead of
// resending the conversation; `conversation` objects and `background` runs are not supported.

import { randomBytes } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import type { GenerateResult, StepEvent, TokenLogprob } from '../decode/generation.ts';
import { withModelDefaults, type GenerateOptions } from '../decode/options.ts';
import { CancelledError, OptionError } from '../errors.ts';
import type { Model } from '../models/registry.ts';
import type { Scheduler } from '../engine/scheduler.ts';
import { toEnvelope } from './errors.ts';
import { generationOptions, rejectUnsupported, type Body } from './fields.ts';
import { logprobEntries, maxAlternatives, outputConstraint } from './output.ts';
import { abortOnClose, FinalTextTracker, startEventStream } from './stream.ts';
import { answerOf, chatMessages, encodeToolChat, holdFor, isObject, toolRequest, type ToolCall } from './tools.ts';
import type { ResponseStore } from './response-store.ts';

export interface ResponsesContext {
  /** the model a request names: 404 for one not served, 503 while it loads */
  ready(name: unknown): { id: string; model: Model; scheduler: Scheduler };
  defaults?: Partial<GenerateOptions>;
  store: ResponseStore;
}

// (OpenAI's efforts, as the chat field takes them: fields.ts EFFORTS)
const EFFORT_NAMES = ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', 'max'];
/** Responses fields with no chat counterpart, dropped once translated */
const RESPONSES_ONLY = ['input', 'instructions', 'max_output_tokens', 'text', 'reasoning', 'store', 'metadata', 'truncation', 'include', 'previous_response_id', 'background', 'conversation', 'prompt'];
/** chat fields that are not Responses fields: never carried over */
const CHAT_ONLY = ['messages', 'n', 'stop', 'stream_options', 'logprobs', 'top_logprobs', 'max_tokens', 'max_completion_tokens', 'response_format', 'diffusing', 'reasoning_effort'];

const bad = (param: string, message: string): never => {
  throw new OptionError(param, message);
};
const hex = (n: number) => randomBytes(n).toString('hex');

/** The text of a message's content: a string, or input_text / output_text parts. */
function contentText(content: unknown, at: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return bad(at, 'content is a string or a list of input_text parts');
  return content
    .map((p, j) => {
      if (!isObject(p) || !['input_text', 'output_text', 'text'].includes(p.type as string) || typeof p.text !== 'string')
        bad(`${at}[${j}]`, `content parts of type ${JSON.stringify(isObject(p) ? p.type : p)} are not supported; only input_text and output_text`);
      return (p as { text: string }).text;
    })
    .join('');
}

interface ChatMsg {
  role: string;
  content: string | null;
  tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
}

/** `instructions` as chat messages: the system message, or none. */
function instructionMessages(b: Body): ChatMsg[] {
  if (b.instructions === undefined || b.instructions === null) return [];
  if (typeof b.instructions !== 'string') bad('instructions', 'instructions must be a string');
  return b.instructions ? [{ role: 'system', content: b.instructions as string }] : [];
}

/** `input` (a string or a list of items) and `instructions` as chat messages. */
export function inputMessages(b: Body): ChatMsg[] {
  return [...instructionMessages(b), ...itemMessages(b)];
}

/** `input` (a string or a list of items) as chat messages. */
function itemMessages(b: Body): ChatMsg[] {
  const input = b.input;
  if (typeof input === 'string') return [{ role: 'user', content: input }];
  if (!Array.isArray(input) || input.length === 0) return bad('input', 'input is a string or a non-empty list of items');
  const out: ChatMsg[] = [];
  input.forEach((it, i) => {
    const at = `input[${i}]`;
    if (!isObject(it)) bad(at, 'an input item is an object');
    const item = it as Record<string, unknown>;
    const type = item.type ?? 'message';
    if (type === 'message') {
      if (!['user', 'assistant', 'system', 'developer'].includes(item.role as string)) bad(`${at}.role`, 'role is user, assistant, system or developer');
      out.push({ role: item.role === 'developer' ? 'system' : (item.role as string), content: contentText(item.content, `${at}.content`) });
    } else if (type === 'function_call') {
      for (const k of ['call_id', 'name', 'arguments']) if (typeof item[k] !== 'string') bad(`${at}.${k}`, `a function_call item needs ${k} (a string)`);
      try {
        JSON.parse(item.arguments as string);
      } catch {
        bad(`${at}.arguments`, 'arguments must be JSON text');
      }
      const call = { id: item.call_id as string, type: 'function' as const, function: { name: item.name as string, arguments: item.arguments as string } };
      // calls in a row belong to one assistant turn (after its text, if any)
      const last = out[out.length - 1];
      if (last && last.role === 'assistant') (last.tool_calls ??= []).push(call);
      else out.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if (type === 'function_call_output') {
      if (typeof item.call_id !== 'string') bad(`${at}.call_id`, 'a function_call_output item needs call_id (a string)');
      out.push({ role: 'tool', tool_call_id: item.call_id as string, content: contentText(item.output, `${at}.output`) });
    } else bad(`${at}.type`, `input items of type ${JSON.stringify(type)} are not supported (message, function_call, function_call_output)`);
  });
  return out;
}

/** A Responses request as the chat request that decodes the same way; `previous`: the stored
 *  conversation it continues (previous_response_id), put between the instructions and the input. */
export function chatBodyOf(b: Body, previous: unknown[] = []): Body {
  for (const [k, why] of [
    ['conversation', 'conversation objects are not supported: name previous_response_id, or send the whole conversation in input'],
    ['prompt', 'stored prompt templates are not supported'],
  ] as const)
    if (b[k] !== undefined && b[k] !== null) bad(k, why);
  if (b.background === true) bad('background', 'background responses are not supported');
  const include = Array.isArray(b.include) ? b.include : [];
  // (quench writes no reasoning items: there is no encrypted reasoning to include, as agents ask for)
  for (const [i, x] of include.entries()) if (x !== 'message.output_text.logprobs' && x !== 'reasoning.encrypted_content') bad(`include[${i}]`, `include ${JSON.stringify(x)} is not supported (only "message.output_text.logprobs"; "reasoning.encrypted_content" has nothing to add)`);
  // ("auto" drops the conversation's start when it overflows; quench does not cut a conversation:
  // one over the context is a 400 either way)
  if (b.truncation !== undefined && b.truncation !== null && b.truncation !== 'disabled' && b.truncation !== 'auto') bad('truncation', 'truncation is "disabled" or "auto" (a prompt over the context is a 400 under both)');
  const chat: Body = { ...b };
  for (const k of [...RESPONSES_ONLY, ...CHAT_ONLY]) delete chat[k];
  chat.messages = [...instructionMessages(b), ...previous, ...itemMessages(b)];
  if (b.max_output_tokens !== undefined && b.max_output_tokens !== null) chat.max_tokens = b.max_output_tokens;
  if (b.tools !== undefined && b.tools !== null) {
    if (!Array.isArray(b.tools)) bad('tools', 'tools must be a list');
    chat.tools = (b.tools as unknown[]).map((t, i) => {
      if (!isObject(t) || t.type !== 'function') return bad(`tools[${i}]`, `tools of type ${JSON.stringify(isObject(t) ? t.type : t)} are not supported; only function`);
      const fn: Record<string, unknown> = { name: t.name };
      if (t.description !== undefined && t.description !== null) fn.description = t.description;
      if (t.parameters !== undefined && t.parameters !== null) fn.parameters = t.parameters;
      return { type: 'function', function: fn };
    });
  }
  const tc = b.tool_choice;
  if (isObject(tc)) chat.tool_choice = tc.type === 'function' && typeof tc.name === 'string' ? { type: 'function', function: { name: tc.name } } : bad('tool_choice', 'tool_choice is "none", "auto", "required" or {"type": "function", "name": ...}');
  if (b.parallel_tool_calls === null) delete chat.parallel_tool_calls;
  const text = b.text;
  if (text !== undefined && text !== null) {
    if (!isObject(text)) bad('text', 'text is an object');
    const f = (text as { format?: Record<string, unknown> }).format;
    if (f !== undefined && f !== null) {
      if (f.type === 'json_schema') chat.response_format = { type: 'json_schema', json_schema: { name: f.name, schema: f.schema, strict: f.strict } };
      else if (f.type === 'json_object' || f.type === 'text') chat.response_format = { type: f.type };
      else bad('text.format', `text.format type ${JSON.stringify(f.type)} is not supported (text, json_object, json_schema)`);
    }
  }
  const r = b.reasoning;
  if (isObject(r) && r.effort !== undefined && r.effort !== null) {
    if (!(typeof r.effort === 'string' && EFFORT_NAMES.includes(r.effort))) bad('reasoning.effort', `reasoning.effort is one of ${EFFORT_NAMES.join(', ')}`);
    chat.reasoning_effort = r.effort;
  }
  return chat;
}

/** A chat field named in an error, as the Responses field it came from. */
export function responsesParam(param: string | null): string | null {
  if (param === null) return null;
  return param
    .replace(/^response_format/, 'text.format')
    .replace(/^max_tokens$/, 'max_output_tokens')
    .replace(/^reasoning_effort$/, 'reasoning.effort')
    .replace(/^messages(\[\d+\])?.*$/, 'input')
    .replace(/^(tools\[\d+\])\.function\./, '$1.')
    .replace(/^tool_choice\.function\./, 'tool_choice.');
}

/** POST /v1/responses. */
export async function createResponse(ctx: ResponsesContext, b: Body, reply: FastifyReply) {
  try {
    return await respond(ctx, b, reply);
  } catch (e) {
    // errors name the request's own fields
    if (e instanceof OptionError && e.param) {
      const renamed = new OptionError(responsesParam(e.param)!, e.message.replace(/\bmax_tokens\b/g, 'max_output_tokens'), e.code);
      throw renamed;
    }
    throw e;
  }
}

/** The request's input as the API lists a response's input items (each with an id). */
function inputItemsOf(b: Body): Record<string, unknown>[] {
  const input = b.input;
  const items = (typeof input === 'string' ? [{ type: 'message', role: 'user', content: input }] : (input as Record<string, unknown>[])) ?? [];
  return items.map((it) => {
    const type = (it.type as string | undefined) ?? 'message';
    const id = typeof it.id === 'string' ? it.id : `${type === 'message' ? 'msg' : type === 'function_call' ? 'fc' : 'fco'}_${hex(16)}`;
    if (type !== 'message') return { ...it, type, id };
    const text = (t: unknown) => [{ type: it.role === 'assistant' ? 'output_text' : 'input_text', text: t }];
    return { type, id, role: it.role, status: 'completed', content: typeof it.content === 'string' ? text(it.content) : it.content };
  });
}

/** The stored conversation a previous_response_id continues, and the ids of its items. */
function previousConversation(ctx: ResponsesContext, b: Body): { conversation: unknown[]; itemIds: string[] } {
  const prev = b.previous_response_id;
  if (prev === undefined || prev === null) return { conversation: [], itemIds: [] };
  if (typeof prev !== 'string') return bad('previous_response_id', 'previous_response_id is a string');
  if (!ctx.store.enabled) bad('previous_response_id', 'this server stores no responses (quench serve --response-store 0): send the whole conversation in input');
  const found = ctx.store.get(prev);
  if (!found) throw new OptionError('previous_response_id', `Previous response with id '${prev.slice(0, 100)}' not found.`, 'previous_response_not_found');
  return { conversation: found.conversation, itemIds: found.itemIds };
}

/** Input items' ids are unique, also against the items of the conversation they continue (an
 *  item resent with previous_response_id would be read twice). */
function checkItemIds(items: Record<string, unknown>[], earlier: string[]): void {
  const seen = new Set(earlier);
  items.forEach((it, i) => {
    if (typeof it.id !== 'string') return;
    if (seen.has(it.id)) bad(`input[${i}].id`, `Duplicate item found with id '${it.id.slice(0, 100)}'${earlier.includes(it.id) ? ' (it is already in the conversation previous_response_id continues)' : ''}.`);
    seen.add(it.id);
  });
}

async function respond(ctx: ResponsesContext, b: Body, reply: FastifyReply) {
  const { id: servedId, model, scheduler } = ctx.ready(b.model);
  const { conversation: previous, itemIds } = previousConversation(ctx, b);
  if (Array.isArray(b.input)) checkItemIds(b.input as Record<string, unknown>[], itemIds);
  const chat = chatBodyOf(b, previous);
  let store = b.store !== false && ctx.store.enabled;
  rejectUnsupported(chat);
  const tools = toolRequest(chat);
  const prompt = encodeToolChat(model.codec, chatMessages(chat.messages as { role: string }[]), tools);
  const decode = (ids: number[]) => model.codec.decode(ids, true);
  const abort = new AbortController();
  const options: GenerateOptions = { ...generationOptions(chat, ctx.defaults ?? {}), detokenize: decode, signal: abort.signal };
  // log-probabilities of the output text: include + top_logprobs (alternatives per token)
  const wantLogprobs = Array.isArray(b.include) && b.include.includes('message.output_text.logprobs');
  if (b.top_logprobs !== undefined && b.top_logprobs !== null && !wantLogprobs) bad('top_logprobs', 'top_logprobs needs include: ["message.output_text.logprobs"]');
  if (wantLogprobs) {
    const top = typeof b.top_logprobs === 'number' ? b.top_logprobs : 0;
    if (!Number.isInteger(top) || top < 0 || top > maxAlternatives(model)) bad('top_logprobs', `top_logprobs is an integer in [0, ${maxAlternatives(model)}] for this model`);
    options.logprobs = top;
  }
  const logprobsOf = (lp: readonly TokenLogprob[] | undefined) => logprobEntries(model.codec, lp);
  options.constraint = outputConstraint(model, chat, 'chat', tools);
  const stream = b.stream === true;
  const id = `resp_${hex(16)}`;
  const msgId = `msg_${hex(16)}`;
  const created = Math.floor(Date.now() / 1000);
  const tracker = new FinalTextTracker(decode, [], holdFor(tools));

  const formatOf = () => {
    const rf = chat.response_format as { type: string; json_schema?: Record<string, unknown> } | undefined;
    return rf?.type === 'json_schema' ? { type: 'json_schema', ...rf.json_schema } : { type: rf?.type ?? 'text' };
  };
  const response = (status: string, output: unknown[], r?: GenerateResult) => ({
    id,
    object: 'response',
    created_at: created,
    status,
    ...(status === 'completed' || status === 'incomplete' ? { completed_at: Math.floor(Date.now() / 1000) } : {}),
    error: null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: typeof b.instructions === 'string' ? b.instructions : null,
    max_output_tokens: typeof b.max_output_tokens === 'number' ? b.max_output_tokens : null,
    model: servedId,
    output,
    parallel_tool_calls: tools?.parallel ?? b.parallel_tool_calls !== false,
    previous_response_id: typeof b.previous_response_id === 'string' ? b.previous_response_id : null,
    reasoning: { effort: isObject(b.reasoning) ? (b.reasoning.effort ?? null) : null, summary: null },
    store,
    // (what decoding used: the request's values, else the model's generation_config.json ones)
    temperature: withModelDefaults(options, model.defaults).temperature ?? null,
    text: { format: formatOf() },
    tool_choice: b.tool_choice ?? (tools ? 'auto' : 'none'),
    tools: Array.isArray(b.tools) ? b.tools : [],
    top_p: withModelDefaults(options, model.defaults).topP ?? null,
    truncation: 'disabled',
    usage: r ? { input_tokens: prompt.length, input_tokens_details: { cached_tokens: r.stats.cached, cache_write_tokens: 0 }, output_tokens: r.tokens.length, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: prompt.length + r.tokens.length } : null,
    user: typeof b.user === 'string' ? b.user : null,
    metadata: isObject(b.metadata) ? b.metadata : {},
  });
  const messageItem = (text: string, status: string, lp: unknown[] = []) => ({ type: 'message', id: msgId, status, role: 'assistant', content: [{ type: 'output_text', text, annotations: [], logprobs: lp }] });
  const callItem = (c: ToolCall, status: string, args = c.function.arguments) => ({ type: 'function_call', id: `fc_${c.id.slice(5)}`, call_id: c.id, name: c.function.name, arguments: args, status });
  /** the answer as output items, and the response's status */
  const outputOf = (r: GenerateResult) => {
    const full = r.text ?? decode(r.tokens);
    const a = answerOf(tools, full, r.finishReason);
    const status = r.finishReason === 'length' ? 'incomplete' : 'completed';
    return { a, status };
  };
  /** the finished response, stored (store: true) with its input and the conversation so far */
  const finished = (status: string, output: unknown[], r: GenerateResult, a: ReturnType<typeof answerOf>) => {
    const res = response(status, output, r);
    if (store) {
      const answer = { role: 'assistant', content: a.content, ...(a.calls?.length ? { tool_calls: a.calls } : {}) };
      const own = itemMessages(b);
      const inputItems = inputItemsOf(b);
      const ids = [...itemIds, ...inputItems.map((x) => x.id as string), ...output.map((x) => (x as { id: string }).id)];
      // (an entry larger than the whole store is not kept: the response says so)
      store = ctx.store.put(id, { response: res, inputItems, conversation: [...previous, ...own, answer], itemIds: ids });
      res.store = store;
    }
    return res;
  };

  // events are sent in order, each numbered; the message item opens with its first text
  let seq = 0;
  let messageOpen = false;
  const send = (type: string, data: object) => {
    if (!reply.raw.writableEnded) reply.raw.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...data })}\n\n`);
  };
  const openMessage = () => {
    if (messageOpen) return;
    messageOpen = true;
    send('response.output_item.added', { output_index: 0, item: { type: 'message', id: msgId, status: 'in_progress', role: 'assistant', content: [] } });
    send('response.content_part.added', { item_id: msgId, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } });
  };
  // (the log-probabilities of the tokens finalized since the last delta travel with it)
  let lpSent = 0;
  const onStep = stream
    ? (ev: StepEvent) => {
        const delta = tracker.step(ev);
        if (!delta) return;
        openMessage();
        const lp = ev.logprobs ? ev.logprobs.slice(lpSent, ev.finalized) : [];
        lpSent += lp.length;
        send('response.output_text.delta', { item_id: msgId, output_index: 0, content_index: 0, delta, logprobs: logprobsOf(lp) });
      }
    : undefined;

  // submitted before anything is written: a bad option is still a plain 400
  const done = scheduler.submit({ prompt, options, onStep, signal: abort.signal, cacheSalt: b.cache_salt as string | undefined });
  const offClose = abortOnClose(reply, abort);
  if (!stream) {
    try {
      let r: GenerateResult;
      try {
        r = await done;
      } catch (e) {
        if (e instanceof CancelledError) return reply; // the client is gone
        throw e;
      }
      const { a, status } = outputOf(r);
      const output: unknown[] = [];
      if (a.content !== null) output.push(messageItem(a.content, status, logprobsOf(r.logprobs)));
      for (const c of a.calls ?? []) output.push(callItem(c, 'completed'));
      return finished(status, output, r, a);
    } finally {
      offClose();
    }
  }

  startEventStream(reply);
  send('response.created', { response: response('in_progress', []) });
  send('response.in_progress', { response: response('in_progress', []) });
  try {
    const r = await done;
    const { a, status } = outputOf(r);
    const output: unknown[] = [];
    if (a.content !== null) {
      openMessage();
      const rest = tracker.finish(a.content);
      const all = logprobsOf(r.logprobs);
      if (rest || lpSent < all.length) send('response.output_text.delta', { item_id: msgId, output_index: 0, content_index: 0, delta: rest, logprobs: all.slice(lpSent) });
      send('response.output_text.done', { item_id: msgId, output_index: 0, content_index: 0, text: a.content, logprobs: all });
      send('response.content_part.done', { item_id: msgId, output_index: 0, content_index: 0, part: { type: 'output_text', text: a.content, annotations: [], logprobs: all } });
      const item = messageItem(a.content, status, all);
      send('response.output_item.done', { output_index: 0, item });
      output.push(item);
    }
    for (const c of a.calls ?? []) {
      const index = output.length;
      const item = callItem(c, 'completed');
      send('response.output_item.added', { output_index: index, item: callItem(c, 'in_progress', '') });
      send('response.function_call_arguments.delta', { item_id: item.id, output_index: index, delta: c.function.arguments });
      send('response.function_call_arguments.done', { item_id: item.id, output_index: index, name: c.function.name, arguments: c.function.arguments });
      send('response.output_item.done', { output_index: index, item });
      output.push(item);
    }
    send(status === 'incomplete' ? 'response.incomplete' : 'response.completed', { response: finished(status, output, r, a) });
  } catch (e) {
    if (!(e instanceof CancelledError)) {
      // (the API's error codes name causes quench does not have; a failure while generating is a server error)
      const env = toEnvelope(e).body.error;
      send('response.failed', { response: { ...response('failed', []), error: { code: 'server_error', message: env.message } } });
    }
  }
  if (!reply.raw.writableEnded) reply.raw.end();
  offClose();
  return reply;
}
