// Output constraints for function calling. A call is written as the compact JSON object
// `{"name":"<function>","arguments":{...}}`, its arguments a document of that function's
// parameter schema; "some call must be made" is one such object, or a non-empty list of
// them, and "call this function" is only its arguments object.

import type { Constraint } from './constraint.ts';
import { altNode, nodeConstraint, type SchemaNode, type SchemaState } from './json-schema.ts';

export interface FunctionSpec {
  name: string;
  /** the compiled parameter schema (an object schema) */
  parameters: SchemaNode;
}

const encoder = new TextEncoder();

/** One call of one of `fns` (names distinct), or with `many` a non-empty JSON list of calls. */
export function callsConstraint(fns: readonly FunctionSpec[], many: boolean, tokenBytes: readonly (Uint8Array | null)[]): Constraint<SchemaState> {
  if (fns.length === 0) throw new Error('callsConstraint: no functions');
  const one = altNode(
    fns.map((f) => ({
      start: encoder.encode(`{"name":${JSON.stringify(f.name)},"arguments":`),
      node: f.parameters,
      close: encoder.encode('}'),
    })),
  );
  const root: SchemaNode = many ? { types: new Set(['array']), props: [], items: one, enum: null, nonEmpty: true } : one;
  return nodeConstraint(root, tokenBytes);
}

/** The arguments object of one function (the call's name is known in advance). */
export function argumentsConstraint(fn: FunctionSpec, tokenBytes: readonly (Uint8Array | null)[]): Constraint<SchemaState> {
  return nodeConstraint(fn.parameters, tokenBytes);
}
