// LoRA adapters in the format Hugging Face's PEFT saves (and vLLM, Ollama, llama.cpp's converter
// read): adapter_config.json + adapter_model.safetensors beside it.
//
//   adapter_config.json: peft_type "LORA", r, lora_alpha, use_rslora, use_dora, rank_pattern,
//     alpha_pattern, base_model_name_or_path, ...
//   tensors (the adapter name "default" already removed by PEFT's save):
//     base_model.model.<module>.lora_A.weight          [r, in]    a Linear's low-rank pair:
//     base_model.model.<module>.lora_B.weight          [out, r]   W [out, in] += s * B @ A
//     base_model.model.<module>.lora_embedding_A       [r, V]     an Embedding's pair:
//     base_model.model.<module>.lora_embedding_B       [D, r]     E [V, D] += s * (B @ A)^T
//     base_model.model.<name>                                     a whole tensor trained alongside
//                                                                 (modules_to_save, bias "all"): replaces <name>
//   s = alpha / r, or alpha / sqrt(r) with use_rslora; r and alpha per module from rank_pattern /
//   alpha_pattern, whose keys match a module's name as the regex (.*\.)?(key)$, first key first.
//
// This file reads and checks the adapter against the base's tensor names; models/lora.ts merges.

import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../errors.ts';
import { SafetensorsFile, type TensorInfo } from './safetensors.ts';

const PREFIX = 'base_model.model.';
export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

/** One base tensor's low-rank update: W += scale * B @ A (linear) or its transpose (embedding). */
export interface LoraDelta {
  kind: 'linear' | 'embedding';
  /** the adapter's tensor names */
  a: string;
  b: string;
  rank: number;
  scale: number;
}

export interface LoraAdapter {
  dir: string;
  /** adapter_config.json's base_model_name_or_path, when it names one */
  baseModel: string | null;
  /** base tensor name -> its update */
  deltas: Map<string, LoraDelta>;
  /** base tensor name -> the adapter tensor that replaces it (before its update, if it has one) */
  replaced: Map<string, string>;
  file: SafetensorsFile;
  /** what the conversion cache keys on: the config's bytes and the weights' content hash */
  fingerprint(): Promise<string>;
  close(): Promise<void>;
}

interface LoraConfig {
  r: number;
  alpha: number;
  rslora: boolean;
  rankPattern: [string, RegExp, number][];
  alphaPattern: [string, RegExp, number][];
  baseModel: string | null;
}

/** A directory holding a PEFT adapter and no model weights of its own (some trainers save the
 * base's config.json beside the adapter). */
export function isAdapterDir(dir: string): boolean {
  return existsSync(join(dir, ADAPTER_CONFIG)) && !existsSync(join(dir, 'model.safetensors')) && !existsSync(join(dir, 'model.safetensors.index.json'));
}

const bad = (code: string, message: string) => new FormatError(code, message);

function patterns(raw: unknown, what: string): [string, RegExp, number][] {
  if (raw === undefined || raw === null) return [];
  if (typeof raw !== 'object' || Array.isArray(raw)) throw bad('adapter_config_invalid', `${ADAPTER_CONFIG}: ${what} must be an object of module pattern -> number`);
  const entries = Object.entries(raw as Record<string, unknown>);
  if (entries.length > 1024) throw bad('adapter_config_invalid', `${ADAPTER_CONFIG}: ${what} has ${entries.length} keys, more than 1024`);
  return entries.map(([k, v]) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad('adapter_config_invalid', `${ADAPTER_CONFIG}: ${what}[${JSON.stringify(k)}] must be a positive number, got ${JSON.stringify(v)}`);
    // (the keys are regexes from a downloaded file, run on the main thread: one that could
    // backtrack catastrophically, a quantified group, is refused; PEFT writes module names and
    // simple patterns such as "layers\.\d+\.mlp")
    const unbounded = k.match(/[*+]|\{\d+,\}/g)?.length ?? 0;
    if (k.length > 256 || /\)[*+?{]/.test(k) || unbounded > 2)
      throw bad('adapter_config_invalid', `${ADAPTER_CONFIG}: ${what} key ${JSON.stringify(k.slice(0, 80))} is too complex a pattern (over 256 characters, a repeated group, or more than 2 unbounded repetitions)`);
    let re: RegExp;
    try {
      // (PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", module_name))
      re = new RegExp(`^(.*\\.)?(${k})$`);
    } catch {
      throw bad('adapter_config_invalid', `${ADAPTER_CONFIG}: ${what} key ${JSON.stringify(k.slice(0, 80))} is not a valid pattern`);
    }
    return [k, re, v];
  });
}

export function parseLoraConfig(text: string): LoraConfig {
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(text);
  } catch {
    throw bad('adapter_config_invalid', `${ADAPTER_CONFIG} is not valid JSON`);
  }
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw bad('adapter_config_invalid', `${ADAPTER_CONFIG} must be a JSON object`);
  const type = c.peft_type ?? 'LORA';
  if (typeof type !== 'string' || type.toUpperCase() !== 'LORA') throw bad('adapter_unsupported', `${ADAPTER_CONFIG}: peft_type ${JSON.stringify(type)} is not supported (quench merges LoRA adapters)`);
  if (c.use_dora === true) throw bad('adapter_unsupported', `${ADAPTER_CONFIG}: use_dora (DoRA's magnitude vectors) is not supported; merge the adapter with PEFT's merge_and_unload() and load the result`);
  if (c.lora_bias === true) throw bad('adapter_unsupported', `${ADAPTER_CONFIG}: lora_bias (a bias on lora_B) is not supported`);
  // (initialisations that change the base itself: the adapter is relative to a residual base
  // PEFT rebuilds at load, and W + s B A on the original would be another model)
  const init = c.init_lora_weights;
  if (typeof init === 'string' && /^(pissa|olora|corda|loftq|lora_ga)/i.test(init))
    throw bad('adapter_unsupported', `${ADAPTER_CONFIG}: init_lora_weights ${JSON.stringify(init)} trains against a modified base, which PEFT rebuilds at load; convert the adapter (PEFT's path_initial_model_for_weight_conversion) or merge it with PEFT`);
  // (variants whose update is not a plain low-rank sum on the named tensors)
  for (const [key, what] of [['use_qalora', 'QA-LoRA'], ['alora_invocation_tokens', 'activated LoRA'], ['target_parameters', 'LoRA on bare parameters'], ['layer_replication', 'layer replication'], ['trainable_token_indices', 'trainable tokens'], ['velora_config', 'VeLoRA'], ['monteclora_config', 'MonteCLoRA'], ['use_bdlora', 'block-diagonal LoRA'], ['arrow_config', 'Arrow routing'], ['kasa_config', 'KaSA']] as const) {
    const v = c[key];
    if (v !== undefined && v !== null && v !== false && !(Array.isArray(v) && v.length === 0))
      throw bad('adapter_unsupported', `${ADAPTER_CONFIG}: ${key} (${what}) is not supported; merge the adapter with PEFT's merge_and_unload() and load the result`);
  }
  const r = c.r ?? 8;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw bad('adapter_config_invalid', `${ADAPTER_CONFIG}: r must be a positive integer, got ${JSON.stringify(c.r)}`);
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw bad('adapter_config_invalid', `${ADAPTER_CONFIG}: lora_alpha must be a number, got ${JSON.stringify(c.lora_alpha)}`);
  const base = typeof c.base_model_name_or_path === 'string' && c.base_model_name_or_path.length > 0 ? c.base_model_name_or_path : null;
  return { r, alpha, rslora: c.use_rslora === true, rankPattern: patterns(c.rank_pattern, 'rank_pattern'), alphaPattern: patterns(c.alpha_pattern, 'alpha_pattern'), baseModel: base };
}

/** PEFT's scaling for one module: alpha / r (or / sqrt(r)), each from its pattern when one matches. */
export function loraScale(cfg: LoraConfig, module: string): { rank: number; scale: number } {
  const pick = (p: [string, RegExp, number][], dflt: number) => p.find(([, re]) => re.test(module))?.[2] ?? dflt;
  const rank = pick(cfg.rankPattern, cfg.r);
  const alpha = pick(cfg.alphaPattern, cfg.alpha);
  return { rank, scale: cfg.rslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

const PARTS: [suffix: string, kind: LoraDelta['kind'], side: 'a' | 'b'][] = [
  ['.lora_A.weight', 'linear', 'a'],
  ['.lora_B.weight', 'linear', 'b'],
  ['.lora_embedding_A', 'embedding', 'a'],
  ['.lora_embedding_B', 'embedding', 'b'],
];

/**
 * Open an adapter and check it against the base: `baseInfo` gives a base tensor's header (or
 * null when the base has none), `reads` whether the graph reads that tensor (an update to one
 * it does not read would be dropped silently, so it is refused).
 */
export async function openLora(dir: string, baseInfo: (name: string) => TensorInfo | null, reads: (name: string) => boolean): Promise<LoraAdapter> {
  const cfgPath = join(dir, ADAPTER_CONFIG);
  if (!existsSync(cfgPath)) throw bad('adapter_missing', `no ${ADAPTER_CONFIG} in the adapter directory ${JSON.stringify(dir)}`);
  const cfgText = await readFile(cfgPath, 'utf8');
  const cfg = parseLoraConfig(cfgText);
  const wPath = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(wPath)) {
    const pickled = existsSync(join(dir, 'adapter_model.bin'));
    throw bad('adapter_missing', `no ${ADAPTER_WEIGHTS} in the adapter directory${pickled ? ' (adapter_model.bin is a pickle, which quench never loads: save the adapter with safe_serialization=True)' : ''}`);
  }
  const file = await SafetensorsFile.open(wPath);
  try {
    const pairs = new Map<string, { kind: LoraDelta['kind']; a?: string; b?: string }>();
    const replaced = new Map<string, string>();
    for (const key of file.tensors.keys()) {
      if (!key.startsWith(PREFIX)) throw bad('adapter_tensor_unknown', `adapter tensor ${JSON.stringify(key.slice(0, 200))} does not start with ${PREFIX} (not a PEFT LoRA adapter for a model)`);
      const name = key.slice(PREFIX.length);
      if (name.endsWith('.lora_magnitude_vector')) throw bad('adapter_unsupported', `adapter tensor ${JSON.stringify(key)} is a DoRA magnitude vector: DoRA is not supported`);
      if (name.endsWith('.lora_B.bias')) throw bad('adapter_unsupported', `adapter tensor ${JSON.stringify(key)} is a lora_B bias (lora_bias): not supported`);
      const part = PARTS.find(([s]) => name.endsWith(s));
      if (!part) {
        // (modules_to_save, trained biases: a whole base tensor; a targeted module's own tensors
        // are saved under its wrapped base_layer: a bias with bias "all" / "lora_only", an
        // embedding or head saved beside its pair)
        const target = name.replace(/\.base_layer\.(weight|bias)$/, '.$1');
        if (!baseInfo(target)) throw bad('adapter_tensor_unknown', `adapter tensor ${JSON.stringify(key.slice(0, 200))} names no tensor of the base model`);
        if (replaced.has(target)) throw bad('adapter_tensor_unknown', `adapter tensors ${JSON.stringify(replaced.get(target))} and ${JSON.stringify(key)} both replace ${target}`);
        replaced.set(target, key);
        continue;
      }
      const [suffix, kind, side] = part;
      const target = `${name.slice(0, -suffix.length)}.weight`;
      const p = pairs.get(target) ?? { kind };
      if (p.kind !== kind) throw bad('adapter_tensor_unknown', `adapter module ${JSON.stringify(target)} mixes linear and embedding LoRA tensors`);
      p[side] = key;
      pairs.set(target, p);
    }
    const deltas = new Map<string, LoraDelta>();
    for (const [target, p] of pairs) {
      if (!p.a || !p.b) throw bad('adapter_tensor_missing', `adapter module ${JSON.stringify(target.slice(0, -'.weight'.length))} has lora_${p.a ? 'A' : 'B'} but no lora_${p.a ? 'B' : 'A'}`);
      const base = baseInfo(target);
      if (!base) throw bad('adapter_tensor_unknown', `adapter module ${JSON.stringify(target.slice(0, -'.weight'.length))} names no tensor of the base model (no ${target})`);
      const A = file.tensors.get(p.a)!.shape, B = file.tensors.get(p.b)!.shape;
      const rank = A[0];
      // Linear: W [out, in], A [r, in], B [out, r]; Embedding: E [V, D], A [r, V], B [D, r]
      const [rows, cols] = p.kind === 'linear' ? [base.shape[0], base.shape[1]] : [base.shape[1], base.shape[0]];
      if (base.shape.length !== 2 || A.length !== 2 || B.length !== 2 || B[1] !== rank || A[1] !== cols || B[0] !== rows)
        throw bad('config_mismatch', `adapter module ${JSON.stringify(target.slice(0, -'.weight'.length))}: lora A [${A}] and B [${B}] do not fit the base tensor [${base.shape}]`);
      const module = target.slice(0, -'.weight'.length);
      // (a rank past the tensor's smaller side adds nothing a full update would not, at more cost)
      if (rank > Math.min(rows, cols)) throw bad('config_mismatch', `adapter module ${JSON.stringify(module.slice(0, 200))} has rank ${rank}, over its tensor's smaller side ${Math.min(rows, cols)}`);
      const s = loraScale(cfg, module);
      if (s.rank !== rank) throw bad('config_mismatch', `adapter module ${JSON.stringify(module)} has rank ${rank}, ${ADAPTER_CONFIG} says ${s.rank}`);
      deltas.set(target, { kind: p.kind, a: p.a, b: p.b, rank, scale: s.scale });
    }
    for (const [name, key] of replaced) {
      const base = baseInfo(name)!, t = file.tensors.get(key)!;
      if (t.shape.length !== base.shape.length || t.shape.some((d, i) => d !== base.shape[i]))
        throw bad('config_mismatch', `adapter tensor ${JSON.stringify(key)} is [${t.shape}], the base's ${name} is [${base.shape}]${/embed|wte|lm_head|ff_out\.weight$/.test(name) ? ' (an adapter trained with a resized vocabulary is not supported)' : ''}`);
    }
    for (const name of [...deltas.keys(), ...replaced.keys()])
      if (!reads(name)) throw bad('adapter_tensor_unused', `the adapter changes ${JSON.stringify(name)}, which quench's graph for this model does not read`);
    if (deltas.size === 0 && replaced.size === 0) throw bad('adapter_empty', `${ADAPTER_WEIGHTS} holds no LoRA tensors`);
    // (by content, read only when the cache key is asked for: an adapter rewritten in place
    // within the clock's resolution is another adapter)
    const fingerprint = async () => {
      const digest = createHash('sha256');
      for await (const chunk of createReadStream(wPath)) digest.update(chunk as Buffer);
      return `lora:${cfgText}\n${digest.digest('hex')}`;
    };
    return { dir, baseModel: cfg.baseModel, deltas, replaced, file, fingerprint, close: () => file.close() };
  } catch (e) {
    await file.close();
    throw e;
  }
}
