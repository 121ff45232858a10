import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, OverloadedError } from '../src/engine/scheduler.ts';
import { generate } from '../src/decode/generation.ts';
import { CancelledError, OptionError } from '../src/errors.ts';
import { scriptedModel, prefer } from './mock.ts';

const model = () => scriptedModel(32, (p) => prefer(32, 4 + ((p * 7) % 20), 3 + (p % 4)));
const opts = { maxTokens: 12, blockLength: 4, policy: 'low_confidence' as const, steps: 6, cache: 'none' as const, stopTokens: [] };

test('more requests than batch slots: all finish, each equal to its solo run, batched forwards', async () => {
  const m = model();
  const prompts = Array.from({ length: 7 }, (_, i) => [i, i + 1]);
  const solo = await Promise.all(prompts.map((p) => generate(m, p, opts)));
  const calls = m.calls;
  const s = new Scheduler(m, { maxBatch: 3, maxQueue: 10 });
  const sizes: number[] = [];
  s.hooks.onStep = (b) => sizes.push(b);
  const rs = await Promise.all(prompts.map((p) => s.submit({ prompt: p, options: opts })));
  rs.forEach((r, i) => assert.deepEqual(r.tokens, solo[i].tokens));
  assert.ok(Math.max(...sizes) === 3 && m.calls - calls < 7 * 6, 'steps were batched');
});

test('bad options reject at submit; a full queue gives OverloadedError; cancelled requests leave', async () => {
  const s = new Scheduler(model(), { maxBatch: 1, maxQueue: 1 });
  assert.throws(() => s.submit({ prompt: [1], options: { ...opts, steps: 0 } }), OptionError);
  const a = s.submit({ prompt: [1], options: opts });
  const ac = new AbortController();
  const b = s.submit({ prompt: [2], options: opts, signal: ac.signal });
  assert.throws(() => s.submit({ prompt: [3], options: opts }), OverloadedError);
  ac.abort();
  await assert.rejects(b, CancelledError);
  assert.equal((await a).tokens.length, 12);
  assert.equal((await s.submit({ prompt: [4], options: opts })).tokens.length, 12);
});

test('a failing forward fails its batch only; the loop keeps serving; drain waits for work', async () => {
  const m = model();
  let fail = true;
  const orig = m.forward.bind(m);
  m.forward = async (r) => {
    if (fail) {
      fail = false;
      throw new Error('device error');
    }
    return orig(r);
  };
  const s = new Scheduler(m, { maxBatch: 4 });
  await assert.rejects(s.submit({ prompt: [1], options: opts }), /device error/);
  const ok = s.submit({ prompt: [2], options: opts });
  const drained = s.drain();
  assert.equal((await ok).tokens.length, 12);
  await drained;
  assert.throws(() => s.submit({ prompt: [3], options: opts }), OverloadedError, 'no new work after drain');
});
