// The worker thread behind OrtRunner's worker mode (graph-thread.ts): one ORT session and the
// batch's packed cache buffers, one message at a time. Plain JavaScript because a worker
// thread does not inherit the main thread's TypeScript loader.
import { parentPort } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import { PackedStore } from './packed-store.mjs';

let session = null;
// the runner's packed batch slots, each its own buffers (session.ts PACKED_SLOTS, plus a scratch one)
const stores = [];

async function handle(msg) {
  if (msg.op === 'load') {
    session = await ort.InferenceSession.create(msg.modelPath, msg.options);
    return undefined;
  }
  if (msg.op === 'release') {
    await session?.release();
    session = null;
    return undefined;
  }
  const { layers, dims, rows, index, slot, scratch } = msg.past;
  const store = scratch ? new PackedStore(layers) : (stores[slot] ??= new PackedStore(layers));
  store.apply(rows, index);
  const feeds = {};
  for (const [k, f] of Object.entries(msg.feeds)) feeds[k] = new ort.Tensor(f.type, f.data, f.dims);
  const P = dims[2];
  for (let l = 0; l < layers; l++) {
    feeds[`past_key_${l}`] = new ort.Tensor('float32', P > 0 ? store.keys[l] : new Float32Array(0), dims);
    feeds[`past_value_${l}`] = new ort.Tensor('float32', P > 0 ? store.values[l] : new Float32Array(0), dims);
  }
  const out = await session.run(feeds, msg.fetches);
  const outputs = {};
  for (const k of msg.fetches) outputs[k] = { data: out[k].data, dims: out[k].dims };
  return outputs;
}

let queue = Promise.resolve();
parentPort.on('message', (msg) => {
  queue = queue.then(async () => {
    let reply;
    try {
      reply = { id: msg.id, ok: true, outputs: await handle(msg) };
    } catch (e) {
      reply = { id: msg.id, ok: false, message: e instanceof Error ? e.message : String(e) };
    }
    const transfer = reply.outputs ? [...new Set(Object.values(reply.outputs).map((o) => o.data.buffer))] : [];
    try {
      parentPort.postMessage(reply, transfer);
    } catch {
      parentPort.postMessage(reply); // buffers ORT owns cannot move: copy them
    }
  });
});
