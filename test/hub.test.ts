// quench pull against a local stand-in for the Hugging Face Hub: the HTTP API that
// @huggingface/hub speaks (model info, paginated tree listing, paths-info, resolve with
// ranges), serving repositories made of generated fixture checkpoints.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Fastify, { type FastifyInstance } from 'fastify';
import { writeFixture, writeGgufFromFixture, writeLoraFixture } from '../src/formats/fixtures.ts';
import { pull, cachedSnapshot, cachedModels, hubToken, parseModelRef, pickGguf, borrowedTokenizer } from '../src/models/hub.ts';
import { resolveModelEntry } from '../src/cli/paths.ts';
import { loadModel } from '../src/models/registry.ts';
import { generate } from '../src/decode/generation.ts';
import { HubError } from '../src/errors.ts';
import { CACHE, tempDir } from './helpers.ts';

interface Repo {
  sha: string;
  files: Map<string, Buffer>;
  gated?: boolean;
  /** lie about this file's size in listings */
  wrongSize?: string;
  /** serve this file with one byte changed (its listed hash stays the original's) */
  corrupt?: string;
  /** paths-info gives this content hash for every file */
  evilHash?: string;
  /** tags -> this repo's commit */
  tags?: string[];
  /** this file's download answers 500 */
  broken?: string;
  /** this file's body stops half-way (the connection drops) */
  cut?: string;
}

const repos = new Map<string, Repo>();
const bodies: string[] = []; // files whose whole body was served
let hub: FastifyInstance;
let url = '';
let fixtureDir = '';
let ggufDir = '';

const sha1 = (b: Buffer | string) => createHash('sha1').update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// as the Hub lists files: git's blob sha1 as oid; LFS files (weights) with their sha256 and size
function entry(r: Repo, path: string) {
  const b = r.files.get(path)!;
  const size = path === r.wrongSize ? b.length + 1 : b.length;
  const big = path.endsWith('.safetensors') || path.endsWith('.bin') || path.endsWith('.gguf');
  const gitOid = sha1(Buffer.concat([Buffer.from(`blob ${b.length}\0`), b]));
  return { type: 'file', path, size, oid: r.evilHash ?? gitOid, ...(big ? { lfs: { oid: r.evilHash ?? sha256(b), size, pointerSize: 134 } } : {}) };
}

async function repoOf(dir: string, names: string[], extra: Record<string, string> = {}): Promise<Map<string, Buffer>> {
  const m = new Map<string, Buffer>();
  for (const n of names) m.set(n, readFileSync(join(dir, n)));
  for (const [k, v] of Object.entries(extra)) m.set(k, Buffer.from(v));
  return m;
}

before(async () => {
  // hermetic: no token from this machine's environment or saved login
  delete process.env.HF_TOKEN;
  process.env.HF_TOKEN_PATH = '/nonexistent/quench-test-token';
  fixtureDir = await tempDir('quench-hub-src-');
  await writeFixture(fixtureDir, { arch: 'llada', shards: 2, seed: 5 });
  const names = readdirSync(fixtureDir);
  assert.ok(names.includes('model.safetensors.index.json'), 'a sharded fixture');
  repos.set('quench-test/llada-tiny', {
    sha: sha1('llada-tiny-commit'),
    files: await repoOf(fixtureDir, names, { 'README.md': '# tiny', 'LICENSE': 'Apache-2.0', 'pytorch_model.bin': 'not wanted', 'modeling_llada.py': '# code', 'onnx/model.onnx': 'not wanted' }),
    tags: ['v1', 'refs/pr/1'],
    broken: 'LICENSE',
  });
  repos.set('quench-test/gated', { sha: sha1('gated'), files: await repoOf(fixtureDir, names), gated: true });
  repos.set('quench-test/bin-only', { sha: sha1('bin'), files: await repoOf(fixtureDir, ['config.json', 'tokenizer.json'], { 'pytorch_model.bin': 'weights' }) });
  repos.set('quench-test/liar', { sha: sha1('liar'), files: await repoOf(fixtureDir, names), wrongSize: 'tokenizer.json' });
  const shard = names.find((n) => n.endsWith('.safetensors'))!;
  repos.set('quench-test/corrupt', { sha: sha1('corrupt'), files: await repoOf(fixtureDir, names), corrupt: shard });
  repos.set('quench-test/cut', { sha: sha1('cut'), files: await repoOf(fixtureDir, names), cut: shard });
  repos.set('quench-test/evil-hash', { sha: sha1('evil'), files: await repoOf(fixtureDir, names), evilHash: '../../../../tmp/quench-evil' });
  const index = JSON.parse(readFileSync(join(fixtureDir, 'model.safetensors.index.json'), 'utf8'));
  for (const k of Object.keys(index.weight_map)) index.weight_map[k] = '../escape.safetensors';
  repos.set('quench-test/evil-index', { sha: sha1('evil-index'), files: await repoOf(fixtureDir, names.filter((n) => n !== 'model.safetensors.index.json'), { 'model.safetensors.index.json': JSON.stringify(index) }) });

  // a LoRA adapter repository as PEFT pushes one: adapter files, a README, the pickled twin
  const loraDir = await tempDir('quench-hub-lora-');
  await writeLoraFixture(loraDir, fixtureDir, { targets: ['q_proj', 'v_proj'], seed: 3 });
  const loraCfg = JSON.parse(readFileSync(join(loraDir, 'adapter_config.json'), 'utf8'));
  repos.set('quench-test/llada-tiny-lora', {
    sha: sha1('lora'),
    // (with the base's config.json beside it, as some trainers save one)
    files: await repoOf(loraDir, ['adapter_model.safetensors'], { 'adapter_config.json': JSON.stringify({ ...loraCfg, base_model_name_or_path: 'quench-test/llada-tiny' }), 'config.json': readFileSync(join(fixtureDir, 'config.json'), 'utf8'), 'README.md': '# adapter', 'adapter_model.bin': 'pickle', 'training_args.bin': 'pickle' }),
  });
  // one whose config names a path on the puller's machine (here: a real model directory)
  repos.set('quench-test/path-lora', { sha: sha1('path-lora'), files: await repoOf(loraDir, ['adapter_model.safetensors'], { 'adapter_config.json': JSON.stringify({ ...loraCfg, base_model_name_or_path: fixtureDir }) }) });
  repos.set('quench-test/lora-bin-only', { sha: sha1('lora-bin'), files: await repoOf(loraDir, [], { 'adapter_config.json': '{}', 'adapter_model.bin': 'pickle' }) });

  // a GGUF-only repository (as llama.cpp model repositories are): several quantizations
  ggufDir = await tempDir('quench-hub-gguf-');
  await writeFixture(join(ggufDir, 'src'), { arch: 'llada', seed: 6, dtype: 'F32' });
  await writeGgufFromFixture(join(ggufDir, 'src'), join(ggufDir, 'tiny-Q8_0.gguf'), 8);
  await writeGgufFromFixture(join(ggufDir, 'src'), join(ggufDir, 'tiny-F16.gguf'), 1);
  repos.set('quench-test/tiny-GGUF', {
    sha: sha1('gguf'),
    files: await repoOf(ggufDir, ['tiny-Q8_0.gguf', 'tiny-F16.gguf'], { 'README.md': '# gguf', 'tiny-00001-of-00002.gguf': 'part', 'mmproj-tiny-Q8_0.gguf': 'projector' }),
  });
  // the same model as a split GGUF (gguf-split parts), beside another quantization
  await writeGgufFromFixture(join(ggufDir, 'src'), join(ggufDir, 'm-Q8_0.gguf'), 8, 2);
  // (a GGUF repository may ship a config.json too: still no tokenizer.json, still GGUF files to pick from)
  repos.set('quench-test/config-GGUF', { sha: sha1('config-gguf'), files: await repoOf(ggufDir, ['tiny-Q8_0.gguf'], { 'config.json': '{"model_type": "llada"}' }) });
  repos.set('quench-test/split-GGUF', {
    sha: sha1('split'),
    files: await repoOf(ggufDir, ['m-Q8_0-00001-of-00002.gguf', 'm-Q8_0-00002-of-00002.gguf', 'tiny-F16.gguf']),
  });

  // an MDLM repository as kuleshov-group publishes one: config, weights, modeling code, no
  // tokenizer (the model uses GPT-2's); and GPT-2's repository with its tokenizer files
  const ditDir = await tempDir('quench-hub-dit-');
  await writeFixture(ditDir, { arch: 'mdlm', hidden: 32, heads: 2, layers: 1, condDim: 8, seed: 7 });
  repos.set('quench-test/mdlm-owt', { sha: sha1('mdlm'), files: await repoOf(ditDir, ['config.json', 'model.safetensors'], { 'modeling_mdlm.py': '# code', 'configuration_mdlm.py': '# code', 'README.md': '# mdlm' }) });
  repos.set('quench-test/dit-no-code', { sha: sha1('dit-no-code'), files: await repoOf(ditDir, ['config.json', 'model.safetensors']) });
  repos.set('quench-test/no-tokenizer', { sha: sha1('no-tokenizer'), files: await repoOf(fixtureDir, names.filter((n) => n !== 'tokenizer.json')) });
  // (as GPT-2's repository has them: a tokenizer_config.json that names no special token, no map)
  repos.set('openai-community/gpt2', { sha: sha1('gpt2'), files: await repoOf(ditDir, ['tokenizer.json', 'model.safetensors'], { 'tokenizer_config.json': '{"model_max_length": 1024}', 'config.json': '{"model_type": "gpt2"}', 'vocab.json': '{}', 'merges.txt': '' }) });

  hub = Fastify();
  // as the Hub answers: an unknown (or private) repository is 401 RepoNotFound without a token;
  // a gated one lists its files to anyone and refuses downloads (401 without a token, 403
  // with one that has no access)
  const find = (owner: string, name: string, auth: string | undefined, download = false) => {
    const r = repos.get(`${owner}/${name}`);
    if (!r) return { status: auth ? 404 : 401, code: 'RepoNotFound', error: 'Repository not found' };
    if (r.gated && download && auth !== 'Bearer hf_test')
      return auth ? { status: 403, code: 'GatedRepo', error: 'Access to model is restricted and you are not in the authorized list.' } : { status: 401, code: 'GatedRepo', error: 'Access to model is restricted. You must have access to it and be authenticated to access it. Please log in.' };
    return { repo: r };
  };
  const fail = (reply: import('fastify').FastifyReply, f: { status?: number; code?: string; error?: string }) => reply.code(f.status!).header('X-Error-Code', f.code).send({ error: f.error });
  type P = { owner: string; name: string; rev: string; '*': string };
  hub.get<{ Params: P }>('/api/models/:owner/:name/revision/:rev', async (req, reply) => {
    const f = find(req.params.owner, req.params.name, req.headers.authorization);
    if (!f.repo) return fail(reply, f);
    const rev = req.params.rev;
    if (rev !== 'main' && rev !== f.repo.sha && !f.repo.tags?.includes(rev)) return fail(reply, { status: 404, code: 'RevisionNotFound', error: `Invalid rev id: ${rev}` });
    return { _id: 'x', id: `${req.params.owner}/${req.params.name}`, sha: f.repo.sha, private: false, lastModified: '2026-01-01T00:00:00.000Z' };
  });
  // paginated three entries at a time, as the Hub does (1,000 there), with a Link header
  hub.get<{ Params: P; Querystring: { cursor?: string } }>('/api/models/:owner/:name/tree/:rev', async (req, reply) => {
    const f = find(req.params.owner, req.params.name, req.headers.authorization);
    if (!f.repo) return fail(reply, f);
    if (req.params.rev !== f.repo.sha) return reply.code(404).send({ error: 'listed by name, not by commit' });
    const all = [...f.repo.files.keys()].map((p) => entry(f.repo!, p));
    const from = Number(req.query.cursor ?? 0);
    if (from + 3 < all.length) reply.header('Link', `<${url}${req.url.split('?')[0]}?recursive=false&cursor=${from + 3}>; rel="next"`);
    return all.slice(from, from + 3);
  });
  hub.post<{ Params: P; Body: { paths: string[] } }>('/api/models/:owner/:name/paths-info/:rev', async (req, reply) => {
    const f = find(req.params.owner, req.params.name, req.headers.authorization);
    if (!f.repo) return fail(reply, f);
    return req.body.paths.filter((p) => f.repo!.files.has(p)).map((p) => entry(f.repo!, p));
  });
  hub.get<{ Params: P }>('/:owner/:name/resolve/:rev/*', async (req, reply) => {
    const f = find(req.params.owner, req.params.name, req.headers.authorization, true);
    if (!f.repo) return fail(reply, f);
    const path = req.params['*'];
    if (path === f.repo.broken) return reply.code(500).send({ error: 'Internal Error' });
    const b = f.repo.files.get(path);
    if (!b) return reply.code(404).header('X-Error-Code', 'EntryNotFound').send({ error: 'Entry not found' });
    const e = entry(f.repo, path);
    reply.header('ETag', `"${e.lfs?.oid ?? e.oid}"`).header('X-Repo-Commit', f.repo.sha).header('Accept-Ranges', 'bytes');
    const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
    if (range) {
      const [a, z] = [Number(range[1]), Math.min(Number(range[2]), b.length - 1)];
      return reply.code(206).header('Content-Range', `bytes ${a}-${z}/${b.length}`).send(b.subarray(a, z + 1));
    }
    bodies.push(path);
    if (path === f.repo.cut) {
      reply.hijack();
      reply.raw.writeHead(200, { 'content-length': String(b.length), etag: `"${e.lfs?.oid ?? e.oid}"` });
      reply.raw.write(b.subarray(0, b.length >> 1));
      setTimeout(() => reply.raw.destroy(), 20);
      return reply;
    }
    if (path === f.repo.corrupt) {
      const c = Buffer.from(b);
      c[c.length - 1] ^= 1;
      return reply.send(c);
    }
    return reply.send(b);
  });
  url = await hub.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await hub.close();
});

test('pull: a sharded LLaDA repository -> the Hub cache; loads and generates exactly like the original', async () => {
  const cacheDir = await tempDir('quench-hub-cache-');
  const seen: string[] = [];
  const partial = new Map<string, number>();
  const r = await pull('quench-test/llada-tiny', {
    endpoint: url,
    cacheDir,
    onProgress: (e) => (e.done ? seen.push(e.file) : partial.set(e.file, e.bytes)),
  });
  const repo = repos.get('quench-test/llada-tiny')!;
  assert.equal(r.commit, repo.sha);
  assert.equal(r.dir, join(cacheDir, 'models--quench-test--llada-tiny', 'snapshots', repo.sha));
  // what quench loads (and the card), not the pickled weights, the code or the subfolder
  const want = [...repo.files.keys()].filter((p) => !['pytorch_model.bin', 'modeling_llada.py', 'onnx/model.onnx', 'LICENSE'].includes(p)).sort();
  assert.deepEqual([...r.files].sort(), want);
  assert.deepEqual([...seen].sort(), want);
  // an optional file that fails (LICENSE answers 500) is reported, not fatal
  assert.equal(r.skipped.length, 1);
  assert.match(r.skipped[0], /^LICENSE \(.*500/);
  // byte progress while a body streams in, up to the file's size
  for (const shard of want.filter((p) => p.endsWith('.safetensors'))) assert.equal(partial.get(shard), repo.files.get(shard)!.length, shard);
  for (const p of want) {
    // the Hub cache layout: a relative link to blobs/<sha256 of LFS files | git blob sha1>
    assert.ok(lstatSync(join(r.dir, p)).isSymbolicLink(), p);
    const e = entry(repo, p) as { oid: string; lfs?: { oid: string } };
    assert.equal(readlinkSync(join(r.dir, p)), join('..', '..', 'blobs', e.lfs?.oid ?? e.oid), p);
    assert.ok(readFileSync(join(r.dir, p)).equals(repo.files.get(p)!), `${p} has the repository's bytes`);
  }
  assert.equal(readFileSync(join(cacheDir, 'models--quench-test--llada-tiny', 'refs', 'main'), 'utf8'), repo.sha);
  assert.equal(cachedSnapshot('quench-test/llada-tiny', 'main', cacheDir), r.dir);
  assert.equal(cachedSnapshot('quench-test/llada-tiny', repo.sha, cacheDir), r.dir);
  assert.deepEqual(cachedModels(cacheDir), [{ repo: 'quench-test/llada-tiny', dir: r.dir }]);
  // the pulled model decodes token for token like the directory it was served from
  const prompt = [1, 20, 21, 22, 23];
  const outs = [];
  for (const dir of [fixtureDir, r.dir]) {
    const m = await loadModel(dir, { cacheDir: CACHE, threads: 1 });
    outs.push((await generate(m, prompt, { maxTokens: 8, policy: 'low_confidence', stopTokens: [] })).tokens);
    await m.close();
  }
  assert.deepEqual(outs[1], outs[0]);
  // a second pull finds every file in the cache: no body is downloaded again
  const before = bodies.filter((b) => b !== 'LICENSE').length;
  const again = await pull('quench-test/llada-tiny', { endpoint: url, cacheDir });
  assert.equal(again.dir, r.dir);
  assert.equal(bodies.filter((b) => b !== 'LICENSE').length, before);
  // revisions: a tag and a pull-request ref are written as refs (as huggingface_hub does) and
  // listed as owner/name@rev; a commit needs no ref; an unknown revision is a typed error
  for (const rev of ['v1', 'refs/pr/1', repo.sha]) {
    const t = await pull('quench-test/llada-tiny', { endpoint: url, cacheDir, revision: rev });
    assert.equal(t.dir, r.dir, rev);
    assert.equal(cachedSnapshot('quench-test/llada-tiny', rev, cacheDir), r.dir, rev);
  }
  assert.equal(readFileSync(join(cacheDir, 'models--quench-test--llada-tiny', 'refs', 'refs', 'pr', '1'), 'utf8'), repo.sha);
  assert.deepEqual(cachedModels(cacheDir).map((m) => m.repo).sort(), ['quench-test/llada-tiny', 'quench-test/llada-tiny@refs/pr/1', 'quench-test/llada-tiny@v1']);
  await assert.rejects(pull('quench-test/llada-tiny', { endpoint: url, cacheDir, revision: 'v9' }), (e: unknown) => e instanceof HubError && e.code === 'hub_revision_not_found');
  // a snapshot without its shards (as a config-only download leaves) is not a pulled model
  const { rmSync } = await import('node:fs');
  rmSync(join(r.dir, want.find((p) => p.endsWith('.safetensors'))!));
  assert.equal(cachedSnapshot('quench-test/llada-tiny', 'main', cacheDir), null);
  assert.deepEqual(cachedModels(cacheDir), []);
});

test('pull: an MDLM repository ships no tokenizer; GPT-2\'s tokenizer files (only those) come beside its weights and it loads as pulled', async () => {
  const cacheDir = await tempDir('quench-hub-cache-');
  const r = await pull('quench-test/mdlm-owt', { endpoint: url, cacheDir });
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) assert.ok(existsSync(join(r.dir, f)), f);
  assert.ok(r.files.includes('tokenizer.json (from openai-community/gpt2)'));
  assert.ok(!existsSync(join(r.dir, 'modeling_mdlm.py')), 'no code');
  const gpt2 = cachedSnapshot('openai-community/gpt2', 'main', cacheDir);
  assert.equal(gpt2, null, "GPT-2's weights are not pulled (its snapshot is no model)");
  assert.ok(!existsSync(join(cacheDir, 'models--openai-community--gpt2', 'snapshots', sha1('gpt2'), 'model.safetensors')));
  assert.deepEqual(cachedModels(cacheDir).map((m) => m.repo), ['quench-test/mdlm-owt']);
  assert.equal(borrowedTokenizer('{"model_type": "bd3lm"}'), 'openai-community/gpt2');
  assert.equal(borrowedTokenizer('{"model_type": "llada"}'), null);
  assert.equal(borrowedTokenizer('{"model_type": "MDLM"}'), 'openai-community/gpt2');
  await assert.rejects(pull('quench-test/config-GGUF', { endpoint: url, cacheDir }), (e: unknown) => e instanceof HubError && e.code === 'hub_incomplete' && /pull one as quench-test\/config-GGUF:/.test(e.message));
  const m = await loadModel(r.dir, { cacheDir: CACHE, threads: 1 });
  try {
    assert.equal(m.args.arch, 'mdlm');
    const eot = m.codec.encode('<|endoftext|>')[0];
    assert.deepEqual([m.special.stop, m.special.bos], [[eot], eot], "GPT-2's class defaults: <|endoftext|> begins and ends a text");
    const out = await generate(m, m.codec.encodePrompt('the'), { maxTokens: 4, policy: 'low_confidence', stopTokens: [] });
    assert.equal(out.tokens.length, 4);
  } finally {
    await m.close();
  }
  // without its modeling code (a fine-tune saved without it) the config says it is an MDLM model
  const bare = await pull('quench-test/dit-no-code', { endpoint: url, cacheDir });
  assert.ok(existsSync(join(bare.dir, 'tokenizer.json')));
  // a repository with no tokenizer whose config is no DiT model's is incomplete, and nothing is listed
  await assert.rejects(pull('quench-test/no-tokenizer', { endpoint: url, cacheDir }), (e: unknown) => e instanceof HubError && e.code === 'hub_incomplete' && /tokenizer\.json/.test(e.message));
  assert.equal(cachedSnapshot('quench-test/no-tokenizer', 'main', cacheDir), null);
});

test('pull: typed errors for a bad id, a missing repository, a gated one without a token, no safetensors, a wrong size', async () => {
  const cacheDir = await tempDir('quench-hub-cache-');
  const o = { endpoint: url, cacheDir };
  const code = async (p: Promise<unknown>, c: string, re?: RegExp) =>
    assert.rejects(p, (e: unknown) => e instanceof HubError && e.code === c && (!re || re.test(e.message)));
  await code(pull('no-slash', o), 'hub_bad_repo');
  await code(pull('../etc/passwd', o), 'hub_bad_repo');
  await code(pull('quench-test/llada-tiny', { ...o, revision: '../../x' }), 'hub_bad_revision');
  await code(pull('quench-test/missing', o), 'hub_not_found', /no such model on .*or it is private: if it is yours, pass --token/);
  await code(pull('quench-test/missing', { ...o, token: 'hf_x' }), 'hub_not_found', /token cannot read it/);
  await code(pull('quench-test/gated', o), 'hub_unauthorized', /is gated: request access at http.*quench-test\/gated, then pass --token or set HF_TOKEN/);
  await code(pull('quench-test/gated', { ...o, token: 'hf_wrong' }), 'hub_unauthorized', /this token has no access yet.*not in the authorized list/);
  const ok = await pull('quench-test/gated', { ...o, token: 'hf_test' });
  assert.ok(existsSync(join(ok.dir, 'config.json')));
  // nothing listens on a port just closed: the cause is named
  const { createServer } = await import('node:net');
  const srv = createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  await code(pull('quench-test/llada-tiny', { ...o, endpoint: `http://127.0.0.1:${port}` }), 'hub_unreachable', /ECONNREFUSED.*HF_ENDPOINT/);
  await code(pull('quench-test/bin-only', o), 'hub_no_safetensors', /pytorch_model\.bin/);
  await code(pull('quench-test/liar', o), 'hub_size_mismatch', /tokenizer\.json/);
  // a body that differs from the listed content hash, a malformed hash, an index naming a path
  await code(pull('quench-test/corrupt', o), 'hub_hash_mismatch', /differs from the Hub's/);
  await code(pull('quench-test/evil-hash', o), 'hub_bad_response', /malformed content hash/);
  assert.ok(!existsSync('/tmp/quench-evil'), 'nothing written outside the cache');
  await code(pull('quench-test/evil-index', o), 'hub_bad_name', /escape/);
  // a body cut short: a typed error, and no .incomplete file left in blobs/
  await assert.rejects(pull('quench-test/cut', o), (e: unknown) => e instanceof HubError);
  const blobs = join(cacheDir, 'models--quench-test--cut', 'blobs');
  assert.deepEqual(readdirSync(blobs).filter((f) => f.endsWith('.incomplete')), []);
  // the bad blob went with its link: pulling again downloads it again (and fails again)
  const n = bodies.filter((b) => b === 'tokenizer.json').length;
  await code(pull('quench-test/liar', o), 'hub_size_mismatch');
  assert.equal(bodies.filter((b) => b === 'tokenizer.json').length, n + 1);
  // a repository refused before its first file leaves nothing behind
  assert.ok(!existsSync(join(cacheDir, 'models--quench-test--bin-only', 'snapshots')));
  assert.ok(!existsSync(join(cacheDir, 'models--quench-test--missing')));
});

test('a pull that fails leaves the model pulled before it as it was; names that could escape are never fetched', async () => {
  const cacheDir = await tempDir('quench-hub-cache-');
  const names = readdirSync(fixtureDir);
  repos.set('quench-test/renew', { sha: sha1('renew-1'), files: await repoOf(fixtureDir, names, { '..config.json': '{}', '.hidden': 'x' }) });
  const first = await pull('quench-test/renew', { endpoint: url, cacheDir });
  assert.ok(!first.files.includes('..config.json') && !first.files.includes('.hidden'));
  assert.ok(!existsSync(join(first.dir, '..config.json')));
  // a new commit whose changed config cannot be downloaded: the pull fails, main still names the first
  const v2 = await repoOf(fixtureDir, names);
  v2.set('config.json', Buffer.concat([v2.get('config.json')!, Buffer.from('\n')]));
  repos.set('quench-test/renew', { sha: sha1('renew-2'), files: v2, broken: 'config.json' });
  await assert.rejects(pull('quench-test/renew', { endpoint: url, cacheDir }), (e: unknown) => e instanceof HubError);
  assert.equal(readFileSync(join(cacheDir, 'models--quench-test--renew', 'refs', 'main'), 'utf8'), sha1('renew-1'));
  assert.equal(cachedSnapshot('quench-test/renew', 'main', cacheDir), first.dir);
  const m = await loadModel(first.dir, { cacheDir: CACHE, threads: 1 });
  await m.close();
});

test('quench pull / list / run --model owner/name through the CLI, with HF_ENDPOINT and HF_HUB_CACHE', async () => {
  const cacheDir = await tempDir('quench-hub-cache-');
  const env = { ...process.env, HF_ENDPOINT: url, HF_HUB_CACHE: cacheDir, QUENCH_CACHE: CACHE };
  const cli = (args: string[]) => promisify(execFile)(process.execPath, ['bin/quench.js', ...args], { env, timeout: 120_000 });
  const p = await cli(['pull', 'quench-test/llada-tiny']);
  assert.match(p.stdout, /pulled quench-test\/llada-tiny at [0-9a-f]{12}: \d+ files/);
  const l = await cli(['list']);
  assert.match(l.stdout, /quench-test\/llada-tiny\s+hub\s/);
  await cli(['run', '--model', 'quench-test/llada-tiny', '--max-tokens', '4', '--raw', 'hello']); // exits 0
  await assert.rejects(cli(['run', '--model', 'quench-test/not-pulled', 'hi']), /not pulled yet: quench pull quench-test\/not-pulled/);
  await assert.rejects(cli(['run', '--model', 'quench-test/llada-tiny@v1', 'hi']), /not pulled yet: quench pull quench-test\/llada-tiny --revision v1/);
  const v1 = await cli(['pull', 'quench-test/llada-tiny', '--revision', 'v1']);
  assert.match(v1.stdout, /quench run --model quench-test\/llada-tiny@v1/);
  assert.ok(statSync(join(cacheDir, 'models--quench-test--llada-tiny')).isDirectory());
});

test('pull a LoRA adapter repository: its adapter files only; as a model it brings the base its config names, which must be pulled too', async () => {
  const cacheDir = await tempDir('quench-hub-cache-');
  const prev = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = cacheDir;
  try {
    const r = await pull('quench-test/llada-tiny-lora', { endpoint: url, cacheDir });
    assert.deepEqual([...r.files].sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
    assert.deepEqual(cachedModels(cacheDir).map((m) => m.repo), ['quench-test/llada-tiny-lora']);
    assert.throws(() => resolveModelEntry('quench-test/llada-tiny-lora'), /adapter quench-test\/llada-tiny-lora is for "quench-test\/llada-tiny": .*not pulled yet: quench pull quench-test\/llada-tiny/);
    const base = await pull('quench-test/llada-tiny', { endpoint: url, cacheDir });
    const m = resolveModelEntry('quench-test/llada-tiny-lora');
    assert.deepEqual(m, { dir: base.dir, name: 'quench-test/llada-tiny-lora', lora: r.dir, base: 'quench-test/llada-tiny' });
    // the same through --lora beside the base; an adapter is no base, a base no adapter
    assert.deepEqual(resolveModelEntry('quench-test/llada-tiny', 'quench-test/llada-tiny-lora'), m);
    assert.throws(() => resolveModelEntry('quench-test/llada-tiny-lora', 'quench-test/llada-tiny-lora'), /is a LoRA adapter: give its base model as --model/);
    assert.throws(() => resolveModelEntry('quench-test/llada-tiny', 'quench-test/llada-tiny'), /is not a LoRA adapter/);
    // it loads: the base with the adapter merged, answering differently from the base alone
    const prompt = [1, 20, 21, 22, 23];
    const outs: Float32Array[] = [];
    for (const o of [{}, { lora: m.lora }]) {
      const model = await loadModel(m.dir, { cacheDir: CACHE, threads: 1, ...o });
      const [res] = await model.forward([{ ids: Int32Array.from(prompt), positions: Int32Array.from([0, 1, 2, 3, 4]), visible: new Uint8Array(25).fill(1), queries: Int32Array.from([4]), wantLogits: true }]);
      outs.push(res.logits!);
      await model.close();
    }
    assert.ok(outs[0].some((x, i) => Math.abs(x - outs[1][i]) > 1e-3), 'the adapter changes the logits');
    // a pulled adapter's base is a Hub id or a model name, never a path on this machine
    await pull('quench-test/path-lora', { endpoint: url, cacheDir });
    assert.throws(() => resolveModelEntry('quench-test/path-lora'), /names ".*" as its base, which is no Hub id/);
    assert.deepEqual(resolveModelEntry('quench-test/llada-tiny', 'quench-test/path-lora').dir, base.dir, 'given explicitly, the base is the caller\'s choice');
    await assert.rejects(pull('quench-test/lora-bin-only', { endpoint: url, cacheDir }), (e: unknown) => e instanceof HubError && e.code === 'hub_no_safetensors' && /adapter_model\.bin, a pickle/.test(e.message));
  } finally {
    if (prev === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = prev;
  }
});

test('the token: given, else HF_TOKEN, else the saved login (HF_TOKEN_PATH, else HF_HOME/token)', async () => {
  const dir = await tempDir('quench-hub-token-');
  const saved = { ...process.env };
  try {
    delete process.env.HF_TOKEN;
    process.env.HF_HOME = dir;
    delete process.env.HF_TOKEN_PATH;
    assert.equal(hubToken(), undefined);
    writeFileSync(join(dir, 'token'), 'hf_saved\n');
    assert.equal(hubToken(), 'hf_saved');
    writeFileSync(join(dir, 'other'), 'hf_path');
    process.env.HF_TOKEN_PATH = join(dir, 'other');
    assert.equal(hubToken(), 'hf_path');
    process.env.HF_TOKEN = 'hf_env';
    assert.equal(hubToken(), 'hf_env');
    assert.equal(hubToken('hf_given'), 'hf_given');
  } finally {
    for (const k of ['HF_TOKEN', 'HF_HOME', 'HF_TOKEN_PATH']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
});

test('pull owner/name:Q8_0: one GGUF file of a repository, picked by its quantization; it loads and runs as the file itself', async () => {
  const cacheDir = await tempDir('quench-hub-cache-');
  const o = { endpoint: url, cacheDir };
  const r = await pull('quench-test/tiny-GGUF', { ...o, file: 'q8_0' });
  assert.deepEqual(r.files.sort(), ['README.md', 'tiny-Q8_0.gguf']);
  const file = join(r.dir, 'tiny-Q8_0.gguf');
  assert.deepEqual(readFileSync(file), readFileSync(join(ggufDir, 'tiny-Q8_0.gguf')));
  // listed and resolved as owner/name:file, from the Hub cache
  const prev = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = cacheDir;
  try {
    assert.ok(cachedModels(cacheDir).some((m) => m.repo === 'quench-test/tiny-GGUF:tiny-Q8_0.gguf' && m.dir === file));
    assert.deepEqual(resolveModelEntry('quench-test/tiny-GGUF:Q8_0'), { dir: file, name: 'quench-test/tiny-GGUF:Q8_0' });
    assert.throws(() => resolveModelEntry('quench-test/tiny-GGUF:F16'), /not pulled yet: quench pull quench-test\/tiny-GGUF:F16/);
  } finally {
    if (prev === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = prev;
  }
  const pulled = await loadModel(file, { cacheDir: CACHE, threads: 1 });
  const direct = await loadModel(join(ggufDir, 'tiny-Q8_0.gguf'), { cacheDir: CACHE, threads: 1 });
  try {
    const a = await generate(pulled, [1, 2, 3], { maxTokens: 8, temperature: 0 });
    const b = await generate(direct, [1, 2, 3], { maxTokens: 8, temperature: 0 });
    assert.deepEqual(a.tokens, b.tokens);
  } finally {
    await pulled.close();
    await direct.close();
  }
  // what cannot be picked, named
  const refuse = async (file: string | undefined, code: string, re: RegExp) =>
    assert.rejects(pull('quench-test/tiny-GGUF', { ...o, file }), (e: unknown) => e instanceof HubError && e.code === code && re.test(e.message), String(file));
  await refuse('tiny', 'hub_ambiguous', /matches 3 GGUF files.*name one/);
  await refuse('Q2_K', 'hub_no_file', /no GGUF file matching "Q2_K" \(GGUF files: tiny-Q8_0.gguf, tiny-F16.gguf, tiny-00001-of-00002.gguf\)/);
  await refuse('00001-of', 'hub_split_gguf', /split/);
  await refuse(undefined, 'hub_incomplete', /holds GGUF files .*pull one as quench-test\/tiny-GGUF:/);
  await refuse('', 'hub_no_file', /name a GGUF file/);
  // tags match between separators
  assert.deepEqual(pickGguf(['m-BF16.gguf', 'm-F16.gguf', 'm-Q4_K_M.gguf', 'm-Q4_K_S.gguf'], 'f16', 'r'), ['m-F16.gguf']);
  assert.throws(() => pickGguf(['m-Q4_K_M.gguf', 'm-Q4_K_S.gguf'], 'Q4_K', 'r'), /no GGUF file matching/);
  // a split file is all its parts, in order, picked by its tag or any part's name
  const parts = ['m-Q8_0-00001-of-00003.gguf', 'm-Q8_0-00002-of-00003.gguf', 'm-Q8_0-00003-of-00003.gguf'];
  for (const sel of ['Q8_0', 'm-Q8_0-00002-of-00003.gguf']) assert.deepEqual(pickGguf([parts[2], parts[0], parts[1], 'm-F16.gguf'], sel, 'r'), parts);
  assert.throws(() => pickGguf([parts[0], parts[2]], 'Q8_0', 'r'), /part m-Q8_0-00002-of-00003.gguf is not in the repository/);
  // the extension's case is kept in the parts' names
  assert.deepEqual(pickGguf(['M-00002-of-00002.GGUF', 'M-00001-of-00002.GGUF'], 'M-00001-of-00002.GGUF', 'r'), ['M-00001-of-00002.GGUF', 'M-00002-of-00002.GGUF']);
  // pulled and resolved: every part, listed and opened as one model by its first part
  const s = await pull('quench-test/split-GGUF', { ...o, file: 'Q8_0' });
  assert.deepEqual(s.files.sort(), ['m-Q8_0-00001-of-00002.gguf', 'm-Q8_0-00002-of-00002.gguf']);
  const prevCache = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = o.cacheDir;
  try {
    assert.deepEqual(cachedModels(o.cacheDir).filter((m) => m.repo.startsWith('quench-test/split-GGUF')).map((m) => m.repo), ['quench-test/split-GGUF:m-Q8_0-00001-of-00002.gguf']);
    const entry = resolveModelEntry('quench-test/split-GGUF:Q8_0');
    assert.equal(entry.dir, join(s.dir, 'm-Q8_0-00001-of-00002.gguf'));
    const split = await loadModel(entry.dir, { cacheDir: CACHE, threads: 1 });
    const whole = await loadModel(join(ggufDir, 'tiny-Q8_0.gguf'), { cacheDir: CACHE, threads: 1 });
    try {
      assert.deepEqual((await generate(split, [1, 2, 3], { maxTokens: 8, temperature: 0 })).tokens, (await generate(whole, [1, 2, 3], { maxTokens: 8, temperature: 0 })).tokens);
    } finally {
      await split.close();
      await whole.close();
    }
  } finally {
    if (prevCache === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = prevCache;
  }
  assert.deepEqual(parseModelRef('a/b:x@y'), { repo: 'a/b', file: 'x@y' });
  assert.deepEqual(parseModelRef('a/b@v1:Q8_0'), { repo: 'a/b', revision: 'v1', file: 'Q8_0' });
});
