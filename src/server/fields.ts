// OpenAI request fields -> generation options. Presets for reasoning_effort, quench's
// decoding extensions on top, and clear 400s for fields that are known but not
// implemented (never silently ignored).

import type { GenerateOptions } from '../decode/options.ts';
import { OptionError } from '../errors.ts';

/** reasoning_effort presets (documented in the README). Explicit fields override them. */
export const PRESETS: Record<string, Partial<GenerateOptions>> = {
  instant: { policy: 'threshold', threshold: 0.7, cache: 'dual' },
  low: { policy: 'threshold', threshold: 0.8, cache: 'prefix' },
  medium: { policy: 'threshold', threshold: 0.9, cache: 'prefix' },
  high: { policy: 'threshold', threshold: 0.99, cache: 'prefix' },
};

/** OpenAI's reasoning efforts onto the presets: none / minimal are the fastest, xhigh / max the most careful */
export const EFFORTS: Record<string, keyof typeof PRESETS> = { instant: 'instant', none: 'instant', minimal: 'instant', low: 'low', medium: 'medium', high: 'high', xhigh: 'high', max: 'high' };

export type Body = Record<string, unknown>;

function reject(param: string, message: string): never {
  throw new OptionError(param, message, 'unsupported_field');
}

/** Fields OpenAI defines that quench does not implement yet: a clear 400 instead of ignoring. */
export function rejectUnsupported(b: Body): void {
  // (a client sending these expects function_call / audio / citations back: text alone would mislead it)
  if (b.functions !== undefined && b.functions !== null) reject('functions', 'functions (the legacy form of function calling) is not supported; send tools');
  if (b.function_call !== undefined && b.function_call !== null) reject('function_call', 'function_call (the legacy form of tool_choice) is not supported; send tool_choice');
  if (b.audio !== undefined && b.audio !== null) reject('audio', 'audio output is not supported (text models)');
  if (Array.isArray(b.modalities) && b.modalities.some((m) => m !== 'text')) reject('modalities', 'only the text modality is supported');
  if (b.web_search_options !== undefined && b.web_search_options !== null) reject('web_search_options', 'web search is not supported');
  const rf = b.response_format as { type?: unknown } | null | undefined;
  if (rf && rf.type !== undefined && rf.type !== 'text' && rf.type !== 'json_object' && rf.type !== 'json_schema')
    reject('response_format', `response_format ${JSON.stringify(rf.type)} is not supported; "text", "json_object" and "json_schema" are`);
}

/**
 * How many alternatives to report per token, or undefined when log-probabilities are off.
 * Chat: `logprobs: true` plus `top_logprobs`; completions: `logprobs: n` (OpenAI's legacy form).
 * The graph returns `limit` candidates per position, the most a token can report.
 */
export function logprobsOption(b: Body, kind: 'chat' | 'completion', limit: number): number | undefined {
  let n: number | undefined;
  if (kind === 'chat') {
    if (typeof b.logprobs === 'number') throw new OptionError('logprobs', 'logprobs is a boolean for chat completions (top_logprobs sets the alternatives)');
    const top = b.top_logprobs as number | null | undefined;
    if (b.logprobs === true) n = top ?? 0;
    else if (typeof top === 'number' && top > 0) throw new OptionError('top_logprobs', 'top_logprobs needs logprobs: true');
    if (n !== undefined && n > limit) throw new OptionError('top_logprobs', `top_logprobs is at most ${limit} for this model (the candidates it scores per position), got ${n}`);
  } else {
    if (b.logprobs === true) throw new OptionError('logprobs', 'logprobs is an integer for completions (the number of alternatives per token)');
    if (typeof b.logprobs === 'number') n = b.logprobs;
    if (n !== undefined && (n < 0 || n > limit)) throw new OptionError('logprobs', `logprobs must be in [0, ${limit}] for this model, got ${n}`);
  }
  if (n !== undefined && b.diffusing === true) throw new OptionError('logprobs', 'logprobs are not defined for the diffusing stream (its chunks are drafts); stream without diffusing');
  return n;
}

/** response_format: free text, one JSON object (JSON mode), or a document of a JSON schema. */
export function responseFormat(b: Body): { type: 'text' } | { type: 'json_object' } | { type: 'json_schema'; schema: unknown } {
  const rf = b.response_format as { type?: unknown; json_schema?: { schema?: unknown } } | null | undefined;
  if (rf?.type === 'json_object') return { type: 'json_object' };
  if (rf?.type === 'json_schema') {
    const js = rf.json_schema;
    if (!js || typeof js !== 'object' || js.schema === undefined) throw new OptionError('response_format', 'response_format json_schema needs json_schema.schema');
    return { type: 'json_schema', schema: js.schema };
  }
  return { type: 'text' };
}

export function stopStrings(b: Body): string[] {
  if (typeof b.stop === 'string') return [b.stop];
  if (Array.isArray(b.stop)) return b.stop as string[];
  return [];
}

/** Decoding options from a request body; the seed of choice i is seed + i. */
export function generationOptions(b: Body, defaults: Partial<GenerateOptions>): GenerateOptions {
  // an effort the request names overrides the server's and the model's defaults; without one
  // those defaults stand (the engine's own equal the medium preset)
  const effort = b.realtime === true ? 'instant' : typeof b.reasoning_effort === 'string' ? (EFFORTS[b.reasoning_effort] ?? null) : null;
  const o: GenerateOptions = { ...defaults, ...(effort === null ? {} : PRESETS[effort]) };
  const maxTokens = (b.max_completion_tokens ?? b.max_tokens) as number | null | undefined;
  if (typeof maxTokens === 'number') o.maxTokens = maxTokens;
  if (typeof b.temperature === 'number') o.temperature = b.temperature;
  if (typeof b.top_p === 'number') o.topP = b.top_p;
  if (typeof b.top_k === 'number') o.topK = b.top_k;
  if (b.logit_bias && typeof b.logit_bias === 'object') o.logitBias = b.logit_bias as Record<number, number>;
  if (typeof b.frequency_penalty === 'number') o.frequencyPenalty = b.frequency_penalty;
  if (typeof b.presence_penalty === 'number') o.presencePenalty = b.presence_penalty;
  if (typeof b.seed === 'number') o.seed = b.seed;
  if (typeof b.steps === 'number') o.steps = b.steps;
  if (typeof b.block_length === 'number') o.blockLength = b.block_length;
  if (typeof b.policy === 'string') o.policy = b.policy as GenerateOptions['policy'];
  if (typeof b.threshold === 'number') o.threshold = b.threshold;
  if (typeof b.verify_threshold === 'number') o.verifyThreshold = b.verify_threshold;
  // (null turns off a model's default token editing)
  if (typeof b.editing_threshold === 'number' || b.editing_threshold === null) o.editingThreshold = b.editing_threshold;
  if (typeof b.max_post_steps === 'number') o.maxPostSteps = b.max_post_steps;
  // (null turns off a model's default early commit)
  if (typeof b.early_commit === 'number' || b.early_commit === null) o.earlyCommit = b.early_commit;
  if (typeof b.separate_twins === 'boolean') o.separateTwins = b.separate_twins;
  if (typeof b.hold_ends === 'boolean') o.holdEnds = b.hold_ends;
  if (typeof b.in_order === 'boolean') o.inOrder = b.in_order;
  if (typeof b.lead_token === 'boolean') o.leadToken = b.lead_token;
  if (typeof b.cfg_scale === 'number') o.cfgScale = b.cfg_scale;
  if (typeof b.gamma === 'number') o.gamma = b.gamma;
  if (typeof b.alg_temp === 'number') o.algTemp = b.alg_temp;
  if (typeof b.eps === 'number') o.eps = b.eps;
  if (typeof b.cache === 'string') o.cache = b.cache as GenerateOptions['cache'];
  if (typeof b.canvas === 'string') o.canvas = b.canvas as GenerateOptions['canvas'];
  if (typeof b.initial_canvas === 'number') o.initialCanvas = b.initial_canvas;
  // (wino drafts with its own low threshold: a preset's does not apply to it, one the request names does)
  if (b.policy === 'wino' && typeof b.threshold !== 'number' && effort !== null) delete o.threshold;
  // (guidance runs without a cache: a preset's cache does not apply to it, one the request names does)
  if (typeof b.cfg_scale === 'number' && b.cfg_scale > 0 && typeof b.cache !== 'string') delete o.cache;
  // vLLM's extension: end-of-text / end-of-turn do not stop the answer (fixed-length load tests)
  if (b.ignore_eos === true) o.stopTokens = [];
  return o;
}

export function messageText(content: unknown, index: number): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  const parts = content as { type: string; text?: string }[];
  return parts
    .map((p, j) => {
      if (p.type !== 'text' || typeof p.text !== 'string') reject(`messages[${index}].content[${j}]`, `content part type ${JSON.stringify(p.type)} is not supported; only text`);
      return p.text;
    })
    .join('');
}

/** Most prompts one completion request may carry (a list of strings or of token-id lists). */
export const MAX_PROMPTS = 64;

/** A completion's prompt as one kind: a string, strings, token ids, or token-id lists. */
export function promptList(p: unknown): { kind: 'text'; prompts: string[] } | { kind: 'ids'; prompts: number[][] } {
  if (typeof p === 'string') return { kind: 'text', prompts: [p] };
  const list = p as (string | number | number[])[];
  const kind = (x: unknown) => (typeof x === 'string' ? 'a string' : typeof x === 'number' ? 'a token id' : 'a token-id list');
  const first = kind(list[0]);
  const odd = list.findIndex((x) => kind(x) !== first);
  if (odd >= 0) throw new OptionError('prompt', `prompt[${odd}] is ${kind(list[odd])} where prompt[0] is ${first}: a prompt list holds strings, token ids or token-id lists, one kind`);
  if (first === 'a token id') return { kind: 'ids', prompts: [list as number[]] };
  if (list.length > MAX_PROMPTS) throw new OptionError('prompt', `prompt holds ${list.length} prompts; at most ${MAX_PROMPTS} in one request`);
  return first === 'a string' ? { kind: 'text', prompts: list as string[] } : { kind: 'ids', prompts: list as number[][] };
}
