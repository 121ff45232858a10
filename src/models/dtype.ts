// The weight format `auto` picks for a model on this machine: fp32 for small models (fast enough
// and exact), int8 above, and int4 where the int8 weights would crowd the machine's memory (a
// 16B mixture such as LLaDA2.0-mini takes ~18 GiB in int8, ~11 GiB in int4). The memory is the
// smaller of the machine's and the cgroup's limit (a container sees the host's in os.totalmem).

import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { feedForwardParams, type ModelArgs } from '../formats/config.ts';
import type { WeightFormat } from '../runtime/quant.ts';
import { expertEncoding } from './transformer.ts';

export type DTypeOption = WeightFormat | 'auto';

/** Below this many parameters fp32 is fast enough and exact; above it int8 pays. */
export const AUTO_INT8_PARAMS = 100_000_000;

/** The share of the memory the int8 weights may take before auto picks int4 (the rest: the
 *  KV caches, the activations, the OS). */
export const AUTO_MEMORY_SHARE = 0.7;

/** Parameters of the transformer blocks' linear layers (what int8 quantizes): q, k and v (grouped
 *  heads count their own), the output projection, all experts of a mixture. */
export function linearParams(args: ModelArgs): number {
  const { hiddenSize: D, numHeads: H, numKvHeads: KV, headDim } = args;
  const attention = D * (H + 2 * KV) * headDim + H * headDim * D;
  let n = 0;
  for (let l = 0; l < args.numLayers; l++) n += attention + feedForwardParams(args, l);
  return n;
}

/** Bytes of the converted weights in a format: dense linear layers at 4, 1 or 0.5 bytes a weight
 *  (plus their scales: int4's 4 bytes per block of 32), experts as QMoE stores them (int8 in blocks of 32
 *  also adds 4 bytes per 32), routers in fp32, the embedding in fp32, the head in int8 unless
 *  fp32. (The RoPE tables and norms, a few MB at most, are left out.) */
export function weightBytes(args: ModelArgs, format: WeightFormat): number {
  // (int8's per-channel scales: 4 bytes per column of about D weights)
  const dense = format === 'fp32' ? 4 : format === 'int8' ? 1 + 4 / args.hiddenSize : 0.5 + 4 / 32;
  let experts = 0, routers = 0, expertBytes = 0;
  const m = args.moe;
  if (m) {
    const { bits, block } = expertEncoding(args.hiddenSize, m.expertSize, format);
    expertBytes = bits / 8 + (bits === 32 ? 0 : block ? 4 / block : 4 / m.expertSize);
    for (let l = 0; l < args.numLayers; l++)
      if (m.layers[l]) (experts += 3 * args.hiddenSize * m.experts * m.expertSize), (routers += args.hiddenSize * m.experts);
  }
  const table = args.vocabSize * args.hiddenSize;
  return (linearParams(args) - experts - routers) * dense + experts * expertBytes + 4 * routers + 4 * table + (format === 'fp32' ? 4 : 1) * table;
}

/**
 * This machine's memory in bytes: os.totalmem(), or a cgroup's limit where that is lower: the
 * process's own cgroup and its ancestors (from /proc/self/cgroup: v2's "0::/path", v1's memory
 * controller line), v2 memory.max / v1 memory.limit_in_bytes ("max" and v1's near-2^63 "no
 * limit" are not limits). `root` is for tests.
 */
export function machineMemory(root = '/'): number {
  const read = (file: string): string | null => {
    try {
      return readFileSync(join(root, file), 'utf8');
    } catch {
      return null; // (no such cgroup file here)
    }
  };
  const files = ['sys/fs/cgroup/memory.max', 'sys/fs/cgroup/memory/memory.limit_in_bytes'];
  for (const line of (read('proc/self/cgroup') ?? '').split('\n')) {
    const m = /^\d+:([^:]*):(\/.*)$/.exec(line);
    // (a path out of the namespace's view ("/../x") names nothing to read here)
    if (!m || m[2].split('/').includes('..')) continue;
    const [, controllers, raw] = m;
    const path = raw.replace(/\/+$/, '') || '/';
    const v2 = controllers === '';
    if (!v2 && !controllers.split(',').includes('memory')) continue;
    // (the cgroup and each ancestor: a parent's limit binds its children)
    for (let p = path; p !== '/' && p !== ''; p = p.slice(0, p.lastIndexOf('/')) || '/')
      files.push(v2 ? `sys/fs/cgroup${p}/memory.max` : `sys/fs/cgroup/memory${p}/memory.limit_in_bytes`);
  }
  let bytes = totalmem();
  for (const f of files) {
    const limit = Number((read(f) ?? '').trim()); // ("max" -> NaN, "" -> 0)
    if (Number.isFinite(limit) && limit > 0) bytes = Math.min(bytes, limit);
  }
  return bytes;
}

/** The format to convert to, and why when auto chose int4 for memory (null otherwise). */
export function resolveDtype(dtype: DTypeOption, args: ModelArgs, memory = machineMemory()): { dtype: WeightFormat; why: string | null } {
  if (dtype !== 'auto') return { dtype, why: null };
  if (linearParams(args) < AUTO_INT8_PARAMS) return { dtype: 'fp32', why: null };
  const int8 = weightBytes(args, 'int8');
  if (int8 <= AUTO_MEMORY_SHARE * memory) return { dtype: 'int8', why: null };
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const int4 = weightBytes(args, 'int4');
  const tight = int4 > AUTO_MEMORY_SHARE * memory ? `; even these take more than ${AUTO_MEMORY_SHARE * 100} % of it, expect swapping` : '';
  return { dtype: 'int4', why: `auto: int8 weights (${gib(int8)}) would take more than ${AUTO_MEMORY_SHARE * 100} % of this machine's ${gib(memory)}; int4 (${gib(int4)}) instead, slower per forward than int8 above a few rows (--dtype int8 to insist)${tight}` };
}
