// quench pull owner/name: fetch a model from the Hugging Face Hub into the shared Hub cache,
// with one progress line per file (redrawn in place on a TTY).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRepoId, parseModelRef, pull, type PullOptions } from '../models/hub.ts';
import { ADAPTER_CONFIG, isAdapterDir, parseLoraConfig } from '../formats/lora.ts';
import { resolveModelEntry } from './paths.ts';

const mb = (n: number) => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;

export async function pullCommand(ref: string, o: Pick<PullOptions, 'revision' | 'endpoint' | 'token'>): Promise<void> {
  const tty = process.stderr.isTTY;
  let last = 0;
  const t0 = performance.now();
  // owner/name[@revision][:file]: `@` overrides --revision; `:` picks one GGUF file
  const parsed = parseModelRef(ref);
  const revision = parsed.revision ?? o.revision;
  const r = await pull(parsed.repo, {
    ...o,
    revision,
    file: parsed.file,
    onProgress: (e) => {
      if (e.done) {
        if (tty) process.stderr.write('\r\x1b[2K');
        process.stderr.write(`${e.file}  ${mb(e.size)}${e.cached ? '  (cached)' : ''}\n`);
        return;
      }
      const now = performance.now();
      if (!tty || now - last < 100) return;
      last = now;
      const got = Math.min(e.bytes, e.size); // Xet chunk bytes can run past the file's size
      const pct = e.size > 0 ? ((got / e.size) * 100).toFixed(0) : '?';
      process.stderr.write(`\r\x1b[2K${e.file}  ${mb(got)} / ${mb(e.size)}  ${pct} %`);
    },
  });
  const s = (performance.now() - t0) / 1000;
  for (const k of r.skipped) process.stderr.write(`skipped ${k}\n`);
  const name = (r.revision === 'main' ? r.repo : `${r.repo}@${r.revision}`) + (parsed.file !== undefined ? `:${r.files.find((f) => f.toLowerCase().endsWith('.gguf'))}` : '');
  console.log(`pulled ${name} at ${r.commit.slice(0, 12)}: ${r.files.length} files, ${mb(r.bytes)} in ${s.toFixed(1)} s -> ${r.dir}`);
  if (isAdapterDir(r.dir)) {
    // (an adapter runs on its base, which is a repository of its own)
    // (someone else's text: quoted, so no control character reaches the terminal)
    const named = parseLoraConfig(readFileSync(join(r.dir, ADAPTER_CONFIG), 'utf8')).baseModel;
    const base = named === null ? null : isRepoId(named) ? named : JSON.stringify(named.slice(0, 200));
    let ready = false;
    try {
      resolveModelEntry(name);
      ready = true;
    } catch {
      /* the base is not here yet */
    }
    const hint = ready ? '' : named !== null && isRepoId(named) ? `: pull the base too (quench pull ${named})` : ': give the base as --model <base> --lora ' + name;
    console.log(`a LoRA adapter for ${base ?? '(no base named)'}${hint}`);
  }
  console.log(`run it: quench run --model ${name} "..."   serve it: quench serve --model ${name}`);
}
