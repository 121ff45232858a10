// Generation options: defaults and validation (typed errors naming the request field).

import { OptionError } from '../errors.ts';
import type { Attention } from '../formats/config.ts';
import type { GenerationDefaults } from '../formats/generation-config.ts';
import { isFixedCount, POLICIES, type Policy, type PolicyParams } from './policies.ts';
import type { SamplerOptions } from './sampling.ts';
import type { Constraint } from './constraint.ts';

export const CACHE_MODES = ['none', 'prefix', 'dual'] as const;
export type CacheMode = (typeof CACHE_MODES)[number];
export const CANVAS_MODES = ['adaptive', 'fixed'] as const;
export type CanvasMode = (typeof CANVAS_MODES)[number];

export interface GenerateOptions {
  /** the most tokens generated (default 128); with a fixed canvas also the masked positions drafted */
  maxTokens?: number;
  /** adaptive (default): the canvas starts at initialCanvas positions and doubles while the model
   * says the answer does not fit (bidirectional models); fixed: maxTokens positions from the start */
  canvas?: CanvasMode;
  /** first canvas size of an adaptive canvas (default 16) */
  initialCanvas?: number;
  /** semi-autoregressive block size (default 32, or maxTokens if smaller); if given it must divide maxTokens */
  blockLength?: number;
  /** total denoising steps of a maxTokens canvas (default: blockLength per block); must split evenly over
   * its blocks. A block gets steps x its length / maxTokens (an adaptive canvas's shorter blocks fewer) */
  steps?: number;
  policy?: Policy;
  /** policies without a fixed count per step (threshold, entropy_bounded, Dream's): neighbours committed in one step never
   * share a token; the less confident waits a step (default off: +0.4 to +1.0 points on the
   * bundled model's tasks for 3-7 % fewer tokens per forward, BENCHMARKS.md) */
  separateTwins?: boolean;
  /** commit a stop token only once every position before it is text (policies.ts holdEnds) */
  holdEnds?: boolean;
  /** commit only a left-to-right run from the first open position (policies.ts inOrder) */
  inOrder?: boolean;
  /** block models with shifted logits: a model block's first position, read from the previous
   * block's last row, is committed alone (its argmax) by the block's first forward, before the
   * block's masks are read, as Fast-dLLM v2's decoder does; default on for Fast-dLLM v2 models */
  leadToken?: boolean;
  threshold?: number;
  /** Prophet's early commit: the block's masked positions are all committed (their choices: the
   * argmax at temperature 0) once the mean top-1 - top-2 logit gap of those not ending the answer reaches 1.5x / 1x / 0.5x this while the block is under a
   * third / under two thirds / more committed (policies.ts earlyCommit); absent: off */
  earlyCommit?: number | null;
  /** wino: a committed token is masked again when its verification probability falls below this (default 0.9) */
  verifyThreshold?: number;
  /** draft-and-edit (LLaDA2.1's token editing): each step also reads the current block's
   * committed tokens and replaces one whose best candidate differs from it and has a probability
   * above this; null/absent: off. 0 edits on every changed best candidate (its "S mode") */
  editingThreshold?: number | null;
  /** draft-and-edit: forwards a block may spend editing after its masks are gone (default 16) */
  maxPostSteps?: number;
  gamma?: number;
  eps?: number;
  algTemp?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  cache?: CacheMode;
  /** override the model's attention pattern (e.g. block_causal for block-diffusion checkpoints) */
  attention?: Attention;
  /** token ids that end the generation (default: the model's end-of-text / end-of-turn tokens) */
  stopTokens?: number[];
  /** tokens placed after the masked span (fill in the middle); diffusion models only */
  suffix?: number[];
  /** strings that end the generation; need `detokenize` */
  stopStrings?: string[];
  detokenize?: (ids: number[]) => string;
  /** the output must be a string this accepts (JSON mode): decoding commits left to right */
  constraint?: Constraint;
  /** report each output token's log-probability and this many alternatives (off when absent) */
  logprobs?: number;
  /** causal models: report each prompt token's log-probability given the tokens before it, and
   * this many alternatives (off when absent; the first token has none) */
  promptLogprobs?: number;
  /** added to the logits of these token ids before anything is chosen (OpenAI's logit_bias, -100..100) */
  logitBias?: Record<number, number>;
  /** OpenAI's penalties (-2..2), over the answer's committed tokens wherever they stand in the
   * canvas (end tokens aside): each step subtracts frequency x count + presence x (count > 0)
   * from a token's logit at every position it scores */
  frequencyPenalty?: number;
  presencePenalty?: number;
  signal?: AbortSignal;
  /** classifier-free guidance (LLaDA): each step also scores the canvas with the prompt masked and
   * decodes from un + (cfgScale + 1) * (cond - un); 0 (default) is off. Bidirectional diffusion
   * models, without a cache (the unguided pass has a context of its own) */
  cfgScale?: number;
  /** false: ignore the model's generation_config.json defaults (benchmarks that name every option) */
  modelDefaults?: boolean;
}

export interface ResolvedOptions {
  maxTokens: number;
  canvas: CanvasMode;
  initialCanvas: number;
  blockLength: number;
  stepsPerBlock: number;
  policy: Policy;
  separateTwins: boolean;
  holdEnds: boolean;
  inOrder: boolean;
  leadToken: boolean;
  /** Prophet's gap g, or null when off */
  earlyCommit: number | null;
  params: PolicyParams;
  sampler: SamplerOptions;
  seed: number | undefined;
  cache: CacheMode;
  attention: Attention;
  stopTokens: number[];
  stopStrings: string[];
  /** alternatives per token, or null when log-probabilities are off */
  logprobs: number | null;
  /** alternatives per prompt token, or null when prompt log-probabilities are off */
  promptLogprobs: number | null;
  /** token ids and the biases added to their logits, or null */
  logitBias: { ids: Int32Array; values: Float32Array } | null;
  /** 0: off */
  frequencyPenalty: number;
  presencePenalty: number;
  /** classifier-free guidance scale (0: off) */
  cfgScale: number;
  /** draft-and-edit: the editing threshold, or null when off */
  editingThreshold: number | null;
  maxPostSteps: number;
}

export const MAX_LOGIT_BIAS = 1024;

function resolveBias(bias: Record<number, number> | undefined, vocabSize: number): ResolvedOptions['logitBias'] {
  if (bias === undefined) return null;
  const entries = Object.entries(bias);
  if (entries.length === 0) return null;
  if (entries.length > MAX_LOGIT_BIAS) throw new OptionError('logit_bias', `logit_bias has at most ${MAX_LOGIT_BIAS} entries, got ${entries.length}`);
  const ids = new Int32Array(entries.length);
  const values = new Float32Array(entries.length);
  entries.forEach(([k, v], i) => {
    if (!/^(0|[1-9][0-9]*)$/.test(k) || Number(k) >= vocabSize) throw new OptionError('logit_bias', `logit_bias keys are token ids in [0, ${vocabSize}); got ${JSON.stringify(k.slice(0, 40))}`);
    ids[i] = Number(k);
    values[i] = numIn(v, 'logit_bias', -100, 100);
  });
  return { ids, values };
}

/** The switches a policy cannot run with (their option names), beside their request fields. */
const FIXED_COUNT_CONFLICTS = ['inOrder', 'holdEnds'] as const;
const WINO_CONFLICTS = ['inOrder', 'holdEnds', 'separateTwins', 'cfgScale', 'earlyCommit'] as const;

function conflictsOf(policy: string | undefined): readonly string[] {
  if (policy === 'wino') return WINO_CONFLICTS;
  if (policy !== undefined && (POLICIES as readonly string[]).includes(policy) && isFixedCount(policy as Policy)) return FIXED_COUNT_CONFLICTS;
  return [];
}

const on = (v: unknown) => v !== undefined && v !== false && v !== 0;

/**
 * The options with the model's generation_config.json defaults filling what the caller left
 * unset. A default never fails a request on its own: the model's answer budget is cut to the
 * room the prompt leaves (`room`, when known); a model's switch that the caller's policy cannot
 * run with is dropped (in_order / hold_ends with a fixed count per step; those, separate_twins
 * and guidance with wino), and so is the model's policy when the caller turns on a switch it
 * cannot run with; the model's threshold is its own policy's, not a wino the caller picks.
 */
export function withModelDefaults(o: GenerateOptions, d: GenerationDefaults | undefined, room?: number): GenerateOptions {
  if (!d || o.modelDefaults === false) return o;
  const out: Record<string, unknown> = { ...o };
  for (const [k, v] of Object.entries(d)) if (out[k] === undefined) out[k] = v;
  if (o.maxTokens === undefined && d.maxTokens !== undefined && room !== undefined && room >= 1) out.maxTokens = Math.min(d.maxTokens, room);
  const asked = o as Record<string, unknown>;
  if (o.policy === undefined && conflictsOf(d.policy).some((k) => on(asked[k]))) delete out.policy;
  for (const k of conflictsOf(o.policy)) if (asked[k] === undefined) delete out[k];
  if (o.policy !== undefined && o.threshold === undefined && (o.policy === 'wino') !== (d.policy === 'wino')) delete out.threshold;
  // (a model's lead_token true is for decoding in its own blocks: where a request picks its own
  // attention or block_length, the engine's choice, which knows whether the lead can apply, stands;
  // false never fails a request)
  if (d.leadToken === true && o.leadToken === undefined && (o.attention !== undefined || o.blockLength !== undefined)) delete out.leadToken;
  // (guidance runs without a cache: a model's cache preference does not apply to it)
  if (o.cfgScale !== undefined && o.cfgScale > 0 && o.cache === undefined) delete out.cache;
  // (a model's token-editing defaults give way to what the request asks that excludes them:
  // wino, guidance, a constrained output; and a model's wino to a request's token editing)
  if ((o.policy === 'wino' || (o.cfgScale ?? 0) > 0 || o.constraint) && o.editingThreshold === undefined) delete out.editingThreshold;
  if (o.constraint && o.earlyCommit === undefined) delete out.earlyCommit;
  if (o.policy === undefined && d.policy === 'wino' && o.editingThreshold !== undefined && o.editingThreshold !== null) {
    delete out.policy;
    if (o.threshold === undefined) delete out.threshold;
    if (o.verifyThreshold === undefined) delete out.verifyThreshold;
  }
  if ((out.editingThreshold === undefined || out.editingThreshold === null) && o.maxPostSteps === undefined) delete out.maxPostSteps;
  return out as GenerateOptions;
}

/** WINO's draft and verification thresholds (its authors' LLaDA settings) */
export const WINO_DEFAULTS = { threshold: 0.6, verifyThreshold: 0.9 };

export const DEFAULTS = { maxTokens: 128, canvas: 'adaptive' as CanvasMode, initialCanvas: 16, blockLength: 32, policy: 'threshold' as Policy, threshold: 0.9, gamma: 1.0, eps: 1e-3, algTemp: 0, cache: 'prefix' as CacheMode, maxPostSteps: 16 };

function intIn(v: unknown, param: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new OptionError(param, `${param} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return v;
}

function numIn(v: unknown, param: string, lo: number, hi: number, loOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (loOpen && v === lo))
    throw new OptionError(param, `${param} must be a number in ${loOpen ? '(' : '['}${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return v;
}

export interface ModelLimits {
  maxPositions: number;
  vocabSize: number;
  attention: Attention;
  stopTokens: number[];
  causal: boolean;
  /** candidates the graph returns per position (a causal model's tokens can list them all as
   *  alternatives, a diffusion model's one fewer: the mask token is never one) */
  topK: number;
  /** a block diffusion model's own block size (blocks aligned to position 0): decoding goes block by block */
  modelBlock?: number;
  /** its decoder's block inside a model block (default: the model block) */
  subBlock?: number;
  /** the prediction for position i is read from row i - 1 */
  shifted?: boolean;
  /** trained on text with no end padding (MDLM, BD3-LM): the canvas is fixed unless asked otherwise */
  unpadded?: boolean;
}

export function resolveOptions(o: GenerateOptions, promptLength: number, m: ModelLimits): ResolvedOptions {
  const room = m.maxPositions - promptLength;
  if (room < 1) throw new OptionError('messages', `the prompt is ${promptLength} tokens; the model context is ${m.maxPositions} tokens`, 'context_length_exceeded');
  const maxTokens = intIn(o.maxTokens ?? Math.min(DEFAULTS.maxTokens, room), 'max_tokens', 1, 1 << 20);
  if (promptLength + maxTokens > m.maxPositions)
    throw new OptionError('max_tokens', `prompt (${promptLength} tokens) plus max_tokens (${maxTokens}) exceeds the model context of ${m.maxPositions} tokens`, 'context_length_exceeded');
  let blockLength: number;
  if (m.causal) blockLength = 1;
  else if (m.modelBlock) {
    // the model's blocks (or whole multiples of them): aligned to position 0, so the first one
    // holds the prompt's tail and no block length has to divide max_tokens
    blockLength = o.blockLength === undefined ? (m.subBlock ?? m.modelBlock) : intIn(o.blockLength, 'block_length', 1, 1 << 20);
    if (blockLength % m.modelBlock !== 0 && m.modelBlock % blockLength !== 0)
      throw new OptionError('block_length', `block_length ${blockLength} must divide the model's block size ${m.modelBlock} or be a multiple of it`);
  } else if (o.blockLength !== undefined) {
    blockLength = intIn(o.blockLength, 'block_length', 1, maxTokens);
    if (maxTokens % blockLength !== 0) throw new OptionError('block_length', `block_length ${blockLength} does not divide max_tokens ${maxTokens}`);
  } else blockLength = Math.min(DEFAULTS.blockLength, maxTokens);
  const blocks = Math.ceil(maxTokens / blockLength);
  let stepsPerBlock = blockLength;
  if (o.steps !== undefined && m.modelBlock) stepsPerBlock = intIn(o.steps, 'steps', 1, 1 << 20); // (per block, as the block model's own decoders count them)
  else if (o.steps !== undefined && !m.causal) {
    const steps = intIn(o.steps, 'steps', 1, 1 << 20);
    if (steps % blocks !== 0) throw new OptionError('steps', `steps ${steps} must be a multiple of the number of blocks (${blocks} = max_tokens ${maxTokens} / block_length ${blockLength})`);
    stepsPerBlock = steps / blocks;
  }
  const policy = o.policy ?? DEFAULTS.policy;
  if (!POLICIES.includes(policy)) throw new OptionError('policy', `policy must be one of ${POLICIES.join(', ')}; got ${JSON.stringify(policy)}`);
  // (a schedule's step past one token per step commits nothing and still costs a forward: a
  // request could hold its slot for a million of them; for the others steps is only a bound)
  if (o.steps !== undefined && stepsPerBlock > blockLength && (isFixedCount(policy) || policy.startsWith('dream_')))
    throw new OptionError('steps', `steps ${o.steps} gives ${stepsPerBlock} steps to a block of ${blockLength} tokens: policy ${policy} commits a scheduled count per step, and past one token per step a step commits nothing`);
  // (a fixed count per step is a schedule those two would break: fewer commits leave masks)
  for (const [on, param] of [[o.holdEnds, 'hold_ends'], [o.inOrder, 'in_order']] as const)
    if (on && isFixedCount(policy)) throw new OptionError(param, `${param} needs a policy without a fixed count per step (threshold, entropy_bounded, dream_*), not ${policy}`);
  if (policy === 'wino') {
    // (its revocations are its own order: the pick filters would fight them)
    for (const [on, param] of [[o.holdEnds, 'hold_ends'], [o.inOrder, 'in_order'], [o.separateTwins, 'separate_twins'], [o.cfgScale, 'cfg_scale']] as const)
      if (on) throw new OptionError(param, `${param} does not combine with policy wino (it commits and revokes by its own rule)`);
    if (m.attention !== 'bidirectional' || o.attention !== undefined && o.attention !== 'bidirectional')
      throw new OptionError('policy', 'policy wino needs a bidirectional diffusion model (LLaDA-style): it verifies a token with its own position hidden');
    if (m.shifted) throw new OptionError('policy', 'policy wino needs unshifted logits (LLaDA layout): a shifted model reads position i from row i - 1, which the verification rows cannot hide');
  }
  const temperature = numIn(o.temperature ?? 0, 'temperature', 0, 100);
  const topP = o.topP === undefined ? undefined : numIn(o.topP, 'top_p', 0, 1, true);
  const topK = o.topK === undefined ? undefined : intIn(o.topK, 'top_k', 1, m.vocabSize);
  // (a model trained without end padding cannot say where an answer ends: its canvas is fixed)
  const canvas = o.canvas ?? (m.unpadded ? 'fixed' : DEFAULTS.canvas);
  if (!CANVAS_MODES.includes(canvas)) throw new OptionError('canvas', `canvas must be one of ${CANVAS_MODES.join(', ')}; got ${JSON.stringify(canvas)}`);
  const initialCanvas = intIn(o.initialCanvas ?? DEFAULTS.initialCanvas, 'initial_canvas', 1, 1 << 20);
  const attention = o.attention ?? m.attention;
  if (m.causal && attention !== 'causal') throw new OptionError('attention', 'a causal model only supports causal attention');
  if (!m.causal && attention === 'causal') throw new OptionError('attention', 'a diffusion model cannot decode with causal attention');
  const cfgScale = numIn(o.cfgScale ?? 0, 'cfg_scale', 0, 100);
  if (cfgScale > 0 && attention !== 'bidirectional')
    throw new OptionError('cfg_scale', `classifier-free guidance needs a bidirectional diffusion model (LLaDA, Dream); this one decodes ${attention === 'causal' ? 'left to right' : 'block by block'}`);
  const cache = o.cache ?? (cfgScale > 0 ? 'none' : DEFAULTS.cache);
  if (!CACHE_MODES.includes(cache)) throw new OptionError('cache', `cache must be one of ${CACHE_MODES.join(', ')}; got ${JSON.stringify(cache)}`);
  if (cfgScale > 0 && cache !== 'none') throw new OptionError('cache', `cfg_scale runs without a cache (the unguided pass has a context of its own): leave cache unset or "none", not ${JSON.stringify(cache)}`);
  const editingThreshold = o.editingThreshold === undefined || o.editingThreshold === null ? null : numIn(o.editingThreshold, 'editing_threshold', 0, 1);
  if (editingThreshold !== null) {
    if (m.causal) throw new OptionError('editing_threshold', 'token editing needs a diffusion model (a causal model never reads a committed token again)');
    for (const [on, param] of [[policy === 'wino', 'policy'], [cfgScale > 0, 'cfg_scale']] as const)
      if (on) throw new OptionError(param, `${param === 'policy' ? 'policy wino' : param} does not combine with editing_threshold (token editing)`);
  } else if (o.maxPostSteps !== undefined) throw new OptionError('max_post_steps', 'max_post_steps applies with editing_threshold (token editing)');
  // (a block's first position reads a clean row only where logits are shifted across blocks, and
  // every model block starts a decoding block only where those are no longer than the model's)
  const leadable = m.modelBlock !== undefined && !!m.shifted && attention === 'block_causal' && blockLength <= m.modelBlock;
  if (o.leadToken === true && !leadable) throw new OptionError('lead_token', 'lead_token applies to block diffusion models with shifted logits (Fast-dLLM v2 layout) decoded in their own blocks, with a block_length no longer than the model\'s block');
  const leadToken = o.leadToken ?? (leadable && m.subBlock !== undefined);
  const frequencyPenalty = numIn(o.frequencyPenalty ?? 0, 'frequency_penalty', -2, 2);
  const presencePenalty = numIn(o.presencePenalty ?? 0, 'presence_penalty', -2, 2);
  // (both score committed tokens against the answer they are part of: a penalty would count each against itself)
  for (const [v, param] of [[frequencyPenalty, 'frequency_penalty'], [presencePenalty, 'presence_penalty']] as const)
    if (v !== 0 && (policy === 'wino' || editingThreshold !== null)) throw new OptionError(param, `${param} does not combine with ${policy === 'wino' ? 'policy wino' : 'editing_threshold'} (they score committed tokens, which the penalty counts)`);
  const earlyCommit = o.earlyCommit === undefined || o.earlyCommit === null ? null : numIn(o.earlyCommit, 'early_commit', 0, 1000, true);
  if (earlyCommit !== null && m.causal) throw new OptionError('early_commit', 'early_commit needs a diffusion model (a causal model commits one token per step)');
  if (earlyCommit !== null && policy === 'wino') throw new OptionError('early_commit', 'early_commit does not combine with policy wino (it commits and revokes by its own rule)');
  const maxPostSteps = intIn(o.maxPostSteps ?? DEFAULTS.maxPostSteps, 'max_post_steps', 0, 1024);
  const seed = o.seed === undefined ? undefined : intIn(o.seed, 'seed', -(2 ** 53), 2 ** 53);
  const stopTokens = o.stopTokens ?? m.stopTokens;
  for (const t of stopTokens) intIn(t, 'stop_tokens', 0, m.vocabSize - 1);
  const stopStrings = o.stopStrings ?? [];
  if (stopStrings.some((s) => typeof s !== 'string' || s.length === 0)) throw new OptionError('stop', 'stop strings must be non-empty strings');
  return {
    maxTokens,
    canvas,
    initialCanvas,
    blockLength,
    stepsPerBlock,
    policy,
    separateTwins: o.separateTwins ?? false,
    holdEnds: o.holdEnds ?? false,
    inOrder: o.inOrder ?? false,
    leadToken,
    earlyCommit,
    params: {
      // (wino drafts wide: its threshold defaults lower, as its authors run it)
      threshold: numIn(o.threshold ?? (policy === 'wino' ? WINO_DEFAULTS.threshold : DEFAULTS.threshold), 'threshold', 0, 1),
      verifyThreshold: numIn(o.verifyThreshold ?? WINO_DEFAULTS.verifyThreshold, 'verify_threshold', 0, 1),
      gamma: numIn(o.gamma ?? DEFAULTS.gamma, 'gamma', 0, 1e6),
      eps: numIn(o.eps ?? DEFAULTS.eps, 'eps', 0, 1, true),
      algTemp: numIn(o.algTemp ?? DEFAULTS.algTemp, 'alg_temp', 0, 100),
    },
    sampler: { temperature, topK, topP },
    seed,
    cache,
    attention,
    stopTokens,
    stopStrings,
    logprobs: o.logprobs === undefined ? null : intIn(o.logprobs, 'top_logprobs', 0, m.causal ? m.topK : m.topK - 1),
    promptLogprobs: o.promptLogprobs === undefined ? null : intIn(o.promptLogprobs, 'prompt_logprobs', 0, m.topK),
    logitBias: resolveBias(o.logitBias, m.vocabSize),
    frequencyPenalty,
    presencePenalty,
    cfgScale,
    editingThreshold,
    maxPostSteps,
  };
}
