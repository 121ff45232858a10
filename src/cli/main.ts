// quench serve | run | pull | list | bench | eval

import { Command, InvalidArgumentError, Option } from 'commander';
import { listModels, loraModulesOf, resolveModelEntry } from './paths.ts';

const program = new Command();
program.name('quench').description('Diffusion language models on ONNX Runtime, served through an OpenAI-compatible API').version('0.1.0');

/** A duration for a timer: a finite number of seconds that setTimeout can hold. */
const seconds = (v: string) => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > 2_147_483) throw new InvalidArgumentError(`not a number of seconds in [0, 2147483]: ${v}`);
  return n;
};

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`not an integer: ${v}`);
  return n;
};

program
  .command('serve')
  .description('serve a model over the OpenAI-compatible HTTP API (default: the bundled model)')
  .option('-m, --model <dir|name>', 'model directory or name (default: quench-tiny)')
  .option('--model-id <id>', 'the model id clients use (default: the directory name)')
  .option('--host <host>', 'address to bind', '127.0.0.1')
  .option('-p, --port <port>', 'port', int, 8000)
  .addOption(new Option('--api-key <key>', 'require this Bearer key on /v1 routes').env('QUENCH_API_KEY'))
  .option('--max-batch <n>', 'sequences batched into one forward', int, 4)
  .option('--max-queue <n>', 'requests waiting beyond the batch before 503', int, 64)
  .option('--prefix-cache-mb <n>', "MiB of prompt prefixes kept for reuse across requests: a prompt starting with another's tokens runs only the rest (causal and block diffusion models; 0: off)", int, 256)
  .option('--prefill-chunk <n>', 'most prompt rows a sequence runs per step, so a long prompt does not stall the others (causal and block diffusion models; 0: whole prompts)', int, 256)
  .option('--threads <n>', 'compute threads (0 = one per core)', int, 0)
  .addOption(new Option('--dtype <dtype>', 'weight format').choices(['auto', 'fp32', 'int8', 'int4']).default('auto'))
  .option('--block-size <n>', "a block diffusion model's block size, instead of its config's (SDAR, Fast-dLLM v2, LLaDA2.0, BD3-LM); an A2D model given one decodes as its bd3lm form", int)
  .option('--tokenizer <dir>', "a directory with tokenizer.json (and its tokenizer_config.json / special_tokens_map.json) for a checkpoint that ships none: MDLM and BD3-LM use GPT-2's")
  .addOption(new Option('--diffusion <alignment>', "load a causal layout's checkpoint (llama, qwen2, qwen3) that its own code trained as a masked diffusion model: bidirectional, logits shifted (Open-dCoder, Dream-style) or unshifted (LLaDA-style)").choices(['shifted', 'unshifted']))
  .option('--lora <dir|name>', "a LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors; a directory, local name or pulled owner/name) merged into the model's weights at load; an adapter given as --model brings the base its adapter_config.json names")
  .option('--lora-modules <name=adapter...>', "LoRA adapters served beside the model, each under its name (requests choose one by their model field), each merged into its own copy of the base model's weights (not of --lora's)")
  .addOption(new Option('--graph-thread <mode>', 'run forwards in a worker thread, off the event loop (auto: for models of 100M parameters and more)').choices(['auto', 'on', 'off']).default('auto'))
  .option('--forward-timeout <seconds>', 'with the graph thread: a forward still running after this long fails its requests and the thread is replaced, so a hung forward cannot stall the server (0: no deadline)', seconds, 600)
  .addOption(new Option('--canvas <mode>', 'default canvas: adaptive (starts small, grows while the model says the answer does not fit) or fixed (max_tokens positions; for models not trained with end padding)').choices(['adaptive', 'fixed']))
  .option('--initial-canvas <n>', 'first size of an adaptive canvas (default 16)', int)
  .option('--cors-origin <origin...>', 'allow these browser origins (CORS is off by default)')
  .option('--response-store <n>', 'Responses API responses kept in memory for previous_response_id and GET /v1/responses/{id}, oldest dropped first (0: store none)', int, 1000)
  .option('--drain-timeout <seconds>', 'on SIGTERM / SIGINT, how long running requests may finish before the process exits anyway (0: at once; a second signal, a second or more later, exits at once)', seconds, 30)
  .option('--log', 'log requests')
  .option('--generation-config <source>', "decoding defaults: auto (the model's generation_config.json), none (the engine's), or a generation_config.json / its directory", 'auto')
  .action(async (o) => {
    const { serve } = await import('./serve.ts');
    const m = resolveModelEntry(o.model, o.lora);
    const modelId = o.modelId ?? m.name;
    const loraModules = loraModulesOf((o.loraModules ?? []) as string[], m.dir, modelId);
    // (the adapters' parent: the base model, which is the model served unless --lora adapts it)
    await serve({ ...o, model: m.dir, lora: m.lora, modelId, loraModules, loraParent: m.base ?? modelId });
  });

program
  .command('run')
  .description('answer a prompt, showing the draft refine step by step (interactive chat without a prompt)')
  .argument('[prompt...]', 'the prompt')
  .option('-m, --model <dir|name>', 'model directory or name (default: quench-tiny)')
  .option('--max-tokens <n>', 'tokens to draft', int)
  .option('--policy <policy>', 'unmasking policy')
  .option('--steps <n>', 'denoising steps', int)
  .option('--block-length <n>', 'block length', int)
  .option('--block-size <n>', "a block diffusion model's block size, instead of its config's (SDAR, Fast-dLLM v2, LLaDA2.0, BD3-LM); an A2D model given one decodes as its bd3lm form", int)
  .option('--tokenizer <dir>', "a directory with tokenizer.json (and its tokenizer_config.json / special_tokens_map.json) for a checkpoint that ships none: MDLM and BD3-LM use GPT-2's")
  .addOption(new Option('--diffusion <alignment>', "load a causal layout's checkpoint (llama, qwen2, qwen3) that its own code trained as a masked diffusion model: bidirectional, logits shifted (Open-dCoder, Dream-style) or unshifted (LLaDA-style)").choices(['shifted', 'unshifted']))
  .option('--lora <dir|name>', "a LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors; a directory, local name or pulled owner/name) merged into the model's weights at load; an adapter given as --model brings the base its adapter_config.json names")
  .option('--threshold <tau>', 'confidence threshold', Number)
  .option('--verify-threshold <tau>', 'policy wino: mask a committed token again when its verification probability falls below this (default 0.9)', Number)
  .option('--editing-threshold <tau>', "token editing (LLaDA2.1's draft-and-edit): also replace a committed token of the block whose best candidate differs, above this probability", Number)
  .option('--max-post-steps <n>', 'token editing: forwards a block may spend editing after its masks are gone (default 16)', int)
  .option('--early-commit <gap>', "Prophet's early commit: the block's masked positions are all committed once their mean top-1 - top-2 logit gap reaches 1.5x / 1x / 0.5x this as the block fills (5: its authors' setting)", Number)
  .option('--in-order', "each step commits a left-to-right run from the first open position (quench-tiny-bd's generation_config.json asks for it)")
  .option('--no-in-order', "commit in any order, whatever the model's generation_config.json asks")
  .option('--lead-token', "block models with shifted logits: a block's first token is committed alone by the block's first forward (Fast-dLLM v2's decoder; its default there)")
  .option('--no-lead-token', 'decode a block\'s first position with the others, by the policy')
  .option('--cfg-scale <s>', 'classifier-free guidance: also score the canvas with the prompt masked, decode from un + (s + 1) * (cond - un) (bidirectional models, no cache)', Number)
  .option('--cache <mode>', 'none | prefix | dual')
  .addOption(new Option('--canvas <mode>', 'adaptive: the canvas starts small and grows while the model says the answer does not fit; fixed: max-tokens positions').choices(['adaptive', 'fixed']))
  .option('--initial-canvas <n>', 'first size of an adaptive canvas', int)
  .option('--temperature <t>', 'sampling temperature', Number)
  .option('--seed <n>', 'seed', int)
  .option('--threads <n>', 'compute threads', int, 0)
  .addOption(new Option('--dtype <dtype>', 'weight format').choices(['auto', 'fp32', 'int8', 'int4']).default('auto'))
  .option('--raw', 'no chat template: complete the text as given')
  .option('--generation-config <source>', "decoding defaults: auto (the model's generation_config.json), none (the engine's), or a generation_config.json / its directory", 'auto')
  .option('--stats', 'print forward passes and speed after the answer')
  .option('--json', 'JSON mode: the answer is one JSON object (constrained decoding, left to right)')
  .option('--json-schema <file>', 'the answer is a document of this JSON schema (the strict structured-output subset)')
  .action(async (words: string[], o) => {
    const { run } = await import('./run.ts');
    const m = resolveModelEntry(o.model, o.lora);
    await run(words.join(' '), { ...o, model: m.dir, lora: m.lora });
  });

program
  .command('pull')
  .description('download a model from the Hugging Face Hub (config, tokenizer, safetensors weights; or one GGUF file) into the Hub cache')
  .argument('<repo>', 'the Hub model id, owner/name (e.g. GSAI-ML/LLaDA-8B-Instruct); owner/name:Q8_0 (or :file.gguf) pulls one GGUF file')
  .option('--revision <rev>', 'branch, tag or commit', 'main')
  .addOption(new Option('--endpoint <url>', 'the Hub address').env('HF_ENDPOINT'))
  .addOption(new Option('--token <token>', 'access token for gated or private models').env('HF_TOKEN'))
  .action(async (repo: string, o) => {
    const { pullCommand } = await import('./pull.ts');
    await pullCommand(repo, o);
  });

program
  .command('list')
  .description('list bundled, local and pulled models')
  .action(() => {
    const ms = listModels();
    if (ms.length === 0) console.log('no models found');
    for (const m of ms) console.log(`${m.name.padEnd(24)} ${m.source.padEnd(8)} ${m.dir}${m.adapter ? '  (LoRA adapter)' : ''}`);
  });

program
  .command('show')
  .description("what a model is, read from its files: architecture, size, context, attention, weights, special tokens, decoding defaults, license")
  .argument('[model]', 'model directory, .gguf file or name (default: quench-tiny)')
  .option('--tokenizer <dir>', "a directory with tokenizer.json, for a checkpoint that ships none (MDLM, BD3-LM)")
  .addOption(new Option('--diffusion <alignment>', "a causal layout's checkpoint trained as a masked diffusion model: logits shifted or unshifted").choices(['shifted', 'unshifted']))
  .option('--lora <dir|name>', 'a LoRA adapter merged into the model at load (an adapter given as the model brings its base)')
  .action(async (model: string | undefined, o: { tokenizer?: string; diffusion?: 'shifted' | 'unshifted'; lora?: string }) => {
    const { describe } = await import('./show.ts');
    const m = resolveModelEntry(model, o.lora);
    console.log(await describe(m.dir, o.tokenizer, o.diffusion, m.lora));
  });

program
  .command('bench')
  .description('benchmarks: forward (ms per forward and GFLOP/s vs a bare MatMul), decode (policies and caches vs an autoregressive baseline)')
  .argument('<what>', 'forward | decode')
  .argument('[options...]', 'benchmark options, e.g. --dtype fp32,int8 --rows 1,128')
  .allowUnknownOption(true)
  .allowExcessArguments(true)
  .action(async (what: string, args: string[]) => {
    if (what === 'forward') await (await import('../../bench/forward.ts')).main(args);
    else if (what === 'decode') await (await import('../../bench/decode.ts')).main(args);
    else throw new Error(`unknown benchmark ${what}: forward | decode`);
  });

program
  .command('eval')
  .description('held-out task accuracy and speed per decoding policy (the speed/quality frontier)')
  .argument('[options...]', 'e.g. --model quench-tiny --ar-model quench-tiny-ar --limit 20 --configs thr90,lc1 --dtype int8')
  .allowUnknownOption(true)
  .allowExcessArguments(true)
  .action(async (args: string[]) => {
    await (await import('../../bench/eval.ts')).main(args);
  });

program.parseAsync(process.argv).catch((e) => {
  console.error(`quench: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
