// JSON as a decoding constraint (response_format json_object): a byte-level recognizer of
// JSON prefixes (RFC 8259), and the token-level Constraint built from it and a vocabulary's
// token bytes. Every prefix the recognizer accepts can still be completed to a valid
// document; `complete` says the document (an object) is whole, which is when a stop token is
// allowed. The output starts with '{' and ends with its '}'; whitespace inside is capped (at
// most MAX_NEWLINES newlines in a row, MAX_SPACES spaces on a line: a model cannot pad
// forever, pretty-printing fits), and so is nesting. Bytes >= 0x80 are taken inside
// strings as they come: a sequence that is not UTF-8 decodes to U+FFFD, still valid JSON.

import { candidatesByFirstByte, firstByteIndex, type Constraint } from './constraint.ts';

const enum M {
  Top, // the output's first byte: '{' (no leading whitespace: a model could pad forever)
  Value, // a value (after ':', ',' in an array)
  ArrFirst, // after '[': a value or ']'
  ObjFirst, // after '{': a key or '}'
  Key, // after ',' in an object: a key
  Colon, // after a key
  After, // after a value inside a container: ',' or the closing bracket
  Str,
  Num,
  Lit,
  Done,
}

export enum N {
  Minus, // after '-': a digit
  Zero, // "0": may end; '.', 'e'
  Int, // more digits: may end
  Dot, // after '.': a digit
  Frac, // may end
  E, // after 'e': sign or digit
  ESign, // after the exponent's sign: a digit
  Exp, // may end
}

/** spaces, tabs and carriage returns in a row (indentation after a newline included) */
export const MAX_SPACES = 64;
/** newlines in one whitespace run */
export const MAX_NEWLINES = 2;
export const MAX_DEPTH = 32;
/** digits in a row within a number (integer part, fraction, exponent): a model that repeats a
 * digit does not run to max_tokens. Every double as JavaScript writes it fits (at most 21
 * integer digits, or 6 zeros and 17 digits after the point). */
export const MAX_DIGITS = 24;

export interface JsonState {
  /** open containers, '{' or '[' */
  stack: string;
  mode: M;
  /** the string being read is an object key */
  key: boolean;
  /** in a string: 0, or 1 after a backslash, or 2..5 while reading \uXXXX's hex digits */
  esc: number;
  num: N;
  /** digits in a row in the number being read */
  digits: number;
  lit: string;
  litAt: number;
  /** spaces since the last non-whitespace byte or newline, newlines in this whitespace run */
  ws: number;
  nl: number;
}

export function jsonStart(): JsonState {
  return { stack: '', mode: M.Top, key: false, esc: 0, num: N.Zero, digits: 0, lit: '', litAt: 0, ws: 0, nl: 0 };
}

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const numEnds = (n: N) => n === N.Zero || n === N.Int || n === N.Frac || n === N.Exp;

function afterValue(s: JsonState): void {
  s.mode = s.stack.length === 0 ? M.Done : M.After;
}

function open(s: JsonState, bracket: string): boolean {
  if (s.stack.length >= MAX_DEPTH) return false;
  s.stack += bracket;
  s.mode = bracket === '{' ? M.ObjFirst : M.ArrFirst;
  return true;
}

function close(s: JsonState, bracket: string): boolean {
  if (s.stack[s.stack.length - 1] !== bracket) return false;
  s.stack = s.stack.slice(0, -1);
  afterValue(s);
  return true;
}

/** The first byte of a value. */
function startValue(s: JsonState, b: number): boolean {
  switch (b) {
    case 0x7b: return open(s, '{');
    case 0x5b: return open(s, '[');
    case 0x22: s.mode = M.Str; s.key = false; s.esc = 0; return true;
    case 0x74: s.mode = M.Lit; s.lit = 'true'; s.litAt = 1; return true;
    case 0x66: s.mode = M.Lit; s.lit = 'false'; s.litAt = 1; return true;
    case 0x6e: s.mode = M.Lit; s.lit = 'null'; s.litAt = 1; return true;
  }
  const n = numberStart(b);
  if (n === -1) return false;
  s.mode = M.Num;
  s.num = n;
  s.digits = isDigit(b) ? 1 : 0;
  return true;
}

/** Inside a string, the next escape state after byte b (0 plain, 1 after '\\', 2..5 reading
 * \uXXXX): STR_END when b closes the string, -1 when b cannot be there. */
export const STR_END = -2;
export function stringByte(esc: number, b: number): number {
  if (esc === 1) {
    if (b === 0x75) return 2;
    return b === 0x22 || b === 0x5c || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e || b === 0x72 || b === 0x74 ? 0 : -1;
  }
  if (esc >= 2) return isHex(b) ? (esc === 5 ? 0 : esc + 1) : -1;
  if (b === 0x22) return STR_END;
  if (b === 0x5c) return 1;
  return b < 0x20 ? -1 : 0;
}

/** A number's first byte: its state, or -1. */
export function numberStart(b: number): N | -1 {
  if (b === 0x2d) return N.Minus;
  if (isDigit(b)) return b === 0x30 ? N.Zero : N.Int;
  return -1;
}

/** The digits in a row after byte b moved a number from state `prev` to `next` (`run` before it),
 * or -1 past MAX_DIGITS. */
export function digitRun(prev: N, next: N, b: number, run: number): number {
  if (!isDigit(b)) return 0;
  const r = next === prev ? run + 1 : 1;
  return r > MAX_DIGITS ? -1 : r;
}

/** Inside a number, the next state after byte b: NUM_END when the number ended before b (b
 * belongs to what follows), -1 when b cannot be there. `integer`: no fraction or exponent. */
export const NUM_END = -2;
export function numberByte(n: N, b: number, integer = false): N | -1 | -2 {
  switch (n) {
    case N.Minus: return isDigit(b) ? (b === 0x30 ? N.Zero : N.Int) : -1;
    case N.Dot: return isDigit(b) ? N.Frac : -1;
    case N.E: return b === 0x2b || b === 0x2d ? N.ESign : isDigit(b) ? N.Exp : -1;
    case N.ESign: return isDigit(b) ? N.Exp : -1;
  }
  if (isDigit(b) && n !== N.Zero) return n;
  if (!integer && b === 0x2e && (n === N.Zero || n === N.Int)) return N.Dot;
  if (!integer && (b === 0x65 || b === 0x45) && n !== N.Exp) return N.E;
  return numEnds(n) ? NUM_END : -1;
}

/** Feed one byte; false (and `s` undefined) when it cannot continue a JSON object. */
export function jsonStep(s: JsonState, b: number): boolean {
  if (s.mode === M.Str) {
    const e = stringByte(s.esc, b);
    if (e === -1) return false;
    if (e === STR_END) {
      if (s.key) s.mode = M.Colon;
      else afterValue(s);
      return true;
    }
    s.esc = e;
    return true;
  }
  if (s.mode === M.Num) {
    const n = numberByte(s.num, b);
    if (n === -1) return false;
    if (n !== NUM_END) {
      const run = digitRun(s.num, n, b, s.digits);
      if (run === -1) return false;
      s.num = n;
      s.digits = run;
      return true;
    }
    afterValue(s); // the number ended; the byte belongs to what follows
    return jsonStep(s, b);
  }
  if (s.mode === M.Lit) {
    if (b !== s.lit.charCodeAt(s.litAt)) return false;
    if (++s.litAt === s.lit.length) afterValue(s);
    return true;
  }
  if (isWs(b)) {
    if (s.mode === M.Done || s.mode === M.Top) return false;
    if (b === 0x0a) {
      s.ws = 0;
      return ++s.nl <= MAX_NEWLINES;
    }
    return ++s.ws <= MAX_SPACES;
  }
  s.ws = 0;
  s.nl = 0;
  switch (s.mode) {
    case M.Top: return b === 0x7b && open(s, '{');
    case M.Value: return startValue(s, b);
    case M.ArrFirst: return b === 0x5d ? close(s, '[') : startValue(s, b);
    case M.ObjFirst:
      if (b === 0x7d) return close(s, '{');
      if (b !== 0x22) return false;
      s.mode = M.Str; s.key = true; s.esc = 0;
      return true;
    case M.Key:
      if (b !== 0x22) return false;
      s.mode = M.Str; s.key = true; s.esc = 0;
      return true;
    case M.Colon:
      if (b !== 0x3a) return false;
      s.mode = M.Value;
      return true;
    case M.After:
      if (b === 0x2c) {
        s.mode = s.stack[s.stack.length - 1] === '{' ? M.Key : M.Value;
        return true;
      }
      if (b === 0x7d) return close(s, '{');
      if (b === 0x5d) return close(s, '[');
      return false;
  }
  return false; // Done
}

export function jsonComplete(s: JsonState): boolean {
  return s.mode === M.Done;
}

/** Feed bytes to a copy of `s`: the new state, or null. */
export function jsonFeed(s: JsonState, bytes: ArrayLike<number>): JsonState | null {
  const t = { ...s };
  for (let i = 0; i < bytes.length; i++) if (!jsonStep(t, bytes[i])) return null;
  return t;
}

/**
 * A JSON-object constraint over a vocabulary. `tokenBytes[id]` is the text a token stands for,
 * or null for tokens that never belong in the output (special, control and end tokens: the
 * generation ends when the object is complete).
 */
export function jsonObjectConstraint(tokenBytes: readonly (Uint8Array | null)[]): Constraint<JsonState> {
  const index = firstByteIndex(tokenBytes);
  return {
    start: jsonStart,
    candidates: (state) => candidatesByFirstByte(index, (b) => jsonStep({ ...state }, b)),
    next(state, token) {
      const bytes = tokenBytes[token];
      if (!bytes || bytes.length === 0) return null;
      return jsonFeed(state, bytes);
    },
    complete: jsonComplete,
  };
}
