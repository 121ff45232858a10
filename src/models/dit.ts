// MDLM and BD3-LM (kuleshov-group): the DiT backbone of their Hugging Face code, `backbone.*`:
//
//   vocab_embed.embedding [V, D]; sigma_map.mlp.{0,2} (timestep MLP 256 -> C -> C);
//   blocks.{i}: norm1.weight [D], attn_qkv.weight [3D, D] (q rows, then k, then v), attn_out.weight
//     [D, D], norm2.weight [D], mlp.0 [4D, D] + bias, mlp.2 [D, 4D] + bias, adaLN_modulation [6D, C] + bias;
//   output_layer: norm_final.weight [D], linear [V, D] + bias, adaLN_modulation [2D, C] + bias.
//
// A block, with c = silu(sigma_map(sigma)) and (shift, scale, gate) x (msa, mlp) = adaLN_modulation(c):
//   x = x + gate_msa * attn_out(attn(modulate(norm1(x), shift_msa, scale_msa)))
//   x = x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp)),   modulate(y) = y (1 + scale) + shift
// norm = LayerNorm without a bias, in fp32. The released models do not condition on the noise level
// (sigma is zeroed), so every adaLN vector is a constant and folds into the weights exactly: a norm
// weight times (1 + scale) with the shift as its bias, attn_out's and mlp.2's rows times the gate.
// The graph then sees a plain pre-norm transformer (LayerNorm, GELU feed-forward, head bias). The
// head's bias also carries the "subs" parameterization: the mask token is never a prediction.

import { FormatError } from '../errors.ts';
import type { ModelArgs } from '../formats/config.ts';
import type { TensorInfo } from '../formats/safetensors.ts';
import { NEG_INF, type WeightNames, type WeightReader } from './transformer.ts';

const P = 'backbone';

/** The tensors the graph reads: folded ones keep their checkpoint names, the biases the fold
 * creates (a modulated norm's) are named after the norm. */
export function ditNames(args: ModelArgs): WeightNames {
  const blocks = Array.from({ length: args.numLayers }, (_, i) => `${P}.blocks.${i}`);
  const adaln = args.dit?.adaln ? [`${P}.sigma_map.mlp.0.weight`, `${P}.sigma_map.mlp.0.bias`, `${P}.sigma_map.mlp.2.weight`, `${P}.sigma_map.mlp.2.bias`, `${P}.output_layer.adaLN_modulation.weight`, `${P}.output_layer.adaLN_modulation.bias`, ...blocks.flatMap((b) => [`${b}.adaLN_modulation.weight`, `${b}.adaLN_modulation.bias`])] : [];
  return {
    embed: `${P}.vocab_embed.embedding`, // [V, D]
    layer: (i) => {
      const b = blocks[i];
      return {
        attnNorm: `${b}.norm1.weight`, // [D] (x (1 + scale_msa))
        attnNormBias: `${b}.norm1.bias`, // [D] (shift_msa; not in the checkpoint)
        qkv: `${b}.attn_qkv.weight`, // [3D, D]
        o: `${b}.attn_out.weight`, // [D, D] (rows x gate_msa)
        mlpNorm: `${b}.norm2.weight`,
        mlpNormBias: `${b}.norm2.bias`,
        up: `${b}.mlp.0.weight`, // [4D, D]
        upBias: `${b}.mlp.0.bias`,
        down: `${b}.mlp.2.weight`, // [D, 4D] (rows x gate_mlp)
        downBias: `${b}.mlp.2.bias`, // (x gate_mlp)
      };
    },
    finalNorm: `${P}.output_layer.norm_final.weight`,
    finalNormBias: `${P}.output_layer.norm_final.bias`,
    head: `${P}.output_layer.linear.weight`, // [V, D]
    headBias: `${P}.output_layer.linear.bias`, // [V] (the mask's entry NEG_INF)
    // (read only to compute the modulation; BD3-LM's sampling-interval buffers are not weights)
    derivedFrom: [...adaln, `${P}.sampling_eps_min`, `${P}.sampling_eps_max`, 'sampling_eps_min', 'sampling_eps_max'],
  };
}

/** Sinusoidal timestep features of a noise level t (GLIDE's: cos of t * freqs, then sin), dim 256. */
export function timestepFeatures(t: number, dim = 256, maxPeriod = 10000): Float64Array {
  const half = Math.floor(dim / 2);
  const out = new Float64Array(dim);
  for (let i = 0; i < half; i++) {
    const freq = Math.fround(Math.exp((-Math.log(maxPeriod) * i) / half));
    out[i] = Math.cos(t * freq);
    out[half + i] = Math.sin(t * freq);
  }
  return out;
}

const silu = (v: number) => v / (1 + Math.exp(-v));

/**
 * The checkpoint seen through the fold: the graph builder reads folded norms, gated output
 * projections and the biases the fold creates; everything else passes through.
 */
export class DitWeights implements WeightReader {
  private mods = new Map<string, Float64Array>();
  private cond: Float64Array | null = null;
  private readonly D: number;

  constructor(
    private readonly ck: WeightReader & { close(): Promise<void> },
    private readonly args: ModelArgs,
  ) {
    this.D = args.hiddenSize;
  }

  close(): Promise<void> {
    return this.ck.close();
  }

  info(name: string): TensorInfo {
    // (the biases the fold creates are in no file)
    if (/^backbone\.(blocks\.\d+\.norm[12]|output_layer\.norm_final)\.bias$/.test(name)) return { name, dtype: 'F32', shape: [this.D], offset: 0, byteLength: 4 * this.D };
    return this.ck.info(name);
  }

  async readF32(name: string): Promise<Float32Array> {
    const D = this.D;
    const block = /^backbone\.blocks\.(\d+)\.(norm1|norm2|attn_out|mlp\.2)\.(weight|bias)$/.exec(name);
    if (block) {
      const [, i, part, kind] = block;
      const mod = (k: number) => this.modulation(`${P}.blocks.${i}.adaLN_modulation`, 6, k);
      // chunks: shift_msa 0, scale_msa 1, gate_msa 2, shift_mlp 3, scale_mlp 4, gate_mlp 5
      if (part === 'norm1' || part === 'norm2') {
        const at = part === 'norm1' ? 0 : 3;
        return kind === 'weight' ? this.scaled(await this.ck.readF32(name), await mod(at + 1)) : this.bias(await mod(at));
      }
      const gate = await mod(part === 'attn_out' ? 2 : 5);
      return this.gated(await this.ck.readF32(name), gate);
    }
    if (name === `${P}.output_layer.norm_final.weight`) return this.scaled(await this.ck.readF32(name), await this.modulation(`${P}.output_layer.adaLN_modulation`, 2, 1));
    if (name === `${P}.output_layer.norm_final.bias`) return this.bias(await this.modulation(`${P}.output_layer.adaLN_modulation`, 2, 0));
    if (name === `${P}.output_layer.linear.bias`) {
      const b = await this.ck.readF32(name);
      const out = Float32Array.from(b);
      out[this.args.maskTokenId!] = NEG_INF;
      return out;
    }
    return this.ck.readF32(name);
  }

  /** w (1 + scale); without adaLN w */
  private scaled(w: Float32Array, scale: Float64Array | null): Float32Array {
    return scale ? Float32Array.from(w, (v, d) => v * (1 + scale[d])) : w;
  }

  private bias(shift: Float64Array | null): Float32Array {
    return shift ? Float32Array.from(shift) : new Float32Array(this.D);
  }

  /** rows of a [D, n] weight (or a [D] bias) times gate[row] */
  private gated(w: Float32Array, gate: Float64Array | null): Float32Array {
    if (!gate) return w;
    const n = w.length / this.D;
    return Float32Array.from(w, (v, j) => v * gate[Math.floor(j / n)]);
  }

  /** chunk k of `count` of adaLN_modulation(c), in Float64; null without adaLN */
  private async modulation(prefix: string, count: number, k: number): Promise<Float64Array | null> {
    if (!this.args.dit?.adaln) return null;
    let all = this.mods.get(prefix);
    if (!all) {
      const c = await this.condition();
      all = await this.linear(`${prefix}.weight`, `${prefix}.bias`, c, count * this.D);
      this.mods.set(prefix, all);
    }
    return all.subarray(k * this.D, (k + 1) * this.D);
  }

  /** c = silu(mlp.2(silu(mlp.0(features(0))))): sigma is 0 for models without time conditioning */
  private async condition(): Promise<Float64Array> {
    if (this.cond) return this.cond;
    const C = this.args.dit!.condDim;
    const t = timestepFeatures(0);
    const h = (await this.linear(`${P}.sigma_map.mlp.0.weight`, `${P}.sigma_map.mlp.0.bias`, t, C)).map(silu);
    this.cond = (await this.linear(`${P}.sigma_map.mlp.2.weight`, `${P}.sigma_map.mlp.2.bias`, h, C)).map(silu);
    return this.cond;
  }

  private async linear(wName: string, bName: string, x: Float64Array, out: number): Promise<Float64Array> {
    const shape = this.ck.info(wName).shape;
    if (shape.length !== 2 || shape[0] !== out || shape[1] !== x.length) throw new FormatError('config_mismatch', `tensor ${wName} has shape [${shape}], config implies [${out},${x.length}]`);
    const w = await this.ck.readF32(wName);
    const b = await this.ck.readF32(bName);
    if (b.length !== out) throw new FormatError('config_mismatch', `tensor ${bName} has ${b.length} values, config implies ${out}`);
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = b[o];
      for (let i = 0; i < x.length; i++) s += w[o * x.length + i] * x[i];
      y[o] = s;
    }
    return y;
  }
}
