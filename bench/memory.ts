// Conversion memory and cache speed on a large generated bf16 checkpoint: converting to
// int8 streams tensor by tensor, so its peak memory should stay near the quantized size
// (never an fp32 copy of the model); a second load reads the cached graph + weights.
//
//   npx tsx bench/memory.ts [--hidden 2560 --layers 32 --ffn 6912 --vocab 32000] [--dtype int8]

import { rmSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { convertModel, lastConversionPeakRss, loadModel } from '../src/models/registry.ts';
import { ensureFixture, fmt, modelShape, paramCount, parseArgs } from './common.ts';

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  if (a.child === 'load') {
    // child: load from the cache and report
    const t0 = performance.now();
    await loadModel(a.dir, { dtype: a.dtype as 'int8', cacheDir: a.cache, threads: 2 });
    const ms = performance.now() - t0;
    process.stdout.write(JSON.stringify({ ms, peak: process.resourceUsage().maxRSS * 1024 }));
    return;
  }
  const shape = modelShape(a, { hidden: 2560, ffn: 6912, layers: 32 });
  const { D, layers, Fi, V } = shape;
  const dtype = (a.dtype ?? 'int8') as 'int8' | 'int4';
  const dir = join(tmpdir(), `quench-bench-big-${D}x${layers}x${Fi}x${V}`);
  const cache = join(tmpdir(), 'quench-bench-big-cache');
  await ensureFixture(dir, 'llada', shape, { shards: 4 });
  const params = paramCount(shape).total;
  rmSync(cache, { recursive: true, force: true });
  const t0 = performance.now();
  const r = await convertModel(dir, { dtype, cacheDir: cache, isolate: true });
  const convertMs = performance.now() - t0;
  const convPeak = lastConversionPeakRss;
  const size = statSync(join(r.target, 'weights.bin')).size;
  const self = fileURLToPath(import.meta.url);
  const tsx = import.meta.resolve('tsx');
  const load = JSON.parse(execFileSync(process.execPath, ['--import', tsx, self, '--child', 'load', '--dir', dir, '--dtype', dtype, '--cache', cache], { maxBuffer: 1 << 20 }).toString()) as { ms: number; peak: number };
  const GiB = 2 ** 30;
  console.log(`checkpoint: ${(params / 1e9).toFixed(2)}B parameters, bf16 ${(params * 2 / GiB).toFixed(2)} GiB in 4 shards; ${dtype} weights file ${(size / GiB).toFixed(2)} GiB (embedding and norms stay fp32)`);
  console.log('\n| step | time | peak RSS | vs quantized size |');
  console.log('|---|---:|---:|---:|');
  console.log(`| convert bf16 -> ${dtype} (child process, streaming) | ${fmt(convertMs / 1000)} s | ${fmt(convPeak / GiB, 2)} GiB | ${fmt(convPeak / size, 2)}x |`);
  console.log(`| load from the cache (fresh process, ORT session ready) | ${fmt(load.ms / 1000)} s | ${fmt(load.peak / GiB, 2)} GiB | ${fmt(load.peak / size, 2)}x |`);
  console.log(`\nsecond load / first load (convert + load): ${fmt((load.ms / (convertMs + load.ms)) * 100, 0)}%`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
