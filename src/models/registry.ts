// loadModel: config.json picks the architecture (or, for a .gguf file, its metadata); the
// graph + converted weights are built once into the on-disk cache (keyed by the checkpoint,
// the options and the graph code) and ORT loads them from there, so restarts skip conversion.

import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile, readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FormatError, OptionError } from '../errors.ts';
import { loadConfig, type ModelArgs } from '../formats/config.ts';
import { resolveDtype, weightBytes, type DTypeOption } from './dtype.ts';
import { Checkpoint } from '../formats/safetensors.ts';
import { TextCodec, type SpecialTokens } from '../formats/tokenizer.ts';
import type { GenerationDefaults } from '../formats/generation-config.ts';
import { Graph, WeightWriter } from '../runtime/graph.ts';
import { int8Encoding, type Int8Encoding, type WeightFormat } from '../runtime/quant.ts';
import { OrtRunner, type ForwardRequest, type ForwardResult } from '../runtime/session.ts';
import { hfNames, qwen3Names } from './causal.ts';
import { dreamNames } from './dream.ts';
import { lladaNames } from './llada.ts';
import { lladaMoeNames } from './llada-moe.ts';
import { llada2Names } from './llada2.ts';
import { sdarNames } from './sdar.ts';
import { DitWeights, ditNames } from './dit.ts';
import { LoraWeights } from './lora.ts';
import { openLora, type LoraAdapter } from '../formats/lora.ts';
import { ggufModelName, isGguf, openGguf } from '../formats/gguf.ts';
import { argsOf, checkAllUsed, GgufWeights, tokenizerOf } from './gguf.ts';
import { buildTransformer, layerTensorNames, type WeightNames, type WeightReader } from './transformer.ts';

export type { DTypeOption } from './dtype.ts';

export interface LoadOptions {
  /** intra-op threads (0 = ORT default: one per core) */
  threads?: number;
  /** weight format; auto = fp32 below AUTO_INT8_PARAMS parameters, int8 above, int4 where the
   *  int8 weights would crowd this machine's memory (models/dtype.ts) */
  dtype?: DTypeOption;
  /** candidates returned per queried position (default 16) */
  topK?: number;
  /** where converted graphs are kept (default $QUENCH_CACHE or ~/.cache/quench) */
  cacheDir?: string;
  /** called with progress text during a first conversion */
  onProgress?: (msg: string) => void;
  /** convert in a child process (default: when the fp32 weights exceed 256 MB) */
  isolate?: boolean;
  /** run forwards in a worker thread, off the event loop; auto: for models of AUTO_WORKER_PARAMS
   * and more (a worker adds ~0.5-1 ms per forward, which only a small model notices) */
  worker?: boolean | 'auto';
  /** worker mode: seconds a forward may run before the worker is restarted and its batch fails (0 or absent: none) */
  forwardTimeout?: number;
  /** a block diffusion model's block size, instead of its config's (SDAR configs may lack
   *  block_size, which then defaults to 4; a checkpoint trained with other blocks needs this) */
  blockSize?: number;
  /** how int8 weights are encoded for ORT's kernels (runtime/quant.ts; default: the one exact on
   *  this machine's CPU) */
  int8?: Int8Encoding;
  /** a directory with tokenizer.json (+ tokenizer_config.json, special_tokens_map.json) to use
   *  instead of the model's own: for checkpoints that ship none (MDLM, BD3-LM: GPT-2's) */
  tokenizer?: string;
  /** a causal layout's checkpoint (llama, qwen2, qwen3) trained as a masked diffusion model by its
   *  own code (Open-dCoder): bidirectional, logits shifted or not (formats/config.ts ParseOptions) */
  diffusion?: 'shifted' | 'unshifted';
  /** a PEFT LoRA adapter's directory (adapter_config.json + adapter_model.safetensors), merged into
   *  the weights at conversion (formats/lora.ts); its tokenizer files, when it has them, are used */
  lora?: string;
}

/** Peak RSS of the last conversion run in a child process (bytes), for benchmarks. */
export let lastConversionPeakRss = 0;

/** From this many parameters a forward is long enough that it should not block the event loop. */
export const AUTO_WORKER_PARAMS = 100_000_000;

export interface Model {
  /** directory name, used as the model id by default */
  id: string;
  dir: string;
  args: ModelArgs;
  codec: TextCodec;
  special: SpecialTokens;
  /** the checkpoint's preferred decoding (generation_config.json); requests override it */
  defaults: GenerationDefaults;
  dtype: WeightFormat;
  topK: number;
  /** parameters in the linear layers and head (per-token FLOPs are ~2x this) */
  params: number;
  /** whether the graph came from the cache */
  cached: boolean;
  forward(reqs: ForwardRequest[]): Promise<ForwardResult[]>;
  stats: OrtRunner['stats'];
  close(): Promise<void>;
}

const ARCH_NAMES: Record<ModelArgs['arch'], (a: ModelArgs) => WeightNames> = {
  llada: lladaNames,
  llada_moe: lladaMoeNames,
  llada2: llada2Names,
  rnd1: lladaMoeNames,
  sdar_moe: lladaMoeNames,
  coda: qwen3Names,
  dream: dreamNames,
  sdar: sdarNames,
  fast_dllm_v2: hfNames,
  mdlm: ditNames,
  bd3lm: ditNames,
  llama: hfNames,
  qwen2: hfNames,
  qwen3: qwen3Names,
};

// (the code a converted graph depends on: the builder, each layout's tensor names, the config reading)
const GRAPH_SOURCES = ['transformer.ts', '../runtime/quant.ts', '../runtime/graph.ts', 'llada.ts', 'llada-moe.ts', 'llada2.ts', 'dream.ts', 'causal.ts', 'sdar.ts', 'dit.ts', '../formats/config.ts'];

export function defaultCacheDir(): string {
  return process.env.QUENCH_CACHE || join(homedir(), '.cache', 'quench');
}

/** A checkpoint to load: a Hugging Face directory or a GGUF file. */
interface Source {
  args: ModelArgs;
  fingerprint(): Promise<string>;
  weights(): Promise<WeightReader & { close(): Promise<void> }>;
  codec(): Promise<TextCodec>;
  close(): Promise<void>;
}


type SourceOptions = Pick<LoadOptions, 'tokenizer' | 'diffusion' | 'lora'>;

async function openSource(path: string, { tokenizer, diffusion, lora }: SourceOptions = {}): Promise<Source> {
  if (!isGguf(path)) {
    let { args } = await loadConfig(path, { diffusion });
    // (the headers only: a tensor the graph would not read means a variant it does not build)
    const ck = await Checkpoint.open(path);
    let adapter: LoraAdapter | null = null;
    try {
      // (CoDA saved where transformers tied its head to the embedding has no lm_head of its own)
      if (args.arch === 'coda' && !ck.names().includes('lm_head.weight')) args = { ...args, tiedEmbeddings: true };
      checkAllRead(args, ck.names());
      if (lora !== undefined) adapter = await openAdapter(resolve(lora), args, ck);
    } finally {
      await ck.close();
    }
    const lo = adapter;
    // (a DiT's adaLN modulation is folded in as the weights are read, after the adapter's merge)
    const open = async () => {
      const base = await Checkpoint.open(path);
      if (!lo) return base;
      try {
        // (its own handle: the checked one closes with the source)
        return new LoraWeights(base, await openAdapter(lo.dir, args, base));
      } catch (e) {
        await base.close();
        throw e;
      }
    };
    const weights = async () => (args.dit ? new DitWeights(await open(), args) : open());
    const tokenizerDir = tokenizer !== undefined ? resolve(tokenizer) : lo && existsSync(join(lo.dir, 'tokenizer.json')) ? lo.dir : path;
    return {
      args,
      // (the merging code is part of an adapted model's key, as the reading code is of a GGUF's)
      fingerprint: async () => (lo ? createHash('sha256').update(await checkpointFingerprint(path)).update(await lo.fingerprint()).update(await sourceHash(LORA_SOURCES)).digest('hex') : checkpointFingerprint(path)),
      weights,
      codec: () => TextCodec.load(path, args, true, tokenizerDir),
      close: async () => {
        await lo?.close();
      },
    };
  }
  // (a GGUF file's metadata names diffusion architectures and their alignment itself)
  for (const [k, v] of [['diffusion', diffusion], ['tokenizer', tokenizer], ['lora', lora]] as const)
    if (v !== undefined) throw new OptionError(k, `${k} applies to checkpoint directories, not GGUF files${k === 'lora' ? ' (merge the adapter into the safetensors checkpoint, or convert it with llama.cpp)' : ''}`);
  const file = await openGguf(path);
  try {
    const args = argsOf(file.metadata, new Set(file.tensors.keys()));
    checkAllUsed(args.arch, file.tensors.keys(), weightNamesOf(args));
    const embed = file.tensors.get('token_embd.weight');
    if (!embed || embed.dims.length !== 2 || embed.dims[0] !== args.hiddenSize || embed.dims[1] !== args.vocabSize)
      throw new FormatError('config_mismatch', `gguf: token_embd.weight ${embed ? `[${embed.dims}]` : 'is missing'}, metadata implies [${args.hiddenSize}, ${args.vocabSize}]`);
    const tok = tokenizerOf(file.metadata, args.vocabSize);
    const stamps = await Promise.all(file.files.map(async (f) => {
      const { size, mtimeMs } = await stat(f);
      return `${f}:${size}:${mtimeMs}`;
    }));
    return {
      args,
      // (the reading code is part of the key: a fix to decoding or the name mapping converts again)
      fingerprint: async () => createHash('sha256').update(`gguf:${stamps.join('\n')}`).update(await sourceHash(GGUF_SOURCES)).digest('hex'),
      weights: async () => new GgufWeights(file, args),
      codec: async () => new TextCodec(tok.json, tok.config, args, null),
      close: () => file.close(),
    };
  } catch (e) {
    await file.close();
    throw e;
  }
}

/** The adapter, checked against the base's tensors and the graph's reads (formats/lora.ts). */
export async function openAdapter(dir: string, args: ModelArgs, ck: Checkpoint): Promise<LoraAdapter> {
  const reads = new Set(weightNamesOf(args));
  const adapter = await openLora(dir, (n) => (ck.has(n) ? ck.info(n) : null), (n) => reads.has(n));
  // (a tied head reads the embedding: PEFT updates the input side only)
  const { embed } = ARCH_NAMES[args.arch](args);
  if (args.tiedEmbeddings && (adapter.deltas.has(embed) || adapter.replaced.has(embed))) {
    await adapter.close();
    throw new FormatError('adapter_unsupported', `the adapter changes the embedding ${embed} of a model whose head is tied to it: not supported (merge it with PEFT and load the result)`);
  }
  return adapter;
}

async function checkpointFingerprint(dir: string): Promise<string> {
  const h = createHash('sha256');
  h.update(await readFile(join(dir, 'config.json')));
  const files = (await readdir(dir)).filter((f) => f.endsWith('.safetensors') || f.endsWith('.index.json')).sort();
  for (const f of files) {
    const s = await stat(join(dir, f));
    h.update(`${f}:${s.size}:${s.mtimeMs}\n`);
  }
  return h.digest('hex');
}

const GGUF_SOURCES = ['gguf.ts', '../formats/gguf.ts'];
const LORA_SOURCES = ['lora.ts', '../formats/lora.ts', '../runtime/lowrank.ts'];

async function sourceHash(files: string[]): Promise<string> {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const h = createHash('sha256');
  for (const f of files) h.update(await readFile(join(here, f)));
  return h.digest('hex').slice(0, 16);
}

const graphCodeHash = () => sourceHash(GRAPH_SOURCES);

/**
 * A checkpoint's tensors must all have a place in the graph: one that does not (Llama's o_proj
 * bias with attention_bias, an MLP bias) would otherwise be dropped silently and the model would
 * run wrong. Tolerated: RoPE's stored inverse frequencies (recomputed) and a stored head when
 * the config ties it to the embedding (transformers ignores it too).
 */
function checkAllRead(args: ModelArgs, names: Iterable<string>): void {
  const want = new Set(weightNamesOf(args));
  const untiedHead = args.tiedEmbeddings ? ARCH_NAMES[args.arch]({ ...args, tiedEmbeddings: false }).head : null;
  for (const n of names) {
    if (want.has(n) || n === untiedHead || n.endsWith('rotary_emb.inv_freq')) continue;
    throw new FormatError('unused_tensor', `tensor ${JSON.stringify(n.slice(0, 200))} has no place in quench's ${args.arch} graph (a variant it does not build: biases or layers its config does not describe)`);
  }
}

/** Every tensor name the graph reads for these arguments. */
function weightNamesOf(args: ModelArgs): string[] {
  const n = ARCH_NAMES[args.arch](args);
  const out = [n.embed, n.finalNorm, ...(n.head ? [n.head] : []), ...[n.finalNormBias, n.headBias].filter((x): x is string => !!x), ...(n.derivedFrom ?? [])];
  for (let i = 0; i < args.numLayers; i++) out.push(...layerTensorNames(n.layer(i)));
  return out;
}

/** Build (or find) the converted graph + weights in the cache; returns its directory. */
export async function convertModel(dir: string, opts: LoadOptions = {}): Promise<{ args: ModelArgs; target: string; dtype: WeightFormat; topK: number; cached: boolean }> {
  const src = await openSource(resolve(dir), { diffusion: opts.diffusion, lora: opts.lora });
  try {
    return await convertSource(resolve(dir), src, opts);
  } finally {
    await src.close();
  }
}

async function convertSource(dir: string, src: Source, opts: LoadOptions): Promise<{ args: ModelArgs; target: string; dtype: WeightFormat; topK: number; cached: boolean }> {
  const { args } = src;
  const dtypeOpt = opts.dtype ?? 'auto';
  if (!['auto', 'fp32', 'int8', 'int4'].includes(dtypeOpt)) throw new OptionError('dtype', `dtype must be one of auto, fp32, int8, int4; got ${JSON.stringify(dtypeOpt)}`);
  const { dtype, why } = resolveDtype(dtypeOpt, args);
  if (why) opts.onProgress?.(why);
  const topK = opts.topK ?? 16;
  if (!Number.isInteger(topK) || topK < 1 || topK > 256) throw new OptionError('topK', 'topK must be an integer in [1, 256]');
  // (a diffusion model's mask token is never an answer: a position needs a second candidate)
  if (args.attention !== 'causal' && Math.min(topK, args.vocabSize) < 2) throw new OptionError('topK', `a diffusion model needs at least 2 candidates per position (topK ${topK})`);

  const int8 = opts.int8 ?? int8Encoding();
  if (int8 !== 's8' && int8 !== 'u8') throw new OptionError('int8', `int8 must be s8 or u8; got ${JSON.stringify(int8)}`);
  const key = createHash('sha256')
    .update(await src.fingerprint())
    // (a diffusion model's graph is built for guided windows of two canvases: longer RoPE tables)
    .update(JSON.stringify({ dtype, topK, code: await graphCodeHash(), ...(dtype === 'fp32' ? {} : { int8 }), ...(args.attention === 'causal' ? {} : { diffusion: true }) }))
    .digest('hex')
    .slice(0, 24);
  const cacheRoot = opts.cacheDir ?? defaultCacheDir();
  const target = join(cacheRoot, key);
  const cached = existsSync(join(target, 'meta.json'));
  const fp32Bytes = weightBytes(args, 'fp32');
  if (!cached && (opts.isolate ?? fp32Bytes > 256 * 2 ** 20)) {
    opts.onProgress?.(`converting ${basename(dir)} to ${dtype} in a child process (one time, cached in ${cacheRoot})`);
    await convertInChild(dir, { dtype, topK, cacheDir: cacheRoot, int8, diffusion: opts.diffusion, ...(opts.lora !== undefined ? { lora: resolve(opts.lora) } : {}) });
  } else if (!cached) {
    opts.onProgress?.(`converting ${basename(dir)} to ${dtype} (one time, cached in ${cacheRoot})`);
    const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
    await mkdir(tmp, { recursive: true });
    try {
      const ck = await src.weights();
      const writer = new WeightWriter(join(tmp, 'weights.bin'), 'weights.bin');
      const g = new Graph(writer);
      try {
        await buildTransformer(g, args, ARCH_NAMES[args.arch](args), ck, { topK, weights: dtype, int8 });
      } finally {
        writer.close();
        await ck.close();
      }
      await writeFile(join(tmp, 'model.onnx'), g.toBytes());
      await writeFile(join(tmp, 'meta.json'), JSON.stringify({ params: g.paramCount, dtype, topK, source: dir }));
      await rm(target, { recursive: true, force: true });
      await rename(tmp, target);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }
  return { args, target, dtype, topK, cached };
}

export async function loadModel(dir: string, opts: LoadOptions = {}): Promise<Model> {
  dir = resolve(dir);
  const src = await openSource(dir, opts);
  let converted: Awaited<ReturnType<typeof convertSource>>;
  let codec: TextCodec;
  let args: ModelArgs;
  try {
    // (a block size that cannot work is refused before a conversion that would be wasted)
    args = opts.blockSize === undefined ? src.args : withBlockSize(src.args, opts.blockSize);
    // (and a tokenizer that cannot be read, before a conversion)
    codec = await src.codec();
    converted = await convertSource(dir, src, opts);
  } finally {
    await src.close();
  }
  const { target, dtype, topK, cached } = converted;
  const modelPath = join(target, 'model.onnx');
  const meta = JSON.parse(await readFile(join(target, 'meta.json'), 'utf8')) as { params: number };
  const runner = await OrtRunner.create(modelPath, {
    layers: args.numLayers,
    kvHeads: args.numKvHeads,
    headDim: args.headDim,
    vocab: args.vocabSize,
    topK: Math.min(topK, args.vocabSize),
  }, { threads: opts.threads, worker: opts.worker === 'auto' ? meta.params >= AUTO_WORKER_PARAMS : opts.worker, forwardTimeout: opts.forwardTimeout });
  return {
    id: isGguf(dir) ? ggufModelName(dir) : basename(opts.lora !== undefined ? resolve(opts.lora) : dir),
    dir,
    args,
    codec,
    special: codec.special,
    defaults: codec.generation,
    dtype,
    topK: Math.min(topK, args.vocabSize),
    params: meta.params,
    cached,
    forward: (reqs) => runner.forward(reqs),
    stats: runner.stats,
    close: () => runner.release(),
  };
}

/** The same model decoded with other blocks (the graph takes any visibility: only decoding changes). */
function withBlockSize(args: ModelArgs, n: number): ModelArgs {
  if (args.attention !== 'block_causal' && args.adapted === undefined) throw new OptionError('block_size', `block_size applies to block diffusion models (SDAR, Fast-dLLM v2, LLaDA2.0, BD3-LM, A2D bd3lm, models loaded with diffusion), not ${args.arch}${args.arch === 'bd3lm' ? ' without blocks' : ''}`);
  if (!Number.isInteger(n) || n < 1 || n > 4096) throw new OptionError('block_size', `block_size must be an integer in [1, 4096], got ${n}`);
  // (an A2D model given a block size is its bd3lm form: block-causal from position 0; a declared one too)
  if (args.adapted !== undefined) return { ...args, attention: 'block_causal', blockSize: n };
  // (Fast-dLLM v2 decodes in sub-blocks of 8: the largest divisor of the block up to 8)
  let sub = Math.min(8, n);
  while (n % sub !== 0) sub--;
  return { ...args, blockSize: n, ...(args.subBlock !== undefined ? { subBlock: sub } : {}) };
}

async function convertInChild(dir: string, opts: LoadOptions): Promise<void> {
  const { execFile } = await import('node:child_process');
  const tsx = import.meta.resolve('tsx');
  const script = fileURLToPath(new URL('./convert-child.ts', import.meta.url));
  const out = await new Promise<string>((res, rej) =>
    execFile(process.execPath, ['--import', tsx, script, dir, JSON.stringify(opts)], { maxBuffer: 1 << 20 }, (err, stdout, stderr) =>
      err && !stdout ? rej(new Error(`conversion failed: ${stderr.split('\n').slice(-3).join(' ')}`)) : res(stdout),
    ),
  );
  const r = JSON.parse(out) as { ok: boolean; code?: string; message?: string; peakRssBytes?: number };
  if (!r.ok) throw r.code ? new FormatError(r.code, r.message ?? 'conversion failed') : new Error(r.message ?? 'conversion failed');
  lastConversionPeakRss = r.peakRssBytes ?? 0;
}
