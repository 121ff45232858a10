// The worker thread behind OrtRunner's worker mode (session.ts, GraphWorker): one ORT session
// and the packed cache buffers, one message at a time. Plain JavaScript because a worker thread
// does not inherit the main thread's TypeScript loader.
import { parentPort } from 'node:worker_threads';
import ort from 'onnxruntime-node';

let session = null;
// packed [B, Hkv, cap, Dh] buffers per layer: `pool` is the memory, `keys`/`values` the views in use
let pool = null;
let keys = [];
let values = [];

function layout(layers, size, room) {
  if (pool && pool.keys[0].length >= size) {
    keys = pool.keys.map((k) => k.subarray(0, size).fill(0)); // other sequences' rows: zeroed
    values = pool.values.map((v) => v.subarray(0, size).fill(0));
    return;
  }
  pool = { keys: Array.from({ length: layers }, () => new Float32Array(room)), values: Array.from({ length: layers }, () => new Float32Array(room)) };
  keys = pool.keys.map((k) => k.subarray(0, size));
  values = pool.values.map((v) => v.subarray(0, size));
}

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
  const { layers, dims, rows, index } = msg.past;
  // in order: [-1, size, room, 0] lays the buffers out; [layer, 0 = keys / 1 = values, at,
  // length] writes the next `length` floats of `rows` there
  for (let i = 0, o = 0; i < index.length; i += 4) {
    if (index[i] === -1) {
      layout(layers, index[i + 1], index[i + 2]);
      continue;
    }
    (index[i + 1] === 0 ? keys : values)[index[i]].set(rows.subarray(o, o + index[i + 3]), index[i + 2]);
    o += index[i + 3];
  }
  const feeds = {};
  for (const [k, f] of Object.entries(msg.feeds)) feeds[k] = new ort.Tensor(f.type, f.data, f.dims);
  const P = dims[2];
  for (let l = 0; l < layers; l++) {
    feeds[`past_key_${l}`] = new ort.Tensor('float32', P > 0 ? keys[l] : new Float32Array(0), dims);
    feeds[`past_value_${l}`] = new ort.Tensor('float32', P > 0 ? values[l] : new Float32Array(0), dims);
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
