// response_format json_schema: the schema recognizer against an independent validator and
// JSON.parse, the refused keywords, and random models whose outputs must fit the schema.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { compileSchema, jsonSchemaConstraint, schemaComplete, schemaFeed, type SchemaState } from '../src/decode/json-schema.ts';
import { jsonComplete, jsonFeed, jsonStart } from '../src/decode/json-grammar.ts';
import { generate } from '../src/decode/generation.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';
import { OptionError } from '../src/errors.ts';
import type { Model } from '../src/models/registry.ts';
import { fixtureModel } from './helpers.ts';
import { schemaWalk } from './schema-walk.ts';

type Schema = Record<string, unknown>;
const enc = (s: string) => Buffer.from(s, 'utf8');
const start = (schema: Schema): SchemaState => jsonSchemaConstraint(schema, []).start();

// keys that need escaping or are not ASCII, enum values that are prefixes of each other
const KEYS = ['k', 'a b', 'say "x"', 'back\\slash', 'é', '日本', '', 'tab\t'];
const ENUMS: unknown[] = ['red', 'gr', 'green', '', 'q"uote', 'é', 1, 10, 100, -1, 1.5, 1e21, null, true, false];
const SCALARS = ['string', 'number', 'integer', 'boolean', 'null'];

function randomSchema(r: () => number, depth: number): Schema {
  const k = r();
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  if (depth > 0 && k < 0.25) {
    const props: Record<string, Schema> = {};
    for (let i = 0; i < Math.floor(r() * 4); i++) props[`${pick(KEYS)}${i}`] = randomSchema(r, depth - 1);
    return { type: 'object', properties: props, required: Object.keys(props), additionalProperties: false };
  }
  if (depth > 0 && k < 0.3) return { type: 'array', items: randomSchema(r, depth - 1) };
  if (depth > 0 && k < 0.35) return { type: 'array', items: randomSchema(r, depth - 1), minItems: 1 + Math.floor(r() * 2), maxItems: 2 + Math.floor(r() * 2) };
  if (depth > 0 && k < 0.42) {
    // a type list mixing containers and scalars
    const props = { [pick(KEYS)]: randomSchema(r, depth - 1) };
    return { type: ['object', 'array', pick(SCALARS)], properties: props, items: randomSchema(r, depth - 1) };
  }
  // anyOf whose branches overlap (several readings of one text at once), const
  if (depth > 0 && k < 0.5) return { anyOf: Array.from({ length: 1 + Math.floor(r() * 3) }, () => randomSchema(r, depth - 1)), description: 'either' };
  if (k < 0.52) return { const: pick(ENUMS) };
  if (k < 0.55) return { enum: Array.from({ length: 1 + Math.floor(r() * 4) }, () => pick(ENUMS)) };
  if (k < 0.62) return { type: 'string', enum: ['x', 'xy', 'é"'] };
  if (k < 0.7) return { type: [pick(SCALARS), pick(SCALARS)] };
  return { type: pick(SCALARS) };
}

function randomValue(s: Schema, r: () => number, depth = 0): unknown {
  if (s.anyOf) return randomValue((s.anyOf as Schema[])[Math.floor(r() * (s.anyOf as Schema[]).length)], r, depth);
  if (s.const !== undefined) return s.const;
  if (s.enum) return (s.enum as unknown[])[Math.floor(r() * (s.enum as unknown[]).length)];
  const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
  const t = types[Math.floor(r() * types.length)];
  switch (t) {
    case 'object': return Object.fromEntries(Object.entries(s.properties as Record<string, Schema>).map(([k, v]) => [k, randomValue(v, r, depth + 1)]));
    case 'array': {
      const lo = (s.minItems as number | undefined) ?? 0;
      const hi = Math.min((s.maxItems as number | undefined) ?? 2, depth > 3 ? lo : 2);
      return Array.from({ length: lo + Math.floor(r() * (Math.max(lo, hi) - lo + 1)) }, () => randomValue(s.items as Schema, r, depth + 1));
    }
    case 'string': return ['', 'a', 'say "hi"\n', 'é€𝄞', '\\'][Math.floor(r() * 5)];
    case 'number': return [0, -1.5, 3e21, 2.5e-7, 42][Math.floor(r() * 5)];
    case 'integer': return [0, -7, 12345][Math.floor(r() * 3)];
    case 'boolean': return r() < 0.5;
    default: return null;
  }
}

/** An independent check: the value has the schema's shape (keys exactly the properties, in order). */
function fits(v: unknown, s: Schema, root: Schema = s): boolean {
  if (s.$ref !== undefined) {
    const ref = s.$ref as string;
    return fits(v, ref === '#' ? root : (root.$defs as Record<string, Schema>)[ref.slice('#/$defs/'.length)], root);
  }
  if (s.anyOf) return (s.anyOf as Schema[]).some((b) => fits(v, b, root));
  if (s.allOf) return fits(v, (s.allOf as Schema[])[0], root);
  if (s.const !== undefined) return v === s.const;
  if (s.enum) return (s.enum as unknown[]).some((e) => e === v);
  const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
  return types.some((t) => {
    switch (t) {
      case 'object': {
        if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
        const props = s.properties as Record<string, Schema>;
        return JSON.stringify(Object.keys(v)) === JSON.stringify(Object.keys(props)) && Object.entries(props).every(([k, ps]) => fits((v as Record<string, unknown>)[k], ps, root));
      }
      case 'array': return Array.isArray(v) && v.length >= ((s.minItems as number) ?? 0) && v.length <= ((s.maxItems as number) ?? Infinity) && v.every((x) => fits(x, s.items as Schema, root));
      case 'string': return typeof v === 'string';
      case 'number': return typeof v === 'number';
      // (a parsed body lists integer-like keys first: none are generated)
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
    let s: SchemaState | undefined = start(schema);
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

test('json_schema recognizer: from every state it reaches a byte is allowed, and random walks end in documents that fit', () => {
  const r = mulberry32(23);
  let whole = 0;
  for (let i = 0; i < 400; i++) {
    const schema = rootOf(r);
    const w = schemaWalk(start(schema), r, { maxBytes: 600, closing: '"}],0', lean: 0.6 });
    if (w.complete) {
      whole++;
      assert.ok(fits(JSON.parse(w.text), schema), `${w.text} does not fit ${JSON.stringify(schema)}`);
    }
  }
  assert.ok(whole > 200, `walks that ended (${whole})`);
});

test('json_schema: keywords outside the subset are refused by name; the root must be an object', () => {
  const refuse = (schema: unknown, re: RegExp) => assert.throws(() => compileSchema(schema), (e: unknown) => e instanceof OptionError && e.param === 'response_format' && re.test(e.message));
  refuse({ type: 'object', properties: { a: { oneOf: [{ type: 'string' }] } } }, /properties\.a: "oneOf" is not supported/);
  refuse({ type: 'object', properties: { a: { type: 'integer', minimum: 0 } } }, /"minimum" is not supported/);
  refuse({ $ref: '#/x' }, /"\$ref": "#\/x" is not supported/);
  refuse({ $ref: 'https://example.com/s.json' }, /is not supported \(only "#"/);
  refuse({ type: 'object', properties: { a: { $ref: '#/$defs/B' } }, $defs: { A: { type: 'null' } } }, /names no definition/);
  refuse({ type: 'object', properties: { a: { $ref: '#/$defs/A' } }, $defs: { A: { $ref: '#/$defs/B' }, B: { $ref: '#/$defs/A' } } }, /only refers to itself/);
  refuse({ type: 'object', properties: { a: { $ref: '#/$defs/A' } }, $defs: { A: { anyOf: [{ type: 'null' }, { $ref: '#/$defs/A' }] } } }, /refers back to itself before any value/);
  refuse({ type: 'object', properties: { a: { anyOf: [{ type: 'string' }], type: 'string' } } }, /"anyOf" cannot be combined with "type"/);
  refuse({ type: 'object', properties: { a: { $ref: '#', type: 'object' } } }, /"\$ref" cannot be combined with "type"/);
  refuse({ type: 'object', properties: { a: { allOf: [{ type: 'string' }, { type: 'string' }] } } }, /"allOf" is supported with exactly one schema/);
  refuse({ type: 'object', properties: { a: { anyOf: [] } } }, /"anyOf" must be a non-empty array/);
  refuse({ type: 'object', properties: { a: { const: 1, enum: [1] } } }, /"const" and "enum" together/);
  refuse({ type: 'object', properties: { a: { type: 'array', items: { type: 'null' }, minItems: 3, maxItems: 2 } } }, /minItems is larger than maxItems/);
  refuse({ type: 'object', properties: { a: { type: 'array', items: { type: 'null' }, minItems: -1 } } }, /"minItems" must be an integer/);
  refuse({ type: 'object', properties: { a: { type: 'string', maxItems: 2 } } }, /"maxItems" applies to arrays/);
  refuse({ type: 'object', properties: { a: { type: 'string', const: 1 } } }, /enum value 1 is not of type string/);
  refuse({ type: 'object', properties: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, { anyOf: [{ type: 'null' }, { type: 'string' }, { type: 'integer' }] }])) }, /more than 256 anyOf branches/);
  refuse({ type: 'object', additionalProperties: true }, /additionalProperties must be false/);
  refuse({ type: 'array' }, /needs "items"/);
  refuse({ type: 'date' }, /"type" must be one of/);
  refuse({ type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }, /required must list properties/);
  // type and enum together: every value of the type; keywords that do not apply to the type
  refuse({ type: 'string', enum: ['x', 5] }, /enum value 5 is not of type string/);
  refuse({ type: 'integer', enum: [1, 1.5] }, /enum value 1.5 is not of type integer/);
  refuse({ type: 'bogus', enum: ['x'] }, /"type" must be one of/);
  refuse({ type: 'string', items: { type: 'string' } }, /"items" applies to arrays/);
  refuse({ enum: ['a'], properties: {} }, /"properties" applies to objects/);
  refuse({ type: 'object', properties: null }, /properties must be an object/);
  refuse({ type: 'object', properties: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`k${i}`, { type: 'null' }])) }, /more than 1000 properties/);
  refuse({ enum: Array.from({ length: 1001 }, (_, i) => i) }, /more than 1000 enum values/);
  assert.throws(() => jsonSchemaConstraint({ type: 'array', items: { type: 'string' } }, []), /root must be/);
  assert.throws(() => jsonSchemaConstraint({ anyOf: [{ type: 'object' }, { type: 'string' }] }, []), /root must be/);
  // minItems / maxItems
  const arr = { type: 'object', properties: { a: { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 2 } } };
  for (const [t, ok] of [['{"a":[]}', false], ['{"a":[1]}', true], ['{"a":[1,2]}', true], ['{"a":[1,2,3]}', false]] as const) {
    const st = schemaFeed(start(arr), enc(t));
    assert.equal(!!st && schemaComplete(st), ok, t);
  }
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

test('numbers: at most 24 digits in a row (integer part, fraction, exponent) in JSON mode and schemas; a capped number can still end', () => {
  const d = (n: number) => '1'.repeat(n);
  const schema = { type: 'object', properties: { x: { type: 'number' } } };
  for (const [num, ok] of [[d(24), true], [d(25), false], [`-${d(24)}`, true], [`-${d(25)}`, false], [`1.${d(24)}`, true], [`1.${d(25)}`, false], [`1e${d(24)}`, true], [`${d(24)}.${d(24)}e-${d(24)}`, true], [`${d(24)}.${d(25)}`, false], [String(-1.2345678901234567e-7), true], [String(0.0000016372234513983128), true], [String(123456789012345678901), true]] as const) {
    const s = schemaFeed(start(schema), enc(`{"x":${num}}`));
    assert.equal(!!s && schemaComplete(s), ok, `schema ${num}`);
    const j = jsonFeed(jsonStart(), enc(`{"x":${num}}`));
    assert.equal(!!j && jsonComplete(j), ok, `JSON mode ${num}`);
  }
});

// what pydantic emits for a recursive model with optional fields and a literal
const TREE: Schema = {
  $defs: {
    Node: {
      type: 'object',
      title: 'Node',
      properties: {
        kind: { const: 'node', title: 'Kind' },
        label: { anyOf: [{ type: 'string' }, { type: 'null' }], default: null },
        children: { type: 'array', items: { $ref: '#/$defs/Node' } },
        size: { anyOf: [{ type: 'integer' }, { type: 'number' }, { type: 'null' }] },
      },
      required: ['kind', 'children'],
    },
  },
  type: 'object',
  properties: { root: { $ref: '#/$defs/Node' }, meta: { allOf: [{ $ref: '#/$defs/Meta' }], description: 'about the tree' }, again: { anyOf: [{ $ref: '#' }, { type: 'null' }] } },
  definitions: {},
};
(TREE.$defs as Record<string, Schema>).Meta = { type: 'object', properties: { v: { enum: [1, 2] } } };

test('json_schema $ref (recursive), anyOf (overlapping), allOf of one, const: exact documents accepted, walks end in documents that fit', () => {
  const node = (label: string | null, kids: unknown[], size: number | null = null) => ({ kind: 'node', label, children: kids, size });
  const docs = [
    { root: node(null, []), meta: { v: 1 }, again: null },
    { root: node('a', [node('b', [node(null, [], 3)], 2.5)]), meta: { v: 2 }, again: { root: node('c', []), meta: { v: 1 }, again: null } },
  ];
  for (const d of docs) {
    const text = JSON.stringify(d);
    const st = schemaFeed(start(TREE), enc(text));
    assert.ok(st && schemaComplete(st), text);
    assert.ok(fits(d, TREE));
  }
  for (const bad of ['{"root":{"kind":"leaf"', '{"root":{"kind":"node","label":1', '{"root":{"kind":"node","label":null,"children":[{"kind":"node","label":null,"children":[],"size":"x"']) assert.equal(schemaFeed(start(TREE), enc(bad)), undefined, bad);
  // random walks through the recursion and the overlapping number branches (integer and number read "3" both ways)
  const r = mulberry32(31);
  let whole = 0;
  for (let i = 0; i < 300; i++) {
    const w = schemaWalk(start(TREE), r, { maxBytes: 800, closing: '"}]n0', lean: 0.7 });
    if (w.complete) {
      whole++;
      assert.ok(fits(JSON.parse(w.text), TREE), w.text);
    }
  }
  assert.ok(whole > 100, `walks that ended (${whole})`);
});

test('json_schema: nested anyOf through $refs is flattened (one reading, not 16^7); aliases of definitions in progress; no infinite documents', () => {
  // A0..A6 each: anyOf of 16 references to the next; A7 a string
  const defs: Record<string, Schema> = { A7: { type: 'string' } };
  for (let i = 6; i >= 0; i--) defs[`A${i}`] = { anyOf: Array.from({ length: 16 }, () => ({ $ref: `#/$defs/A${i + 1}` })) };
  const chain = { type: 'object', properties: { s: { $ref: '#/$defs/A0' } }, $defs: defs };
  const t0 = performance.now();
  const st = schemaFeed(start(chain), enc('{"s":"'));
  assert.ok(st && st.length === 1 && performance.now() - t0 < 500);
  // a definition that aliases one still being compiled
  const alias = { type: 'object', properties: { n: { $ref: '#/$defs/Node' } }, $defs: { Node: { type: 'object', properties: { kids: { type: 'array', items: { $ref: '#/$defs/Alias' } }, v: { allOf: [{ $ref: '#/$defs/Leaf' }] } } }, Alias: { $ref: '#/$defs/Node' }, Leaf: { $ref: '#/$defs/Alias2' }, Alias2: { type: 'integer' } } };
  for (const [t, ok] of [['{"n":{"kids":[{"kids":[],"v":1}],"v":2}}', true], ['{"n":{"kids":[{"kids":[],"v":"x"}],"v":2}}', false]] as const) {
    const s = schemaFeed(start(alias), enc(t));
    assert.equal(!!s && schemaComplete(s), ok, t);
  }
  // every document infinite: refused; an optional way out: kept, and the infinite option removed
  assert.throws(() => compileSchema({ type: 'object', properties: { child: { $ref: '#' } } }), /no finite document/);
  const arr = { type: 'object', properties: { a: { type: 'array', items: { type: 'object', properties: { again: { $ref: '#/$defs/Loop' } } } } }, $defs: { Loop: { type: 'object', properties: { l: { $ref: '#/$defs/Loop' } } } } };
  assert.ok(schemaComplete(schemaFeed(start(arr), enc('{"a":[]}'))!));
  assert.equal(schemaFeed(start(arr), enc('{"a":[{')), undefined);
  const opt = { type: 'object', properties: { x: { anyOf: [{ $ref: '#/$defs/Loop' }, { type: 'null' }] } }, $defs: { Loop: { type: 'object', properties: { l: { $ref: '#/$defs/Loop' } } } } };
  assert.ok(schemaComplete(schemaFeed(start(opt), enc('{"x":null}'))!));
  assert.equal(schemaFeed(start(opt), enc('{"x":{')), undefined);
  // 70 overlapping branches (the same first bytes): every one can still be written
  const many = { type: 'object', properties: { o: { anyOf: Array.from({ length: 70 }, (_, i) => ({ type: 'object', properties: { a: { type: 'string' }, b: { const: i } } })) } } };
  for (const i of [0, 63, 64, 69]) assert.ok(schemaComplete(schemaFeed(start(many), enc(`{"o":{"a":"x","b":${i}}}`))!), `branch ${i}`);
});
