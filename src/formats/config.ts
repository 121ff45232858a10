// config.json -> typed architecture arguments. Every supported family is normalised to one
// shape (ModelArgs) that models/ builds a graph from. Dimensions are validated before
// anything is allocated.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, OptionError } from '../errors.ts';

export type Attention = 'bidirectional' | 'causal' | 'block_causal';
export type Architecture = 'llada' | 'llada_moe' | 'llada2' | 'rnd1' | 'dream' | 'sdar' | 'sdar_moe' | 'coda' | 'fast_dllm_v2' | 'mdlm' | 'bd3lm' | 'llama' | 'qwen2' | 'qwen3';

/**
 * A mixture-of-experts feed-forward: a router picks `topK` of `experts` SwiGLU experts per token
 * and sums their outputs weighted by its scores.
 *   softmax (LLaDA-MoE): probabilities over all experts, the top k, not renormalized (RND1:
 *     renormalized over the k, `normalize`);
 *   sigmoid (LLaDA2.0): sigmoid scores; the choice among them by score + expert bias, limited to
 *     the `groupsKept` best of `groups` contiguous groups (a group's worth: its two best), the
 *     weights the chosen unbiased scores, normalized to sum 1 (when k > 1) and times `scale`.
 */
export interface MoeArgs {
  experts: number;
  topK: number;
  scoring: 'softmax' | 'sigmoid';
  /** sigmoid routing: contiguous expert groups, and how many the choice may draw from */
  groups: number;
  groupsKept: number;
  /** sigmoid routing: weights times this (routed_scaling_factor) */
  scale: number;
  /** sigmoid routing: a per-expert bias added to the scores for the choice only */
  expertBias: boolean;
  /** softmax routing: the chosen k's probabilities renormalized to sum 1 (Qwen3-MoE's norm_topk_prob: RND1) */
  normalize?: boolean;
  /** each expert's intermediate size */
  expertSize: number;
  /** an always-on shared expert's intermediate size, or null */
  sharedSize: number | null;
  /** per layer: true where the feed-forward is the mixture, false where it is dense (intermediateSize) */
  layers: boolean[];
}

export interface ModelArgs {
  arch: Architecture;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxPositions: number;
  /** q/k/v projections carry biases (Qwen2 layout) */
  qkvBias: boolean;
  /** each head's q and k are RMS-normalized before RoPE (Qwen3 layout: SDAR) */
  qkNorm?: boolean;
  /** RoPE rotates only the first rotaryDim dims of each head (partial rotary, LLaDA2.0: half) */
  rotaryDim?: number;
  /** q, k and v are clamped to [-clipQkv, clipQkv] after the projections (and q/k norms) */
  clipQkv?: number;
  /** an autoregressive model adapted to diffusion by the dllm project's A2D recipe (a2d-qwen3,
   * a2d-qwen2, a2d-llama): bidirectional (its mdlm models), or block-causal once given a block
   * size (its bd3lm models, which the config does not tell apart); 'declared': a causal layout's
   * checkpoint loaded as a diffusion model because the user said so (ParseOptions.diffusion) */
  adapted?: 'a2d' | 'declared';
  /** LayerNorm (centred, with a bias) instead of RMSNorm, epsilon rmsNormEps (the DiT layout) */
  norm?: 'layer';
  /** the dense feed-forward: SwiGLU (absent), or down(gelu_tanh(up x + b_up)) + b_down (the DiT layout) */
  mlp?: 'gelu_tanh';
  /** the DiT layout of MDLM and BD3-LM: each norm is modulated and each residual branch gated by
   * adaLN vectors computed from the noise level, a constant here (their released models do not
   * condition on it), so the modulation folds into the weights at load (models/dit.ts) */
  dit?: { condDim: number; adaln: boolean };
  /** the feed-forward is a mixture of experts (LLaDA-MoE); intermediateSize is then the dense layers' */
  moe?: MoeArgs;
  /** output head shares the embedding matrix */
  tiedEmbeddings: boolean;
  /** default attention pattern of the family */
  attention: Attention;
  /** block-causal families: the block size, blocks aligned to position 0 (SDAR, Fast-dLLM v2) */
  blockSize?: number;
  /** the decoding block its own decoder uses inside a model block (Fast-dLLM v2's sub-blocks) */
  subBlock?: number;
  /** prediction for position i is read from the output at i - 1 */
  shiftedLogits: boolean;
  /** diffusion models have a mask token; causal models do not */
  maskTokenId: number | null;
  eosTokenIds: number[];
  bosTokenId: number | null;
  padTokenId: number | null;
}

export const SUPPORTED_ARCHITECTURES = ['a2d-qwen3 / a2d-qwen2 / a2d-llama (dllm A2D models)', 'llada (LLaDAModelLM)', 'LLaDA-MoE (LLaDAMoEModelLM)', 'llada2_moe (LLaDA2MoeModelLM)', 'rnd1 (RND1LM)', 'dream (DreamModel)', 'sdar (SDARForCausalLM)', 'sdar_moe (SDARMoeForCausalLM)', 'CoDA (CoDALanguageModel)', 'Fast_dLLM_Qwen (Fast_dLLM_QwenForCausalLM)', 'mdlm (MDLM)', 'bd3lm (BD3LM)', 'llama (LlamaForCausalLM)', 'qwen2 (Qwen2ForCausalLM)', 'qwen3 (Qwen3ForCausalLM)'];

const LIMITS = { dim: 65536, layers: 512, heads: 1024, vocab: 4_000_000, positions: 1 << 22 };

type Raw = Record<string, unknown>;

function bad(msg: string): never {
  throw new FormatError('config_invalid', `config.json: ${msg}`);
}

function int(raw: Raw, key: string, max: number, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (v === undefined) bad(`missing ${key}`);
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > max) bad(`${key} must be an integer in [1, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

function num(raw: Raw, key: string, fallback: number, min: number, max: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= min || v > max) bad(`${key} must be a number in (${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

function optId(raw: Raw, key: string, vocab: number): number | null {
  const v = raw[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= vocab) bad(`${key} ${JSON.stringify(v)} is not a token id below vocab_size ${vocab}`);
  return v;
}

function idList(raw: Raw, key: string, vocab: number): number[] {
  const v = raw[key];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const x of list) if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x >= vocab) bad(`${key} ${JSON.stringify(x)} is not a token id below vocab_size ${vocab}`);
  return list as number[];
}

function detect(raw: Raw): Architecture {
  const type = typeof raw.model_type === 'string' ? raw.model_type.toLowerCase() : '';
  const archs = Array.isArray(raw.architectures) ? raw.architectures.map(String) : [];
  // (LLaDA-MoE's published config.json says model_type "llada": its class names it)
  if (type === 'llada2_moe' || archs.includes('LLaDA2MoeModelLM')) return 'llada2';
  // (dllm's A2D models: the causal layouts' weights under their own model_type and class)
  if (type === 'a2d-qwen3' || archs.includes('A2DQwen3LMHeadModel')) return 'qwen3';
  if (type === 'a2d-qwen2' || archs.includes('A2DQwen2LMHeadModel')) return 'qwen2';
  if (type === 'a2d-llama' || archs.includes('A2DLlamaLMHeadModel')) return 'llama';
  if (type === 'rnd1' || archs.includes('RND1LM')) return 'rnd1';
  if (type === 'sdar_moe' || archs.includes('SDARMoeForCausalLM')) return 'sdar_moe';
  if (type === 'coda' || archs.includes('CoDALanguageModel')) return 'coda';
  if (type === 'lladamoe' || type === 'llada_moe' || archs.includes('LLaDAMoEModelLM') || archs.includes('LLaDAMoEModel')) return 'llada_moe';
  if (type === 'llada' || archs.includes('LLaDAModelLM')) return 'llada';
  if (type === 'dream' || archs.includes('DreamModel')) return 'dream';
  if (type === 'sdar' || archs.includes('SDARForCausalLM')) return 'sdar';
  if (type === 'fast_dllm_qwen' || archs.includes('Fast_dLLM_QwenForCausalLM')) return 'fast_dllm_v2';
  if (type === 'mdlm' || archs.includes('MDLM')) return 'mdlm';
  if (type === 'bd3lm' || archs.includes('BD3LM')) return 'bd3lm';
  if (type === 'llama' || archs.includes('LlamaForCausalLM')) return 'llama';
  if (type === 'qwen2' || archs.includes('Qwen2ForCausalLM')) return 'qwen2';
  if (type === 'qwen3' || archs.includes('Qwen3ForCausalLM')) return 'qwen3';
  throw new FormatError(
    'unsupported_architecture',
    `unsupported architecture (model_type ${JSON.stringify(raw.model_type)}, architectures ${JSON.stringify(archs)}); supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`,
  );
}

/**
 * How to read a config beyond its keys. `diffusion`: a checkpoint in a causal layout (llama,
 * qwen2, qwen3) that was trained as a masked diffusion model by code outside the config
 * (Open-dCoder: the Qwen2.5-Coder layout, run with is_causal=False, logits shifted): attention
 * bidirectional, logits shifted (as the causal model predicted) or not; the mask token from
 * mask_token_id, generation_config.json or the tokenizer.
 */
export interface ParseOptions {
  diffusion?: 'shifted' | 'unshifted';
}

export function parseConfig(raw: unknown, opts: ParseOptions = {}): ModelArgs {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) bad('not a JSON object');
  let r = raw as Raw;
  const arch = detect(r);
  // (transformers v5 writes the RoPE base, and any scaling, under rope_parameters: read there,
  // or a re-saved Qwen3 would run with the default base 10000)
  const rp = r.rope_parameters;
  if (rp !== undefined && rp !== null) {
    if (typeof rp !== 'object' || Array.isArray(rp)) bad('rope_parameters must be an object');
    const p = rp as Raw;
    if (p.rope_type !== undefined && p.rope_type !== 'default') bad(`rope_parameters.rope_type ${JSON.stringify(p.rope_type)} is not supported yet (only "default")`);
    if (p.rope_theta === undefined && r.rope_theta === undefined) bad('rope_parameters names no rope_theta (per-layer-type RoPE is not supported)');
    if (r.rope_theta === undefined) r = { ...r, rope_theta: p.rope_theta };
    // (and a partial rotary factor: read by LLaDA2's layout, refused by the others)
    if (p.partial_rotary_factor !== undefined) {
      if (r.partial_rotary_factor !== undefined && r.partial_rotary_factor !== p.partial_rotary_factor) bad(`partial_rotary_factor ${JSON.stringify(r.partial_rotary_factor)} and rope_parameters.partial_rotary_factor ${JSON.stringify(p.partial_rotary_factor)} disagree`);
      r = { ...r, partial_rotary_factor: p.partial_rotary_factor };
    }
  }
  if (opts.diffusion !== undefined) {
    if (opts.diffusion !== 'shifted' && opts.diffusion !== 'unshifted') throw new OptionError('diffusion', `diffusion must be shifted or unshifted, got ${JSON.stringify(opts.diffusion)}`);
    if ((arch !== 'llama' && arch !== 'qwen2' && arch !== 'qwen3') || isA2d(r))
      throw new OptionError('diffusion', `diffusion declares a causal layout's checkpoint (llama, qwen2, qwen3) a diffusion model; ${isA2d(r) ? 'an A2D model' : arch} is one by its config already`);
  }
  if (arch === 'llada') {
    if (r.block_type !== undefined && r.block_type !== 'llama') bad(`block_type ${JSON.stringify(r.block_type)} is not supported (only "llama")`);
    if (r.activation_type !== undefined && r.activation_type !== 'silu') bad(`activation_type ${JSON.stringify(r.activation_type)} is not supported (only "silu")`);
    if (r.include_bias === true) bad('include_bias true is not supported');
    const hiddenSize = int(r, 'd_model', LIMITS.dim);
    const numHeads = int(r, 'n_heads', LIMITS.heads);
    const vocabSize = int(r, 'vocab_size', LIMITS.vocab);
    const embeddingSize = int(r, 'embedding_size', LIMITS.vocab, vocabSize);
    if (embeddingSize < vocabSize) bad(`embedding_size ${embeddingSize} is smaller than vocab_size ${vocabSize}`);
    const args: ModelArgs = {
      arch,
      hiddenSize,
      numLayers: int(r, 'n_layers', LIMITS.layers),
      numHeads,
      numKvHeads: int(r, 'n_kv_heads', LIMITS.heads, numHeads),
      headDim: hiddenSize / numHeads,
      intermediateSize: int(r, 'mlp_hidden_size', LIMITS.dim * 8),
      vocabSize: embeddingSize,
      ropeTheta: num(r, 'rope_theta', 10000, 0, 1e12),
      rmsNormEps: num(r, 'rms_norm_eps', 1e-5, 0, 1),
      maxPositions: int(r, 'max_sequence_length', LIMITS.positions, 4096),
      qkvBias: false,
      tiedEmbeddings: r.weight_tying === true,
      attention: 'bidirectional',
      shiftedLogits: false,
      maskTokenId: optId(r, 'mask_token_id', embeddingSize) ?? (embeddingSize > 126336 ? 126336 : null),
      eosTokenIds: idList(r, 'eos_token_id', embeddingSize),
      bosTokenId: optId(r, 'bos_token_id', embeddingSize),
      padTokenId: optId(r, 'pad_token_id', embeddingSize),
    };
    return check(args);
  }
  if (arch === 'mdlm' || arch === 'bd3lm') return check(dit(r, arch));
  // (RND1's configuration class fills its Qwen3-30B-A3B values in: absent keys take them)
  if (arch === 'rnd1') r = { ...RND1_DEFAULTS, ...r };
  const hiddenSize = int(r, 'hidden_size', LIMITS.dim);
  const numHeads = int(r, 'num_attention_heads', LIMITS.heads);
  const vocabSize = int(r, 'vocab_size', LIMITS.vocab);
  const args: ModelArgs = {
    arch,
    hiddenSize,
    numLayers: int(r, 'num_hidden_layers', LIMITS.layers),
    numHeads,
    numKvHeads: int(r, 'num_key_value_heads', LIMITS.heads, numHeads),
    headDim: int(r, 'head_dim', LIMITS.dim, Math.floor(hiddenSize / numHeads)),
    intermediateSize: arch === 'llada2' ? int(r, 'intermediate_size', LIMITS.dim * 8, int(r, 'moe_intermediate_size', LIMITS.dim * 8)) : arch === 'llada_moe' ? int(r, 'dense_intermediate_size', LIMITS.dim * 8, int(r, 'expert_intermediate_size', LIMITS.dim * 8)) : int(r, 'intermediate_size', LIMITS.dim * 8),
    vocabSize,
    ropeTheta: num(r, 'rope_theta', 10000, 0, 1e12),
    rmsNormEps: num(r, 'rms_norm_eps', 1e-6, 0, 1),
    maxPositions: int(r, 'max_position_embeddings', LIMITS.positions, 4096),
    qkvBias: arch === 'dream' || arch === 'qwen2' || arch === 'fast_dllm_v2',
    tiedEmbeddings: r.tie_word_embeddings === true,
    attention: arch === 'dream' || arch === 'llada_moe' || arch === 'rnd1' || arch === 'coda' ? 'bidirectional' : arch === 'sdar' || arch === 'sdar_moe' || arch === 'fast_dllm_v2' || arch === 'llada2' ? 'block_causal' : 'causal',
    shiftedLogits: arch !== 'sdar' && arch !== 'sdar_moe' && arch !== 'llada_moe' && arch !== 'llada2',
    maskTokenId: arch === 'dream' ? optId(r, 'mask_token_id', vocabSize) : null,
    eosTokenIds: idList(r, 'eos_token_id', vocabSize),
    bosTokenId: optId(r, 'bos_token_id', vocabSize),
    padTokenId: optId(r, 'pad_token_id', vocabSize),
  };
  if (arch === 'llama' && r.attention_bias === true) args.qkvBias = true;
  if (isA2d(r)) {
    // the weights and names of the causal model, attention bidirectional (an explicit all-visible
    // mask in its modeling code), logits not shifted; the mask token is the tokenizer's
    // <|mask|> (added to it, in no config key); a block_size key (none in the released
    // configs) or --block-size makes it block-causal in blocks from position 0 (its bd3lm models)
    args.adapted = 'a2d';
    args.attention = 'bidirectional';
    args.shiftedLogits = false;
    args.maskTokenId = optId(r, 'mask_token_id', vocabSize);
    // (a large block_size is a causal export's training context, not a diffusion block)
    if (typeof r.block_size === 'number' && Number.isInteger(r.block_size) && r.block_size >= 1 && r.block_size <= 256) {
      args.attention = 'block_causal';
      args.blockSize = r.block_size;
    }
  } else if (opts.diffusion) {
    // (the user's word for what the config cannot say: its own modeling code made it one)
    args.adapted = 'declared';
    args.attention = 'bidirectional';
    args.shiftedLogits = opts.diffusion === 'shifted';
    args.maskTokenId = optId(r, 'mask_token_id', vocabSize);
  } else if (arch === 'llama' || arch === 'qwen2' || arch === 'qwen3') refuseDiffusionVariant(r, arch);
  if (arch === 'qwen3') {
    // each head's q and k RMS-normalized over head_dim before RoPE (the layout SDAR was trained from)
    if (r.attention_bias === true) bad('attention_bias true is not supported for qwen3');
    args.qkNorm = true;
  }
  if (arch === 'sdar' || arch === 'sdar_moe') {
    // Qwen3 layout, block-causal over blocks aligned to position 0; the released configs may
    // lack block_size and mask_token_id (the published values: 4, and <|MASK|> 151669)
    if (r.attention_bias === true) bad(`attention_bias true is not supported for ${arch}`);
    args.qkNorm = true;
    args.blockSize = int(r, 'block_size', 4096, 4);
    args.maskTokenId = optId(r, 'mask_token_id', vocabSize) ?? (vocabSize > 151669 ? 151669 : null);
  }
  if (arch === 'llada_moe') lladaMoe(r, args);
  if (arch === 'rnd1') rnd1(r, args);
  if (arch === 'sdar_moe') args.moe = qwen3Moe(r, args);
  if (arch === 'coda') {
    // Salesforce's CoDA (CoDA-v0-Instruct): Qwen3-1.7B adapted to masked diffusion: the Qwen3
    // layout (per-head q/k RMSNorm), bidirectional, logits shifted as Dream's are, mask 151669; its
    // lm_head was trained as its own weight, whatever the config class's tie_word_embeddings
    // default says (the transformers it was released with never tied them; a checkpoint saved
    // without lm_head, tied by a later transformers, is read tied: models/registry.ts)
    if (r.attention_bias === true) bad('attention_bias true is not supported for CoDA');
    args.qkNorm = true;
    args.tiedEmbeddings = false;
    args.maskTokenId = optId(r, 'mask_token_id', vocabSize) ?? (vocabSize > 151669 ? 151669 : null);
  }
  if (arch === 'llada2') llada2(r, args);
  if (arch === 'fast_dllm_v2') {
    // Qwen2.5 layout, block-causal over blocks of bd_size (32) aligned to position 0, logits
    // shifted within the block (a block's first position is read from the previous block's last
    // row), decoded in sub-blocks of 8; the mask token is |<MASK>| (151665), not in the config
    args.blockSize = int(r, 'bd_size', 4096, 32);
    args.subBlock = Math.min(8, args.blockSize);
    args.maskTokenId = optId(r, 'mask_token_id', vocabSize) ?? (vocabSize > 151665 ? 151665 : null);
  }
  if (r.hidden_act !== undefined && r.hidden_act !== 'silu') bad(`hidden_act ${JSON.stringify(r.hidden_act)} is not supported (only "silu")`);
  if (r.rope_scaling !== undefined && r.rope_scaling !== null && r.rope_scaling !== false) bad('rope_scaling is not supported yet');
  // (in every layout that may carry them: quench's layers attend to every position and rotate
  // whole heads, LLaDA2's partial RoPE aside; a sliding window as transformers reads it: one of
  // null or at least the context, or max_window_layers covering every layer, is full attention)
  const w = r.sliding_window;
  if (r.use_sliding_window === true && typeof w === 'number' && w < args.maxPositions && !(typeof r.max_window_layers === 'number' && r.max_window_layers >= args.numLayers))
    bad(`use_sliding_window true (a window of ${w} positions) is not supported`);
  const prf = r.partial_rotary_factor ?? 1;
  if (arch !== 'llada2' && prf !== 1) bad(`partial_rotary_factor ${JSON.stringify(prf)} is not supported (only 1)`);
  return check(args);
}

/**
 * LLaDA-MoE (inclusionAI/LLaDA-MoE-7B-A1B-*): the OLMoE layout (Hugging Face names, per-head q/k
 * RMSNorm, no biases, untied head) with bidirectional attention, logits not shifted, and every
 * layer's feed-forward a mixture of experts (`moe_layer_freq` 1; 0 marks a dense layer of
 * dense_intermediate_size). The released config names no mask id: <|mask|> is 156895.
 */
function lladaMoe(r: Raw, args: ModelArgs): void {
  const L = args.numLayers;
  if (r.attention_bias === true) bad('attention_bias true is not supported for LLaDA-MoE');
  if (r.moe_router_enable_expert_bias === true) bad('moe_router_enable_expert_bias true is not supported (the released LLaDA-MoE models have none)');
  const experts = int(r, 'num_experts', 4096);
  const topK = int(r, 'num_experts_per_tok', experts);
  const freq = r.moe_layer_freq ?? Array.from({ length: L }, () => 1);
  if (!Array.isArray(freq) || freq.length !== L || freq.some((f) => f !== 0 && f !== 1)) bad(`moe_layer_freq must list 0 or 1 for each of the ${L} layers, got ${JSON.stringify(freq).slice(0, 100)}`);
  const shared = r.shared_expert_intermediate_size;
  args.qkNorm = r.qk_layernorm !== false;
  args.rmsNormEps = num(r, 'rms_norm_eps', 1e-5, 0, 1);
  if (r.clip_qkv !== undefined && r.clip_qkv !== null) args.clipQkv = num(r, 'clip_qkv', 0, 0, 1e9);
  args.moe = {
    experts,
    topK,
    expertSize: int(r, 'expert_intermediate_size', LIMITS.dim * 8),
    sharedSize: shared === undefined || shared === null ? null : int(r, 'shared_expert_intermediate_size', LIMITS.dim * 8),
    layers: freq.map((f) => f === 1),
    scoring: 'softmax',
    groups: 1,
    groupsKept: 1,
    scale: 1,
    expertBias: false,
  };
  args.maskTokenId = optId(r, 'mask_token_id', args.vocabSize) ?? (args.vocabSize > 156895 ? 156895 : null);
}

/**
 * LLaDA2.0 (inclusionAI/LLaDA2.0-mini, -flash; model_type llada2_moe): the BailingMoE layout
 * (fused query_key_value, per-head q/k RMSNorm, RoPE on the first partial_rotary_factor of each
 * head, untied head) trained as a block diffusion model: attention causal across blocks of 32
 * aligned to position 0, bidirectional within one; logits not shifted; mask 156895 (in no config
 * key). Layers from first_k_dense_replace on are mixtures: 256 experts, 8 per token, a sigmoid
 * router with an expert bias for the choice, 8 groups of which 4 are kept, weights normalized and
 * times routed_scaling_factor, plus num_shared_experts shared experts. Its modeling code always
 * routes by sigmoid and normalizes when k > 1, whatever score_function / norm_topk_prob say.
 */
function llada2(r: Raw, args: ModelArgs): void {
  if (r.use_qkv_bias === true || r.use_bias === true) bad('use_qkv_bias / use_bias true is not supported for llada2_moe');
  if (r.score_function !== undefined && r.score_function !== null && r.score_function !== 'sigmoid') bad(`score_function ${JSON.stringify(r.score_function)} is not supported (its modeling code routes by sigmoid)`);
  const prf = num(r, 'partial_rotary_factor', 0.5, 0, 1);
  const rot = Math.round(args.headDim * prf);
  if (rot % 2 !== 0 || Math.abs(rot - args.headDim * prf) > 1e-9) bad(`partial_rotary_factor ${prf} of head_dim ${args.headDim} is not an even number of dimensions`);
  if (rot < args.headDim) args.rotaryDim = rot;
  args.qkNorm = r.use_qk_norm !== false;
  args.rmsNormEps = num(r, 'rms_norm_eps', 1e-5, 0, 1);
  const experts = int(r, 'num_experts', 4096);
  // (absent keys take LLaDA2MoeConfig's defaults: 8 groups, 4 kept, scale 2.5)
  const groups = int(r, 'n_group', experts, 8);
  if (experts % groups !== 0) bad(`num_experts ${experts} does not split into n_group ${groups} groups`);
  const dense = r.first_k_dense_replace ?? 0;
  if (typeof dense !== 'number' || !Number.isInteger(dense) || dense < 0 || dense > args.numLayers) bad(`first_k_dense_replace must be an integer in [0, ${args.numLayers}], got ${JSON.stringify(dense)}`);
  const moeSize = int(r, 'moe_intermediate_size', LIMITS.dim * 8);
  const shared = r.num_shared_experts ?? 0;
  if (typeof shared !== 'number' || !Number.isInteger(shared) || shared < 0 || shared > 64) bad(`num_shared_experts must be an integer in [0, 64], got ${JSON.stringify(shared)}`);
  const topK = int(r, 'num_experts_per_tok', experts);
  const groupsKept = int(r, 'topk_group', groups, Math.min(4, groups));
  // (each kept group offers experts / groups; the choice needs k of them, and a group's worth is its best two)
  if (groupsKept * (experts / groups) < topK) bad(`topk_group ${groupsKept} of ${groups} groups holds fewer than num_experts_per_tok ${topK} experts`);
  if (groups > 1 && experts / groups < 2) bad(`n_group ${groups} leaves fewer than 2 experts per group`);
  args.moe = {
    experts,
    topK,
    expertSize: moeSize,
    sharedSize: shared > 0 ? shared * moeSize : null,
    layers: Array.from({ length: args.numLayers }, (_, i) => i >= dense),
    scoring: 'sigmoid',
    groups,
    groupsKept,
    scale: num(r, 'routed_scaling_factor', 2.5, 0, 1e6),
    expertBias: true,
  };
  args.blockSize = int(r, 'block_size', 4096, 32);
  args.maskTokenId = optId(r, 'mask_token_id', args.vocabSize) ?? (args.vocabSize > 156895 ? 156895 : null);
}

/**
 * MDLM and BD3-LM (kuleshov-group/mdlm-owt, bd3lm-owt-block_size4/8/16): a DiT backbone. Token
 * embedding; per block LayerNorm (no bias) -> fused attn_qkv (no bias) -> NeoX RoPE (theta 10000)
 * on q and k -> attention -> attn_out, then LayerNorm -> Linear(4D) + bias -> GELU (tanh) ->
 * Linear + bias; each norm's output modulated (x (1 + scale) + shift) and each branch gated by the
 * adaLN vectors of silu(timestep_mlp(sigma)), sigma 0 when time_conditioning is false (the released
 * models); a modulated final LayerNorm, a head with a bias. Logits not shifted. The mask is the
 * last id (the code appends it to a tokenizer without one: GPT-2's 50257) unless mask_token_id
 * says otherwise; the "subs" parameterization never predicts it. MDLM attends bidirectionally;
 * BD3-LM with cross_attn causally across blocks of block_size from position 0, bidirectionally
 * within one.
 */
function dit(r: Raw, arch: 'mdlm' | 'bd3lm'): ModelArgs {
  if (r.time_conditioning === true) bad('time_conditioning true is not supported (the released MDLM and BD3-LM models do not condition on the noise level)');
  if (r.causal === true) bad('causal true is not supported (the autoregressive baseline of the BD3-LM code)');
  const hiddenSize = int(r, 'hidden_dim', LIMITS.dim);
  const numHeads = int(r, 'n_heads', LIMITS.heads);
  const vocabSize = int(r, 'vocab_size', LIMITS.vocab);
  const length = int(r, 'model_length', LIMITS.positions, 1024);
  if (vocabSize < 2) bad('vocab_size must leave room for the mask token');
  const args: ModelArgs = {
    arch,
    hiddenSize,
    numLayers: int(r, 'n_blocks', LIMITS.layers),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: 4 * hiddenSize,
    vocabSize,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositions: length,
    qkvBias: false,
    tiedEmbeddings: false,
    attention: 'bidirectional',
    shiftedLogits: false,
    maskTokenId: optId(r, 'mask_token_id', vocabSize) ?? vocabSize - 1,
    eosTokenIds: idList(r, 'eos_token_id', vocabSize),
    bosTokenId: optId(r, 'bos_token_id', vocabSize),
    padTokenId: optId(r, 'pad_token_id', vocabSize),
    norm: 'layer',
    mlp: 'gelu_tanh',
    // (MDLM's blocks always carry adaLN; BD3-LM's config may turn it off)
    dit: { condDim: int(r, 'cond_dim', LIMITS.dim, 129), adaln: arch === 'mdlm' || r.adaln !== false },
  };
  if (arch === 'bd3lm') {
    // (without cross_attn, or with one block spanning the model, it is MDLM's bidirectional model)
    const block = int(r, 'block_size', LIMITS.positions, 1);
    if (r.cross_attn !== false && block < length) {
      args.attention = 'block_causal';
      args.blockSize = block;
    }
  }
  return args;
}

/** RND1Config's CONFIG_DEFAULTS (Qwen/Qwen3-30B-A3B's shape), the values of absent keys. */
const RND1_DEFAULTS: Raw = {
  hidden_size: 2048, intermediate_size: 6144, moe_intermediate_size: 768, num_hidden_layers: 48, num_attention_heads: 32, num_key_value_heads: 4,
  head_dim: 128, num_experts: 128, num_experts_per_tok: 8, norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [],
  max_position_embeddings: 40960, rms_norm_eps: 1e-6, rope_theta: 1000000, vocab_size: 151936, eos_token_id: 151645, pad_token_id: 151643, tie_word_embeddings: false,
};

/**
 * RND1 (radicalnumerics/RND1-Base-0910, RND1LM): Qwen3-30B-A3B's Qwen3-MoE layout (per-head q/k
 * RMSNorm, no biases, untied head) continued as a masked diffusion model: bidirectional attention,
 * logits shifted (its sampler reads position i from row i - 1), mask 151669. Every layer routes by
 * softmax over all experts, runs the top k and renormalizes their weights to sum 1: its modeling
 * code builds the mixture in every layer whatever decoder_sparse_step / mlp_only_layers say, and
 * its configuration class sets norm_topk_prob true, so those keys are read as it reads them (not).
 */
function rnd1(r: Raw, args: ModelArgs): void {
  if (r.attention_bias === true) bad('attention_bias true is not supported for rnd1');
  args.qkNorm = true;
  args.moe = softmaxExperts(r, Array.from({ length: args.numLayers }, () => true), true);
  args.maskTokenId = optId(r, 'mask_token_id', args.vocabSize) ?? (args.vocabSize > 151669 ? 151669 : null);
}

/**
 * The Qwen3-MoE feed-forward as Qwen3MoeSparseMoeBlock builds it (SDAR-30B-A3B): a layer is a
 * mixture where num_experts > 0, (i + 1) % decoder_sparse_step == 0 and i is not in
 * mlp_only_layers (else a dense SwiGLU of intermediate_size); softmax over all experts, the top k,
 * renormalized when norm_topk_prob. Absent, that key counts as true: SDAR's own engine always
 * renormalizes (and Qwen3-30B-A3B's config says true), where transformers' Qwen3MoeConfig would
 * default it to false.
 */
function qwen3Moe(r: Raw, args: ModelArgs): MoeArgs {
  const L = args.numLayers;
  const step = int(r, 'decoder_sparse_step', L, 1);
  const dense = r.mlp_only_layers ?? [];
  if (!Array.isArray(dense) || dense.some((i) => typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= L)) bad(`mlp_only_layers must list layer indices below ${L}, got ${JSON.stringify(dense).slice(0, 100)}`);
  return softmaxExperts(r, Array.from({ length: L }, (_, i) => !dense.includes(i) && (i + 1) % step === 0), r.norm_topk_prob !== false);
}

/** Qwen3-MoE's experts (num_experts of moe_intermediate_size, num_experts_per_tok per token, no
 * shared expert) under softmax routing, in the given layers, renormalized or not. */
function softmaxExperts(r: Raw, layers: boolean[], normalize: boolean): MoeArgs {
  const experts = int(r, 'num_experts', 4096);
  return {
    experts,
    topK: int(r, 'num_experts_per_tok', experts),
    expertSize: int(r, 'moe_intermediate_size', LIMITS.dim * 8),
    sharedSize: null,
    layers,
    scoring: 'softmax',
    normalize,
    groups: 1,
    groupsKept: 1,
    scale: 1,
    expertBias: false,
  };
}

function isA2d(r: Raw): boolean {
  const type = typeof r.model_type === 'string' ? r.model_type.toLowerCase() : '';
  const archs = Array.isArray(r.architectures) ? r.architectures.map(String) : [];
  return type.startsWith('a2d-') || archs.some((a) => /^A2D\w+LMHeadModel$/.test(a));
}

/**
 * Diffusion models are also published under the causal layouts' model_type (a Qwen3 or Qwen2
 * config with a mask token and its own modeling code): read as the causal LM they would decode
 * garbage, and their attention and logit alignment are in code, not in config.json's keys.
 */
function refuseDiffusionVariant(r: Raw, arch: Architecture): void {
  // (a block size alone is no mark: causal exports carry one as their training context)
  const marks = ['mask_token_id', 'dlm_paradigm', 'dlm_type'].filter((k) => r[k] !== undefined && r[k] !== null);
  if (r.is_causal === false) marks.push('is_causal false');
  if (marks.length === 0) return;
  throw new FormatError(
    'unsupported_architecture',
    `config.json says model_type ${JSON.stringify(r.model_type ?? arch)} but also ${marks.join(', ')}: a diffusion variant of the ${arch} layout whose attention and logit alignment are defined by its own modeling code, which the config does not say; if you know them, load it with --diffusion shifted (logits read one row early, as Dream and Open-dCoder do) or --diffusion unshifted (as LLaDA does); supported by their configs: ${SUPPORTED_ARCHITECTURES.join(', ')}`,
  );
}

function check(a: ModelArgs): ModelArgs {
  if (!Number.isInteger(a.headDim) || a.headDim % 2 !== 0) bad(`head dimension ${a.headDim} must be an even integer`);
  if (a.numHeads % a.numKvHeads !== 0) bad(`attention heads ${a.numHeads} is not a multiple of kv heads ${a.numKvHeads}`);
  if (a.arch === 'dream' && a.maskTokenId === null) bad('Dream config needs mask_token_id');
  if ((a.arch === 'sdar' || a.arch === 'sdar_moe' || a.arch === 'coda' || a.arch === 'fast_dllm_v2' || a.arch === 'llada_moe' || a.arch === 'llada2' || a.arch === 'rnd1') && a.maskTokenId === null) bad(`${a.arch} config needs mask_token_id`);
  return a;
}

/** Weights of layer l's feed-forward: the dense SwiGLU, or a mixture's router (and expert bias),
 * its experts (all of them, or, `active`, the k one token runs through) and shared expert. */
export function feedForwardParams(a: ModelArgs, l: number, active = false): number {
  const D = a.hiddenSize;
  const m = a.moe;
  if (a.mlp === 'gelu_tanh') return 2 * D * a.intermediateSize + a.intermediateSize + D;
  if (!m?.layers[l]) return 3 * D * a.intermediateSize;
  return D * m.experts + (m.expertBias ? m.experts : 0) + 3 * D * ((active ? m.topK : m.experts) * m.expertSize + (m.sharedSize ?? 0));
}

export async function loadConfig(dir: string, opts: ParseOptions = {}): Promise<{ args: ModelArgs; raw: Raw }> {
  let text: string;
  try {
    text = await readFile(join(dir, 'config.json'), 'utf8');
  } catch {
    throw new FormatError('config_missing', 'config.json not found in the model directory');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    bad('not valid JSON');
  }
  return { args: parseConfig(raw, opts), raw: raw as Raw };
}

/** Weight-shape check: the embedding must match the configured vocab and width. */
export function checkEmbeddingShape(args: ModelArgs, shape: number[]): void {
  if (shape.length !== 2 || shape[0] !== args.vocabSize || shape[1] !== args.hiddenSize)
    throw new FormatError('config_mismatch', `embedding shape [${shape}] does not match vocab_size ${args.vocabSize} x hidden ${args.hiddenSize}`);
}
