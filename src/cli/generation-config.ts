// `--generation-config`: where a served model's decoding defaults come from, as vLLM's flag of
// the same name: `auto` (the checkpoint's generation_config.json), `none` (the engine's own
// defaults only), or a path (a generation_config.json, or a directory holding one).

import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, OptionError } from '../errors.ts';
import { generationDefaults, type GenerationDefaults } from '../formats/generation-config.ts';
import type { Model } from '../models/registry.ts';
import { checkModelDefaults } from '../decode/generation.ts';

const NAMES: Record<string, string> = {
  maxTokens: 'max_tokens', temperature: 'temperature', topP: 'top_p', topK: 'top_k', policy: 'policy', threshold: 'threshold', verifyThreshold: 'verify_threshold', editingThreshold: 'editing_threshold', maxPostSteps: 'max_post_steps',
  gamma: 'gamma', eps: 'eps', algTemp: 'alg_temp', cache: 'cache', canvas: 'canvas', initialCanvas: 'initial_canvas', inOrder: 'in_order', leadToken: 'lead_token', holdEnds: 'hold_ends', separateTwins: 'separate_twins', earlyCommit: 'early_commit',
};

/** The defaults as request fields, for logs and `quench show` ("threshold 0.95, in_order true"). */
export function describeDefaults(d: GenerationDefaults): string {
  return (Object.keys(d) as (keyof GenerationDefaults)[]).map((k) => `${NAMES[k] ?? k} ${JSON.stringify(d[k])}`).join(', ');
}

/** Replace the model's decoding defaults as `spec` says, and check them (a file that cannot decode fails here). */
export async function applyGenerationConfig(model: Model, spec = 'auto'): Promise<void> {
  if (spec === 'none') model.defaults = {};
  else if (spec !== 'auto') {
    let file = spec;
    try {
      if ((await stat(spec)).isDirectory()) file = join(spec, 'generation_config.json');
    } catch {
      throw new OptionError('generation_config', `--generation-config ${JSON.stringify(spec)}: not found (auto, none, or a generation_config.json or the directory holding one)`);
    }
    let json: unknown;
    try {
      json = JSON.parse(await readFile(file, 'utf8'));
    } catch {
      throw new FormatError('generation_config_invalid', `--generation-config: ${JSON.stringify(file)} is not a readable JSON file`);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new FormatError('generation_config_invalid', 'generation_config.json: not a JSON object');
    model.defaults = generationDefaults(json as Record<string, unknown>);
  }
  checkModelDefaults(model);
}
