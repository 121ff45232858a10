// LLaDA (GSAI-ML/LLaDA-8B-*): OLMo-style names, bidirectional attention, logits not
// shifted, mask token 126336. Block: h = x + attn_out(attn(rope(q), rope(k), v)) on
// attn_norm(x); out = h + ff_out(silu(ff_proj(m)) * up_proj(m)) on ff_norm(h).

import type { ModelArgs } from '../formats/config.ts';
import type { WeightNames } from './transformer.ts';

export function lladaNames(args: ModelArgs): WeightNames {
  const p = 'model.transformer';
  return {
    embed: `${p}.wte.weight`, // [V, D]
    layer: (i) => ({
      attnNorm: `${p}.blocks.${i}.attn_norm.weight`, // [D]
      q: `${p}.blocks.${i}.q_proj.weight`, // [H*Dh, D]
      k: `${p}.blocks.${i}.k_proj.weight`, // [Hkv*Dh, D]
      v: `${p}.blocks.${i}.v_proj.weight`, // [Hkv*Dh, D]
      o: `${p}.blocks.${i}.attn_out.weight`, // [D, H*Dh]
      mlpNorm: `${p}.blocks.${i}.ff_norm.weight`, // [D]
      gate: `${p}.blocks.${i}.ff_proj.weight`, // [F, D] (silu applied)
      up: `${p}.blocks.${i}.up_proj.weight`, // [F, D]
      down: `${p}.blocks.${i}.ff_out.weight`, // [D, F]
    }),
    finalNorm: `${p}.ln_f.weight`, // [D]
    head: args.tiedEmbeddings ? null : `${p}.ff_out.weight`, // [V, D]
  };
}
