// Hugging Face Hub checkpoints: `quench pull owner/name` fetches what quench loads (config,
// tokenizer, safetensors weights, model card) into the standard Hub cache
// (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), which it shares with
// Python's huggingface_hub: a model downloaded by either is found by both. Files land in
// snapshots/<commit>/ as symlinks to content-addressed blobs; refs/<revision> names the
// commit. The HTTP side is @huggingface/hub's; this file chooses the files, checks them and
// finds cached snapshots.

import { downloadFileToCacheDir, getHFHubCachePath, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FormatError, HubError, QuenchError } from '../errors.ts';

const REPO_ID = /^[A-Za-z0-9][\w.-]{0,95}\/[A-Za-z0-9][\w.-]{0,95}$/;
const COMMIT = /^[0-9a-f]{40}$/;

export function isRepoId(s: string): boolean {
  return REPO_ID.test(s) && !s.includes('..');
}

export function hubCacheDir(): string {
  return getHFHubCachePath();
}

function repoFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.replace('/', '--')}`);
}

// ---------------------------------------------------------------- which files

/** Small files read before the weights (the index names the shards). */
const METADATA = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'model.safetensors.index.json'];
const CARD = /^(README\.md|LICEN[CS]E(\.\w+)?|NOTICE(\.\w+)?)$/i;

export interface FilePlan {
  metadata: ListFileEntry[];
  /** null until the index is read: then the shards it names */
  weights: ListFileEntry[] | null;
  all: Map<string, ListFileEntry>;
}

/** A top-level file name that is safe to join to a directory: no separators, drive letters or dot names. */
export function safeName(name: unknown): name is string {
  return typeof name === 'string' && /^[\w][\w.+-]{0,254}$/.test(name) && !name.includes('..');
}

/** Content hashes are hex (they name the blobs on disk): git blob sha1 or sha256. */
const HASH = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

/** From a repo's top-level listing: what to fetch first, or a typed error naming what is missing.
 * Files in subfolders and files with unsafe names are never fetched. */
export function planFiles(entries: ListFileEntry[], repo: string): FilePlan {
  const all = new Map(entries.filter((e) => e.type === 'file' && safeName(e.path)).map((e) => [e.path, e]));
  for (const need of ['config.json', 'tokenizer.json'])
    if (!all.has(need)) throw new HubError('hub_incomplete', `${repo} has no ${need} (quench needs config.json, tokenizer.json and safetensors weights)`);
  const metadata = [...all.values()].filter((e) => METADATA.includes(e.path) || CARD.test(e.path));
  let weights: ListFileEntry[] | null = null;
  if (!all.has('model.safetensors.index.json')) {
    const single = all.get('model.safetensors');
    if (!single) {
      const other = [...all.keys()].filter((p) => /\.(bin|pt|pth|gguf|ckpt)$/.test(p));
      throw new HubError('hub_no_safetensors', `${repo} has no model.safetensors or model.safetensors.index.json${other.length ? ` (it has ${other.slice(0, 3).join(', ')}: quench reads safetensors only)` : ''}`);
    }
    weights = [single];
  }
  return { metadata, weights, all };
}

/** The shards a safetensors index names, each present in the listing. */
export function shardsOf(indexJson: string, plan: FilePlan, repo: string): ListFileEntry[] {
  let map: unknown;
  try {
    map = (JSON.parse(indexJson) as { weight_map?: unknown }).weight_map;
  } catch {
    throw new FormatError('index_invalid', `${repo}: model.safetensors.index.json is not valid JSON`);
  }
  if (!map || typeof map !== 'object') throw new FormatError('index_invalid', `${repo}: model.safetensors.index.json has no weight_map`);
  const names = [...new Set(Object.values(map as Record<string, unknown>))];
  return names.map((n) => {
    if (!safeName(n)) throw new HubError('hub_bad_name', `${repo}: the index names ${JSON.stringify(n)}, not a plain file name`);
    const e = plan.all.get(n);
    if (!e) throw new HubError('hub_incomplete', `${repo}: the index names ${JSON.stringify(n)}, which is not in the repository`);
    return e;
  });
}

// ---------------------------------------------------------------- download

export interface PullOptions {
  /** branch, tag or commit (default main) */
  revision?: string;
  /** the Hub's address (default https://huggingface.co, or HF_ENDPOINT) */
  endpoint?: string;
  /** access token for gated or private repositories (default HF_TOKEN) */
  token?: string;
  cacheDir?: string;
  /** bytes of the file being downloaded so far; done once per file */
  onProgress?: (e: { file: string; bytes: number; size: number; done: boolean; cached: boolean }) => void;
  fetch?: typeof fetch;
}

export interface PullResult {
  repo: string;
  commit: string;
  dir: string;
  files: string[];
  bytes: number;
}

const fileSize = (e: ListFileEntry) => e.lfs?.size ?? e.size;

/** Download a model repository's quench-relevant files; returns the snapshot directory. */
export async function pull(repo: string, o: PullOptions = {}): Promise<PullResult> {
  // the library logs every file it starts with console.debug (stdout); progress is onProgress's
  const debug = console.debug;
  console.debug = () => {};
  try {
    return await pullFiles(repo, o);
  } finally {
    console.debug = debug;
  }
}

async function pullFiles(repo: string, o: PullOptions): Promise<PullResult> {
  if (!isRepoId(repo)) throw new HubError('hub_bad_repo', `${JSON.stringify(repo)} is not a Hub model id (owner/name)`);
  const revision = o.revision ?? 'main';
  if (!/^[\w.\/-]{1,128}$/.test(revision) || revision.split('/').includes('..')) throw new HubError('hub_bad_revision', `${JSON.stringify(revision)} is not a branch, tag or commit`);
  const cacheDir = o.cacheDir ?? hubCacheDir();
  const hubUrl = (o.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const accessToken = o.token ?? process.env.HF_TOKEN ?? undefined;
  let current: { file: string; size: number; bytes: number } | null = null;
  const baseFetch = o.fetch ?? fetch;
  const urlOf = (input: Parameters<typeof fetch>[0]) => String(input instanceof Request ? input.url : input);
  // The library has no progress hook and trusts the server's content hashes, which name files
  // on disk (blobs/<hash>): this wrapper checks those hashes and counts the bytes of each file
  // body while it streams in (from /resolve/ or, for Xet storage, from its chunk servers).
  const checked: typeof fetch = async (input, init) => {
    const res = await baseFetch(input, init);
    const url = urlOf(input);
    if (res.ok && /\/api\/models\/.+\/paths-info\//.test(url)) {
      const items = (await res.clone().json()) as { oid?: unknown; lfs?: { oid?: unknown }; xetHash?: unknown }[];
      for (const it of Array.isArray(items) ? items : [])
        for (const h of [it.oid, it.lfs?.oid, it.xetHash])
          if (h !== undefined && !(typeof h === 'string' && HASH.test(h))) throw new HubError('hub_bad_response', `${repo}: the Hub gave a malformed content hash ${JSON.stringify(h)}`);
      return res;
    }
    const probe = new Headers(init?.headers).get('Range') === 'bytes=0-0';
    if (!current || probe || !res.ok || !res.body || /\/api\//.test(url) || (res.headers.get('content-type') ?? '').includes('json')) return res;
    const cur = current;
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          cur.bytes += chunk.byteLength;
          o.onProgress?.({ file: cur.file, bytes: Math.min(cur.bytes, cur.size), size: cur.size, done: false, cached: false });
          ctl.enqueue(chunk);
        },
      }),
    );
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  const common = { repo: { type: 'model' as const, name: repo }, hubUrl, accessToken, fetch: checked };
  const commit = await hubCall(repo, async () => {
    if (COMMIT.test(revision)) return revision;
    const info = (await modelInfo({ ...common, name: repo, revision, additionalFields: ['sha'] })) as { sha?: string };
    if (!info.sha || !COMMIT.test(info.sha)) throw new HubError('hub_bad_response', `${repo}: the Hub gave no commit for revision ${revision}`);
    return info.sha;
  });
  const entries: ListFileEntry[] = [];
  await hubCall(repo, async () => {
    for await (const e of listFiles({ ...common, revision: commit })) entries.push(e);
  });
  const plan = planFiles(entries, repo);
  const files: string[] = [];
  let bytes = 0;
  const fetchOne = async (e: ListFileEntry) => {
    const dir = join(repoFolder(cacheDir, repo), 'snapshots', commit);
    const cached = existsSync(join(dir, e.path));
    current = { file: e.path, size: fileSize(e), bytes: 0 };
    const path = await hubCall(repo, () => downloadFileToCacheDir({ ...common, path: e.path, revision: commit, cacheDir }));
    current = null;
    const got = statSync(path).size;
    const bad = got !== fileSize(e) ? `got ${got} bytes, the Hub lists ${fileSize(e)}` : cached ? null : await hashMismatch(path, e);
    if (bad) {
      await rm(realpathSync(path), { force: true }); // the blob, or a later pull would link it again
      await rm(path, { force: true });
      throw new HubError(got !== fileSize(e) ? 'hub_size_mismatch' : 'hub_hash_mismatch', `${repo}/${e.path}: ${bad}; run pull again`);
    }
    files.push(e.path);
    bytes += got;
    o.onProgress?.({ file: e.path, bytes: got, size: got, done: true, cached });
    return path;
  };
  let index: string | null = null;
  for (const e of plan.metadata) {
    const p = await fetchOne(e);
    if (e.path === 'model.safetensors.index.json') index = readFileSync(p, 'utf8');
  }
  const weights = plan.weights ?? shardsOf(index!, plan, repo);
  for (const e of weights) await fetchOne(e);
  if (revision !== commit) {
    const ref = join(repoFolder(cacheDir, repo), 'refs', revision);
    await mkdir(dirname(ref), { recursive: true });
    await writeFile(ref, commit);
  }
  return { repo, commit, dir: join(repoFolder(cacheDir, repo), 'snapshots', commit), files, bytes };
}

/** A downloaded file against the listing's hash: sha256 of an LFS file, else git's blob sha1. */
async function hashMismatch(path: string, e: ListFileEntry): Promise<string | null> {
  const want = e.lfs?.oid ?? e.oid;
  if (!want) return null;
  const h = createHash(e.lfs ? 'sha256' : 'sha1');
  if (!e.lfs) h.update(`blob ${statSync(path).size}\0`);
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  const got = h.digest('hex');
  return got === want ? null : `content hash ${got.slice(0, 12)}... differs from the Hub's ${want.slice(0, 12)}...`;
}

/** Hub failures as typed errors: which repository, and what to do about it. */
async function hubCall<T>(repo: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof QuenchError) throw e;
    const status = (e as { statusCode?: number }).statusCode;
    const msg = e instanceof Error ? e.message : String(e);
    if (status === 401 || status === 403) throw new HubError('hub_unauthorized', `${repo}: access denied (${status}); gated or private models need a token: --token or HF_TOKEN`);
    if (status === 404) throw new HubError('hub_not_found', `${repo}: not found on the Hub (${msg})`);
    throw new HubError('hub_failed', `${repo}: ${msg}`);
  }
}

// ---------------------------------------------------------------- the cache

/** The snapshot directory of a pulled model, or null. `revision` may be a ref or a commit. */
export function cachedSnapshot(repo: string, revision = 'main', cacheDir = hubCacheDir()): string | null {
  if (!isRepoId(repo)) return null;
  const root = repoFolder(cacheDir, repo);
  let commit = revision;
  if (!COMMIT.test(revision)) {
    const ref = join(root, 'refs', revision);
    if (!existsSync(ref)) return null;
    commit = readFileSync(ref, 'utf8').trim();
  }
  const dir = join(root, 'snapshots', commit);
  return existsSync(join(dir, 'config.json')) ? dir : null;
}

/** Pulled models (their main ref) with a config.json: [{ repo, dir }]. */
export function cachedModels(cacheDir = hubCacheDir()): { repo: string; dir: string }[] {
  if (!existsSync(cacheDir)) return [];
  const out: { repo: string; dir: string }[] = [];
  for (const d of readdirSync(cacheDir)) {
    const m = /^models--([^-].*?)--(.+)$/.exec(d);
    if (!m) continue;
    const repo = `${m[1]}/${m[2]}`;
    const dir = cachedSnapshot(repo, 'main', cacheDir);
    if (dir) out.push({ repo, dir });
  }
  return out;
}
