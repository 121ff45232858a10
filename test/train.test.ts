// The training recipe end to end: a few steps of each model on the tiny data set, export,
// load in quench, generate. Needs PyTorch for /usr/bin/python3 (.ci/run installs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../src/models/registry.ts';
import { generate } from '../src/decode/generation.ts';
import { CACHE, tempDir } from './helpers.ts';

const PY = '/usr/bin/python3';

function py(args: string[]) {
  execFileSync(PY, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
}

for (const kind of ['diffusion', 'ar'] as const) {
  test(`train a few steps of the ${kind} model, export, load in quench, generate`, async () => {
    const work = await tempDir(`quench-train-${kind}-`);
    const run = join(work, 'run');
    const out = join(work, 'model');
    py(['train/train.py', '--kind', kind, '--tiny', '--steps', '4', '--minutes', '1', '--threads', '1', '--out', run]);
    assert.ok(existsSync(join(run, 'ckpt.pt')), 'checkpoint written');
    py(['train/export.py', '--ckpt', join(run, 'ckpt.pt'), '--kind', kind, '--out', out]);
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'README.md']) assert.ok(existsSync(join(out, f)), f);
    assert.ok(statSync(join(out, 'model.safetensors')).size < 40 * 2 ** 20);
    const model = await loadModel(out, { cacheDir: CACHE, threads: 1 });
    assert.equal(model.args.arch, kind === 'diffusion' ? 'llada' : 'llama');
    const prompt = model.codec.encodeChat([{ role: 'user', content: 'What is 27 + 58?' }]);
    const r = await generate(model, prompt, { maxTokens: 16, blockLength: 8, policy: 'low_confidence', stopTokens: [] });
    assert.equal(r.tokens.length, 16);
    assert.ok(r.tokens.every((t) => t >= 0 && t < model.args.vocabSize && t !== model.special.mask));
    assert.equal(typeof model.codec.decode(r.tokens), 'string');
    await model.close();
  });
}
