// The denoising loop as a state machine: plan() says which forward the next step needs
// (window, cache, visibility, queried rows), accept() applies its scores (sample, commit,
// stop) and returns the step's event. generate() drives one sequence; the engine's
// scheduler drives many, batching their plans into one forward per step.
//
// Canvas: prompt + maxTokens positions, masked until committed. Blocks of blockLength
// are decoded left to right. Cache modes (bidirectional models):
//   none    every step runs the whole canvas;
//   prefix  at a block start run everything and keep K/V before the block; then run
//           block + suffix against it;
//   dual    also keep the suffix's K/V; then run only the block (approximate).
// Block-causal and causal attention make the prefix cache exact: finished blocks never
// see later positions, so their K/V are final once computed.
//
// Adaptive canvas (bidirectional models, no suffix): max_tokens is a cap, not the canvas.
// The canvas starts at initialCanvas positions. At each block start, while it can grow, the
// forward also scores the canvas's last position: a model trained with end-of-text padding
// puts nearly all its probability there on end tokens when the answer fits, and almost none
// when it does not. Below END_PROBE the forward is discarded and the canvas doubles (capped
// at max_tokens). A canvas that fills without an end grows the same way. Once committed end
// tokens fill the canvas's tail (the padding after the answer), the canvas is cut after the
// first of them: later forwards no longer run the padding rows.
//
// Constrained (options.constraint, e.g. JSON mode): each step commits the first masked
// position and the ones after it while the model's choice is confident (above `threshold`,
// 0.9 by default; `policy` and `steps` do not apply), every token chosen among those the
// constraint allows after the tokens before it (constraint.ts). Only the first
// CONSTRAINED_ROWS masks are scored. The output ends when the constraint says it is whole.

import { CancelledError, ConstraintError, FormatError, OptionError } from '../errors.ts';
import type { ModelArgs } from '../formats/config.ts';
import type { GenerationDefaults } from '../formats/generation-config.ts';
import type { SpecialTokens } from '../formats/tokenizer.ts';
import type { KVCache } from '../runtime/kv.ts';
import type { ForwardRequest, ForwardResult } from '../runtime/session.ts';
import { IncrementalDecoder } from '../formats/incremental.ts';
import { resolveOptions, withModelDefaults, type GenerateOptions, type ModelLimits, type ResolvedOptions } from './options.ts';
import { earlyCommit, holdEnds, inOrder, isFixedCount, selectCommits, separateTwins, winoRevoke } from './policies.ts';
import { makeRng, randomSeed, type Rng } from './rng.ts';
import { biasScores, choose, guidedScores, needsFullLogits, topGap, type Choice } from './sampling.ts';
import { constrainedChoice, type Constraint } from './constraint.ts';
import { transferCounts } from './schedule.ts';
import { withShadow, withUnguided } from './packing.ts';

/** What decoding needs of a model. */
export interface Denoiser {
  args: ModelArgs;
  special: SpecialTokens;
  topK: number;
  /** the checkpoint's preferred decoding (generation_config.json): fills options a caller leaves unset */
  defaults?: GenerationDefaults;
  forward(reqs: ForwardRequest[]): Promise<ForwardResult[]>;
}

function limitsOf(model: Denoiser, modelBlock: number | undefined): ModelLimits {
  const a = model.args;
  return {
    maxPositions: a.maxPositions,
    vocabSize: a.vocabSize,
    attention: a.attention,
    stopTokens: model.special.stop,
    causal: a.attention === 'causal',
    topK: model.topK,
    modelBlock,
    subBlock: a.subBlock,
    shifted: a.shiftedLogits,
    unpadded: a.dit !== undefined,
  };
}

/**
 * A model's generation_config.json defaults must be valid on their own (checked once at load,
 * so that a bad file is the checkpoint's error, not every request's).
 */
export function checkModelDefaults(model: Denoiser): void {
  if (!model.defaults || Object.keys(model.defaults).length === 0) return;
  const o = withModelDefaults({}, model.defaults, model.args.maxPositions - 1);
  try {
    resolveOptions(o, 1, limitsOf(model, modelBlockOf(model.args, undefined)));
    // (a max_post_steps default only applies once a request turns editing on: checked here all the same)
    const mp = model.defaults.maxPostSteps;
    if (mp !== undefined && (!Number.isInteger(mp) || mp < 0 || mp > 1024)) throw new OptionError('max_post_steps', `max_post_steps must be an integer in [0, 1024], got ${JSON.stringify(mp)}`);
  } catch (e) {
    if (e instanceof OptionError) throw new FormatError('generation_config_invalid', `generation_config.json: ${e.message}`);
    throw e;
  }
}

export type FinishReason = 'stop' | 'length';

export interface StepStats {
  /** forward passes so far */
  forwards: number;
  /** of which discarded: an adaptive canvas's probe found it too short */
  discarded: number;
  /** positions drafted (the canvas; with an adaptive canvas its size so far) */
  canvas: number;
  /** positions committed so far */
  committed: number;
  /** committed tokens masked again (policy wino's revocations) */
  remasked: number;
  /** committed tokens replaced by another (token editing, editing_threshold) */
  edited: number;
  /** prompt positions whose keys and values came from another request's (a prefix cache) */
  cached: number;
  /** of the forwards, prefill chunks (a long prompt run in parts; they score nothing) */
  prefill: number;
  elapsedMs: number;
}

export interface StepEvent {
  step: number;
  block: number;
  /** positions (0 = first generated position) committed this step, with their tokens (token
   * editing: also positions whose committed token this step replaced) */
  committed: { position: number; token: number }[];
  /** positions whose committed token this step masked again (policy wino) */
  revoked: number[];
  /** generated positions: committed tokens, and the current best guess where still masked (-1 if never scored) */
  draft: Int32Array;
  /** 1 where the draft position is committed (with policy wino revocable, with token editing
   * replaceable, until its block is done) */
  final: Uint8Array;
  /** generated positions final left to right (the streamable prefix), capped at the output end */
  finalized: number;
  done: boolean;
  stats: StepStats;
  /** when asked for: per generated position, filled once committed (the first `finalized` are final) */
  logprobs?: readonly TokenLogprob[];
  /** prompt log-probabilities (options.promptLogprobs), once, in the event of the step that completed them */
  promptLogprobs?: readonly (TokenLogprob | null)[];
  /** a prefill chunk ran: nothing was scored, the draft is unchanged */
  prefill?: boolean;
}

/** An output token's log-probability under the model when it was committed, and the best
 * alternatives at that moment (for a diffusion model: given the draft of that step). */
export interface TokenLogprob {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
  /** prompt log-probabilities: the token's rank in the distribution (1: the most likely) */
  rank?: number;
}

export interface GenerateResult {
  tokens: number[];
  /** one per token, when asked for (options.logprobs) */
  logprobs?: TokenLogprob[];
  /** one per prompt token, when asked for (options.promptLogprobs): null for the first */
  promptLogprobs?: (TokenLogprob | null)[];
  /** set when a stop string cut the text (needs detokenize) */
  text?: string;
  finishReason: FinishReason;
  promptTokens: number;
  stats: StepStats & { steps: number };
}

/** The canvas fits the answer when at least this much of its last position's probability is
 * on end tokens (measured on the bundled model: >= 0.98 when it fits, <= 0.4 when it does not). */
export const END_PROBE = 0.5;

/** masks scored per step of a constrained generation (the longest run one step can commit;
 * each brings a full logits row: 0.5 MB at a 126k vocabulary). On the bundled model's JSON
 * task 8 rows capped a step at 5.8 tokens, 16 and 32 reached 11.6 */
export const CONSTRAINED_ROWS = 32;

interface Pending {
  req: ForwardRequest;
  /** canvas positions being scored, one per query (then the probe's, if any) */
  targets: number[];
  /** the first `candidates` targets are the block's masks, the ones a step may commit */
  candidates: number;
  /** query row scoring the canvas's last position, when the canvas may grow */
  probe?: number;
  /** after the forward, keep cache entries [0..pastKeep) plus these window rows */
  keep?: { past: number; window: number[] };
  /** wino: committed positions of the block verified by the shadow rows (their query rows follow the targets') */
  verify?: number[];
  /** token editing: the block's committed positions read again (their query rows follow the targets') */
  edit?: number[];
  /** a chunk of the prompt only extends the cache (chunked prefill): nothing is scored */
  prefill?: boolean;
  /** Fast-dLLM v2: this forward decides only the model block's first position, at once */
  lead?: boolean;
  /** prompt log-probabilities: the prompt positions whose rows score the token after them (their query rows follow all others) */
  scored?: number[];
}

/** How many leading cache entries hold positions 0, 1, ... in order (what another request may start from). */
function inOrderEntries(c: KVCache): number {
  let n = 0;
  while (n < c.length && c.positions[n] === n) n++;
  return n;
}

/** A block diffusion model's block size, when it decodes with its own block-causal attention. */
function modelBlockOf(a: ModelArgs, attention?: string): number | undefined {
  return a.attention === 'block_causal' && a.blockSize && (attention ?? a.attention) === 'block_causal' ? a.blockSize : undefined;
}

export class Generation {
  readonly opts: ResolvedOptions;
  readonly promptLength: number;
  private model: Denoiser;
  /** end of the canvas (exclusive); grows up to capEnd with an adaptive canvas */
  private genEnd: number;
  private readonly capEnd: number;
  /** a block model's canvas padded to whole blocks (= capEnd for other models) */
  private readonly padEnd: number;
  private readonly adaptive: boolean;
  /** the answer's end is committed: the canvas neither grows nor probes any more */
  private sized = false;
  private readonly suffixLength: number;
  private rng: Rng;
  private tokens: Int32Array;
  private committed: Uint8Array;
  private guess: Int32Array;
  private mask: number;
  private causal: boolean;
  private shift: number;
  /** a block diffusion model's block size (blocks aligned to position 0), or null */
  private modelBlock: number | null = null;
  private blocks: [number, number][];
  private block = 0;
  private stepInBlock = 0;
  /** the current block's step budget */
  private blockSteps = 0;
  private schedule: number[] = [];
  private cache: KVCache | null = null;
  private pending: Pending | null = null;
  private stepCount = 0;
  private forwards = 0;
  private discarded = 0;
  private remasked = 0;
  private edited = 0;
  /** token editing: forwards of the current block that began with no masks left */
  private postSteps = 0;
  /** prompt positions started from another request's cache (startFrom) */
  private reused = 0;
  /** forwards that ran a prefill chunk (scored nothing) */
  private prefillForwards = 0;
  /**
   * Chunked prefill: at most this many prompt rows per forward (0: the whole prompt at once),
   * so that a long prompt does not hold up the batch's other sequences for its whole length.
   * Causal models, and block models in their own blocks (chunks of whole blocks); set before
   * the first step (the scheduler does).
   */
  prefillChunk = 0;
  /** wino: tokens the previous step of the block committed (bounds its revocations) */
  private lastAccept = WINO_FIRST_ACCEPT;
  private committedCount = 0;
  private finalizedEnd: number;
  private outputEnd: number | null = null;
  private text: string | undefined;
  private finish: FinishReason | null = null;
  private startedAt = performance.now();
  private stopSet: Set<number>;
  private unpenalized: Set<number>;
  /** the finalized text, when stop strings are searched for */
  private finalText?: IncrementalDecoder;
  private longestStop = 0;
  private wantLogits: boolean;
  /** per output position, filled when it is committed (options.logprobs) */
  private logprobs?: TokenLogprob[];
  /** per prompt position, from the row before it (options.promptLogprobs; causal models) */
  private promptScores: (TokenLogprob | null)[] | null = null;
  /** prompt rows scored so far (a row p scores position p + 1) */
  private promptRowsScored = 0;
  /** the prompt's scores went out with an event */
  private promptScoresSent = false;
  private constraint: Constraint | null;
  /** the constraint's state after the committed output */
  private cState: unknown;

  constructor(model: Denoiser, prompt: ArrayLike<number>, options: GenerateOptions = {}) {
    options = withModelDefaults(options, model.defaults, model.args.maxPositions - prompt.length - (options.suffix?.length ?? 0));
    const a = model.args;
    this.model = model;
    this.causal = a.attention === 'causal';
    const suffix = options.suffix ?? [];
    if (suffix.length > 0 && a.attention !== 'bidirectional') throw new OptionError('suffix', `a ${a.attention === 'causal' ? 'causal' : 'block-causal'} model cannot fill in the middle (it never sees what follows); suffix needs a bidirectional diffusion model`);
    if (prompt.length === 0 && (a.shiftedLogits || this.causal)) throw new OptionError('prompt', 'this model needs at least one prompt token');
    for (const [what, ids] of [['prompt', prompt], ['suffix', suffix]] as const) {
      for (let i = 0; i < ids.length; i++) {
        const t = ids[i];
        if (!Number.isInteger(t) || t < 0 || t >= a.vocabSize) throw new OptionError(what, `${what} token ${t} at index ${i} is outside the vocabulary [0, ${a.vocabSize})`, 'invalid_token');
      }
    }
    const modelBlock = modelBlockOf(a, options.attention);
    this.opts = resolveOptions(options, prompt.length + suffix.length, limitsOf(model, modelBlock));
    this.modelBlock = modelBlock ?? null;
    if (!this.causal && model.special.mask === null) throw new OptionError('model', 'this model has no mask token');
    if (!this.causal && this.opts.logitBias?.ids.includes(model.special.mask!)) throw new OptionError('logit_bias', `logit_bias cannot bias the mask token (${model.special.mask}): it is never an answer token`);
    this.constraint = options.constraint ?? null;
    if (this.constraint && suffix.length > 0) throw new OptionError('suffix', 'a constrained output (JSON mode) cannot fill in the middle');
    this.cState = this.constraint?.start();
    if (this.opts.stopStrings.length > 0 && !options.detokenize) throw new OptionError('stop', 'stop strings need a detokenize function');
    if (options.detokenize && this.opts.stopStrings.length > 0) {
      this.finalText = new IncrementalDecoder(options.detokenize);
      this.longestStop = Math.max(...this.opts.stopStrings.map((x) => x.length));
    }
    this.mask = model.special.mask ?? 0;
    this.shift = a.shiftedLogits ? 1 : 0;
    this.rng = makeRng(this.opts.seed ?? randomSeed());
    this.promptLength = prompt.length;
    this.capEnd = prompt.length + this.opts.maxTokens;
    this.suffixLength = suffix.length;
    // (without end tokens an answer never ends early: the canvas is max_tokens from the start)
    this.adaptive = this.opts.canvas === 'adaptive' && this.opts.attention === 'bidirectional' && suffix.length === 0 && this.opts.stopTokens.length > 0;
    this.genEnd = this.adaptive ? prompt.length + Math.min(this.opts.maxTokens, this.opts.initialCanvas) : this.capEnd;
    // a block model's last block is whole, as it was trained: masks past max_tokens up to the
    // block's end, seen by the block and never decoded (the reference decoders' padding)
    this.padEnd = modelBlock ? Math.min(a.maxPositions, Math.ceil(this.capEnd / modelBlock) * modelBlock) : this.capEnd;
    const N = Math.max(this.padEnd, this.capEnd + suffix.length);
    this.tokens = new Int32Array(N).fill(this.mask);
    this.tokens.set(Array.from(prompt));
    this.tokens.set(Array.from(suffix), this.capEnd);
    this.committed = new Uint8Array(N);
    this.committed.fill(1, 0, prompt.length);
    this.committed.fill(1, this.capEnd);
    this.guess = new Int32Array(this.opts.maxTokens).fill(-1);
    if (this.opts.logprobs !== null) this.logprobs = new Array(this.opts.maxTokens);
    if (this.opts.promptLogprobs !== null) {
      // (a diffusion model scores masked positions, never the prompt it reads whole)
      if (!this.causal) throw new OptionError('prompt_logprobs', "prompt log-probabilities need a causal model: a diffusion model never scores the prompt's tokens");
      if (this.opts.cfgScale > 0) throw new OptionError('prompt_logprobs', 'prompt log-probabilities do not combine with cfg_scale');
      // (each scored row returns a full logits row: the prompt is read in chunks of at most
      // PROMPT_SCORE_CHUNK rows, which needs the cache)
      if (this.opts.cache === 'none') throw new OptionError('prompt_logprobs', 'prompt log-probabilities need the cache (the prompt is scored in chunks); not with cache "none"');
      this.promptScores = Array.from({ length: prompt.length }, () => null);
    }
    this.finalizedEnd = prompt.length;
    this.stopSet = new Set(this.opts.stopTokens);
    // (the penalties never count end tokens: the request's, and the model's own, which ignore_eos
    // takes off the request's list but not off the canvas's padding)
    this.unpenalized = new Set([...this.opts.stopTokens, ...model.special.stop]);
    if (this.opts.policy === 'wino' && this.constraint) throw new OptionError('policy', 'policy wino does not combine with a constrained output (JSON mode decodes left to right)');
    if (this.opts.editingThreshold !== null && this.constraint) throw new OptionError('editing_threshold', 'token editing does not combine with a constrained output (JSON mode decodes left to right)');
    if (this.opts.earlyCommit !== null && this.constraint) throw new OptionError('early_commit', 'early_commit does not combine with a constrained output (JSON mode decodes left to right)');
    // (wino reads a committed token's probability, which need not be among the candidates)
    this.wantLogits = this.constraint !== null || this.opts.logitBias !== null || this.opts.frequencyPenalty !== 0 || this.opts.presencePenalty !== 0 || this.opts.cfgScale > 0 || this.opts.policy === 'wino' || needsFullLogits(this.opts.sampler, model.topK);
    this.blocks = this.partition(prompt.length);
    this.startBlock();
  }

  /** Blocks of blockLength from `from` to the canvas end (the last one may be shorter). */
  private partition(from: number): [number, number][] {
    const out: [number, number][] = [];
    const bl = this.opts.blockLength;
    // a block model's blocks end at multiples of the block length: the first one is the rest of the prompt's
    for (let s = from; s < this.genEnd; ) {
      const e = Math.min(this.genEnd, this.modelBlock ? (Math.floor(s / bl) + 1) * bl : s + bl);
      out.push([s, e]);
      s = e;
    }
    return out;
  }

  /**
   * How many leading prompt positions have keys and values that depend on the prompt alone, so
   * that another request whose prompt starts with the same tokens may reuse them: all of it
   * for a causal model; for a block diffusion model decoded in its own blocks, the prompt's
   * whole blocks (the block holding the prompt's tail is finished with the answer in it) up to
   * where the first forward's window starts. 0 for bidirectional models (every position sees
   * the canvas) and without a cache.
   */
  get reusablePrompt(): number {
    if (!this.canShare) return 0;
    if (this.causal) return this.promptLength;
    return Math.max(0, Math.floor(this.promptLength / this.shareBlock) * this.shareBlock - this.shift);
  }

  /** Causal models, and block models decoded in their own blocks, with a cache. */
  private get canShare(): boolean {
    // (prompt log-probabilities need every prompt row run: nothing is taken from the store)
    if (this.promptScores) return false;
    return this.opts.cache !== 'none' && (this.causal || (this.modelBlock !== null && this.opts.attention === 'block_causal'));
  }

  /** An entry depends on the tokens of its whole block (one token for a causal model). */
  private get shareBlock(): number {
    return this.causal ? 1 : (this.modelBlock ?? 1);
  }

  /**
   * Start from another request's cached keys and values (entries for positions 0, 1, ... in
   * order; `tokens`: how many leading tokens this prompt shares with the ones they were
   * computed from); only before the first step. Takes the entries of the blocks the two share
   * whole, at most what this request may reuse, and leaves at least one prompt row to run
   * (its scores start the answer). Returns the positions taken.
   */
  startFrom(cache: KVCache, tokens: number): number {
    if (this.forwards > 0 || this.pending || this.cache) return 0;
    const mb = this.shareBlock;
    const n = Math.min(Math.floor(tokens / mb) * mb, inOrderEntries(cache), this.reusablePrompt, this.promptLength - 1);
    if (n <= 0) return 0;
    this.cache = { ...cache, length: n };
    this.reused = n;
    return n;
  }

  /**
   * The cache with this request's reusable prompt entries computed so far (all of them, or the
   * chunks a chunked prefill has run), and the tokens they depend on (a block model's: its
   * whole blocks, one more than the entries with shifted logits), for a prefix store; `done`
   * once all are in.
   */
  promptCache(): { tokens: Int32Array; cache: KVCache; length: number; done: boolean } | null {
    const all = this.reusablePrompt;
    if (all === 0 || !this.cache) return null;
    const mb = this.shareBlock;
    // (a chunk ends on a block boundary; the last step's window ends `shift` before one)
    const n = this.cache.length >= all ? all : Math.floor(this.cache.length / mb) * mb;
    if (n === 0 || inOrderEntries(this.cache) < n) return null;
    return { tokens: this.tokens.subarray(0, Math.ceil(n / mb) * mb), cache: this.cache, length: n, done: n === all };
  }

  /**
   * When done: the cached entries of the whole sequence (prompt and answer as the model saw
   * them) and the tokens they depend on, so that a next chat turn, whose prompt repeats this
   * one and its answer, starts from them. Causal: every token but the last (never run); a
   * block model: its finished blocks, each computed with its final tokens. Null for models
   * that cannot share or before the end.
   */
  finalCache(): { tokens: Int32Array; cache: KVCache; length: number } | null {
    if (!this.done || !this.canShare || !this.cache) return null;
    const n = inOrderEntries(this.cache);
    const t = Math.min(this.tokens.length, Math.ceil(n / this.shareBlock) * this.shareBlock);
    return n > 0 ? { tokens: this.tokens.subarray(0, t), cache: this.cache, length: n } : null;
  }

  /** Double the canvas (up to the cap); the blocks from the current one on are re-cut. */
  private grow(): void {
    const from = this.block < this.blocks.length ? this.blocks[this.block][0] : this.genEnd;
    this.genEnd = Math.min(this.capEnd, this.promptLength + 2 * (this.genEnd - this.promptLength));
    this.blocks = [...this.blocks.slice(0, this.block), ...this.partition(from)];
    this.cache = null;
    this.startBlock();
  }

  /** positions the model sees: the canvas, then the suffix */
  private get seqEnd(): number {
    return this.genEnd + (this.genEnd === this.capEnd ? this.suffixLength : 0);
  }

  get done(): boolean {
    return this.finish !== null;
  }

  private startBlock(): void {
    this.stepInBlock = 0;
    this.postSteps = 0;
    this.lastAccept = WINO_FIRST_ACCEPT;
    const [s, e] = this.blocks[this.block];
    let n = 0;
    for (let p = s; p < e; p++) if (!this.committed[p]) n++;
    // an adaptive canvas's block shorter than blockLength gets its share of the steps, so a
    // fixed count per step stays what `steps` asked for (no steps that commit nothing); a
    // fixed canvas keeps the reference schedule (every block stepsPerBlock)
    if (this.modelBlock !== null && e - s < this.opts.blockLength) {
      // a block model's first block, part of it the prompt's tail: the full block's schedule,
      // as far as its masks go (as the block models' own decoders count)
      this.schedule = [];
      let left = n;
      for (const c of transferCounts(this.opts.blockLength, this.opts.stepsPerBlock)) {
        if (left <= 0) break;
        this.schedule.push(Math.min(c, left));
        left -= c;
      }
      if (this.schedule.length === 0) this.schedule.push(0);
      this.blockSteps = this.schedule.length;
      return;
    }
    this.blockSteps = !this.adaptive || e - s === this.opts.blockLength ? this.opts.stepsPerBlock : Math.max(1, Math.round((this.opts.stepsPerBlock * (e - s)) / this.opts.blockLength));
    this.schedule = transferCounts(n, this.blockSteps);
  }

  /** Visibility of window rows over [cache entries, window]. */
  private visibility(rows: number[], cols: number[]): Uint8Array {
    const v = new Uint8Array(rows.length * cols.length);
    const att = this.opts.attention;
    if (att === 'bidirectional') return v.fill(1);
    const g0 = this.promptLength;
    const bl = this.opts.blockLength;
    // a block diffusion model's blocks are aligned to position 0 (the prompt is blocks too);
    // an override's blocks start after the prompt, which is one block
    const mb = this.modelBlock;
    const blk = mb ? (p: number) => Math.floor(p / mb) : (p: number) => (p < g0 ? -1 : Math.floor((p - g0) / bl));
    // causal: column j is visible from row i when j <= i; block-causal: when its block is not later
    const key = att === 'causal' ? (p: number) => p : blk;
    const colKey = cols.map(key);
    for (let r = 0; r < rows.length; r++) {
      const ki = key(rows[r]);
      for (let c = 0; c < cols.length; c++) v[r * cols.length + c] = colKey[c] <= ki ? 1 : 0;
    }
    return v;
  }

  /** The forward the next step needs. */
  plan(): ForwardRequest {
    if (this.done) throw new Error('generation is finished');
    const N = this.seqEnd;
    let probe: number | undefined;
    let candidates: number;
    const mode = this.opts.cache;
    let windowStart: number;
    let windowEnd: number;
    let usePast = false;
    let keep: Pending['keep'];
    let targets: number[];
    let prefill = false;
    let lead = false;

    if (this.causal) {
      const i = this.blocks[this.block][0];
      targets = [i];
      candidates = 1;
      const cached = mode === 'none' ? 0 : (this.cache?.length ?? 0);
      windowStart = cached;
      windowEnd = i;
      // (a scored prompt runs in chunks whatever the setting: each scored row is a full logits row)
      const chunk = this.promptScores ? Math.min(this.prefillChunk || PROMPT_SCORE_CHUNK, PROMPT_SCORE_CHUNK) : this.prefillChunk;
      if (mode !== 'none' && chunk > 0 && i - cached > chunk) {
        windowEnd = cached + chunk;
        prefill = true;
      }
      usePast = cached > 0;
      if (mode !== 'none') keep = { past: cached, window: range(0, windowEnd - windowStart) };
    } else {
      const [bs, be] = this.blocks[this.block];
      targets = [];
      for (let p = bs; p < be; p++) if (!this.committed[p]) targets.push(p);
      if (this.constraint) targets = targets.slice(0, CONSTRAINED_ROWS);
      // (a block model's cache holds finished blocks: the window starts at the block that holds
      // bs; with shifted logits one row earlier, the previous block's last row, which reads the
      // block's first position: the rest of that finished block is in the cache, exact)
      const mb = this.modelBlock;
      const ws = mb ? Math.max(0, Math.floor(bs / mb) * mb - this.shift) : bs - this.shift;
      const bidir = this.opts.attention === 'bidirectional';
      // (a block model's sub-block sees the rest of its model block, masks included, as the
      // block was trained to be read: bidirectionally, whole)
      const visibleEnd = bidir ? N : mb ? Math.min(this.padEnd, Math.ceil(be / mb) * mb) : be;
      const atStart = this.stepInBlock === 0;
      if (mode === 'none') {
        windowStart = 0;
        windowEnd = visibleEnd;
      } else if (atStart) {
        if (bidir) {
          this.cache = null;
          windowStart = 0;
          windowEnd = N;
          const rows = range(0, ws);
          if (mode === 'dual') rows.push(...range(be, N));
          keep = { past: 0, window: rows };
        } else {
          const cached = this.cache?.length ?? 0;
          windowStart = cached;
          windowEnd = visibleEnd;
          // (chunked prefill: whole prompt blocks before the block the answer starts in)
          if (mb && this.block === 0 && this.prefillChunk > 0 && visibleEnd - cached > this.prefillChunk) {
            const end = Math.min(Math.floor((cached + this.prefillChunk) / mb) * mb, Math.floor(ws / mb) * mb);
            if (end > cached) {
              windowEnd = end;
              prefill = true;
            }
          }
          usePast = cached > 0;
          keep = { past: cached, window: range(0, (prefill ? windowEnd : ws) - windowStart) };
        }
      } else {
        usePast = (this.cache?.length ?? 0) > 0;
        windowStart = ws;
        windowEnd = mode === 'dual' && bidir ? be : visibleEnd;
      }
      // Fast-dLLM v2: a model block's first position is read from the previous block's last row,
      // which sees only finished tokens; its decoder appends that row's argmax as the block's
      // first token before reading the block's masks (the forward that caches the finished block).
      // So the first forward of such a block decides that position alone, at once.
      if (mb && this.opts.leadToken && atStart && bs % mb === 0 && bs >= this.promptLength && !this.committed[bs] && !this.constraint) {
        targets = [bs];
        lead = true;
      }
      candidates = targets.length;
      if (atStart && this.adaptive && !this.sized && this.genEnd < this.capEnd) {
        probe = targets.indexOf(this.genEnd - 1);
        if (probe < 0) {
          probe = targets.length;
          targets.push(this.genEnd - 1);
        }
      }
    }

    if (prefill) {
      targets = [];
      candidates = 0;
    }
    // token editing: the block's committed answer positions are scored too (their rows follow the targets')
    let edit: number[] | undefined;
    if (this.opts.editingThreshold !== null && !prefill && !this.causal) {
      const [bs, be] = this.blocks[this.block];
      edit = [];
      for (let p = Math.max(bs, this.promptLength); p < be; p++) if (this.committed[p]) edit.push(p);
    }
    const rows = range(windowStart, windowEnd);
    const past = usePast && this.cache ? this.cache : undefined;
    const cols = past ? [...Array.from(past.positions.subarray(0, past.length)), ...rows] : rows;
    // prompt log-probabilities: the window's prompt rows not yet read, each scoring the next prompt token
    const scored = this.promptScores ? range(Math.max(windowStart, this.promptRowsScored), Math.min(windowEnd, this.promptLength - 1)) : [];
    // (a prefill chunk scores its last row, unread: the graph always returns a row)
    const queries = prefill && scored.length === 0 ? [rows.length - 1] : [...[...targets, ...(edit ?? [])].map((p) => p - this.shift - windowStart), ...scored.map((p) => p - windowStart)];
    const req: ForwardRequest = {
      ids: Int32Array.from(rows, (p) => this.tokens[p]),
      positions: Int32Array.from(rows),
      past,
      visible: this.visibility(rows, cols),
      queries: Int32Array.from(queries),
      wantPresent: keep !== undefined,
      // a cache that is appended in place (causal, block-causal) is allocated for the whole
      // canvas at once; a bidirectional cache is rebuilt at every block start
      cacheRows: this.causal || this.opts.attention !== 'bidirectional' ? this.genEnd : undefined,
      wantLogits: this.wantLogits || scored.length > 0,
    };
    let verify: number[] | undefined;
    let planned = req;
    if (prefill) planned = req;
    else if (this.opts.cfgScale > 0) planned = withUnguided(req, (p) => p < this.promptLength || p >= this.capEnd, this.mask);
    // (wino: a shadow only when the block has commits to verify)
    else if (this.opts.policy === 'wino' && !this.causal) {
      const [bs, be] = this.blocks[this.block];
      let any = false;
      for (let p = bs; p < be && !any; p++) any = this.committed[p] === 1;
      if (any) ({ req: planned, verify } = withShadow(req, this.blocks[this.block], this.committed, this.mask));
    }
    this.pending = { req: planned, targets, candidates, keep, probe, verify, edit, prefill, lead, ...(scored.length > 0 ? { scored } : {}) };
    return this.pending.req;
  }

  /**
   * This step's additions to the logits: logit_bias, plus the penalties over the answer's committed
   * tokens (end tokens aside: a diffusion canvas pads its tail with them) — frequency x count +
   * presence x (count > 0) off each such token's logit; null when there is none.
   */
  private stepBias(): { ids: Int32Array; values: Float32Array } | null {
    const { frequencyPenalty: fp, presencePenalty: pp, logitBias } = this.opts;
    if (fp === 0 && pp === 0) return logitBias;
    const total = new Map<number, number>();
    if (logitBias) logitBias.ids.forEach((t, i) => total.set(t, logitBias.values[i]));
    const count = new Map<number, number>();
    for (let p = this.promptLength; p < this.genEnd; p++) if (this.committed[p] && !this.unpenalized.has(this.tokens[p])) count.set(this.tokens[p], (count.get(this.tokens[p]) ?? 0) + 1);
    for (const [t, n] of count) total.set(t, (total.get(t) ?? 0) - fp * n - pp);
    if (total.size === 0) return null;
    return { ids: Int32Array.from(total.keys()), values: Float32Array.from(total.values()) };
  }

  /** Apply the planned forward's scores: choose, commit, check stops. */
  accept(res: ForwardResult): StepEvent {
    const pend = this.pending;
    if (!pend) throw new Error('accept() without plan()');
    this.pending = null;
    this.forwards++;
    const V = this.model.args.vocabSize;
    // (query rows: the targets', then wino's verification rows or token editing's rows, then the
    // prompt rows scored for their next token)
    const Q0 = pend.targets.length + (pend.verify?.length ?? 0) + (pend.edit?.length ?? 0);
    const Q = Math.max(1, Q0 + (pend.scored?.length ?? 0));
    if (pend.scored) {
      this.scorePrompt(res, pend.scored, Q0, res.topIds.length / Q);
      // (the answer is chosen as it would be without them: from the candidates alone when
      // nothing else asked for the full logits)
      if (!this.wantLogits) res = { ...res, logits: undefined };
    }
    // the end probe reads the model's own rows (with guidance, the first half: the unguided
    // pass's view of the answer's length is no calibrated one), biased like every choice
    let probeRows: ForwardResult | null = null;
    const bias = this.stepBias();
    if (pend.probe !== undefined && this.opts.cfgScale > 0) {
      probeRows = firstRows(res, Q, V);
      if (bias) probeRows = { ...probeRows, ...biasScores(probeRows, bias, V) };
    }
    if (this.opts.cfgScale > 0) res = { ...res, ...guidedScores(res, this.opts.cfgScale, V) };
    // logit_bias and the penalties: every choice below sees the biased distribution
    if (bias) res = { ...res, ...biasScores(res, bias, V) };
    if (pend.probe !== undefined && !probeRows) probeRows = res;
    const K = res.topIds.length / Q;
    if (probeRows && this.endMass(probeRows, pend.probe!, probeRows.topIds.length / Q) < END_PROBE) {
      // the answer does not fit: nothing from this forward is kept
      this.discarded++;
      this.grow();
      this.stepCount++;
      return this.event([]);
    }
    if (pend.keep && res.takeCache) this.cache = res.takeCache(range(0, pend.keep.past), pend.keep.window);
    if (pend.prefill) {
      // (a model whose forward keeps no cache would plan the same chunk forever)
      if ((this.cache?.length ?? 0) < pend.keep!.past + pend.keep!.window.length) throw new Error('prefill chunk: the forward kept no cache');
      this.prefillForwards++;
      this.stepCount++;
      return { ...this.event([]), prefill: true };
    }

    if (pend.lead) {
      // (the argmax, whatever the sampler: its decoder takes the block's first token greedily;
      // not a step of the block's schedule, which counted the block's masks at its start)
      const lead = choose(res.topIds.subarray(0, K), res.topLogits.subarray(0, K), res.lse[0], res.entropy[0], { temperature: 0 }, this.rng, res.logits?.subarray(0, V), this.mask);
      this.guess[pend.targets[0] - this.promptLength] = lead.token;
      return this.afterCommits([this.commit(pend.targets[0], lead, res, 0, K)], [], undefined, false);
    }
    // (a probe row past the block is scored but never a commit candidate)
    const blockTargets = pend.targets.slice(0, pend.candidates);
    if (this.constraint) return this.acceptConstrained(res, blockTargets, K);
    const choices: Choice[] = blockTargets.map((_, q) =>
      choose(
        res.topIds.subarray(q * K, (q + 1) * K),
        res.topLogits.subarray(q * K, (q + 1) * K),
        res.lse[q],
        res.entropy[q],
        this.opts.sampler,
        this.rng,
        res.logits?.subarray(q * V, (q + 1) * V),
        this.causal ? -1 : this.mask,
      ),
    );
    blockTargets.forEach((p, q) => (this.guess[p - this.promptLength] = choices[q].token));

    let picks: number[];
    if (this.causal) picks = [0];
    else {
      const count = this.schedule[Math.min(this.stepInBlock, this.schedule.length - 1)];
      picks = selectCommits(this.opts.policy, choices, { step: this.stepInBlock, steps: this.blockSteps, count }, this.opts.params, this.rng);
      const last = this.stepInBlock >= this.blockSteps - 1;
      if (this.opts.separateTwins && !isFixedCount(this.opts.policy) && !last && picks.length > 1) picks = separateTwins(picks, pend.targets, choices, this.stopSet);
      if (this.opts.holdEnds && !last) picks = holdEnds(picks, choices, this.stopSet);
      if (this.opts.inOrder) picks = inOrder(picks);
      if (this.opts.earlyCommit !== null && picks.length < choices.length) {
        // (the answer's gaps: an end's padding is near certain and would carry an unsure text)
        const [bs, be] = this.blocks[this.block];
        const gaps = blockTargets.flatMap((_, q) => (this.stopSet.has(choices[q].token) ? [] : [topGap(res.topIds.subarray(q * K, (q + 1) * K), res.topLogits.subarray(q * K, (q + 1) * K), this.mask)]));
        if (earlyCommit(gaps, 1 - choices.length / (be - bs), this.opts.earlyCommit)) picks = choices.map((_, i) => i);
      }
    }
    // wino: the block's earlier commits the model no longer believes go back to masks (not at
    // the budget's last step, which commits what is left)
    let revoked: number[] = [];
    if (pend.verify && pend.verify.length > 0 && this.stepInBlock < this.blockSteps - 1) {
      const belief = pend.verify.map((p, j) => {
        const q = pend.targets.length + j;
        return Math.exp(res.logits![q * V + this.tokens[p]] - res.lse[q]);
      });
      revoked = winoRevoke(belief, picks.length, this.lastAccept, this.opts.params.verifyThreshold).map((j) => pend.verify![j]);
    }
    if (this.opts.policy === 'wino') this.lastAccept = picks.length;
    // token editing (LLaDA2.1's T2T), from the same forward: a committed token of the block whose
    // best candidate is another, with a probability above editing_threshold, becomes that one
    const edits: [number, Choice, number][] = [];
    if (pend.edit) {
      const tau = this.opts.editingThreshold!;
      pend.edit.forEach((p, j) => {
        const q = pend.targets.length + (pend.verify?.length ?? 0) + j;
        const c = choose(res.topIds.subarray(q * K, (q + 1) * K), res.topLogits.subarray(q * K, (q + 1) * K), res.lse[q], res.entropy[q], this.opts.sampler, this.rng, res.logits?.subarray(q * V, (q + 1) * V), this.mask);
        if (c.token !== this.tokens[p] && c.prob > tau) edits.push([p, c, q]);
      });
    }
    const committedNow: StepEvent['committed'] = [];
    for (const i of picks) committedNow.push(this.commit(pend.targets[i], choices[i], res, i, K));
    for (const [p, c, q] of edits) committedNow.push(this.place(p, c, res, q, K));
    this.edited += edits.length;
    for (const p of revoked) this.revoke(p);
    if (pend.edit && pend.candidates === 0) this.postSteps++;
    return this.afterCommits(committedNow, revoked.map((p) => p - this.promptLength), { maskedAtStart: pend.candidates > 0, edits: edits.length });
  }

  /** Mask a committed position again (wino). */
  private revoke(p: number): void {
    this.tokens[p] = this.mask;
    this.committed[p] = 0;
    if (this.logprobs) delete this.logprobs[p - this.promptLength];
    this.committedCount--;
    this.remasked++;
  }

  /** Prompt log-probabilities (the model's own distribution: no bias, no penalty): row p scores position p + 1. */
  private scorePrompt(res: ForwardResult, scored: number[], q0: number, K: number): void {
    const V = this.model.args.vocabSize;
    scored.forEach((p, j) => {
      const q = q0 + j;
      const token = this.tokens[p + 1];
      const top = [];
      for (let k = 0; k < Math.min(this.opts.promptLogprobs!, K); k++) top.push({ token: res.topIds[q * K + k], logprob: res.topLogits[q * K + k] - res.lse[q] });
      const row = res.logits!.subarray(q * V, (q + 1) * V);
      let rank = 1;
      for (let v = 0; v < V; v++) if (row[v] > row[token]) rank++;
      this.promptScores![p + 1] = { token, logprob: row[token] - res.lse[q], top, rank };
    });
    this.promptRowsScored = scored[scored.length - 1] + 1;
  }

  /** Commit `choice` at canvas position p, scored by query row q (its log-probabilities kept). */
  private commit(p: number, choice: Choice, res: ForwardResult, q: number, K: number): StepEvent['committed'][number] {
    this.committed[p] = 1;
    this.committedCount++;
    return this.place(p, choice, res, q, K);
  }

  /** Put `choice` at canvas position p (a commit, or token editing's replacement), with its log-probabilities. */
  private place(p: number, choice: Choice, res: ForwardResult, q: number, K: number): StepEvent['committed'][number] {
    this.tokens[p] = choice.token;
    this.guess[p - this.promptLength] = choice.token;
    if (this.logprobs) {
      const top = [];
      // (the mask token is no alternative: it is never an answer token)
      for (let k = 0; top.length < (this.opts.logprobs ?? 0) && k < K; k++) {
        const t = res.topIds[q * K + k];
        if (!this.causal && t === this.mask) continue;
        top.push({ token: t, logprob: res.topLogits[q * K + k] - res.lse[q] });
      }
      this.logprobs[p - this.promptLength] = { token: choice.token, logprob: choice.logprob, top };
    }
    return { position: p - this.promptLength, token: choice.token };
  }

  /** A constrained step: the first mask, then the next ones while confident, each allowed.
   * The output ends as soon as the constraint says it is whole (no stop token needed, so
   * ignore_eos and models without end tokens end there too). */
  private acceptConstrained(res: ForwardResult, targets: number[], K: number): StepEvent {
    const V = this.model.args.vocabSize;
    const c = this.constraint!;
    const tau = this.opts.params.threshold;
    targets.forEach((p, q) => (this.guess[p - this.promptLength] = res.topIds[q * K]));
    if (targets[0] !== this.finalizedEnd) throw new Error(`constrained step at ${targets[0]}, the output is final up to ${this.finalizedEnd}`);
    const committedNow: StepEvent['committed'] = [];
    for (let q = 0; q < targets.length; q++) {
      const p = targets[q];
      if (p !== this.finalizedEnd + q) break; // only a run from the first uncommitted position
      // past the first row only a confident model extends the run: no token can pass when the best cannot
      if (q > 0 && Math.exp(res.topLogits[q * K] - res.lse[q]) <= tau) break;
      const got = constrainedChoice(c, this.cState, res.logits!.subarray(q * V, (q + 1) * V), res.topIds.subarray(q * K, (q + 1) * K), res.lse[q], res.entropy[q], this.opts.sampler, this.rng);
      if (!got) {
        if (q === 0) throw new ConstraintError(`no token of this model's vocabulary can continue the constrained output after ${this.finalizedEnd - this.promptLength} tokens`);
        break;
      }
      if (q > 0 && got.choice.prob <= tau) break;
      committedNow.push(this.commit(p, got.choice, res, q, K));
      this.cState = got.state;
      if (c.complete(this.cState)) {
        this.outputEnd = p + 1;
        this.finish = 'stop';
        break;
      }
    }
    return this.afterCommits(committedNow);
  }

  /** After a step's commits: the final prefix, stops, the canvas's end, the next block. */
  private afterCommits(committedNow: StepEvent['committed'], revoked: number[] = [], editing = { maskedAtStart: true, edits: 0 }, blockStep = true): StepEvent {
    this.stepCount++;
    if (blockStep) this.stepInBlock++;

    this.advanceFinalized();
    // (wino may revoke a committed end, token editing replace it: the canvas keeps its tail)
    if (this.adaptive && !this.done && this.opts.policy !== 'wino' && this.opts.editingThreshold === null) this.trimEnd();
    if (!this.done) {
      const [bs, be] = this.blocks[this.block];
      let open = false;
      for (let p = bs; p < be; p++) if (!this.committed[p]) open = true;
      // token editing: a block whose masks are gone is read again while the model edits it, up to
      // max_post_steps such forwards (LLaDA2.1's generate: a forward after the last mask; then
      // another after each one that edited)
      const again = this.opts.editingThreshold !== null && (editing.maskedAtStart ? this.opts.maxPostSteps > 0 : editing.edits > 0 && this.postSteps < this.opts.maxPostSteps);
      if (!open && !again) {
        this.block++;
        // (token editing: the finished block's tokens are final now, its stops seen at once)
        if (this.opts.editingThreshold !== null) this.advanceFinalized();
        if (this.done) {
          // a stop token in the finished block ended the output
        } else if (this.block < this.blocks.length) this.startBlock();
        else if (this.adaptive && !this.sized && this.genEnd < this.capEnd) this.grow();
        else this.finish = 'length';
      } else if (open && this.stepInBlock >= this.blockSteps && isFixedCount(this.opts.policy) && !this.constraint) {
        // the schedule committed every mask it counted at block start; nothing is left
        throw new Error('schedule exhausted with masks left');
      }
    }
    return this.event(committedNow, revoked);
  }

  /** Extend the left-to-right final prefix; stop tokens and stop strings end the output there. */
  private advanceFinalized(): void {
    const before = this.finalizedEnd;
    // (wino may still revoke what the current block committed, token editing replace it: final
    // once the block is)
    let limit = this.genEnd;
    if (this.opts.policy === 'wino' && this.block < this.blocks.length) {
      const [bs, be] = this.blocks[this.block];
      for (let p = bs; p < be; p++) if (!this.committed[p]) limit = bs;
    }
    if (this.opts.editingThreshold !== null && this.block < this.blocks.length) limit = Math.min(limit, this.blocks[this.block][0]);
    while (this.finalizedEnd < limit && this.committed[this.finalizedEnd]) {
      if (this.stopSet.has(this.tokens[this.finalizedEnd])) {
        this.outputEnd = this.finalizedEnd;
        this.finish = 'stop';
        break;
      }
      this.finalizedEnd++;
    }
    if (this.finalText && this.finalizedEnd > before) {
      this.finalText.push(this.tokens.subarray(before, this.finalizedEnd));
      // only text that could hold a stop string not seen before is searched
      const from = Math.max(0, this.finalText.changedAt - this.longestStop + 1);
      const text = this.finalText.text;
      let cut = -1;
      for (const s of this.opts.stopStrings) {
        const at = text.indexOf(s, from);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        // keep the shortest token prefix whose text reaches the cut
        this.outputEnd = this.promptLength + this.finalText.tokensCovering(cut);
        this.text = text.slice(0, cut);
        this.finish = 'stop';
      }
    }
  }

  /** Cut the canvas after the first of the committed end tokens that fill its tail. */
  private trimEnd(): void {
    let t = this.genEnd;
    while (t > this.finalizedEnd && this.committed[t - 1] && this.stopSet.has(this.tokens[t - 1])) t--;
    if (t + 1 >= this.genEnd) return;
    this.genEnd = t + 1;
    this.sized = true;
    // blocks past the cut go; the block it falls in ends there (the current block still has
    // masks before the cut: everything from t on is committed)
    this.blocks = this.blocks.filter(([s]) => s < this.genEnd).map(([s, e]) => [s, Math.min(e, this.genEnd)] as [number, number]);
  }

  /** Probability on end tokens at query row q (from the candidates the forward returned). */
  private endMass(res: ForwardResult, q: number, K: number): number {
    let m = 0;
    for (let k = q * K; k < (q + 1) * K; k++) if (this.stopSet.has(res.topIds[k])) m += Math.exp(res.topLogits[k] - res.lse[q]);
    return m;
  }

  private event(committed: StepEvent['committed'], revoked: number[] = []): StepEvent {
    const n = this.genEnd - this.promptLength;
    const draft = new Int32Array(n);
    const final = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const p = this.promptLength + i;
      final[i] = this.committed[p];
      draft[i] = this.committed[p] ? this.tokens[p] : this.guess[i];
    }
    const end = this.outputEnd ?? this.finalizedEnd;
    return {
      step: this.stepCount - 1,
      block: Math.min(this.block, this.blocks.length - 1),
      committed,
      revoked,
      draft,
      final,
      finalized: Math.min(this.finalizedEnd, end) - this.promptLength,
      done: this.done,
      stats: this.stats(),
      ...(this.logprobs ? { logprobs: this.logprobs } : {}),
      ...this.promptScoresEvent(),
    };
  }

  /** The prompt's scores, in the first event after they are complete. */
  private promptScoresEvent(): { promptLogprobs?: readonly (TokenLogprob | null)[] } {
    if (!this.promptScores || this.promptScoresSent || this.promptRowsScored < this.promptLength - 1) return {};
    this.promptScoresSent = true;
    return { promptLogprobs: this.promptScores };
  }

  private stats(): StepStats {
    return { forwards: this.forwards, discarded: this.discarded, canvas: this.genEnd - this.promptLength, committed: this.committedCount, remasked: this.remasked, edited: this.edited, cached: this.reused, prefill: this.prefillForwards, elapsedMs: performance.now() - this.startedAt };
  }

  result(): GenerateResult {
    const end = this.outputEnd ?? this.genEnd;
    return {
      tokens: Array.from(this.tokens.subarray(this.promptLength, end)),
      ...(this.logprobs ? { logprobs: this.logprobs.slice(0, end - this.promptLength) } : {}),
      ...(this.promptScores ? { promptLogprobs: this.promptScores } : {}),
      text: this.text,
      finishReason: this.finish ?? 'length',
      promptTokens: this.promptLength,
      stats: { ...this.stats(), steps: this.stepCount },
    };
  }
}

/** The scores of the first Q query rows of a forward that scored 2Q (a guided one). */
function firstRows(res: ForwardResult, Q: number, V: number): ForwardResult {
  const K = res.topIds.length / (2 * Q);
  return { topIds: res.topIds.subarray(0, Q * K), topLogits: res.topLogits.subarray(0, Q * K), lse: res.lse.subarray(0, Q), entropy: res.entropy.subarray(0, Q), logits: res.logits?.subarray(0, Q * V) };
}

/** Most prompt rows one forward scores for prompt log-probabilities (each returns a vocabulary-wide logits row). */
export const PROMPT_SCORE_CHUNK = 256;

/** wino: the "previous step's commits" a block starts with (its authors' value: no bound at first) */
const WINO_FIRST_ACCEPT = 30;

function range(a: number, b: number): number[] {
  const out: number[] = [];
  for (let i = a; i < b; i++) out.push(i);
  return out;
}

/** Generate for one sequence; `onStep` sees every step's event. */
export async function generate(
  model: Denoiser,
  prompt: ArrayLike<number>,
  options: GenerateOptions & { onStep?: (e: StepEvent) => void } = {},
): Promise<GenerateResult> {
  const g = new Generation(model, prompt, options);
  while (!g.done) {
    if (options.signal?.aborted) throw new CancelledError();
    const [res] = await model.forward([g.plan()]);
    const ev = g.accept(res);
    options.onStep?.(ev);
  }
  return g.result();
}
