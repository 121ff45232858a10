// vLLM's tokenizer routes: POST /tokenize (a prompt, or chat messages through the model's
// template, as a request would be encoded) and POST /detokenize (ids back to text), so that a
// client counts tokens or prepares token-id prompts with the server's own tokenizer.

import type { FastifyInstance } from 'fastify';
import { OptionError } from '../errors.ts';
import type { Body } from './fields.ts';
import { detokenizeBody, tokenizeBody } from './schemas.ts';
import { chatMessages, encodeToolChat, toolRequest } from './tools.ts';
import type { Served } from './app.ts';

export function registerTokenize(app: FastifyInstance, ready: (name: unknown) => Served): void {
  app.post('/tokenize', { schema: { body: tokenizeBody } }, async (req) => {
    const b = req.body as Body;
    const { model } = ready(b.model);
    const hasPrompt = typeof b.prompt === 'string';
    if (hasPrompt === Array.isArray(b.messages)) throw new OptionError(hasPrompt ? 'messages' : 'prompt', 'give a prompt or messages, one of the two');
    let tokens: number[];
    if (hasPrompt) tokens = b.add_special_tokens === false ? model.codec.encode(b.prompt as string, false) : model.codec.encodePrompt(b.prompt as string);
    else {
      // (as a chat request is encoded: the template and its generation prompt, the tools it offers)
      if (b.add_generation_prompt === false) throw new OptionError('add_generation_prompt', 'add_generation_prompt false is not supported: chat prompts end with the assistant turn the template opens');
      tokens = encodeToolChat(model.codec, chatMessages(b.messages as { role: string }[]), toolRequest(b));
    }
    return {
      count: tokens.length,
      max_model_len: model.args.maxPositions,
      tokens,
      // (as vLLM returns them: the vocabulary's pieces, whole bytes of a character split across tokens included)
      ...(b.return_token_strs === true ? { token_strs: tokens.map((t) => model.codec.tokenPiece(t) ?? '') } : {}),
    };
  });

  app.post('/detokenize', { schema: { body: detokenizeBody } }, async (req) => {
    const b = req.body as Body;
    const { model } = ready(b.model);
    const ids = b.tokens as number[];
    // (ids past the tokenizer's, an embedding's padding rows, have no text)
    const V = Math.min(model.args.vocabSize, model.codec.vocabSize);
    const bad = ids.findIndex((t) => t >= V);
    if (bad >= 0) throw new OptionError(`tokens[${bad}]`, `token ${ids[bad]} is outside the tokenizer's vocabulary [0, ${V})`, 'invalid_token');
    return { prompt: model.codec.decode(ids, false) };
  });
}
