// The form an answer must take: JSON mode, a JSON schema, or calls of a forced tool choice,
// as an output constraint for constrained decoding (none: free text); and log-probabilities in
// the shapes the APIs give them: chat completions' and the Responses API's, legacy completions'
// (echo's prompt tokens included), vLLM's prompt_logprobs.

import type { Constraint } from '../decode/constraint.ts';
import type { TokenLogprob } from '../decode/generation.ts';
import type { TextCodec } from '../formats/tokenizer.ts';
import { jsonObjectConstraint } from '../decode/json-grammar.ts';
import { jsonSchemaConstraint } from '../decode/json-schema.ts';
import { OptionError } from '../errors.ts';
import type { Model } from '../models/registry.ts';
import { responseFormat, type Body } from './fields.ts';
import { toolConstraint, type ToolRequest } from './tools.ts';
import { IncrementalDecoder } from '../formats/incremental.ts';

/** The output constraint of response_format or a forced tool choice (undefined: free text). */
export function outputConstraint(model: Model, body: Body, kind: 'chat' | 'completion', tools: ToolRequest | null): Constraint | undefined {
  const rf = responseFormat(body);
  const vocab = () => model.codec.vocabBytes(model.args.vocabSize);
  const forced = tools && tools.choice.kind !== 'auto';
  if (rf.type === 'text') return forced ? toolConstraint(tools, vocab()) : undefined;
  if (kind !== 'chat') throw new OptionError('response_format', 'response_format (JSON output) is for /v1/chat/completions');
  if (forced) throw new OptionError('tool_choice', 'a "required" or named tool_choice already fixes the answer\'s form; drop the response format');
  return rf.type === 'json_object' ? jsonObjectConstraint(vocab()) : jsonSchemaConstraint(rf.schema, vocab());
}

/** The most alternatives a token can list: the candidates scored per position, less the mask
 *  token for a diffusion model (never an alternative, and it may be among the candidates). */
export function maxAlternatives(model: Model): number {
  return model.args.attention === 'causal' ? model.topK : model.topK - 1;
}

/** Per token: its text, log-probability, exact bytes and alternatives (chat `logprobs.content`, Responses `logprobs`). */
export function logprobEntries(codec: TextCodec, lp: readonly TokenLogprob[] | undefined) {
  const entry = (token: number, logprob: number) => ({ token: codec.decode([token], false), logprob, bytes: codec.tokenBytes(token) });
  return (lp ?? []).map((x) => ({ ...entry(x.token, x.logprob), top_logprobs: x.top.map((a) => entry(a.token, a.logprob)) }));
}

/** chat completions' `logprobs` (a token's text is its own decoding) */
export function chatLogprobs(codec: TextCodec, lp: readonly TokenLogprob[]) {
  return { content: logprobEntries(codec, lp), refusal: null };
}

/** The text of the tokens before some (grows as they are placed), and where it starts in the returned text. */
export interface TextSoFar {
  text: IncrementalDecoder;
  base: number;
}

/** Completions' `logprobs` for these tokens: `at.text` holds the tokens before them; a token's
 * offset is the length of the text before it (a token inside a multi-byte character: where
 * that character starts). */
export function completionLogprobs(codec: TextCodec, lp: readonly TokenLogprob[], at: TextSoFar) {
  return completionShape(codec, lp.map((x) => x.token), lp, at, Infinity);
}

/** The echoed prompt's tokens in completions' shape (the first with no score), offsets from the start of the text. */
export function promptLogprobsOf(codec: TextCodec, ids: number[], lp: readonly (TokenLogprob | null)[], decode: (ids: number[]) => string, top: number): CompletionLogprobs {
  return completionShape(codec, ids, lp, { text: new IncrementalDecoder(decode), base: 0 }, top);
}

/** tokens, token_logprobs, top_logprobs (at most `top` alternatives) and text_offset of these tokens; null where a token has no score. */
function completionShape(codec: TextCodec, ids: readonly number[], lp: readonly (TokenLogprob | null)[], at: TextSoFar, top: number) {
  const tokenText = (id: number) => codec.decode([id], false);
  const textOffset = ids.map((id) => {
    const offset = at.base + at.text.text.length;
    at.text.push([id]);
    return offset;
  });
  return {
    tokens: ids.map(tokenText),
    token_logprobs: lp.map((x) => x?.logprob ?? null),
    top_logprobs: lp.map((x) => (x ? Object.fromEntries(x.top.slice(0, top).map((a) => [tokenText(a.token), a.logprob])) : null)),
    text_offset: textOffset,
  };
}

export type CompletionLogprobs = ReturnType<typeof completionShape>;

export function joinLogprobs(a: CompletionLogprobs, b: CompletionLogprobs): CompletionLogprobs {
  return { tokens: [...a.tokens, ...b.tokens], token_logprobs: [...a.token_logprobs, ...b.token_logprobs], top_logprobs: [...a.top_logprobs, ...b.top_logprobs], text_offset: [...a.text_offset, ...b.text_offset] };
}

/** vLLM's prompt_logprobs: per prompt token null (the first) or {token id: {logprob, rank, decoded_token}}, the token itself and the `top` likeliest. */
export function vllmPromptLogprobs(codec: TextCodec, lp: readonly (TokenLogprob | null)[], top: number) {
  return lp.map((x) => {
    if (!x) return null;
    const out: Record<string, { logprob: number; rank: number; decoded_token: string }> = {};
    out[x.token] = { logprob: x.logprob, rank: x.rank ?? 0, decoded_token: codec.decode([x.token], false) };
    x.top.slice(0, top).forEach((a, k) => (out[a.token] ??= { logprob: a.logprob, rank: k + 1, decoded_token: codec.decode([a.token], false) }));
    return out;
  });
}
