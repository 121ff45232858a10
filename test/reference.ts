// An independent, naive forward pass in Float64 loops (no ORT, no graph): the oracle the
// ORT path is checked against. Written straight from the published block definitions:
// RMSNorm -> q/k/v (+bias) -> NeoX RoPE -> softmax(qk^T/sqrt(d) + mask) v -> o, residual;
// RMSNorm -> down(silu(gate) * up) (or a mixture of such experts), residual; final RMSNorm -> head.

import { loadConfig, type ModelArgs } from '../src/formats/config.ts';
import { Checkpoint } from '../src/formats/safetensors.ts';
import { lladaNames } from '../src/models/llada.ts';
import { lladaMoeNames } from '../src/models/llada-moe.ts';
import { llada2Names } from '../src/models/llada2.ts';
import type { LayerNames } from '../src/models/transformer.ts';
import { hfNames, qwen3Names } from '../src/models/causal.ts';
import { dreamNames } from '../src/models/dream.ts';
import { sdarNames } from '../src/models/sdar.ts';

type Mat = { data: Float64Array; rows: number; cols: number };

export interface RefModel {
  args: ModelArgs;
  w: Map<string, Mat>;
  names: ReturnType<typeof lladaNames>;
}

export async function loadReference(dir: string): Promise<RefModel> {
  const { args } = await loadConfig(dir);
  const ck = await Checkpoint.open(dir);
  const w = new Map<string, Mat>();
  for (const name of ck.names()) {
    const info = ck.info(name);
    const f = await ck.readF32(name);
    w.set(name, { data: Float64Array.from(f), rows: info.shape[0], cols: info.shape[1] ?? 1 });
  }
  await ck.close();
  const names = args.arch === 'llada' ? lladaNames(args) : args.arch === 'llada_moe' ? lladaMoeNames(args) : args.arch === 'llada2' ? llada2Names(args) : args.arch === 'dream' ? dreamNames(args) : args.arch === 'sdar' ? sdarNames(args) : args.arch === 'qwen3' ? qwen3Names(args) : hfNames(args);
  return { args, w, names };
}

function rmsnorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ms = 0;
  for (const v of x) ms += v * v;
  const r = 1 / Math.sqrt(ms / x.length + eps);
  return x.map((v, i) => v * r * w[i]);
}

/** y = W x for W [out, in] */
function linear(W: Mat, x: Float64Array, bias?: Mat): Float64Array {
  const y = new Float64Array(W.rows);
  for (let o = 0; o < W.rows; o++) {
    let s = bias ? bias.data[o] : 0;
    for (let i = 0; i < W.cols; i++) s += W.data[o * W.cols + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** rotate_half RoPE on each head's first `rot` dims (all by default); the rest pass through */
function rope(v: Float64Array, heads: number, dh: number, pos: number, theta: number, rot = dh): Float64Array {
  const out = Float64Array.from(v);
  const half = rot / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const invFreq = Math.fround(theta ** (-(2 * i) / rot));
      const ang = pos * invFreq;
      const c = Math.cos(ang), s = Math.sin(ang);
      const a = v[h * dh + i], b = v[h * dh + half + i];
      out[h * dh + i] = a * c - b * s;
      out[h * dh + half + i] = b * c + a * s;
    }
  }
  return out;
}

function swiglu(gate: Mat, up: Mat, down: Mat, x: Float64Array): Float64Array {
  const g = linear(gate, x);
  const u = linear(up, x);
  return linear(down, g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]));
}

/**
 * A mixture feed-forward, plus the shared expert.
 *   softmax (LLaDA-MoE): softmax over every expert's router logit, the top k run, their outputs
 *     summed weighted by those probabilities (not renormalized);
 *   sigmoid (LLaDA2.0): scores = sigmoid(logits); the choice by scores + expert bias among the
 *     experts of the best `groupsKept` contiguous groups (a group's worth: the sum of its two best
 *     biased scores), the top k of those; weights = chosen scores / (their sum + 1e-20) x scale.
 */
function mixture(m: RefModel, n: NonNullable<LayerNames['moe']>, x: Float64Array): Float64Array {
  const get = (name: string) => m.w.get(name)!;
  const mo = m.args.moe!;
  const logits = linear(get(n.router), x);
  const weight = new Map<number, number>();
  if (mo.scoring === 'softmax') {
    const mx = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - mx));
    const z = e.reduce((s, v) => s + v, 0);
    for (const i of [...e.keys()].sort((i, j) => e[j] - e[i]).slice(0, mo.topK)) weight.set(i, e[i] / z);
  } else {
    const scores = logits.map((v) => 1 / (1 + Math.exp(-v)));
    const bias = n.expertBias ? get(n.expertBias).data : new Float64Array(mo.experts);
    const biased = scores.map((v, i) => v + bias[i]);
    const per = mo.experts / mo.groups;
    const worth = Array.from({ length: mo.groups }, (_, gi) => {
      const s = Array.from(biased.slice(gi * per, (gi + 1) * per)).sort((p, q) => q - p);
      return s[0] + s[1];
    });
    const keptGroups = new Set([...worth.keys()].sort((p, q) => worth[q] - worth[p]).slice(0, mo.groupsKept));
    const candidates = [...biased.keys()].filter((i) => keptGroups.has(Math.floor(i / per)));
    const chosen = candidates.sort((i, j) => biased[j] - biased[i]).slice(0, mo.topK);
    const sum = chosen.reduce((s, i) => s + scores[i], 0);
    for (const i of chosen) weight.set(i, (mo.topK > 1 ? scores[i] / (sum + 1e-20) : scores[i]) * mo.scale);
  }
  const out = new Float64Array(x.length);
  for (const [i, wi] of weight) {
    const ex = n.experts[i];
    const y = swiglu(get(ex.gate), get(ex.up), get(ex.down), x);
    for (let d = 0; d < out.length; d++) out[d] += wi * y[d];
  }
  if (n.shared) {
    const y = swiglu(get(n.shared.gate), get(n.shared.up), get(n.shared.down), x);
    for (let d = 0; d < out.length; d++) out[d] += y[d];
  }
  return out;
}

/**
 * Full (uncached) forward of one sequence. visible[i * L + j]: row i attends to j.
 * Returns logits [L][V] (row i = output at position i; shifting is the caller's business).
 */
export function referenceForward(m: RefModel, ids: number[], positions: number[], visible: Uint8Array): Float64Array[] {
  const a = m.args;
  const L = ids.length;
  const { hiddenSize: D, numHeads: H, numKvHeads: Hkv, headDim: Dh } = a;
  const get = (n: string) => {
    const t = m.w.get(n);
    if (!t) throw new Error(`missing ${n}`);
    return t;
  };
  const emb = get(m.names.embed);
  let x = ids.map((t) => emb.data.slice(t * D, (t + 1) * D));
  for (let l = 0; l < a.numLayers; l++) {
    const n = m.names.layer(l);
    const hs = x.map((v) => rmsnorm(v, get(n.attnNorm).data, a.rmsNormEps));
    // (Qwen3 layout: RMSNorm of each head's q and k over its Dh values, before RoPE)
    const perHead = (v: Float64Array, heads: number, w?: string) => {
      if (!w) return v;
      const out = new Float64Array(v.length);
      for (let h = 0; h < heads; h++) out.set(rmsnorm(v.slice(h * Dh, (h + 1) * Dh), get(w).data, a.rmsNormEps), h * Dh);
      return out;
    };
    // (clip_qkv: clamped after the projections and norms)
    const clip = (v: Float64Array) => (a.clipQkv === undefined ? v : v.map((t) => Math.min(a.clipQkv!, Math.max(-a.clipQkv!, t))));
    // (a fused query_key_value: all q heads' rows, then k's, then v's)
    const proj = (h: Float64Array, part: 'q' | 'k' | 'v', bias?: string) => {
      if (!n.qkv) return linear(get(n[part]!), h, bias ? get(bias) : undefined);
      const all = linear(get(n.qkv), h);
      const at = part === 'q' ? 0 : part === 'k' ? H * Dh : (H + Hkv) * Dh;
      return all.slice(at, at + (part === 'q' ? H : Hkv) * Dh);
    };
    const q = hs.map((h, i) => rope(clip(perHead(proj(h, 'q', n.qBias), H, n.qNorm)), H, Dh, positions[i], a.ropeTheta, a.rotaryDim));
    const k = hs.map((h, i) => rope(clip(perHead(proj(h, 'k', n.kBias), Hkv, n.kNorm)), Hkv, Dh, positions[i], a.ropeTheta, a.rotaryDim));
    const v = hs.map((h) => clip(proj(h, 'v', n.vBias)));
    const ctx = x.map(() => new Float64Array(H * Dh));
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / (H / Hkv));
      for (let i = 0; i < L; i++) {
        const scores = new Float64Array(L).fill(-Infinity);
        for (let j = 0; j < L; j++) {
          if (!visible[i * L + j]) continue;
          let s = 0;
          for (let d = 0; d < Dh; d++) s += q[i][h * Dh + d] * k[j][kh * Dh + d];
          scores[j] = s / Math.sqrt(Dh);
        }
        const mx = Math.max(...scores);
        const p = scores.map((s) => (s === -Infinity ? 0 : Math.exp(s - mx)));
        const z = p.reduce((s, t) => s + t, 0);
        for (let j = 0; j < L; j++) for (let d = 0; d < Dh; d++) ctx[i][h * Dh + d] += (p[j] / z) * v[j][kh * Dh + d];
      }
    }
    x = x.map((xi, i) => {
      const o = linear(get(n.o), ctx[i]);
      return xi.map((t, d) => t + o[d]);
    });
    x = x.map((xi) => {
      const m2 = rmsnorm(xi, get(n.mlpNorm).data, a.rmsNormEps);
      const d = n.moe ? mixture(m, n.moe, m2) : swiglu(get(n.gate!), get(n.up!), get(n.down!), m2);
      return xi.map((t, i) => t + d[i]);
    });
  }
  const head = m.names.head === null ? get(m.names.embed) : get(m.names.head);
  return x.map((xi) => linear(head, rmsnorm(xi, get(m.names.finalNorm).data, a.rmsNormEps)));
}
