// Constrained decoding (JSON mode and any other token-level grammar): the output must be a
// string the constraint accepts. A constrained generation commits left to right, each step
// the first masked position and then following ones while the model is confident, each token
// chosen among those the constraint allows after the tokens before it. The parallel part is
// the same bet threshold decoding makes: a confident guess made next to masks is kept.

import type { Rng } from './rng.ts';
import { sampleLogits, type Choice, type SamplerOptions } from './sampling.ts';

export interface Constraint<S = unknown> {
  /** the state before the first generated token */
  start(): S;
  /** the state after `token`, or null when the token is not allowed here (stop tokens
   * are allowed exactly where the output may end) */
  next(state: S, token: number): S | null;
  /** whether the output is whole here */
  complete(state: S): boolean;
}

/**
 * Choose a token allowed in `state` from a full logits row. Greedy checks the candidates in
 * the order of their logits as far as needed; sampling draws from the allowed ones, weighted
 * as the sampler would weigh them among themselves. null when nothing is allowed.
 * `prob` is the model's probability of the choice, unconstrained (the confidence a run of
 * commits is judged by).
 */
export function constrainedChoice<S>(
  c: Constraint<S>,
  state: S,
  logits: Float32Array,
  topIds: ArrayLike<number>,
  lse: number,
  entropy: number,
  o: SamplerOptions,
  rng: Rng,
): { choice: Choice; state: S } | null {
  let token = -1;
  let next: S | null = null;
  if (o.temperature <= 0) {
    // the graph's candidates first: usually one of them is allowed, and then only tokens
    // with a higher logit than it (none) are left to check
    let best = -Infinity;
    const consider = (t: number) => {
      if (!(logits[t] > best)) return;
      const s = c.next(state, t);
      if (s === null) return;
      best = logits[t];
      token = t;
      next = s;
    };
    for (let k = 0; k < topIds.length; k++) consider(topIds[k]);
    for (let t = 0; t < logits.length; t++) consider(t);
  } else {
    const ids: number[] = [];
    const ls: number[] = [];
    const states = new Map<number, S>();
    for (let t = 0; t < logits.length; t++) {
      const s = c.next(state, t);
      if (s === null) continue;
      ids.push(t);
      ls.push(logits[t]);
      states.set(t, s);
    }
    if (ids.length > 0) {
      token = sampleLogits(ids, ls, o, rng);
      next = states.get(token)!;
    }
  }
  if (token < 0 || next === null) return null;
  const logprob = logits[token] - lse;
  return { choice: { token, prob: Math.exp(logprob), logprob, margin: 0, entropy }, state: next };
}
