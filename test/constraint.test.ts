// JSON mode: the byte recognizer against JSON.parse, and constrained generation on random
// fixture models of each attention kind, whose outputs must parse whatever the weights.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { jsonComplete, jsonFeed, jsonObjectConstraint, jsonStart, MAX_WHITESPACE } from '../src/decode/json-grammar.ts';
import { generate } from '../src/decode/generation.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';
import type { Model } from '../src/models/registry.ts';
import { fixtureModel } from './helpers.ts';

const enc = (s: string) => Buffer.from(s, 'utf8');

function randomValue(r: () => number, depth: number): unknown {
  const k = r();
  if (depth > 0 && k < 0.2) return Object.fromEntries(Array.from({ length: Math.floor(r() * 4) }, (_, i) => [randomString(r) + i, randomValue(r, depth - 1)]));
  if (depth > 0 && k < 0.35) return Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth - 1));
  if (k < 0.55) return randomString(r);
  if (k < 0.65) return Math.floor((r() - 0.5) * 2000);
  if (k < 0.75) return (r() - 0.5) * 10 ** Math.floor(r() * 40 - 20); // fractions and exponents
  if (k < 0.82) return true;
  if (k < 0.9) return false;
  return null;
}

function randomString(r: () => number): string {
  const parts = ['a', 'Z', ' ', '"', '\\', '/', '\n', '\t', '\u0001', 'é', '€', '𝄞', '{', '}', ':', ','];
  return Array.from({ length: Math.floor(r() * 6) }, () => parts[Math.floor(r() * parts.length)]).join('');
}

const accepts = (text: string) => jsonFeed(jsonStart(), enc(text));

test('JSON recognizer: every prefix of a valid object is accepted, and only the whole is complete', () => {
  const r = mulberry32(11);
  for (let i = 0; i < 300; i++) {
    const obj = Object.fromEntries([['k', randomValue(r, 4)], ['n', randomValue(r, 2)]]);
    assert.equal(accepts(` ${JSON.stringify(obj)}`), null, 'no leading whitespace');
    for (const text of [JSON.stringify(obj), JSON.stringify(obj, null, 1)]) {
      const bytes = enc(text);
      let s = jsonStart();
      for (let j = 0; j < bytes.length; j++) {
        const next = jsonFeed(s, [bytes[j]]);
        assert.ok(next, `byte ${j} of ${text}`);
        s = next;
        assert.equal(jsonComplete(s), j === bytes.length - 1, `complete only at the end: ${text.slice(0, j + 1)}`);
      }
    }
  }
});

test('JSON recognizer agrees with JSON.parse on mutated documents', () => {
  const r = mulberry32(12);
  const alphabet = ['{', '}', '[', ']', '"', ':', ',', ' ', '\n', '0', '1', '-', '.', 'e', 'E', '+', 't', 'r', 'u', 'n', 'l', 'x', '\\', 'u', 'a', 'f'];
  let parsed = 0;
  let rejected = 0;
  for (let i = 0; i < 4000; i++) {
    let text = JSON.stringify({ a: randomValue(r, 3), b: [1, 'x', null] });
    for (let m = 0; m < 1 + Math.floor(r() * 2); m++) {
      const at = Math.floor(r() * (text.length + 1));
      const op = r();
      const ch = alphabet[Math.floor(r() * alphabet.length)];
      text = op < 0.4 ? text.slice(0, at) + ch + text.slice(at) : op < 0.7 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + ch + text.slice(at + 1);
    }
    let ok: boolean;
    let value: unknown;
    try {
      value = JSON.parse(text);
      ok = true;
    } catch {
      ok = false;
    }
    const s = accepts(text);
    const whole = s !== null && jsonComplete(s);
 // the recognizer asks for an object, no whitespace around it and bounded whitespace runs
    const inScope = ok && value !== null && typeof value === 'object' && !Array.isArray(value) && !/^\s|\s$/.test(text) && !new RegExp(`\\s{${MAX_WHITESPACE + 1}}`).test(text);
    if (whole) assert.ok(ok, `recognized but JSON.parse fails: ${JSON.stringify(text)}`);
    if (inScope) assert.ok(whole, `JSON.parse takes it, the recognizer does not: ${JSON.stringify(text)}`);
    if (ok) parsed++;
    else rejected++;
  }
  assert.ok(parsed > 200 && rejected > 200, `both kinds exercised (${parsed} valid, ${rejected} invalid)`);
  // the caps: whitespace runs and nesting
  assert.equal(accepts(`{${' '.repeat(MAX_WHITESPACE)}"a":1}`) !== null, true);
  assert.equal(accepts(`{${' '.repeat(MAX_WHITESPACE + 1)}`), null);
  assert.equal(accepts(`{"a":${'['.repeat(40)}`), null);
  // a top-level value that is not an object, text after the object
  for (const t of ['[1]', '"x"', '1', '{"a":1} ', '{"a":1}x', '{"a":01}', '{"a":1.}', '{"a":tru}', '{"a" 1}', '{,}', '{"a":"\u0001"}'])
    assert.ok(!(accepts(t) && jsonComplete(accepts(t)!)), t);
});

const models: Model[] = [];
after(async () => {
  for (const m of models) await m.close();
});

test('JSON mode on random models (bidirectional, shifted, causal): every output parses or is a prefix cut by max_tokens', async () => {
  for (const arch of ['llada', 'dream', 'llama'] as const) {
    const { model } = await fixtureModel({ arch, seed: 3 });
    models.push(model);
    const constraint = jsonObjectConstraint(model.codec.vocabBytes(model.args.vocabSize), model.special.stop);
    let whole = 0;
    for (let seed = 0; seed < 6; seed++) {
      const prompt = model.codec.encodeChat([{ role: 'user', content: `Give me JSON number ${seed}.` }]);
      const r = await generate(model, prompt, { maxTokens: 48, constraint, temperature: seed === 0 ? 0 : 1, seed, policy: 'threshold', threshold: 0.5 });
      const text = model.codec.decode(r.tokens, true);
      if (r.finishReason === 'stop') {
        const v = JSON.parse(text);
        assert.ok(v && typeof v === 'object' && !Array.isArray(v), `${arch}: ${text}`);
        whole++;
      } else {
        assert.equal(r.finishReason, 'length');
        assert.ok(accepts(text), `${arch}: a valid prefix: ${JSON.stringify(text)}`);
      }
      assert.ok(r.tokens.every((t) => t !== model.special.mask));
    }
    // sampled outputs end too (stop tokens become allowed once the object is whole)
    assert.ok(whole >= 1, `${arch}: some outputs complete`);
  }
});
