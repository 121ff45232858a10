// Public API.
export { loadModel, convertModel, type Model, type LoadOptions, type DTypeOption } from './models/registry.ts';
export { generate, Generation, type GenerateResult, type StepEvent, type Denoiser } from './decode/generation.ts';
export type { GenerateOptions, CacheMode } from './decode/options.ts';
export { POLICIES, type Policy } from './decode/policies.ts';
export type { ForwardRequest, ForwardResult } from './runtime/session.ts';
export type { KVCache } from './runtime/kv.ts';
export { Scheduler } from './engine/scheduler.ts';
export { buildServer, attachScheduler } from './server/app.ts';
export { TextCodec } from './formats/tokenizer.ts';
export { parseConfig, type ModelArgs } from './formats/config.ts';
export { Checkpoint, SafetensorsFile, writeSafetensors } from './formats/safetensors.ts';
export { writeFixture } from './formats/fixtures.ts';
export { type Constraint } from './decode/constraint.ts';
export { jsonObjectConstraint } from './decode/json-grammar.ts';
export { jsonSchemaConstraint, compileSchema } from './decode/json-schema.ts';
export { pull, cachedSnapshot, cachedModels, type PullOptions, type PullResult } from './models/hub.ts';
export { QuenchError, OptionError, FormatError, CancelledError, ConstraintError, HubError } from './errors.ts';
