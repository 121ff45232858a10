// The form an answer must take: JSON mode, a JSON schema, or calls of a forced tool choice,
// as an output constraint for constrained decoding (none: free text); and the answer's
// log-probabilities in the shape chat completions and the Responses API share.

import type { Constraint } from '../decode/constraint.ts';
import type { TokenLogprob } from '../decode/generation.ts';
import type { TextCodec } from '../formats/tokenizer.ts';
import { jsonObjectConstraint } from '../decode/json-grammar.ts';
import { jsonSchemaConstraint } from '../decode/json-schema.ts';
import { OptionError } from '../errors.ts';
import type { Model } from '../models/registry.ts';
import { responseFormat, type Body } from './fields.ts';
import { toolConstraint, type ToolRequest } from './tools.ts';

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
