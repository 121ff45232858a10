// Turning step events into text for the wire. Normal streaming sends text as soon as a
// left-to-right stretch of it is final, holding back what could still turn out to be the
// start of a stop string or half of a UTF-8 character. The diffusing stream sends the
// whole current draft (committed tokens plus the model's current guesses) every step.

import type { StepEvent } from '../decode/generation.ts';
import { IncrementalDecoder } from '../formats/incremental.ts';

export class FinalTextTracker {
  private sent = 0;
  private text: IncrementalDecoder;
  private holdback: number;

  constructor(decode: (ids: number[]) => string, stopStrings: string[]) {
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
    const safe = Math.max(this.sent, text.length - this.holdback);
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
