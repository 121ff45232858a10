// `quench show [model]`: what a model is, read from its files without converting or loading
// it (Ollama's `show`): architecture, size, context, attention, weights, special tokens, the
// decoding defaults of its generation_config.json, and its model card's license.

import { readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { LoraAdapter } from '../formats/lora.ts';
import { openAdapter } from '../models/registry.ts';
import { FormatError, OptionError } from '../errors.ts';
import { feedForwardParams, loadConfig, type ModelArgs } from '../formats/config.ts';
import { machineMemory, resolveDtype, weightBytes } from '../models/dtype.ts';
import { Checkpoint } from '../formats/safetensors.ts';
import { TextCodec } from '../formats/tokenizer.ts';
import { GGML_TYPES, isGguf, openGguf } from '../formats/gguf.ts';
import { argsOf, tokenizerOf } from '../models/gguf.ts';
import { describeDefaults } from './generation-config.ts';

/** Parameters of the model the arguments describe: embeddings, every layer's projections and
 * norms, the final norm and an untied head (biases and q/k norms where the layout has them);
 * `active`: the weights one token runs through: only the k chosen experts of each mixture, and
 * not the input embedding (a lookup). (Model cards differ: LLaDA-MoE's "1.4B active" counts so,
 * LLaDA2.0-mini's "1.4B" counts the embedding too: 1.11B here.) */
export function parameterCount(a: ModelArgs, active = false): number {
  const D = a.hiddenSize;
  const q = a.numHeads * a.headDim;
  const kv = a.numKvHeads * a.headDim;
  const attn = D * q + 2 * D * kv + q * D + (a.qkvBias ? q + 2 * kv : 0) + (a.qkNorm ? 2 * a.headDim : 0);
  let layers = 0;
  for (let l = 0; l < a.numLayers; l++) layers += attn + feedForwardParams(a, l, active) + 2 * D;
  const embed = active && !a.tiedEmbeddings ? 0 : a.vocabSize * D;
  return embed + layers + D + (a.tiedEmbeddings ? 0 : a.vocabSize * D);
}

function count(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : `${(n / 1e3).toFixed(1)}K`;
}

/** dtype -> how many tensors, most first ("BF16 x 98, F32 x 2") */
function tally(types: string[]): string {
  const m = new Map<string, number>();
  for (const t of types) m.set(t, (m.get(t) ?? 0) + 1);
  return [...m].sort((x, y) => y[1] - x[1]).map(([t, n]) => `${t} x ${n}`).join(', ');
}


/** The license a model card names: its YAML front matter's `license`, else the first
 * paragraph of a "License" section. */
export function cardLicense(card: string): string | null {
  const unquote = (s: string) => s.trim().replace(/^(['"])(.*)\1$/, '$2');
  const front = /^---\r?\n([\s\S]*?)\r?\n---/.exec(card);
  if (front) {
    const one = /^license:[ \t]*(\S.*)$/m.exec(front[1]);
    if (one) return unquote(one[1]);
    const list = /^license:[ \t]*\r?\n[ \t]*-[ \t]*(\S.*)$/m.exec(front[1]);
    if (list) return unquote(list[1]);
  }
  const section = /^#{1,6}[ \t]*Licen[sc](?:e|es|ing)\b[ \t]*:?[ \t]*(.*)\r?\n+([\s\S]*?)(?:\r?\n[ \t]*\r?\n|\r?\n#|(?![\s\S]))/im.exec(card);
  if (!section) return null;
  return [section[1], section[2]].map((x) => x.replace(/\s*\r?\n\s*/g, ' ').trim()).filter(Boolean).join(': ') || null;
}

/** What `--dtype auto` converts this model to here, and the weights' size in that format. */
function autoDtype(args: ModelArgs, memory = machineMemory()): string {
  const { dtype } = resolveDtype('auto', args, memory);
  const gib = (b: number) => (b < 2 ** 30 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 2 ** 30).toFixed(1)} GiB`);
  return `${dtype}, ${gib(weightBytes(args, dtype))} of weights (this machine: ${gib(memory)})`;
}

/** An adapter in a line: what it changes, its ranks and scales. */
function adapterRow(a: LoraAdapter): string {
  const ranks = [...new Set([...a.deltas.values()].map((d) => d.rank))].sort((x, y) => x - y);
  const scales = [...new Set([...a.deltas.values()].map((d) => +d.scale.toPrecision(4)))].sort((x, y) => x - y);
  const parts = [
    ...(a.deltas.size ? [`${a.deltas.size} low-rank updates (rank ${ranks.join(', ')}, scale ${scales.join(', ')})`] : []),
    ...(a.replaced.size ? [`${a.replaced.size} tensors replaced (${[...a.replaced.keys()].slice(0, 3).join(', ')}${a.replaced.size > 3 ? ', ...' : ''})`] : []),
  ];
  return `LoRA ${basename(a.dir)}: ${parts.join('; ')}, merged at load`;
}

/** `tokenizer`: the tokenizer's directory where the checkpoint ships none (MDLM, BD3-LM);
 * `lora`: an adapter's directory, described and checked against the base. */
export async function describe(dir: string, tokenizer?: string, diffusion?: 'shifted' | 'unshifted', lora?: string): Promise<string> {
  let adapter = '';
  let args: ModelArgs;
  let codec: TextCodec;
  let weights: string;
  let card = '';
  let license: string | null = null;
  let defaults: string;
  if (isGguf(dir)) {
    // (a GGUF file's metadata names its tokenizer and its diffusion alignment itself)
    for (const [k, v] of [['diffusion', diffusion], ['tokenizer', tokenizer], ['lora', lora]] as const) if (v !== undefined) throw new OptionError(k, `${k} applies to checkpoint directories, not GGUF files`);
    const file = await openGguf(dir);
    try {
      args = argsOf(file.metadata, new Set(file.tensors.keys()));
      const tok = tokenizerOf(file.metadata, args.vocabSize);
      codec = new TextCodec(tok.json, tok.config, args, null);
      let bytes = 0;
      for (const f of file.files) bytes += (await stat(f)).size;
      weights = `GGUF, ${tally([...file.tensors.values()].map((t) => GGML_TYPES[t.type]?.name ?? `type ${t.type}`))}, ${(bytes / 1e6).toFixed(1)} MB file`;
      const lic = file.metadata.get('general.license');
      license = typeof lic === 'string' ? lic : null;
      defaults = '';
    } finally {
      await file.close();
    }
  } else {
    ({ args } = await loadConfig(dir, { diffusion }));
    // (an adapter's own tokenizer files, when it ships them, are the ones a load uses)
    const tokDir = tokenizer ?? (lora !== undefined && existsSync(join(lora, 'tokenizer.json')) ? lora : dir);
    // (a generation_config.json that cannot be read is reported below, not fatal here)
    try {
      codec = await TextCodec.load(dir, args, true, tokDir);
      defaults = describeDefaults(codec.generation);
    } catch (e) {
      if (e instanceof FormatError && e.code === 'tokenizer_missing') throw e;
      codec = await TextCodec.load(dir, args, false, tokDir);
      defaults = `invalid: ${(e as Error).message}`;
    }
    const ck = await Checkpoint.open(dir);
    try {
      const names = ck.names();
      const bytes = names.reduce((s, n) => s + ck.info(n).byteLength, 0);
      weights = `safetensors, ${tally(names.map((n) => ck.info(n).dtype))}, ${(bytes / 1e6).toFixed(1)} MB`;
      if (lora !== undefined) {
        // (the checks a load makes: the graph's reads, a tied embedding)
        const a = await openAdapter(resolve(lora), args, ck);
        adapter = adapterRow(a);
        await a.close();
      }
    } finally {
      await ck.close();
    }
    card = await readFile(join(dir, 'README.md'), 'utf8').catch(() => '');
    license = cardLicense(card);
  }
  const sp = codec.special;
  // (a DiT's mask is an id past its tokenizer's vocabulary: nothing to print)
  const tokenName = (id: number | null) => (id === null ? 'none' : id >= codec.vocabSize ? `${id} (past the tokenizer's ${codec.vocabSize} tokens)` : `${JSON.stringify(codec.decode([id], false))} (${id})`);
  const attention =
    args.attention === 'block_causal'
      ? `block-causal, blocks of ${args.blockSize}${args.subBlock ? ` (decoded in sub-blocks of ${args.subBlock}; a block's first token ${codec.generation.leadToken === false ? 'with the others' : 'alone, first (lead_token)'})` : ''}`
      : args.attention === 'causal'
        ? 'causal (autoregressive)'
        : 'bidirectional';
  const rows: [string, string][] = [
    ['architecture', args.arch],
    ['parameters', count(parameterCount(args)) + (args.moe ? ` (${count(parameterCount(args, true))} active per token, without the embedding)` : '')],
    ...(args.moe ? ([['experts', `${args.moe.experts} of ${args.moe.expertSize} per mixture, ${args.moe.topK} per token${args.moe.sharedSize ? `, a shared expert of ${args.moe.sharedSize}` : ''}; ${args.moe.layers.filter(Boolean).length} of ${args.numLayers} layers`]] as [string, string][]) : []),
    ['context length', String(args.maxPositions)],
    ['embedding length', String(args.hiddenSize)],
    ['layers', `${args.numLayers} (${args.numHeads} heads, ${args.numKvHeads} key/value heads of ${args.headDim})`],
    ['vocabulary', String(args.vocabSize)],
    ['attention', attention],
    ['logits', args.attention === 'causal' ? 'next token' : args.shiftedLogits ? 'shifted (position i read from row i - 1)' : 'not shifted'],
    ['weights', weights],
    ...(adapter ? ([['adapter', adapter]] as [string, string][]) : []),
    ['auto dtype', autoDtype(args)],
    ['mask token', tokenName(sp.mask)],
    ['end tokens', sp.stop.map((t) => tokenName(t)).join(', ') || 'none'],
    ['chat template', codec.hasChatTemplate ? 'yes' : 'no'],
  ];
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  const out = ['  Model', ...rows.map(([k, v]) => `    ${k.padEnd(w)}${v}`)];
  const engine = args.attention === 'causal' ? 'greedy, one token per step' : 'threshold 0.9, prefix cache';
  out.push('', '  Decoding defaults (generation_config.json)', `    ${defaults || `none: the engine's own (${engine})`}`);
  if (license) out.push('', '  License', `    ${license}`);
  return out.join('\n');
}
