// response_format json_schema: the answer is a JSON document of a given schema, by the same
// constrained decoding as JSON mode. The schema subset is the one structured-output APIs
// use in strict mode: `type` (object, array, string, number, integer, boolean, null, or a
// list of them), `properties` (every property is written, in the schema's order — integer-
// like keys excepted: a parsed JSON body lists those first), `required`,
// `additionalProperties: false`, `items`, `enum` (with `type`, every value must be of it);
// `description`, `title` and `$schema` are ignored. Anything else (anyOf, $ref, pattern,
// minimum, ...) is refused when the schema is compiled, never silently dropped, and so are
// keywords that do not apply to the schema's type. Output is compact: no whitespace.
//
// The recognizer is a stack of pending parts (literal bytes, a value of a schema, the inside
// of a string, number, enum or array), consumed byte by byte. The stack is an immutable
// linked list, so testing a token against a state copies nothing it does not change.

import { OptionError } from '../errors.ts';
import { candidatesByFirstByte, firstByteIndex, type Constraint } from './constraint.ts';
import { digitRun, N, numberByte, numberStart, NUM_END, stringByte, STR_END } from './json-grammar.ts';

type JsonType = 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean' | 'null';

export interface SchemaNode {
  types: Set<JsonType>;
  /** object: the properties in order, each with its literal `"key":` (after the first: `,"key":`) */
  props: { key: string; lit: Uint8Array; node: SchemaNode }[];
  /** array: the items' schema */
  items: SchemaNode | null;
  /** enum: the allowed values as a byte trie of their serializations */
  enum: Trie | null;
  /** array: at least one item (internal: tool_choice "required") */
  nonEmpty?: boolean;
  /** one of several alternatives told apart by a literal start (internal: tool calls,
   * `{"name":"f","arguments":` then f's schema then `}`); no alternative's start is a prefix of another's */
  alt?: AltTrie;
}

/** A byte trie of literal starts; at a leaf (`then`) the rest is a value of `node`, then `close`. */
export interface AltTrie {
  next: Map<number, AltTrie>;
  then?: { node: SchemaNode; close: Uint8Array };
}

/** A byte trie: children by byte; `end`: a value ends here. */
export interface Trie {
  next: Map<number, Trie>;
  end: boolean;
}

const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);
const KNOWN = new Set(['type', 'properties', 'items', 'enum', 'required', 'additionalProperties', 'description', 'title', '$schema']);
export const SCHEMA_LIMITS = { depth: 16, properties: 1000, enumValues: 1000, literalBytes: 100_000 };

const encoder = new TextEncoder();
const enc = (s: string) => encoder.encode(s);

function typeOf(v: unknown): JsonType {
  return v === null ? 'null' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : (typeof v as JsonType);
}

/** Where a schema comes from, for error messages: the request field and a label. */
export interface SchemaSource {
  param: string;
  label: string;
}
interface Budget extends SchemaSource {
  properties: number;
  enumValues: number;
  literalBytes: number;
}

/** Compile a JSON schema (the subset above) or throw an OptionError naming what is not supported. */
export function compileSchema(schema: unknown, from: SchemaSource = { param: 'response_format', label: 'json_schema' }, path = 'schema'): SchemaNode {
  const budget: Budget = { ...from, properties: 0, enumValues: 0, literalBytes: 0 };
  return compileNode(schema, path, 0, budget);
}

function compileNode(schema: unknown, path: string, depth: number, budget: Budget): SchemaNode {
  const bad = (msg: string): never => {
    throw new OptionError(budget.param, `${budget.label}: ${path}: ${msg}`);
  };
  if (depth > SCHEMA_LIMITS.depth) bad(`nested deeper than ${SCHEMA_LIMITS.depth} levels`);
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) bad('a schema must be an object');
  const s = schema as Record<string, unknown>;
  for (const k of Object.keys(s)) if (!KNOWN.has(k)) bad(`"${k}" is not supported (supported: type, properties, required, additionalProperties: false, items, enum)`);
  let types: Set<JsonType> | null = null;
  if (s.type !== undefined) {
    const list = Array.isArray(s.type) ? s.type : [s.type];
    if (list.length === 0 || list.some((x) => typeof x !== 'string' || !TYPES.has(x))) bad('"type" must be one of object, array, string, number, integer, boolean, null (or a list of them)');
    types = new Set(list as JsonType[]);
  }
  let trie: Trie | null = null;
  if (s.enum !== undefined) {
    if (!Array.isArray(s.enum) || s.enum.length === 0) bad('enum must be a non-empty array');
    const vals = s.enum as unknown[];
    budget.enumValues += vals.length;
    if (budget.enumValues > SCHEMA_LIMITS.enumValues) bad(`more than ${SCHEMA_LIMITS.enumValues} enum values in the schema`);
    for (const v of vals) {
      if (v !== null && typeof v === 'object') bad('enum values must be strings, numbers, booleans or null');
      const t = typeOf(v);
      if (types && !types.has(t) && !(t === 'integer' && types.has('number'))) bad(`enum value ${JSON.stringify(v)} is not of type ${[...types].join(' or ')}`);
    }
    trie = { next: new Map(), end: false };
    for (const v of vals) {
      const bytes = enc(JSON.stringify(v));
      budget.literalBytes += bytes.length;
      let n = trie;
      for (const b of bytes) {
        let c = n.next.get(b);
        if (!c) n.next.set(b, (c = { next: new Map(), end: false }));
        n = c;
      }
      n.end = true;
    }
    types ??= new Set(vals.map(typeOf));
  }
  if (!types) return bad('a schema needs "type" or "enum"');
  const isObject = types.has('object') && !trie;
  const isArray = types.has('array') && !trie;
  for (const k of ['properties', 'required', 'additionalProperties'] as const) if (s[k] !== undefined && !isObject) bad(`"${k}" applies to objects, and this schema is not one`);
  if (s.items !== undefined && !isArray) bad('"items" applies to arrays, and this schema is not one');
  if (s.additionalProperties !== undefined && s.additionalProperties !== false) bad('additionalProperties must be false (every property is listed)');
  const props: SchemaNode['props'] = [];
  if (isObject) {
    const p = s.properties === undefined ? {} : s.properties;
    if (!p || typeof p !== 'object' || Array.isArray(p)) bad('properties must be an object');
    const keys = Object.keys(p as object);
    budget.properties += keys.length;
    if (budget.properties > SCHEMA_LIMITS.properties) bad(`more than ${SCHEMA_LIMITS.properties} properties in the schema`);
    const req = s.required;
    const keySet = new Set(keys);
    if (req !== undefined && (!Array.isArray(req) || req.some((k) => typeof k !== 'string' || !keySet.has(k)))) bad('required must list properties of this object');
    keys.forEach((key, i) => {
      const lit = enc(`${i > 0 ? ',' : ''}${JSON.stringify(key)}:`);
      budget.literalBytes += lit.length;
      props.push({ key, lit, node: compileNode((p as Record<string, unknown>)[key], `${path}.properties.${key}`, depth + 1, budget) });
    });
  }
  if (budget.literalBytes > SCHEMA_LIMITS.literalBytes) bad(`keys and enum values longer than ${SCHEMA_LIMITS.literalBytes} bytes in all`);
  let items: SchemaNode | null = null;
  if (isArray) {
    if (s.items === undefined) bad('an array needs "items"');
    items = compileNode(s.items, `${path}.items`, depth + 1, budget);
  }
  return { types, props, items, enum: trie };
}

// ---------------------------------------------------------------- the recognizer

type Part =
  | { k: 'lit'; bytes: Uint8Array; at: number }
  | { k: 'value'; node: SchemaNode }
  | { k: 'str'; esc: number }
  | { k: 'num'; n: N; integer: boolean; digits: number }
  | { k: 'enum'; at: Trie }
  | { k: 'obj'; node: SchemaNode; i: number } // the properties from i on, then '}'
  | { k: 'arr'; items: SchemaNode; first: boolean; nonEmpty: boolean }
  | { k: 'alt'; at: AltTrie }
  | { k: 'end' }; // the bottom: the document is whole

/** What is still to come, the next part on top; `end` at the bottom. */
export interface SchemaState {
  part: Part;
  below: SchemaState;
}
const END: SchemaState = { part: { k: 'end' }, below: null as unknown as SchemaState };

const push = (below: SchemaState, part: Part): SchemaState => ({ part, below });
const LIT = { true: enc('rue'), false: enc('alse'), null: enc('ull'), close: enc('}') };

/** Start a value of `node` with byte b: the stack after it, or undefined. */
function startValue(below: SchemaState, node: SchemaNode, b: number): SchemaState | undefined {
  if (node.alt) return altStep(below, node.alt, b);
  if (node.enum) {
    const c = node.enum.next.get(b);
    return c ? push(below, { k: 'enum', at: c }) : undefined;
  }
  const t = node.types;
  if (b === 0x7b && t.has('object')) return push(below, { k: 'obj', node, i: 0 });
  if (b === 0x5b && t.has('array')) return push(below, { k: 'arr', items: node.items!, first: true, nonEmpty: node.nonEmpty === true });
  if (b === 0x22 && t.has('string')) return push(below, { k: 'str', esc: 0 });
  if (b === 0x74 && t.has('boolean')) return push(below, { k: 'lit', bytes: LIT.true, at: 0 });
  if (b === 0x66 && t.has('boolean')) return push(below, { k: 'lit', bytes: LIT.false, at: 0 });
  if (b === 0x6e && t.has('null')) return push(below, { k: 'lit', bytes: LIT.null, at: 0 });
  if (t.has('number') || t.has('integer')) {
    const n = numberStart(b);
    if (n !== -1) return push(below, { k: 'num', n, integer: !t.has('number'), digits: n === N.Minus ? 0 : 1 });
  }
  return undefined;
}

/** Feed one byte: the new state, or undefined when b cannot come next. */
export function schemaStep(st: SchemaState, b: number): SchemaState | undefined {
  const top = st.part;
  const below = st.below;
  switch (top.k) {
    case 'lit':
      if (top.bytes[top.at] !== b) return undefined;
      return top.at + 1 === top.bytes.length ? below : push(below, { k: 'lit', bytes: top.bytes, at: top.at + 1 });
    case 'value':
      return startValue(below, top.node, b);
    case 'str': {
      const e = stringByte(top.esc, b);
      if (e === -1) return undefined;
      return e === STR_END ? below : e === top.esc ? st : push(below, { k: 'str', esc: e });
    }
    case 'num': {
      const n = numberByte(top.n, b, top.integer);
      if (n === -1) return undefined;
      if (n === NUM_END) return schemaStep(below, b);
      const digits = digitRun(top.n, n, b, top.digits);
      return digits === -1 ? undefined : push(below, { k: 'num', n, integer: top.integer, digits });
    }
    case 'enum': {
      const c = top.at.next.get(b);
      if (c) return push(below, { k: 'enum', at: c });
      // a finished value ends here; the byte belongs to what follows
      return top.at.end ? schemaStep(below, b) : undefined;
    }
    case 'obj': {
      const { node, i } = top;
      if (i === node.props.length) return b === 0x7d ? below : undefined;
      // property i: its literal (from its second byte on), then its value, then the rest
      const p = node.props[i];
      if (p.lit[0] !== b) return undefined;
      const rest = push(below, { k: 'obj', node, i: i + 1 });
      const value = push(rest, { k: 'value', node: p.node });
      return p.lit.length === 1 ? value : push(value, { k: 'lit', bytes: p.lit, at: 1 });
    }
    case 'arr': {
      if (b === 0x5d) return top.first && top.nonEmpty ? undefined : below;
      const more = push(below, { k: 'arr', items: top.items, first: false, nonEmpty: false });
      if (top.first) return startValue(more, top.items, b);
      return b === 0x2c ? push(more, { k: 'value', node: top.items }) : undefined;
    }
    case 'alt':
      return altStep(below, top.at, b);
    case 'end':
      return undefined;
  }
}

/** One byte into an alternative's literal start; at its end, the alternative's value and close. */
function altStep(below: SchemaState, at: AltTrie, b: number): SchemaState | undefined {
  const c = at.next.get(b);
  if (!c) return undefined;
  if (!c.then) return push(below, { k: 'alt', at: c });
  return push(push(below, { k: 'lit', bytes: c.then.close, at: 0 }), { k: 'value', node: c.then.node });
}

/** A node for one of several alternatives, each a literal start, a value of its node, and a close. */
export function altNode(alternatives: { start: Uint8Array; node: SchemaNode; close: Uint8Array }[]): SchemaNode {
  const root: AltTrie = { next: new Map() };
  for (const a of alternatives) {
    if (a.start.length === 0 || a.close.length === 0) throw new Error('altNode: empty start or close');
    let n = root;
    for (const b of a.start) {
      if (n.then) throw new Error('altNode: one start is a prefix of another');
      let c = n.next.get(b);
      if (!c) n.next.set(b, (c = { next: new Map() }));
      n = c;
    }
    if (n.then || n.next.size > 0) throw new Error('altNode: one start is a prefix of another');
    n.then = { node: a.node, close: a.close };
  }
  return { types: new Set(['object']), props: [], items: null, enum: null, alt: root };
}

export function schemaComplete(st: SchemaState): boolean {
  return st.part.k === 'end';
}

export function schemaFeed(st: SchemaState, bytes: ArrayLike<number>): SchemaState | undefined {
  let s: SchemaState | undefined = st;
  for (let i = 0; i < bytes.length && s !== undefined; i++) s = schemaStep(s, bytes[i]);
  return s;
}

/** The state before a document of `schema`. */
export function schemaStart(root: SchemaNode): SchemaState {
  return push(END, { k: 'value', node: root });
}

/** A constraint to documents of `schema` (its root must be an object) over a vocabulary. */
export function jsonSchemaConstraint(schema: unknown, tokenBytes: readonly (Uint8Array | null)[]): Constraint<SchemaState> {
  const root = compileSchema(schema);
  if (!root.types.has('object') || root.types.size !== 1 || root.enum) throw new OptionError('response_format', 'json_schema: the root must be {"type": "object", ...}');
  return nodeConstraint(root, tokenBytes);
}

/** A constraint to documents of a compiled schema node over a vocabulary. */
export function nodeConstraint(root: SchemaNode, tokenBytes: readonly (Uint8Array | null)[]): Constraint<SchemaState> {
  const index = firstByteIndex(tokenBytes);
  return {
    start: () => schemaStart(root),
    candidates: (state) => candidatesByFirstByte(index, (b) => schemaStep(state, b) !== undefined),
    next(state, token) {
      const bytes = tokenBytes[token];
      if (!bytes || bytes.length === 0) return null;
      return schemaFeed(state, bytes) ?? null;
    },
    complete: schemaComplete,
  };
}
