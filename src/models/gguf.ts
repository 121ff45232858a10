// A GGUF file (llama.cpp's converter output) as a checkpoint quench loads: its metadata as the
// equivalent config.json (validated by the same parser), its tensors under the Hugging Face
// names of the architecture's layout (decoded to fp32, GGUF's [in, out] dims read as HF's
// [out, in]), and its tokenizer metadata as tokenizer.json + tokenizer_config.json.
//
// Architectures: llada, llada-moe, llada2 and rnd1 (experts stacked per layer), dream, llama, qwen2, qwen3. llama.cpp runs LLaDA and Llama with "normal"
// (interleaved-pair) RoPE and its converter permutes their q/k rows to match; quench's graph
// uses the Hugging Face rotate_half layout, so those rows are put back:
// hf_row[h*hd + j*hd/2 + i] = gguf_row[h*hd + 2i + j]. Dream, LLaDA2, RND1, Qwen2 and Qwen3 are stored
// unpermuted (NeoX RoPE, as in their Hugging Face layouts).

import { FormatError } from '../errors.ts';
import { parseConfig, type ModelArgs } from '../formats/config.ts';
import type { GgufSource, GgufValue } from '../formats/gguf.ts';
import type { TensorInfo } from '../formats/safetensors.ts';

const fail = (code: string, msg: string): never => {
  throw new FormatError(code, `gguf: ${msg}`);
};

/**
 * Where a Hugging Face tensor lives in a GGUF file: its name, and for one expert of a mixture
 * the index along the stacked tensor (the converter stacks a layer's experts into
 * ffn_{gate,up,down}_exps [E, out, in]).
 */
function ggufSource(arch: ModelArgs['arch'], hf: string): { name: string; expert?: number } | null {
  const m = /^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$/.exec(hf);
  if ((arch === 'llada_moe' || arch === 'rnd1' || arch === 'llada2') && m) return { name: `blk.${m[1]}.ffn_${m[3]}_exps.weight`, expert: Number(m[2]) };
  if (arch === 'llada2') return llada2Name(hf);
  const name = ggufName(arch, hf);
  return name === null ? null : { name };
}

/** LLaDA2.0's BailingMoE names -> the llada2 GGUF names (the fused qkv unpermuted, experts stacked
 *  apart, the router's expert bias as exp_probs_b, shared experts as *_shexp). */
function llada2Name(hf: string): { name: string } | null {
  const top: Record<string, string> = { 'model.word_embeddings.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
  if (top[hf]) return { name: top[hf] };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  const parts: Record<string, string> = {
    'input_layernorm.weight': 'attn_norm.weight', 'attention.query_key_value.weight': 'attn_qkv.weight',
    'attention.query_layernorm.weight': 'attn_q_norm.weight', 'attention.key_layernorm.weight': 'attn_k_norm.weight',
    'attention.dense.weight': 'attn_output.weight', 'post_attention_layernorm.weight': 'ffn_norm.weight',
    'mlp.gate.weight': 'ffn_gate_inp.weight', 'mlp.gate.expert_bias': 'exp_probs_b.bias',
    'mlp.gate_proj.weight': 'ffn_gate.weight', 'mlp.up_proj.weight': 'ffn_up.weight', 'mlp.down_proj.weight': 'ffn_down.weight',
    'mlp.shared_experts.gate_proj.weight': 'ffn_gate_shexp.weight', 'mlp.shared_experts.up_proj.weight': 'ffn_up_shexp.weight', 'mlp.shared_experts.down_proj.weight': 'ffn_down_shexp.weight',
  };
  return m && parts[m[2]] ? { name: `blk.${m[1]}.${parts[m[2]]}` } : null;
}

/** Hugging Face -> GGUF tensor names, per layout (the converter's mapping). */
function ggufName(arch: ModelArgs['arch'], hf: string): string | null {
  let m: RegExpExecArray | null;
  if ((arch === 'llada_moe' || arch === 'rnd1') && (m = /^model\.layers\.(\d+)\.mlp\.gate\.weight$/.exec(hf))) return `blk.${m[1]}.ffn_gate_inp.weight`;
  if (arch === 'llada') {
    const p = 'model.transformer.';
    if (!hf.startsWith(p)) return null;
    const s = hf.slice(p.length);
    const top: Record<string, string> = { 'wte.weight': 'token_embd.weight', 'ln_f.weight': 'output_norm.weight', 'ff_out.weight': 'output.weight' };
    if (top[s]) return top[s];
    if ((m = /^blocks\.(\d+)\.(\w+)\.(weight|bias)$/.exec(s))) {
      const parts: Record<string, string> = { attn_norm: 'attn_norm', q_proj: 'attn_q', k_proj: 'attn_k', v_proj: 'attn_v', attn_out: 'attn_output', ff_norm: 'ffn_norm', ff_proj: 'ffn_gate', up_proj: 'ffn_up', ff_out: 'ffn_down' };
      return parts[m[2]] ? `blk.${m[1]}.${parts[m[2]]}.${m[3]}` : null;
    }
    return null;
  }
  const top: Record<string, string> = { 'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
  if (top[hf]) return top[hf];
  if ((m = /^model\.layers\.(\d+)\.(self_attn|mlp|input_layernorm|post_attention_layernorm)\.?(\w*)\.?(weight|bias)$/.exec(hf))) {
    const parts: Record<string, string> = {
      'input_layernorm.': 'attn_norm', 'post_attention_layernorm.': 'ffn_norm',
      'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
      'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
      'self_attn.q_norm': 'attn_q_norm', 'self_attn.k_norm': 'attn_k_norm',
    };
    const part = parts[`${m[2]}.${m[3]}`];
    return part ? `blk.${m[1]}.${part}.${m[4]}` : null;
  }
  return null;
}

/** Undo the converter's q/k row permutation: rows [heads*hd, cols] (cols 1 for a bias). */
export function unpermuteRows(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const hd = rows / heads;
  const half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const from = (h * hd + 2 * i + j) * cols;
        const to = (h * hd + j * half + i) * cols;
        out.set(w.subarray(from, from + cols), to);
      }
  return out;
}

/** The tensors of a GGUF file under Hugging Face names, read as fp32 (a checkpoint for the graph builder). */
export class GgufWeights {
  constructor(
    private file: GgufSource,
    private args: ModelArgs,
  ) {}

  /** the last stacked expert tensor read (a layer's experts are read one after another) */
  private stacked: { name: string; data: Float32Array } | null = null;

  private tensor(name: string) {
    const src = ggufSource(this.args.arch, name);
    const t = src === null ? undefined : this.file.tensors.get(src.name);
    if (!t || (src!.expert !== undefined && (t.dims.length !== 3 || t.dims[2] !== this.args.moe?.experts)))
      throw new FormatError('tensor_missing', `gguf: no tensor for ${JSON.stringify(name)}${src ? ` (${src.name}${src.expert !== undefined ? `, expert ${src.expert}` : ''})` : ''}`);
    return { t, expert: src!.expert };
  }
  has(name: string): boolean {
    const src = ggufSource(this.args.arch, name);
    return src !== null && this.file.tensors.has(src.name);
  }
  info(name: string): TensorInfo {
    const { t, expert } = this.tensor(name);
    const shape = [...t.dims].reverse();
    return expert === undefined ? { name, dtype: 'F32', shape, offset: t.offset, byteLength: t.byteLength } : { name, dtype: 'F32', shape: shape.slice(1), offset: t.offset, byteLength: t.byteLength / shape[0] };
  }
  async readF32(name: string): Promise<Float32Array> {
    const { t, expert } = this.tensor(name);
    if (expert !== undefined) {
      if (this.stacked?.name !== t.name) this.stacked = { name: t.name, data: await this.file.readF32(t.name) };
      const per = t.dims[0] * t.dims[1];
      return this.stacked.data.slice(expert * per, (expert + 1) * per);
    }
    const x = await this.file.readF32(t.name);
    const { arch, numHeads, numKvHeads } = this.args;
    if (arch === 'llada' || arch === 'llama') {
      const q = /\.attn_q\.(weight|bias)$/.test(t.name);
      const k = /\.attn_k\.(weight|bias)$/.test(t.name);
      if (q || k) return unpermuteRows(x, q ? numHeads : numKvHeads, t.dims.length === 1 ? 1 : t.dims[0]);
    }
    return x;
  }
  async close(): Promise<void> {
    await this.file.close();
  }
}

// ---------------------------------------------------------------- config

const num = (v: GgufValue | undefined): number | undefined => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined);

/** The metadata as the config.json of the architecture's Hugging Face layout. */
export function configOf(meta: Map<string, GgufValue>, tensors: Set<string>): Record<string, unknown> {
  const arch = meta.get('general.architecture');
  if (typeof arch !== 'string') fail('gguf_metadata', 'general.architecture is missing');
  const a = arch as string;
  if (!['llada', 'llada-moe', 'llada2', 'rnd1', 'dream', 'llama', 'qwen2', 'qwen3'].includes(a)) fail('unsupported_architecture', `architecture ${JSON.stringify(a)} is not supported (llada, llada-moe, llada2, rnd1, dream, llama, qwen2, qwen3)`);
  const k = (key: string): number | undefined => {
    const v = meta.get(`${a}.${key}`);
    if (!Array.isArray(v)) return num(v);
    // (llama.cpp writes some hyperparameters per layer, as arrays: one value for every layer is that value)
    const layers = num(meta.get(`${a}.block_count`));
    if (v.length === 0 || num(v[0]) === undefined) fail('gguf_metadata', `${a}.${key} is a list of no numbers`);
    if (v.length !== layers || v.some((x) => num(x) !== num(v[0])))
      fail('gguf_metadata', `${a}.${key} differs per layer (${JSON.stringify(v.slice(0, 8).map(num))}${v.length > 8 ? ', ...' : ''} for ${layers ?? '?'} layer${layers === 1 ? '' : 's'}): quench builds every layer alike`);
    return num(v[0]);
  };
  if (meta.has(`${a}.rope.scaling.type`) && meta.get(`${a}.rope.scaling.type`) !== 'none') fail('gguf_metadata', 'rope scaling is not supported yet');
  // (Llama 3.1's scaled RoPE travels as this tensor, with no scaling key)
  if (tensors.has('rope_freqs.weight')) fail('gguf_metadata', 'rope_freqs.weight (scaled RoPE) is not supported yet');
  const tokens = meta.get('tokenizer.ggml.tokens');
  const vocab = k('vocab_size') ?? (Array.isArray(tokens) ? tokens.length : undefined);
  const id = (key: string) => num(meta.get(`tokenizer.ggml.${key}_token_id`));
  const eos = [id('eos'), id('eot')].filter((x): x is number => x !== undefined);
  const heads = k('attention.head_count');
  const hidden = k('embedding_length');
  const headDim = k('attention.key_length');
  // (the head size, the key length or the embedding split over the heads)
  const dim = headDim ?? (hidden !== undefined && heads ? hidden / heads : undefined);
  const valueDim = k('attention.value_length');
  if (valueDim !== undefined && valueDim !== dim) fail('gguf_metadata', `${a}.attention.value_length ${valueDim} differs from the key size ${headDim ?? `${hidden} / ${heads}`}: quench's attention has one head size`);
  const common = {
    vocab_size: vocab,
    rope_theta: k('rope.freq_base') ?? 10000,
    rms_norm_eps: k('attention.layer_norm_rms_epsilon'),
    eos_token_id: [...new Set(eos)],
    bos_token_id: id('bos'),
    pad_token_id: id('padding'),
    // (llama.cpp names diffusion architectures apart: a causal one's mask id, if any, means nothing)
    mask_token_id: a === 'llada' || a === 'llada-moe' || a === 'llada2' || a === 'rnd1' || a === 'dream' ? id('mask') : undefined,
  };
  // (rnd1's and llada2's configs fill absent keys with their classes' defaults (RND1: Qwen3-30B-A3B's
  // shape), which a GGUF file's missing key must not silently take: the keys that shape the
  // graph are required)
  if (a === 'rnd1' || a === 'llada2')
    for (const key of ['block_count', 'embedding_length', 'attention.head_count', 'context_length', 'attention.layer_norm_rms_epsilon', 'expert_count', 'expert_used_count', 'expert_feed_forward_length'])
      if (k(key) === undefined) fail('gguf_metadata', `${a}.${key} is missing`);
  if (a === 'llada2') {
    // (the converter of llama.cpp's open LLaDA2 work, PR 17454: BailingMoeV2's metadata; routing
    // by sigmoid scores (expert_gating_func 2), renormalized, as quench's llada2 always does;
    // no block size key: the config's default, 32)
    if (k('expert_gating_func') !== undefined && k('expert_gating_func') !== 2) fail('gguf_metadata', `${a}.expert_gating_func ${k('expert_gating_func')} is not supported (LLaDA2.0 routes by sigmoid: 2)`);
    if (meta.get(`${a}.expert_weights_norm`) === false) fail('gguf_metadata', `${a}.expert_weights_norm false is not supported`);
    const rot = k('rope.dimension_count');
    return {
      architectures: ['LLaDA2MoeModelLM'], model_type: 'llada2_moe', hidden_size: hidden, num_hidden_layers: k('block_count'), num_attention_heads: heads, num_key_value_heads: k('attention.head_count_kv') ?? heads,
      head_dim: dim, intermediate_size: k('feed_forward_length') ?? k('expert_feed_forward_length'), max_position_embeddings: k('context_length'), tie_word_embeddings: !tensors.has('output.weight'),
      num_experts: k('expert_count'), num_experts_per_tok: k('expert_used_count'), moe_intermediate_size: k('expert_feed_forward_length'), num_shared_experts: k('expert_shared_count') ?? 0,
      n_group: k('expert_group_count') ?? 1, topk_group: k('expert_group_used_count') ?? 1, routed_scaling_factor: k('expert_weights_scale') ?? 1, first_k_dense_replace: k('leading_dense_block_count') ?? 0,
      partial_rotary_factor: rot !== undefined && dim ? rot / dim : 1, use_qk_norm: tensors.has('blk.0.attn_q_norm.weight'), score_function: 'sigmoid',
      ...common,
    };
  }
  if (a === 'rnd1')
    // (llama.cpp's rnd1 graph: Qwen3-MoE's, bidirectional, every layer a mixture renormalized over
    // its top k, as quench's rnd1 reads any config; no shift key: shifted, its CLI's default)
    return {
      architectures: ['RND1LM'], model_type: 'rnd1', hidden_size: hidden, num_hidden_layers: k('block_count'), num_attention_heads: heads, num_key_value_heads: k('attention.head_count_kv') ?? heads,
      head_dim: dim, intermediate_size: k('feed_forward_length') ?? k('expert_feed_forward_length'), max_position_embeddings: k('context_length'),
      num_experts: k('expert_count'), num_experts_per_tok: k('expert_used_count'), moe_intermediate_size: k('expert_feed_forward_length'),
      tie_word_embeddings: !tensors.has('output.weight'), ...common, pad_token_id: id('padding') ?? null,
    };
  if (a === 'llada-moe') {
    // (llama.cpp's llada-moe graph: every layer a mixture, no shared expert, weights not renormalized)
    if (meta.get(`${a}.expert_weights_norm`) === true) fail('gguf_metadata', `${a}.expert_weights_norm true is not supported`);
    const L = k('block_count');
    return {
      architectures: ['LLaDAMoEModelLM'], model_type: 'lladamoe', hidden_size: hidden, num_hidden_layers: L, num_attention_heads: heads, num_key_value_heads: k('attention.head_count_kv'), head_dim: headDim,
      max_position_embeddings: k('context_length'), tie_word_embeddings: !tensors.has('output.weight'),
      num_experts: k('expert_count'), num_experts_per_tok: k('expert_used_count'), expert_intermediate_size: k('expert_feed_forward_length'),
      dense_intermediate_size: k('feed_forward_length'), moe_layer_freq: L === undefined ? undefined : Array(L).fill(1), qk_layernorm: tensors.has('blk.0.attn_q_norm.weight'),
      ...common,
    };
  }
  if (a === 'llada') {
    // (LLaDA's config has no head size: d_model / n_heads)
    if (headDim !== undefined && hidden !== undefined && heads && headDim * heads !== hidden) fail('gguf_metadata', `llada.attention.key_length ${headDim} is not embedding_length / head_count (${hidden} / ${heads}): LLaDA's layout has no other head size`);
    return {
      model_type: 'llada', d_model: hidden, n_layers: k('block_count'), n_heads: heads, n_kv_heads: k('attention.head_count_kv'), mlp_hidden_size: k('feed_forward_length'),
      max_sequence_length: k('context_length'), weight_tying: !tensors.has('output.weight'), ...common,
    };
  }
  return {
    model_type: a === 'dream' ? 'Dream' : a, hidden_size: hidden, num_hidden_layers: k('block_count'), num_attention_heads: heads, num_key_value_heads: k('attention.head_count_kv'),
    head_dim: headDim, intermediate_size: k('feed_forward_length'), max_position_embeddings: k('context_length'), tie_word_embeddings: !tensors.has('output.weight'),
    ...(a === 'llama' && tensors.has('blk.0.attn_q.bias') ? { attention_bias: true } : {}),
    ...common,
  };
}

/** Model arguments of a GGUF file, validated as a config.json would be. */
export function argsOf(meta: Map<string, GgufValue>, tensors: Set<string>): ModelArgs {
  const raw = configOf(meta, tensors);
  for (const [key, v] of Object.entries(raw)) if (v === undefined) delete raw[key];
  let args: ModelArgs;
  try {
    args = parseConfig(raw);
  } catch (e) {
    if (e instanceof FormatError) fail('gguf_metadata', e.message.replace(/^config\.json: /, 'metadata: '));
    throw e;
  }
  // llama.cpp's diffusion flag (absent: LLaDA unshifted, Dream shifted, as its CLI defaults)
  const shift = meta.get('diffusion.shift_logits');
  if (typeof shift === 'boolean' && args.attention !== 'causal') args.shiftedLogits = shift;
  if (args.attention !== 'causal' && args.maskTokenId === null) fail('gguf_metadata', 'a diffusion model needs tokenizer.ggml.mask_token_id');
  const rot = num(meta.get(`${meta.get('general.architecture')}.rope.dimension_count`));
  // (llada2 reads it as its partial_rotary_factor; elsewhere partial RoPE is refused)
  if (rot !== undefined && rot !== (args.rotaryDim ?? args.headDim)) fail('gguf_metadata', `partial RoPE (rope.dimension_count ${rot} of head size ${args.headDim}) is not supported`);
  return args;
}

/** Refuse a file with tensors the graph would not read (biases or norms of a variant quench does not build): they would be dropped silently. */
export function checkAllUsed(arch: ModelArgs['arch'], tensors: Iterable<string>, used: Iterable<string>): void {
  const want = new Set([...used].map((n) => ggufSource(arch, n)?.name));
  for (const t of tensors) if (!want.has(t)) fail('gguf_unused_tensor', `tensor ${JSON.stringify(t)} has no place in quench's ${arch} graph (a variant it does not build)`);
}

// ---------------------------------------------------------------- tokenizer

// llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), by tokenizer.ggml.pre
const LLAMA3 = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2 = LLAMA3.replace('\\p{N}{1,3}', '\\p{N}');
const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const DEFAULT = ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2, '\\p{N}+', '[0-9][0-9][0-9]'];
// (Ling / BailingMoE, LLaDA-MoE, LLaDA2: Qwen2's splits, one newline closing a whitespace run, no NFC)
const BAILINGMOE = "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
const PRE: Record<string, string[]> = {
  llama3: [LLAMA3], 'llama-v3': [LLAMA3], 'llama-bpe': [LLAMA3],
  qwen2: [QWEN2], 'deepseek-r1-qwen': [QWEN2],
  gpt2: [GPT2], 'gpt-2': [GPT2], default: DEFAULT,
  bailingmoe: [BAILINGMOE], bailingmoe2: [BAILINGMOE], 'llada-moe': [BAILINGMOE],
};
const NFC_PRE = new Set(['qwen2', 'deepseek-r1-qwen']);

/** tokenizer.json and tokenizer_config.json from the tokenizer metadata (byte-level BPE, "gpt2"). */
export function tokenizerOf(meta: Map<string, GgufValue>, vocabSize: number): { json: Record<string, unknown>; config: Record<string, unknown> } {
  const model = meta.get('tokenizer.ggml.model');
  if (model !== 'gpt2') fail('gguf_tokenizer', `tokenizer.ggml.model ${JSON.stringify(model)} is not supported (only "gpt2", byte-level BPE)`);
  const pre = meta.get('tokenizer.ggml.pre') ?? 'default';
  const patterns = typeof pre === 'string' ? PRE[pre] : undefined;
  if (!patterns) fail('gguf_tokenizer', `tokenizer.ggml.pre ${JSON.stringify(pre)} is not supported (${Object.keys(PRE).join(', ')})`);
  const tokens = meta.get('tokenizer.ggml.tokens');
  const types = meta.get('tokenizer.ggml.token_type') ?? [];
  const merges = meta.get('tokenizer.ggml.merges') ?? [];
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) fail('gguf_tokenizer', 'tokenizer.ggml.tokens is not a list of strings');
  const toks = tokens as string[];
  if (toks.length > vocabSize) fail('gguf_tokenizer', `${toks.length} tokens for a vocabulary of ${vocabSize}`);
  if (!Array.isArray(types) || !Array.isArray(merges) || merges.some((m) => typeof m !== 'string')) fail('gguf_tokenizer', 'tokenizer.ggml.token_type / merges are malformed');
  // (no prototype: tokens such as "constructor" or "__proto__" are plain keys)
  const vocab: Record<string, number> = Object.create(null);
  const added: Record<string, unknown>[] = [];
  toks.forEach((t, i) => {
    const type = (types as GgufValue[])[i];
    // UNUSED (5): filler ids ([PAD123]) the original vocabulary does not have
    if (type === 5) return;
    // CONTROL (3) and USER_DEFINED (4) tokens are matched whole, as added tokens
    if (type === 3 || type === 4) added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type === 3 });
    if (!Object.hasOwn(vocab, t)) vocab[t] = i;
  });
  const splits = patterns!.map((p) => ({ type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false }));
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: NFC_PRE.has(pre as string) ? { type: 'NFC' } : null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [...splits, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false }] },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: patterns![0] === LLAMA3, vocab, merges },
  };
  const text = (key: string) => {
    const id = num(meta.get(`tokenizer.ggml.${key}_token_id`));
    if (id === undefined) return undefined;
    if (id < 0 || id >= toks.length) fail('gguf_tokenizer', `tokenizer.ggml.${key}_token_id ${id} is not a token id (${toks.length} tokens)`);
    return toks[id];
  };
  const config: Record<string, unknown> = { tokenizer_class: 'PreTrainedTokenizerFast', clean_up_tokenization_spaces: false };
  for (const [key, field] of [['bos', 'bos_token'], ['eos', 'eos_token'], ['padding', 'pad_token'], ['mask', 'mask_token'], ['unknown', 'unk_token']] as const) {
    const t = text(key);
    if (t !== undefined) config[field] = t;
  }
  const template = meta.get('tokenizer.chat_template');
  if (typeof template === 'string') config.chat_template = template;
  const addBos = meta.get('tokenizer.ggml.add_bos_token');
  if (typeof addBos === 'boolean') config.add_bos_token = addBos;
  return { json, config };
}
