// KV cache growth and persistence: appended rows land where a naive gather puts them, a
// cache at its buffer's tip appends in place, and a cache that is not at the tip (a branch)
// copies instead of overwriting entries that a longer cache still uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { extendCache, type KVCache } from '../src/runtime/kv.ts';
import { mulberry32 } from '../src/formats/fixtures.ts';

const s = { layers: 2, kvHeads: 3, headDim: 4 };

/** A forward's window output: [B, H, Lw, Dh] per layer, with recognisable random values. */
function present(B: number, Lw: number, seed: number): Float32Array[] {
  const r = mulberry32(seed);
  return Array.from({ length: s.layers }, () => Float32Array.from({ length: B * s.kvHeads * Lw * s.headDim }, () => r()));
}

/** Naive view: entries of one layer as [H][n][Dh] nested arrays. */
function rows(c: KVCache, l: number, which: 'keys' | 'values'): number[][][] {
  const { kvHeads: H, headDim: Dh } = s;
  return Array.from({ length: H }, (_, h) =>
    Array.from({ length: c.length }, (_, i) => Array.from(c[which][l].subarray((h * c.capacity + i) * Dh, (h * c.capacity + i + 1) * Dh))));
}
function windowRows(p: Float32Array, b: number, Lw: number, h: number, w: number): number[] {
  const Dh = s.headDim;
  const o = ((b * s.kvHeads + h) * Lw + w) * Dh;
  return Array.from(p.subarray(o, o + Dh));
}

test('extendCache: rows, positions, in-place append at the tip, copy on branch', () => {
  const Lw = 5;
  const k1 = present(2, Lw, 1);
  const v1 = present(2, Lw, 2);
  const pos1 = Int32Array.from([10, 11, 12, 13, 14]);
  const a = extendCache(s, undefined, [], k1, v1, 1, Lw, [0, 1, 3], pos1);
  assert.equal(a.length, 3);
  assert.deepEqual(Array.from(a.positions.subarray(0, 3)), [10, 11, 13]);
  for (let l = 0; l < s.layers; l++)
    for (let h = 0; h < s.kvHeads; h++) {
      assert.deepEqual(rows(a, l, 'keys')[h], [0, 1, 3].map((w) => windowRows(k1[l], 1, Lw, h, w)));
      assert.deepEqual(rows(a, l, 'values')[h], [0, 1, 3].map((w) => windowRows(v1[l], 1, Lw, h, w)));
    }

  // append one row at the tip: same buffer, a keeps its own view
  const k2 = present(1, 1, 3);
  const v2 = present(1, 1, 4);
  const b = extendCache(s, a, [0, 1, 2], k2, v2, 0, 1, [0], Int32Array.from([20]));
  assert.equal(b.keys[0], a.keys[0], 'appends in place');
  assert.equal(a.length, 3);
  assert.equal(b.length, 4);
  assert.deepEqual(rows(b, 0, 'keys').map((h) => h.slice(0, 3)), rows(a, 0, 'keys'));
  assert.deepEqual(rows(b, 1, 'keys')[2][3], windowRows(k2[1], 0, 1, 2, 0));

  // branch from a (no longer at the tip): must not overwrite b's 4th entry
  const k3 = present(1, 1, 5);
  const c = extendCache(s, a, [0, 1, 2], k3, present(1, 1, 6), 0, 1, [0], Int32Array.from([30]));
  assert.notEqual(c.keys[0], a.keys[0], 'copies');
  assert.deepEqual(rows(b, 1, 'keys')[2][3], windowRows(k2[1], 0, 1, 2, 0), 'b intact');
  assert.deepEqual(rows(c, 1, 'keys')[2][3], windowRows(k3[1], 0, 1, 2, 0));
  assert.equal(c.positions[3], 30);
  assert.equal(b.positions[3], 20);

  // growth past the capacity keeps every entry, and a subset gather reorders
  let g = b;
  for (let i = 0; i < 40; i++) g = extendCache(s, g, Array.from({ length: g.length }, (_, j) => j), present(1, 1, 100 + i), present(1, 1, 200 + i), 0, 1, [0], Int32Array.from([40 + i]));
  assert.equal(g.length, 44);
  assert.ok(g.capacity >= 44);
  assert.deepEqual(rows(g, 0, 'values').map((h) => h.slice(0, 4)), rows(b, 0, 'values'));
  const sub = extendCache(s, g, [43, 0], k1, v1, 0, Lw, [], pos1);
  assert.deepEqual(Array.from(sub.positions.subarray(0, 2)), [g.positions[43], 10]);
  assert.deepEqual(rows(sub, 1, 'keys')[1], [rows(g, 1, 'keys')[1][43], rows(g, 1, 'keys')[1][0]]);
  assert.throws(() => extendCache(s, g, [44], k1, v1, 0, Lw, [], pos1), /out of range/);
});

test('extendCache: a reservation allocates the whole canvas up front, so appends never reallocate', () => {
  const first = extendCache(s, undefined, [], present(1, 10, 7), present(1, 10, 8), 0, 10, Array.from({ length: 10 }, (_, i) => i), Int32Array.from({ length: 10 }, (_, i) => i), 100);
  assert.ok(first.capacity >= 100 && first.capacity < 256, `capacity ${first.capacity}`);
  let c = first;
  const expect: number[][] = rows(first, 1, 'values')[2];
  for (let i = 10; i < 100; i++) {
    const v = present(1, 1, 100 + i);
    c = extendCache(s, c, Array.from({ length: c.length }, (_, j) => j), present(1, 1, i), v, 0, 1, [0], Int32Array.from([i]), 100);
    expect.push(windowRows(v[1], 0, 1, 2, 0));
    assert.equal(c.keys[0], first.keys[0], `step ${i} appended in place`);
  }
  assert.equal(c.length, 100);
  assert.deepEqual(rows(c, 1, 'values')[2], expect);
  // without a reservation the same appends reallocate as the cache grows
  const small = extendCache(s, undefined, [], present(1, 10, 7), present(1, 10, 8), 0, 10, Array.from({ length: 10 }, (_, i) => i), Int32Array.from({ length: 10 }, (_, i) => i));
  assert.ok(small.capacity < 100);
});
