// quench bench decode: tokens/s, forward passes and tokens per forward for each policy and
// cache mode on a generated LLaDA-layout model, and on block diffusion models of the same size
// (SDAR and Fast-dLLM v2 layouts), next to the causal (Llama-layout) model of the same size
// decoding one token per step with its KV cache: the baseline of every speed claim. Random
// weights: this measures speed only (quality comes from quench eval).
//
//   quench bench decode [--hidden 768 --layers 12 --ffn 2048 --vocab 32000] [--tokens 128]

import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadModel, type Model } from '../src/models/registry.ts';
import { generate } from '../src/decode/generation.ts';
import type { GenerateOptions } from '../src/decode/options.ts';
import { ensureFixture, fmt, median, modelShape, paramCount, parseArgs } from './common.ts';

async function measure(model: Model, prompt: number[], o: GenerateOptions, runs: number) {
  const tps: number[] = [];
  let last = { forwards: 0, tokens: 0 };
  for (let i = 0; i < runs + 1; i++) {
    const r = await generate(model, prompt, { ...o, stopTokens: [] });
    if (i === 0) continue; // warm-up
    tps.push((r.tokens.length / r.stats.elapsedMs) * 1000);
    last = { forwards: r.stats.forwards, tokens: r.tokens.length };
  }
  return { tps: median(tps), ...last };
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const shape = modelShape(a, { hidden: 768, ffn: 2048 });
  const { D, layers, Fi, V, threads } = shape;
  const tokens = Number(a.tokens ?? 128);
  const runs = Number(a.runs ?? 3);
  const base = join(tmpdir(), `quench-bench-decode-${D}x${layers}x${Fi}x${V}`);
  for (const arch of ['llada', 'llama'] as const) await ensureFixture(`${base}-${arch}`, arch, shape, { maxPositions: 4096 });
  await ensureFixture(`${base}-sdar`, 'sdar', shape, { maxPositions: 4096, blockSize: 4 });
  await ensureFixture(`${base}-fast_dllm_v2`, 'fast_dllm_v2', shape, { maxPositions: 4096, blockSize: 32 });
  const params = paramCount(shape).total;
  console.log(`models: d_model ${D}, ${layers} layers, ffn ${Fi}, vocab ${V} (${(params / 1e6).toFixed(0)}M parameters), ${tokens} new tokens after a 32-token prompt, threads ${threads}, median of ${runs} runs`);
  const prompt = Array.from({ length: 32 }, (_, i) => 300 + i);

  const ar = await loadModel(`${base}-llama`, { threads, dtype: (a.dtype as 'fp32') ?? 'fp32' });
  const baseline = await measure(ar, prompt, { maxTokens: tokens, cache: 'prefix' }, runs);
  await ar.close();
  console.log('\n| decoder | cache | tokens/s | forwards | tokens/forward | vs AR |');
  console.log('|---|---|---:|---:|---:|---:|');
  console.log(`| causal AR, 1 token/step | kv | ${fmt(baseline.tps)} | ${baseline.forwards} | ${fmt(baseline.tokens / baseline.forwards, 2)} | 1.00x |`);

  const dm = await loadModel(`${base}-llada`, { threads, dtype: (a.dtype as 'fp32') ?? 'fp32' });
  const block = 32;
  const configs: [string, GenerateOptions][] = [
    ['low_confidence, 1 token/step', { policy: 'low_confidence', steps: tokens }],
    ['low_confidence, 4 tokens/step', { policy: 'low_confidence', steps: tokens / 4 }],
    ['random, 4 tokens/step', { policy: 'random', steps: tokens / 4, seed: 1 }],
    ['margin, 4 tokens/step', { policy: 'margin', steps: tokens / 4 }],
    ['entropy, 4 tokens/step', { policy: 'entropy', steps: tokens / 4 }],
    ['threshold 0.9', { policy: 'threshold', threshold: 0.9 }],
    ['entropy_bounded gamma 1', { policy: 'entropy_bounded', gamma: 1 }],
    ['dream_maskgit_plus, 8 steps/block', { policy: 'dream_maskgit_plus', steps: (tokens / block) * 8 }],
  ];
  for (const [label, o] of configs) {
    for (const cache of ['none', 'prefix', 'dual'] as const) {
      const r = await measure(dm, prompt, { maxTokens: tokens, blockLength: block, cache, ...o }, runs);
      console.log(`| ${label} | ${cache} | ${fmt(r.tps)} | ${r.forwards} | ${fmt(r.tokens / r.forwards, 2)} | ${fmt(r.tps / baseline.tps, 2)}x |`);
    }
  }
  await dm.close();

  // block diffusion: blocks aligned to position 0, finished blocks cached exactly
  const blockModels: [string, string, [string, GenerateOptions][]][] = [
    ['sdar', 'SDAR layout, blocks of 4', [
      ['low_confidence, 1 token/step', { policy: 'low_confidence', steps: 4 }],
      ['low_confidence, 4 tokens/step', { policy: 'low_confidence', steps: 1 }],
    ]],
    ['fast_dllm_v2', 'Fast-dLLM v2 layout, blocks of 32, sub-blocks of 8', [
      ['low_confidence, 1 token/step', { policy: 'low_confidence', steps: 8 }],
      ['low_confidence, 4 tokens/step', { policy: 'low_confidence', steps: 2 }],
    ]],
  ];
  for (const [arch, what, cfgs] of blockModels) {
    const bm = await loadModel(`${base}-${arch}`, { threads, dtype: (a.dtype as 'fp32') ?? 'fp32' });
    for (const [label, o] of cfgs) {
      for (const cache of ['none', 'prefix'] as const) {
        const r = await measure(bm, prompt, { maxTokens: tokens, cache, ...o }, runs);
        console.log(`| ${what}: ${label} | ${cache} | ${fmt(r.tps)} | ${r.forwards} | ${fmt(r.tokens / r.forwards, 2)} | ${fmt(r.tps / baseline.tps, 2)}x |`);
      }
    }
    await bm.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
