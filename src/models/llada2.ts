// LLaDA2.0 (inclusionAI/LLaDA2.0-mini / -flash, LLaDA2MoeModelLM): the BailingMoE layout.
// word_embeddings; per layer a fused query_key_value [(H + 2 Hkv) Dh, D] whose rows are all q
// heads, then all k heads, then all v heads; per-head q/k RMSNorm (query_layernorm /
// key_layernorm [Dh]) before RoPE on each head's first rotary dims; the attention output
// `dense`; a dense SwiGLU in the first first_k_dense_replace layers, a mixture after them (router
// mlp.gate [E, D] with its expert_bias [E], experts, shared_experts); norm; lm_head.

import type { ModelArgs } from '../formats/config.ts';
import type { WeightNames } from './transformer.ts';

export function llada2Names(args: ModelArgs): WeightNames {
  const moe = args.moe!;
  return {
    embed: 'model.word_embeddings.weight', // [V, D]
    layer: (i) => {
      const p = `model.layers.${i}`;
      const swiglu = (q: string) => ({ gate: `${q}.gate_proj.weight`, up: `${q}.up_proj.weight`, down: `${q}.down_proj.weight` });
      return {
        attnNorm: `${p}.input_layernorm.weight`, // [D]
        qkv: `${p}.attention.query_key_value.weight`, // [(H + 2 Hkv) Dh, D]
        ...(args.qkNorm ? { qNorm: `${p}.attention.query_layernorm.weight`, kNorm: `${p}.attention.key_layernorm.weight` } : {}), // [Dh]
        o: `${p}.attention.dense.weight`, // [D, H Dh]
        mlpNorm: `${p}.post_attention_layernorm.weight`, // [D]
        ...(moe.layers[i]
          ? {
              moe: {
                router: `${p}.mlp.gate.weight`, // [E, D]
                expertBias: `${p}.mlp.gate.expert_bias`, // [E]
                experts: Array.from({ length: moe.experts }, (_, e) => swiglu(`${p}.mlp.experts.${e}`)),
                shared: moe.sharedSize === null ? null : swiglu(`${p}.mlp.shared_experts`),
              },
            }
          : swiglu(`${p}.mlp`)),
      };
    },
    finalNorm: 'model.norm.weight', // [D]
    head: args.tiedEmbeddings ? null : 'lm_head.weight', // [V, D]
  };
}
