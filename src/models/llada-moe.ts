// LLaDA-MoE (inclusionAI/LLaDA-MoE-7B-A1B-Base/-Instruct): the OLMoE layout under Hugging Face
// names (per-head q/k RMSNorm, no biases, untied head), bidirectional attention, logits not
// shifted, mask token 156895. Each layer's feed-forward is a mixture: a router `mlp.gate`
// [E, D], softmax over all E experts, the top k (8 of 64) run, their SwiGLU outputs summed
// weighted by their (not renormalized) probabilities; a layer marked 0 in moe_layer_freq has a
// dense SwiGLU instead, and a shared expert, where the config sizes one, is added to the mixture.
// RND1 and SDAR-MoE (Qwen3-MoE, no shared expert) have the same names.

import type { ModelArgs } from '../formats/config.ts';
import { qwen3Names } from './causal.ts';
import type { WeightNames } from './transformer.ts';

export function lladaMoeNames(args: ModelArgs): WeightNames {
  const base = qwen3Names(args);
  const moe = args.moe!;
  return {
    ...base,
    layer: (i) => {
      const l = base.layer(i);
      if (!args.qkNorm) {
        delete l.qNorm;
        delete l.kNorm;
      }
      if (!moe.layers[i]) return l;
      const p = `model.layers.${i}`;
      const swiglu = (q: string) => ({ gate: `${q}.gate_proj.weight`, up: `${q}.up_proj.weight`, down: `${q}.down_proj.weight` });
      return {
        ...l,
        gate: undefined,
        up: undefined,
        down: undefined,
        moe: {
          router: `${p}.mlp.gate.weight`, // [E, D]
          experts: Array.from({ length: moe.experts }, (_, e) => swiglu(`${p}.mlp.experts.${e}`)), // [Fe, D] x2, [D, Fe]
          shared: moe.sharedSize === null ? null : swiglu(`${p}.shared_expert`),
        },
      };
    },
  };
}
