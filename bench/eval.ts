// quench eval: held-out task instances (train/heldout.jsonl, generated with a fixed seed and
// excluded from training) through the engine; exact-match accuracy per task family for
// each decoding configuration, next to tokens/s and tokens per forward: the speed/quality
// frontier. The causal baseline decodes the same prompts one token per step.
//
//   quench eval [--model quench-tiny] [--ar-model quench-tiny-ar] [--limit 20]
//               [--configs lc1,thr90,...] [--dtype fp32] [--max-tokens 64] [--block N]
//               [--canvas adaptive|fixed|adaptive,fixed] [--initial-canvas 16] [--rounds 1]
//               [--families json_extract,...] [--json] [--lora adapter]   (--json: every answer in JSON mode)

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generate } from '../src/decode/generation.ts';
import type { GenerateOptions } from '../src/decode/options.ts';
import { loadModel, type Model, type DTypeOption } from '../src/models/registry.ts';
import { PACKAGE_ROOT, resolveModel, resolveModelEntry } from '../src/cli/paths.ts';
import { parseArgs, fmt } from './common.ts';
import { jsonObjectConstraint } from '../src/decode/json-grammar.ts';
import { OptionError } from '../src/errors.ts';

export interface Task {
  family: string;
  prompt: string;
  answer: string;
}

export const CONFIGS: Record<string, { label: string; o: GenerateOptions }> = {
  lc1: { label: 'low_confidence, 1 token/step, no cache', o: { policy: 'low_confidence', steps: 64, cache: 'none' } },
  lc2: { label: 'low_confidence, 2 tokens/step, prefix cache', o: { policy: 'low_confidence', steps: 32, cache: 'prefix' } },
  margin2: { label: 'margin, 2 tokens/step, prefix cache', o: { policy: 'margin', steps: 32, cache: 'prefix' } },
  thr95: { label: 'threshold 0.95, prefix cache', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix' } },
  thr99: { label: 'threshold 0.99, prefix cache (high)', o: { policy: 'threshold', threshold: 0.99, cache: 'prefix' } },
  thr95b8: { label: 'threshold 0.95, blocks of 8, prefix cache', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', blockLength: 8 } },
  thr90: { label: 'threshold 0.9, prefix cache', o: { policy: 'threshold', threshold: 0.9, cache: 'prefix' } },
  thr90d: { label: 'threshold 0.9, dual cache', o: { policy: 'threshold', threshold: 0.9, cache: 'dual' } },
  thr70d: { label: 'threshold 0.7, dual cache', o: { policy: 'threshold', threshold: 0.7, cache: 'dual' } },
  // the same, separating same-token neighbours committed in one step (policies.ts separateTwins)
  thr95t: { label: 'threshold 0.95, prefix cache, twins separated', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', separateTwins: true } },
  thr90t: { label: 'threshold 0.9, prefix cache, twins separated', o: { policy: 'threshold', threshold: 0.9, cache: 'prefix', separateTwins: true } },
  thr70dt: { label: 'threshold 0.7, dual cache, twins separated', o: { policy: 'threshold', threshold: 0.7, cache: 'dual', separateTwins: true } },
  // the same, committing an end only after the text before it (policies.ts holdEnds)
  thr95e: { label: 'threshold 0.95, prefix cache, ends held', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', holdEnds: true } },
  thr90e: { label: 'threshold 0.9, prefix cache, ends held', o: { policy: 'threshold', threshold: 0.9, cache: 'prefix', holdEnds: true } },
  thr70e: { label: 'threshold 0.7, prefix cache, ends held', o: { policy: 'threshold', threshold: 0.7, cache: 'prefix', holdEnds: true } },
  // the same, committing only a left-to-right run from the first open position (policies.ts inOrder)
  thr95o: { label: 'threshold 0.95, prefix cache, in order', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', inOrder: true } },
  thr90o: { label: 'threshold 0.9, prefix cache, in order', o: { policy: 'threshold', threshold: 0.9, cache: 'prefix', inOrder: true } },
  thr70o: { label: 'threshold 0.7, prefix cache, in order', o: { policy: 'threshold', threshold: 0.7, cache: 'prefix', inOrder: true } },
  // Fast-dLLM v2's decoder: a block's first token alone, by the block's first forward (lead_token)
  thr95ol: { label: 'threshold 0.95, prefix cache, in order, lead token', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', inOrder: true, leadToken: true } },
  thr95l: { label: 'threshold 0.95, prefix cache, lead token', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', leadToken: true } },
  thr50o: { label: 'threshold 0.5, prefix cache, in order', o: { policy: 'threshold', threshold: 0.5, cache: 'prefix', inOrder: true } },
  // classifier-free guidance (bidirectional models; no cache): threshold 0.95 beside thr95n, the same without guidance
  thr95n: { label: 'threshold 0.95, no cache', o: { policy: 'threshold', threshold: 0.95, cache: 'none' } },
  thr95g05: { label: 'threshold 0.95, no cache, cfg 0.5', o: { policy: 'threshold', threshold: 0.95, cache: 'none', cfgScale: 0.5 } },
  thr95g1: { label: 'threshold 0.95, no cache, cfg 1', o: { policy: 'threshold', threshold: 0.95, cache: 'none', cfgScale: 1 } },
  thr95g2: { label: 'threshold 0.95, no cache, cfg 2', o: { policy: 'threshold', threshold: 0.95, cache: 'none', cfgScale: 2 } },
  // WINO (draft above the threshold, mask again what verification no longer believes)
  wino: { label: 'wino 0.6 / 0.9, prefix cache', o: { policy: 'wino', threshold: 0.6, verifyThreshold: 0.9, cache: 'prefix' } },
  winon: { label: 'wino 0.6 / 0.9, no cache', o: { policy: 'wino', threshold: 0.6, verifyThreshold: 0.9, cache: 'none' } },
  wino7: { label: 'wino 0.7 / 0.95, prefix cache', o: { policy: 'wino', threshold: 0.7, verifyThreshold: 0.95, cache: 'prefix' } },
  wino5: { label: 'wino 0.5 / 0.9, prefix cache', o: { policy: 'wino', threshold: 0.5, verifyThreshold: 0.9, cache: 'prefix' } },
  // token editing (LLaDA2.1's draft-and-edit): its model card's Q and S modes, and editing beside threshold 0.95
  editq: { label: 'threshold 0.7, editing 0.5 (Q mode), prefix cache', o: { policy: 'threshold', threshold: 0.7, editingThreshold: 0.5, maxPostSteps: 16, cache: 'prefix' } },
  edits: { label: 'threshold 0.5, editing 0 (S mode), prefix cache', o: { policy: 'threshold', threshold: 0.5, editingThreshold: 0, maxPostSteps: 16, cache: 'prefix' } },
  editq0: { label: 'threshold 0.7, editing 0.5, no post steps, prefix cache', o: { policy: 'threshold', threshold: 0.7, editingThreshold: 0.5, maxPostSteps: 0, cache: 'prefix' } },
  edits0: { label: 'threshold 0.5, editing 0, no post steps, prefix cache', o: { policy: 'threshold', threshold: 0.5, editingThreshold: 0, maxPostSteps: 0, cache: 'prefix' } },
  thr90ed9: { label: 'threshold 0.9, editing 0.9, prefix cache', o: { policy: 'threshold', threshold: 0.9, editingThreshold: 0.9, maxPostSteps: 16, cache: 'prefix' } },
  thr99ed9: { label: 'threshold 0.99, editing 0.9, prefix cache', o: { policy: 'threshold', threshold: 0.99, editingThreshold: 0.9, maxPostSteps: 16, cache: 'prefix' } },
  thr95ed9: { label: 'threshold 0.95, editing 0.9, prefix cache', o: { policy: 'threshold', threshold: 0.95, editingThreshold: 0.9, maxPostSteps: 16, cache: 'prefix' } },
  thr70: { label: 'threshold 0.7, prefix cache', o: { policy: 'threshold', threshold: 0.7, cache: 'prefix' } },
  thr50: { label: 'threshold 0.5, prefix cache', o: { policy: 'threshold', threshold: 0.5, cache: 'prefix' } },
  // OpenAI's penalties over the answer's committed tokens (open prompts: loops)
  thr95f5: { label: 'threshold 0.95, prefix cache, frequency penalty 0.5', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', frequencyPenalty: 0.5 } },
  thr95f1: { label: 'threshold 0.95, prefix cache, frequency penalty 1', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', frequencyPenalty: 1 } },
  thr95p1: { label: 'threshold 0.95, prefix cache, presence penalty 1', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', presencePenalty: 1 } },
  thr95of5: { label: 'threshold 0.95, prefix cache, in order, frequency penalty 0.5', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', inOrder: true, frequencyPenalty: 0.5 } },
  eb: { label: 'entropy_bounded gamma 0.3, prefix cache', o: { policy: 'entropy_bounded', gamma: 0.3, cache: 'prefix' } },
  eb01: { label: 'entropy_bounded gamma 0.1, prefix cache', o: { policy: 'entropy_bounded', gamma: 0.1, cache: 'prefix' } },
  eb003: { label: 'entropy_bounded gamma 0.03, prefix cache', o: { policy: 'entropy_bounded', gamma: 0.03, cache: 'prefix' } },
  // Prophet's early commit (policies.ts earlyCommit) on the threshold policy
  thr90p5: { label: 'threshold 0.9, prefix cache, early commit 5', o: { policy: 'threshold', threshold: 0.9, cache: 'prefix', earlyCommit: 5 } },
  thr90p3: { label: 'threshold 0.9, prefix cache, early commit 3', o: { policy: 'threshold', threshold: 0.9, cache: 'prefix', earlyCommit: 3 } },
  thr95p5: { label: 'threshold 0.95, prefix cache, early commit 5', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', earlyCommit: 5 } },
  thr95p8: { label: 'threshold 0.95, prefix cache, early commit 8', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', earlyCommit: 8 } },
  thr95p12: { label: 'threshold 0.95, prefix cache, early commit 12', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', earlyCommit: 12 } },
  thr95p3: { label: 'threshold 0.95, prefix cache, early commit 3', o: { policy: 'threshold', threshold: 0.95, cache: 'prefix', earlyCommit: 3 } },
  thr70dp5: { label: 'threshold 0.7, dual cache, early commit 5', o: { policy: 'threshold', threshold: 0.7, cache: 'dual', earlyCommit: 5 } },
  lc2p5: { label: 'low_confidence, 2 tokens/step, prefix cache, early commit 5', o: { policy: 'low_confidence', steps: 32, cache: 'prefix', earlyCommit: 5 } },
  dream: { label: 'dream_maskgit_plus, 2 tokens/step on average, prefix cache', o: { policy: 'dream_maskgit_plus', steps: 32, cache: 'prefix' } },
};

export function loadTasks(limit: number, families?: string[]): Task[] {
  const lines = readFileSync(join(PACKAGE_ROOT, 'train', 'heldout.jsonl'), 'utf8').trim().split('\n');
  const per = new Map<string, number>();
  const out: Task[] = [];
  for (const l of lines) {
    const t = JSON.parse(l) as Task;
    if (families && !families.includes(t.family)) continue;
    const n = per.get(t.family) ?? 0;
    if (n >= limit) continue;
    per.set(t.family, n + 1);
    out.push(t);
  }
  return out;
}

export interface EvalRow {
  label: string;
  perFamily: Record<string, number>;
  accuracy: number;
  tokensPerSecond: number;
  tokensPerForward: number;
  forwards: number;
}

export async function evaluate(model: Model, tasks: Task[], label: string, o: GenerateOptions): Promise<EvalRow> {
  const right = new Map<string, number>();
  const total = new Map<string, number>();
  let tokens = 0;
  let forwards = 0;
  let ms = 0;
  for (const t of tasks) {
    const prompt = model.codec.encodeChat([{ role: 'user', content: t.prompt }]);
    // (every configuration names its options: the model's generation_config.json defaults stay out)
    // (lead_token is how the model's own decoder starts a block, not a decoding preference: its
    // generation_config.json's choice stands unless the configuration names one)
    const r = await generate(model, prompt, { leadToken: model.defaults.leadToken, ...o, seed: 0, modelDefaults: false });
    const text = model.codec.decode(r.tokens, true).trim();
    total.set(t.family, (total.get(t.family) ?? 0) + 1);
    if (text === t.answer.trim()) right.set(t.family, (right.get(t.family) ?? 0) + 1);
    tokens += r.tokens.length;
    forwards += r.stats.forwards;
    ms += r.stats.elapsedMs;
  }
  const perFamily: Record<string, number> = {};
  for (const [f, n] of total) perFamily[f] = (right.get(f) ?? 0) / n;
  const all = [...right.values()].reduce((s, x) => s + x, 0) / tasks.length;
  return { label, perFamily, accuracy: all, tokensPerSecond: (tokens / ms) * 1000, tokensPerForward: tokens / forwards, forwards };
}

export function table(rows: EvalRow[], baselineTps?: number): string {
  const fams = Object.keys(rows[0].perFamily);
  const head = `| decoding | ${fams.join(' | ')} | all | tokens/s | tokens/forward |${baselineTps ? ' vs AR |' : ''}`;
  const sep = `|---|${fams.map(() => '---:').join('|')}|---:|---:|---:|${baselineTps ? '---:|' : ''}`;
  const body = rows.map(
    (r) =>
      `| ${r.label} | ${fams.map((f) => fmt((r.perFamily[f] ?? 0) * 100, 0)).join(' | ')} | **${fmt(r.accuracy * 100, 1)}** | ${fmt(r.tokensPerSecond)} | ${fmt(r.tokensPerForward, 2)} |${baselineTps ? ` ${fmt(r.tokensPerSecond / baselineTps, 2)}x |` : ''}`,
  );
  return [head, sep, ...body].join('\n');
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const limit = Number(a.limit ?? 50);
  const maxTokens = Number(a['max-tokens'] ?? 64);
  const block = a.block === undefined ? undefined : Number(a.block); // default: 32, or a block model's own block
  const threads = Number(a.threads ?? 2);
  const rounds = Number(a.rounds ?? 1);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${a.rounds}`);
  const canvases = (a.canvas ?? 'adaptive').split(',') as NonNullable<GenerateOptions['canvas']>[];
  const initialCanvas = Number(a['initial-canvas'] ?? 16);
  const dtype = (a.dtype ?? 'fp32') as DTypeOption;
  const families = a.families ? a.families.split(',') : undefined;
  const tasks = loadTasks(limit, families);
  if (tasks.length === 0) throw new Error(`no held-out tasks in families ${a.families}`);
  // JSON mode: every answer constrained to one JSON object (compare with the same families free)
  const json = a.json !== undefined;
  const withJson = (m: Model, o: GenerateOptions): GenerateOptions => (json ? { ...o, constraint: jsonObjectConstraint(m.codec.vocabBytes(m.args.vocabSize)) } : o);
  const jsonLabel = json ? ', JSON mode' : '';
  const names = (a.configs ?? Object.keys(CONFIGS).join(',')).split(',');
  for (const name of names) if (!CONFIGS[name]) throw new Error(`unknown config ${name}: ${Object.keys(CONFIGS).join(', ')}`);
  // Every round runs the AR baseline, then each configuration under each canvas; the AR
  // baseline runs once more at the end. Accuracy is the same every round (temperature 0);
  // tokens/s is the median over the rounds, the baseline's over all its runs: this VM's
  // speed drifts by tens of percent over the minutes a round takes.
  const ar = a['ar-model'] !== 'none' ? await loadModel(resolveModel(a['ar-model'] ?? 'quench-tiny-ar'), { threads, dtype }) : null;
  const m = resolveModelEntry(a.model ?? 'quench-tiny', a.lora);
  const model = await loadModel(m.dir, { threads, dtype, lora: m.lora });
  const arLabel = ar ? `causal AR baseline (${ar.id}), 1 token/step, KV cache${jsonLabel}` : '';
  const runs = new Map<string, EvalRow[]>();
  const record = (key: string, r: EvalRow) => {
    runs.set(key, [...(runs.get(key) ?? []), r]);
    console.error(`${r.label}: ${fmt(r.accuracy * 100)}% at ${fmt(r.tokensPerSecond)} tok/s, ${fmt(r.tokensPerForward, 2)} tokens/forward`);
  };
  const keys: string[] = [];
  // (a configuration this model cannot run, a step count past a block model's small blocks: left out, said why)
  const skipped = new Map<string, string>();
  for (let round = 0; round < rounds; round++) {
    if (ar) record('ar', await evaluate(ar, tasks, arLabel, withJson(ar, { maxTokens })));
    for (const name of names)
      for (const canvas of canvases) {
        const key = `${name}/${canvas}`;
        if (skipped.has(key)) continue;
        const label = (canvases.length > 1 ? `${CONFIGS[name].label}, ${canvas} canvas` : CONFIGS[name].label) + jsonLabel;
        try {
          record(key, await evaluate(model, tasks, label, withJson(model, { maxTokens, blockLength: block, canvas, initialCanvas, ...CONFIGS[name].o })));
          if (round === 0) keys.push(key);
        } catch (e) {
          if (!(e instanceof OptionError)) throw e;
          skipped.set(key, e.message);
          console.error(`${label}: skipped (${e.message})`);
        }
      }
  }
  if (ar) record('ar', await evaluate(ar, tasks, arLabel, withJson(ar, { maxTokens })));
  await model.close();
  await ar?.close();
  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const summary = (key: string): EvalRow => {
    const rs = runs.get(key)!;
    const tps = rs.map((r) => r.tokensPerSecond);
    const label = rs.length > 1 ? `${rs[0].label} (tokens/s: median of ${tps.map((x) => fmt(x)).join(', ')})` : rs[0].label;
    return { ...rs[0], label, tokensPerSecond: median(tps) };
  };
  const rows = [...(ar ? [summary('ar')] : []), ...keys.map(summary)];
  // (a block diffusion model decodes its own blocks over the whole max_tokens canvas)
  const blockModel = model.args.attention === 'block_causal' ? `, the model's own blocks of ${model.args.blockSize}` : '';
  const canvasText = blockModel ? `max_tokens canvas${blockModel}` : canvases.length > 1 ? `canvas ${canvases.join(' / ')} (adaptive from ${initialCanvas})` : canvases[0] === 'fixed' ? 'fixed canvas' : `adaptive canvas from ${initialCanvas}`;
  console.log(`\n${tasks.length} held-out tasks (${limit} per family${families ? `: ${families.join(', ')}` : ''}), max_tokens ${maxTokens}, ${canvasText}, block ${block ?? 'default'}, ${dtype}, ${threads} threads, temperature 0, ${rounds} round(s)\n`);
  console.log(table(rows, ar ? rows[0].tokensPerSecond : undefined));
  for (const [key, why] of skipped) console.log(`\nskipped ${key.split('/')[0]}: ${why}`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
