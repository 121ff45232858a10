// Turning step events into text for the wire. Normal streaming sends text as soon as a
// left-to-right stretch of it is final, holding back what could still turn out to be the
// start of a stop string or half of a UTF-8 character. The diffusing stream sends the
// whole current draft (committed tokens plus the model's current guesses) every step.

import type { FastifyReply } from 'fastify';
import type { StepEvent } from '../decode/generation.ts';
import { IncrementalDecoder } from '../formats/incremental.ts';

/** Where streamed text stops: at `marker` (and any start of it at the end), or nothing is streamed. */
export type Hold = { marker: string } | 'all';

/** The end of the text before `marker`, or before a start of it that ends the text. */
export function beforeMarker(text: string, marker: string): number {
  const at = text.indexOf(marker);
  if (at >= 0) return at;
  for (let k = Math.min(marker.length - 1, text.length); k > 0; k--) if (text.endsWith(marker.slice(0, k))) return text.length - k;
  return text.length;
}

export class FinalTextTracker {
  private sent = 0;
  private text: IncrementalDecoder;
  private holdback: number;

  /** `hold`: text that may turn into function calls is not streamed as content (server/tools.ts) */
  constructor(decode: (ids: number[]) => string, stopStrings: string[], private hold?: Hold) {
    this.text = new IncrementalDecoder(decode);
    this.holdback = Math.max(0, ...stopStrings.map((s) => s.length - 1));
  }

  /** New final text since the last call (possibly empty). */
  step(ev: StepEvent): string {
    // the last event's final tokens may run past a stop string's cut: finish() sends the rest
    if (ev.done) return '';
    // (the final prefix only grows; the decoder holds back a character split across tokens)
    if (ev.finalized > this.text.length) this.text.push(ev.draft.subarray(this.text.length, ev.finalized));
    const text = this.text.text;
    let end = text.length - this.holdback;
    if (this.hold === 'all') end = 0;
    else if (this.hold) {
      end = Math.min(end, beforeMarker(text, this.hold.marker));
      // only whitespace so far: it is no content if calls follow
      if (text.slice(0, end).trim() === '') end = 0;
    }
    const safe = Math.max(this.sent, end);
    const out = text.slice(this.sent, safe);
    this.sent = safe;
    return out;
  }

  /** The rest of the final text. */
  finish(fullText: string): string {
    const out = fullText.slice(this.sent);
    this.sent = fullText.length;
    return out;
  }
}

/** The current draft as text: committed tokens and best guesses, up to the first end token. */
export function draftText(ev: StepEvent, stop: Set<number>, decode: (ids: number[]) => string): string {
  const ids: number[] = [];
  for (let i = 0; i < ev.draft.length; i++) {
    const t = ev.draft[i];
    if (t < 0) continue;
    if (stop.has(t)) break;
    ids.push(t);
  }
  return decode(ids);
}

/** Take the reply over for server-sent events (no buffering by proxies). */
export function startEventStream(reply: FastifyReply): void {
  // (headers hooks set on the reply, CORS's among them, go out with the hijacked stream's own)
  const set = Object.fromEntries(Object.entries(reply.getHeaders()).filter((e): e is [string, string | number | string[]] => e[1] !== undefined));
  reply.hijack();
  reply.raw.writeHead(200, { ...set, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
}

/** Abort `abort` when the client goes away before the reply is finished; returns the undo. */
export function abortOnClose(reply: FastifyReply, abort: AbortController): () => void {
  const onClose = () => {
    if (!reply.raw.writableFinished) abort.abort();
  };
  reply.raw.on('close', onClose);
  return () => reply.raw.off('close', onClose);
}
