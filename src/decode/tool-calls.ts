// Output constraints for function calling. A call is written as the compact JSON object
// `{"name":"<function>","arguments":{...}}`, its arguments a document of that function's
// parameter schema; "some call must be made" is one such object, or a non-empty list of
// them, and "call this function" is the same over that one function (its name is forced,
// and the model writes it before the arguments, as it was asked to in the prompt).

import type { Constraint } from './constraint.ts';
import { altNode, nodeConstraint, type SchemaNode, type SchemaState } from './json-schema.ts';

export interface FunctionSpec {
  name: string;
  /** the compiled parameter schema (an object schema) */
  parameters: SchemaNode;
}

const encoder = new TextEncoder();

/** The most calls in one answer: a model that repeats a call stops here instead of at max_tokens. */
export const MAX_CALLS = 8;

/** The bytes before a call's arguments. */
export const callStart = (name: string) => `{"name":${JSON.stringify(name)},"arguments":`;

/** One call of one of `fns` (names distinct), or with `many` a list of 1 to MAX_CALLS calls. */
export function callsConstraint(fns: readonly FunctionSpec[], many: boolean, tokenBytes: readonly (Uint8Array | null)[]): Constraint<SchemaState> {
  if (fns.length === 0) throw new Error('callsConstraint: no functions');
  const one = altNode(
    fns.map((f) => ({
      start: encoder.encode(callStart(f.name)),
      node: f.parameters,
      close: encoder.encode('}'),
    })),
  );
  const root: SchemaNode = many ? { types: new Set(['array']), props: [], items: one, enum: null, minItems: 1, maxItems: MAX_CALLS } : one;
  return nodeConstraint(root, tokenBytes);
}
