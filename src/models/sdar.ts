// SDAR (JetLM/SDAR-*-Chat): the Qwen3 layout (no biases, each head's q and k RMS-normalized
// over head_dim before RoPE, untied head) trained as a block diffusion model: attention is
// causal across blocks of `block_size` (4 by default) aligned to position 0 and bidirectional
// within one; logits are not shifted; the mask token is <|MASK|> (151669).

import { qwen3Names } from './causal.ts';

/** SDAR's tensors are the Qwen3 layout's. */
export const sdarNames = qwen3Names;
