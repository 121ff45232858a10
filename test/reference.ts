// An independent, naive forward pass in Float64 loops (no ORT, no graph): the oracle the
// ORT path is checked against. Written straight from the published block definitions:
// RMSNorm -> q/k/v (+bias) -> NeoX RoPE -> softmax(qk^T/sqrt(d) + mask) v -> o, residual;
// RMSNorm -> down(silu(gate) * up) (or a mixture of such experts), residual; final RMSNorm -> head.

import { loadConfig, type ModelArgs } from '../src/formats/config.ts';
import { Checkpoint } from '../src/formats/safetensors.ts';
import { lladaNames } from '../src/models/llada.ts';
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

/**
 * The mixture layouts read straight from config.json's keys and the modeling code's tensor
 * names (with LLaDA2MoeConfig's / LLaDAMoEConfig's defaults), not through the engine's parser
 * and name tables: a misread key or a swapped name would otherwise agree on both sides.
 */
function mixtureLayout(raw: Record<string, any>, args: ModelArgs): { args: ModelArgs; names: RefModel['names'] } {
  const L = raw.num_hidden_layers as number;
  const Dh = raw.head_dim ?? raw.hidden_size / raw.num_attention_heads;
  const sw = (p: string) => ({ gate: `${p}.gate_proj.weight`, up: `${p}.up_proj.weight`, down: `${p}.down_proj.weight` });
  if (raw.model_type === 'llada2_moe') {
    const E = raw.num_experts, dense = raw.first_k_dense_replace ?? 0;
    const rot = Math.round(Dh * (raw.partial_rotary_factor ?? 0.5));
    const moe = {
      experts: E, topK: raw.num_experts_per_tok, expertSize: raw.moe_intermediate_size, sharedSize: (raw.num_shared_experts ?? 0) > 0 ? raw.num_shared_experts * raw.moe_intermediate_size : null,
      layers: Array.from({ length: L }, (_, i) => i >= dense), scoring: 'sigmoid' as const, groups: raw.n_group ?? 8, groupsKept: raw.topk_group ?? 4, scale: raw.routed_scaling_factor ?? 2.5, expertBias: true,
    };
    const names = {
      embed: 'model.word_embeddings.weight',
      finalNorm: 'model.norm.weight',
      head: raw.tie_word_embeddings ? null : 'lm_head.weight',
      layer: (i: number): LayerNames => {
        const p = `model.layers.${i}`;
        return {
          attnNorm: `${p}.input_layernorm.weight`, qkv: `${p}.attention.query_key_value.weight`, qNorm: `${p}.attention.query_layernorm.weight`, kNorm: `${p}.attention.key_layernorm.weight`,
          o: `${p}.attention.dense.weight`, mlpNorm: `${p}.post_attention_layernorm.weight`,
          ...(i < dense ? sw(`${p}.mlp`) : { moe: { router: `${p}.mlp.gate.weight`, expertBias: `${p}.mlp.gate.expert_bias`, experts: Array.from({ length: E }, (_, e) => sw(`${p}.mlp.experts.${e}`)), shared: moe.sharedSize ? sw(`${p}.mlp.shared_experts`) : null } }),
        };
      },
    };
    return { args: { ...args, moe, rotaryDim: rot < Dh ? rot : undefined, clipQkv: undefined }, names };
  }
  if (raw.model_type === 'sdar_moe' || raw.model_type === 'rnd1') {
    // Qwen3-MoE's names. SDAR-MoE (Qwen3MoeSparseMoeBlock): a mixture where num_experts > 0,
    // (i + 1) % decoder_sparse_step == 0 and i is not in mlp_only_layers (else a dense SwiGLU);
    // softmax, top k, renormalized when norm_topk_prob. RND1 (RND1SparseMoeBlock in every
    // RND1DecoderLayer): a mixture in every layer, always renormalized (RND1Config forces
    // norm_topk_prob true; its layers never read decoder_sparse_step / mlp_only_layers)
    const rnd1 = raw.model_type === 'rnd1';
    const E = raw.num_experts, step = raw.decoder_sparse_step ?? 1, only: number[] = raw.mlp_only_layers ?? [];
    const layers = Array.from({ length: L }, (_, i) => rnd1 || (E > 0 && !only.includes(i) && (i + 1) % step === 0));
    const moe = { experts: E, topK: raw.num_experts_per_tok, expertSize: raw.moe_intermediate_size, sharedSize: null, layers, scoring: 'softmax' as const, normalize: rnd1 || (raw.norm_topk_prob ?? true), groups: 1, groupsKept: 1, scale: 1, expertBias: false };
    const names = {
      embed: 'model.embed_tokens.weight',
      finalNorm: 'model.norm.weight',
      head: raw.tie_word_embeddings && !rnd1 ? null : 'lm_head.weight',
      layer: (i: number): LayerNames => {
        const p = `model.layers.${i}`;
        return {
          attnNorm: `${p}.input_layernorm.weight`, q: `${p}.self_attn.q_proj.weight`, k: `${p}.self_attn.k_proj.weight`, v: `${p}.self_attn.v_proj.weight`,
          qNorm: `${p}.self_attn.q_norm.weight`, kNorm: `${p}.self_attn.k_norm.weight`, o: `${p}.self_attn.o_proj.weight`, mlpNorm: `${p}.post_attention_layernorm.weight`,
          ...(layers[i] ? { moe: { router: `${p}.mlp.gate.weight`, experts: Array.from({ length: E }, (_, e) => sw(`${p}.mlp.experts.${e}`)), shared: null } } : sw(`${p}.mlp`)),
        };
      },
    };
    return { args: { ...args, moe, rotaryDim: undefined, clipQkv: undefined }, names };
  }
  const E = raw.num_experts;
  const freq: number[] = raw.moe_layer_freq ?? Array(L).fill(1);
  const moe = { experts: E, topK: raw.num_experts_per_tok, expertSize: raw.expert_intermediate_size, sharedSize: raw.shared_expert_intermediate_size ?? null, layers: freq.map((f) => f === 1), scoring: 'softmax' as const, groups: 1, groupsKept: 1, scale: 1, expertBias: false };
  const names = {
    embed: 'model.embed_tokens.weight',
    finalNorm: 'model.norm.weight',
    head: raw.tie_word_embeddings ? null : 'lm_head.weight',
    layer: (i: number): LayerNames => {
      const p = `model.layers.${i}`;
      return {
        attnNorm: `${p}.input_layernorm.weight`, q: `${p}.self_attn.q_proj.weight`, k: `${p}.self_attn.k_proj.weight`, v: `${p}.self_attn.v_proj.weight`,
        ...(raw.qk_layernorm ? { qNorm: `${p}.self_attn.q_norm.weight`, kNorm: `${p}.self_attn.k_norm.weight` } : {}),
        o: `${p}.self_attn.o_proj.weight`, mlpNorm: `${p}.post_attention_layernorm.weight`,
        ...(freq[i] === 1 ? { moe: { router: `${p}.mlp.gate.weight`, experts: Array.from({ length: E }, (_, e) => sw(`${p}.mlp.experts.${e}`)), shared: moe.sharedSize ? sw(`${p}.shared_expert`) : null } } : sw(`${p}.mlp`)),
      };
    },
  };
  return { args: { ...args, moe, rotaryDim: undefined, clipQkv: raw.clip_qkv ?? undefined }, names };
}

export async function loadReference(dir: string): Promise<RefModel> {
  const { args: parsed, raw } = await loadConfig(dir);
  let args = parsed;
  const ck = await Checkpoint.open(dir);
  const w = new Map<string, Mat>();
  for (const name of ck.names()) {
    const info = ck.info(name);
    const f = await ck.readF32(name);
    w.set(name, { data: Float64Array.from(f), rows: info.shape[0], cols: info.shape[1] ?? 1 });
  }
  await ck.close();
  let names: RefModel['names'];
  if (args.arch === 'llada_moe' || args.arch === 'llada2' || args.arch === 'rnd1' || args.arch === 'sdar_moe') ({ args, names } = mixtureLayout(raw, args));
  else names = args.arch === 'llada' ? lladaNames(args) : args.arch === 'dream' ? dreamNames(args) : args.arch === 'sdar' ? sdarNames(args) : args.arch === 'qwen3' || args.arch === 'coda' ? qwen3Names(args) : hfNames(args);
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
 *     summed weighted by those probabilities (not renormalized; RND1: renormalized over the k);
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
    const top = [...e.keys()].sort((i, j) => e[j] - e[i]).slice(0, mo.topK);
    // (renormalized over the chosen k: Qwen3-MoE's norm_topk_prob, RND1)
    const kept = mo.normalize ? top.reduce((s, i) => s + e[i], 0) : z;
    for (const i of top) weight.set(i, e[i] / kept);
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
