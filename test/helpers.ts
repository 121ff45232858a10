import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture, type FixtureOptions } from '../src/formats/fixtures.ts';
import { loadModel, type Model, type LoadOptions } from '../src/models/registry.ts';

export const CACHE = join(tmpdir(), 'quench-test-cache');

export async function tempDir(prefix = 'quench-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Write a fixture checkpoint and load it. */
export async function fixtureModel(o: FixtureOptions, load: LoadOptions = {}): Promise<{ model: Model; dir: string; specials: Record<string, number> }> {
  const dir = await tempDir(`quench-${o.arch}-`);
  const info = await writeFixture(dir, o);
  const model = await loadModel(dir, { cacheDir: CACHE, threads: 2, ...load });
  return { model, dir, specials: info.specials };
}

export type Rule = 'full' | 'causal' | { block: number };

/** visibility [L, P+L] for a window of canvas positions, given a rule */
export function visibility(rule: Rule, cols: number[], rows: number[]): Uint8Array {
  const v = new Uint8Array(rows.length * cols.length);
  rows.forEach((i, r) =>
    cols.forEach((j, c) => {
      const ok = rule === 'full' ? true : rule === 'causal' ? j <= i : Math.floor(j / rule.block) <= Math.floor(i / rule.block);
      v[r * cols.length + c] = ok ? 1 : 0;
    }),
  );
  return v;
}

export function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}
