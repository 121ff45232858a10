// Hugging Face Llama / Qwen2 / Qwen3 causal LMs (LlamaForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM): the autoregressive baselines. Causal attention, logits shifted (row i
// predicts token i+1). Qwen2 adds biases to q/k/v (not o); Qwen3 has none and RMS-normalizes
// each head's q and k over head_dim before RoPE.

import type { ModelArgs } from '../formats/config.ts';
import type { WeightNames } from './transformer.ts';

export function hfNames(args: ModelArgs): WeightNames {
  return {
    embed: 'model.embed_tokens.weight', // [V, D]
    layer: (i) => {
      const p = `model.layers.${i}`;
      return {
        attnNorm: `${p}.input_layernorm.weight`, // [D]
        q: `${p}.self_attn.q_proj.weight`, // [H*Dh, D]
        k: `${p}.self_attn.k_proj.weight`, // [Hkv*Dh, D]
        v: `${p}.self_attn.v_proj.weight`, // [Hkv*Dh, D]
        ...(args.qkvBias
          ? { qBias: `${p}.self_attn.q_proj.bias`, kBias: `${p}.self_attn.k_proj.bias`, vBias: `${p}.self_attn.v_proj.bias` }
          : {}),
        o: `${p}.self_attn.o_proj.weight`, // [D, H*Dh]
        mlpNorm: `${p}.post_attention_layernorm.weight`, // [D]
        gate: `${p}.mlp.gate_proj.weight`, // [F, D]
        up: `${p}.mlp.up_proj.weight`, // [F, D]
        down: `${p}.mlp.down_proj.weight`, // [D, F]
      };
    },
    finalNorm: 'model.norm.weight', // [D]
    head: args.tiedEmbeddings ? null : 'lm_head.weight', // [V, D]
  };
}

/** The Qwen3 layout: hfNames without biases, plus per-head q/k norm weights [Dh] (SDAR too). */
export function qwen3Names(args: ModelArgs): WeightNames {
  const base = hfNames({ ...args, qkvBias: false });
  return {
    ...base,
    layer: (i) => ({
      ...base.layer(i),
      qNorm: `model.layers.${i}.self_attn.q_norm.weight`, // [Dh]
      kNorm: `model.layers.${i}.self_attn.k_norm.weight`, // [Dh]
    }),
  };
}
