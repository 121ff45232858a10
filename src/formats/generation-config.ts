// generation_config.json -> the checkpoint's preferred decoding, as plain data.
//
// Read the way Hugging Face's generate() and vLLM's `--generation-config auto` read it: the
// sampling keys a checkpoint sets explicitly (max_new_tokens, temperature, top_p, top_k,
// do_sample) become defaults that any request field overrides. quench's own decoding
// defaults (policy, threshold, in_order, ...) sit under a "quench" object with the request
// fields' names. Dream's reference-sampler keys (alg, steps) are not taken: they describe a
// fixed step count for one answer length, where quench's threshold policies need none; for
// the same reason the "quench" object takes no block_length or steps (both must divide the
// request's max_tokens). Without do_sample the sampling keys are taken as they are (vLLM's
// reading; transformers would decode greedily); do_sample false is greedy.
// Types are checked here; ranges are checked by the decoder's own validator when a model is
// loaded for serving (decode/generation.ts checkModelDefaults).

import { FormatError } from '../errors.ts';

export interface GenerationDefaults {
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  policy?: string;
  threshold?: number;
  verifyThreshold?: number;
  editingThreshold?: number;
  maxPostSteps?: number;
  gamma?: number;
  eps?: number;
  algTemp?: number;
  cache?: string;
  canvas?: string;
  initialCanvas?: number;
  inOrder?: boolean;
  leadToken?: boolean;
  holdEnds?: boolean;
  separateTwins?: boolean;
  earlyCommit?: number;
}

type Kind = 'number' | 'integer' | 'string' | 'boolean';

/** the "quench" object's fields: request field name -> option name and type */
const QUENCH_FIELDS: Record<string, [keyof GenerationDefaults, Kind]> = {
  max_tokens: ['maxTokens', 'integer'],
  temperature: ['temperature', 'number'],
  top_p: ['topP', 'number'],
  top_k: ['topK', 'integer'],
  policy: ['policy', 'string'],
  threshold: ['threshold', 'number'],
  verify_threshold: ['verifyThreshold', 'number'],
  editing_threshold: ['editingThreshold', 'number'],
  max_post_steps: ['maxPostSteps', 'integer'],
  gamma: ['gamma', 'number'],
  eps: ['eps', 'number'],
  alg_temp: ['algTemp', 'number'],
  cache: ['cache', 'string'],
  canvas: ['canvas', 'string'],
  initial_canvas: ['initialCanvas', 'integer'],
  in_order: ['inOrder', 'boolean'],
  lead_token: ['leadToken', 'boolean'],
  hold_ends: ['holdEnds', 'boolean'],
  separate_twins: ['separateTwins', 'boolean'],
  early_commit: ['earlyCommit', 'number'],
};

function bad(msg: string): never {
  throw new FormatError('generation_config_invalid', `generation_config.json: ${msg}`);
}

function typed(v: unknown, kind: Kind, key: string): number | string | boolean {
  const ok =
    kind === 'integer' ? typeof v === 'number' && Number.isInteger(v)
    : kind === 'number' ? typeof v === 'number' && Number.isFinite(v)
    : typeof v === kind;
  if (!ok) bad(`${key} must be ${kind === 'integer' ? 'an integer' : `a ${kind}`}, got ${JSON.stringify(v)}`);
  return v as number | string | boolean;
}

/** The decoding defaults a generation_config.json asks for ({} when there is none). */
export function generationDefaults(gc: Record<string, unknown> | null): GenerationDefaults {
  const out: GenerationDefaults = {};
  if (!gc) return out;
  const set = <K extends keyof GenerationDefaults>(k: K, v: unknown) => ((out as Record<string, unknown>)[k] = v);
  // max_new_tokens <= 0 or absent: no preference (transformers' own default is 20, which no server applies)
  const get = (key: string, kind: Kind) => (gc[key] === undefined || gc[key] === null ? undefined : typed(gc[key], kind, key));
  const mnt = get('max_new_tokens', 'integer') as number | undefined;
  if (mnt !== undefined && mnt < 0) bad(`max_new_tokens must be >= 0, got ${mnt}`);
  if (mnt) set('maxTokens', mnt);
  const sample = get('do_sample', 'boolean');
  const temperature = get('temperature', 'number') as number | undefined;
  const topP = get('top_p', 'number') as number | undefined;
  const topK = get('top_k', 'integer') as number | undefined;
  if (temperature !== undefined && temperature < 0) bad(`temperature must be >= 0, got ${temperature}`);
  if (topP !== undefined && !(topP > 0 && topP <= 1)) bad(`top_p must be in (0, 1], got ${topP}`);
  if (topK !== undefined && topK < 0) bad(`top_k must be >= 0, got ${topK}`);
  // do_sample false is greedy whatever temperature says; true with no temperature samples at 1.0
  if (sample === false) set('temperature', 0);
  else {
    if (temperature !== undefined) set('temperature', temperature);
    else if (sample === true) set('temperature', 1);
    // (top_p 1 and top_k 0 turn them off)
    if (topP !== undefined && topP < 1) set('topP', topP);
    if (topK) set('topK', topK);
  }
  const q = gc.quench;
  if (q === undefined || q === null) return out;
  if (typeof q !== 'object' || Array.isArray(q)) bad(`quench must be an object of request fields, got ${JSON.stringify(q)}`);
  for (const [key, v] of Object.entries(q as Record<string, unknown>)) {
    const field = QUENCH_FIELDS[key];
    if (!field) bad(`quench.${key} is not a decoding field; known: ${Object.keys(QUENCH_FIELDS).join(', ')}`);
    set(field[0], typed(v, field[1], `quench.${key}`));
  }
  return out;
}
