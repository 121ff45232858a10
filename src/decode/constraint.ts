// Constrained decoding (JSON mode and any other token-level grammar): the output must be a
// string the constraint accepts. A constrained generation commits left to right, each step
// the first masked position and then following ones while the model is confident, each token
// chosen among those the constraint allows after the tokens before it. The parallel part is
// the same bet threshold decoding makes: a confident guess made next to masks is kept.

import type { Rng } from './rng.ts';
import { sampleLogits, type Choice, type SamplerOptions } from './sampling.ts';

/** draws from the unconstrained distribution before scanning for the allowed tokens */
const REJECTION_TRIES = 16;

export interface Constraint<S = unknown> {
  /** the state before the first generated token */
  start(): S;
  /** the state after `token`, or null when the token is not allowed here */
  next(state: S, token: number): S | null;
  /** whether the output is whole here: the generation ends */
  complete(state: S): boolean;
  /** the tokens worth testing in this state (a superset of the allowed ones), when the
   * constraint can narrow the vocabulary cheaply; all tokens otherwise */
  candidates?(state: S): ArrayLike<number>;
}

/** Token ids by their first byte, for constraints that know which bytes may come next
 * (built once per token table). */
const indexes = new WeakMap<readonly (Uint8Array | null)[], Int32Array[]>();
export function firstByteIndex(tokenBytes: readonly (Uint8Array | null)[]): Int32Array[] {
  let idx = indexes.get(tokenBytes);
  if (!idx) indexes.set(tokenBytes, (idx = buildIndex(tokenBytes)));
  return idx;
}

function buildIndex(tokenBytes: readonly (Uint8Array | null)[]): Int32Array[] {
  const lists: number[][] = Array.from({ length: 256 }, () => []);
  tokenBytes.forEach((b, id) => {
    if (b && b.length > 0) lists[b[0]].push(id);
  });
  return lists.map((l) => Int32Array.from(l));
}

/** The ids of the tokens whose first byte `allowed` accepts. */
export function candidatesByFirstByte(index: Int32Array[], allowed: (byte: number) => boolean): Int32Array {
  const parts: Int32Array[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++)
    if (index[b].length > 0 && allowed(b)) {
      parts.push(index[b]);
      n += index[b].length;
    }
  const out = new Int32Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
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
    const cands = c.candidates?.(state);
    if (cands) for (let i = 0; i < cands.length; i++) consider(cands[i]);
    else for (let t = 0; t < logits.length; t++) consider(t);
  } else {
    // rejection: draw from the sampler's own distribution until an allowed token comes up
    // (exact: the draw conditioned on being allowed); a scan of the allowed ones otherwise
    if (o.topK === undefined && (o.topP === undefined || o.topP >= 1)) {
      const w = new Float64Array(logits.length);
      let mx = -Infinity;
      for (let t = 0; t < logits.length; t++) mx = Math.max(mx, logits[t]);
      let z = 0;
      for (let t = 0; t < logits.length; t++) z += w[t] = Math.exp((logits[t] - mx) / o.temperature);
      for (let tries = 0; tries < REJECTION_TRIES && token < 0; tries++) {
        let r = rng.next() * z;
        let t = 0;
        while (t < logits.length - 1 && (r -= w[t]) >= 0) t++;
        const s = c.next(state, t);
        if (s !== null) {
          token = t;
          next = s;
        }
      }
    }
    if (token < 0) {
      const ids: number[] = [];
      const ls: number[] = [];
      const cands = c.candidates?.(state) ?? null;
      const n = cands ? cands.length : logits.length;
      for (let i = 0; i < n; i++) {
        const t = cands ? cands[i] : i;
        if (c.next(state, t) === null) continue;
        ids.push(t);
        ls.push(logits[t]);
      }
      if (ids.length > 0) {
        token = sampleLogits(ids, ls, o, rng);
        next = c.next(state, token);
      }
    }
  }
  if (token < 0 || next === null) return null;
  const logprob = logits[token] - lse;
  return { choice: { token, prob: Math.exp(logprob), logprob, margin: 0, entropy }, state: next };
}
