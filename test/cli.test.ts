// The quench command as a user runs it (piped, so plain text).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFixture } from '../src/formats/fixtures.ts';
import { CACHE, tempDir } from './helpers.ts';

const env = { ...process.env, QUENCH_CACHE: CACHE, QUENCH_MODELS: '/nonexistent' };
const quench = (args: string[], input?: string) => execFileSync(process.execPath, ['bin/quench.js', ...args], { env, input, timeout: 120_000 }).toString();

test('quench list shows every bundled model directory', () => {
  const out = quench(['list']);
  const bundled = existsSync('models') ? readdirSync('models').filter((d) => existsSync(join('models', d, 'config.json'))) : [];
  for (const name of bundled) assert.match(out, new RegExp(`^${name}\\s+bundled`, 'm'));
  if (bundled.length === 0) assert.match(out, /no models found/);
});

test("the README's first command on the bundled default model: 27 + 58 is 85, and it sorts", () => {
  assert.equal(quench(['run', 'What is 27 + 58?']).trim(), String(27 + 58));
  assert.equal(quench(['run', 'Sort these numbers: 9, 2, 7']).trim(), [9, 2, 7].sort((a, b) => a - b).join(', '));
});

test('--generation-config: the model\'s file (auto), none, or another file', async () => {
  const dir = await tempDir('quench-cli-gc-');
  await writeFixture(dir, { arch: 'llada', hidden: 32, heads: 2, layers: 1, favourToken: 97, maxPositions: 64 });
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ max_new_tokens: 3 }));
  const other = join(dir, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'generation_config.json'), JSON.stringify({ max_new_tokens: 5 }));
  const prompt = 'hi';
  assert.equal(quench(['run', '--model', dir, prompt]), 'aaa\n');
  assert.equal(quench(['run', '--model', dir, '--generation-config', other, prompt]), 'aaaaa\n');
  assert.equal(quench(['run', '--model', dir, '--generation-config', join(other, 'generation_config.json'), prompt]), 'aaaaa\n');
  // none: the engine's budget (128, capped by the 64-position context after the prompt)
  const none = quench(['run', '--model', dir, '--generation-config', 'none', prompt]).trim();
  assert.ok(none.length > 5 && /^a+$/.test(none), none);
  assert.throws(() => quench(['run', '--model', dir, '--generation-config', join(dir, 'missing'), prompt]), /generation-config .*not found/);
  writeFileSync(join(other, 'generation_config.json'), JSON.stringify({ quench: { threshold: 3 } }));
  assert.throws(() => quench(['run', '--model', dir, '--generation-config', other, prompt]), /generation_config\.json: threshold/);
});

test('quench run: one prompt, and a piped chat of several turns', async () => {
  const dir = await tempDir('quench-cli-');
  // weights that make every position say "a" (byte-level id 97)
  await writeFixture(dir, { arch: 'llada', hidden: 64, heads: 4, layers: 2, favourToken: 97 });
  const one = quench(['run', '--model', dir, '--max-tokens', '8', '--stats', 'hello']);
  assert.equal(one, 'aaaaaaaa\n', 'the answer alone on stdout (stats go to stderr)');
  const chat = quench(['run', '--model', dir, '--max-tokens', '4'], 'first\nsecond\n/exit\n');
  assert.equal(chat, 'aaaa\naaaa\n', 'one answer per line of input');
  assert.throws(() => quench(['run', '--model', '/nonexistent/model', 'hi']), /not found/);
  // a model that only ever says "a" is held to JSON with --json (cut by max_tokens: a prefix
  // of an object) and to the schema with --json-schema (no free text in it: it ends)
  assert.match(quench(['run', '--model', dir, '--max-tokens', '8', '--json', 'hello']), /^\{/);
  const schemaFile = join(dir, 'schema.json');
  writeFileSync(schemaFile, JSON.stringify({ type: 'object', properties: { ok: { type: 'boolean' }, n: { enum: [1, 2] } } }));
  const doc = JSON.parse(quench(['run', '--model', dir, '--max-tokens', '32', '--json-schema', schemaFile, 'hello']));
  assert.deepEqual(Object.keys(doc), ['ok', 'n']);
  assert.ok(typeof doc.ok === 'boolean' && [1, 2].includes(doc.n));
});

test('a LoRA adapter: --lora beside its base, or alone as --model (the base from its adapter_config.json); show and list name it', async () => {
  const { Checkpoint, writeSafetensors } = await import('../src/formats/safetensors.ts');
  const base = await tempDir('quench-cli-lora-base-');
  await writeFixture(base, { arch: 'llada', hidden: 32, heads: 2, layers: 1, favourToken: 97, dtype: 'F32' });
  // an adapter that trained the head (modules_to_save): rows 97 ("a") and 98 ("b") swapped
  const ck = await Checkpoint.open(base);
  const head = 'model.transformer.ff_out.weight';
  const { shape } = ck.info(head);
  const w = await ck.readF32(head);
  await ck.close();
  const D = shape[1];
  const row97 = w.slice(97 * D, 98 * D);
  w.copyWithin(97 * D, 98 * D, 99 * D);
  w.set(row97, 98 * D);
  const models = await tempDir('quench-cli-models-');
  const ad = join(models, 'says-b');
  mkdirSync(ad);
  await writeSafetensors(join(ad, 'adapter_model.safetensors'), [{ name: `base_model.model.${head}`, dtype: 'F32', shape, data: new Uint8Array(w.buffer) }]);
  writeFileSync(join(ad, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, lora_alpha: 16, base_model_name_or_path: base, modules_to_save: ['ff_out'] }));
  const run = (args: string[]) => quench(['run', ...args, '--max-tokens', '4', 'hi']);
  assert.equal(run(['--model', base]), 'aaaa\n');
  assert.equal(run(['--model', base, '--lora', ad]), 'bbbb\n');
  assert.equal(run(['--model', ad]), 'bbbb\n');
  assert.match(quench(['show', ad]), /adapter\s+LoRA says-b: 1 tensors replaced \(model\.transformer\.ff_out\.weight\), merged at load/);
  const listed = execFileSync(process.execPath, ['bin/quench.js', 'list'], { env: { ...env, QUENCH_MODELS: models } }).toString();
  assert.match(listed, /^says-b\s+local\s.*\(LoRA adapter\)$/m);
  assert.equal(execFileSync(process.execPath, ['bin/quench.js', 'run', '--model', 'says-b', '--max-tokens', '2', 'hi'], { env: { ...env, QUENCH_MODELS: models } }).toString(), 'bb\n');
  assert.throws(() => run(['--model', ad, '--lora', ad]), /is a LoRA adapter: give its base model as --model/);
  // served beside the base under its own name (--lora-modules): a request picks it by its model field
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['bin/quench.js', 'serve', '--model', base, '--model-id', 'base', '--lora-modules', `says-b=${ad}`, '--port', '0', '--threads', '1'], {
    env: { ...env, QUENCH_API_KEY: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  try {
    // (--port 0: a free port, which the log names)
    for (let i = 0; i < 300 && !/listening on http:\/\/127\.0\.0\.1:\d+/.test(log); i++) await new Promise((r) => setTimeout(r, 100));
    const url = `http://127.0.0.1:${/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log)![1]}`;
    assert.notEqual(url, 'http://127.0.0.1:0');
    const ask = async (model: string) => {
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: 'hi', max_tokens: 4 }) }).catch(() => null);
      return r && { status: r.status, json: await r.json() };
    };
    let b = await ask('says-b');
    for (let i = 0; i < 300 && (!b || b.status === 503); i++) {
      await new Promise((r) => setTimeout(r, 100));
      b = await ask('says-b');
    }
    assert.equal(b?.status, 200, log);
    assert.equal(b.json.choices[0].text, 'bbbb');
    assert.equal(b.json.model, 'says-b');
    const a = await ask('base');
    assert.equal(a?.json.choices[0].text, 'aaaa');
    assert.equal((await ask('default'))?.json.choices[0].text, 'aaaa');
    const missing = await ask('says-c');
    assert.equal(missing?.status, 404);
    assert.match(missing.json.error.message, /this server serves "base", "says-b"/);
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string; parent: string | null }[] };
    assert.deepEqual(models.data.map((m) => [m.id, m.parent]), [['base', null], ['says-b', 'base']]);
  } finally {
    child.kill('SIGKILL');
  }
  assert.throws(() => quench(['serve', '--model', base, '--lora-modules', ad]), /--lora-modules takes name=adapter/);
  assert.throws(() => quench(['serve', '--model', base, '--lora-modules', JSON.stringify({ name: 'x', path: ad })]), /takes name=adapter \(not the JSON form\)/);
  assert.throws(() => quench(['serve', '--model', base, '--lora-modules', `${'n'.repeat(257)}=${ad}`]), /at most 256 characters/);
  assert.throws(() => quench(['serve', '--model', base, '--model-id', 'base', '--lora-modules', `base=${ad}`]), /the name "base" is taken \(the model's own id\)/);
  assert.throws(() => quench(['serve', '--model', base, '--lora-modules', `x=${base}`]), /is not a LoRA adapter/);
  // (some trainers save the base's config.json beside the adapter: still an adapter)
  copyFileSync(join(base, 'config.json'), join(ad, 'config.json'));
  assert.equal(run(['--model', ad]), 'bbbb\n');
  writeFileSync(join(ad, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', base_model_name_or_path: '/nonexistent/base' }));
  assert.throws(() => run(['--model', ad]), /adapter says-b is for "\/nonexistent\/base": .*not found/);
});

test('quench bench forward passes its options through and prints one row per row count', () => {
  const out = quench(['bench', 'forward', '--hidden', '64', '--layers', '1', '--ffn', '128', '--vocab', '300', '--rows', '1,4', '--threads', '1']);
  assert.match(out, /^\| 1 \|/m);
  assert.match(out, /^\| 4 \|/m);
  assert.match(out, /d_model 64, 1 layers/);
});

test('quench run chat: the next turn starts from the history (a causal model); the first answers as a one-turn run does', async () => {
  const { spawnSync } = await import('node:child_process');
  const dir = await tempDir('quench-cli-chat-');
  await writeFixture(dir, { arch: 'llama', hidden: 32, heads: 2, layers: 1, std: 0.3, maxPositions: 256 });
  const chat = (input: string) => spawnSync(process.execPath, ['bin/quench.js', 'run', '--model', dir, '--stats', '--max-tokens', '4'], { env, input, timeout: 120_000 });
  const two = chat('hello there\nand again\n');
  const stats = two.stderr.toString().split('\n').filter((l) => l.startsWith('['));
  assert.equal(stats.length, 2, two.stderr.toString());
  assert.doesNotMatch(stats[0], /cached/);
  const cached = Number(/, (\d+) prompt tokens cached/.exec(stats[1])?.[1]);
  assert.ok(cached >= 16, stats[1]);
  // (that a turn started from the history decodes as one run from scratch: test/prefix-cache.test.ts)
  const answers = two.stdout.toString().split('\n');
  assert.equal(answers.length, 3);
  const first = chat('hello there\n').stdout.toString().split('\n')[0];
  assert.equal(answers[0], first);
});
