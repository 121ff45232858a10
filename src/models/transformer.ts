// The Llama-style decoder stack that LLaDA, Dream, SDAR, Llama and Qwen2 share. Each
// architecture file maps its tensor names onto WeightNames; this file turns them into one
// ONNX graph:
//
//   inputs   input_ids [B, L] i64, position_ids [B, L] i64,
//            attention_bias [B, L, P+L] f32 (0 visible, -1e9 hidden),
//            query_index [B, Q] i64 (rows of the window whose scores are wanted),
//            past_key_i / past_value_i [B, Hkv, P, Dh] f32 (P may be 0)
//   outputs  top_values [B, Q, K] f32, top_ids [B, Q, K] i64, lse [B, Q], entropy [B, Q],
//            logits [B, Q, V] (fetched only on request),
//            present_key_i / present_value_i [B, Hkv, L, Dh] (the window's own keys and values)

import { FormatError } from '../errors.ts';
import type { ModelArgs } from '../formats/config.ts';
import type { Checkpoint } from '../formats/safetensors.ts';
import { DT, F, Graph, I, Is, S, f32Bytes } from '../runtime/graph.ts';
import type { WeightFormat } from '../runtime/quant.ts';
import { addLinear, INT4_BLOCK, quantizeRows, type Int8Encoding } from '../runtime/quant.ts';

/** One SwiGLU feed-forward's weights: down(silu(gate x) * up x). */
export interface Swiglu {
  gate: string;
  up: string;
  down: string;
}

/** A mixture-of-experts feed-forward (LLaDA-MoE): router [E, D], the experts, an optional shared expert. */
export interface MoeNames {
  router: string;
  /** sigmoid routing: the bias added to the scores for the choice [E] */
  expertBias?: string;
  experts: Swiglu[];
  shared: Swiglu | null;
}

export interface LayerNames {
  attnNorm: string;
  /** LayerNorm layouts (DiT): the norms' biases */
  attnNormBias?: string;
  mlpNormBias?: string;
  /** separate projections, or one fused [(H + 2 Hkv) Dh, D] with q, k, v rows in that order */
  q?: string;
  k?: string;
  v?: string;
  qkv?: string;
  qBias?: string;
  kBias?: string;
  vBias?: string;
  /** per-head RMSNorm of q and k before RoPE (Qwen3 layout: SDAR) [Dh] */
  qNorm?: string;
  kNorm?: string;
  o: string;
  mlpNorm: string;
  /** the dense feed-forward (absent where the layer's is a mixture) */
  gate?: string;
  up?: string;
  down?: string;
  /** the GELU feed-forward's biases (DiT: up, then down) */
  upBias?: string;
  downBias?: string;
  moe?: MoeNames;
}

/** Every tensor name a layer reads. */
export function layerTensorNames(n: LayerNames): string[] {
  const { moe, ...rest } = n;
  const out = Object.values(rest).filter((x): x is string => typeof x === 'string');
  if (moe) {
    out.push(moe.router, ...(moe.expertBias ? [moe.expertBias] : []));
    for (const e of [...moe.experts, ...(moe.shared ? [moe.shared] : [])]) out.push(e.gate, e.up, e.down);
  }
  return out;
}

export interface WeightNames {
  embed: string;
  layer(i: number): LayerNames;
  finalNorm: string;
  finalNormBias?: string;
  /** null when the head is tied to the embedding */
  head: string | null;
  headBias?: string;
  /** checkpoint tensors the reader consumes to derive others (DiT's adaLN), or that are no weights */
  derivedFrom?: string[];
}

export interface GraphOptions {
  /** candidates returned per queried position */
  topK: number;
  /** weight format of the linear layers */
  weights: WeightFormat;
  /** how int8 weights are encoded (default: this machine's exact encoding) */
  int8?: Int8Encoding;
}

export const NEG_INF = -1e9;

// ---------------------------------------------------------------- weight loading

/** What the builder reads weights from: a safetensors checkpoint, or a GGUF file (models/gguf.ts). */
export type WeightReader = Pick<Checkpoint, 'info' | 'readF32'>;

async function load(ck: WeightReader, name: string, shape: number[]): Promise<Float32Array> {
  const info = ck.info(name);
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
    throw new FormatError('config_mismatch', `tensor ${name} has shape [${info.shape}], config implies [${shape}]`);
  const x = await ck.readF32(name);
  // (a NaN or an infinity would not fail anywhere: it would poison a quantized block, or every
  // output it reaches, silently; x - x is 0 exactly for finite x)
  for (let i = 0; i < x.length; i++)
    if (x[i] - x[i] !== 0) throw new FormatError('tensor_not_finite', `tensor ${name} holds ${x[i]} at index ${i}: weights must be finite numbers`);
  return x;
}

/** Stack linear weights [out_i, in] and transpose to [in, sum(out_i)] for x @ W. */
export function stackTransposed(parts: Float32Array[], outs: number[], inDim: number): Float32Array {
  const total = outs.reduce((a, b) => a + b, 0);
  const w = new Float32Array(inDim * total);
  let col0 = 0;
  parts.forEach((p, pi) => {
    const out = outs[pi];
    for (let o = 0; o < out; o++) {
      const row = o * inDim;
      for (let i = 0; i < inDim; i++) w[i * total + col0 + o] = p[row + i];
    }
    col0 += out;
  });
  return w;
}

// ---------------------------------------------------------------- graph pieces

function rmsNorm(g: Graph, x: string, weight: string, eps: number): string {
  // SimplifiedLayerNormalization is ORT's RMSNorm (computes in fp32 for fp32 inputs).
  return g.op('SimplifiedLayerNormalization', [x, weight], { axis: I(-1), epsilon: F(eps) });
}

/** The model's norm over D: RMSNorm, or LayerNorm with a bias (a.norm 'layer'). */
async function norm(g: Graph, name: string, x: string, a: ModelArgs, ck: WeightReader, w: string, b: string | undefined): Promise<string> {
  const D = a.hiddenSize;
  const weight = g.weight(`${name}`, DT.FLOAT, [D], f32Bytes(await load(ck, w, [D])));
  if (a.norm !== 'layer') return rmsNorm(g, x, weight, a.rmsNormEps);
  if (!b) throw new Error(`${name}: a LayerNorm layout names no bias`);
  const bias = g.weight(`${name}_bias`, DT.FLOAT, [D], f32Bytes(await load(ck, b, [D])));
  return g.op('LayerNormalization', [x, weight, bias], { axis: I(-1), epsilon: F(a.rmsNormEps) });
}

/** down(gelu_tanh(up h + b_up)) + b_down (DiT's feed-forward; FastGelu is the tanh form). */
async function geluMlp(g: Graph, name: string, h: string, n: LayerNames, D: number, Fi: number, ck: WeightReader, opts: GraphOptions): Promise<string> {
  const up = addLinear(g, `${name}.up`, h, stackTransposed([await load(ck, n.up!, [Fi, D])], [Fi], D), D, Fi, opts.weights, { int8: opts.int8 });
  const act = g.op('FastGelu', [up, g.weight(`${name}.up_bias`, DT.FLOAT, [Fi], f32Bytes(await load(ck, n.upBias!, [Fi])))], {}, { domain: 'com.microsoft' });
  const down = addLinear(g, `${name}.down`, act, stackTransposed([await load(ck, n.down!, [D, Fi])], [D], Fi), Fi, D, opts.weights, { int8: opts.int8 });
  return g.op('Add', [down, g.weight(`${name}.down_bias`, DT.FLOAT, [D], f32Bytes(await load(ck, n.downBias!, [D])))]);
}

/** NeoX rotate_half RoPE on [B, L, heads*Dh] through ORT's RotaryEmbedding kernel; `rotary`:
 * only each head's first that many dims turn (partial rotary), the rest pass through. */
function rope(g: Graph, x: string, pos: string, cos: string, sin: string, heads: number, rotary?: number): string {
  return g.op('RotaryEmbedding', [x, pos, cos, sin], { interleaved: I(0), num_heads: I(heads), ...(rotary ? { rotary_embedding_dim: I(rotary) } : {}) }, { domain: 'com.microsoft' });
}

/** down(silu(gate h) * up h) for h [B, L, D]: gate and up as one matmul, then split. */
async function swiglu(g: Graph, name: string, h: string, w: Swiglu, D: number, Fi: number, ck: WeightReader, opts: GraphOptions): Promise<string> {
  const wgu = stackTransposed([await load(ck, w.gate, [Fi, D]), await load(ck, w.up, [Fi, D])], [Fi, Fi], D);
  const gu = addLinear(g, `${name}.gate_up`, h, wgu, D, 2 * Fi, opts.weights, { int8: opts.int8 }); // [B, L, 2F]
  const [gate, up] = g.node('Split', [gu, g.i64([Fi, Fi])], { axis: I(-1) }, { outputs: 2 });
  const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
  const wd = stackTransposed([await load(ck, w.down, [D, Fi])], [D], Fi);
  return addLinear(g, `${name}.down`, act, wd, Fi, D, opts.weights, { int8: opts.int8 });
}

/**
 * The router: what the mixture kernel is fed per row [N, E], and a per-row factor [N, 1] (or
 * null) for its output. ORT's MoE kernel (normalize_routing_weights 0) takes the softmax over
 * all E inputs and weights the top k by those probabilities; its QMoE kernel always renormalizes
 * over the chosen k.
 *   softmax (LLaDA-MoE): the logits themselves for MoE; for QMoE the log-probabilities of the
 *     chosen k (-1e30 elsewhere) and their sum as the factor. Renormalized (RND1): the logits for
 *     both (MoE told to normalize), no factor.
 *   sigmoid (LLaDA2.0): the choice is made here (scores + expert bias, the best `groupsKept`
 *     groups by the sum of their two best, the top k among those); the kernel gets log w at the
 *     chosen experts and -1e30 elsewhere, so both kernels weight by w / sum(w), and the factor
 *     restores the model's weights: routed_scaling_factor x (normalized, k > 1: sum/(sum + 1e-20);
 *     k = 1: the score itself).
 */
async function route(g: Graph, name: string, logits: string, w: MoeNames, a: ModelArgs, ck: WeightReader, quantized: boolean): Promise<{ input: string; factor: string | null }> {
  const { experts: E, topK: K, scoring, groups: G, groupsKept, scale, expertBias } = a.moe!;
  const chosenOnly = (like: string, idx: string, w: string) => g.op('ScatterElements', [g.op('Add', [g.op('Mul', [like, g.f32([0], [])]), g.f32([-1e30], [])]), idx, g.op('Log', [w])], { axis: I(1) });
  if (scoring === 'softmax') {
    // (renormalized over the chosen k, RND1: both kernels do that themselves given the logits)
    if (!quantized || a.moe!.normalize) return { input: logits, factor: null };
    // (the log-probabilities of the chosen k: right whether QMoE renormalizes over them or not)
    const probs = g.op('Softmax', [logits], { axis: I(-1) });
    const [chosen, idx] = g.node('TopK', [probs, g.i64([K])], { axis: I(-1) }, { outputs: 2 });
    return { input: chosenOnly(probs, idx, chosen), factor: g.op('ReduceSum', [chosen, g.i64([-1])], { keepdims: I(1) }) };
  }
  const scores = g.op('Sigmoid', [logits]); // [N, E]
  let choice = expertBias ? g.op('Add', [scores, g.weight(`${name}.expert_bias`, DT.FLOAT, [E], f32Bytes(await load(ck, w.expertBias!, [E])), false)]) : scores;
  if (G > 1) {
    const grouped = g.op('Reshape', [choice, g.i64([-1, G, E / G])]); // [N, G, E/G]
    const [best2] = g.node('TopK', [grouped, g.i64([2])], { axis: I(-1) }, { outputs: 2 });
    const worth = g.op('ReduceSum', [best2, g.i64([-1])], { keepdims: I(0) }); // [N, G]
    const [keptWorth, kept] = g.node('TopK', [worth, g.i64([groupsKept])], { axis: I(-1) }, { outputs: 2 }); // [N, Gk]
    const zero = g.f32([0], []);
    const mask = g.op('ScatterElements', [g.op('Mul', [worth, zero]), kept, g.op('Add', [g.op('Mul', [keptWorth, zero]), g.f32([1], [])])], { axis: I(1) }); // [N, G] 1 at kept groups
    const keep = g.op('Cast', [g.op('Unsqueeze', [mask, g.i64([-1])])], { to: I(DT.BOOL) }); // [N, G, 1]
    choice = g.op('Reshape', [g.op('Where', [keep, grouped, g.f32([-1e30], [])]), g.i64([-1, E])]);
  }
  const [, idx] = g.node('TopK', [choice, g.i64([K])], { axis: I(-1) }, { outputs: 2 }); // [N, K]
  const chosen = g.op('GatherElements', [scores, idx], { axis: I(1) }); // [N, K] unbiased scores
  const sum = g.op('ReduceSum', [chosen, g.i64([-1])], { keepdims: I(1) }); // [N, 1]
  const input = chosenOnly(scores, idx, chosen);
  const kept = K > 1 ? g.op('Div', [sum, g.op('Add', [sum, g.f32([1e-20], [])])]) : sum;
  return { input, factor: g.op('Mul', [kept, g.f32([scale], [])]) };
}

/**
 * One stacked expert weight [E, R/E, C] in the kernel's layout, filled row by row from the
 * checkpoint's tensors: fp32 rows as they are, or quantized as they arrive (QMoE codes per row, or
 * per block of `block` columns), so a quantized model never holds the layer's fp32 experts.
 */
class ExpertRows {
  private f32: Float32Array | null;
  private codes: Uint8Array | null;
  private scales: Float32Array | null;
  private readonly rowBytes: number;
  private readonly perRow: number;
  constructor(
    private readonly R: number,
    private readonly C: number,
    private readonly bits: 32 | 8 | 4,
    private readonly block: number,
  ) {
    this.rowBytes = bits === 8 ? C : C / 2;
    this.perRow = block ? C / block : 1;
    this.f32 = bits === 32 ? new Float32Array(R * C) : null;
    this.codes = bits === 32 ? null : new Uint8Array(R * this.rowBytes);
    this.scales = bits === 32 ? null : new Float32Array(R * this.perRow);
  }
  /** rows [n, C] of a checkpoint tensor; row r goes to row at(r) */
  put(x: Float32Array, n: number, at: (r: number) => number): void {
    const { C } = this;
    if (this.f32) {
      for (let r = 0; r < n; r++) this.f32.set(x.subarray(r * C, (r + 1) * C), at(r) * C);
      return;
    }
    const q = quantizeRows(x, n, C, this.bits as 8 | 4, this.block);
    for (let r = 0; r < n; r++) {
      this.codes!.set(q.packed.subarray(r * this.rowBytes, (r + 1) * this.rowBytes), at(r) * this.rowBytes);
      this.scales!.set(q.scales.subarray(r * this.perRow, (r + 1) * this.perRow), at(r) * this.perRow);
    }
  }
  weight(g: Graph, name: string, E: number): string {
    return g.weight(name, DT.FLOAT, [E, this.R / E, this.C], f32Bytes(this.f32!), false);
  }
  quantized(g: Graph, name: string, E: number): [string, string] {
    const rows = this.R / E;
    return [
      g.weight(`${name}.q${this.bits}`, DT.UINT8, [E, rows, this.rowBytes], this.codes!),
      g.weight(`${name}.scales`, DT.FLOAT, this.block ? [E, rows, this.perRow] : [E, rows], f32Bytes(this.scales!), false),
    ];
  }
}

/** How a format stores experts of width D x Fe: bits per code and the block (0: per row). int4
 *  packs two codes per byte, so an odd width takes int8 codes; blocks of 32 where both widths divide. */
export function expertEncoding(D: number, Fe: number, weights: WeightFormat): { bits: 32 | 8 | 4; block: number } {
  const bits = weights === 'fp32' ? 32 : weights === 'int8' || D % 2 || Fe % 2 ? 8 : 4;
  return { bits, block: bits !== 32 && D % INT4_BLOCK === 0 && Fe % INT4_BLOCK === 0 ? INT4_BLOCK : 0 };
}

/**
 * The mixture of experts on h [B, L, D] through ORT's MoE kernel (fp32) or QMoE (int8 and int4
 * codes per block of 32 inputs where the widths allow, else per expert row: QMoE's blocked paths
 * are its fast ones from ORT 1.31, the 8-bit one quantizing activations like the dense int8
 * layers; BENCHMARKS.md, "Mixture of experts"): the router (fp32, tiny,
 * see route), each expert silu(gate) * up -> down (activation swiglu with alpha 1, beta 0, gate
 * and up rows interleaved in fc1 [E, 2Fe, D]; fc2 [E, D, Fe]: the checkpoint's own [out, in]
 * layouts). Only the k chosen experts' weights count as parameters (per-token FLOPs).
 */
export async function mixture(g: Graph, name: string, h: string, w: MoeNames, a: ModelArgs, ck: WeightReader, opts: GraphOptions): Promise<string> {
  const { hiddenSize: D } = a;
  const { experts: E, topK: K, expertSize: Fe } = a.moe!;
  const flat = g.op('Reshape', [h, g.i64([-1, D])]); // [N, D]
  const wr = stackTransposed([await load(ck, w.router, [E, D])], [E], D);
  const logits = g.op('MatMul', [flat, g.weight(`${name}.router`, DT.FLOAT, [D, E], f32Bytes(wr))]); // [N, E]
  const { input, factor } = await route(g, name, logits, w, a, ck, opts.weights !== 'fp32');
  g.paramCount += K * 3 * D * Fe;
  const attrs = { k: I(K), activation_type: S('swiglu'), swiglu_fusion: I(1), activation_alpha: F(1), activation_beta: F(0), normalize_routing_weights: I(a.moe!.normalize ? 1 : 0) };
  const { bits, block } = expertEncoding(D, Fe, opts.weights);
  const fc1 = new ExpertRows(E * 2 * Fe, D, bits, block);
  const fc2 = new ExpertRows(E * D, Fe, bits, block);
  // (all gates, then all ups, then all downs: a GGUF file stacks each kind in one tensor)
  for (const [part, rows] of [['gate', Fe], ['up', Fe], ['down', D]] as const)
    for (let e = 0; e < E; e++) {
      const x = await load(ck, w.experts[e][part], part === 'down' ? [D, Fe] : [Fe, D]);
      if (part === 'down') fc2.put(x, rows, (r) => e * D + r);
      else fc1.put(x, rows, (r) => e * 2 * Fe + 2 * r + (part === 'up' ? 1 : 0));
    }
  let out: string;
  if (bits === 32) {
    out = g.op('MoE', [flat, input, fc1.weight(g, `${name}.fc1`, E), '', fc2.weight(g, `${name}.fc2`, E)], attrs, { domain: 'com.microsoft' }); // [N, D]
  } else {
    const [w1, s1] = fc1.quantized(g, `${name}.fc1`, E);
    const [w2, s2] = fc2.quantized(g, `${name}.fc2`, E);
    out = g.op('QMoE', [flat, input, w1, s1, '', w2, s2], { ...attrs, expert_weight_bits: I(bits), ...(block ? { block_size: I(block) } : {}) }, { domain: 'com.microsoft' });
  }
  if (factor) out = g.op('Mul', [out, factor]);
  return g.op('Reshape', [out, g.op('Shape', [h])]);
}

export async function buildTransformer(g: Graph, a: ModelArgs, names: WeightNames, ck: WeightReader, opts: GraphOptions): Promise<void> {
  const { hiddenSize: D, numHeads: H, numKvHeads: Hkv, headDim: Dh, intermediateSize: Fi, vocabSize: V } = a;
  const rep = H / Hkv;

  const ids = g.input('input_ids', DT.INT64, ['B', 'L']);
  const pos = g.input('position_ids', DT.INT64, ['B', 'L']);
  const bias = g.input('attention_bias', DT.FLOAT, ['B', 'L', 'T']);
  const qidx = g.input('query_index', DT.INT64, ['B', 'Q']);

  // embeddings [V, D]
  const wte = await load(ck, names.embed, [V, D]);
  let x = g.op('Gather', [g.weight('embed', DT.FLOAT, [V, D], f32Bytes(wte)), ids], { axis: I(0) }); // [B, L, D]
  const headW = names.head === null ? stackTransposed([wte], [V], D) : null;

  // RoPE tables [maxPositions, Dh/2] (twice that for diffusion models), computed in float64:
  // inv_freq = theta^(-2i/Dh). Positions stay below maxPositions, but ORT's RotaryEmbedding wants
  // a table at least as long as the window, and a guided window (classifier-free guidance) is
  // two copies of a canvas
  // (partial rotary: the frequencies are those of a head of rotaryDim dims, as transformers computes them)
  const R = a.rotaryDim ?? Dh;
  const half = R / 2;
  const ropeRows = a.attention === 'causal' ? a.maxPositions : 2 * a.maxPositions;
  const cosT = new Float32Array(ropeRows * half);
  const sinT = new Float32Array(ropeRows * half);
  const invFreq = Float32Array.from({ length: half }, (_, i) => a.ropeTheta ** (-(2 * i) / R));
  for (let p = 0; p < ropeRows; p++)
    for (let i = 0; i < half; i++) {
      const ang = p * invFreq[i];
      cosT[p * half + i] = Math.cos(ang);
      sinT[p * half + i] = Math.sin(ang);
    }
  const cos = g.weight('rope_cos', DT.FLOAT, [ropeRows, half], f32Bytes(cosT), false);
  const sin = g.weight('rope_sin', DT.FLOAT, [ropeRows, half], f32Bytes(sinT), false);
  // additive mask broadcast over heads: [B, 1, L, T] or [B, 1, 1, L, T] for grouped heads
  const grouped = rep > 1; // grouped heads: head h uses kv head h / rep, via a broadcast axis
  const maskB = g.op('Unsqueeze', [bias, g.i64(grouped ? [1, 2] : [1])]);
  const scale = g.f32([1 / Math.sqrt(Dh)], []);
  // [P, L]: how the joined attention scores split into cache and window columns (all layers)
  const cacheCols = g.op('Shape', [g.input('past_key_0', DT.FLOAT, ['B', Hkv, 'P', Dh])], { start: I(2), end: I(3) });
  const windowCols = g.op('Shape', [ids], { start: I(1), end: I(2) });
  const scoreSplit = g.op('Concat', [cacheCols, windowCols], { axis: I(0) });

  for (let l = 0; l < a.numLayers; l++) {
    const n = names.layer(l);
    const pastK = l === 0 ? 'past_key_0' : g.input(`past_key_${l}`, DT.FLOAT, ['B', Hkv, 'P', Dh]);
    const pastV = g.input(`past_value_${l}`, DT.FLOAT, ['B', Hkv, 'P', Dh]);

    // --- attention
    const h1 = await norm(g, `l${l}.attn_norm`, x, a, ck, n.attnNorm, n.attnNormBias);
    const outs = [H * Dh, Hkv * Dh, Hkv * Dh];
    const wqkv = n.qkv
      ? stackTransposed([await load(ck, n.qkv, [(H + 2 * Hkv) * Dh, D])], [(H + 2 * Hkv) * Dh], D)
      : stackTransposed([await load(ck, n.q!, [H * Dh, D]), await load(ck, n.k!, [Hkv * Dh, D]), await load(ck, n.v!, [Hkv * Dh, D])], outs, D);
    let qkv = addLinear(g, `l${l}.qkv`, h1, wqkv, D, H * Dh + 2 * Hkv * Dh, opts.weights, { int8: opts.int8 }); // [B, L, (H+2Hkv)Dh]
    if (a.qkvBias) {
      const b = new Float32Array(H * Dh + 2 * Hkv * Dh);
      b.set(await load(ck, n.qBias!, [H * Dh]), 0);
      b.set(await load(ck, n.kBias!, [Hkv * Dh]), H * Dh);
      b.set(await load(ck, n.vBias!, [Hkv * Dh]), (H + Hkv) * Dh);
      qkv = g.op('Add', [qkv, g.weight(`l${l}.qkv_bias`, DT.FLOAT, [b.length], f32Bytes(b))]);
    }
    const [q0, k0, v0] = g.node('Split', [qkv, g.i64(outs)], { axis: I(-1) }, { outputs: 3 });
    // (ORT's fused MultiHeadAttention kernel measured slower here at 32-128 rows and equal at 512.)
    // [B, nh, L, Dh]; the window's keys and values are graph outputs (the caller appends them to its cache)
    const heads = (t: string, nh: number, output?: string) => g.op('Transpose', [g.op('Reshape', [t, g.i64([0, 0, nh, Dh])])], { perm: Is([0, 2, 1, 3]) }, { output });
    // Qwen3 layout: each head's q and k RMS-normalized over Dh before RoPE
    const headNorm = async (t: string, nh: number, name: string, w: string) =>
      g.op('Reshape', [rmsNorm(g, g.op('Reshape', [t, g.i64([0, 0, nh, Dh])]), g.weight(`l${l}.${name}`, DT.FLOAT, [Dh], f32Bytes(await load(ck, w, [Dh]))), a.rmsNormEps), g.i64([0, 0, nh * Dh])]);
    // (clip_qkv: q, k and v clamped after the projections and norms, as OLMoE does)
    const clip = (t: string) => (a.clipQkv === undefined ? t : g.op('Clip', [t, g.f32([-a.clipQkv], []), g.f32([a.clipQkv], [])]));
    const qn = clip(n.qNorm ? await headNorm(q0, H, 'q_norm', n.qNorm) : q0);
    const kn = clip(n.kNorm ? await headNorm(k0, Hkv, 'k_norm', n.kNorm) : k0);
    const v1 = clip(v0);
    const q = g.op('Mul', [heads(rope(g, qn, pos, cos, sin, H, a.rotaryDim), H), scale]);
    const k = heads(rope(g, kn, pos, cos, sin, Hkv, a.rotaryDim), Hkv, `present_key_${l}`);
    const v = heads(v1, Hkv, `present_value_${l}`);
    // Scores against the cached entries and against the window are computed separately and
    // joined only as scores: the cache is read in place, never concatenated (copied) per step.
    const qg = grouped ? g.op('Reshape', [q, g.i64([0, Hkv, rep, -1, Dh])]) : q; // [B, Hkv, rep, L, Dh] | [B, H, L, Dh]
    const kvView = (t: string) => (grouped ? g.op('Unsqueeze', [t, g.i64([2])]) : t); // [B, Hkv, 1, *, Dh]
    const tPerm = grouped ? Is([0, 1, 2, 4, 3]) : Is([0, 1, 3, 2]);
    const [pk, pv, wk, wv] = [pastK, pastV, k, v].map(kvView);
    const scores = g.op('Concat', [
      g.op('MatMul', [qg, g.op('Transpose', [pk], { perm: tPerm })]),
      g.op('MatMul', [qg, g.op('Transpose', [wk], { perm: tPerm })]),
    ], { axis: I(-1) }); // [..., L, P + L]
    const probs = g.op('Softmax', [g.op('Add', [scores, maskB])], { axis: I(-1) });
    const [pp, pw] = g.node('Split', [probs, scoreSplit], { axis: I(-1) }, { outputs: 2 });
    const c = g.op('Add', [g.op('MatMul', [pp, pv]), g.op('MatMul', [pw, wv])]);
    const ctx = grouped ? g.op('Reshape', [c, g.i64([0, H, -1, Dh])]) : c; // [B, H, L, Dh]
    const merged = g.op('Reshape', [g.op('Transpose', [ctx], { perm: Is([0, 2, 1, 3]) }), g.i64([0, 0, H * Dh])]); // [B, L, H*Dh]
    g.output(`present_key_${l}`, DT.FLOAT, ['B', Hkv, 'L', Dh]);
    g.output(`present_value_${l}`, DT.FLOAT, ['B', Hkv, 'L', Dh]);
    const wo = stackTransposed([await load(ck, n.o, [D, H * Dh])], [D], H * Dh);
    x = g.op('Add', [x, addLinear(g, `l${l}.o`, merged, wo, H * Dh, D, opts.weights, { int8: opts.int8 })]);

    // --- feed-forward: SwiGLU, or a mixture of SwiGLU experts
    const h2 = await norm(g, `l${l}.mlp_norm`, x, a, ck, n.mlpNorm, n.mlpNormBias);
    let ff: string;
    if (a.mlp === 'gelu_tanh') ff = await geluMlp(g, `l${l}`, h2, n, D, Fi, ck, opts);
    else if (n.moe) {
      ff = await mixture(g, `l${l}`, h2, n.moe, a, ck, opts);
      if (n.moe.shared) ff = g.op('Add', [ff, await swiglu(g, `l${l}.shared`, h2, n.moe.shared, D, a.moe!.sharedSize!, ck, opts)]);
    } else ff = await swiglu(g, `l${l}`, h2, { gate: n.gate!, up: n.up!, down: n.down! }, D, Fi, ck, opts);
    x = g.op('Add', [x, ff]);
  }

  // --- head, only at the queried rows
  const sel = g.op('GatherND', [x, g.op('Unsqueeze', [qidx, g.i64([-1])])], { batch_dims: I(1) }); // [B, Q, D]
  const hf = await norm(g, 'final_norm', sel, a, ck, names.finalNorm, names.finalNormBias);
  const wHead = headW ?? stackTransposed([await load(ck, names.head!, [V, D])], [V], D);
  // The head is quantized per output channel to int8 for quantized models (int4 rows are
  // too coarse for the token decision); fp32 models keep it fp32.
  const headFormat = opts.weights === 'fp32' ? 'fp32' : 'int8';
  const logits = names.headBias
    ? g.op('Add', [addLinear(g, 'head', hf, wHead, D, V, headFormat, { int8: opts.int8 }), g.weight('head_bias', DT.FLOAT, [V], f32Bytes(await load(ck, names.headBias, [V])))], {}, { output: 'logits' })
    : addLinear(g, 'head', hf, wHead, D, V, headFormat, { output: 'logits', int8: opts.int8 }); // [B, Q, V]
  g.output('logits', DT.FLOAT, ['B', 'Q', V]);
  const k = Math.min(opts.topK, V);
  g.node('TopK', [logits, g.i64([k])], { axis: I(-1), largest: I(1), sorted: I(1) }, { outputs: ['top_values', 'top_ids'] });
  g.output('top_values', DT.FLOAT, ['B', 'Q', k]);
  g.output('top_ids', DT.INT64, ['B', 'Q', k]);
  // lse = m + log(sum(e)), entropy = lse - sum(e * logits) / sum(e), with e = exp(logits - m)
  // and m the top-1 logit: one Exp over the rows.
  const m = g.op('Slice', ['top_values', g.i64([0]), g.i64([1]), g.i64([-1])]); // [B, Q, 1]
  const e = g.op('Exp', [g.op('Sub', [logits, m])]);
  const z = g.op('ReduceSum', [e, g.i64([-1])], { keepdims: I(1) });
  const lse1 = g.op('Add', [m, g.op('Log', [z])]); // [B, Q, 1]
  g.op('Squeeze', [lse1, g.i64([-1])], {}, { output: 'lse' });
  g.output('lse', DT.FLOAT, ['B', 'Q']);
  const ez = g.op('Div', [g.op('ReduceSum', [g.op('Mul', [e, logits]), g.i64([-1])], { keepdims: I(1) }), z]);
  g.op('Squeeze', [g.op('Sub', [lse1, ez]), g.i64([-1])], {}, { output: 'entropy' });
  g.output('entropy', DT.FLOAT, ['B', 'Q']);
}
