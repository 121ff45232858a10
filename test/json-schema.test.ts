// response_format json_schema: the schema recognizer against an independent validator and
// JSON.parse, the refused keywords, and random models whose outputs must fit the schema.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { compileSchema, jsonSchemaConstraint, schemaComplete, schemaFeed, type SchemaState } from '../src/decode/json-schema.ts';
import { generate } from '../src/decode/generation.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';
import { OptionError } from '../src/errors.ts';
import type { Model } from '../src/models/registry.ts';
import { fixtureModel } from './helpers.ts';

type Schema = Record<string, unknown>;
const enc = (s: string) => Buffer.from(s, 'utf8');
const start = (schema: Schema): SchemaState => jsonSchemaConstraint(schema, []).start();

function randomSchema(r: () => number, depth: number): Schema {
  const k = r();
  if (depth > 0 && k < 0.25) {
    const props: Record<string, Schema> = {};
    for (let i = 0; i < Math.floor(r() * 4); i++) props[`k${i}${'xyz'[Math.floor(r() * 3)]}`] = randomSchema(r, depth - 1);
    return { type: 'object', properties: props, required: Object.keys(props), additionalProperties: false };
  }
  if (depth > 0 && k < 0.4) return { type: 'array', items: randomSchema(r, depth - 1) };
  if (k < 0.5) return { enum: [['red', 'green', 'gr'][Math.floor(r() * 3)], 1, 10, null, true].slice(0, 1 + Math.floor(r() * 5)) };
  if (k < 0.6) return { type: ['string', 'null'] };
  return { type: ['string', 'number', 'integer', 'boolean', 'null'][Math.floor(r() * 5)] };
}

function randomValue(s: Schema, r: () => number): unknown {
  if (s.enum) return (s.enum as unknown[])[Math.floor(r() * (s.enum as unknown[]).length)];
  const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
  const t = types[Math.floor(r() * types.length)];
  switch (t) {
    case 'object': return Object.fromEntries(Object.entries(s.properties as Record<string, Schema>).map(([k, v]) => [k, randomValue(v, r)]));
    case 'array': return Array.from({ length: Math.floor(r() * 3) }, () => randomValue(s.items as Schema, r));
    case 'string': return ['', 'a', 'say "hi"\n', 'é€𝄞', '\\'][Math.floor(r() * 5)];
    case 'number': return [0, -1.5, 3e21, 2.5e-7, 42][Math.floor(r() * 5)];
    case 'integer': return [0, -7, 12345][Math.floor(r() * 3)];
    case 'boolean': return r() < 0.5;
    default: return null;
  }
}

/** An independent check: the value has the schema's shape (keys exactly the properties, in order). */
function fits(v: unknown, s: Schema): boolean {
  if (s.enum) return (s.enum as unknown[]).some((e) => e === v);
  const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
  return types.some((t) => {
    switch (t) {
      case 'object': {
        if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
        const props = s.properties as Record<string, Schema>;
        return JSON.stringify(Object.keys(v)) === JSON.stringify(Object.keys(props)) && Object.entries(props).every(([k, ps]) => fits((v as Record<string, unknown>)[k], ps));
      }
      case 'array': return Array.isArray(v) && v.every((x) => fits(x, s.items as Schema));
      case 'string': return typeof v === 'string';
      case 'number': return typeof v === 'number';
      case 'integer': return Number.isInteger(v);
      case 'boolean': return typeof v === 'boolean';
      default: return v === null;
    }
  });
}

const rootOf = (r: () => number): Schema => {
  const props: Record<string, Schema> = {};
  for (let i = 0; i < 1 + Math.floor(r() * 3); i++) props[`p${i}`] = randomSchema(r, 3);
  return { type: 'object', properties: props, required: Object.keys(props), additionalProperties: false };
};

test('json_schema recognizer: conforming documents are accepted byte by byte, complete only at their end', () => {
  const r = mulberry32(21);
  for (let i = 0; i < 300; i++) {
    const schema = rootOf(r);
    const text = JSON.stringify(randomValue(schema, r));
    let s: SchemaState | null = start(schema);
    const bytes = enc(text);
    for (let j = 0; j < bytes.length; j++) {
      s = schemaFeed(s!, [bytes[j]]);
      assert.ok(s, `byte ${j} of ${text} (schema ${JSON.stringify(schema)})`);
      assert.equal(schemaComplete(s), j === bytes.length - 1, text.slice(0, j + 1));
    }
  }
});

test('json_schema recognizer: whatever it completes parses and fits the schema (mutated documents)', () => {
  const r = mulberry32(22);
  const alphabet = ['{', '}', '[', ']', '"', ':', ',', ' ', '0', '1', '-', '.', 'e', 't', 'n', 'u', 'l', 'x', 'p', '\\'];
  let whole = 0;
  for (let i = 0; i < 3000; i++) {
    const schema = rootOf(r);
    let text = JSON.stringify(randomValue(schema, r));
    const at = Math.floor(r() * (text.length + 1));
    const ch = alphabet[Math.floor(r() * alphabet.length)];
    text = r() < 0.5 ? text.slice(0, at) + ch + text.slice(at) : text.slice(0, at) + ch + text.slice(at + 1);
    const s = schemaFeed(start(schema), enc(text));
    if (s && schemaComplete(s)) {
      whole++;
      const v = JSON.parse(text);
      assert.ok(fits(v, schema), `${text} does not fit ${JSON.stringify(schema)}`);
    }
  }
  assert.ok(whole > 100, `mutations that stay valid were exercised (${whole})`);
});

test('json_schema: keywords outside the subset are refused by name; the root must be an object', () => {
  const refuse = (schema: unknown, re: RegExp) => assert.throws(() => compileSchema(schema), (e: unknown) => e instanceof OptionError && e.param === 'response_format' && re.test(e.message));
  refuse({ type: 'object', properties: { a: { anyOf: [{ type: 'string' }] } } }, /properties\.a: "anyOf" is not supported/);
  refuse({ type: 'object', properties: { a: { type: 'integer', minimum: 0 } } }, /"minimum" is not supported/);
  refuse({ $ref: '#/x' }, /"\$ref" is not supported/);
  refuse({ type: 'object', additionalProperties: true }, /additionalProperties must be false/);
  refuse({ type: 'array' }, /needs "items"/);
  refuse({ type: 'date' }, /"type" must be one of/);
  refuse({ type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }, /required must list properties/);
  assert.throws(() => jsonSchemaConstraint({ type: 'array', items: { type: 'string' } }, []), /root must be/);
  // enum: "1" then "10" — a finished option ends the value only when no longer one goes on
  const e = { type: 'object', properties: { n: { enum: [1, 10] } } };
  for (const [t, ok] of [['{"n":1}', true], ['{"n":10}', true], ['{"n":100}', false], ['{"n":2}', false]] as const) {
    const s = schemaFeed(start(e), enc(t));
    assert.equal(!!s && schemaComplete(s), ok, t);
  }
});

const models: Model[] = [];
after(async () => {
  for (const m of models) await m.close();
});

test('json_schema on random models (bidirectional, causal): every output fits the schema or is a valid prefix cut by max_tokens', async () => {
  // (no free strings: a random model rarely closes one within max_tokens)
  const schema = { type: 'object', properties: { name: { enum: ['Ann', 'Bo'] }, age: { type: 'integer' }, tags: { type: 'array', items: { enum: ['a', 'b'] } }, ok: { type: ['boolean', 'null'] } }, required: ['name', 'age', 'tags', 'ok'], additionalProperties: false };
  for (const arch of ['llada', 'llama'] as const) {
    const { model } = await fixtureModel({ arch, seed: 4 });
    models.push(model);
    const constraint = jsonSchemaConstraint(schema, model.codec.vocabBytes(model.args.vocabSize));
    let whole = 0;
    for (let seed = 0; seed < 6; seed++) {
      const prompt = model.codec.encodeChat([{ role: 'user', content: `Describe person ${seed}.` }]);
      const r = await generate(model, prompt, { maxTokens: 96, constraint, temperature: seed === 0 ? 0 : 1, seed });
      const text = model.codec.decode(r.tokens, true);
      if (r.finishReason === 'stop') {
        assert.ok(fits(JSON.parse(text), schema), `${arch}: ${text}`);
        whole++;
      } else assert.ok(schemaFeed(start(schema), enc(text)), `${arch}: a valid prefix: ${JSON.stringify(text)}`);
    }
    assert.ok(whole >= 1, `${arch}: some outputs complete (${whole})`);
  }
});
