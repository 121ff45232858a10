// Open prompts, the other half of "is the bundled model useful": answers to prompts with no
// exact answer, printed, with three plain measures of readable English: the share of words
// that are English words (WordNet's lemmas, their inflections by WordNet's rules and
// exception lists, and the function words WordNet leaves out), the share of word pairs that
// repeat an earlier pair of the same answer, and the share of answers that end (end of turn)
// within max_tokens. They flag word salad, loops and run-ons; they do not judge meaning.
//
//   npx tsx bench/english.ts [--model quench-tiny] [--ar-model quench-tiny-ar] [--config thr95] [--max-tokens 64]
//                            [--ar-frequency-penalty 0.5]

import { existsSync, readFileSync } from 'node:fs';
import { generate } from '../src/decode/generation.ts';
import { loadModel, type Model } from '../src/models/registry.ts';
import { resolveModel } from '../src/cli/paths.ts';
import { CONFIGS } from './eval.ts';
import { fmt, parseArgs } from './common.ts';
import type { GenerateOptions } from '../src/decode/options.ts';

// phrasings outside the training families' templates, about nouns the `describe` family
// never uses (train/tasks.py BENCH_NOUNS)
export const OPEN_PROMPTS = [
  'Say something about the sea.',
  'What can you tell me about rivers?',
  'Talk about a city.',
  'What do you think of the moon?',
  'Write a sentence about a dog.',
  'Write two sentences about the wind.',
  'Who is a teacher?',
  'How is a bridge built?',
  'Why do people eat bread?',
  'Why do people like music?',
  'What grows in a garden?',
  'What does a king do?',
  'Why do birds sing?',
  'Tell me a short story.',
  'What happens in winter?',
  'Say something kind.',
];

// closed-class words WordNet does not list (it has nouns, verbs, adjectives and adverbs)
const FUNCTION_WORDS = `a an the and or but nor so yet for if then than that this these those there here
  i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
  who whom whose which what whatever whoever where when why how all any both each either neither
  every few many much more most other others another such some no none not one ones own same
  of to in on at by from with without within into onto upon about above below under over after before
  between among through during against across along around behind beside besides beyond near off out
  up down since until till unto toward towards via per as like unlike is am are was were be been being
  do does did done doing have has had having shall should will would may might must can could
  ought 's thee thou thy thine ye hath doth shalt wilt art unto saith`.split(/\s+/);

export type Dictionary = (word: string) => boolean;

/** English words from a WordNet 3.0 directory, with WordNet's morphology (morphy's detachment rules). */
export function wordnetDictionary(dir = '/usr/share/wordnet'): Dictionary {
  if (!existsSync(`${dir}/index.noun`)) throw new Error(`WordNet not found in ${dir} (apt-get install wordnet-base)`);
  const lemmas = new Set(FUNCTION_WORDS);
  for (const pos of ['noun', 'verb', 'adj', 'adv']) {
    for (const line of readFileSync(`${dir}/index.${pos}`, 'latin1').split('\n')) if (line && !line.startsWith(' ')) lemmas.add(line.slice(0, line.indexOf(' ')));
    for (const line of readFileSync(`${dir}/${pos}.exc`, 'latin1').split('\n')) if (line) lemmas.add(line.slice(0, line.indexOf(' ')));
  }
  const rules: [string, string][] = [
    ['s', ''], ['ses', 's'], ['xes', 'x'], ['zes', 'z'], ['ches', 'ch'], ['shes', 'sh'], ['men', 'man'], ['ies', 'y'],
    ['es', 'e'], ['es', ''], ['ed', 'e'], ['ed', ''], ['ing', 'e'], ['ing', ''], ['er', ''], ['est', ''], ['er', 'e'], ['est', 'e'],
    ['eth', ''], ['edst', ''], ["'s", ''], ['ly', ''], ['ily', 'y'],
  ];
  return (w: string) => {
    const x = w.toLowerCase();
    if (lemmas.has(x)) return true;
    return rules.some(([suf, rep]) => x.endsWith(suf) && x.length > suf.length + 1 && lemmas.has(x.slice(0, -suf.length) + rep));
  };
}

export interface EnglishScore {
  words: number;
  /** share of alphabetic words that are English words */
  known: number;
  /** share of adjacent word pairs that repeat an earlier pair of the same text */
  repeated: number;
}

export function scoreEnglish(text: string, isWord: Dictionary): EnglishScore {
  const words = (text.match(/[A-Za-z]+(?:'[a-z]+)?/g) ?? []).map((w) => w.toLowerCase());
  const known = words.filter((w) => isWord(w) || isWord(w.replace(/'[a-z]+$/, ''))).length;
  const seen = new Set<string>();
  let rep = 0;
  for (let i = 1; i < words.length; i++) {
    const pair = `${words[i - 1]} ${words[i]}`;
    if (seen.has(pair)) rep++;
    seen.add(pair);
  }
  return { words: words.length, known: words.length ? known / words.length : 0, repeated: words.length > 1 ? rep / (words.length - 1) : 0 };
}

async function answers(model: Model, o: GenerateOptions): Promise<{ text: string; finished: boolean }[]> {
  const out = [];
  for (const p of OPEN_PROMPTS) {
    // (lead_token: the model's generation_config.json's, as in bench/eval.ts)
    const r = await generate(model, model.codec.encodeChat([{ role: 'user', content: p }]), { leadToken: model.defaults.leadToken, ...o, seed: 0, modelDefaults: false });
    out.push({ text: model.codec.decode(r.tokens, true).trim(), finished: r.finishReason === 'stop' });
  }
  return out;
}

export async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const maxTokens = Number(a['max-tokens'] ?? 64);
  const isWord = wordnetDictionary(a.wordnet);
  const config = a.config ?? 'thr95';
  if (!CONFIGS[config]) throw new Error(`unknown config ${config}: ${Object.keys(CONFIGS).join(', ')}`);
  const runs: { label: string; model: string; o: GenerateOptions }[] = [
    { label: `${a.model ?? 'quench-tiny'}, ${CONFIGS[config].label}`, model: a.model ?? 'quench-tiny', o: { maxTokens, ...CONFIGS[config].o } },
    ...(a['ar-model'] === 'none' ? [] : [{ label: `${a['ar-model'] ?? 'quench-tiny-ar'}, greedy${a['ar-frequency-penalty'] ? `, frequency penalty ${a['ar-frequency-penalty']}` : ''}`, model: a['ar-model'] ?? 'quench-tiny-ar', o: { maxTokens, frequencyPenalty: Number(a['ar-frequency-penalty'] ?? 0) } }]),
  ];
  const rows: string[] = [];
  const texts: string[][] = [];
  for (const r of runs) {
    const model = await loadModel(resolveModel(r.model), { threads: Number(a.threads ?? 2) });
    const got = await answers(model, r.o);
    await model.close();
    texts.push(got.map((g) => g.text));
    const scores = got.map((g) => scoreEnglish(g.text, isWord));
    const words = scores.reduce((s, x) => s + x.words, 0);
    const known = scores.reduce((s, x) => s + x.known * x.words, 0) / Math.max(1, words);
    const pairs = scores.reduce((s, x) => s + Math.max(0, x.words - 1), 0);
    const repeated = scores.reduce((s, x) => s + x.repeated * Math.max(0, x.words - 1), 0) / Math.max(1, pairs);
    const finished = got.filter((g) => g.finished).length / got.length;
    rows.push(`| ${r.label} | ${fmt(known * 100, 1)} | ${fmt(repeated * 100, 1)} | ${fmt(finished * 100, 0)} | ${fmt(words / got.length, 1)} |`);
  }
  console.log(`${OPEN_PROMPTS.length} open prompts, max_tokens ${maxTokens}, temperature 0\n`);
  console.log('| model, decoding | English words % | repeated word pairs % | answers that end % | words per answer |');
  console.log('|---|---:|---:|---:|---:|');
  for (const r of rows) console.log(r);
  console.log();
  OPEN_PROMPTS.forEach((p, i) => {
    console.log(`- ${p}`);
    runs.forEach((r, j) => console.log(`  - ${r.model}: ${JSON.stringify(texts[j][i])}`));
  });
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
