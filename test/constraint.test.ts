// JSON mode: the byte recognizer against JSON.parse, and constrained generation on random
// fixture models of each attention kind, whose outputs must parse whatever the weights.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { jsonComplete, jsonFeed, jsonObjectConstraint, jsonStart, MAX_NEWLINES, MAX_SPACES } from '../src/decode/json-grammar.ts';
import { generate, type StepEvent } from '../src/decode/generation.ts';
import { MOCK_EOS, prefer, scriptedModel } from './mock.ts';
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
    const newlines = new RegExp(`(\\n[ \\t\\r]*){${MAX_NEWLINES + 1}}`);
    const spaces = new RegExp(`[ \\t\\r]{${MAX_SPACES + 1}}`);
    const inScope = ok && value !== null && typeof value === 'object' && !Array.isArray(value) && !/^\s|\s$/.test(text) && !newlines.test(text) && !spaces.test(text);
    if (whole) assert.ok(ok, `recognized but JSON.parse fails: ${JSON.stringify(text)}`);
    if (inScope) assert.ok(whole, `JSON.parse takes it, the recognizer does not: ${JSON.stringify(text)}`);
    if (ok) parsed++;
    else rejected++;
  }
  assert.ok(parsed > 200 && rejected > 200, `both kinds exercised (${parsed} valid, ${rejected} invalid)`);
  // the caps: spaces on a line, newlines in a row, nesting; pretty-printed output fits
  assert.ok(accepts(`{${' '.repeat(MAX_SPACES)}"a":1}`));
  assert.equal(accepts(`{${' '.repeat(MAX_SPACES + 1)}`), null);
  assert.ok(accepts(`{${'\n'.repeat(MAX_NEWLINES)}"a":1}`));
  assert.equal(accepts(`{${'\n'.repeat(MAX_NEWLINES + 1)}`), null);
  const deep = JSON.stringify({ a: { b: { c: { d: { e: { f: { g: { h: [1, { i: 2 }] } } } } } } } }, null, 4);
  assert.ok(accepts(deep) && jsonComplete(accepts(deep)!), 'indented 4 spaces, 9 deep');
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
    const constraint = jsonObjectConstraint(model.codec.vocabBytes(model.args.vocabSize));
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
    }
    // sampled outputs end too (the generation ends once the object is whole)
    assert.ok(whole >= 1, `${arch}: some outputs complete`);
  }
});

// A scripted model over a tiny vocabulary of JSON pieces: the exact tokens and commits per step.
const PIECES: Record<number, string> = { 3: '{', 4: '"a"', 5: ':', 6: '1', 7: '}', 8: 'x', 9: ',', 10: ' ' };
const BYTES = Array.from({ length: 16 }, (_, id) => (PIECES[id] ? enc(PIECES[id]) : null));
const WANT = [3, 4, 5, 6, 7]; // {"a":1}

/** After a prompt of 2: the answer WANT then end tokens; `weak` positions prefer their token
 * weakly (probability ~0.33); at `xFirst` the invalid 'x' is the model's first choice. */
function jsonModel(shifted: boolean, o: { weak?: number[]; xFirst?: number[] } = {}) {
  return scriptedModel(16, (p) => {
    const i = p - 2;
    if (i < 0 || i >= WANT.length) return prefer(16, MOCK_EOS, 9);
    const l = prefer(16, WANT[i], o.weak?.includes(i) ? 2 : 9);
    if (o.xFirst?.includes(i)) l[8] = 12;
    return l;
  }, 4, shifted);
}

test('JSON mode on a scripted model: confident runs commit together, a weak position ends a run, the first position is always committed, rows are read per position', async () => {
  const constraint = jsonObjectConstraint(BYTES);
  for (const shifted of [false, true])
    for (const cache of ['none', 'prefix', 'dual'] as const) {
      const label = `${cache}${shifted ? ', shifted' : ''}`;
      const run = async (o: { weak?: number[]; xFirst?: number[] }, extra: object = {}) => {
        const per: number[] = [];
        const r = await generate(jsonModel(shifted, o), [0, 0], { maxTokens: 32, cache, constraint, onStep: (e: StepEvent) => per.push(e.committed.length), ...extra });
        return { r, per };
      };
      // all confident: the whole object in one forward, ended without an end token
      const a = await run({});
      assert.deepEqual(a.r.tokens, WANT, label);
      assert.equal(a.r.finishReason, 'stop');
      assert.deepEqual(a.per, [5], label);
      // position 2 (':') weak: the first step stops before it, the next commits it first
      const b = await run({ weak: [2] });
      assert.deepEqual(b.r.tokens, WANT, label);
      assert.deepEqual(b.per, [2, 3], label);
      // the model's first choice at position 0 is 'x' (not JSON): '{' is chosen and committed
      // (the first position always is, confident or not); the confident rest follows
      const c = await run({ xFirst: [0] }, { logprobs: 1 });
      assert.deepEqual(c.r.tokens, WANT, label);
      assert.deepEqual(c.per, [5], label);
      // ... but an 'x' preferred further on ends the run there: that row's allowed choice is weak
      const e = await run({ xFirst: [3] });
      assert.deepEqual(e.r.tokens, WANT, label);
      assert.deepEqual(e.per, [3, 2], label);
      const lp = c.r.logprobs![0];
      assert.equal(lp.token, 3);
      assert.ok(lp.logprob < Math.log(0.1) && lp.top[0].token === 8, `${label}: the constrained choice's own log-probability (${lp.logprob})`);
      // ignore_eos (no end tokens) and an object that fills max_tokens exactly both end at '}'
      for (const extra of [{ stopTokens: [] }, { maxTokens: 5, canvas: 'fixed' }]) {
        const d = await run({}, extra);
        assert.deepEqual(d.r.tokens, WANT, `${label} ${JSON.stringify(extra)}`);
        assert.equal(d.r.finishReason, 'stop');
      }
    }
});

test('candidates by first byte: a superset of the allowed tokens in every state (JSON mode and json_schema)', async () => {
  const { jsonSchemaConstraint } = await import('../src/decode/json-schema.ts');
  // every printable ASCII byte (a byte-level vocabulary has them all), pairs of JSON's own
  // characters, a few longer pieces
  const ascii = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
  const alphabet = '{}[]":,0123456789-.eE+tfrulnsa \\\n'.split('');
  const vocab = [...new Set([...ascii, '\n', ...alphabet.flatMap((a) => alphabet.map((b) => a + b)), 'é', '"}', ',"a":'])].map((t) => enc(t));
  const schema = { type: 'object', properties: { a: { type: 'array', items: { type: ['integer', 'null'] } }, b: { enum: ['x', 'xy'] } } };
  const r = mulberry32(31);
  for (const c of [jsonObjectConstraint(vocab), jsonSchemaConstraint(schema, vocab)] as const) {
    const con = c as ReturnType<typeof jsonObjectConstraint>;
    let s = con.start();
    for (let step = 0; step < 200 && !con.complete(s); step++) {
      const cands = new Set(Array.from(con.candidates!(s)));
      const allowed = vocab.map((_, t) => t).filter((t) => con.next(s, t) !== null);
      for (const t of allowed) assert.ok(cands.has(t), `token ${JSON.stringify(Buffer.from(vocab[t]).toString())} allowed but not a candidate`);
      assert.ok(allowed.length > 0);
      s = con.next(s, allowed[Math.floor(r() * allowed.length)])!;
    }
  }
});

test('a constrained output that the vocabulary cannot continue fails with a typed server error', async () => {
  const { ConstraintError } = await import('../src/errors.ts');
  // a vocabulary whose only JSON piece is '{': after it nothing can follow
  const only = Array.from({ length: 16 }, (_, id) => (id === 3 ? enc('{') : null));
  await assert.rejects(generate(jsonModel(false), [0, 0], { maxTokens: 16, constraint: jsonObjectConstraint(only) }), (e: unknown) => e instanceof ConstraintError && e.status === 500 && /after 1 tokens/.test(e.message));
});
