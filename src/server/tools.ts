// Function calling for /v1/chat/completions: the request's `tools` and `tool_choice`, the
// conversation's calls and tool results in the prompt, and the answer's calls.
//
// - The prompt: a chat template that writes tools and calls itself (Qwen2.5 / Dream / SDAR
//   templates) gets them in the usual template variables; for one that does not (LLaDA's,
//   the bundled model's), the functions go into the system message and calls and results are
//   written as text, in the same `<tool_call>{json}</tool_call>` form those templates use.
// - `tool_choice: "auto"`: the model writes text, calls, or both; calls are read back from
//   `<tool_call>` blocks (text that does not parse stays text). `"required"`: the answer is
//   constrained to calls of the offered functions (a non-empty JSON list, or one call with
//   `parallel_tool_calls: false`); a named function: to that function's arguments.
//   `"none"`: the functions are left out of the prompt and the answer is text.

import { randomBytes } from 'node:crypto';
import type { Constraint } from '../decode/constraint.ts';
import { compileSchema } from '../decode/json-schema.ts';
import { callsConstraint } from '../decode/tool-calls.ts';
import { OptionError } from '../errors.ts';
import type { ChatMessage, ChatTool, TextCodec } from '../formats/tokenizer.ts';
import { messageText, type Body } from './fields.ts';
import type { Hold } from './stream.ts';

export const TOOL_LIMITS = { tools: 128, nameLength: 64 };
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
export const CALL_OPEN = '<tool_call>';
const CALL_CLOSE = '</tool_call>';

export type ToolChoice = { kind: 'auto' } | { kind: 'required' } | { kind: 'named'; name: string };

/** Function calling as a request asks for it; null when it offers no functions or says "none". */
export interface ToolRequest {
  tools: ChatTool[];
  choice: ToolChoice;
  /** several calls in one answer (OpenAI's default) */
  parallel: boolean;
}

/** A call in OpenAI's response shape. */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

const bad = (param: string, message: string): never => {
  throw new OptionError(param, message);
};

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Validate `tools`, `tool_choice` and `parallel_tool_calls`. */
export function toolRequest(b: Body): ToolRequest | null {
  const list = b.tools ?? [];
  if (!Array.isArray(list)) return bad('tools', 'tools must be an array');
  if (list.length > TOOL_LIMITS.tools) bad('tools', `at most ${TOOL_LIMITS.tools} tools`);
  const tools: ChatTool[] = [];
  const names = new Set<string>();
  list.forEach((t, i) => {
    if (!isObject(t) || t.type !== 'function' || !isObject(t.function)) bad(`tools[${i}]`, 'a tool is {"type": "function", "function": {"name": ..., "parameters": {...}}}');
    const f = (t as { function: Record<string, unknown> }).function;
    if (typeof f.name !== 'string' || !NAME.test(f.name)) bad(`tools[${i}].function.name`, 'a function name is 1-64 letters, digits, underscores or dashes');
    const name = f.name as string;
    if (names.has(name)) bad(`tools[${i}].function.name`, `two tools are named ${JSON.stringify(name)}`);
    names.add(name);
    if (f.description !== undefined && typeof f.description !== 'string') bad(`tools[${i}].function.description`, 'description must be a string');
    if (f.parameters !== undefined && !isObject(f.parameters)) bad(`tools[${i}].function.parameters`, 'parameters must be a JSON schema object');
    // no parameters, or `{}`: a function without arguments
    const parameters = f.parameters === undefined || Object.keys(f.parameters as object).length === 0 ? { type: 'object', properties: {} } : f.parameters;
    tools.push({ type: 'function', function: typeof f.description === 'string' ? { name, description: f.description, parameters } : { name, parameters } });
  });
  const c = b.tool_choice;
  let choice: ToolChoice | 'none';
  if (c === undefined || c === null) choice = tools.length > 0 ? { kind: 'auto' } : 'none';
  else if (c === 'none') choice = 'none';
  else if (c === 'auto') choice = { kind: 'auto' };
  else if (c === 'required') choice = { kind: 'required' };
  else if (isObject(c) && c.type === 'function' && isObject(c.function) && typeof c.function.name === 'string') choice = { kind: 'named', name: c.function.name };
  else return bad('tool_choice', 'tool_choice is "none", "auto", "required" or {"type": "function", "function": {"name": ...}}');
  if (choice !== 'none' && choice.kind !== 'auto' && tools.length === 0) bad('tool_choice', 'tool_choice needs tools');
  if (choice !== 'none' && choice.kind === 'named' && !names.has(choice.name)) bad('tool_choice', `no tool is named ${JSON.stringify(choice.name)}`);
  if (b.parallel_tool_calls !== undefined && b.parallel_tool_calls !== null && typeof b.parallel_tool_calls !== 'boolean') bad('parallel_tool_calls', 'parallel_tool_calls must be a boolean');
  if (choice === 'none' || tools.length === 0) return null;
  return { tools, choice, parallel: b.parallel_tool_calls !== false };
}

/** The output constraint of a "required" or named tool choice (undefined for "auto"). */
export function toolConstraint(req: ToolRequest, tokenBytes: readonly (Uint8Array | null)[]): Constraint | undefined {
  const compile = (t: ChatTool) => {
    const i = req.tools.indexOf(t);
    const node = compileSchema(t.function.parameters, { param: `tools[${i}].function.parameters`, label: `the parameters of ${t.function.name}` });
    if (!node.types.has('object') || node.types.size !== 1 || node.enum) bad(`tools[${i}].function.parameters`, 'parameters must be {"type": "object", ...}');
    return { name: t.function.name, parameters: node };
  };
  const { choice } = req;
  if (choice.kind === 'auto') return undefined;
  if (choice.kind === 'named') return callsConstraint([compile(req.tools.find((t) => t.function.name === choice.name)!)], false, tokenBytes) as Constraint;
  return callsConstraint(req.tools.map(compile), req.parallel, tokenBytes) as Constraint;
}

// ---------------------------------------------------------------- the prompt

interface RequestMessage {
  role: string;
  content?: unknown;
  name?: unknown;
  tool_calls?: unknown;
  tool_call_id?: unknown;
}

/** The request's messages as template messages: calls' arguments parsed, roles checked. */
export function chatMessages(list: RequestMessage[]): ChatMessage[] {
  return list.map((m, i) => {
    const role = m.role === 'developer' ? 'system' : m.role;
    const out: ChatMessage = { role, content: messageText(m.content, i) };
    if (typeof m.name === 'string') out.name = m.name;
    if (m.tool_calls !== undefined && m.tool_calls !== null) {
      if (role !== 'assistant') bad(`messages[${i}].tool_calls`, 'only assistant messages carry tool_calls');
      if (!Array.isArray(m.tool_calls)) bad(`messages[${i}].tool_calls`, 'tool_calls must be an array');
      out.tool_calls = (m.tool_calls as unknown[]).map((c, j) => {
        const at = `messages[${i}].tool_calls[${j}]`;
        if (!isObject(c) || typeof c.id !== 'string' || !isObject(c.function) || typeof c.function.name !== 'string' || typeof c.function.arguments !== 'string')
          bad(at, 'a tool call is {"id": ..., "type": "function", "function": {"name": ..., "arguments": "<JSON text>"}}');
        const f = (c as { function: { name: string; arguments: string } }).function;
        let args: unknown;
        try {
          args = JSON.parse(f.arguments);
        } catch {
          bad(`${at}.function.arguments`, 'arguments must be JSON text');
        }
        return { id: (c as { id: string }).id, type: 'function' as const, function: { name: f.name, arguments: args } };
      });
    }
    if (role === 'tool') {
      if (typeof m.tool_call_id !== 'string') bad(`messages[${i}].tool_call_id`, 'a tool message needs tool_call_id');
      out.tool_call_id = m.tool_call_id as string;
    }
    return out;
  });
}

/** The system text that offers functions to a model whose template does not. */
export function toolSystemText(tools: ChatTool[]): string {
  return [
    'Functions you can call, one per line:',
    ...tools.map((t) => JSON.stringify(t.function)),
    `Call one as ${CALL_OPEN}{"name": ..., "arguments": {...}}${CALL_CLOSE}.`,
  ].join('\n');
}

const callText = (c: NonNullable<ChatMessage['tool_calls']>[number]) => `${CALL_OPEN}\n${JSON.stringify({ name: c.function.name, arguments: c.function.arguments })}\n${CALL_CLOSE}`;

/** Calls and tool turns written as plain text, for a template that does not write them. */
export function textToolMessages(messages: ChatMessage[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  let results: ChatMessage | null = null; // the user turn carrying the tool results just written
  for (const m of messages) {
    if (m.role === 'tool') {
      const text = `<tool_response>\n${m.content}\n</tool_response>`;
      // the results of one turn's calls go back as one user turn
      if (results) results.content += `\n${text}`;
      else out.push((results = { role: 'user', content: text }));
      continue;
    }
    results = null;
    if (m.role === 'assistant' && m.tool_calls?.length) out.push({ role: 'assistant', content: [m.content, ...m.tool_calls.map(callText)].filter(Boolean).join('\n') });
    else out.push({ role: m.role, content: m.content });
  }
  return out;
}

/** Token ids of the chat prompt with the request's functions and the conversation's calls. */
export function encodeToolChat(codec: TextCodec, messages: ChatMessage[], req: ToolRequest | null): number[] {
  const support = codec.toolSupport;
  let msgs = support.toolCalls ? messages : textToolMessages(messages);
  if (!req) return codec.encodeChat(msgs);
  if (support.tools) return codec.encodeChat(msgs, req.tools);
  const sys = toolSystemText(req.tools);
  msgs = msgs[0]?.role === 'system' ? [{ ...msgs[0], content: `${msgs[0].content}\n\n${sys}` }, ...msgs.slice(1)] : [{ role: 'system', content: sys }, ...msgs];
  return codec.encodeChat(msgs);
}

// ---------------------------------------------------------------- the answer

export function callId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

// Spans of JSON values in text known to be JSON where they are read (each was parsed or
// recognized first), so that arguments are returned exactly as the model wrote them
// (JSON.parse would round a 24-digit integer to a float).
const WS = new Set([' ', '\t', '\n', '\r']);
function skipWs(t: string, i: number): number {
  while (i < t.length && WS.has(t[i])) i++;
  return i;
}
/** The index just past the value starting at i, or -1 when the text ends inside it. */
function valueEnd(t: string, i: number): number {
  let depth = 0;
  for (let j = i; j < t.length; j++) {
    const c = t[j];
    if (c === '"') {
      j++;
      while (j < t.length && t[j] !== '"') j += t[j] === '\\' ? 2 : 1;
      if (j >= t.length) return -1;
      if (depth === 0) return j + 1;
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) return j + 1;
    } else if (depth === 0 && (c === ',' || WS.has(c))) return j;
  }
  return depth === 0 && t.length > i ? t.length : -1;
}
/** The members of the object at i: key -> [start, end) of its value. */
function members(t: string, i: number): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  i = skipWs(t, i + 1);
  while (i < t.length && t[i] !== '}') {
    const kEnd = valueEnd(t, i);
    const key = JSON.parse(t.slice(i, kEnd)) as string;
    const v = skipWs(t, skipWs(t, kEnd) + 1); // past the ':'
    const vEnd = valueEnd(t, v);
    out.set(key, [v, vEnd]);
    i = skipWs(t, vEnd);
    if (t[i] === ',') i = skipWs(t, i + 1);
  }
  return out;
}
/** The whole items of the array at i (a cut array: those before the cut), as [start, end). */
function items(t: string, i: number): [number, number][] {
  const out: [number, number][] = [];
  i = skipWs(t, i + 1);
  while (i < t.length && t[i] !== ']') {
    const e = valueEnd(t, i);
    if (e < 0) break;
    out.push([i, e]);
    i = skipWs(t, e);
    if (t[i] === ',') i = skipWs(t, i + 1);
  }
  return out;
}

/** The call written at [start, end) of t (`{"name": ..., "arguments": {...}}`), or null. */
function callAt(t: string, start: number, end: number, names: Set<string>): ToolCall | null {
  let v: unknown;
  try {
    v = JSON.parse(t.slice(start, end));
  } catch {
    return null;
  }
  if (!isObject(v) || typeof v.name !== 'string' || !names.has(v.name)) return null;
  const key = v.arguments !== undefined ? 'arguments' : v.parameters !== undefined ? 'parameters' : null;
  if (key === null) return { id: callId(), type: 'function', function: { name: v.name, arguments: '{}' } };
  if (!isObject(v[key])) return null;
  const [a, b] = members(t, skipWs(t, start)).get(key)!;
  return { id: callId(), type: 'function', function: { name: v.name, arguments: t.slice(a, b) } };
}

/**
 * `<tool_call>` blocks in free text: the text before them and the calls, or null if any block
 * is not a call or text follows them. The last block may lack its close when the model ended
 * its turn there (`closed` false: the answer was cut, and an open block is not a call).
 */
export function parseTaggedCalls(text: string, names: Set<string>, closed = true): { content: string; calls: ToolCall[] } | null {
  const start = text.indexOf(CALL_OPEN);
  if (start < 0) return null;
  const calls: ToolCall[] = [];
  let at = start;
  while (at < text.length) {
    at = skipWs(text, at);
    if (at === text.length) break;
    if (!text.startsWith(CALL_OPEN, at)) return null;
    const bodyAt = at + CALL_OPEN.length;
    const end = text.indexOf(CALL_CLOSE, bodyAt);
    if (end < 0 && !closed) return null;
    const bodyEnd = end < 0 ? text.length : end;
    const call = callAt(text, skipWs(text, bodyAt), bodyEnd, names);
    if (!call) return null;
    calls.push(call);
    at = end < 0 ? text.length : end + CALL_CLOSE.length;
  }
  return { content: text.slice(0, start), calls };
}

/** What of a streamed answer may be shown as content: text that may turn into calls is held. */
export function holdFor(req: ToolRequest | null): Hold | undefined {
  return !req ? undefined : req.choice.kind === 'auto' ? { marker: CALL_OPEN } : 'all';
}

/** Any chat answer's content, calls and finish reason (plain text when no functions are offered). */
export function answerOf(req: ToolRequest | null, text: string, finishReason: string): { content: string | null; calls: ToolCall[] | null; finish: string } {
  return req ? answerCalls(req, text, finishReason) : { content: text, calls: null, finish: finishReason };
}

/** A tool-calling request's answer: text content (null when it is only calls), calls, finish reason. */
export function answerCalls(req: ToolRequest, text: string, finishReason: string): { content: string | null; calls: ToolCall[] | null; finish: string } {
  const names = new Set(req.tools.map((t) => t.function.name));
  const asText = { content: text, calls: null, finish: finishReason };
  if (req.choice.kind === 'auto') {
    const p = parseTaggedCalls(text, names, finishReason === 'stop');
    if (!p) return asText;
    // parallel_tool_calls false: at most one call
    return { content: p.content.trim() ? p.content : null, calls: req.parallel ? p.calls : p.calls.slice(0, 1), finish: 'tool_calls' };
  }
  // constrained: one call `{...}`, or (required, parallel) a list `[{...},...]`
  const at = skipWs(text, 0);
  if (text[at] === '[') {
    // a list cut by max_tokens keeps the calls written whole before the cut
    const calls = items(text, at).map(([a, b]) => callAt(text, a, b, names));
    if (calls.length === 0 || !calls.every(Boolean)) return asText;
    return { content: null, calls: calls as ToolCall[], finish: finishReason === 'stop' ? 'tool_calls' : finishReason };
  }
  if (finishReason !== 'stop') return asText;
  const call = callAt(text, at, text.length, names);
  return call ? { content: null, calls: [call], finish: 'tool_calls' } : asText;
}
