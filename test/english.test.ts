// bench/english.ts's readability measures against hand-checked texts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { scoreEnglish, wordnetDictionary } from '../bench/english.ts';

test('English word share (WordNet lemmas, inflections, function words) and repeated word pairs', () => {
  const isWord = wordnetDictionary();
  // inflected forms by rule (dogs, barked, running->run, cities) and by exception list (geese, ran)
  for (const w of ['sea', 'dogs', 'barked', 'running', 'cities', 'geese', 'ran', 'the', 'of', 'thy', 'larger']) assert.ok(isWord(w), w);
  for (const w of ['hars', 'dogar', 'xqzt', 'ay']) assert.ok(!isWord(w), w);
  const good = scoreEnglish('A sea is a large body of salt water partially enclosed by land.', isWord);
  assert.equal(good.words, 13);
  assert.equal(good.known, 1);
  assert.equal(good.repeated, 0);
  // 'hars' and 'dogar' are not words: 2 of 11
  const salad = scoreEnglish('a unit of a harbor or equal of a hars dogar', isWord);
  assert.equal(salad.words, 11);
  assert.equal(salad.known, 9 / 11);
  assert.equal(salad.repeated, 1 / 10); // "of a" twice
  // a loop: "thy God" pairs repeat
  const loop = scoreEnglish('and thy God thy God thy God', isWord);
  assert.equal(loop.repeated, 3 / 6); // pairs: and-thy, thy-god, god-thy, thy-god*, god-thy*, thy-god*
  assert.deepEqual(scoreEnglish('', isWord), { words: 0, known: 0, repeated: 0 });
});
