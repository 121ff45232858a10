// Choosing a token for one masked position from the graph's scores.
//
// The graph returns the K best candidates (ids, logits) plus the log-sum-exp and the
// entropy of the full distribution. That is exact for temperature 0 (argmax) and for
// sampling with top_k <= K. Any other sampling (temperature > 0 without such a top_k)
// asks the graph for the full logits row, so the distribution is never truncated silently.
// Sampling softmax(logits / T) is the same distribution LLaDA draws with Gumbel-max.

import type { Rng } from './rng.ts';

export interface SamplerOptions {
  temperature: number;
  topK?: number;
  topP?: number;
}

export interface Choice {
  token: number;
  /** model probability of the token (temperature 1) */
  prob: number;
  /** its log: the raw model log-probability, whatever the sampling temperature */
  logprob: number;
  /** top-1 minus top-2 model probability */
  margin: number;
  /** entropy of the model distribution (nats) */
  entropy: number;
}

/** Whether these options need full logits rows given K candidates. */
export function needsFullLogits(o: SamplerOptions, candidates: number): boolean {
  return o.temperature > 0 && !(o.topK !== undefined && o.topK <= candidates);
}

/** Sample one of `ids` with weights softmax(logits / T), after top-k / top-p filtering. */
export function sampleLogits(ids: ArrayLike<number>, logits: ArrayLike<number>, o: SamplerOptions, rng: Rng): number {
  const n = logits.length;
  let order: number[];
  if (o.topK !== undefined || (o.topP !== undefined && o.topP < 1)) {
    order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || ids[a] - ids[b]);
    if (o.topK !== undefined && o.topK < n) order = order.slice(0, o.topK);
  } else {
    order = Array.from({ length: n }, (_, i) => i);
  }
  let mx = -Infinity;
  for (const i of order) mx = Math.max(mx, logits[i]);
  let w = order.map((i) => Math.exp((logits[i] - mx) / o.temperature));
  if (o.topP !== undefined && o.topP < 1) {
    const z = w.reduce((s, x) => s + x, 0);
    let cum = 0;
    let keep = 0;
    while (keep < w.length) {
      cum += w[keep] / z;
      keep++;
      if (cum >= o.topP) break;
    }
    order = order.slice(0, keep);
    w = w.slice(0, keep);
  }
  const z = w.reduce((s, x) => s + x, 0);
  let r = rng.next() * z;
  for (let i = 0; i < w.length; i++) {
    r -= w[i];
    if (r < 0) return ids[order[i]];
  }
  return ids[order[order.length - 1]];
}

/**
 * Choose from K candidates (best first) or, when given, the full logits row.
 * topIds/topLogits are the row's candidates; lse/entropy describe the full distribution.
 * `exclude` (a diffusion model's mask token) is never chosen: a mask is not an answer token.
 */
export function choose(
  topIds: ArrayLike<number>,
  topLogits: ArrayLike<number>,
  lse: number,
  entropy: number,
  o: SamplerOptions,
  rng: Rng,
  fullLogits?: Float32Array,
  exclude = -1,
): Choice {
  if (exclude >= 0 && Array.prototype.includes.call(topIds, exclude) && topIds.length > 1) {
    const keep = Array.from(topIds, (_, k) => k).filter((k) => topIds[k] !== exclude);
    const ids = keep.map((k) => topIds[k]);
    topLogits = keep.map((k) => topLogits[k]);
    topIds = ids;
  }
  const p1 = Math.exp(topLogits[0] - lse);
  const p2 = topLogits.length > 1 ? Math.exp(topLogits[1] - lse) : 0;
  let token: number;
  let logit: number;
  if (o.temperature <= 0) {
    token = topIds[0];
    logit = topLogits[0];
  } else if (fullLogits) {
    const saved = exclude >= 0 ? fullLogits[exclude] : 0;
    if (exclude >= 0) fullLogits[exclude] = -Infinity;
    token = sampleLogits(identity(fullLogits.length), fullLogits, o, rng);
    if (exclude >= 0) fullLogits[exclude] = saved;
    logit = fullLogits[token];
  } else {
    token = sampleLogits(topIds, topLogits, o, rng);
    logit = topLogits[Array.prototype.indexOf.call(topIds, token)];
  }
  return { token, prob: Math.exp(logit - lse), logprob: logit - lse, margin: p1 - p2, entropy };
}

const identities = new Map<number, Int32Array>();
function identity(n: number): Int32Array {
  let a = identities.get(n);
  if (!a) identities.set(n, (a = Int32Array.from({ length: n }, (_, i) => i)));
  return a;
}

type Scores = { topIds: Int32Array; topLogits: Float32Array; lse: Float32Array; entropy: Float32Array; logits: Float32Array };

/** Candidates (the K best per row), log-sum-exp and entropy of full logits rows. */
export function scoresOf(logits: Float32Array, Q: number, K: number, vocab: number): Scores {
  const topIds = new Int32Array(Q * K);
  const topLogits = new Float32Array(Q * K);
  const lse = new Float32Array(Q);
  const entropy = new Float32Array(Q);
  for (let q = 0; q < Q; q++) {
    const row = logits.subarray(q * vocab, (q + 1) * vocab);
    let mx = -Infinity;
    for (let v = 0; v < vocab; v++) if (row[v] > mx) mx = row[v];
    let z = 0;
    for (let v = 0; v < vocab; v++) z += Math.exp(row[v] - mx);
    const l = mx + Math.log(z);
    let h = 0;
    for (let v = 0; v < vocab; v++) {
      const lp = row[v] - l;
      h -= Math.exp(lp) * lp;
    }
    lse[q] = l;
    entropy[q] = h;
    // the K best, best first (ties: the lower id), by insertion into a short sorted list
    const ids = topIds.subarray(q * K, (q + 1) * K);
    const vals = topLogits.subarray(q * K, (q + 1) * K);
    let n = 0;
    for (let v = 0; v < vocab; v++) {
      const x = row[v];
      if (n === K && x <= vals[K - 1]) continue;
      let j = n < K ? n++ : K - 1;
      while (j > 0 && vals[j - 1] < x) {
        vals[j] = vals[j - 1];
        ids[j] = ids[j - 1];
        j--;
      }
      vals[j] = x;
      ids[j] = v;
    }
  }
  return { topIds, topLogits, lse, entropy, logits };
}

/** The scores of a forward with `bias` added to the logits of some tokens: candidates,
 * log-sum-exp and entropy recomputed from the full rows (which biased decoding asks for). */
export function biasScores(
  rows: { topIds: Int32Array; topLogits: Float32Array; lse: Float32Array; entropy: Float32Array; logits?: Float32Array },
  bias: { ids: Int32Array; values: Float32Array },
  vocab: number,
): Scores {
  const Q = rows.lse.length;
  const K = Q > 0 ? rows.topIds.length / Q : 0;
  if (!rows.logits) throw new Error('biasScores needs full logits rows');
  const logits = Float32Array.from(rows.logits);
  for (let q = 0; q < Q; q++) for (let i = 0; i < bias.ids.length; i++) logits[q * vocab + bias.ids[i]] += bias.values[i];
  return scoresOf(logits, Q, K, vocab);
}

/**
 * Classifier-free guidance (LLaDA): rows 0..Q-1 scored with the prompt, rows Q..2Q-1 the same
 * positions with the prompt masked; the guided logits are un + (scale + 1) * (cond - un).
 */
export function guidedScores(rows: { topIds: Int32Array; lse: Float32Array; logits?: Float32Array }, scale: number, vocab: number): Scores {
  const Q = rows.lse.length / 2;
  const K = Q > 0 ? rows.topIds.length / (2 * Q) : 0;
  if (!rows.logits) throw new Error('guidedScores needs full logits rows');
  const cond = rows.logits.subarray(0, Q * vocab);
  const un = rows.logits.subarray(Q * vocab, 2 * Q * vocab);
  const logits = new Float32Array(Q * vocab);
  for (let i = 0; i < logits.length; i++) logits[i] = un[i] + (scale + 1) * (cond[i] - un[i]);
  return scoresOf(logits, Q, K, vocab);
}

/** Top-1 minus top-2 logit among a row's candidates (sorted, best first), `skip` (the mask id)
 * left out: Prophet's confidence gap, in nats. With one candidate besides the mask, the last
 * candidate's logit bounds every token not listed: the gap is at least the distance to it. */
export function topGap(ids: ArrayLike<number>, logits: ArrayLike<number>, skip: number): number {
  let first = NaN;
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] === skip) continue;
    if (Number.isNaN(first)) first = logits[i];
    else return first - logits[i];
  }
  return Number.isNaN(first) ? 0 : first - logits[ids.length - 1];
}
