// JSON schemas of the request bodies (validated by Fastify's ajv; errors become 400s with
// the offending field as `param`). Unknown fields are ignored, as OpenAI clients send
// fields added after this server was written; known-but-unsupported ones are rejected
// in fields.ts with a clear message.

import { POLICIES } from '../decode/policies.ts';
import { CACHE_MODES, CANVAS_MODES } from '../decode/options.ts';
import { EFFORTS } from './fields.ts';

const int = (minimum: number, maximum = 2 ** 31) => ({ type: 'integer', minimum, maximum });

const sampling = {
  model: { type: 'string', maxLength: 256 },
  stream: { type: ['boolean', 'null'] },
  stream_options: { type: ['object', 'null'], properties: { include_usage: { type: 'boolean' } } },
  n: { type: ['integer', 'null'], minimum: 1, maximum: 8 },
  // (one schema over the three types, not anyOf: an error then names what is wrong, "more than 4
  // items", where anyOf's would name its first branch, "must be string")
  stop: { type: ['string', 'array', 'null'], minLength: 1, maxLength: 256, maxItems: 4, items: { type: 'string', minLength: 1, maxLength: 256 } },
  max_tokens: { type: ['integer', 'null'], minimum: 1, maximum: 1 << 20 },
  temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
  top_p: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1 },
  top_k: { type: ['integer', 'null'], minimum: 1, maximum: 1 << 24 },
  seed: { type: ['integer', 'null'], minimum: -(2 ** 53) + 1, maximum: 2 ** 53 - 1 },
  user: { type: ['string', 'null'], maxLength: 512 },
  frequency_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2 },
  presence_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2 },
  logit_bias: { type: ['object', 'null'] },
  logprobs: { type: ['boolean', 'integer', 'null'] },
  // quench's decoding extensions
  steps: int(1, 1 << 20),
  block_length: int(1, 1 << 20),
  policy: { type: 'string', enum: [...POLICIES] },
  threshold: { type: 'number', minimum: 0, maximum: 1 },
  verify_threshold: { type: 'number', minimum: 0, maximum: 1 },
  editing_threshold: { type: ['number', 'null'], minimum: 0, maximum: 1 },
  max_post_steps: int(0, 1024),
  early_commit: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1000 },
  separate_twins: { type: 'boolean' },
  hold_ends: { type: 'boolean' },
  in_order: { type: 'boolean' },
  lead_token: { type: 'boolean' },
  cfg_scale: { type: 'number', minimum: 0, maximum: 100 },
  gamma: { type: 'number', minimum: 0, maximum: 1e6 },
  alg_temp: { type: 'number', minimum: 0, maximum: 100 },
  eps: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
  cache: { type: 'string', enum: [...CACHE_MODES] },
  canvas: { type: 'string', enum: [...CANVAS_MODES] },
  initial_canvas: int(1, 1 << 20),
  ignore_eos: { type: 'boolean' },
  // (quench's presets, and OpenAI's other efforts mapped onto them: fields.ts EFFORTS)
  reasoning_effort: { type: ['string', 'null'], enum: [...Object.keys(EFFORTS), null] },
  realtime: { type: 'boolean' },
  diffusing: { type: 'boolean' },
  // (vLLM's field: the prefix cache is shared only between requests with the same salt)
  cache_salt: { type: 'string', minLength: 1, maxLength: 256 },
  // (vLLM's: each prompt token's log-probability and this many alternatives; causal models)
  prompt_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20 },
};

const textPart = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string' }, text: { type: 'string' } },
};

export const chatBody = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...sampling,
    messages: {
      type: 'array',
      minItems: 1,
      maxItems: 1024,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: { type: ['string', 'array', 'null'], maxItems: 256, items: textPart },
          name: { type: 'string' },
          tool_calls: { type: ['array', 'null'], maxItems: 128 },
          tool_call_id: { type: 'string', maxLength: 256 },
        },
      },
    },
    max_completion_tokens: { type: ['integer', 'null'], minimum: 1, maximum: 1 << 20 },
    top_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20 },
    tools: { type: ['array', 'null'], maxItems: 128 },
    tool_choice: {},
    parallel_tool_calls: { type: ['boolean', 'null'] },
    response_format: { type: ['object', 'null'] },
  },
};

/** vLLM's POST /tokenize: a prompt, or chat messages (with their tools) */
export const tokenizeBody = {
  type: 'object',
  properties: {
    model: sampling.model,
    prompt: { type: 'string' },
    messages: chatBody.properties.messages,
    tools: chatBody.properties.tools,
    tool_choice: {},
    add_special_tokens: { type: 'boolean' },
    add_generation_prompt: { type: 'boolean' },
    return_token_strs: { type: ['boolean', 'null'] },
  },
};

/** vLLM's POST /detokenize */
export const detokenizeBody = {
  type: 'object',
  required: ['tokens'],
  properties: {
    model: sampling.model,
    tokens: { type: 'array', maxItems: 1 << 20, items: { type: 'integer', minimum: 0 } },
  },
};

export const completionBody = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...sampling,
    // (a string, or a list of strings, of token ids or of token-id lists: one schema over the
    // kinds, so that an error names what is wrong; fields.ts promptList checks that a list holds
    // one kind, and its count)
    prompt: {
      type: ['string', 'array'],
      minItems: 1,
      maxItems: 1 << 20,
      items: { type: ['string', 'integer', 'array'], minItems: 1, maxItems: 1 << 20, items: { type: 'integer' } },
    },
    suffix: { type: ['string', 'null'] },
    echo: { type: ['boolean', 'null'] },
    // (0: score the echoed prompt only, with echo)
    max_tokens: { type: ['integer', 'null'], minimum: 0, maximum: 1 << 20 },
    best_of: { type: ['integer', 'null'], minimum: 1, maximum: 1 },
  },
};

export const fimBody = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...sampling,
    prompt: { type: 'string' },
    suffix: { type: ['string', 'null'] },
  },
};

const { n: _n, stop: _stop, stream_options: _so, logprobs: _lp, max_tokens: _mt, diffusing: _d, reasoning_effort: _re, prompt_logprobs: _pl, ...responsesSampling } = sampling;

export const responsesBody = {
  type: 'object',
  required: ['input'],
  properties: {
    ...responsesSampling,
    input: { anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, maxItems: 1024, items: { type: 'object' } }] },
    instructions: { type: ['string', 'null'] },
    max_output_tokens: { type: ['integer', 'null'], minimum: 1, maximum: 1 << 20 },
    tools: { type: ['array', 'null'], maxItems: 128 },
    tool_choice: {},
    parallel_tool_calls: { type: ['boolean', 'null'] },
    text: { type: ['object', 'null'] },
    reasoning: { type: ['object', 'null'] },
    metadata: { type: ['object', 'null'] },
    store: { type: ['boolean', 'null'] },
    include: { type: ['array', 'null'], maxItems: 16 },
    top_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20 },
    truncation: { type: ['string', 'null'] },
  },
};
