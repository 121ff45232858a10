import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IncrementalDecoder } from '../src/formats/incremental.ts';
import { TextCodec } from '../src/formats/tokenizer.ts';
import { makeRng } from '../src/decode/rng.ts';

const TEXTS = ['naïve café, 27 + 58 = 85 — ünïcødé ☃ 😀 end', 'In the beginning God created the heaven and the earth.', '日本語のテキスト 🎉🎉 and sorted: 2, 7, 9'];

/** Push `ids` in random chunks; after each push the text is a prefix of the full decode and
 * pushes returned exactly the text added; at the end it is the full decode. */
function check(decode: (ids: number[]) => string, ids: number[], seed: number): IncrementalDecoder {
  const rand = makeRng(seed);
  const rng = () => rand.next();
  const inc = new IncrementalDecoder(decode);
  const full = decode(ids);
  let streamed = '';
  for (let i = 0; i < ids.length; ) {
    const n = 1 + Math.floor(rng() * 4);
    streamed += inc.push(ids.slice(i, i + n));
    i += n;
    assert.ok(full.startsWith(inc.text), `prefix after ${i} tokens: ${JSON.stringify(inc.text)}`);
    assert.equal(streamed, inc.text);
  }
  assert.equal(inc.text, full);
  return inc;
}

test('incremental decoding equals decoding the whole sequence (byte-level BPE, multi-byte characters split across tokens)', async () => {
  const codec = await TextCodec.load('models/quench-tiny');
  const decode = (ids: number[]) => codec.decode(ids, true);
  for (const [k, text] of TEXTS.entries()) {
    const ids = codec.encode(text, false);
    for (let seed = 0; seed < 5; seed++) {
      const inc = check(decode, ids, seed + 10 * k);
      // tokensCovering(c): the fewest tokens whose own decode reaches c characters, never
      // ending inside a character
      for (let c = 0; c <= text.length; c += 3) {
        const n = inc.tokensCovering(c);
        const own = decode(ids.slice(0, n));
        assert.ok(own.length >= c && !own.endsWith('\ufffd'), `c ${c}: ${n} tokens give ${JSON.stringify(own)}`);
        if (n > 0) {
          const less = decode(ids.slice(0, n - 1)).replace(/\ufffd+$/, '');
          assert.ok(less.length < c, `c ${c}: ${n - 1} tokens already reach it`);
        }
      }
    }
  }
  // special tokens are skipped like in the full decode
  const ids = [...codec.encode('ab', false), 0, ...codec.encode(' cd', false)];
  check(decode, ids, 1);
});

test('incremental decoding: a decoder that strips the leading space, and one that rewrites across tokens', () => {
  const pieces = [' the', ' cat', ' .', ' sat', 'on', ' a', ' mat', ' !', ' ,'];
  const join = (ids: number[]) => ids.map((i) => pieces[i]).join('');
  // SentencePiece-like: the first piece's space is dropped
  const sp = (ids: number[]) => join(ids).replace(/^ /, '');
  // clean_up_tokenization_spaces-like: " ." -> "." (the rewrite spans two tokens when the
  // space ends one piece and the mark starts the next)
  const spaced = [' the', ' cat ', '.', ' sat ', '!', ' on', ' a', ' mat'];
  const cleanup = (ids: number[]) => ids.map((i) => spaced[i]).join('').replace(/ ([.!,])/g, '$1');
  const rand = makeRng(7);
  const rng = () => rand.next();
  for (let trial = 0; trial < 50; trial++) {
    const a = Array.from({ length: 1 + Math.floor(rng() * 12) }, () => Math.floor(rng() * pieces.length));
    check(sp, a, trial);
    const b = Array.from({ length: 1 + Math.floor(rng() * 12) }, () => Math.floor(rng() * spaced.length));
    const inc = new IncrementalDecoder(cleanup);
    for (let i = 0; i < b.length; i++) inc.push([b[i]]);
    assert.equal(inc.text, cleanup(b), JSON.stringify(b));
  }
  // a token that decodes to nothing (a skipped special token) must not become the window's
  // first token: the next one would lose its leading space
  const withSpecial = [...pieces, ''];
  const sp2 = (ids: number[]) => ids.map((i) => withSpecial[i]).join('').replace(/^ /, '');
  const special = withSpecial.length - 1;
  for (let trial = 0; trial < 50; trial++) {
    const a = Array.from({ length: 1 + Math.floor(rng() * 12) }, () => (rng() < 0.3 ? special : Math.floor(rng() * pieces.length)));
    check(sp2, a, 100 + trial);
  }
  const inc = new IncrementalDecoder(sp2);
  for (const t of [0, 1, special, 3]) inc.push([t]);
  assert.equal(inc.text, 'the cat sat');
});

test('incremental decoding: text before an incomplete tail is not held back with it', async () => {
  const codec = await TextCodec.load('models/quench-tiny');
  const decode = (ids: number[]) => codec.decode(ids, true);
  const emoji = codec.encode('😀', false);
  assert.ok(emoji.length > 1, 'the emoji spans several tokens');
  const inc = new IncrementalDecoder(decode);
  assert.equal(inc.push([...codec.encode('ab(;', false), emoji[0]]), 'ab(;');
  assert.equal(inc.push(emoji.slice(1)), '😀');
  assert.equal(inc.text, 'ab(;😀');
});

test('incremental decoding: tokens without text cost no growing decode windows (linear work)', () => {
  const pieces = [' a', ' b', ''];
  let slots = 0;
  const decode = (ids: number[]) => ((slots += ids.length), ids.map((i) => pieces[i]).join('').replace(/^ /, ''));
  const inc = new IncrementalDecoder(decode);
  const n = 2000;
  inc.push([0]);
  for (let i = 0; i < n; i++) inc.push([2]);
  inc.push([1]);
  assert.equal(inc.text, 'a b');
  assert.ok(slots < 10 * n, `${slots} token slots decoded for ${n + 2} tokens`);
});
