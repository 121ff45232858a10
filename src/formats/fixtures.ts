// Tiny random checkpoints in each real layout (same config keys, tensor names, dtypes,
// tokenizer files and chat templates as the published models), written by code so tests
// and benchmarks never download anything. Tensors are generated and written one at a
// time, so a multi-GB benchmark checkpoint never sits in memory.

import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeSafetensorsHeader, f16ToF32, f32ToBf16Bits, f32ToF16Bits, fromFloat32, DTYPE_SIZES, type DType, type TensorToWrite } from './safetensors.ts';
import { bytesToUnicode } from './tokenizer.ts';

export type FixtureArch = 'llada' | 'llada_moe' | 'llada2' | 'rnd1' | 'dream' | 'sdar' | 'sdar_moe' | 'coda' | 'fast_dllm_v2' | 'mdlm' | 'bd3lm' | 'llama' | 'qwen2' | 'qwen3';

export interface FixtureOptions {
  arch: FixtureArch;
  hidden?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  intermediate?: number;
  /** model vocab (>= tokenizer size; the rest are unused rows, as in real checkpoints) */
  vocab?: number;
  dtype?: DType;
  seed?: number;
  /** std of the random linear weights */
  std?: number;
  tied?: boolean;
  /** split into this many shards with an index.json */
  shards?: number;
  ropeTheta?: number;
  maxPositions?: number;
  /** every masked / next position strongly prefers this token id (stop tests) */
  favourToken?: number;
  /** sdar, fast_dllm_v2: the model's block size (config block_size / bd_size) */
  blockSize?: number;
  /** head size other than hidden / heads (Qwen3's: 128 at every size), written as head_dim */
  headDim?: number;
  /** llada_moe: the mixture (defaults: 4 experts, 2 per token, intermediate 32, no shared expert, every layer a mixture) */
  experts?: number;
  expertsPerToken?: number;
  expertSize?: number;
  sharedSize?: number;
  /** llada_moe: moe_layer_freq (1 mixture, 0 dense); sdar_moe: the 0s become mlp_only_layers */
  moeLayers?: number[];
  /** sdar_moe: norm_topk_prob (default true; null: the key left out) and decoder_sparse_step (default 1) */
  normTopk?: boolean | null;
  sparseStep?: number;
  /** llada_moe: clip_qkv */
  clipQkv?: number;
  /** llada2: shared experts (each of expertSize), expert groups (n_group) and how many the choice keeps, routed_scaling_factor, dense first layers */
  sharedExperts?: number;
  groups?: number;
  groupsKept?: number;
  routedScale?: number;
  firstDense?: number;
  /** llada2: partial_rotary_factor (default 0.5) */
  rotaryFactor?: number;
  /** llama, qwen2, qwen3: dllm's A2D diffusion adaptation (model_type a2d-*, <|mask|> added to the tokenizer only) */
  a2d?: boolean;
  /** mdlm, bd3lm: the adaLN conditioning width (cond_dim); bd3lm: adaln off, cross_attn off */
  condDim?: number;
  adaln?: boolean;
  crossAttn?: boolean;
}

// ---------------------------------------------------------------- random numbers

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(rand: () => number, n: number, std: number, mean = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rand(), 1e-12);
    const v = rand();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = mean + r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = mean + r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

// ---------------------------------------------------------------- tokenizer files

const MERGE_WORDS = ['the', 'and', 'is', 'in', 'of', 'to', 'at', 'on', 'an', 'er', 're', 'he', 'ing'];

export interface FixtureTokenizer {
  tokenizer: Record<string, unknown>;
  config: Record<string, unknown>;
  /** special_tokens_map.json, where the tokenizer keeps its special tokens there (GPT-2's) */
  specialMap?: Record<string, unknown>;
  specials: Record<string, number>;
  size: number;
}

const TEMPLATES = {
  llada:
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
  chatml:
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
  llama3:
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
};

export function fixtureTokenizer(fixtureArch: FixtureArch, addMask = false): FixtureTokenizer {
  // (the LLaDA-MoE fixture borrows the LLaDA tokenizer family: what it tests is the layout)
  const arch = fixtureArch === 'llada_moe' || fixtureArch === 'llada2' ? 'llada' : fixtureArch;
  // (MDLM and BD3-LM use GPT-2's tokenizer: one special token, no chat template, no mask token)
  const gpt2 = arch === 'mdlm' || arch === 'bd3lm';
  const b2u = bytesToUnicode();
  const vocab: Record<string, number> = {};
  b2u.forEach((c, i) => (vocab[c] = i));
  const merges: string[] = [];
  const add = (a: string, b: string) => {
    merges.push(`${a} ${b}`);
    if (vocab[a + b] === undefined) vocab[a + b] = Object.keys(vocab).length;
  };
  for (const w of MERGE_WORDS) {
    let cur = w[0];
    for (let i = 1; i < w.length; i++) {
      add(cur, w[i]);
      cur += w[i];
    }
  }
  add('Ġ', 't'); // "Ġ" is the space byte
  add('Ġt', 'he');
  let next = Object.keys(vocab).length;
  const names =
    arch === 'llada'
      ? ['<|endoftext|>', '<|startoftext|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>', '<|mdm_mask|>']
      : gpt2
        ? ['<|endoftext|>']
        : arch === 'llama'
        ? ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>']
        : ['<|endoftext|>', '<|im_start|>', '<|im_end|>', ...(arch === 'dream' || arch === 'coda' ? ['<|mask|>'] : arch === 'sdar' || arch === 'sdar_moe' || arch === 'rnd1' ? ['<|MASK|>'] : arch === 'fast_dllm_v2' ? ['|<MASK>|'] : [])];
  if (addMask) names.push('<|mask|>');
  const specials: Record<string, number> = {};
  const added = names.map((content) => {
    specials[content] = next;
    return { id: next++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  });
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Digits', individual_digits: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  const tok = (s: string) => s;
  if (gpt2) {
    const config = { model_max_length: 1024, tokenizer_class: 'GPT2Tokenizer' };
    const specialMap = { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>' };
    return { tokenizer, config, specialMap, specials, size: next };
  }
  const config: Record<string, unknown> =
    arch === 'llada'
      ? { bos_token: tok('<|startoftext|>'), eos_token: tok('<|endoftext|>'), pad_token: tok('<|endoftext|>'), mask_token: '<|mdm_mask|>', chat_template: TEMPLATES.llada }
      : arch === 'llama'
        ? { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>', chat_template: TEMPLATES.llama3 }
        : { bos_token: null, eos_token: '<|im_end|>', pad_token: '<|endoftext|>', chat_template: TEMPLATES.chatml };
  if (addMask) config.mask_token = '<|mask|>';
  config.tokenizer_class = 'PreTrainedTokenizerFast';
  config.model_max_length = 2048;
  return { tokenizer, config, specials, size: next };
}

// ---------------------------------------------------------------- checkpoint

interface PlannedTensor {
  name: string;
  shape: number[];
  kind: 'linear' | 'norm' | 'embed' | 'bias' | 'router' | 'expert_bias' | 'raw';
  /** kind raw: the values */
  data?: Float32Array;
}

export interface FixtureInfo {
  dir: string;
  config: Record<string, unknown>;
  specials: Record<string, number>;
  tokenizerSize: number;
  params: number;
}

export async function writeFixture(dir: string, o: FixtureOptions): Promise<FixtureInfo> {
  const D = o.hidden ?? 64;
  const layers = o.layers ?? 2;
  const H = o.heads ?? 4;
  const Hkv = o.kvHeads ?? H;
  const Fi = o.intermediate ?? 2 * D;
  // (the released MDLM and BD3-LM checkpoints are fp32)
  const dtype = o.dtype ?? (o.arch === 'mdlm' || o.arch === 'bd3lm' ? 'F32' : 'BF16');
  const std = o.std ?? 0.15;
  const Dh = o.headDim ?? D / H;
  if (o.headDim !== undefined && o.arch === 'llada') throw new Error('writeFixture: the LLaDA config has no head_dim');
  const E = o.experts ?? 4, Fe = o.expertSize ?? 32;
  const tk = fixtureTokenizer(o.arch, o.a2d);
  // (a DiT's mask is the id after GPT-2's vocabulary: 50257 of 50258)
  const V = Math.max(o.vocab ?? (o.arch === 'mdlm' || o.arch === 'bd3lm' ? tk.size + 1 : tk.size + 8), tk.size);
  const rand = mulberry32(o.seed ?? 1);
  await mkdir(dir, { recursive: true });

  const plan: PlannedTensor[] = [];
  // one SwiGLU feed-forward under prefix p (Hugging Face names), intermediate size f
  const swiglu = (p: string, f: number) =>
    plan.push(
      { name: `${p}.gate_proj.weight`, shape: [f, D], kind: 'linear' },
      { name: `${p}.up_proj.weight`, shape: [f, D], kind: 'linear' },
      { name: `${p}.down_proj.weight`, shape: [D, f], kind: 'linear' },
    );
  let config: Record<string, unknown>;
  if (o.arch === 'llada') {
    const p = 'model.transformer';
    plan.push({ name: `${p}.wte.weight`, shape: [V, D], kind: 'embed' });
    for (let i = 0; i < layers; i++) {
      const b = `${p}.blocks.${i}`;
      plan.push(
        { name: `${b}.attn_norm.weight`, shape: [D], kind: 'norm' },
        { name: `${b}.q_proj.weight`, shape: [H * Dh, D], kind: 'linear' },
        { name: `${b}.k_proj.weight`, shape: [Hkv * Dh, D], kind: 'linear' },
        { name: `${b}.v_proj.weight`, shape: [Hkv * Dh, D], kind: 'linear' },
        { name: `${b}.attn_out.weight`, shape: [D, H * Dh], kind: 'linear' },
        { name: `${b}.ff_norm.weight`, shape: [D], kind: 'norm' },
        { name: `${b}.ff_proj.weight`, shape: [Fi, D], kind: 'linear' },
        { name: `${b}.up_proj.weight`, shape: [Fi, D], kind: 'linear' },
        { name: `${b}.ff_out.weight`, shape: [D, Fi], kind: 'linear' },
      );
    }
    plan.push({ name: `${p}.ln_f.weight`, shape: [D], kind: 'norm' });
    if (!o.tied) plan.push({ name: `${p}.ff_out.weight`, shape: [V, D], kind: 'linear' });
    config = {
      architectures: ['LLaDAModelLM'],
      model_type: 'llada',
      d_model: D,
      n_layers: layers,
      n_heads: H,
      n_kv_heads: Hkv,
      mlp_hidden_size: Fi,
      mlp_ratio: Fi / D,
      vocab_size: V,
      embedding_size: V,
      rope_theta: o.ropeTheta ?? 500000,
      rms_norm_eps: 1e-5,
      max_sequence_length: o.maxPositions ?? 1024,
      mask_token_id: tk.specials['<|mdm_mask|>'],
      eos_token_id: tk.specials['<|endoftext|>'],
      pad_token_id: tk.specials['<|endoftext|>'],
      bos_token_id: tk.specials['<|startoftext|>'],
      weight_tying: !!o.tied,
      include_bias: false,
      block_type: 'llama',
      activation_type: 'silu',
      layer_norm_type: 'rms',
      rope: true,
      torch_dtype: dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32',
    };
  } else if (o.arch === 'llada2') {
    // the BailingMoE layout of LLaDA2.0 (its config.json names no mask id: the fixture's is written)
    const firstDense = o.firstDense ?? 1;
    const shared = o.sharedExperts ?? 1;
    plan.push({ name: 'model.word_embeddings.weight', shape: [V, D], kind: 'embed' });
    for (let i = 0; i < layers; i++) {
      const b = `model.layers.${i}`;
      plan.push(
        { name: `${b}.input_layernorm.weight`, shape: [D], kind: 'norm' },
        { name: `${b}.attention.query_key_value.weight`, shape: [(H + 2 * Hkv) * Dh, D], kind: 'linear' },
        { name: `${b}.attention.query_layernorm.weight`, shape: [Dh], kind: 'norm' },
        { name: `${b}.attention.key_layernorm.weight`, shape: [Dh], kind: 'norm' },
        { name: `${b}.attention.dense.weight`, shape: [D, H * Dh], kind: 'linear' },
        { name: `${b}.post_attention_layernorm.weight`, shape: [D], kind: 'norm' },
      );
      if (i < firstDense) swiglu(`${b}.mlp`, Fi);
      else {
        plan.push({ name: `${b}.mlp.gate.weight`, shape: [E, D], kind: 'router' }, { name: `${b}.mlp.gate.expert_bias`, shape: [E], kind: 'expert_bias' });
        for (let e = 0; e < E; e++) swiglu(`${b}.mlp.experts.${e}`, Fe);
        if (shared > 0) swiglu(`${b}.mlp.shared_experts`, shared * Fe);
      }
    }
    plan.push({ name: 'model.norm.weight', shape: [D], kind: 'norm' });
    if (!o.tied) plan.push({ name: 'lm_head.weight', shape: [V, D], kind: 'linear' });
    config = {
      architectures: ['LLaDA2MoeModelLM'],
      model_type: 'llada2_moe',
      hidden_size: D,
      num_hidden_layers: layers,
      num_attention_heads: H,
      num_key_value_heads: Hkv,
      head_dim: Dh,
      intermediate_size: Fi,
      moe_intermediate_size: Fe,
      num_experts: E,
      num_shared_experts: shared,
      num_experts_per_tok: o.expertsPerToken ?? 2,
      n_group: o.groups ?? 2,
      topk_group: o.groupsKept ?? 1,
      routed_scaling_factor: o.routedScale ?? 2.5,
      score_function: 'sigmoid',
      norm_topk_prob: true,
      moe_router_enable_expert_bias: true,
      router_dtype: 'fp32',
      first_k_dense_replace: firstDense,
      partial_rotary_factor: o.rotaryFactor ?? 0.5,
      rope_theta: o.ropeTheta ?? 600000,
      use_qk_norm: true,
      use_qkv_bias: false,
      use_bias: false,
      rms_norm_eps: 1e-6,
      hidden_act: 'silu',
      vocab_size: V,
      max_position_embeddings: o.maxPositions ?? 1024,
      tie_word_embeddings: !!o.tied,
      pad_token_id: tk.specials['<|endoftext|>'],
      eos_token_id: tk.specials['<|endoftext|>'],
      mask_token_id: tk.specials['<|mdm_mask|>'],
      ...(o.blockSize ? { block_size: o.blockSize } : {}),
      torch_dtype: dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32',
    };
  } else if (o.arch === 'mdlm' || o.arch === 'bd3lm') {
    // the DiT backbone of their Hugging Face code (F = 4D, heads of D / H, the mask the last id)
    if (o.kvHeads !== undefined && o.kvHeads !== H) throw new Error('writeFixture: the DiT has no grouped heads');
    const C = o.condDim ?? 24;
    const adaln = o.arch === 'mdlm' || o.adaln !== false;
    const p = 'backbone';
    plan.push({ name: `${p}.vocab_embed.embedding`, shape: [V, D], kind: 'embed' });
    if (adaln)
      plan.push(
        { name: `${p}.sigma_map.mlp.0.weight`, shape: [C, 256], kind: 'linear' },
        { name: `${p}.sigma_map.mlp.0.bias`, shape: [C], kind: 'bias' },
        { name: `${p}.sigma_map.mlp.2.weight`, shape: [C, C], kind: 'linear' },
        { name: `${p}.sigma_map.mlp.2.bias`, shape: [C], kind: 'bias' },
      );
    plan.push({ name: `${p}.rotary_emb.inv_freq`, shape: [Dh / 2], kind: 'raw', data: Float32Array.from({ length: Dh / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / Dh)) });
    for (let i = 0; i < layers; i++) {
      const b = `${p}.blocks.${i}`;
      plan.push(
        { name: `${b}.norm1.weight`, shape: [D], kind: 'norm' },
        { name: `${b}.attn_qkv.weight`, shape: [3 * D, D], kind: 'linear' },
        { name: `${b}.attn_out.weight`, shape: [D, D], kind: 'linear' },
        { name: `${b}.norm2.weight`, shape: [D], kind: 'norm' },
        { name: `${b}.mlp.0.weight`, shape: [4 * D, D], kind: 'linear' },
        { name: `${b}.mlp.0.bias`, shape: [4 * D], kind: 'bias' },
        { name: `${b}.mlp.2.weight`, shape: [D, 4 * D], kind: 'linear' },
        { name: `${b}.mlp.2.bias`, shape: [D], kind: 'bias' },
      );
      if (adaln) plan.push({ name: `${b}.adaLN_modulation.weight`, shape: [6 * D, C], kind: 'linear' }, { name: `${b}.adaLN_modulation.bias`, shape: [6 * D], kind: 'bias' });
    }
    plan.push(
      { name: `${p}.output_layer.norm_final.weight`, shape: [D], kind: 'norm' },
      { name: `${p}.output_layer.linear.weight`, shape: [V, D], kind: 'linear' },
      { name: `${p}.output_layer.linear.bias`, shape: [V], kind: 'bias' },
    );
    if (adaln) plan.push({ name: `${p}.output_layer.adaLN_modulation.weight`, shape: [2 * D, C], kind: 'linear' }, { name: `${p}.output_layer.adaLN_modulation.bias`, shape: [2 * D], kind: 'bias' });
    // (BD3-LM's var_min buffers, on the model itself)
    if (o.arch === 'bd3lm') plan.push({ name: 'sampling_eps_min', shape: [], kind: 'raw', data: Float32Array.of(1e-3) }, { name: 'sampling_eps_max', shape: [], kind: 'raw', data: Float32Array.of(0.999) });
    config = {
      architectures: [o.arch === 'mdlm' ? 'MDLM' : 'BD3LM'],
      auto_map: o.arch === 'mdlm' ? { AutoConfig: 'configuration_mdlm.MDLMConfig', AutoModelForMaskedLM: 'modeling_mdlm.MDLM' } : { AutoConfig: 'configuration_bd3lm.BD3LMConfig', AutoModelForMaskedLM: 'modeling_bd3lm.BD3LM' },
      model_type: o.arch,
      vocab_size: V,
      model_length: o.maxPositions ?? 1024,
      hidden_dim: D,
      cond_dim: C,
      n_blocks: layers,
      n_heads: H,
      dropout: 0.1,
      time_conditioning: false,
      return_dict: false,
      torch_dtype: 'float32',
      ...(o.arch === 'bd3lm' ? { block_size: o.blockSize ?? 4, cross_attn: o.crossAttn !== false, adaln, attn_backend: 'sdpa', causal: false, var_min: true, sampling_eps_min: 1e-3, sampling_eps_max: 0.999 } : {}),
    };
  } else {
    const qwen3 = o.arch === 'sdar' || o.arch === 'sdar_moe' || o.arch === 'coda' || o.arch === 'qwen3' || o.arch === 'llada_moe' || o.arch === 'rnd1';
    const bias = o.arch !== 'llama' && !qwen3;
    plan.push({ name: 'model.embed_tokens.weight', shape: [V, D], kind: 'embed' });
    for (let i = 0; i < layers; i++) {
      const b = `model.layers.${i}`;
      plan.push(
        { name: `${b}.input_layernorm.weight`, shape: [D], kind: 'norm' },
        { name: `${b}.self_attn.q_proj.weight`, shape: [H * Dh, D], kind: 'linear' },
        { name: `${b}.self_attn.k_proj.weight`, shape: [Hkv * Dh, D], kind: 'linear' },
        { name: `${b}.self_attn.v_proj.weight`, shape: [Hkv * Dh, D], kind: 'linear' },
      );
      // (the Qwen3 layout, SDAR's too: each head's q and k normalized, weights [Dh])
      if (qwen3) plan.push({ name: `${b}.self_attn.q_norm.weight`, shape: [Dh], kind: 'norm' }, { name: `${b}.self_attn.k_norm.weight`, shape: [Dh], kind: 'norm' });
      if (bias)
        plan.push(
          { name: `${b}.self_attn.q_proj.bias`, shape: [H * Dh], kind: 'bias' },
          { name: `${b}.self_attn.k_proj.bias`, shape: [Hkv * Dh], kind: 'bias' },
          { name: `${b}.self_attn.v_proj.bias`, shape: [Hkv * Dh], kind: 'bias' },
        );
      plan.push(
        { name: `${b}.self_attn.o_proj.weight`, shape: [D, H * Dh], kind: 'linear' },
        { name: `${b}.post_attention_layernorm.weight`, shape: [D], kind: 'norm' },
      );
      if (o.arch === 'rnd1' || ((o.arch === 'llada_moe' || o.arch === 'sdar_moe') && (o.moeLayers?.[i] ?? 1) === 1 && (i + 1) % (o.sparseStep ?? 1) === 0)) {
        // (router logits spread wide enough that the top-k choice differs between tokens)
        plan.push({ name: `${b}.mlp.gate.weight`, shape: [E, D], kind: 'router' });
        for (let e = 0; e < E; e++) swiglu(`${b}.mlp.experts.${e}`, Fe);
        if (o.sharedSize && o.arch === 'llada_moe') swiglu(`${b}.shared_expert`, o.sharedSize);
      } else swiglu(`${b}.mlp`, Fi);
    }
    plan.push({ name: 'model.norm.weight', shape: [D], kind: 'norm' });
    if (!o.tied) plan.push({ name: 'lm_head.weight', shape: [V, D], kind: 'linear' });
    const eos = o.arch === 'llama' ? tk.specials['<|eot_id|>'] : o.arch === 'llada_moe' ? tk.specials['<|endoftext|>'] : tk.specials['<|im_end|>'];
    config = {
      architectures: [o.a2d ? `A2D${o.arch === 'llama' ? 'Llama' : o.arch === 'qwen2' ? 'Qwen2' : 'Qwen3'}LMHeadModel` : o.arch === 'llada_moe' ? 'LLaDAMoEModelLM' : o.arch === 'rnd1' ? 'RND1LM' : o.arch === 'sdar_moe' ? 'SDARMoeForCausalLM' : o.arch === 'coda' ? 'CoDALanguageModel' : o.arch === 'dream' ? 'DreamModel' : o.arch === 'sdar' ? 'SDARForCausalLM' : o.arch === 'fast_dllm_v2' ? 'Fast_dLLM_QwenForCausalLM' : o.arch === 'llama' ? 'LlamaForCausalLM' : o.arch === 'qwen3' ? 'Qwen3ForCausalLM' : 'Qwen2ForCausalLM'],
      // (the released LLaDA-MoE config.json says "llada"; its class names the layout)
      model_type: o.a2d ? `a2d-${o.arch}` : o.arch === 'coda' ? 'CoDA' : o.arch === 'llada_moe' ? 'llada' : o.arch === 'dream' ? 'Dream' : o.arch === 'fast_dllm_v2' ? 'Fast_dLLM_Qwen' : o.arch,
      hidden_size: D,
      intermediate_size: Fi,
      num_hidden_layers: layers,
      num_attention_heads: H,
      num_key_value_heads: Hkv,
      hidden_act: 'silu',
      max_position_embeddings: o.maxPositions ?? 1024,
      rope_theta: o.ropeTheta ?? (o.arch === 'llama' ? 500000 : 1000000),
      rms_norm_eps: 1e-6,
      vocab_size: V,
      tie_word_embeddings: !!o.tied,
      eos_token_id: eos,
      bos_token_id: o.arch === 'llama' ? tk.specials['<|begin_of_text|>'] : o.arch === 'llada_moe' ? tk.specials['<|startoftext|>'] : tk.specials['<|endoftext|>'],
      pad_token_id: o.arch === 'llama' ? undefined : tk.specials['<|endoftext|>'],
      torch_dtype: dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32',
      ...(o.arch === 'dream' ? { mask_token_id: tk.specials['<|mask|>'] } : {}),
      ...(o.arch === 'llada_moe'
        ? {
            mask_token_id: tk.specials['<|mdm_mask|>'],
            num_experts: o.experts ?? 4,
            num_experts_per_tok: o.expertsPerToken ?? 2,
            expert_intermediate_size: o.expertSize ?? 32,
            dense_intermediate_size: Fi,
            shared_expert_intermediate_size: o.sharedSize ?? null,
            moe_layer_freq: o.moeLayers ?? Array.from({ length: layers }, () => 1),
            qk_layernorm: true,
            partial_rotary_factor: 1,
            clip_qkv: o.clipQkv ?? null,
            norm_topk_prob: false,
            moe_router_enable_expert_bias: false,
            routed_scaling_factor: 1,
            attention_bias: false,
            rms_norm_eps: 1e-5,
            rope_theta: o.ropeTheta ?? 50000,
          }
        : {}),
      // (RND1's keys: Qwen3-MoE's, as its configuration class writes them)
      ...(o.arch === 'rnd1'
        ? {
            head_dim: Dh,
            attention_bias: false,
            mask_token_id: tk.specials['<|MASK|>'],
            num_experts: o.experts ?? 4,
            num_experts_per_tok: o.expertsPerToken ?? 2,
            moe_intermediate_size: o.expertSize ?? 32,
            norm_topk_prob: true,
            decoder_sparse_step: 1,
            mlp_only_layers: [],
            rope_scaling: false,
            use_sliding_window: false,
            is_causal: false,
            moe_backend: 'hf',
            num_diffusion_steps: 256,
          }
        : {}),
      // (CoDA-v0's own keys beside Qwen3's)
      ...(o.arch === 'coda' ? { head_dim: Dh, attention_bias: false, mask_token_id: tk.specials['<|mask|>'], attention_kernel: 'flash_attention', mask_block_sizes: [4, 8, 16, 32], sampling_eps: [0.001, 0.25, 0.5, 0.25, 0.001] } : {}),
      // (SDAR-30B-A3B's: SDAR's keys and Qwen3-MoE's)
      ...(o.arch === 'sdar_moe'
        ? {
            mask_token_id: tk.specials['<|MASK|>'],
            block_size: o.blockSize ?? 4,
            head_dim: Dh,
            attention_bias: false,
            num_experts: o.experts ?? 4,
            num_experts_per_tok: o.expertsPerToken ?? 2,
            moe_intermediate_size: o.expertSize ?? 32,
            ...(o.normTopk === null ? {} : { norm_topk_prob: o.normTopk ?? true }),
            decoder_sparse_step: o.sparseStep ?? 1,
            mlp_only_layers: (o.moeLayers ?? []).flatMap((f, i) => (f === 0 ? [i] : [])),
          }
        : {}),
      ...(o.arch === 'qwen3' ? { head_dim: Dh, attention_bias: false } : o.headDim !== undefined ? { head_dim: Dh } : {}),
      ...(o.arch === 'sdar' ? { mask_token_id: tk.specials['<|MASK|>'], block_size: o.blockSize ?? 4, head_dim: Dh, attention_bias: false } : {}),
      // (the released configs name no mask id: the engine's default is the real vocabulary's 151665)
      ...(o.arch === 'fast_dllm_v2' ? { mask_token_id: tk.specials['|<MASK>|'], bd_size: o.blockSize ?? 32 } : {}),
    };
  }

  const favour = o.favourToken;
  // Stop tests: every embedding shares a strong direction u and the head row of `favour`
  // points along u, so every position prefers that token.
  const u = Float32Array.from({ length: D }, (_, i) => (i % 3 === 0 ? 1 : -1));
  const gen = (t: PlannedTensor): Float32Array => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.kind === 'raw') return t.data!;
    if (t.kind === 'norm') return normal(rand, n, 0.1, 1);
    if (t.kind === 'bias') return normal(rand, n, 0.1);
    if (t.kind === 'router') return normal(rand, n, 0.5);
    if (t.kind === 'expert_bias') return normal(rand, n, 0.2);
    if (t.kind === 'embed') {
      const e = normal(rand, n, 1);
      if (favour !== undefined) for (let i = 0; i < n; i++) e[i] += 4 * u[i % D];
      return e;
    }
    const w = normal(rand, n, std);
    const isHead = t.shape[0] === V && (t.name.endsWith('ff_out.weight') || t.name === 'lm_head.weight' || t.name.endsWith('output_layer.linear.weight'));
    if (favour !== undefined && isHead) for (let d = 0; d < D; d++) w[favour * D + d] = 2 * u[d];
    return w;
  };
  let params = 0;
  const shards = Math.max(1, o.shards ?? 1);
  const per = Math.ceil(plan.length / shards);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const part = plan.slice(s * per, (s + 1) * per);
    const file = shards === 1 ? 'model.safetensors' : `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const header = encodeSafetensorsHeader(
      part.map((t) => ({ name: t.name, dtype, shape: t.shape, data: { byteLength: t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZES[dtype] } as Uint8Array })),
      { format: 'pt' },
    );
    const fd = openSync(join(dir, file), 'w');
    try {
      writeSync(fd, header);
      for (const t of part) {
        const v = gen(t);
        params += v.length;
        writeSync(fd, fromFloat32(dtype, v));
        weightMap[t.name] = file;
      }
    } finally {
      closeSync(fd);
    }
  }
  if (shards > 1) await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 1));
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tk.tokenizer));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tk.config, null, 2));
  if (tk.specialMap) await writeFile(join(dir, 'special_tokens_map.json'), JSON.stringify(tk.specialMap, null, 2));
  return { dir, config, specials: tk.specials, tokenizerSize: tk.size, params };
}

// ---------------------------------------------------------------- GGUF

/** A metadata value with its GGUF type: 2 u16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array (itemType), 10 u64 */
export type GgufEntry = [key: string, type: number, value: unknown, itemType?: number | number[]];

/** The bytes of a GGUF file (version 3 unless given); tensors' data placed in order, each aligned. */
export function encodeGguf(o: { metadata: GgufEntry[]; tensors: { name: string; dims: number[]; type: number; data: Uint8Array }[]; alignment?: number; version?: number }): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    parts.push(b);
  };
  const u64 = (v: number | bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    parts.push(b);
  };
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    u64(b.length);
    parts.push(b);
  };
  // (an array's item type; for arrays of arrays, the item types level by level)
  const value = (type: number, v: unknown, itemType?: number | number[]) => {
    const b = Buffer.alloc(8);
    switch (type) {
      case 0: b.writeUInt8(v as number); parts.push(b.subarray(0, 1)); break;
      case 2: b.writeUInt16LE(v as number); parts.push(b.subarray(0, 2)); break;
      case 4: b.writeUInt32LE(v as number); parts.push(b.subarray(0, 4)); break;
      case 5: b.writeInt32LE(v as number); parts.push(b.subarray(0, 4)); break;
      case 6: b.writeFloatLE(v as number); parts.push(b.subarray(0, 4)); break;
      case 7: b.writeUInt8(v ? 1 : 0); parts.push(b.subarray(0, 1)); break;
      case 8: str(v as string); break;
      case 9: {
        const [it, ...inner] = Array.isArray(itemType) ? itemType : [itemType!];
        u32(it);
        u64((v as unknown[]).length);
        for (const x of v as unknown[]) value(it, x, inner);
        break;
      }
      case 10: u64(v as number); break;
      default: throw new Error(`encodeGguf: value type ${type}`);
    }
  };
  const align = o.alignment ?? 32;
  parts.push(Buffer.from('GGUF', 'ascii'));
  u32(o.version ?? 3);
  u64(o.tensors.length);
  u64(o.metadata.length);
  for (const [k, t, v, it] of o.metadata) {
    str(k);
    u32(t);
    value(t, v, it);
  }
  let off = 0;
  const offsets: number[] = [];
  for (const t of o.tensors) {
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(t.type);
    offsets.push(off);
    u64(off);
    off = Math.ceil((off + t.data.length) / align) * align;
  }
  let head = Buffer.concat(parts);
  head = Buffer.concat([head, Buffer.alloc(Math.ceil(head.length / align) * align - head.length)]);
  const data = Buffer.alloc(off);
  o.tensors.forEach((t, i) => data.set(t.data, offsets[i]));
  return Buffer.concat([head, data]);
}

/** fp32 values as ggml type bytes: F32, F16, BF16, Q8_0 (round to nearest) or Q4_0. */
export function ggmlEncode(type: number, x: Float32Array): Uint8Array {
  if (type === 3 || type === 12) return encodeAsymmetric4(type, x);
  const b = Buffer.alloc((type === 0 ? 4 : type === 8 ? 34 / 32 : type === 2 ? 18 / 32 : 2) * x.length);
  if (type === 0) x.forEach((v, i) => b.writeFloatLE(v, 4 * i));
  else if (type === 1) x.forEach((v, i) => b.writeUInt16LE(f32ToF16Bits(v), 2 * i));
  else if (type === 30) x.forEach((v, i) => b.writeUInt16LE(f32ToBf16Bits(v), 2 * i));
  else if (type === 8 || type === 2) {
    const q4 = type === 2;
    for (let blk = 0; blk < x.length / 32; blk++) {
      const v = x.subarray(blk * 32, blk * 32 + 32);
      const at = blk * (q4 ? 18 : 34);
      // Q8_0: d = max|v| / 127; Q4_0: d = (the value of largest magnitude) / -8, so it maps to -8 exactly
      let amax = 0;
      let max = 0;
      for (const y of v) if (Math.abs(y) > amax) (amax = Math.abs(y)), (max = y);
      const d = q4 ? max / -8 : amax / 127;
      b.writeUInt16LE(f32ToF16Bits(d), at);
      const inv = d ? 1 / d : 0;
      if (!q4) v.forEach((y, j) => b.writeInt8(Math.round(y * inv), at + 2 + j));
      else
        for (let j = 0; j < 16; j++) {
          const lo = Math.min(15, Math.max(0, Math.round(v[j] * inv + 8)));
          const hi = Math.min(15, Math.max(0, Math.round(v[j + 16] * inv + 8)));
          b.writeUInt8(lo | (hi << 4), at + 2 + j);
        }
    }
  } else throw new Error(`ggmlEncode: type ${type}`);
  return b;
}

/**
 * Q4_1 (blocks of 32: fp16 d, fp16 m, x = q * d + m) and Q4_K (super-blocks of 256: fp16 d and
 * dmin, eight sub-blocks of 32 with 6-bit scales and mins, x = d * scale * q - dmin * min), as
 * a plain min/max quantizer writes them (ggml's makes better choices of scale; the layout is the
 * same): the asymmetric 4-bit formats, for the tests of what int4 keeps of them.
 */
function encodeAsymmetric4(type: 3 | 12, x: Float32Array): Uint8Array {
  const f16 = (v: number) => f16ToF32(f32ToF16Bits(v));
  const code = (v: number, step: number, min: number) => (step > 0 ? Math.max(0, Math.min(15, Math.round((v - min) / step))) : 0);
  if (type === 3) {
    const b = Buffer.alloc((20 / 32) * x.length);
    for (let blk = 0; blk < x.length / 32; blk++) {
      const v = x.subarray(blk * 32, blk * 32 + 32);
      const at = blk * 20;
      const m = Math.min(...v);
      const d = (Math.max(...v) - m) / 15;
      b.writeUInt16LE(f32ToF16Bits(d), at);
      b.writeUInt16LE(f32ToF16Bits(m), at + 2);
      for (let j = 0; j < 16; j++) b.writeUInt8(code(v[j], f16(d), f16(m)) | (code(v[j + 16], f16(d), f16(m)) << 4), at + 4 + j);
    }
    return b;
  }
  const b = Buffer.alloc((144 / 256) * x.length);
  for (let blk = 0; blk < x.length / 256; blk++) {
    const at = blk * 144;
    const subs = Array.from({ length: 8 }, (_, s) => x.subarray(blk * 256 + 32 * s, blk * 256 + 32 * s + 32));
    // (x = d * sc * q - dmin * mn: mn >= 0 carries the sub-block's negative part)
    const mins = subs.map((v) => -Math.min(0, ...v));
    const scales = subs.map((v, s) => (Math.max(...v) + mins[s]) / 15);
    const d = f16(Math.max(...scales) / 63);
    const dmin = f16(Math.max(...mins) / 63);
    const sc = scales.map((v) => (d > 0 ? Math.min(63, Math.round(v / d)) : 0));
    const mn = mins.map((v) => (dmin > 0 ? Math.min(63, Math.round(v / dmin)) : 0));
    b.writeUInt16LE(f32ToF16Bits(d), at);
    b.writeUInt16LE(f32ToF16Bits(dmin), at + 2);
    // the 12 scale bytes, as get_scale_min_k4 reads them back
    for (let j = 0; j < 4; j++) {
      b[at + 4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
      b[at + 8 + j] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
      b[at + 12 + j] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4);
    }
    subs.forEach((v, s) => {
      const step = Math.fround(d * sc[s]);
      const min = -Math.fround(dmin * mn[s]);
      v.forEach((y, l) => (b[at + 16 + 32 * (s >> 1) + l] |= code(y, step, min) << (s & 1 ? 4 : 0)));
    });
  }
  return b;
}

/**
 * A fixture checkpoint directory written as llama.cpp's converter writes a GGUF: its metadata
 * keys, tensor names, [in, out] dims, norms and biases in F32, the rest in `type`, LLaDA and
 * Llama q/k rows permuted for interleaved RoPE, the tokenizer as gpt2 BPE metadata. The
 * name mapping here is written out independently of the loader's (models/gguf.ts), so a test
 * that loads both files compares two readings of the converter's layout.
 */
export async function writeGgufFromFixture(dir: string, out: string, type: number, parts = 1): Promise<void> {
  const { Checkpoint } = await import('./safetensors.ts');
  const { readFile } = await import('node:fs/promises');
  const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, number & string & boolean & number[]>;
  const tj = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number>; merges: string[] }; added_tokens: { id: number; content: string; special: boolean }[] };
  const tc = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, string | boolean>;
  // (LLaDA-MoE's config says model_type "llada"; the converter registers it by class, as "llada-moe";
  // RND1 as "rnd1", its RND1Model a Qwen2MoeModel that writes attention.causal false and the mask id)
  const classes = Array.isArray(cfg.architectures) ? (cfg.architectures as unknown as string[]) : [];
  // LLaDA2.0 as llama.cpp's open LLaDA2 work (PR 17454) writes it: "llada2", BailingMoeV2's keys)
  const arch = classes.includes('LLaDAMoEModelLM') ? 'llada-moe' : classes.includes('RND1LM') ? 'rnd1' : classes.includes('LLaDA2MoeModelLM') ? 'llada2' : (String(cfg.model_type).toLowerCase() as 'llada' | 'dream' | 'llama' | 'qwen2' | 'qwen3');
  const moe = arch === 'llada-moe' || arch === 'rnd1' || arch === 'llada2';
  const llada = arch === 'llada';
  const V = llada ? cfg.embedding_size ?? cfg.vocab_size : cfg.vocab_size;
  const D = llada ? cfg.d_model : cfg.hidden_size;
  const H = llada ? cfg.n_heads : cfg.num_attention_heads;
  const Hkv = (llada ? cfg.n_kv_heads : cfg.num_key_value_heads) ?? H;
  const L = llada ? cfg.n_layers : cfg.num_hidden_layers;
  const meta: GgufEntry[] = [
    ['general.architecture', 8, arch],
    ['general.name', 8, 'fixture'],
    [`${arch}.block_count`, 4, L],
    [`${arch}.context_length`, 4, llada ? cfg.max_sequence_length : cfg.max_position_embeddings],
    [`${arch}.embedding_length`, 4, D],
    [`${arch}.feed_forward_length`, 4, llada ? cfg.mlp_hidden_size : cfg.intermediate_size],
    [`${arch}.attention.head_count`, 4, H],
    [`${arch}.attention.head_count_kv`, 4, Hkv],
    [`${arch}.rope.freq_base`, 6, cfg.rope_theta],
    [`${arch}.attention.layer_norm_rms_epsilon`, 6, cfg.rms_norm_eps],
  ];
  if (typeof cfg.head_dim === 'number') meta.push([`${arch}.attention.key_length`, 4, cfg.head_dim], [`${arch}.attention.value_length`, 4, cfg.head_dim]);
  if (llada) meta.push(['llada.vocab_size', 4, V], ['llada.attention.causal', 7, false], ['diffusion.shift_logits', 7, false], ['tokenizer.ggml.add_bos_token', 7, true]);
  if (arch === 'dream') meta.push(['dream.attention.causal', 7, false]);
  if (moe)
    meta.push(
      [`${arch}.expert_count`, 4, cfg.num_experts],
      [`${arch}.expert_used_count`, 4, cfg.num_experts_per_tok],
      [`${arch}.expert_feed_forward_length`, 4, arch === 'llada-moe' ? cfg.expert_intermediate_size : cfg.moe_intermediate_size],
      ...(arch === 'llada2' ? [] : ([[`${arch}.attention.causal`, 7, false]] as GgufEntry[])),
      ...(arch === 'rnd1' ? [] : ([['diffusion.shift_logits', 7, false]] as GgufEntry[])),
    );
  if (arch === 'llada2')
    meta.push(
      ['llada2.expert_shared_count', 4, cfg.num_shared_experts],
      ['llada2.expert_shared_feed_forward_length', 4, cfg.moe_intermediate_size * cfg.num_shared_experts],
      ['llada2.expert_weights_scale', 6, cfg.routed_scaling_factor],
      ['llada2.expert_weights_norm', 7, true],
      ['llada2.expert_group_count', 4, cfg.n_group],
      ['llada2.expert_group_used_count', 4, cfg.topk_group],
      ['llada2.expert_gating_func', 4, 2],
      ['llada2.leading_dense_block_count', 4, cfg.first_k_dense_replace],
      ['llada2.rope.dimension_count', 4, Math.round(cfg.head_dim * cfg.partial_rotary_factor)],
    );
  // tokenizer: every id in order (ids without a token as [PAD{i}], UNUSED), added special tokens CONTROL
  const tokens: string[] = Array.from({ length: V }, (_, i) => `[PAD${i}]`);
  const types: number[] = Array(V).fill(5);
  for (const [t, id] of Object.entries(tj.model.vocab)) (tokens[id] = t), (types[id] = 1);
  for (const a of tj.added_tokens) (tokens[a.id] = a.content), (types[a.id] = a.special ? 3 : 4);
  const idOf = (t: unknown) => (typeof t === 'string' ? tokens.indexOf(t) : -1);
  meta.push(['tokenizer.ggml.model', 8, 'gpt2'], ['tokenizer.ggml.pre', 8, 'qwen2'], ['tokenizer.ggml.tokens', 9, tokens, 8], ['tokenizer.ggml.token_type', 9, types, 5], ['tokenizer.ggml.merges', 9, tj.model.merges, 8]);
  // special ids as SpecialVocab finds them: tokenizer_config.json's token, else config.json's id
  for (const [key, field, cfgKey] of [['bos', 'bos_token', 'bos_token_id'], ['eos', 'eos_token', 'eos_token_id'], ['padding', 'pad_token', 'pad_token_id'], ['mask', 'mask_token', 'mask_token_id']] as const) {
    const fromCfg = Array.isArray(cfg[cfgKey]) ? cfg[cfgKey][0] : cfg[cfgKey];
    const id = idOf(tc[field]) >= 0 ? idOf(tc[field]) : typeof fromCfg === 'number' ? fromCfg : -1;
    if (id >= 0) meta.push([`tokenizer.ggml.${key}_token_id`, 4, id]);
  }
  if (typeof tc.chat_template === 'string') meta.push(['tokenizer.chat_template', 8, tc.chat_template]);

  const mapName = (hf: string): string => {
    const llp: Record<string, string> = { 'model.word_embeddings.weight': 'token_embd.weight', 'model.transformer.wte.weight': 'token_embd.weight', 'model.transformer.ln_f.weight': 'output_norm.weight', 'model.transformer.ff_out.weight': 'output.weight', 'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
    if (llp[hf]) return llp[hf];
    const table: [RegExp, string][] = [
      [/^model\.transformer\.blocks\.(\d+)\.attn_norm\./, 'attn_norm'], [/^model\.transformer\.blocks\.(\d+)\.q_proj\./, 'attn_q'], [/^model\.transformer\.blocks\.(\d+)\.k_proj\./, 'attn_k'],
      [/^model\.transformer\.blocks\.(\d+)\.v_proj\./, 'attn_v'], [/^model\.transformer\.blocks\.(\d+)\.attn_out\./, 'attn_output'], [/^model\.transformer\.blocks\.(\d+)\.ff_norm\./, 'ffn_norm'],
      [/^model\.transformer\.blocks\.(\d+)\.ff_proj\./, 'ffn_gate'], [/^model\.transformer\.blocks\.(\d+)\.up_proj\./, 'ffn_up'], [/^model\.transformer\.blocks\.(\d+)\.ff_out\./, 'ffn_down'],
      [/^model\.layers\.(\d+)\.input_layernorm\./, 'attn_norm'], [/^model\.layers\.(\d+)\.self_attn\.q_proj\./, 'attn_q'], [/^model\.layers\.(\d+)\.self_attn\.k_proj\./, 'attn_k'],
      [/^model\.layers\.(\d+)\.self_attn\.v_proj\./, 'attn_v'], [/^model\.layers\.(\d+)\.self_attn\.o_proj\./, 'attn_output'], [/^model\.layers\.(\d+)\.post_attention_layernorm\./, 'ffn_norm'],
      [/^model\.layers\.(\d+)\.mlp\.gate_proj\./, 'ffn_gate'], [/^model\.layers\.(\d+)\.mlp\.up_proj\./, 'ffn_up'], [/^model\.layers\.(\d+)\.mlp\.down_proj\./, 'ffn_down'],
      [/^model\.layers\.(\d+)\.self_attn\.q_norm\./, 'attn_q_norm'], [/^model\.layers\.(\d+)\.self_attn\.k_norm\./, 'attn_k_norm'],
      [/^model\.layers\.(\d+)\.mlp\.gate\.weight/, 'ffn_gate_inp'],
      // (BailingMoeV2: the fused qkv as it is, the router's expert bias, the shared experts)
      [/^model\.layers\.(\d+)\.attention\.query_key_value\./, 'attn_qkv'], [/^model\.layers\.(\d+)\.attention\.dense\./, 'attn_output'],
      [/^model\.layers\.(\d+)\.attention\.query_layernorm\./, 'attn_q_norm'], [/^model\.layers\.(\d+)\.attention\.key_layernorm\./, 'attn_k_norm'],
      [/^model\.layers\.(\d+)\.mlp\.shared_experts\.gate_proj\./, 'ffn_gate_shexp'], [/^model\.layers\.(\d+)\.mlp\.shared_experts\.up_proj\./, 'ffn_up_shexp'],
      [/^model\.layers\.(\d+)\.mlp\.shared_experts\.down_proj\./, 'ffn_down_shexp'],
    ];
    const bias = /^model\.layers\.(\d+)\.mlp\.gate\.expert_bias$/.exec(hf);
    if (bias) return `blk.${bias[1]}.exp_probs_b.bias`;
    for (const [re, part] of table) {
      const m = re.exec(hf);
      if (m) return `blk.${m[1]}.${part}.${hf.endsWith('.bias') ? 'bias' : 'weight'}`;
    }
    throw new Error(`writeGgufFromFixture: no GGUF name for ${hf}`);
  };
  // LlamaModel.permute: rows viewed as [heads, 2, hd/2] are stored as [heads, hd/2, 2]
  const permute = (w: Float32Array, heads: number, cols: number) => {
    const hd = w.length / cols / heads;
    const o = new Float32Array(w.length);
    for (let h = 0; h < heads; h++)
      for (let j = 0; j < 2; j++)
        for (let i = 0; i < hd / 2; i++) o.set(w.subarray((h * hd + j * (hd / 2) + i) * cols, (h * hd + j * (hd / 2) + i + 1) * cols), (h * hd + 2 * i + j) * cols);
    return o;
  };
  const ck = await Checkpoint.open(dir);
  const tensors: { name: string; dims: number[]; type: number; data: Uint8Array }[] = [];
  try {
    // a layer's experts stacked as the converter does (torch.stack, dim 0): [E, out, in]
    const experts = new Map<string, { e: number; x: Float32Array; shape: number[] }[]>();
    for (const hf of ck.names()) {
      const m = /^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$/.exec(hf);
      if (!m) continue;
      const key = `blk.${m[1]}.ffn_${m[3]}_exps.weight`;
      if (!experts.has(key)) experts.set(key, []);
      experts.get(key)!.push({ e: Number(m[2]), x: await ck.readF32(hf), shape: ck.info(hf).shape });
    }
    for (const [name, list] of experts) {
      list.sort((a, b) => a.e - b.e);
      const x = new Float32Array(list.reduce((n, t) => n + t.x.length, 0));
      list.forEach((t, i) => x.set(t.x, i * t.x.length));
      tensors.push({ name, dims: [...list[0].shape].reverse().concat(list.length), type, data: ggmlEncode(type, x) });
    }
    for (const hf of ck.names()) {
      if (/\.mlp\.experts\./.test(hf)) continue;
      const info = ck.info(hf);
      let x = await ck.readF32(hf);
      const name = mapName(hf);
      const cols = info.shape.length === 2 ? info.shape[1] : 1;
      if ((llada || arch === 'llama') && /\.attn_[qk]\./.test(name)) x = permute(x, name.includes('attn_q') ? H : Hkv, cols);
      // (llama.cpp's quantizer keeps a mixture's router, ffn_gate_inp, in F32)
      const t = info.shape.length === 1 || name.includes('.ffn_gate_inp.') ? 0 : type;
      tensors.push({ name, dims: [...info.shape].reverse(), type: t, data: ggmlEncode(t, x) });
    }
  } finally {
    await ck.close();
  }
  if (parts === 1) return writeFile(out, encodeGguf({ metadata: meta, tensors }));
  // split as gguf-split writes it: OUT-0000k-of-0000N.gguf; the first part holds the metadata,
  // every part the split keys (u16 split.no / split.count, i32 split.tensors.count) and its tensors
  const per = Math.ceil(tensors.length / parts);
  for (let k = 0; k < parts; k++) {
    const split: GgufEntry[] = [['split.no', 2, k], ['split.count', 2, parts], ['split.tensors.count', 5, tensors.length]];
    const name = out.replace(/\.gguf$/i, `-${String(k + 1).padStart(5, '0')}-of-${String(parts).padStart(5, '0')}.gguf`);
    await writeFile(name, encodeGguf({ metadata: k === 0 ? [...meta, ...split] : split, tensors: tensors.slice(k * per, (k + 1) * per) }));
  }
}

// ---------------------------------------------------------------- LoRA adapters

export interface LoraFixtureOptions {
  /** module names (the last part, PEFT's target_modules) given a low-rank pair, e.g. q_proj */
  targets: string[];
  r?: number;
  alpha?: number;
  rslora?: boolean;
  /** PEFT's alpha_pattern / rank_pattern (a module matching rank_pattern gets that rank) */
  alphaPattern?: Record<string, number>;
  rankPattern?: Record<string, number>;
  /** the embedding tensor to give an embedding pair (lora_embedding_A / _B) */
  embedding?: string;
  /** base tensors saved whole, changed (modules_to_save) */
  replace?: string[];
  /** bias "lora_only": a targeted module's bias trained too, saved (changed) under its base_layer */
  biases?: boolean;
  /** the embedding saved whole beside its pair, under its base_layer (PEFT's save_embedding_layers),
   * changed by this much (as a resized or trained embedding would be) */
  embeddingBase?: number;
  dtype?: DType;
  seed?: number;
  /** std of A and B (trained pairs: B is not the zero it starts from) */
  std?: number;
}

/** A PEFT LoRA adapter for the checkpoint in baseDir, as PEFT saves one: adapter_config.json and
 * adapter_model.safetensors with base_model.model.<module>.lora_{A,B}.weight names. */
export async function writeLoraFixture(dir: string, baseDir: string, o: LoraFixtureOptions): Promise<void> {
  const { Checkpoint } = await import('./safetensors.ts');
  const r = o.r ?? 4;
  const dtype = o.dtype ?? 'F32';
  const std = o.std ?? 0.2;
  const rand = mulberry32(o.seed ?? 11);
  const rankOf = (module: string) => Object.entries(o.rankPattern ?? {}).find(([k]) => new RegExp(`^(.*\\.)?(${k})$`).test(module))?.[1] ?? r;
  const tensors: TensorToWrite[] = [];
  const put = (name: string, shape: number[], x: Float32Array) => tensors.push({ name: `base_model.model.${name}`, dtype, shape, data: fromFloat32(dtype, x) });
  const ck = await Checkpoint.open(baseDir);
  try {
    for (const name of ck.names()) {
      const shape = ck.info(name).shape;
      const module = name.replace(/\.weight$/, '');
      const targeted = (m: string) => o.targets.includes(m.split('.').pop()!);
      if (o.replace?.includes(name)) put(name, shape, normal(rand, shape.reduce((a, b) => a * b, 1), std));
      else if (name === o.embedding) {
        const k = rankOf(module);
        put(`${module}.lora_embedding_A`, [k, shape[0]], normal(rand, k * shape[0], std));
        put(`${module}.lora_embedding_B`, [shape[1], k], normal(rand, shape[1] * k, std));
        if (o.embeddingBase !== undefined) {
          const e = await ck.readF32(name);
          const noise = normal(rand, e.length, o.embeddingBase);
          put(`${module}.base_layer.weight`, shape, e.map((x, i) => x + noise[i]));
        }
      } else if (shape.length === 2 && name.endsWith('.weight') && targeted(module)) {
        const k = rankOf(module);
        put(`${module}.lora_A.weight`, [k, shape[1]], normal(rand, k * shape[1], std));
        put(`${module}.lora_B.weight`, [shape[0], k], normal(rand, shape[0] * k, std));
      } else if (o.biases && shape.length === 1 && name.endsWith('.bias') && targeted(name.slice(0, -'.bias'.length))) {
        put(`${name.slice(0, -'.bias'.length)}.base_layer.bias`, shape, normal(rand, shape[0], std));
      }
    }
  } finally {
    await ck.close();
  }
  await mkdir(dir, { recursive: true });
  const head = encodeSafetensorsHeader(tensors, { format: 'pt' });
  await writeFile(join(dir, 'adapter_model.safetensors'), Buffer.concat([head, ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]));
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseDir,
    r,
    lora_alpha: o.alpha ?? 2 * r,
    lora_dropout: 0.05,
    use_rslora: o.rslora ?? false,
    use_dora: false,
    bias: o.biases ? 'lora_only' : 'none',
    fan_in_fan_out: false,
    target_modules: [...o.targets, ...(o.embedding ? [o.embedding.replace(/\.weight$/, '').split('.').pop()] : [])],
    modules_to_save: o.replace?.map((n) => n.replace(/\.weight$/, '').split('.').pop()) ?? null,
    rank_pattern: o.rankPattern ?? {},
    alpha_pattern: o.alphaPattern ?? {},
    inference_mode: true,
  };
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
}
