// `quench show`: a model described from its files. The parameter count is computed from the
// config; the oracle is the sum of the checkpoint's own tensor shapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cardLicense, describe, parameterCount } from '../src/cli/show.ts';
import { loadConfig } from '../src/formats/config.ts';
import { Checkpoint } from '../src/formats/safetensors.ts';
import { writeFixture, writeGgufFromFixture, type FixtureArch } from '../src/formats/fixtures.ts';
import { tempDir } from './helpers.ts';
import { writeFile } from 'node:fs/promises';
import { openGguf } from '../src/formats/gguf.ts';
import { argsOf } from '../src/models/gguf.ts';

async function tensorParams(dir: string): Promise<number> {
  const ck = await Checkpoint.open(dir);
  try {
    return ck.names().reduce((s, n) => s + ck.info(n).shape.reduce((a, b) => a * b, 1), 0);
  } finally {
    await ck.close();
  }
}

test('parameter count from the config equals the tensors in the checkpoint (every layout, and the bundled models)', async () => {
  const dirs: string[] = ['models/quench-tiny', 'models/quench-tiny-ar', 'models/quench-tiny-bd'];
  for (const arch of ['llada', 'dream', 'sdar', 'fast_dllm_v2', 'llama', 'qwen2', 'qwen3'] as FixtureArch[]) {
    const dir = await tempDir(`quench-show-${arch}-`);
    await writeFixture(dir, { arch, hidden: 32, heads: 4, kvHeads: 2, layers: 2, std: 0.3 });
    dirs.push(dir);
  }
  // LLaDA-MoE: a dense layer, a shared expert
  const moe = await tempDir('quench-show-llada_moe-');
  await writeFixture(moe, { arch: 'llada_moe', hidden: 32, heads: 4, kvHeads: 2, layers: 3, experts: 5, expertsPerToken: 2, expertSize: 16, sharedSize: 24, moeLayers: [0, 1, 1] });
  dirs.push(moe);
  // LLaDA2.0: fused qkv, expert biases, shared experts, a dense first layer
  const l2 = await tempDir('quench-show-llada2-');
  await writeFixture(l2, { arch: 'llada2', hidden: 32, heads: 4, kvHeads: 2, layers: 3, experts: 8, expertsPerToken: 2, expertSize: 16, sharedExperts: 2, groups: 4, groupsKept: 2 });
  dirs.push(l2);
  for (const dir of dirs) {
    const { args } = await loadConfig(dir);
    assert.equal(parameterCount(args), await tensorParams(dir), dir);
  }
  // active per token: 3 of the 5 experts' weights left out in each of the 2 mixtures, and the
  // input embedding (untied)
  const { args } = await loadConfig(moe);
  assert.equal(parameterCount(args) - parameterCount(args, true), 2 * 3 * 3 * 32 * 16 + args.vocabSize * 32);
  assert.match(await describe(moe), /experts\s+5 of 16 per mixture, 2 per token, a shared expert of 24; 2 of 3 layers/);
});

test('quench show: the bundled block model, a GGUF file, and the license of a model card', async () => {
  const cfg = JSON.parse(readFileSync('models/quench-tiny-bd/config.json', 'utf8'));
  const out = execFileSync(process.execPath, ['bin/quench.js', 'show', 'quench-tiny-bd'], { encoding: 'utf8' });
  const field = (text: string, k: string) => new RegExp(`^\\s+${k}\\s+(.+)$`, 'm').exec(text)?.[1];
  assert.equal(field(out, 'architecture'), 'fast_dllm_v2');
  assert.equal(field(out, 'context length'), String(cfg.max_position_embeddings));
  assert.equal(field(out, 'parameters'), `${(await tensorParams('models/quench-tiny-bd') / 1e6).toFixed(1)}M`);
  assert.match(field(out, 'attention')!, new RegExp(`^block-causal, blocks of ${cfg.bd_size}`));
  // (15.7M parameters: auto keeps fp32, 4 bytes a weight and the fp32 embedding and head)
  assert.match(field(out, 'auto dtype')!, /^fp32, 6\d\.\d MB of weights \(this machine: [\d.]+ GiB\)$/);
  assert.match(out, /max_tokens 64, threshold 0\.95, in_order true, lead_token false/);
  assert.match(out, /sub-blocks of 4; a block's first token with the others/);
  assert.match(out, /King James Bible \(public domain\)\./);

  const hf = await tempDir('quench-show-gguf-');
  await writeFixture(hf, { arch: 'llada', hidden: 32, heads: 2, layers: 1, std: 0.3 });
  const file = join(hf, 'm-Q8_0.gguf');
  await writeGgufFromFixture(hf, file, 8);
  const g = await describe(file);
  assert.equal(field(g, 'architecture'), 'llada');
  assert.match(field(g, 'weights')!, /^GGUF, .*Q8_0 x \d+/);
  const gf = await openGguf(file);
  try {
    assert.equal(parameterCount(argsOf(gf.metadata, new Set(gf.tensors.keys()))), await tensorParams(hf), 'the GGUF holds the same model');
  } finally {
    await gf.close();
  }
  // a causal model has no threshold default; a broken generation_config.json is shown, not fatal
  const ar = await tempDir('quench-show-ar-');
  await writeFixture(ar, { arch: 'llama', hidden: 32, heads: 2, layers: 1, std: 0.3, tied: true });
  assert.equal(parameterCount((await loadConfig(ar)).args), await tensorParams(ar), 'tied head');
  await writeFile(join(ar, 'generation_config.json'), JSON.stringify({ top_p: 1.5 }));
  const a = await describe(ar);
  assert.match(a, /invalid: generation_config\.json: top_p must be in \(0, 1\]/);
  await writeFile(join(ar, 'generation_config.json'), '{}');
  assert.match(await describe(ar), /none: the engine's own \(greedy, one token per step\)/);

  assert.equal(cardLicense('---\nlicense: apache-2.0\ntags: [x]\n---\n# m\n'), 'apache-2.0');
  assert.equal(cardLicense('# m\n\n## Licenses\n\nMIT for code;\nCC-BY for data.\n\n## Next\n'), 'MIT for code; CC-BY for data.');
  assert.equal(cardLicense('# m\n\nno license section\n'), null);
  assert.equal(cardLicense('---\nlicense: "mit"\n---\n'), 'mit');
  assert.equal(cardLicense('---\nlicense:\n  - apache-2.0\n  - mit\n---\n'), 'apache-2.0');
  assert.equal(cardLicense('---\nlicense:\ntags: [x]\n---\n# m\n'), null, 'an empty value is no license (nor the next key)');
  assert.equal(cardLicense('# m\n\n# Licensing\n\nCC0.\n'), 'CC0.');
  assert.equal(cardLicense('# m\n\n## License: MIT\n\nSee LICENSE.\n'), 'MIT: See LICENSE.');
});
