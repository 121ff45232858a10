// response_format json_schema: the answer is a JSON document of a given schema, by the same
// constrained decoding as JSON mode. The schema subset is the one structured-output APIs
// use in strict mode: `type` (object, array, string, number, integer, boolean, null, or a
// list of them), `properties` (every property is written, in the schema's order),
// `required`, `additionalProperties: false`, `items`, `enum`; `description`, `title` and
// `$schema` are ignored. Anything else (anyOf, $ref, pattern, minimum, ...) is refused when
// the schema is compiled, never silently dropped. Output is compact: no whitespace.
//
// The recognizer is a stack of pending parts (literal bytes, a value of a schema, the inside
// of a string, number, enum or array), consumed byte by byte.

import { OptionError } from '../errors.ts';
import type { Constraint } from './constraint.ts';
import { N, numberByte, numberStart, NUM_END, stringByte, STR_END } from './json-grammar.ts';

type JsonType = 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean' | 'null';

export interface SchemaNode {
  types: Set<JsonType>;
  /** object: the properties in order */
  props: { key: string; node: SchemaNode }[];
  /** array: the items' schema */
  items: SchemaNode | null;
  /** enum: the allowed values, serialized */
  enum: string[] | null;
}

const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);
const IGNORED = new Set(['description', 'title', '$schema', 'required', 'additionalProperties', 'strict']);
const MAX_SCHEMA_DEPTH = 16;
const MAX_PROPERTIES = 256;

/** Compile a JSON schema (the subset above) or throw an OptionError naming what is not supported. */
export function compileSchema(schema: unknown, path = 'schema', depth = 0): SchemaNode {
  const bad = (msg: string): never => {
    throw new OptionError('response_format', `json_schema: ${path}: ${msg}`);
  };
  if (depth > MAX_SCHEMA_DEPTH) bad(`nested deeper than ${MAX_SCHEMA_DEPTH} levels`);
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) bad('a schema must be an object');
  const s = schema as Record<string, unknown>;
  for (const k of Object.keys(s)) if (!IGNORED.has(k) && !['type', 'properties', 'items', 'enum'].includes(k)) bad(`"${k}" is not supported (supported: type, properties, required, additionalProperties: false, items, enum)`);
  if (s.additionalProperties !== undefined && s.additionalProperties !== false) bad('additionalProperties must be false (every property is listed)');
  let types: Set<JsonType>;
  let en: string[] | null = null;
  if (s.enum !== undefined) {
    if (!Array.isArray(s.enum) || s.enum.length === 0) bad('enum must be a non-empty array');
    const vals = s.enum as unknown[];
    if (vals.some((v) => v !== null && typeof v === 'object')) bad('enum values must be strings, numbers, booleans or null');
    en = [...new Set(vals.map((v) => JSON.stringify(v)))];
    types = new Set(vals.map((v) => (v === null ? 'null' : typeof v === 'number' ? 'number' : (typeof v as JsonType))));
  } else {
    const t = s.type;
    const list = Array.isArray(t) ? t : [t];
    if (t === undefined || list.length === 0 || list.some((x) => typeof x !== 'string' || !TYPES.has(x))) bad('"type" must be one of object, array, string, number, integer, boolean, null (or a list of them)');
    types = new Set(list as JsonType[]);
  }
  const props: SchemaNode['props'] = [];
  if (types.has('object') && !en) {
    const p = s.properties ?? {};
    if (!p || typeof p !== 'object' || Array.isArray(p)) bad('properties must be an object');
    const keys = Object.keys(p as object);
    if (keys.length > MAX_PROPERTIES) bad(`more than ${MAX_PROPERTIES} properties`);
    const req = s.required;
    if (req !== undefined && (!Array.isArray(req) || req.some((k) => typeof k !== 'string' || !keys.includes(k)))) bad('required must list properties of this object');
    for (const key of keys) props.push({ key, node: compileSchema((p as Record<string, unknown>)[key], `${path}.properties.${key}`, depth + 1) });
  }
  let items: SchemaNode | null = null;
  if (types.has('array') && !en) {
    if (s.items === undefined) bad('an array needs "items"');
    items = compileSchema(s.items, `${path}.items`, depth + 1);
  }
  return { types, props, items, enum: en };
}

// ---------------------------------------------------------------- the recognizer

type Part =
  | { k: 'lit'; bytes: Uint8Array; at: number }
  | { k: 'value'; node: SchemaNode }
  | { k: 'str'; esc: number }
  | { k: 'num'; n: N; integer: boolean }
  | { k: 'enum'; options: Uint8Array[]; at: number }
  | { k: 'arr'; items: SchemaNode; first: boolean };

/** What is still to come, the next part last. Parts are never mutated: a step copies the top one. */
export type SchemaState = readonly Part[];

const enc = (s: string) => new TextEncoder().encode(s);

function objectParts(node: SchemaNode): Part[] {
  // after '{': "k0":v0,"k1":v1,...} pushed in reverse
  const seq: Part[] = [];
  node.props.forEach((p, i) => {
    seq.push({ k: 'lit', bytes: enc(`${i > 0 ? ',' : ''}${JSON.stringify(p.key)}:`), at: 0 });
    seq.push({ k: 'value', node: p.node });
  });
  seq.push({ k: 'lit', bytes: enc('}'), at: 0 });
  return seq.reverse();
}

/** Start a value of `node` with byte b: the parts that follow it, or null. */
function startValue(node: SchemaNode, b: number): Part[] | null {
  if (node.enum) {
    const options = node.enum.map(enc).filter((o) => o[0] === b);
    return options.length ? [{ k: 'enum', options, at: 1 }] : null;
  }
  const t = node.types;
  if (b === 0x7b && t.has('object')) return objectParts(node);
  if (b === 0x5b && t.has('array')) return [{ k: 'arr', items: node.items!, first: true }];
  if (b === 0x22 && t.has('string')) return [{ k: 'str', esc: 0 }];
  if (b === 0x74 && t.has('boolean')) return [{ k: 'lit', bytes: enc('rue'), at: 0 }];
  if (b === 0x66 && t.has('boolean')) return [{ k: 'lit', bytes: enc('alse'), at: 0 }];
  if (b === 0x6e && t.has('null')) return [{ k: 'lit', bytes: enc('ull'), at: 0 }];
  const num = t.has('number') || t.has('integer');
  const n = num ? numberStart(b) : -1;
  if (n !== -1) return [{ k: 'num', n, integer: !t.has('number') }];
  return null;
}

/** Feed one byte: the new stack, or null. */
export function schemaStep(st: SchemaState, b: number): SchemaState | null {
  if (st.length === 0) return null;
  const top = st[st.length - 1];
  const rest = st.slice(0, -1);
  switch (top.k) {
    case 'lit': {
      if (top.bytes[top.at] !== b) return null;
      return top.at + 1 === top.bytes.length ? rest : [...rest, { ...top, at: top.at + 1 }];
    }
    case 'value': {
      const parts = startValue(top.node, b);
      return parts ? [...rest, ...parts] : null;
    }
    case 'str': {
      const e = stringByte(top.esc, b);
      if (e === -1) return null;
      return e === STR_END ? rest : [...rest, { k: 'str', esc: e }];
    }
    case 'num': {
      const n = numberByte(top.n, b, top.integer);
      if (n === -1) return null;
      return n === NUM_END ? schemaStep(rest, b) : [...rest, { ...top, n }];
    }
    case 'enum': {
      const options = top.options.filter((o) => o.length > top.at && o[top.at] === b);
      if (options.length) return [...rest, { k: 'enum', options, at: top.at + 1 }];
      // a finished option ends the value; the byte belongs to what follows
      return top.options.some((o) => o.length === top.at) ? schemaStep(rest, b) : null;
    }
    case 'arr': {
      if (b === 0x5d) return rest;
      if (top.first) {
        const parts = startValue(top.items, b);
        return parts ? [...rest, { k: 'arr', items: top.items, first: false }, ...parts] : null;
      }
      return b === 0x2c ? [...rest, { k: 'arr', items: top.items, first: false }, { k: 'value', node: top.items }] : null;
    }
  }
}

export function schemaComplete(st: SchemaState): boolean {
  return st.length === 0;
}

export function schemaFeed(st: SchemaState, bytes: ArrayLike<number>): SchemaState | null {
  let s: SchemaState | null = st;
  for (let i = 0; i < bytes.length && s; i++) s = schemaStep(s, bytes[i]);
  return s;
}

/** A constraint to documents of `schema` (its root must be an object) over a vocabulary. */
export function jsonSchemaConstraint(schema: unknown, tokenBytes: readonly (Uint8Array | null)[]): Constraint<SchemaState> {
  const root = compileSchema(schema);
  if (!root.types.has('object') || root.types.size !== 1 || root.enum) throw new OptionError('response_format', 'json_schema: the root must be {"type": "object", ...}');
  return {
    start: () => [{ k: 'value', node: root }],
    next(state, token) {
      const bytes = tokenBytes[token];
      if (!bytes || bytes.length === 0) return null;
      return schemaFeed(state, bytes);
    },
    complete: schemaComplete,
  };
}
