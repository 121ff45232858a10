// Extra rows packed into one forward's sequence, beside the canvas window: the rows see each
// other only as a visibility matrix allows, so one forward scores several views of the canvas.
// Pure functions of a planned request.

import type { ForwardRequest } from '../runtime/session.ts';

/**
 * WINO's shadow block: the block [bs, be) again, all masks, after the window. Window rows do not
 * see it; a shadow row sees everything but the window row at its own position, so its scores
 * for a committed position are the model's belief in that token with the token hidden. Its rows
 * for the block's committed positions (`verify`) are queried after the request's own.
 */
export function withShadow(req: ForwardRequest, [bs, be]: readonly [number, number], committed: Uint8Array, mask: number): { req: ForwardRequest; verify: number[] } {
  const S = be - bs;
  const R = req.ids.length;
  const P = req.past?.length ?? 0;
  const C = P + R; // columns before: cache entries, then the window
  const T = C + S;
  const visible = new Uint8Array((R + S) * T);
  for (let r = 0; r < R; r++) visible.set(req.visible.subarray(r * C, (r + 1) * C), r * T);
  for (let s = 0; s < S; s++) {
    const row = visible.subarray((R + s) * T, (R + s + 1) * T);
    row.fill(1);
    // (its own position in the window: hidden)
    const own = bs + s - req.positions[0];
    if (own >= 0 && own < R) row[P + own] = 0;
  }
  const verify: number[] = [];
  for (let p = bs; p < be; p++) if (committed[p]) verify.push(p);
  const ids = new Int32Array(R + S);
  ids.set(req.ids);
  ids.fill(mask, R);
  const positions = new Int32Array(R + S);
  positions.set(req.positions);
  for (let s = 0; s < S; s++) positions[R + s] = bs + s;
  const queries = new Int32Array(req.queries.length + verify.length);
  queries.set(req.queries);
  verify.forEach((p, j) => (queries[req.queries.length + j] = R + (p - bs)));
  return { req: { ...req, ids, positions, visible, queries }, verify };
}

/**
 * Classifier-free guidance: the window a second time in the same sequence, the given context
 * (`given(position)`: the prompt and any suffix) masked, seeing only itself (block-diagonal
 * visibility, the same positions), so one forward scores both; its query rows follow the
 * guided ones. Only for a request without a cache.
 */
export function withUnguided(req: ForwardRequest, given: (position: number) => boolean, mask: number): ForwardRequest {
  const R = req.ids.length;
  const ids = new Int32Array(2 * R);
  ids.set(req.ids);
  for (let r = 0; r < R; r++) ids[R + r] = given(req.positions[r]) ? mask : req.ids[r];
  const positions = new Int32Array(2 * R);
  positions.set(req.positions);
  positions.set(req.positions, R);
  const visible = new Uint8Array(4 * R * R);
  for (let r = 0; r < R; r++) {
    const row = req.visible.subarray(r * R, (r + 1) * R);
    visible.set(row, r * 2 * R);
    visible.set(row, (R + r) * 2 * R + R);
  }
  const queries = new Int32Array(2 * req.queries.length);
  queries.set(req.queries);
  queries.set(req.queries.map((q) => q + R), req.queries.length);
  return { ...req, ids, positions, visible, queries };
}
