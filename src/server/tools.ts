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
import { argumentsConstraint, callsConstraint } from '../decode/tool-calls.ts';
import { OptionError } from '../errors.ts';
import type { ChatMessage, ChatTool, TextCodec } from '../formats/tokenizer.ts';
import { messageText, type Body } from './fields.ts';

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

function isObject(v: unknown): v is Record<string, unknown> {
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
    const parameters = f.parameters ?? { type: 'object', properties: {} };
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
  if (b.parallel_tool_calls !== undefined && typeof b.parallel_tool_calls !== 'boolean') bad('parallel_tool_calls', 'parallel_tool_calls must be a boolean');
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
  if (choice.kind === 'named') return argumentsConstraint(compile(req.tools.find((t) => t.function.name === choice.name)!), tokenBytes) as Constraint;
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
        if (!isObject(c) || !isObject(c.function) || typeof c.function.name !== 'string' || typeof c.function.arguments !== 'string')
          bad(at, 'a tool call is {"id": ..., "type": "function", "function": {"name": ..., "arguments": "<JSON text>"}}');
        const f = (c as { function: { name: string; arguments: string } }).function;
        let args: unknown;
        try {
          args = JSON.parse(f.arguments);
        } catch {
          bad(`${at}.function.arguments`, 'arguments must be JSON text');
        }
        const id = (c as { id?: unknown }).id;
        return { id: typeof id === 'string' ? id : '', type: 'function' as const, function: { name: f.name, arguments: args } };
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
  for (const m of messages) {
    if (m.role === 'assistant' && m.tool_calls?.length) {
      out.push({ role: 'assistant', content: [m.content, ...m.tool_calls.map(callText)].filter(Boolean).join('\n') });
    } else if (m.role === 'tool') {
      const text = `<tool_response>\n${m.content}\n</tool_response>`;
      const prev = out[out.length - 1];
      // the results of one turn's calls go back as one user turn
      if (prev && prev.role === 'user' && prev.content.startsWith('<tool_response>')) prev.content += `\n${text}`;
      else out.push({ role: 'user', content: text });
    } else out.push({ role: m.role, content: m.content });
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

function toCall(v: unknown, names: Set<string>): ToolCall | null {
  if (!isObject(v) || typeof v.name !== 'string' || !names.has(v.name)) return null;
  const args = v.arguments ?? v.parameters ?? {};
  if (!isObject(args)) return null;
  return { id: callId(), type: 'function', function: { name: v.name, arguments: JSON.stringify(args) } };
}

/** `<tool_call>` blocks in free text: the text before them and the calls, or null if any block is not a call. */
export function parseTaggedCalls(text: string, names: Set<string>): { content: string; calls: ToolCall[] } | null {
  const start = text.indexOf(CALL_OPEN);
  if (start < 0) return null;
  const calls: ToolCall[] = [];
  let at = start;
  while (at < text.length) {
    const rest = text.slice(at);
    const lead = rest.length - rest.trimStart().length;
    if (lead === rest.length) break;
    if (!rest.startsWith(CALL_OPEN, lead)) return null; // text after a call: not a clean answer of calls
    const bodyAt = at + lead + CALL_OPEN.length;
    const end = text.indexOf(CALL_CLOSE, bodyAt);
    // the last block may lack its close (the model ended the turn instead)
    const body = text.slice(bodyAt, end < 0 ? text.length : end);
    let v: unknown;
    try {
      v = JSON.parse(body);
    } catch {
      return null;
    }
    const call = toCall(v, names);
    if (!call) return null;
    calls.push(call);
    at = end < 0 ? text.length : end + CALL_CLOSE.length;
  }
  return { content: text.slice(0, start), calls };
}

/** The answer of a tool-calling request: its text content (null when it is only calls) and its calls. */
export function answerCalls(req: ToolRequest, text: string, finishReason: string): { content: string | null; calls: ToolCall[] | null } {
  const names = new Set(req.tools.map((t) => t.function.name));
  const asText = { content: text, calls: null };
  const { choice } = req;
  if (choice.kind === 'auto') {
    const p = parseTaggedCalls(text, names);
    if (!p) return asText;
    return { content: p.content.trim() ? p.content : null, calls: p.calls };
  }
  // constrained: a whole document unless cut by max_tokens (then it is returned as text)
  if (finishReason !== 'stop') return asText;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return asText;
  }
  if (choice.kind === 'named') return isObject(v) ? { content: null, calls: [{ id: callId(), type: 'function', function: { name: choice.name, arguments: JSON.stringify(v) } }] } : asText;
  const calls = (Array.isArray(v) ? v : [v]).map((x) => toCall(x, names));
  return calls.length > 0 && calls.every(Boolean) ? { content: null, calls: calls as ToolCall[] } : asText;
}
