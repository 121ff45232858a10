// Dream (Dream-org/Dream-v0-*-7B, DiffuCoder): the Qwen2.5 layout (q/k/v biases, o without,
// untied head) run with bidirectional attention. Logits are shifted: the prediction for
// position i is read from the output at i - 1, as in the causal model it was adapted from.

import type { ModelArgs } from '../formats/config.ts';
import { hfNames } from './causal.ts';
import type { WeightNames } from './transformer.ts';

export function dreamNames(args: ModelArgs): WeightNames {
  return hfNames({ ...args, qkvBias: true });
}
