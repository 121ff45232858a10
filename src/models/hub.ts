// Hugging Face Hub checkpoints: `quench pull owner/name` fetches what quench loads (config,
// tokenizer, safetensors weights, model card) into the standard Hub cache
// (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), which it shares with
// Python's huggingface_hub: a model downloaded by either is found by both. Files land in
// snapshots/<commit>/ as symlinks to content-addressed blobs; refs/<revision> names the
// commit and is written last, so a failed pull leaves the previous snapshot in use. The HTTP
// side is @huggingface/hub's; this file chooses the files, checks what the server says and
// what arrives, and finds complete snapshots.

import { downloadFileToCacheDir, getHFHubCachePath, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { isAdapterDir } from '../formats/lora.ts';
import { FormatError, HubError, QuenchError } from '../errors.ts';
import { isFirstGgufPart, SPLIT_PART, splitPartName } from '../formats/gguf.ts';

// ---------------------------------------------------------------- names

// as huggingface_hub's validate_repo_id: word characters, '.', '-'; no '--' or '..'
const REPO_PART = /^[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?$/;
const COMMIT = /^[0-9a-f]{40}$/;
/** Content hashes name the blobs on disk: git blob sha1 or sha256, hex. */
const HASH = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

export function isRepoId(s: string): boolean {
  const parts = s.split('/');
  return parts.length === 2 && parts.every((p) => REPO_PART.test(p)) && !s.includes('--') && !s.includes('..');
}

/** A branch, tag or commit: slash-separated plain segments (refs/pr/1), no dot segments. */
export function isRevision(s: string): boolean {
  return s.length <= 128 && s.split('/').every((seg) => /^[\w.-]+$/.test(seg) && seg !== '.' && seg !== '..');
}

/** A top-level file name that is safe to join to a directory: no separators, drive letters or dot names. */
export function safeName(name: unknown): name is string {
  return typeof name === 'string' && /^\w[\w.+-]{0,254}$/.test(name) && !name.includes('..');
}

export function hubCacheDir(): string {
  return getHFHubCachePath();
}

function repoFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.replace('/', '--')}`);
}

/** The token: given, else HF_TOKEN, else the one `hf auth login` saved (HF_TOKEN_PATH, else HF_HOME/token). */
export function hubToken(given?: string): string | undefined {
  if (given) return given;
  if (process.env.HF_TOKEN) return process.env.HF_TOKEN;
  const home = process.env.HF_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  const file = process.env.HF_TOKEN_PATH ?? join(home, 'token');
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- which files

/** Small files read before the weights (the index names the shards). */
const METADATA = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'model.safetensors.index.json'];
/** A tokenizer's own files (what a model that ships none borrows). */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
/** MDLM and BD3-LM repositories hold their modeling code and no tokenizer: they use GPT-2's. */
const DIT_CODE = /^modeling_(mdlm|bd3lm)\.py$/;
export const GPT2_TOKENIZER_REPO = 'openai-community/gpt2';
/** Fetched when they can be; a failure is reported, not fatal. */
const CARD = /^(README\.md|LICEN[CS]E(\.\w+)?|NOTICE(\.\w+)?)$/i;

/** GGUF files at the top of a listing (vision projectors aside): which one a selector picks —
 * its exact name, or a quantization tag it contains (Q4_K_M), case-insensitively, as llama.cpp's
 * `-hf owner/name:Q4_K_M` picks — as the files to fetch: that one, or every part of a split one
 * (PREFIX-00001-of-0000N.gguf ..., in order). Throws naming the choices when none or several
 * match, or a part is missing. */
export function pickGguf(names: string[], selector: string, where: string): string[] {
  if (selector === '') throw new HubError('hub_no_file', `name a GGUF file of ${where} after the colon (its file name or quantization, e.g. Q8_0)`);
  const ggufs = names.filter(isModelGguf);
  const sel = selector.toLowerCase();
  const exact = ggufs.find((n) => n.toLowerCase() === sel);
  // a tag matches between separators: "F16" is not in "BF16", "Q4_K" not in "Q4_K_M"
  const tag = new RegExp(`(^|[-_.])${sel.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}($|[-.])`);
  const hits = exact ? [exact] : ggufs.filter((n) => tag.test(n.toLowerCase()));
  const choices = ggufs.slice(0, 12).join(', ') || 'none';
  if (hits.length === 0) throw new HubError('hub_no_file', `${where} has no GGUF file matching ${JSON.stringify(selector)} (GGUF files: ${choices})`);
  // the parts of one split file are one model, not a choice
  const set = (n: string) => n.replace(SPLIT_PART, '') + (SPLIT_PART.exec(n)?.[2] ?? '');
  if (hits.every((h) => SPLIT_PART.test(h)) && new Set(hits.map(set)).size === 1) {
    const count = Number(SPLIT_PART.exec(hits[0])![2]);
    const parts = Array.from({ length: count }, (_, i) => splitPartName(hits[0], i));
    const missing = parts.find((p) => !ggufs.includes(p));
    if (missing) throw new HubError('hub_split_gguf', `${where}/${hits[0]} is one part of a split GGUF whose part ${missing} is not in the repository`);
    return parts;
  }
  if (hits.length > 1) throw new HubError('hub_ambiguous', `${JSON.stringify(selector)} matches ${hits.length} GGUF files of ${where} (${hits.slice(0, 8).join(', ')}): name one`);
  return hits;
}

/** A GGUF file that is a model of its own (not a vision projector). */
export function isModelGguf(name: string): boolean {
  return name.toLowerCase().endsWith('.gguf') && !/mmproj/i.test(name);
}

/** `owner/name[@revision][:file]`: a Hub model, or one GGUF file of a Hub repository
 * (`revision` only when the reference names one). */
export function parseModelRef(s: string): { repo: string; revision?: string; file?: string } {
  const colon = s.indexOf(':');
  const head = colon < 0 ? s : s.slice(0, colon);
  const at = head.indexOf('@');
  return { repo: at < 0 ? head : head.slice(0, at), ...(at < 0 ? {} : { revision: head.slice(at + 1) }), ...(colon < 0 ? {} : { file: s.slice(colon + 1) }) };
}

export interface FilePlan {
  metadata: ListFileEntry[];
  /** a repository whose tokenizer files this model uses (its own has none) */
  tokenizerFrom?: string;
  /** no tokenizer.json and no modeling file that says whose: config.json decides (pullFiles) */
  tokenizerUnknown?: boolean;
  card: ListFileEntry[];
  /** null until the index is read: then the shards it names */
  weights: ListFileEntry[] | null;
  all: Map<string, ListFileEntry>;
}

/** From a repo's top-level listing: what to fetch, or a typed error naming what is missing.
 * Files in subfolders and files with unsafe names are never fetched. */
export function planFiles(entries: ListFileEntry[], repo: string, ggufFile?: string, tokenizerOnly = false): FilePlan {
  const all = new Map(entries.filter((e) => e.type === 'file' && safeName(e.path)).map((e) => [e.path, e]));
  if (tokenizerOnly) {
    if (!all.has('tokenizer.json')) throw new HubError('hub_incomplete', `${repo} has no tokenizer.json`);
    return { metadata: [...all.values()].filter((e) => TOKENIZER_FILES.includes(e.path)), card: [], weights: [], all };
  }
  const card = [...all.values()].filter((e) => CARD.test(e.path));
  const tokenizerFrom = !all.has('tokenizer.json') && [...all.keys()].some((p) => DIT_CODE.test(p)) ? GPT2_TOKENIZER_REPO : undefined;
  // one GGUF file holds the whole model (weights, config and tokenizer as metadata)
  if (ggufFile !== undefined) return { metadata: [], card, weights: pickGguf([...all.keys()], ggufFile, repo).map((p) => all.get(p)!), all };
  // a LoRA adapter (PEFT's files, maybe beside its base's config.json): its config, weights and
  // any tokenizer files; the base is pulled by its own id
  if (all.has('adapter_config.json') && !all.has('model.safetensors') && !all.has('model.safetensors.index.json')) {
    const w = all.get('adapter_model.safetensors');
    if (!w) throw new HubError('hub_no_safetensors', `${repo} is a LoRA adapter without adapter_model.safetensors${all.has('adapter_model.bin') ? ' (it has adapter_model.bin, a pickle: quench reads safetensors only)' : ''}`);
    return { metadata: [...all.values()].filter((e) => e.path === 'adapter_config.json' || e.path === 'chat_template.jinja' || TOKENIZER_FILES.includes(e.path)), card, weights: [w], all };
  }
  // (without tokenizer.json a DiT model's config.json, read first, can still say it borrows GPT-2's)
  const tokenizerUnknown = !all.has('tokenizer.json') && !tokenizerFrom && all.has('config.json');
  for (const need of ['config.json', ...(tokenizerFrom || tokenizerUnknown ? [] : ['tokenizer.json'])])
    if (!all.has(need)) {
      const ggufs = [...all.keys()].filter((p) => p.toLowerCase().endsWith('.gguf'));
      if (ggufs.length) throw new HubError('hub_incomplete', `${repo} holds GGUF files (${ggufs.slice(0, 4).join(', ')}): pull one as ${repo}:<file name or quantization, e.g. Q8_0>`);
      throw new HubError('hub_incomplete', `${repo} has no ${need} (quench needs config.json, tokenizer.json and safetensors weights, or a GGUF file)`);
    }
  // (config.json first: without tokenizer.json it decides whether the pull goes on)
  const metadata = [...all.values()].filter((e) => METADATA.includes(e.path)).sort((a, b) => Number(b.path === 'config.json') - Number(a.path === 'config.json'));
  let weights: ListFileEntry[] | null = null;
  // (a repository of GGUF files, with a config.json beside them or not: the way to pull one)
  const ggufs = [...all.keys()].filter((p) => p.toLowerCase().endsWith('.gguf'));
  if (ggufs.length && !all.has('model.safetensors') && !all.has('model.safetensors.index.json'))
    throw new HubError('hub_incomplete', `${repo} holds GGUF files (${ggufs.slice(0, 4).join(', ')}): pull one as ${repo}:<file name or quantization, e.g. Q8_0>`);
  if (!all.has('model.safetensors.index.json')) {
    const single = all.get('model.safetensors');
    if (!single) {
      const other = [...all.keys()].filter((p) => /\.(bin|pt|pth|gguf|ckpt)$/.test(p));
      throw new HubError('hub_no_safetensors', `${repo} has no model.safetensors or model.safetensors.index.json${other.length ? ` (it has ${other.slice(0, 3).join(', ')}: quench reads safetensors only)` : ''}`);
    }
    weights = [single];
  }
  return { metadata, card, weights, all, ...(tokenizerFrom ? { tokenizerFrom } : {}), ...(tokenizerUnknown ? { tokenizerUnknown } : {}) };
}

/** The tokenizer a model without tokenizer.json borrows, by its config.json (MDLM, BD3-LM: GPT-2's), or null. */
export function borrowedTokenizer(configJson: string): string | null {
  try {
    const c = JSON.parse(configJson) as { model_type?: unknown; architectures?: unknown };
    const archs = Array.isArray(c.architectures) ? c.architectures : [];
    // (as formats/config.ts reads it: model_type in any case, or the class)
    const type = typeof c.model_type === 'string' ? c.model_type.toLowerCase() : '';
    return type === 'mdlm' || type === 'bd3lm' || archs.includes('MDLM') || archs.includes('BD3LM') ? GPT2_TOKENIZER_REPO : null;
  } catch {
    return null;
  }
}

/** The file names a safetensors index's weight_map points to. */
function indexShards(indexJson: string, where: string): unknown[] {
  let map: unknown;
  try {
    map = (JSON.parse(indexJson) as { weight_map?: unknown }).weight_map;
  } catch {
    throw new FormatError('index_invalid', `${where}: model.safetensors.index.json is not valid JSON`);
  }
  if (!map || typeof map !== 'object') throw new FormatError('index_invalid', `${where}: model.safetensors.index.json has no weight_map`);
  return [...new Set(Object.values(map as Record<string, unknown>))];
}

/** The shards a safetensors index names, each a plain name present in the listing. */
export function shardsOf(indexJson: string, plan: FilePlan, repo: string): ListFileEntry[] {
  return indexShards(indexJson, repo).map((n) => {
    if (!safeName(n)) throw new HubError('hub_bad_name', `${repo}: the index names ${JSON.stringify(n)}, not a plain file name`);
    const e = plan.all.get(n);
    if (!e) throw new HubError('hub_incomplete', `${repo}: the index names ${JSON.stringify(n)}, which is not in the repository`);
    return e;
  });
}

// ---------------------------------------------------------------- download

export interface PullProgress {
  file: string;
  /** bytes received so far (for Xet storage: compressed chunk bytes, an estimate) */
  bytes: number;
  size: number;
  done: boolean;
  cached: boolean;
}

export interface PullOptions {
  /** branch, tag or commit (default main) */
  revision?: string;
  /** the Hub's address (default https://huggingface.co, or HF_ENDPOINT) */
  endpoint?: string;
  /** access token for gated or private repositories (default HF_TOKEN, then the saved login) */
  token?: string;
  cacheDir?: string;
  onProgress?: (e: PullProgress) => void;
  fetch?: typeof fetch;
  /** fetch only this GGUF file of the repository: its name or a quantization tag it contains */
  file?: string;
  /** fetch only the tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json) */
  tokenizerOnly?: boolean;
}

export interface PullResult {
  repo: string;
  revision: string;
  commit: string;
  dir: string;
  files: string[];
  /** optional files (model card, license) that could not be fetched, with why */
  skipped: string[];
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
  if (!isRevision(revision)) throw new HubError('hub_bad_revision', `${JSON.stringify(revision)} is not a branch, tag or commit`);
  const cacheDir = o.cacheDir ?? hubCacheDir();
  const root = repoFolder(cacheDir, repo);
  const hubUrl = (o.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const accessToken = hubToken(o.token);
  const ctx: HubContext = { repo, revision, hubUrl, token: !!accessToken, lastError: null };
  let current: { file: string; size: number; bytes: number } | null = null;
  const baseFetch = o.fetch ?? fetch;
  // The library has no progress hook, trusts the content hashes the server names blobs by,
  // and drops the server's error code: this wrapper checks the hashes, keeps the error code
  // and counts the bytes of each file body as it streams in (from /resolve/ or, for Xet
  // storage, from its chunk servers).
  const checked: typeof fetch = async (input, init) => {
    const res = await baseFetch(input, init);
    const url = String(input instanceof Request ? input.url : input);
    if (!res.ok) {
      ctx.lastError = { status: res.status, code: res.headers.get('X-Error-Code'), message: await res.clone().text().then(serverMessage, () => '') };
      return res;
    }
    if (/\/api\/models\/.+\/paths-info\//.test(url)) {
      const items = (await res.clone().json()) as { oid?: unknown; lfs?: { oid?: unknown }; xetHash?: unknown }[];
      for (const it of Array.isArray(items) ? items : [])
        for (const h of [it.oid, it.lfs?.oid, it.xetHash])
          if (h !== undefined && !(typeof h === 'string' && HASH.test(h))) throw new HubError('hub_bad_response', `${repo}: the Hub gave a malformed content hash ${JSON.stringify(h)}`);
      return res;
    }
    const probe = new Headers(init?.headers).get('Range') === 'bytes=0-0';
    if (!current || probe || !res.body || /\/api\//.test(url) || (res.headers.get('content-type') ?? '').includes('json')) return res;
    const cur = current;
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          cur.bytes += chunk.byteLength;
          o.onProgress?.({ file: cur.file, bytes: cur.bytes, size: cur.size, done: false, cached: false });
          ctl.enqueue(chunk);
        },
      }),
    );
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  const common = { repo: { type: 'model' as const, name: repo }, hubUrl, accessToken, fetch: checked };
  const commit = await hubCall(ctx, async () => {
    if (COMMIT.test(revision)) return revision;
    const info = (await modelInfo({ ...common, name: repo, revision, additionalFields: ['sha'] })) as { sha?: unknown };
    if (typeof info.sha !== 'string' || !COMMIT.test(info.sha)) throw new HubError('hub_bad_response', `${repo}: the Hub gave no commit for revision ${revision}`);
    return info.sha;
  });
  const entries: ListFileEntry[] = [];
  await hubCall(ctx, async () => {
    for await (const e of listFiles({ ...common, revision: commit })) entries.push(e);
  });
  const plan = planFiles(entries, repo, o.file, o.tokenizerOnly);
  const files: string[] = [];
  const skipped: string[] = [];
  let bytes = 0;
  const fetchOne = async (e: ListFileEntry) => {
    const cached = existsSync(join(root, 'snapshots', commit, e.path));
    current = { file: e.path, size: fileSize(e), bytes: 0 };
    let path: string;
    try {
      path = await hubCall(ctx, () => downloadFileToCacheDir({ ...common, path: e.path, revision: commit, cacheDir }));
    } catch (err) {
      // a download cut short leaves blobs/<hash>.incomplete: not resumed, so not kept
      const hash = e.lfs?.oid ?? e.xetHash ?? e.oid;
      if (hash && HASH.test(hash)) await rm(join(root, 'blobs', `${hash}.incomplete`), { force: true });
      throw err;
    } finally {
      current = null;
    }
    const got = statSync(path).size;
    const bad = got !== fileSize(e) ? `got ${got} bytes, the Hub lists ${fileSize(e)}` : cached ? null : await hashMismatch(path, e);
    if (bad) {
      // the blob goes too, or a later pull would link it again (only a blob of this repository)
      const target = realpathSync(path);
      if (target.startsWith(realpathSync(join(root, 'blobs')) + sep)) await rm(target, { force: true });
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
    if (e.path === 'config.json' && plan.tokenizerUnknown) {
      const from = borrowedTokenizer(readFileSync(p, 'utf8'));
      if (!from) throw new HubError('hub_incomplete', `${repo} has no tokenizer.json (quench needs config.json, tokenizer.json and safetensors weights, or a GGUF file)`);
      plan.tokenizerFrom = from;
    }
  }
  const weights = plan.weights ?? shardsOf(index!, plan, repo);
  for (const e of weights) await fetchOne(e);
  for (const e of plan.card) {
    try {
      await fetchOne(e);
    } catch (err) {
      skipped.push(`${e.path} (${err instanceof Error ? err.message : String(err)})`);
    }
  }
  if (plan.tokenizerFrom) {
    // (a model that ships no tokenizer: the one it was trained with is pulled as its own repository
    // and its files copied beside the weights, so the snapshot loads as it is)
    const tok = await pullFiles(plan.tokenizerFrom, { ...o, revision: 'main', file: undefined, tokenizerOnly: true });
    const snap = join(root, 'snapshots', commit);
    for (const f of tok.files) {
      // (whole or not at all: a copy cut short must not pass for the file)
      const tmp = join(snap, `.${f}.quench-${process.pid}`);
      await copyFile(join(tok.dir, f), tmp);
      await rename(tmp, join(snap, f));
      files.push(`${f} (from ${plan.tokenizerFrom})`);
    }
    bytes += tok.bytes;
  }
  if (revision !== commit) {
    const ref = join(root, 'refs', revision);
    await mkdir(dirname(ref), { recursive: true });
    await writeFile(ref, commit);
  }
  return { repo, revision, commit, dir: join(root, 'snapshots', commit), files, skipped, bytes };
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

// ---------------------------------------------------------------- errors

interface HubContext {
  repo: string;
  revision: string;
  hubUrl: string;
  token: boolean;
  /** the last failed response: status, X-Error-Code, the server's message */
  lastError: { status: number; code: string | null; message: string } | null;
}

function serverMessage(text: string): string {
  try {
    const j = JSON.parse(text) as { error?: unknown };
    if (typeof j.error === 'string') return j.error.slice(0, 300);
  } catch {
    /* not JSON */
  }
  return text.slice(0, 300);
}

/** Hub failures as typed errors that say what happened and what to do about it. */
async function hubCall<T>(ctx: HubContext, f: () => Promise<T>): Promise<T> {
  ctx.lastError = null;
  try {
    return await f();
  } catch (e) {
    if (e instanceof QuenchError) throw e;
    throw hubError(ctx, e);
  }
}

function hubError(ctx: HubContext, e: unknown): HubError {
  const { repo, hubUrl } = ctx;
  const last = ctx.lastError;
  const said = last?.message ? ` (the Hub says: ${last.message})` : '';
  const status = last?.status ?? (e as { statusCode?: number }).statusCode;
  const code = last?.code;
  const page = `${hubUrl}/${repo}`;
  if (code === 'RepoNotFound' || (status === 404 && !code))
    return new HubError('hub_not_found', `${repo}: no such model on ${hubUrl}, or it is private${ctx.token ? ' and the token cannot read it' : ': if it is yours, pass --token or set HF_TOKEN'}`);
  if (code === 'RevisionNotFound') return new HubError('hub_revision_not_found', `${repo}: no revision ${JSON.stringify(ctx.revision)}${said}`);
  if (code === 'GatedRepo')
    return new HubError('hub_unauthorized', `${repo} is gated: ${ctx.token ? `this token has no access yet; request it at ${page}` : `request access at ${page}, then pass --token or set HF_TOKEN`}${said}`);
  if (status === 401 || status === 403)
    return new HubError('hub_unauthorized', `${repo}: access denied (${status})${said}; ${ctx.token ? 'check the token' : 'gated or private models need a token: --token or HF_TOKEN'}`);
  if (code === 'EntryNotFound' || status === 404) return new HubError('hub_not_found', `${repo}: a file listed by the Hub is not there${said}; run pull again`);
  if (status) return new HubError('hub_failed', `${repo}: the Hub answered ${status}${said}; run pull again later`);
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (e instanceof Error ? e.message : String(e));
  return new HubError('hub_unreachable', `${repo}: cannot download from ${hubUrl} (${why}); check the network, HF_ENDPOINT and proxy settings, then run pull again`);
}

// ---------------------------------------------------------------- the cache

/** What a snapshot directory lacks for quench to load it ([] when complete). */
export function snapshotMissing(dir: string): string[] {
  // (a LoRA adapter: its config and weights; the base model is a repository of its own)
  if (isAdapterDir(dir)) return existsSync(join(dir, 'adapter_model.safetensors')) ? [] : ['adapter_model.safetensors'];
  const missing = ['config.json', 'tokenizer.json'].filter((f) => !existsSync(join(dir, f)));
  if (existsSync(join(dir, 'model.safetensors.index.json'))) {
    try {
      for (const n of indexShards(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'), dir))
        if (!safeName(n) || !existsSync(join(dir, n))) missing.push(String(n));
    } catch {
      missing.push('model.safetensors.index.json (unreadable)');
    }
  } else if (!existsSync(join(dir, 'model.safetensors'))) missing.push('model.safetensors');
  return missing;
}

/** The snapshot directory a pulled model's ref (or commit) names, complete or not; null when none. */
export function snapshotDir(repo: string, revision = 'main', cacheDir = hubCacheDir()): string | null {
  if (!isRepoId(repo) || !isRevision(revision)) return null;
  const root = repoFolder(cacheDir, repo);
  let commit = revision;
  if (!COMMIT.test(revision)) {
    try {
      commit = readFileSync(join(root, 'refs', revision), 'utf8').trim();
    } catch {
      return null;
    }
    if (!COMMIT.test(commit)) return null;
  }
  const dir = join(root, 'snapshots', commit);
  return existsSync(dir) ? dir : null;
}

/** The snapshot directory of a completely pulled model, or null. */
export function cachedSnapshot(repo: string, revision = 'main', cacheDir = hubCacheDir()): string | null {
  const dir = snapshotDir(repo, revision, cacheDir);
  return dir && snapshotMissing(dir).length === 0 ? dir : null;
}

/** Completely pulled models, one entry per ref: owner/name for main, owner/name@ref for others. */
export function cachedModels(cacheDir = hubCacheDir()): { repo: string; dir: string }[] {
  const out: { repo: string; dir: string }[] = [];
  let dirs: string[];
  try {
    dirs = readdirSync(cacheDir);
  } catch {
    return [];
  }
  for (const d of dirs) {
    const parts = d.split('--');
    if (parts.length !== 3 || parts[0] !== 'models') continue;
    const repo = `${parts[1]}/${parts[2]}`;
    try {
      for (const ref of listRefs(join(cacheDir, d, 'refs'))) {
        const name = ref === 'main' ? repo : `${repo}@${ref}`;
        const snap = snapshotDir(repo, ref, cacheDir);
        if (snap && snapshotMissing(snap).length === 0) out.push({ repo: name, dir: snap });
        // GGUF files pulled from it, each a model: owner/name:file (a split one by its first part)
        if (snap) for (const f of readdirSync(snap)) if (isModelGguf(f) && isFirstGgufPart(f) && existsSync(join(snap, f))) out.push({ repo: `${name}:${f}`, dir: join(snap, f) });
      }
    } catch {
      /* an unreadable entry of the shared cache is not ours to fail on */
    }
  }
  return out;
}

function listRefs(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listRefs(join(dir, e.name), `${prefix}${e.name}/`) : e.isFile() ? [`${prefix}${e.name}`] : [],
  );
}
