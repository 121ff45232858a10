// Where models live: the bundled ones in the package's models/, local ones under
// $QUENCH_MODELS (default ~/.cache/quench/models).

import { existsSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PACKAGE_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
export const BUNDLED_DIR = join(PACKAGE_ROOT, 'models');
export const DEFAULT_MODEL = 'quench-tiny';

export function localModelsDir(): string {
  return process.env.QUENCH_MODELS || join(homedir(), '.cache', 'quench', 'models');
}

export interface ModelEntry {
  name: string;
  dir: string;
  source: 'bundled' | 'local';
}

function scan(root: string, source: ModelEntry['source']): ModelEntry[] {
  if (!existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(root, d.name, 'config.json')))
    .map((d) => ({ name: d.name, dir: join(root, d.name), source }));
}

export function listModels(): ModelEntry[] {
  return [...scan(BUNDLED_DIR, 'bundled'), ...scan(localModelsDir(), 'local')];
}

/** A model argument: a directory path, or the name of a bundled or local model. */
export function resolveModel(arg: string | undefined): string {
  const name = arg ?? DEFAULT_MODEL;
  if (existsSync(join(name, 'config.json'))) return resolve(name);
  const hit = listModels().find((m) => m.name === name);
  if (hit) return hit.dir;
  throw new Error(`model ${JSON.stringify(name)} not found: give a directory with config.json, or one of: ${listModels().map((m) => m.name).join(', ') || '(none)'}`);
}
