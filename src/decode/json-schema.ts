// response_format json_schema: the answer is a JSON document of a given schema, by the same
// constrained decoding as JSON mode. The schema subset is the one structured-output APIs
// use in strict mode: `type` (object, array, string, number, integer, boolean, null, or a
// list of them), `properties` (every property is written, in the schema's order — integer-
// like keys excepted: a parsed JSON body lists those first), `required`,
// `additionalProperties: false`, `items`, `enum` and `const` (with `type`, every value must
// be of it), `anyOf`, `allOf` of one schema, and `$ref` to the root (`#`) or to `$defs` /
// `definitions` (recursion included: what pydantic and zod emit); `description`, `title`,
// `default`, `examples`, `$comment` and `$schema` are ignored. Anything else (oneOf,
// pattern, minimum, format, ...) is refused when the schema is compiled, never silently
// dropped, and so are keywords that do not apply to the schema's type. Output is compact: no
// whitespace.
//
// The recognizer is a stack of pending parts (literal bytes, a value of a schema, the inside
// of a string, number, enum or array), consumed byte by byte. The stack is an immutable
// linked list, so testing a token against a state copies nothing it does not change. With
// anyOf a text can be read several ways at once: a state is the set of stacks still alive.

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
  /** array: the fewest and most items (minItems / maxItems) */
  minItems?: number;
  maxItems?: number;
  /** anyOf: a value of any of these */
  anyOf?: SchemaNode[];
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
const ANNOTATIONS = ['description', 'title', 'default', 'examples', '$comment', '$schema', '$defs', 'definitions'];
const KNOWN = new Set(['type', 'properties', 'items', 'minItems', 'maxItems', 'enum', 'const', 'required', 'additionalProperties', 'anyOf', 'allOf', '$ref', ...ANNOTATIONS]);
const SUPPORTED = 'type, properties, required, additionalProperties: false, items, minItems, maxItems, enum, const, anyOf, allOf of one, $ref';
/** depth: schema nesting (a $ref counts once); anyOf: branches in all; states: readings of one text kept at once */
export const SCHEMA_LIMITS = { depth: 16, properties: 1000, enumValues: 1000, literalBytes: 100_000, anyOf: 256, states: 256, minItems: 1024 };

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
  anyOf: number;
  /** the document's root (what `#` points to) and the nodes of the $refs met so far */
  root: unknown;
  refs: Map<string, SchemaNode>;
  /** $ref nodes still being compiled, and aliases of them (filled once compiling ends) */
  pending: Set<SchemaNode>;
  aliases: [SchemaNode, SchemaNode][];
}

const emptyNode = (): SchemaNode => ({ types: new Set(), props: [], items: null, enum: null });

/** Compile a JSON schema (the subset above) or throw an OptionError naming what is not supported. */
export function compileSchema(schema: unknown, from: SchemaSource = { param: 'response_format', label: 'json_schema' }, path = 'schema'): SchemaNode {
  const budget: Budget = { ...from, properties: 0, enumValues: 0, literalBytes: 0, anyOf: 0, root: schema, refs: new Map(), pending: new Set(), aliases: [] };
  const root = emptyNode();
  budget.refs.set('#', root);
  budget.pending.add(root);
  const compiled = compileNode(schema, path, 0, budget);
  if (compiled === root) throw new OptionError(from.param, `${from.label}: the schema only refers to itself`);
  Object.assign(root, compiled);
  for (const [alias, target] of budget.aliases.reverse()) Object.assign(alias, target);
  for (const [ref, node] of budget.refs) {
    if (node.types.size === 0 && !node.anyOf) throw new OptionError(from.param, `${from.label}: "$ref": "${ref}" only refers to itself`);
  }
  const nodes = reachable(root);
  checkNoEmptyLoop(nodes, from);
  flattenAnyOf(nodes, from);
  keepFinite(root, nodes, from);
  return root;
}

/** Every node reachable from `root` (through properties, items, anyOf and alternatives). */
function reachable(root: SchemaNode): SchemaNode[] {
  const seen = new Set<SchemaNode>();
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const p of n.props) stack.push(p.node);
    if (n.items) stack.push(n.items);
    for (const b of n.anyOf ?? []) stack.push(b);
    if (n.alt) for (const leaf of altLeaves(n.alt)) stack.push(leaf.node);
  }
  return [...seen];
}

function altLeaves(t: AltTrie): { node: SchemaNode; close: Uint8Array }[] {
  return t.then ? [t.then] : [...t.next.values()].flatMap(altLeaves);
}

/**
 * Each anyOf becomes the list of its leaves (branches that are not anyOf themselves), each
 * once: decoding then starts each reading once, without recursion, and a chain of nested
 * anyOfs through $refs cannot multiply into millions of readings.
 */
function flattenAnyOf(nodes: SchemaNode[], from: SchemaSource): void {
  const flat = new Map<SchemaNode, SchemaNode[]>();
  const leaves = (n: SchemaNode): SchemaNode[] => {
    let out = flat.get(n);
    if (out) return out;
    out = [...new Set(n.anyOf!.flatMap((b) => (b.anyOf ? leaves(b) : [b])))];
    if (out.length > SCHEMA_LIMITS.anyOf) throw new OptionError(from.param, `${from.label}: an anyOf expands to more than ${SCHEMA_LIMITS.anyOf} alternatives`);
    flat.set(n, out);
    return out;
  };
  for (const n of nodes) if (n.anyOf) leaves(n);
  for (const [n, list] of flat) {
    n.anyOf = list;
    n.types = new Set(list.flatMap((b) => [...b.types]));
  }
}

/**
 * Keep only what can end: a schema whose every document is infinite (a required recursion
 * with no way out) is refused, and options that could never end are removed (anyOf branches,
 * the object or array of a type list, items of an array that may be empty), so decoding can
 * always close what it opens.
 */
function keepFinite(root: SchemaNode, nodes: SchemaNode[], from: SchemaSource): void {
  const finite = new Set<SchemaNode>();
  const objectEnds = (n: SchemaNode) => n.props.every((p) => finite.has(p.node));
  const arrayEnds = (n: SchemaNode) => (n.minItems ?? 0) === 0 || (n.items !== null && finite.has(n.items));
  const ends = (n: SchemaNode): boolean => {
    if (n.alt) return altLeaves(n.alt).some((l) => finite.has(l.node));
    if (n.anyOf) return n.anyOf.some((b) => finite.has(b));
    if (n.enum) return true;
    for (const t of n.types) {
      if (t === 'object' ? objectEnds(n) : t === 'array' ? arrayEnds(n) : true) return true;
    }
    return false;
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (const n of nodes) if (!finite.has(n) && ends(n)) (finite.add(n), (changed = true));
  }
  if (!finite.has(root)) throw new OptionError(from.param, `${from.label}: the schema has no finite document (a required recursion with no way to end)`);
  for (const n of nodes) {
    if (!finite.has(n)) continue;
    if (n.anyOf) n.anyOf = n.anyOf.filter((b) => finite.has(b));
    if (n.enum || n.alt) continue;
    if (n.types.has('object') && !objectEnds(n)) n.types.delete('object');
    if (n.types.has('array') && n.items && !finite.has(n.items)) {
      if ((n.minItems ?? 0) > 0) n.types.delete('array');
      else n.maxItems = 0;
    }
  }
}

/** anyOf branches that lead back to their node without reading a byte would recurse forever. */
function checkNoEmptyLoop(nodes: SchemaNode[], from: SchemaSource): void {
  const state = new Map<SchemaNode, 1 | 2>(); // 1: on the path, 2: done
  const visit = (n: SchemaNode): void => {
    if (state.get(n) === 2) return;
    if (state.get(n) === 1) throw new OptionError(from.param, `${from.label}: anyOf refers back to itself before any value is read`);
    state.set(n, 1);
    for (const b of n.anyOf ?? []) visit(b);
    state.set(n, 2);
  };
  for (const n of nodes) visit(n);
}

/** `#`, `#/$defs/Name`, `#/definitions/Name` (JSON-pointer escapes ~0 ~1) -> the schema it names. */
function resolveRef(ref: string, budget: Budget, bad: (msg: string) => never): unknown {
  const m = /^#(?:\/(\$defs|definitions)\/([^/]+))?$/.exec(ref);
  if (!m) return bad(`"$ref": ${JSON.stringify(ref.slice(0, 100))} is not supported (only "#", "#/$defs/..." and "#/definitions/...")`);
  if (!m[1]) return budget.root;
  const name = m[2].replace(/~1/g, '/').replace(/~0/g, '~');
  const defs = (budget.root as Record<string, unknown>)[m[1]];
  const target = defs && typeof defs === 'object' && Object.hasOwn(defs, name) ? (defs as Record<string, unknown>)[name] : undefined;
  if (target === undefined) return bad(`"$ref": ${JSON.stringify(ref.slice(0, 100))} names no definition`);
  return target;
}

function compileNode(schema: unknown, path: string, depth: number, budget: Budget): SchemaNode {
  const bad = (msg: string): never => {
    throw new OptionError(budget.param, `${budget.label}: ${path}: ${msg}`);
  };
  if (depth > SCHEMA_LIMITS.depth) bad(`nested deeper than ${SCHEMA_LIMITS.depth} levels`);
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) bad('a schema must be an object');
  const s = schema as Record<string, unknown>;
  for (const k of Object.keys(s)) if (!KNOWN.has(k)) bad(`"${k}" is not supported (supported: ${SUPPORTED})`);
  const structural = Object.keys(s).filter((k) => !ANNOTATIONS.includes(k));
  // a reference, an anyOf or a one-schema allOf stands alone (annotations aside)
  for (const k of ['$ref', 'anyOf', 'allOf']) if (s[k] !== undefined && structural.length > 1) bad(`"${k}" cannot be combined with ${structural.filter((x) => x !== k).map((x) => `"${x}"`).join(', ')}`);
  if (s.$ref !== undefined) {
    if (typeof s.$ref !== 'string') bad('"$ref" must be a string');
    const ref = s.$ref as string;
    const known = budget.refs.get(ref);
    if (known) return known;
    const target = resolveRef(ref, budget, bad);
    // (filled in place: a reference inside its own definition gets this very node)
    const node = emptyNode();
    budget.refs.set(ref, node);
    budget.pending.add(node);
    const compiled = compileNode(target, ref, depth + 1, budget);
    budget.pending.delete(node);
    if (compiled === node) bad(`"$ref": "${ref}" only refers to itself`);
    if (budget.pending.has(compiled)) {
      // an alias of a definition still being compiled: that very node (this one is filled from it at the end)
      budget.refs.set(ref, compiled);
      budget.aliases.push([node, compiled]);
      return compiled;
    }
    Object.assign(node, compiled);
    return node;
  }
  if (s.allOf !== undefined) {
    if (!Array.isArray(s.allOf) || s.allOf.length !== 1) bad('"allOf" is supported with exactly one schema');
    return compileNode((s.allOf as unknown[])[0], `${path}.allOf[0]`, depth + 1, budget);
  }
  if (s.anyOf !== undefined) {
    if (!Array.isArray(s.anyOf) || s.anyOf.length === 0) bad('"anyOf" must be a non-empty array of schemas');
    // (its branches are flattened and pruned once the whole schema is compiled)
    const list = s.anyOf as unknown[];
    budget.anyOf += list.length;
    if (budget.anyOf > SCHEMA_LIMITS.anyOf) bad(`more than ${SCHEMA_LIMITS.anyOf} anyOf branches in the schema`);
    const branches = list.map((b, i) => compileNode(b, `${path}.anyOf[${i}]`, depth + 1, budget));
    const types = new Set<JsonType>();
    for (const b of branches) for (const t of b.types) types.add(t);
    return { types, props: [], items: null, enum: null, anyOf: branches };
  }
  if (s.const !== undefined) {
    if (s.enum !== undefined) bad('"const" and "enum" together');
    return compileNode({ ...s, const: undefined, enum: [s.const] }, path, depth, budget);
  }
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
  for (const k of ['items', 'minItems', 'maxItems'] as const) if (s[k] !== undefined && !isArray) bad(`"${k}" applies to arrays, and this schema is not one`);
  for (const k of ['minItems', 'maxItems'] as const)
    if (s[k] !== undefined && (typeof s[k] !== 'number' || !Number.isInteger(s[k]) || (s[k] as number) < 0 || (s[k] as number) > 1e6)) bad(`"${k}" must be an integer in [0, 1000000]`);
  if (typeof s.minItems === 'number' && s.minItems > SCHEMA_LIMITS.minItems) bad(`minItems is at most ${SCHEMA_LIMITS.minItems}`);
  if ((s.minItems as number | undefined ?? 0) > (s.maxItems as number | undefined ?? Infinity)) bad('minItems is larger than maxItems');
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
  const node: SchemaNode = { types, props, items, enum: trie };
  if (typeof s.minItems === 'number' && s.minItems > 0) node.minItems = s.minItems;
  if (typeof s.maxItems === 'number') node.maxItems = s.maxItems;
  return node;
}

// ---------------------------------------------------------------- the recognizer

type Part =
  | { k: 'lit'; bytes: Uint8Array; at: number }
  | { k: 'value'; node: SchemaNode }
  | { k: 'str'; esc: number }
  | { k: 'num'; n: N; integer: boolean; digits: number }
  | { k: 'enum'; at: Trie }
  | { k: 'obj'; node: SchemaNode; i: number } // the properties from i on, then '}'
  | { k: 'arr'; items: SchemaNode; n: number; min: number; max: number } // n items so far
  | { k: 'alt'; at: AltTrie }
  | { k: 'end' }; // the bottom: the document is whole

/** What is still to come, the next part on top; `end` at the bottom. */
interface Stack {
  part: Part;
  below: Stack;
}
/** The readings of the text so far that are still alive (one, unless anyOf branches overlap). */
export type SchemaState = readonly Stack[];

const END: Stack = { part: { k: 'end' }, below: null as unknown as Stack };

const push = (below: Stack, part: Part): Stack => ({ part, below });
const LIT = { true: enc('rue'), false: enc('alse'), null: enc('ull'), close: enc('}') };

/** Start a value of `node` with byte b: each stack after it goes to `out`. */
function startValue(below: Stack, node: SchemaNode, b: number, out: Stack[]): void {
  if (node.anyOf) {
    // (flattened at compile time: no branch is an anyOf itself)
    for (const branch of node.anyOf) startValue(below, branch, b, out);
    return;
  }
  if (node.alt) return altStep(below, node.alt, b, out);
  if (node.enum) {
    const c = node.enum.next.get(b);
    if (c) out.push(push(below, { k: 'enum', at: c }));
    return;
  }
  const t = node.types;
  if (b === 0x7b && t.has('object')) out.push(push(below, { k: 'obj', node, i: 0 }));
  else if (b === 0x5b && t.has('array')) out.push(push(below, { k: 'arr', items: node.items!, n: 0, min: node.minItems ?? 0, max: node.maxItems ?? Infinity }));
  else if (b === 0x22 && t.has('string')) out.push(push(below, { k: 'str', esc: 0 }));
  else if (b === 0x74 && t.has('boolean')) out.push(push(below, { k: 'lit', bytes: LIT.true, at: 0 }));
  else if (b === 0x66 && t.has('boolean')) out.push(push(below, { k: 'lit', bytes: LIT.false, at: 0 }));
  else if (b === 0x6e && t.has('null')) out.push(push(below, { k: 'lit', bytes: LIT.null, at: 0 }));
  else if (t.has('number') || t.has('integer')) {
    const n = numberStart(b);
    if (n !== -1) out.push(push(below, { k: 'num', n, integer: !t.has('number'), digits: n === N.Minus ? 0 : 1 }));
  }
}

/** Feed one byte to one stack: each stack after it goes to `out` (none when b cannot come next). */
function step(st: Stack, b: number, out: Stack[]): void {
  const top = st.part;
  const below = st.below;
  switch (top.k) {
    case 'lit':
      if (top.bytes[top.at] === b) out.push(top.at + 1 === top.bytes.length ? below : push(below, { k: 'lit', bytes: top.bytes, at: top.at + 1 }));
      return;
    case 'value':
      return startValue(below, top.node, b, out);
    case 'str': {
      const e = stringByte(top.esc, b);
      if (e !== -1) out.push(e === STR_END ? below : e === top.esc ? st : push(below, { k: 'str', esc: e }));
      return;
    }
    case 'num': {
      const n = numberByte(top.n, b, top.integer);
      if (n === -1) return;
      if (n === NUM_END) return step(below, b, out);
      const digits = digitRun(top.n, n, b, top.digits);
      if (digits !== -1) out.push(push(below, { k: 'num', n, integer: top.integer, digits }));
      return;
    }
    case 'enum': {
      const c = top.at.next.get(b);
      if (c) out.push(push(below, { k: 'enum', at: c }));
      // a finished value ends here; the byte belongs to what follows
      else if (top.at.end) step(below, b, out);
      return;
    }
    case 'obj': {
      const { node, i } = top;
      if (i === node.props.length) {
        if (b === 0x7d) out.push(below);
        return;
      }
      // property i: its literal (from its second byte on), then its value, then the rest
      const p = node.props[i];
      if (p.lit[0] !== b) return;
      const rest = push(below, { k: 'obj', node, i: i + 1 });
      const value = push(rest, { k: 'value', node: p.node });
      out.push(p.lit.length === 1 ? value : push(value, { k: 'lit', bytes: p.lit, at: 1 }));
      return;
    }
    case 'arr': {
      if (b === 0x5d) {
        if (top.n >= top.min) out.push(below);
        return;
      }
      if (top.n >= top.max) return;
      const more = push(below, { k: 'arr', items: top.items, n: top.n + 1, min: top.min, max: top.max });
      if (top.n === 0) return startValue(more, top.items, b, out);
      if (b === 0x2c) out.push(push(more, { k: 'value', node: top.items }));
      return;
    }
    case 'alt':
      return altStep(below, top.at, b, out);
    case 'end':
      return;
  }
}

/** Feed one byte: the readings after it, or undefined when b cannot come next. */
export function schemaStep(state: SchemaState, b: number): SchemaState | undefined {
  const out: Stack[] = [];
  for (const st of state) step(st, b, out);
  if (out.length <= 1) return out.length === 1 ? out : undefined;
  // readings in the same place are one; past the cap (overlapping anyOf branches nested
  // deeply), the first ones are kept
  const unique: Stack[] = [];
  for (const st of out) if (!unique.some((u) => sameStack(u, st))) unique.push(st);
  return unique.length > SCHEMA_LIMITS.states ? unique.slice(0, SCHEMA_LIMITS.states) : unique;
}

/** Two stacks that expect the same bytes from here on (part by part, down to a shared tail). */
function sameStack(a: Stack, b: Stack): boolean {
  while (a !== b) {
    const p = a.part as Record<string, unknown>;
    const q = b.part as Record<string, unknown>;
    if (p.k !== q.k) return false;
    for (const key in p) if (p[key] !== q[key]) return false;
    a = a.below;
    b = b.below;
    if (!a || !b) return a === b;
  }
  return true;
}

/** One byte into an alternative's literal start; at its end, the alternative's value and close. */
function altStep(below: Stack, at: AltTrie, b: number, out: Stack[]): void {
  const c = at.next.get(b);
  if (!c) return;
  out.push(c.then ? push(push(below, { k: 'lit', bytes: c.then.close, at: 0 }), { k: 'value', node: c.then.node }) : push(below, { k: 'alt', at: c }));
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

export function schemaComplete(state: SchemaState): boolean {
  return state.some((st) => st.part.k === 'end');
}

export function schemaFeed(state: SchemaState, bytes: ArrayLike<number>): SchemaState | undefined {
  let s: SchemaState | undefined = state;
  for (let i = 0; i < bytes.length && s !== undefined; i++) s = schemaStep(s, bytes[i]);
  return s;
}

/** The state before a document of `schema`. */
export function schemaStart(root: SchemaNode): SchemaState {
  return [push(END, { k: 'value', node: root })];
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
