// Random byte walks through a schema recognizer: from every state some byte must be allowed
// (no dead ends), and walks lean toward closing bytes so that they end.
import assert from 'node:assert/strict';
import { schemaComplete, schemaStep, type SchemaState } from '../src/decode/json-schema.ts';

/** One walk from `start`: its text, and whether it ended in a whole document. */
export function schemaWalk(start: SchemaState, r: () => number, o: { maxBytes: number; closing: string; lean: number }): { text: string; complete: boolean } {
  let s = start;
  const out: number[] = [];
  for (let k = 0; k < o.maxBytes && !schemaComplete(s); k++) {
    const allowed: [number, SchemaState][] = [];
    for (let b = 0; b < 256; b++) {
      const n = schemaStep(s, b);
      if (n) allowed.push([b, n]);
    }
    assert.ok(allowed.length > 0, `dead end after ${JSON.stringify(Buffer.from(out).toString())}`);
    const closing = allowed.filter(([b]) => o.closing.includes(String.fromCharCode(b)));
    const pool = closing.length && r() < o.lean ? closing : allowed;
    const [b, n] = pool[Math.floor(r() * pool.length)];
    out.push(b);
    s = n;
  }
  return { text: Buffer.from(out).toString('utf8'), complete: schemaComplete(s) };
}
