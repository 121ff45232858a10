// Prometheus metrics (prom-client), one registry per server instance.

import client from 'prom-client';

export function createMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'quench_process_' });
  const m = {
    registry,
    requests: new client.Counter({ name: 'quench_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: [registry] }),
    promptTokens: new client.Counter({ name: 'quench_prompt_tokens_total', help: 'prompt tokens processed', registers: [registry] }),
    cachedPromptTokens: new client.Counter({ name: 'quench_prompt_tokens_cached_total', help: "prompt tokens whose keys and values came from the prefix cache (another request's)", registers: [registry] }),
    generatedTokens: new client.Counter({ name: 'quench_generated_tokens_total', help: 'tokens generated', registers: [registry] }),
    forwards: new client.Counter({ name: 'quench_forward_passes_total', help: 'batched forward passes run', registers: [registry] }),
    discarded: new client.Counter({ name: 'quench_discarded_forwards_total', help: "sequences' forwards discarded because an adaptive canvas was too short (it doubled)", registers: [registry] }),
    cancelled: new client.Counter({ name: 'quench_cancelled_total', help: 'generations cancelled (client gone)', registers: [registry] }),
    queueDepth: new client.Gauge({ name: 'quench_queue_depth', help: 'requests waiting for a batch slot', registers: [registry] }),
    active: new client.Gauge({ name: 'quench_active_sequences', help: 'sequences in the running batch', registers: [registry] }),
    stepSeconds: new client.Histogram({ name: 'quench_step_seconds', help: 'latency of one batched denoising step', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] }),
    batchSize: new client.Histogram({ name: 'quench_batch_size', help: 'sequences per forward pass', buckets: [1, 2, 4, 8, 16, 32, 64], registers: [registry] }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
