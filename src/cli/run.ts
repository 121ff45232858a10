// quench run: one answer, or an interactive chat without a prompt. On a TTY the draft is
// redrawn in place every step: committed tokens solid, current guesses dim; piped output
// gets the final text only.

import { createInterface } from 'node:readline/promises';
import type { StepEvent } from '../decode/generation.ts';
import { Scheduler } from '../engine/scheduler.ts';
import { applyGenerationConfig } from './generation-config.ts';
import type { GenerateOptions } from '../decode/options.ts';
import type { ChatMessage } from '../formats/tokenizer.ts';
import { loadModel, type DTypeOption, type Model } from '../models/registry.ts';
import { readFileSync } from 'node:fs';
import { jsonObjectConstraint } from '../decode/json-grammar.ts';
import { jsonSchemaConstraint } from '../decode/json-schema.ts';
import type { Constraint } from '../decode/constraint.ts';

export interface RunOptions {
  model: string;
  maxTokens?: number;
  policy?: GenerateOptions['policy'];
  steps?: number;
  blockLength?: number;
  /** a block diffusion model's block size, instead of its config's */
  blockSize?: number;
  /** a tokenizer directory for checkpoints that ship none (MDLM, BD3-LM) */
  tokenizer?: string;
  /** a causal layout's checkpoint loaded as a masked diffusion model (Open-dCoder) */
  diffusion?: 'shifted' | 'unshifted';
  /** a LoRA adapter's directory, merged into the weights at load */
  lora?: string;
  threshold?: number;
  /** each step commits a left-to-right run from the first open position */
  inOrder?: boolean;
  leadToken?: boolean;
  verifyThreshold?: number;
  editingThreshold?: number;
  /** Prophet's early commit: the block's logit-gap bar g */
  earlyCommit?: number;
  maxPostSteps?: number;
  cfgScale?: number;
  generationConfig?: string;
  cache?: GenerateOptions['cache'];
  canvas?: GenerateOptions['canvas'];
  initialCanvas?: number;
  temperature?: number;
  seed?: number;
  threads: number;
  dtype: DTypeOption;
  raw?: boolean;
  stats?: boolean;
  /** the answer is one JSON object (constrained decoding) */
  json?: boolean;
  /** the answer is a document of the JSON schema in this file */
  jsonSchema?: string;
}

function constraintOf(model: Model, o: RunOptions): Constraint | undefined {
  const vocab = () => model.codec.vocabBytes(model.args.vocabSize);
  if (o.jsonSchema) {
    let schema: unknown;
    try {
      schema = JSON.parse(readFileSync(o.jsonSchema, 'utf8'));
    } catch (e) {
      throw new Error(`--json-schema ${o.jsonSchema}: ${(e as Error).message}`);
    }
    return jsonSchemaConstraint(schema, vocab());
  }
  return o.json ? jsonObjectConstraint(vocab()) : undefined;
}

const DIM = '\x1b[2m';
const RESET = '\x1b[0m';

/** Redraws a block of text in place by moving the cursor up over the previous frame. */
class LiveView {
  private lines = 0;
  constructor(private out: NodeJS.WriteStream) {}
  draw(styled: string, plain: string): void {
    const cols = this.out.columns || 80;
    if (this.lines > 0) this.out.write(`\x1b[${this.lines}A\r`);
    else this.out.write('\r');
    this.out.write(`\x1b[J${styled}`);
    this.lines = plain.split('\n').reduce((n, l) => n + Math.max(1, Math.ceil(l.length / cols)), 0) - 1;
  }
  end(): void {
    this.out.write('\n');
    this.lines = 0;
  }
}

/** Control characters would move the cursor under the redraw: show them as one cell. */
function printable(s: string): string {
  return s.replace(/\t/g, ' ').replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '\ufffd');
}

function render(model: Model, ev: StepEvent): { styled: string; plain: string } {
  const stop = new Set(model.special.stop);
  let styled = '';
  let plain = '';
  for (let i = 0; i < ev.draft.length; i++) {
    const t = ev.draft[i];
    if (t >= 0 && stop.has(t) && ev.final[i] && i <= ev.finalized) break;
    const piece = t < 0 || stop.has(t) ? '·' : printable(model.codec.decode([t], true));
    plain += piece;
    styled += ev.final[i] ? piece : `${DIM}${piece}${RESET}`;
  }
  return { styled, plain };
}

async function answer(model: Model, sched: Scheduler, prompt: number[], o: RunOptions, live: LiveView | null): Promise<string> {
  const opts: GenerateOptions = {
    maxTokens: o.maxTokens,
    policy: o.policy,
    steps: o.steps,
    blockLength: o.blockLength,
    threshold: o.threshold,
    verifyThreshold: o.verifyThreshold,
    editingThreshold: o.editingThreshold,
    maxPostSteps: o.maxPostSteps,
    earlyCommit: o.earlyCommit,
    inOrder: o.inOrder,
    leadToken: o.leadToken,
    cfgScale: o.cfgScale,
    cache: o.cache,
    canvas: o.canvas,
    initialCanvas: o.initialCanvas,
    temperature: o.temperature,
    seed: o.seed,
    detokenize: (ids) => model.codec.decode(ids, true),
    constraint: constraintOf(model, o),
  };
  // (through a scheduler: a chat's next turn starts from the keys and values of the history,
  // on models whose prompt entries can be shared; see engine/prefix-cache.ts)
  const r = await sched.submit({
    prompt,
    options: opts,
    onStep: live
      ? (ev) => {
          const { styled, plain } = render(model, ev);
          live.draw(styled, plain);
        }
      : undefined,
  });
  const text = r.text ?? model.codec.decode(r.tokens, true);
  if (live) {
    live.draw(printable(text), printable(text));
    live.end();
  }
  if (o.stats) {
    const s = r.stats;
    const canvas = model.args.attention === 'causal' ? '' : `, canvas ${s.canvas}${s.discarded ? ` (${s.discarded} discarded forward${s.discarded > 1 ? "s" : ""} while it grew)` : ''}${s.remasked ? `, ${s.remasked} revoked` : ''}${s.edited ? `, ${s.edited} edited` : ''}`;
    const cached = s.cached ? `, ${s.cached} prompt tokens cached` : '';
    const msg = `[${r.tokens.length} tokens, ${s.forwards} forwards (${(r.tokens.length / Math.max(1, s.forwards)).toFixed(2)} tokens/forward)${canvas}${cached}, ${s.elapsedMs.toFixed(0)} ms, ${((r.tokens.length / s.elapsedMs) * 1000).toFixed(1)} tokens/s, finish ${r.finishReason}]`;
    console.error(msg);
  }
  return text;
}

export async function run(prompt: string, o: RunOptions): Promise<void> {
  const model = await loadModel(o.model, { threads: o.threads, dtype: o.dtype, blockSize: o.blockSize, tokenizer: o.tokenizer, diffusion: o.diffusion, lora: o.lora, onProgress: (m) => console.error(`quench: ${m}`) });
  await applyGenerationConfig(model, o.generationConfig);
  const tty = process.stdout.isTTY === true;
  const sched = new Scheduler(model, { maxBatch: 1 });
  const encode = (messages: ChatMessage[]) =>
    o.raw || !model.codec.hasChatTemplate
      ? model.codec.encodePrompt(messages.map((m) => m.content).join('\n'))
      : model.codec.encodeChat(messages);
  try {
    if (prompt) {
      const live = tty ? new LiveView(process.stdout) : null;
      const text = await answer(model, sched, encode([{ role: 'user', content: prompt }]), o, live);
      if (!live) process.stdout.write(`${text}\n`);
      return;
    }
    // async iteration buffers lines that arrive while an answer is being generated
    const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
    const history: ChatMessage[] = [];
    if (tty) {
      console.error(`${model.id}: type a message, or /exit (Ctrl-D) to quit; /reset clears the conversation`);
      rl.setPrompt('> ');
      rl.prompt();
    }
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/reset') history.length = 0;
      else if (line) {
        history.push({ role: 'user', content: line });
        const live = tty ? new LiveView(process.stdout) : null;
        const text = await answer(model, sched, encode(history), o, live);
        if (!live) process.stdout.write(`${text}\n`);
        history.push({ role: 'assistant', content: text });
      }
      if (tty) rl.prompt();
    }
    rl.close();
  } finally {
    await model.close();
  }
}
