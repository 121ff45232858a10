// Unmasking policies: given the masked positions of the current block and a choice for
// each (token, probability, margin, entropy), pick which ones to commit this step.
// Pure functions; every random draw comes from the Rng passed in.

import type { Choice } from './sampling.ts';
import type { Rng } from './rng.ts';
import { dreamCount, dreamTimestep } from './schedule.ts';

export const POLICIES = [
  'low_confidence',
  'random',
  'margin',
  'entropy',
  'threshold',
  'entropy_bounded',
  'dream_origin',
  'dream_maskgit_plus',
  'dream_topk_margin',
  'dream_entropy',
  'wino',
] as const;
export type Policy = (typeof POLICIES)[number];

export interface PolicyParams {
  /** threshold: commit every position with probability above tau */
  threshold: number;
  /** entropy_bounded: entropy budget per step (nats): sum(H_U) - max(H_U) <= gamma */
  gamma: number;
  /** Dream schedule: final timestep */
  eps: number;
  /** Dream: > 0 samples the commit order from softmax(confidence / algTemp) */
  algTemp: number;
  /** wino: a committed token of the block is masked again when its verification probability is below this */
  verifyThreshold: number;
}

export interface StepContext {
  /** step index within the block, and the block's step budget */
  step: number;
  steps: number;
  /** fixed-count policies: tokens to commit this step (from the block's schedule) */
  count: number;
}

/** Top `k` indices by score, ties to the earlier position (stable). */
function topByScore(scores: number[], k: number): number[] {
  const idx = scores.map((_, i) => i);
  idx.sort((a, b) => scores[b] - scores[a] || a - b);
  return idx.slice(0, Math.max(0, Math.min(k, idx.length)));
}

/** Draw k distinct indices with probability proportional to weights (multinomial without replacement). */
function sampleWithoutReplacement(weights: number[], k: number, rng: Rng): number[] {
  const w = [...weights];
  const out: number[] = [];
  for (let n = 0; n < k && n < w.length; n++) {
    const z = w.reduce((s, x) => s + x, 0);
    let r = rng.next() * z;
    let pick = w.findIndex((x) => x > 0);
    for (let i = 0; i < w.length; i++) {
      if (w[i] <= 0) continue;
      r -= w[i];
      if (r < 0) {
        pick = i;
        break;
      }
    }
    out.push(pick);
    w[pick] = 0;
  }
  return out;
}

function softmax(xs: number[], temp: number): number[] {
  const mx = Math.max(...xs);
  const e = xs.map((x) => Math.exp((x - mx) / temp));
  const z = e.reduce((s, x) => s + x, 0);
  return e.map((x) => x / z);
}

/** Indices (into `choices`) to commit this step. Always commits at least one unless a Dream step commits none by schedule. */
export function selectCommits(policy: Policy, choices: Choice[], ctx: StepContext, p: PolicyParams, rng: Rng): number[] {
  const n = choices.length;
  if (n === 0) return [];
  // the last step of a block commits whatever is left (fixed-count policies' counts add up to it)
  if (!isFixedCount(policy) && ctx.step >= ctx.steps - 1) return choices.map((_, i) => i);
  switch (policy) {
    case 'low_confidence':
      return topByScore(choices.map((c) => c.prob), ctx.count);
    case 'random':
      return topByScore(choices.map(() => rng.next()), ctx.count);
    case 'margin':
      return topByScore(choices.map((c) => c.margin), ctx.count);
    case 'entropy':
      return topByScore(choices.map((c) => -c.entropy), ctx.count);
    case 'threshold': {
      const picked = choices.map((c, i) => (c.prob > p.threshold ? i : -1)).filter((i) => i >= 0);
      return picked.length > 0 ? picked : topByScore(choices.map((c) => c.prob), 1);
    }
    case 'wino': {
      // wide in: every position above the (low) draft threshold, at most max(5, 70 % of the
      // block's masks) and at most 20, the most confident first; at least the best one
      const cap = Math.min(Math.max(Math.floor(n * 0.7), 5), 20);
      const picked = choices.map((c, i) => (c.prob > p.threshold ? i : -1)).filter((i) => i >= 0);
      if (picked.length === 0) return topByScore(choices.map((c) => c.prob), 1);
      return picked.length > cap ? topByScore(choices.map((c) => c.prob), cap).sort((a, b) => a - b) : picked;
    }
    case 'entropy_bounded': {
      // EB-Sampler (Ben-Hamu et al. 2025): the largest lowest-entropy-first set U with
      // sum(H_U) - max(H_U) <= gamma. In ascending order max(H_U) is the last one's, so a
      // position joins while the entropies before it sum to gamma at most (the first always).
      // (an fp32 entropy of a certain row can come out a hair below 0: counted as 0)
      const order = topByScore(choices.map((c) => -c.entropy), n);
      const out: number[] = [];
      let before = 0;
      for (const i of order) {
        if (out.length > 0 && before > p.gamma) break;
        out.push(i);
        before += Math.max(0, choices[i].entropy);
      }
      return out;
    }
    case 'dream_origin': {
      const pTransfer = 1 - dreamTimestep(ctx.step + 1, ctx.steps, p.eps) / dreamTimestep(ctx.step, ctx.steps, p.eps);
      return choices.map((_, i) => (rng.next() < pTransfer ? i : -1)).filter((i) => i >= 0);
    }
    case 'dream_maskgit_plus':
    case 'dream_topk_margin':
    case 'dream_entropy': {
      const k = dreamCount(n, ctx.step, ctx.steps, p.eps);
      if (k <= 0) return [];
      const conf = choices.map((c) => (policy === 'dream_maskgit_plus' ? c.prob : policy === 'dream_topk_margin' ? c.margin : -c.entropy));
      if (p.algTemp > 0) return sampleWithoutReplacement(softmax(conf, p.algTemp), k, rng);
      return topByScore(conf, k);
    }
  }
}

/**
 * Parallel decoding's stutter: neighbouring positions committed in the same step pick the same
 * token because neither saw the other ("a teacher teacher"). Picks are kept most confident
 * first, each unless a neighbour already kept this step has its token; the others wait for the
 * next step, where they are scored with their neighbours in place (a deferred pick always has a
 * kept neighbour, so a run of equal tokens clears in a few steps). Stop tokens are exempt (an
 * answer's end pads the tail with them). `picks` index `choices`, whose canvas positions are
 * `positions`. Used by the policies without a fixed count per step (threshold,
 * entropy_bounded, Dream's schedules); a block's last step commits everything left.
 */
export function separateTwins(picks: number[], positions: ArrayLike<number>, choices: Choice[], exempt: Set<number>): number[] {
  const order = [...picks].sort((a, b) => choices[b].prob - choices[a].prob || positions[a] - positions[b]);
  const kept = new Map<number, number>(); // position -> token committed this step
  const out: number[] = [];
  for (const i of order) {
    const t = choices[i].token;
    const p = positions[i];
    if (!exempt.has(t) && (kept.get(p - 1) === t || kept.get(p + 1) === t)) continue;
    kept.set(p, t);
    out.push(i);
  }
  return out.sort((a, b) => a - b);
}

/**
 * Hold back an end: a stop token picked at target i is kept only when every target before it is
 * committed in this step as text (targets: a step's uncommitted positions in canvas order, all
 * positions before the first of them committed), so an answer is never cut where the model
 * guessed its length early. With every pick held back, the first target is committed instead
 * (whatever its token: nothing before it is open). Not applied at a block's last step (which
 * commits what is left). picks and result index `targets`.
 */
export function holdEnds(picks: number[], choices: Choice[], stops: Set<number>): number[] {
  if (picks.length === 0) return picks; // (a schedule that commits nothing this step)
  const text = new Set(picks.filter((i) => !stops.has(choices[i].token)));
  let open = 0;
  while (text.has(open)) open++;
  const out = picks.filter((i) => !stops.has(choices[i].token) || i <= open);
  return out.length > 0 ? out : [0];
}

/**
 * In order: a pick is kept only when every target before it is picked too, so a step commits a
 * left-to-right run from the first open position (at least that position, when anything is
 * picked). picks and result index `targets` (a step's uncommitted positions in canvas order).
 */
export function inOrder(picks: number[]): number[] {
  if (picks.length === 0) return picks; // (a schedule that commits nothing this step)
  const picked = new Set(picks);
  let run = 0;
  while (picked.has(run)) run++;
  return run > 0 ? Array.from({ length: run }, (_, i) => i) : [0];
}

/**
 * WINO's narrow out: of the block's tokens committed before this step, those the model no longer
 * believes (verification probability below `tau`, each scored with its own position hidden) are
 * masked again. Only when this step committed more than one token (so a block always advances),
 * and fewer than the previous step committed (`lastAccept`): then the least believed of them.
 * Returns indices into `verify`.
 */
export function winoRevoke(verify: number[], accepted: number, lastAccept: number, tau: number): number[] {
  if (accepted <= 1) return [];
  const low = verify.map((v, i) => (v < tau ? i : -1)).filter((i) => i >= 0);
  if (low.length < lastAccept) return low;
  return topByScore(verify.map((v) => -v), lastAccept - 1).sort((a, b) => a - b);
}

/**
 * Prophet's early commit (Li et al. 2025, "Diffusion language models know the answer before
 * decoding"): once the masked positions' mean top-1 - top-2 logit gap reaches a bar, their
 * argmaxes are the answer the remaining steps would confirm, and all are committed at once. The
 * bar falls as the block fills: 1.5 g while under a third of it is committed, g to two thirds,
 * then g / 2 (the authors' 7.5 / 5 / 2.5 for g = 5). `gaps`: each masked position's gap (nats),
 * `progress`: the committed share of the block before this step.
 */
export function earlyCommit(gaps: number[], progress: number, g: number): boolean {
  if (gaps.length === 0) return false;
  const bar = progress < 1 / 3 ? 1.5 * g : progress < 2 / 3 ? g : 0.5 * g;
  let sum = 0;
  for (const x of gaps) sum += x;
  return sum / gaps.length >= bar;
}

/** Policies whose step count fixes how many tokens each step commits. */
export function isFixedCount(policy: Policy): boolean {
  return policy === 'low_confidence' || policy === 'random' || policy === 'margin' || policy === 'entropy';
}
