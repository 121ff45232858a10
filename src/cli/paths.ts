// Where models live: the bundled ones in the package's models/, local ones under
// $QUENCH_MODELS (default ~/.cache/quench/models), pulled ones in the Hugging Face Hub
// cache (named owner/name, or owner/name@revision).

import { existsSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NotFoundError, OptionError } from '../errors.ts';
import { cachedModels, hubCacheDir, isModelGguf, isRepoId, parseModelRef, pickGguf, snapshotDir, snapshotMissing } from '../models/hub.ts';
import { HubError } from '../errors.ts';
import { ggufModelName, isFirstGgufPart, isGguf } from '../formats/gguf.ts';
import { ADAPTER_CONFIG, isAdapterDir, parseLoraConfig } from '../formats/lora.ts';
import { readFileSync } from 'node:fs';

export const PACKAGE_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
export const BUNDLED_DIR = join(PACKAGE_ROOT, 'models');
export const DEFAULT_MODEL = 'quench-tiny';

/** A file, or a link to one (large weights are often linked in). */
function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

export function localModelsDir(): string {
  return process.env.QUENCH_MODELS || join(homedir(), '.cache', 'quench', 'models');
}

export interface ModelEntry {
  name: string;
  dir: string;
  source: 'bundled' | 'local' | 'hub';
  /** a LoRA adapter (run on the base its config names) */
  adapter?: boolean;
}

function scan(root: string, source: ModelEntry['source']): ModelEntry[] {
  if (!existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((d) => (d.isDirectory() && (existsSync(join(root, d.name, 'config.json')) || existsSync(join(root, d.name, ADAPTER_CONFIG)))) || (isGguf(d.name) && isFirstGgufPart(d.name) && isFile(join(root, d.name))))
    .map((d) => ({ name: isGguf(d.name) ? ggufModelName(d.name) : d.name, dir: join(root, d.name), source }));
}

export function listModels(): ModelEntry[] {
  const hub = cachedModels().map((m) => ({ name: m.repo, dir: m.dir, source: 'hub' as const }));
  return [...scan(BUNDLED_DIR, 'bundled'), ...scan(localModelsDir(), 'local'), ...hub].map((m) => (isAdapterDir(m.dir) ? { ...m, adapter: true } : m));
}

export interface ResolvedModel {
  /** the base checkpoint's directory or GGUF file */
  dir: string;
  /** the name it is served under */
  name: string;
  /** a LoRA adapter's directory, merged into the base at load */
  lora?: string;
  /** with an adapter: the base model's name (as given, or as the adapter's config names it) */
  base?: string;
}

/** A model argument (a directory path, a bundled or local model's name, a pulled Hub model's
 * owner/name[@revision]) -> its directory and the name it is served under. A LoRA adapter
 * (a PEFT adapter directory or a pulled adapter repository) resolves to its base model, named
 * by its adapter_config.json, with the adapter beside it; `lora` adds an adapter to a base. */
export function resolveModelEntry(arg: string | undefined, lora?: string): ResolvedModel {
  const m = resolvePlain(arg);
  if (lora === undefined) return isAdapterDir(m.dir) ? withBase(m) : m;
  if (isAdapterDir(m.dir)) throw new OptionError('lora', `${JSON.stringify(arg)} is a LoRA adapter: give its base model as --model and the adapter as --lora (or the adapter alone as --model)`);
  let a: { dir: string; name: string };
  try {
    a = resolvePlain(lora);
  } catch (e) {
    if (e instanceof NotFoundError) throw new NotFoundError('lora', e.message.replace(/^model /, 'LoRA adapter '), e.code);
    throw e;
  }
  if (!isAdapterDir(a.dir)) throw new OptionError('lora', `${JSON.stringify(lora)} is not a LoRA adapter (a directory with ${ADAPTER_CONFIG} and adapter_model.safetensors, without model weights of its own)`);
  return { dir: m.dir, name: a.name, lora: a.dir, base: m.name };
}

/**
 * `--lora-modules name=adapter ...` (vLLM's flag): each adapter resolved as --lora is (a
 * directory, local name or pulled owner/name) and served under its name beside the base;
 * names unique, none the base's id or "default".
 */
export function loraModulesOf(specs: string[], baseDir: string, baseId: string): { name: string; lora: string }[] {
  const taken = new Map<string, string>([[baseId, "the model's own id"], ['default', 'it names the model itself']]);
  return specs.map((spec) => {
    const eq = spec.indexOf('=');
    if (eq <= 0 || eq === spec.length - 1) throw new OptionError('lora_modules', `--lora-modules takes name=adapter${spec.trimStart().startsWith('{') ? ' (not the JSON form)' : ''}, got ${JSON.stringify(spec.slice(0, 200))}`);
    const name = spec.slice(0, eq);
    // (a request's model field holds at most 256 characters)
    if (name.length > 256) throw new OptionError('lora_modules', `--lora-modules: a name has at most 256 characters, got ${name.length}`);
    if (taken.has(name)) throw new OptionError('lora_modules', `--lora-modules: the name ${JSON.stringify(name)} is taken (${taken.get(name)})`);
    taken.set(name, 'named twice');
    const r = resolveModelEntry(baseDir, spec.slice(eq + 1));
    return { name, lora: r.lora! };
  });
}

/** An adapter's base, from its adapter_config.json's base_model_name_or_path. */
function withBase(adapter: { dir: string; name: string }): ResolvedModel {
  const base = parseLoraConfig(readFileSync(join(adapter.dir, ADAPTER_CONFIG), 'utf8')).baseModel;
  if (base === null) throw new NotFoundError('model', `the LoRA adapter ${adapter.name} names no base model (base_model_name_or_path): give it as --model <base> --lora ${adapter.name}`, 'model_not_found');
  // (a downloaded adapter's config is someone else's file: its base must be a Hub id or a
  // bundled or local model's name, never a path on this machine)
  const hub = resolve(hubCacheDir());
  const pulled = resolve(adapter.dir).startsWith(hub + sep);
  if (pulled && !isRepoId(parseModelRef(base).repo) && !listModels().some((m) => m.name === base && m.source !== 'hub'))
    throw new OptionError('model', `the pulled LoRA adapter ${adapter.name} names ${JSON.stringify(base.slice(0, 200))} as its base, which is no Hub id (owner/name) nor a bundled or local model: give the base as --model <base> --lora ${adapter.name}`);
  let b: { dir: string; name: string };
  try {
    b = resolvePlain(base);
  } catch (e) {
    if (e instanceof NotFoundError) throw new NotFoundError('model', `the LoRA adapter ${adapter.name} is for ${JSON.stringify(base.slice(0, 200))}: ${e.message}`, e.code);
    throw e;
  }
  if (isAdapterDir(b.dir)) throw new OptionError('model', `the LoRA adapter ${adapter.name} names another adapter, ${JSON.stringify(base.slice(0, 200))}, as its base`);
  return { dir: b.dir, name: adapter.name, lora: adapter.dir, base: b.name };
}

function resolvePlain(arg: string | undefined): { dir: string; name: string } {
  const name = arg ?? DEFAULT_MODEL;
  if (existsSync(join(name, 'config.json')) || existsSync(join(name, ADAPTER_CONFIG))) return { dir: resolve(name), name: basename(resolve(name)) };
  // a GGUF file (llama.cpp's format), served under its file name
  if (isGguf(name) && isFile(name)) return { dir: resolve(name), name: ggufModelName(name) };
  const hit = listModels().find((m) => m.name === name && m.source !== 'hub');
  if (hit) return { dir: hit.dir, name };
  const ref = parseModelRef(name);
  const { repo, file } = ref;
  const revision = ref.revision ?? 'main';
  if (isRepoId(repo) && file !== undefined) {
    // one GGUF file of a pulled repository
    const pullIt = `quench pull ${name}`;
    const dir = snapshotDir(repo, revision);
    const names = dir ? readdirSync(dir).filter((f) => isFile(join(dir, f))) : [];
    let pick: string;
    try {
      pick = pickGguf(names, file, repo)[0]; // (a split file opens from its first part)
    } catch (e) {
      // (a missing file, or a split file with a part missing here, is "not pulled"; an ambiguous pick says so)
      if (e instanceof HubError && (e.code === 'hub_no_file' || e.code === 'hub_split_gguf') && file !== '') throw new NotFoundError('model', `model ${JSON.stringify(name)} is not pulled yet: ${pullIt}`, 'model_not_pulled');
      throw e;
    }
    return { dir: join(dir!, pick), name };
  }
  if (isRepoId(repo)) {
    const pullIt = `quench pull ${repo}${revision === 'main' ? '' : ` --revision ${revision}`}`;
    const dir = snapshotDir(repo, revision);
    if (!dir) throw new NotFoundError('model', `model ${JSON.stringify(name)} is not pulled yet: ${pullIt}`, 'model_not_pulled');
    const missing = snapshotMissing(dir);
    const ggufs = readdirSync(dir).filter(isModelGguf);
    if (missing.length && ggufs.length) throw new NotFoundError('model', `${repo} was pulled as GGUF files: name one, e.g. --model ${repo}:${ggufs[0]}`, 'model_not_found');
    if (missing.length) throw new NotFoundError('model', `model ${JSON.stringify(name)} is only partly downloaded (no ${missing.slice(0, 3).join(', ')}): ${pullIt}`, 'model_not_pulled');
    return { dir, name };
  }
  throw new NotFoundError('model', `model ${JSON.stringify(name)} not found: give a directory with config.json (or a LoRA adapter's), a .gguf file, a Hub id (owner/name, after quench pull), or one of: ${listModels().map((m) => m.name).join(', ') || '(none)'}`, 'model_not_found');
}

export function resolveModel(arg: string | undefined): string {
  return resolveModelEntry(arg).dir;
}
