// tokenizer.json (through @huggingface/tokenizers), the chat template of
// tokenizer_config.json (through @huggingface/jinja), and the special tokens a diffusion
// model needs: mask, end-of-text / end-of-turn, pad, bos.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { FormatError } from '../errors.ts';
import type { ModelArgs } from './config.ts';
import { generationDefaults, type GenerationDefaults } from './generation-config.ts';

export interface ChatMessage {
  role: string;
  content: string;
  /** an assistant turn's function calls, arguments as parsed JSON (the chat-template convention) */
  tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: unknown } }[];
  /** a tool turn: the call it answers */
  tool_call_id?: string;
  name?: string;
}

/** A function offered to the model, as chat templates expect it (OpenAI's tool shape). */
export interface ChatTool {
  type: 'function';
  function: { name: string; description?: string; parameters: unknown };
}

export interface SpecialTokens {
  mask: number | null;
  /** tokens that end a generation: end-of-text and end-of-turn */
  stop: number[];
  pad: number | null;
  bos: number | null;
}

const END_OF_TURN = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>'];
const MASK_NAMES = ['<|mdm_mask|>', '<|mask|>', '[MASK]', '<mask>', '<M>'];
/** Rendering a template must not grow without bound; real chat templates emit a few KB. */
const MAX_RENDERED_CHARS = 4 * 1024 * 1024;
/** Nor run without bound: a template is code from the model's repository, run on the event loop
 * for every chat request. The ChatML and LLaDA templates take ~15 steps per message, templates
 * with reasoning and tool branches several times that; the budget is a base plus a share per
 * message and per tool, ~30x the simple templates' need, and a runaway loop (iterations cost
 * ~7 us each here) ends within ~0.7 s for a short conversation. range() is capped as Python's
 * sandboxed jinja caps it, since it allocates its list before any step. */
export const TEMPLATE_STEPS = { base: 100_000, perItem: 500 };
const MAX_RANGE = 100_000;

// (the package's type declarations import their own modules without extensions, which this
// project's module resolution does not follow: the interpreter's shape, as used here)
interface InterpreterShape {
  run(program: unknown): { value: unknown };
  evaluate(statement: unknown, environment: unknown): unknown;
  evaluateBlock(statements: unknown, environment: unknown): unknown;
}
const InterpreterBase = Interpreter as unknown as new (env: unknown) => InterpreterShape;

/** Every node goes through evaluate(), every loop iteration and block through evaluateBlock()
 * (an empty loop body evaluates no node): both counted, per render. */
class BudgetedInterpreter extends InterpreterBase {
  private steps = 0;
  constructor(
    env: unknown,
    private readonly budget: number,
  ) {
    super(env);
  }
  private tick(): void {
    if (++this.steps > this.budget) throw new Error(`the template ran past ${this.budget} evaluation steps`);
  }
  override evaluate(statement: unknown, environment: unknown): unknown {
    this.tick();
    return super.evaluate(statement, environment);
  }
  override evaluateBlock(statements: unknown, environment: unknown): unknown {
    this.tick();
    return super.evaluateBlock(statements, environment);
  }
}

/** strftime_now's directives, as transformers' templates use them (Llama 3.1's "%d %b %Y"). */
function strftime(d: Date, format: string): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const month = (style: 'short' | 'long') => new Intl.DateTimeFormat('en-US', { month: style }).format(d);
  return format.replace(/%[YmdbBHM%]/g, (t) => ({ '%Y': String(d.getFullYear()), '%m': pad(d.getMonth() + 1), '%d': pad(d.getDate()), '%b': month('short'), '%B': month('long'), '%H': pad(d.getHours()), '%M': pad(d.getMinutes()), '%%': '%' })[t]!);
}

/** The globals a template sees (the library's own, with a bounded range). */
const TEMPLATE_GLOBALS: Record<string, unknown> = {
  false: false,
  true: true,
  none: null,
  False: false,
  True: true,
  None: null,
  raise_exception: (message: string) => {
    throw new Error(message);
  },
  range: boundedRange,
  strftime_now: (format: string) => strftime(new Date(), String(format)),
};

/** range() as the template sees it: Python's semantics, at most MAX_RANGE items. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (![start, stop, step].every(Number.isFinite)) throw new Error('range() takes finite numbers');
  if (step === 0) throw new Error('range() step must not be zero');
  const n = Math.max(0, Math.ceil((stop - start) / step));
  if (n > MAX_RANGE) throw new Error(`range() of ${n} items: a chat template may take at most ${MAX_RANGE}`);
  return Array.from({ length: n }, (_, i) => start + i * step);
}

async function readJson(path: string, what: string, optional: boolean): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    if (optional) return null;
    throw new FormatError('tokenizer_missing', `${what} not found in the model directory${what === 'tokenizer.json' ? ' (a checkpoint that ships none, as MDLM and BD3-LM do, takes a tokenizer directory: --tokenizer DIR)' : ''}`);
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error();
    return v;
  } catch {
    throw new FormatError('tokenizer_invalid', `${what} is not a JSON object`);
  }
}

function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/** GPT-2's reversible byte -> printable character map used by ByteLevel BPE. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let i = 33; i <= 126; i++) bs.push(i);
  for (let i = 161; i <= 172; i++) bs.push(i);
  for (let i = 174; i <= 255; i++) bs.push(i);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const map: string[] = new Array(256);
  bs.forEach((b, i) => (map[b] = String.fromCodePoint(cs[i])));
  return map;
}

/** The same map inverted: which byte each piece character stands for. */
const BYTE_OF_CHAR = new Map(bytesToUnicode().map((ch, b) => [ch, b]));

export class TextCodec {
  readonly tokenizer: Tokenizer;
  readonly special: SpecialTokens;
  readonly vocabSize: number;
  /** raw (non-chat) prompts start with bos */
  readonly addBos: boolean;
  /** generation_config.json: the checkpoint's preferred decoding (max_new_tokens, sampling, quench's fields) */
  readonly generation: GenerationDefaults;
  private template: Template | null;
  private bosText: string;
  private eosText: string;
  private cleanUpSpaces: boolean;
  /** id -> vocabulary piece, and whether pieces are GPT-2 byte-level strings */
  private pieces: Map<number, string>;
  private byteLevel: boolean;
  /** added (special) tokens: their content is plain text, not byte-level pieces */
  private added: Map<number, string>;
  private vocabTables = new Map<number, (Uint8Array | null)[]>();
  private toolProbe: { tools: boolean; toolCalls: boolean } | null = null;

  constructor(tokenizerJson: Record<string, unknown>, config: Record<string, unknown>, args?: ModelArgs, generationConfig?: Record<string, unknown> | null) {
    try {
      this.tokenizer = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new FormatError('tokenizer_invalid', `tokenizer.json could not be loaded: ${(e as Error).message}`);
    }
    const vocab = this.tokenizer.get_vocab(true);
    this.vocabSize = Math.max(...vocab.values()) + 1;
    this.pieces = new Map([...vocab].map(([piece, i]) => [i, piece]));
    this.byteLevel = JSON.stringify(tokenizerJson.decoder ?? null).includes('"ByteLevel"');
    const added = (tokenizerJson.added_tokens ?? []) as { id: number; content: string }[];
    this.added = new Map(added.map((t) => [t.id, t.content]));
    const id = (s: string | null): number | null => (s === null ? null : (vocab.get(s) ?? null));
    // (GPT-2's tokenizer files may name no special tokens: its tokenizer class's defaults are
    // <|endoftext|> for both, which MDLM and BD3-LM wrap their training sequences in)
    const gpt2Default = args?.dit !== undefined && vocab.has('<|endoftext|>') ? '<|endoftext|>' : null;
    if (config.bos_token === undefined && gpt2Default) config = { ...config, bos_token: gpt2Default };
    if (config.eos_token === undefined && gpt2Default) config = { ...config, eos_token: gpt2Default };
    this.bosText = tokenString(config.bos_token) ?? '';
    this.generation = generationDefaults(generationConfig ?? null);
    // (LLaDA's and the DiT models' training sequences start with BOS)
    this.addBos = config.add_bos_token === true || (config.add_bos_token === undefined && (args?.arch === 'llada' || args?.dit !== undefined));
    this.eosText = tokenString(config.eos_token) ?? '';
    // transformers defaults clean_up_tokenization_spaces to false; the JS tokenizer defaults it to
    // true, which would rewrite generated text (" ?" -> "?", " 's" -> "'s").
    this.cleanUpSpaces = config.clean_up_tokenization_spaces === true;

    const stop = new Set<number>(args?.eosTokenIds ?? []);
    const genEos = generationConfig?.eos_token_id;
    for (const x of Array.isArray(genEos) ? genEos : genEos === undefined ? [] : [genEos]) if (typeof x === 'number') stop.add(x);
    const eos = id(this.eosText || null);
    if (eos !== null) stop.add(eos);
    for (const name of END_OF_TURN) {
      const t = vocab.get(name);
      if (t !== undefined) stop.add(t);
    }
    // an added token by the usual mask names (not a BPE piece that happens to spell "<M>": ordinary text)
    const addedMask = (): number | null => {
      for (const name of MASK_NAMES) for (const [tid, content] of this.added) if (content === name) return tid;
      return null;
    };
    // (MDLM's rule: the tokenizer's own mask token if it has one, else an id appended after it;
    // the config can only assume the latter, so a tokenizer with its own must be named there)
    if (args?.dit) {
      const own = id(tokenString(config.mask_token)) ?? addedMask();
      if (own !== null && own !== args.maskTokenId)
        throw new FormatError('config_mismatch', `the tokenizer has its own mask token (id ${own}), which this ${args.arch} model uses; config.json names ${args.maskTokenId} (the id after the vocabulary): set "mask_token_id": ${own} in config.json`);
    }
    let mask = args?.maskTokenId ?? id(tokenString(config.mask_token));
    // (a diffusion sampler's generation_config.json may name it: Open-dLLM's MDMGenerationConfig)
    const genMask = generationConfig?.mask_token_id;
    if (mask === null && args?.attention !== 'causal' && typeof genMask === 'number' && Number.isInteger(genMask) && genMask >= 0) mask = genMask;
    // (a diffusion model whose config and tokenizer_config name no mask: the usual mask tokens by name)
    if (mask === null && args?.attention !== 'causal') mask = addedMask();
    if (args && args.maskTokenId === null && args.attention === 'causal') mask = null;
    if (args && args.attention !== 'causal' && mask === null)
      throw new FormatError('config_invalid', `this ${args.arch} diffusion model names no mask token (config.json mask_token_id, tokenizer_config.json mask_token, generation_config.json mask_token_id, or an added ${MASK_NAMES.join(' / ')})`);
    if (args && mask !== null && mask >= args.vocabSize) throw new FormatError('config_mismatch', `the tokenizer's mask token (id ${mask}) is outside the model's vocabulary of ${args.vocabSize}`);
    if (mask !== null) stop.delete(mask);
    this.special = {
      mask,
      stop: [...stop].sort((a, b) => a - b),
      pad: args?.padTokenId ?? id(tokenString(config.pad_token)),
      bos: args?.bosTokenId ?? id(this.bosText || null),
    };

    const tpl = config.chat_template;
    let source: string | null = null;
    if (typeof tpl === 'string') source = tpl;
    else if (Array.isArray(tpl)) source = tpl.find((t) => t && t.name === 'default')?.template ?? null;
    try {
      this.template = source === null ? null : new Template(source);
    } catch (e) {
      throw new FormatError('chat_template_invalid', `chat template does not parse: ${(e as Error).message}`);
    }
  }

  /** `generation` false: the generation_config.json is not read (its end tokens nor its defaults). */
  /** `tokenizerDir`: where tokenizer.json and its config are, when not beside the weights (MDLM
   * and BD3-LM checkpoints ship none: they use GPT-2's). */
  static async load(dir: string, args?: ModelArgs, generation = true, tokenizerDir = dir): Promise<TextCodec> {
    const tj = (await readJson(join(tokenizerDir, 'tokenizer.json'), 'tokenizer.json', false))!;
    const tc = (await readJson(join(tokenizerDir, 'tokenizer_config.json'), 'tokenizer_config.json', true)) ?? {};
    // (special_tokens_map.json names the special tokens a tokenizer_config.json may leave out, GPT-2's)
    const map = (await readJson(join(tokenizerDir, 'special_tokens_map.json'), 'special_tokens_map.json', true)) ?? {};
    for (const k of ['bos_token', 'eos_token', 'pad_token', 'mask_token', 'unk_token']) if (tc[k] === undefined && map[k] !== undefined) tc[k] = map[k];
    // (transformers saves the template as chat_template.jinja since 4.50, and reads that file
    // before tokenizer_config.json's chat_template)
    const jinja = await readFile(join(tokenizerDir, 'chat_template.jinja'), 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw new FormatError('chat_template_invalid', `chat_template.jinja cannot be read (${e.code ?? e.message})`);
    });
    if (jinja !== null) tc.chat_template = jinja;
    const gc = generation ? await readJson(join(dir, 'generation_config.json'), 'generation_config.json', true) : null;
    return new TextCodec(tj, tc, args, gc);
  }

  encode(text: string, addSpecialTokens = false): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Token ids of a plain-text prompt: the text, after the BOS token where the model wants one. */
  encodePrompt(text: string): number[] {
    const ids = this.encode(text, false);
    return this.addBos && this.special.bos !== null ? [this.special.bos, ...ids] : ids;
  }

  /** A token as the vocabulary spells it (a byte-level BPE piece such as `Ġthe`; an added token's text), or null for an id with none. */
  tokenPiece(id: number): string | null {
    return this.pieces.get(id) ?? null;
  }

  /**
   * The raw bytes a token stands for (OpenAI's logprobs `bytes`): an added token is the UTF-8
   * of its text, a byte-level BPE piece maps back through the GPT-2 byte table, a SentencePiece
   * byte-fallback piece `<0xNN>` is that byte and `▁` a space; anything else is its UTF-8. A token that is part of a multi-byte
   * character decodes alone to U+FFFD, while its bytes are exact.
   */
  tokenBytes(id: number): number[] {
    const text = this.added.get(id);
    if (text !== undefined) return [...Buffer.from(text, 'utf8')];
    const piece = this.pieces.get(id) ?? '';
    if (this.byteLevel) return Array.from(piece, (ch) => BYTE_OF_CHAR.get(ch) ?? 0x3f);
    const hex = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (hex) return [parseInt(hex[1], 16)];
    return [...Buffer.from(piece.replace(/\u2581/g, ' '), 'utf8')];
  }

  /** Each id's bytes for constrained decoding: null for added tokens, the special ones (mask,
   * pad, bos, end tokens, wherever the tokenizer keeps them), byte-level pieces that are not
   * made of byte characters, and ids the tokenizer does not know (a model's vocabulary may
   * be padded past it). */
  vocabBytes(size: number): (Uint8Array | null)[] {
    // built once per size: constraints index the table by identity (their first-byte index)
    let out = this.vocabTables.get(size);
    if (out) return out;
    out = new Array<Uint8Array | null>(size).fill(null);
    this.vocabTables.set(size, out);
    const sp = this.special;
    const special = new Set([sp.mask, sp.pad, sp.bos, ...sp.stop].filter((x): x is number => x !== null));
    for (const [id, piece] of this.pieces) {
      if (id >= size || this.added.has(id) || special.has(id)) continue;
      if (this.byteLevel && Array.from(piece).some((ch) => !BYTE_OF_CHAR.has(ch))) continue;
      out[id] = Uint8Array.from(this.tokenBytes(id));
    }
    return out;
  }

  decode(ids: ArrayLike<number>, skipSpecialTokens = true): string {
    const list = Array.from(ids);
    if (list.length === 0) return ''; // the JS tokenizer throws on an empty list
    return this.tokenizer.decode(list, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /** Render messages through the model's own template (untrusted code: sandboxed by jinja). */
  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true, tools?: ChatTool[]): string {
    if (!this.template) {
      // No template: plain role-prefixed transcript.
      return messages.map((m) => `${m.role}: ${m.content}\n`).join('') + (addGenerationPrompt ? 'assistant: ' : '');
    }
    let out: string;
    try {
      const env = new Environment();
      for (const [k, v] of Object.entries({ ...TEMPLATE_GLOBALS, messages, add_generation_prompt: addGenerationPrompt, bos_token: this.bosText, eos_token: this.eosText, ...(tools ? { tools } : {}) })) env.set(k, v);
      const budget = TEMPLATE_STEPS.base + TEMPLATE_STEPS.perItem * (messages.length + (tools?.length ?? 0));
      out = new BudgetedInterpreter(env, budget).run(this.template.parsed).value as string;
    } catch (e) {
      throw new FormatError('chat_template_error', `chat template failed to render: ${(e as Error).message}`);
    }
    if (typeof out !== 'string' || out.length > MAX_RENDERED_CHARS) throw new FormatError('chat_template_error', 'chat template output is too large');
    return out;
  }

  /** Token ids of a chat prompt; special tokens written by the template are parsed as such. */
  encodeChat(messages: ChatMessage[], tools?: ChatTool[]): number[] {
    return this.encode(this.applyChatTemplate(messages, true, tools), false);
  }

  /**
   * What the chat template does with function calling, found by rendering probes once:
   * `tools` — it writes the offered functions; `toolCalls` — it writes an assistant turn's calls
   * and tool turns. Where it does not, the caller writes them as text (server/tools.ts).
   */
  get toolSupport(): { tools: boolean; toolCalls: boolean } {
    if (this.toolProbe) return this.toolProbe;
    const name = 'quench_probe_function_7f3a';
    const user = { role: 'user', content: 'hi' };
    const tryRender = (messages: ChatMessage[], tools?: ChatTool[]) => {
      try {
        return this.template ? this.applyChatTemplate(messages, true, tools) : '';
      } catch {
        return '';
      }
    };
    const tools = tryRender([user], [{ type: 'function', function: { name, description: 'probe', parameters: { type: 'object', properties: {} } } }]).includes(name);
    const call: ChatMessage = { role: 'assistant', content: '', tool_calls: [{ id: 'call_probe', type: 'function', function: { name, arguments: {} } }] };
    const toolCalls = tryRender([user, call, { role: 'tool', content: 'probe result', tool_call_id: 'call_probe' }]).includes(name);
    this.toolProbe = { tools, toolCalls };
    return this.toolProbe;
  }
}
