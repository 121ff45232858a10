// Conversion memory and cache speed on a large generated bf16 checkpoint: converting to
// int8 streams tensor by tensor, so its peak memory should stay near the quantized size
// (never an fp32 copy of the model); a second load reads the cached graph + weights.
//
//   npx tsx bench/memory.ts [--hidden 2560 --layers 32 --ffn 6912 --vocab 32000] [--dtype int8]

import { existsSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { writeFixture } from '../src/formats/fixtures.ts';
import { convertModel, lastConversionPeakRss } from '../src/models/registry.ts';
import { parseArgs, fmt } from './common.ts';

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  if (a.child === 'load') {
    // child: load from the cache and report
    const { loadModel } = await import('../src/models/registry.ts');
    const t0 = performance.now();
    const m = await loadModel(a.dir, { dtype: a.dtype as 'int8', cacheDir: a.cache, threads: 2 });
    const ms = performance.now() - t0;
    process.stdout.write(JSON.stringify({ ms, cached: m.cached, peak: process.resourceUsage().maxRSS * 1024 }));
    return;
  }
  const D = Number(a.hidden ?? 2560);
  const layers = Number(a.layers ?? 32);
  const Fi = Number(a.ffn ?? 6912);
  const V = Number(a.vocab ?? 32000);
  const dtype = (a.dtype ?? 'int8') as 'int8' | 'int4';
  const dir = join(tmpdir(), `quench-bench-big-${D}x${layers}x${Fi}x${V}`);
  const cache = join(tmpdir(), 'quench-bench-big-cache');
  if (!existsSync(join(dir, 'config.json'))) {
    console.error(`writing a random bf16 LLaDA-layout checkpoint to ${dir} ...`);
    await writeFixture(dir, { arch: 'llada', hidden: D, layers, heads: D / 64, intermediate: Fi, vocab: V, dtype: 'BF16', std: 0.02, shards: 4 });
  }
  const params = layers * (4 * D * D + 3 * D * Fi) + 2 * V * D;
  execFileSync('rm', ['-rf', cache]);
  const t0 = performance.now();
  const r = await convertModel(dir, { dtype, cacheDir: cache, isolate: true });
  const convertMs = performance.now() - t0;
  const convPeak = lastConversionPeakRss;
  const size = statSync(join(r.target, 'weights.bin')).size;
  const self = fileURLToPath(import.meta.url);
  const tsx = import.meta.resolve('tsx');
  const load = JSON.parse(execFileSync(process.execPath, ['--import', tsx, self, '--child', 'load', '--dir', dir, '--dtype', dtype, '--cache', cache], { maxBuffer: 1 << 20 }).toString()) as { ms: number; cached: boolean; peak: number };
  const GiB = 2 ** 30;
  console.log(`checkpoint: ${(params / 1e9).toFixed(2)}B parameters, bf16 ${(params * 2 / GiB).toFixed(2)} GiB in 4 shards; ${dtype} weights file ${(size / GiB).toFixed(2)} GiB (embedding and norms stay fp32)`);
  console.log('\n| step | time | peak RSS | vs quantized size |');
  console.log('|---|---:|---:|---:|');
  console.log(`| convert bf16 -> ${dtype} (child process, streaming) | ${fmt(convertMs / 1000)} s | ${fmt(convPeak / GiB, 2)} GiB | ${fmt(convPeak / size, 2)}x |`);
  console.log(`| load from the cache (fresh process, ORT session ready) | ${fmt(load.ms / 1000)} s | ${fmt(load.peak / GiB, 2)} GiB | ${fmt(load.peak / size, 2)}x |`);
  console.log(`\nsecond load / first load (convert + load): ${fmt((load.ms / (convertMs + load.ms)) * 100, 0)}%`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
