// A scripted denoiser for decode tests: the score of each position is a function of the
// canvas position (and, where a test needs it, of the request), so a test can place
// end-of-text or any token exactly where it wants.
import type { Denoiser } from '../src/decode/generation.ts';
import type { ModelArgs } from '../src/formats/config.ts';
import type { ForwardRequest, ForwardResult } from '../src/runtime/session.ts';

export const MOCK_MASK = 1;
export const MOCK_EOS = 2;

/** `shifted`: a Dream-style model, whose row at position p scores position p + 1. */
export function scriptedModel(vocab: number, logitsAt: (position: number, req: ForwardRequest) => Float32Array, topK = 4, shifted = false): Denoiser & { calls: number } {
  const args = {
    arch: 'llada', hiddenSize: 8, numLayers: 1, numHeads: 1, numKvHeads: 1, headDim: 8, intermediateSize: 8, vocabSize: vocab,
    ropeTheta: 10000, rmsNormEps: 1e-5, maxPositions: 512, qkvBias: false, tiedEmbeddings: false, attention: 'bidirectional',
    shiftedLogits: shifted, maskTokenId: MOCK_MASK, eosTokenIds: [MOCK_EOS], bosTokenId: null, padTokenId: null,
  } as ModelArgs;
  const m = {
    args,
    special: { mask: MOCK_MASK, stop: [MOCK_EOS], pad: null, bos: null },
    topK,
    calls: 0,
    async forward(reqs: ForwardRequest[]): Promise<ForwardResult[]> {
      m.calls++;
      return reqs.map((r) => {
        const q = r.queries.length;
        const topIds = new Int32Array(q * topK);
        const topLogits = new Float32Array(q * topK);
        const lse = new Float32Array(q);
        const entropy = new Float32Array(q);
        const logits = new Float32Array(q * vocab);
        r.queries.forEach((row, i) => {
          const l = logitsAt(r.positions[row] + (shifted ? 1 : 0), r);
          logits.set(l, i * vocab);
          const order = Array.from(l.keys()).sort((a, b) => l[b] - l[a] || a - b);
          const mx = l[order[0]];
          const z = l.reduce((s, x) => s + Math.exp(x - mx), 0);
          lse[i] = mx + Math.log(z);
          entropy[i] = -l.reduce((s, x) => s + Math.exp(x - lse[i]) * (x - lse[i]), 0);
          for (let k = 0; k < topK; k++) {
            topIds[i * topK + k] = order[k];
            topLogits[i * topK + k] = l[order[k]];
          }
        });
        return { topIds, topLogits, lse, entropy, logits: r.wantLogits ? logits : undefined, takeCache: r.wantPresent ? () => ({ length: 0, capacity: 0, positions: new Int32Array(0), keys: [], values: [], tip: { used: 0 } }) : undefined };
      });
    },
  };
  return m;
}

/** A logits row that strongly prefers `token` (probability ~`p`). */
export function prefer(vocab: number, token: number, strength = 8): Float32Array {
  const l = new Float32Array(vocab);
  l[token] = strength;
  return l;
}
