// What `--dtype auto` picks: fp32 for small models, int8 above, int4 where the int8 weights would
// crowd the machine's memory. The size estimate it decides by is checked against the oracle of
// the converted weight files themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { parseConfig, loadConfig } from '../src/formats/config.ts';
import { writeFixture, type FixtureOptions } from '../src/formats/fixtures.ts';
import { AUTO_MEMORY_SHARE, machineMemory, resolveDtype, weightBytes } from '../src/models/dtype.ts';
import { convertModel } from '../src/models/registry.ts';
import { CACHE, tempDir } from './helpers.ts';

const GiB = 2 ** 30;

test('weightBytes matches the converted weight file in each format (dense, GQA, mixture of experts) within 6 %', async () => {
  const cases: FixtureOptions[] = [
    { arch: 'llada', hidden: 256, heads: 4, layers: 2, maxPositions: 64 },
    { arch: 'qwen2', hidden: 256, heads: 8, kvHeads: 1, layers: 2, maxPositions: 64 },
    // (heads x head size wider than the model: Qwen3's layouts)
    { arch: 'qwen3', hidden: 256, heads: 8, kvHeads: 2, headDim: 64, layers: 2, maxPositions: 64 },
    { arch: 'llada_moe', hidden: 256, heads: 4, layers: 2, experts: 8, expertsPerToken: 2, expertSize: 128, maxPositions: 64 },
  ];
  for (const o of cases) {
    const dir = await tempDir(`quench-dtype-${o.arch}-`);
    await writeFixture(dir, o);
    const { args } = await loadConfig(dir);
    const sizes: Record<string, number> = {};
    for (const dtype of ['fp32', 'int8', 'int4'] as const) {
      const { target } = await convertModel(dir, { dtype, cacheDir: CACHE });
      const real = statSync(join(target, 'weights.bin')).size;
      sizes[dtype] = real;
      const est = weightBytes(args, dtype);
      assert.ok(Math.abs(est / real - 1) < 0.06, `${o.arch} ${dtype}: estimated ${est} bytes, the file has ${real}`);
    }
    assert.ok(sizes.fp32 > sizes.int8 && sizes.int8 > sizes.int4, `${o.arch}: formats shrink the file ${JSON.stringify(sizes)}`);
  }
});

test('auto: fp32 below 100M linear parameters whatever the memory, int8 above, int4 when int8 would take over 70 % of the memory; an explicit dtype is kept', async () => {
  const dir = await tempDir('quench-dtype-cfg-');
  await writeFixture(dir, { arch: 'llada', hidden: 32, heads: 4, layers: 1 });
  const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  // LLaDA-8B's shape: 32 layers of 4096 (MHA), SwiGLU 12288, vocab 126464
  const big = parseConfig({ ...raw, d_model: 4096, n_layers: 32, n_heads: 32, n_kv_heads: 32, mlp_hidden_size: 12288, vocab_size: 126464, embedding_size: 126464, max_sequence_length: 4096 });
  // (independent count: 32 x (4 x 4096^2 + 3 x 4096 x 12288) linear weights at one byte, the
  // embedding at four bytes and the head at one; the scales add 0.1 %)
  const int8 = weightBytes(big, 'int8');
  assert.ok(Math.abs(int8 / (32 * (4 * 4096 ** 2 + 3 * 4096 * 12288) + 5 * 126464 * 4096) - 1) < 0.002, `${int8}`);
  assert.deepEqual(resolveDtype('auto', big, 64 * GiB), { dtype: 'int8', why: null });
  assert.equal(resolveDtype('auto', big, 16 * GiB).dtype, 'int8'); // (8.9 GiB < 11.2)
  const small = resolveDtype('auto', big, 12 * GiB); // (8.9 GiB > 8.4)
  assert.equal(small.dtype, 'int4');
  assert.match(small.why!, /int8 weights \(8\.9 GiB\) would take more than 70 % of this machine's 12\.0 GiB; int4 \(/);
  // the boundary, either side
  assert.equal(resolveDtype('auto', big, int8 / AUTO_MEMORY_SHARE).dtype, 'int8');
  assert.equal(resolveDtype('auto', big, int8 / AUTO_MEMORY_SHARE - 1024).dtype, 'int4');
  for (const dtype of ['fp32', 'int8', 'int4'] as const) assert.deepEqual(resolveDtype(dtype, big, 1 * GiB), { dtype, why: null });
  const tiny = parseConfig(raw);
  assert.equal(resolveDtype('auto', tiny, 1).dtype, 'fp32');
});

test('machineMemory is positive and never above os.totalmem(); a cgroup limit on the process\'s own cgroup or an ancestor (v2 or v1) lowers it, "max" and v1\'s no-limit value do not', async () => {
  const m = machineMemory();
  assert.ok(m > 0 && m <= totalmem(), `${m} vs ${totalmem()}`);
  const fake = async (files: Record<string, string>) => {
    const root = await tempDir('quench-cgroup-');
    for (const [f, text] of Object.entries(files)) {
      await mkdir(dirname(join(root, f)), { recursive: true });
      await writeFile(join(root, f), text);
    }
    return machineMemory(root);
  };
  const small = Math.floor(totalmem() / 4);
  // v2: the limit sits on a parent of the process's cgroup
  assert.equal(await fake({ 'proc/self/cgroup': '0::/a/b\n', 'sys/fs/cgroup/memory.max': 'max\n', 'sys/fs/cgroup/a/memory.max': `${small}\n`, 'sys/fs/cgroup/a/b/memory.max': 'max\n' }), small);
  // v1: the memory controller's line; the root's near-2^63 value is no limit
  assert.equal(await fake({ 'proc/self/cgroup': '5:devices:/x\n4:memory:/process_api/42\n0::/\n', 'sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n', 'sys/fs/cgroup/memory/process_api/42/memory.limit_in_bytes': `${small}\n` }), small);
  // a limit on a sibling or a child of the process's cgroup does not bind it; several controllers
  // on one v1 line; a trailing slash; a path out of the namespace's view is not followed
  assert.equal(await fake({ 'proc/self/cgroup': '0::/a/b/\n', 'sys/fs/cgroup/a/c/memory.max': `${small}\n`, 'sys/fs/cgroup/a/b/d/memory.max': `${small}\n` }), totalmem());
  assert.equal(await fake({ 'proc/self/cgroup': '3:cpu,memory:/x\n', 'sys/fs/cgroup/memory/x/memory.limit_in_bytes': `${small}\n` }), small);
  assert.equal(await fake({ 'proc/self/cgroup': '0::/../../y\n', 'sys/y/memory.max': `${small}\n` }), totalmem());
  // a container's namespaced root file; nothing readable: the machine's memory
  assert.equal(await fake({ 'sys/fs/cgroup/memory.max': `${small}\n` }), small);
  assert.equal(await fake({ 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/memory.max': 'max\n' }), totalmem());
});
