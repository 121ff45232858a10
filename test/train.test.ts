// The training recipe end to end: a few steps of each model on the tiny data set, export,
// load in quench, generate. Needs PyTorch for /usr/bin/python3 (.ci/run installs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../src/models/registry.ts';
import { checkModelDefaults, generate } from '../src/decode/generation.ts';
import { SafetensorsFile } from '../src/formats/safetensors.ts';
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

test('stage 2: --init-from starts the diffusion model from the exported AR twin (weights copied exactly)', async () => {
  const work = await tempDir('quench-train-init-');
  const ar = join(work, 'ar');
  // another seed than the diffusion runs below: were --init-from ignored, their weights would differ
  py(['train/train.py', '--kind', 'ar', '--tiny', '--steps', '2', '--minutes', '1', '--threads', '1', '--seed', '7', '--out', join(work, 'run-ar')]);
  py(['train/export.py', '--ckpt', join(work, 'run-ar', 'ckpt.pt'), '--kind', 'ar', '--out', ar]);
  // lr 0: one step that must leave the copied weights untouched, so the export equals the twin
  const diff = join(work, 'diff');
  py(['train/train.py', '--kind', 'diffusion', '--tiny', '--steps', '1', '--minutes', '1', '--threads', '1', '--lr', '0', '--init-from', ar, '--out', join(work, 'run-d')]);
  py(['train/export.py', '--ckpt', join(work, 'run-d', 'ckpt.pt'), '--kind', 'diffusion', '--out', diff]);
  const a = await SafetensorsFile.open(join(ar, 'model.safetensors'));
  const d = await SafetensorsFile.open(join(diff, 'model.safetensors'));
  const pairs: [string, string][] = [
    ['model.embed_tokens.weight', 'model.transformer.wte.weight'],
    ['model.layers.0.self_attn.q_proj.weight', 'model.transformer.blocks.0.q_proj.weight'],
    ['model.layers.1.mlp.down_proj.weight', 'model.transformer.blocks.1.ff_out.weight'],
    ['model.layers.1.post_attention_layernorm.weight', 'model.transformer.blocks.1.ff_norm.weight'],
    ['model.norm.weight', 'model.transformer.ln_f.weight'],
    ['lm_head.weight', 'model.transformer.ff_out.weight'],
  ];
  assert.equal(d.tensors.size, a.tensors.size);
  for (const [an, dn] of pairs) assert.ok((await a.read(an)).equals(await d.read(dn)), `${dn} == ${an}`);
  await a.close();
  await d.close();
  // and the adapted model trains: a few steps at a real learning rate move the weights a little
  // away from the twin's (a random initialisation would be as far away as the weights are large)
  py(['train/train.py', '--kind', 'diffusion', '--tiny', '--steps', '3', '--minutes', '1', '--threads', '1', '--init-from', ar, '--out', join(work, 'run-d2')]);
  py(['train/export.py', '--ckpt', join(work, 'run-d2', 'ckpt.pt'), '--kind', 'diffusion', '--out', join(work, 'diff2')]);
  const d2 = await SafetensorsFile.open(join(work, 'diff2', 'model.safetensors'));
  const a2 = await SafetensorsFile.open(join(ar, 'model.safetensors'));
  const bf16 = (b: Buffer) => new Float32Array(Uint32Array.from(new Uint16Array(b.buffer, b.byteOffset, b.length / 2), (x) => x << 16).buffer);
  const x = bf16(await d2.read('model.transformer.blocks.0.q_proj.weight'));
  const y = bf16(await a2.read('model.layers.0.self_attn.q_proj.weight'));
  let moved = 0;
  let norm = 0;
  for (let i = 0; i < x.length; i++) {
    moved += (x[i] - y[i]) ** 2;
    norm += y[i] ** 2;
  }
  const rel = Math.sqrt(moved / norm);
  assert.ok(rel > 0 && rel < 0.5, `relative change ${rel.toFixed(4)} after 3 steps from the twin`);
  await d2.close();
  await a2.close();
  // continuing a pair: --kind both, the twin from --init-from and the diffusion model from its
  // own export (--init-diffusion); lr 0, so the exports equal what each started from
  py(['train/train.py', '--kind', 'both', '--tiny', '--steps', '1', '--minutes', '1', '--threads', '1', '--lr', '0', '--init-from', ar, '--init-diffusion', join(work, 'diff2'),
    '--family-weights', 'mul=4,reverse_word=3', '--out', join(work, 'run-both')]);
  for (const [kind, from] of [['diffusion', join(work, 'diff2')], ['ar', ar]] as const) {
    py(['train/export.py', '--ckpt', join(work, 'run-both', kind, 'ckpt.pt'), '--kind', kind, '--out', join(work, `both-${kind}`)]);
    const got = await SafetensorsFile.open(join(work, `both-${kind}`, 'model.safetensors'));
    const want = await SafetensorsFile.open(join(from, 'model.safetensors'));
    const name = kind === 'ar' ? 'model.layers.0.self_attn.q_proj.weight' : 'model.transformer.blocks.0.q_proj.weight';
    assert.ok((await got.read(name)).equals(await want.read(name)), `${kind} continues from ${from}`);
    await got.close();
    await want.close();
  }
  // --shift (Dream-style adaptation): lr 0, so the export is the twin's weights in the Dream
  // layout with zero q/k/v biases, and quench loads it as a shifted bidirectional model
  py(['train/train.py', '--kind', 'diffusion', '--shift', '--tiny', '--steps', '1', '--minutes', '1', '--threads', '1', '--lr', '0', '--init-from', ar, '--out', join(work, 'run-shift')]);
  const dream = join(work, 'dream');
  py(['train/export.py', '--ckpt', join(work, 'run-shift', 'ckpt.pt'), '--kind', 'diffusion', '--out', dream]);
  const ds = await SafetensorsFile.open(join(dream, 'model.safetensors'));
  const as = await SafetensorsFile.open(join(ar, 'model.safetensors'));
  for (const name of as.tensors.keys()) assert.ok((await ds.read(name)).equals(await as.read(name)), `Dream export ${name} == the twin's`);
  const bias = await ds.read('model.layers.1.self_attn.k_proj.bias');
  assert.ok(bias.length > 0 && bias.every((b) => b === 0), 'zero k bias');
  assert.equal(ds.tensors.size, as.tensors.size + 3 * 2, 'q/k/v biases of both tiny layers added');
  await ds.close();
  await as.close();
  const dm = await loadModel(dream, { cacheDir: CACHE, threads: 1 });
  assert.equal(dm.args.arch, 'dream');
  assert.ok(dm.args.shiftedLogits && dm.args.attention === 'bidirectional' && dm.special.mask === 5);
  const dr = await generate(dm, dm.codec.encodeChat([{ role: 'user', content: 'What is 27 + 58?' }]), { maxTokens: 8, policy: 'low_confidence', stopTokens: [] });
  assert.equal(dr.tokens.length, 8);
  await dm.close();
  // --block (Fast-dLLM v2-style block diffusion): lr 0, so the export is the twin's weights in the
  // Fast-dLLM v2 layout, which quench loads as a block-causal, shifted model with the trained block
  py(['train/train.py', '--kind', 'diffusion', '--shift', '--block', '4', '--tiny', '--steps', '1', '--minutes', '1', '--threads', '1', '--lr', '0', '--init-from', ar, '--out', join(work, 'run-block')]);
  const blockDir = join(work, 'block');
  py(['train/export.py', '--ckpt', join(work, 'run-block', 'ckpt.pt'), '--kind', 'diffusion', '--out', blockDir]);
  const bs = await SafetensorsFile.open(join(blockDir, 'model.safetensors'));
  const as2 = await SafetensorsFile.open(join(ar, 'model.safetensors'));
  for (const name of as2.tensors.keys()) assert.ok((await bs.read(name)).equals(await as2.read(name)), `block export ${name} == the twin's`);
  await bs.close();
  await as2.close();
  const bm = await loadModel(blockDir, { cacheDir: CACHE, threads: 1 });
  assert.equal(bm.args.arch, 'fast_dllm_v2');
  assert.ok(bm.args.shiftedLogits && bm.args.attention === 'block_causal' && bm.args.blockSize === 4 && bm.special.mask === 5);
  // its generation_config.json carries the block model's decoding defaults, valid for quench
  assert.deepEqual(bm.defaults, { maxTokens: 64, threshold: 0.95, inOrder: true, leadToken: false });
  checkModelDefaults(bm);
  const br = await generate(bm, bm.codec.encodeChat([{ role: 'user', content: 'What is 27 + 58?' }]), { maxTokens: 10, policy: 'threshold', threshold: 0.9, stopTokens: [] });
  assert.equal(br.tokens.length, 10);
  await bm.close();
  assert.throws(() => py(['train/train.py', '--kind', 'diffusion', '--block', '4', '--tiny', '--steps', '1', '--minutes', '1', '--out', join(work, 'run-block-noshift')]), /--block needs --shift/);
  // a shifted export continues only with --shift (the loss would read the wrong rows otherwise)
  assert.throws(() => py(['train/train.py', '--kind', 'diffusion', '--tiny', '--steps', '1', '--minutes', '1', '--init-diffusion', dream, '--out', join(work, 'run-noshift')]), /add --shift/);
  // an unknown family in --family-weights is an error naming it
  assert.throws(() => py(['train/train.py', '--kind', 'ar', '--tiny', '--steps', '1', '--minutes', '1', '--family-weights', 'mull=4', '--out', join(work, 'run-bad')]), /unknown family 'mull'/);
});

test('block diffusion: the training layout ([clean ; masked] side by side) scores as the block-causal inference view does', () => {
  // a random tiny model in fp32; masks at random positions; blocks of 4 and of 5 (a last block cut short);
  // then a wrong layout (the masked copy seeing every block) must show a gap, or the check could not fail
  const code = `
import sys, torch
sys.path.insert(0, 'train')
import train
from model import Transformer, ModelConfig, TINY
torch.manual_seed(0)
m = Transformer(ModelConfig(**TINY)).eval()
x = torch.randint(6, 2048, (3, 23))
mk = torch.rand(3, 23) < 0.5
with torch.no_grad():
    gaps = [train.block_layout_gap(m, x, mk, b) for b in (4, 5)]
    train.block_attention = lambda L, b, d: torch.ones(2 * L, 2 * L, dtype=torch.bool)
    wrong = train.block_layout_gap(m, x, mk, 4)
print(max(gaps), wrong)
`;
  const [gap, wrong] = execFileSync(PY, ['-c', code], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } }).trim().split(' ').map(Number);
  assert.ok(gap < 1e-4, `layout gap ${gap}`);
  assert.ok(wrong > 1e-2, `a wrong layout shows (${wrong})`);
});

test('--edit-noise: visible answer tokens are swapped for random ordinary tokens (never the prompt, never a special token) and the loss covers them', () => {
  // a model that copies its input (logits: one-hot of the input token): masked and swapped
  // positions are wrong, the rest right; the same seed draws the same t and masks with and
  // without noise, so the noised loss is larger exactly because swapped positions count
  const script = `
import sys, torch
sys.path.insert(0, 'train')
from train import diffusion_loss
from tokenizer import MASK
V = 50
class Copier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = type('C', (), {'vocab_size': V})()
        self.seen = None
    def forward(self, xin, causal=False):
        self.seen = xin
        return torch.nn.functional.one_hot(xin, V).float() * 20
torch.manual_seed(0)
n, L = 64, 24
x = torch.randint(MASK + 1, V, (n, L))
plen = torch.full((n,), 8)
rlen = torch.full((n,), 20)
m = Copier()
def run(noise):
    torch.manual_seed(1)
    loss, _ = diffusion_loss(m, x, plen, rlen, L, pad_weight=1.0, edit_noise=noise)
    return float(loss), m.seen.clone()
base, xin0 = run(0.0)
noised, xin1 = run(1.0)
assert torch.equal(xin1[:, :8], x[:, :8]), 'the prompt is never changed'
swapped = (xin1 != x) & (xin1 != MASK)
assert swapped.any() and not ((xin0 != x) & (xin0 != MASK)).any(), 'only the noised run swaps tokens'
assert (xin1[swapped] > MASK).all(), 'swaps are ordinary tokens'
assert torch.equal(xin1 == MASK, xin0 == MASK), 'the same masks with and without noise'
assert noised > base * 1.05, (noised, base)
print('ok', base, noised, int(swapped.sum()))
`;
  py(['-c', script]);
  // and the option is refused where it does not apply
  assert.throws(() => py(['train/train.py', '--kind', 'diffusion', '--shift', '--block', '4', '--edit-noise', '0.1', '--tiny', '--steps', '1', '--minutes', '1', '--out', '/tmp/quench-never']), /--edit-noise/);
  assert.throws(() => py(['train/train.py', '--kind', 'ar', '--edit-noise', '0.1', '--tiny', '--steps', '1', '--minutes', '1', '--out', '/tmp/quench-never']), /--edit-noise/);
});
