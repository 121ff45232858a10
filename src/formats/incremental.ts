// The text of a growing token sequence without re-decoding the whole sequence per token.
// Each push decodes a small window: the tokens pushed last time plus the new ones, and
// keeps what the new ones add (the window's first tokens carry the context a tokenizer
// needs, e.g. SentencePiece's leading space). Tokens whose text ends inside a UTF-8
// character (or in bytes that are no character) wait for the next push. Where a decoder
// rewrites text across the window boundary (clean_up_tokenization_spaces removing the
// space before a punctuation mark) the whole sequence is decoded once instead, so `text`
// stays equal to decode(all tokens) up to its incomplete tail.

export class IncrementalDecoder {
  /** text of the tokens pushed so far (up to any incomplete trailing character) */
  text = '';
  private ids: number[] = [];
  /** the pushed tokens that have text: tokens that decode to nothing (skipped special tokens)
   * never start a window, where a decoder would take the next token for the first and strip
   * its leading space */
  private textIds: number[] = [];
  private silent = new Map<number, boolean>();
  /** first token of the decode window, and the tokens whose text is in `text` (in textIds) */
  private prefix = 0;
  private read = 0;
  /** where the last push changed `text`: its old length, or earlier after a rewrite */
  changedAt = 0;
  private decode: (ids: number[]) => string;

  constructor(decode: (ids: number[]) => string) {
    this.decode = decode;
  }

  /** tokens pushed */
  get length(): number {
    return this.ids.length;
  }

  /** A token with no text in any context (twice in a row: a lone "▁" decodes to '' only
   * because a decoder strips the first space). */
  private isSilent(id: number): boolean {
    let s = this.silent.get(id);
    if (s === undefined) this.silent.set(id, (s = this.decode([id, id]) === ''));
    return s;
  }

  /** Append tokens; returns the text they completed (possibly empty). */
  push(ids: ArrayLike<number>): string {
    for (let i = 0; i < ids.length; i++) {
      this.ids.push(ids[i]);
      if (!this.isSilent(ids[i])) this.textIds.push(ids[i]);
    }
    this.changedAt = this.text.length;
    const t = this.textIds;
    const before = this.decode(t.slice(this.prefix, this.read));
    // the tokens whose text is complete: trailing ones that end in U+FFFD (half a character,
    // or bytes that never form one) wait for the next push
    let end = t.length;
    let after = this.decode(t.slice(this.prefix, end));
    while (end > this.read && after.endsWith('\ufffd')) after = this.decode(t.slice(this.prefix, --end));
    if (end === this.read) return '';
    let added: string;
    if (after.startsWith(before)) added = after.slice(before.length);
    else {
      const all = this.decode(t.slice(0, end));
      // (text already handed out cannot be taken back: if the rewrite reached into it, the
      // record restarts from the full decode)
      if (all.startsWith(this.text)) added = all.slice(this.text.length);
      else {
        let common = 0;
        while (common < all.length && all[common] === this.text[common]) common++;
        this.changedAt = common;
        this.text = all;
        added = '';
      }
    }
    this.text += added;
    this.prefix = this.read;
    this.read = end;
    return added;
  }

  /** The fewest leading tokens whose decoded text reaches `chars` characters (binary search
   * over full decodes: O(n log n), for the one cut a stop string makes). */
  tokensCovering(chars: number): number {
    const reach = (k: number) => this.decode(this.ids.slice(0, k)).replace(/\ufffd+$/, '').length >= chars;
    let lo = 0;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (reach(mid)) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}
