// TextCodec: byte-level BPE round trips on the fixture tokenizers, special-token
// resolution per family, chat templates rendered exactly, and hostile templates kept in
// the jinja sandbox.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { FormatError } from '../src/errors.ts';
import { parseConfig } from '../src/formats/config.ts';
import { fixtureTokenizer, writeFixture, type FixtureArch } from '../src/formats/fixtures.ts';
import { bytesToUnicode, TextCodec, type ChatMessage } from '../src/formats/tokenizer.ts';
import { tempDir } from './helpers.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Write a tiny fixture and load its codec the way loadModel does (with ModelArgs). */
async function loadCodec(arch: FixtureArch): Promise<{ codec: TextCodec; specials: Record<string, number> }> {
  const dir = await tempDir(`quench-tok-${arch}-`);
  dirs.push(dir);
  const info = await writeFixture(dir, { arch, hidden: 16, layers: 1, heads: 2, intermediate: 16 });
  const codec = await TextCodec.load(dir, parseConfig(info.config));
  return { codec, specials: info.specials };
}

function plainCodec(arch: FixtureArch, configOverrides: Record<string, unknown> = {}): TextCodec {
  const tk = fixtureTokenizer(arch);
  return new TextCodec(tk.tokenizer, { ...tk.config, ...configOverrides });
}

/** byte-level token id of a single ASCII character in the fixture vocab */
const B2U = bytesToUnicode();
function byteId(codec: TextCodec, ch: string): number {
  const id = codec.tokenizer.token_to_id(B2U[ch.charCodeAt(0)]);
  assert.equal(typeof id, 'number', `byte token for ${JSON.stringify(ch)}`);
  return id!;
}

describe('encode / decode', () => {
  const STRINGS = [
    'hello world',
    'the cat is in the hat and on the mat',
    'Digits: 0123456789 and 2024-05-17',
    'Hi! (x, y); "q" ? a , b . c ! it \'s don\'t -- [ok] {a: 1}',
    'café ☕ naïve 日本語 😀 Ωμέγα',
    'line one\nline two\n\n  indented\ttab\r\nend\n',
    '  leading and trailing spaces  ',
    'a',
  ];

  for (const arch of ['llada', 'qwen2'] as FixtureArch[]) {
    test(`${arch}: decode(encode(s)) === s`, () => {
      const codec = plainCodec(arch);
      for (const s of STRINGS) {
        const ids = codec.encode(s);
        assert.ok(ids.length > 0);
        for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < codec.vocabSize, `id ${id} for ${JSON.stringify(s)}`);
        assert.equal(codec.decode(ids), s, `round trip of ${JSON.stringify(s)}`);
      }
    });
  }

  test('merges apply: common words become single tokens', () => {
    const codec = plainCodec('llada');
    const id = (piece: string) => {
      const v = codec.tokenizer.token_to_id(piece);
      assert.equal(typeof v, 'number', piece);
      return v!;
    };
    assert.deepEqual(codec.encode('the'), [id('the')]);
    assert.deepEqual(codec.encode('sing'), [id('s'), id('ing')]);
    assert.deepEqual(codec.encode(' t'), [id('Ġt')]);
    // merges apply by rank: 't h' outranks 'Ġ t', so ' the' is 'Ġ' + 'the' (as in HF tokenizers)
    assert.deepEqual(codec.encode('the the'), [id('the'), id('Ġ'), id('the')]);
  });

  test('digits are split one per token', () => {
    const s = 'x 31415926 y 2024 and 7';
    const codec = plainCodec('llada');
    const ids = codec.encode(s);
    const pieces = ids.map((id) => codec.decode([id]));
    assert.equal(pieces.join(''), s);
    const digitPieces = pieces.filter((p) => /\d/.test(p));
    assert.equal(digitPieces.length, s.replace(/\D/g, '').length, `pieces ${JSON.stringify(pieces)}`);
    for (const p of digitPieces) assert.match(p, /^\d$/);
    for (const d of '0123456789') assert.deepEqual(codec.encode(d), [byteId(codec, d)]);

    // The split comes from the Digits(individual_digits) pre-tokenizer: give the vocab digit
    // merges and check they still never fire, while without the pre-tokenizer they do.
    const tk = fixtureTokenizer('llada');
    const model = tk.tokenizer.model as { vocab: Record<string, number>; merges: string[] };
    const vocab = { ...model.vocab };
    let next = Math.max(...Object.values(vocab), ...(tk.tokenizer.added_tokens as { id: number }[]).map((a) => a.id)) + 1;
    vocab['12'] = next++;
    vocab['123'] = next++;
    const merged = { ...tk.tokenizer, model: { ...model, vocab, merges: [...model.merges, '1 2', '12 3'] } };
    const withDigits = new TextCodec(merged, tk.config);
    assert.deepEqual(withDigits.encode('123'), ['1', '2', '3'].map((d) => byteId(withDigits, d)));
    const pre = tk.tokenizer.pre_tokenizer as { pretokenizers: { type: string }[] };
    const noDigits = new TextCodec({ ...merged, pre_tokenizer: pre.pretokenizers.find((p) => p.type === 'ByteLevel') }, tk.config);
    assert.deepEqual(noDigits.encode('123'), [vocab['123']]);
  });

  test('special tokens in text are matched whole; decode skips them unless asked', () => {
    const codec = plainCodec('llada');
    const tk = fixtureTokenizer('llada');
    const ids = codec.encode('hi<|eot_id|>there<|mdm_mask|>');
    assert.ok(ids.includes(tk.specials['<|eot_id|>']));
    assert.ok(ids.includes(tk.specials['<|mdm_mask|>']));
    assert.ok(!ids.includes(byteId(codec, '<')), 'no byte pieces of the marker');
    assert.equal(codec.decode(ids), 'hithere');
    assert.equal(codec.decode(ids, false), 'hi<|eot_id|>there<|mdm_mask|>');
  });

  test('decode keeps spaces before punctuation (no tokenization-space clean-up by default)', () => {
    const codec = plainCodec('llada');
    for (const s of ['a , b', 'what ?', 'x . y !', "it 's", "do n't", 'f ( x ) ;']) assert.equal(codec.decode(codec.encode(s)), s);
    // a tokenizer_config that asks for the clean-up gets it
    const cleaning = plainCodec('llada', { clean_up_tokenization_spaces: true });
    assert.equal(cleaning.decode(cleaning.encode('what ?')), 'what?');
  });

  test('decode of no tokens, or only skipped specials, is the empty string', () => {
    const codec = plainCodec('llada');
    assert.equal(codec.decode([]), '');
    assert.equal(codec.decode(new Int32Array(0)), '');
    const tk = fixtureTokenizer('llada');
    assert.equal(codec.decode([tk.specials['<|eot_id|>'], tk.specials['<|endoftext|>']]), '');
  });

  test('decode accepts typed arrays', () => {
    const codec = plainCodec('qwen2');
    const ids = codec.encode('typed arrays');
    assert.equal(codec.decode(Int32Array.from(ids)), 'typed arrays');
    assert.equal(codec.decode(Uint32Array.from(ids)), 'typed arrays');
  });
});

describe('special tokens', () => {
  test('llada: mask <|mdm_mask|>, stop has <|endoftext|> and <|eot_id|>', async () => {
    const { codec, specials } = await loadCodec('llada');
    assert.equal(codec.special.mask, specials['<|mdm_mask|>']);
    assert.ok(codec.special.stop.includes(specials['<|endoftext|>']));
    assert.ok(codec.special.stop.includes(specials['<|eot_id|>']));
    assert.ok(!codec.special.stop.includes(codec.special.mask!), 'mask is never a stop token');
    assert.equal(codec.special.bos, specials['<|startoftext|>']);
    assert.equal(codec.special.pad, specials['<|endoftext|>']);
    assert.deepEqual(codec.special.stop, [...codec.special.stop].sort((a, b) => a - b));
    // without ModelArgs the mask is found from tokenizer_config / names
    assert.equal(plainCodec('llada').special.mask, specials['<|mdm_mask|>']);
  });

  test('dream: mask <|mask|>, stop has <|im_end|>', async () => {
    const { codec, specials } = await loadCodec('dream');
    assert.equal(codec.special.mask, specials['<|mask|>']);
    assert.ok(codec.special.stop.includes(specials['<|im_end|>']));
    assert.ok(codec.special.stop.includes(specials['<|endoftext|>']));
    assert.ok(!codec.special.stop.includes(specials['<|mask|>']));
    assert.ok(!codec.special.stop.includes(specials['<|im_start|>']));
    assert.equal(plainCodec('dream').special.mask, specials['<|mask|>']);
  });

  test('llama and qwen2 (causal): mask is null', async () => {
    const llama = await loadCodec('llama');
    assert.equal(llama.codec.special.mask, null);
    assert.ok(llama.codec.special.stop.includes(llama.specials['<|eot_id|>']));
    assert.equal(llama.codec.special.bos, llama.specials['<|begin_of_text|>']);
    assert.equal(plainCodec('llama').special.mask, null);
    const qwen = await loadCodec('qwen2');
    assert.equal(qwen.codec.special.mask, null);
    assert.ok(qwen.codec.special.stop.includes(qwen.specials['<|im_end|>']));
  });

  test('a causal model stays mask-less even if its vocab has a mask-like token', () => {
    const tk = fixtureTokenizer('dream'); // has <|mask|>
    const args = parseConfig({ model_type: 'qwen2', hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 16, vocab_size: tk.size + 8 });
    const codec = new TextCodec(tk.tokenizer, tk.config, args);
    assert.equal(codec.special.mask, null);
    // without args the same files do resolve a mask
    assert.equal(new TextCodec(tk.tokenizer, tk.config).special.mask, tk.specials['<|mask|>']);
  });

  test('generation_config eos ids join the stop set', () => {
    const tk = fixtureTokenizer('qwen2');
    const codec = new TextCodec(tk.tokenizer, tk.config, undefined, { eos_token_id: [5, 7] });
    assert.ok(codec.special.stop.includes(5) && codec.special.stop.includes(7));
    assert.ok(codec.special.stop.includes(tk.specials['<|im_end|>']));
  });
});

describe('chat templates', () => {
  const LLADA_EXPECTED =
    '<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n';

  test('LLaDA template renders exactly and encodes its markers as special tokens', async () => {
    const { codec, specials } = await loadCodec('llada');
    const msgs = [{ role: 'user', content: 'What is 2+2?' }];
    assert.ok(codec.hasChatTemplate);
    assert.equal(codec.applyChatTemplate(msgs), LLADA_EXPECTED);
    const ids = codec.encodeChat(msgs);
    const want = [
      specials['<|startoftext|>'],
      specials['<|start_header_id|>'],
      ...codec.encode('user'),
      specials['<|end_header_id|>'],
      ...codec.encode('\n\nWhat is 2+2?'),
      specials['<|eot_id|>'],
      specials['<|start_header_id|>'],
      ...codec.encode('assistant'),
      specials['<|end_header_id|>'],
      ...codec.encode('\n\n'),
    ];
    assert.deepEqual(ids, want);
    for (const ch of '<|>') assert.ok(!ids.includes(byteId(codec, ch)), `no byte piece ${ch}`);
    assert.equal(codec.decode(ids, false), LLADA_EXPECTED);
    // content is trimmed by the template; no generation prompt when not asked
    assert.equal(
      codec.applyChatTemplate([{ role: 'user', content: '  hi \n' }], false),
      '<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>',
    );
  });

  const CHATML_EXPECTED = '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n';

  for (const arch of ['qwen2', 'dream'] as FixtureArch[]) {
    test(`ChatML template (${arch}) renders exactly, with the default system prompt`, async () => {
      const { codec, specials } = await loadCodec(arch);
      assert.equal(codec.applyChatTemplate([{ role: 'user', content: 'hi' }]), CHATML_EXPECTED);
      const ids = codec.encodeChat([{ role: 'user', content: 'hi' }]);
      assert.equal(ids.filter((i) => i === specials['<|im_start|>']).length, 3);
      assert.equal(ids.filter((i) => i === specials['<|im_end|>']).length, 2);
      assert.equal(codec.decode(ids, false), CHATML_EXPECTED);
      // an explicit system message replaces the default
      assert.equal(
        codec.applyChatTemplate([
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'hello' },
          { role: 'user', content: 'bye' },
        ]),
        '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n',
      );
    });
  }

  test('message content is data: jinja syntax inside content is not evaluated', () => {
    const codec = plainCodec('qwen2');
    const out = codec.applyChatTemplate([{ role: 'user', content: "{{ 7 * 7 }}{% for x in range(3) %}x{% endfor %}" }]);
    assert.ok(out.includes("{{ 7 * 7 }}{% for x in range(3) %}x{% endfor %}"));
    assert.ok(!out.includes('49'));
  });

  test('chat_template given as a list of named templates uses "default"', () => {
    const codec = plainCodec('qwen2', {
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: '{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}' },
      ],
    });
    assert.equal(codec.applyChatTemplate([{ role: 'user', content: 'q' }]), '[user:q]');
  });

  test('no template: plain role-prefixed transcript', () => {
    const codec = plainCodec('qwen2', { chat_template: undefined });
    assert.equal(codec.hasChatTemplate, false);
    assert.equal(codec.applyChatTemplate([{ role: 'user', content: 'hi' }]), 'user: hi\nassistant: ');
    assert.equal(codec.applyChatTemplate([{ role: 'user', content: 'hi' }], false), 'user: hi\n');
  });

  test("chat_template.jinja (transformers >= 4.50 saves the template there) wins over tokenizer_config.json's", async () => {
    const { writeFile, readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const dir = await tempDir('quench-tok-jinja-');
    dirs.push(dir);
    const info = await writeFixture(dir, { arch: 'qwen2', hidden: 16, layers: 1, heads: 2, intermediate: 16 });
    const args = parseConfig(info.config);
    const before = (await TextCodec.load(dir, args)).applyChatTemplate([{ role: 'user', content: 'hi' }]);
    assert.match(before, /<\|im_start\|>user\nhi<\|im_end\|>/, 'the fixture\'s own template first');
    await writeFile(join(dir, 'chat_template.jinja'), '{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}');
    assert.equal((await TextCodec.load(dir, args)).applyChatTemplate([{ role: 'user', content: 'hi' }]), '[user] hi\n');
    // (and one that does not parse is refused as any template is)
    await writeFile(join(dir, 'chat_template.jinja'), '{% for %}');
    await assert.rejects(TextCodec.load(dir, args), (e: unknown) => e instanceof FormatError && e.code === 'chat_template_invalid');
    // (without the file, tokenizer_config.json's again)
    const { rm: remove } = await import('node:fs/promises');
    await remove(join(dir, 'chat_template.jinja'));
    assert.equal((await TextCodec.load(dir, args)).applyChatTemplate([{ role: 'user', content: 'hi' }]), before);
    assert.ok((await readFile(join(dir, 'tokenizer_config.json'), 'utf8')).includes('chat_template'));
  });

  test('a template that does not parse -> chat_template_invalid at load', () => {
    for (const tpl of ['{% for %}', '{{ unclosed', '{% if x %}no endif']) {
      assert.throws(
        () => plainCodec('qwen2', { chat_template: tpl }),
        (e: unknown) => e instanceof FormatError && e.code === 'chat_template_invalid',
        tpl,
      );
    }
  });

  test('a template that raises -> chat_template_error', () => {
    const codec = plainCodec('qwen2', { chat_template: "{{ raise_exception('only user and assistant roles') }}" });
    assert.throws(
      () => codec.applyChatTemplate([{ role: 'user', content: 'x' }]),
      (e: unknown) => e instanceof FormatError && e.code === 'chat_template_error' && /only user and assistant/.test(e.message),
    );
  });
});

describe('hostile chat templates', () => {
  const tk = fixtureTokenizer('qwen2');
  const MESSAGES: ChatMessage[] = [
    { role: 'system', content: 'sys' },
    { role: 'user', content: 'hello' },
  ];

  /** Render `tpl` with process.exit trapped, so an escape fails the test instead of killing it. */
  function renderTrapped(tpl: string): { out?: string; error?: unknown; exitCalls: unknown[] } {
    const exitCalls: unknown[] = [];
    const realExit = process.exit;
    process.exit = ((code?: number) => {
      exitCalls.push(code);
      throw new Error('process.exit called from a template');
    }) as typeof process.exit;
    try {
      const codec = new TextCodec(tk.tokenizer, { ...tk.config, chat_template: tpl });
      return { out: codec.applyChatTemplate(structuredClone(MESSAGES)), exitCalls };
    } catch (error) {
      return { error, exitCalls };
    } finally {
      process.exit = realExit;
    }
  }

  const HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ x.constructor.constructor('return process')() }}",
    "{{ messages.constructor.constructor('return process')().exit(1) }}",
    '{% for m in messages %}{{ m.__class__ }}{% endfor %}',
    "{{ ''.constructor.constructor('return process')() }}",
    "{{ range.constructor('return process')() }}",
    "{{ messages[0].constructor.constructor('return globalThis')() }}",
    "{{ messages.__proto__ }}{{ messages[0]['__proto__'] }}{{ messages[0]['constructor'] }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{% set p = messages|map(attribute='constructor')|list %}{{ p }}",
  ];

  for (const tpl of HOSTILE) {
    test(`sandboxed: ${tpl}`, () => {
      const pid = process.pid;
      const r = renderTrapped(tpl);
      assert.deepEqual(r.exitCalls, [], 'template reached process.exit');
      if (r.error !== undefined) {
        assert.ok(r.error instanceof FormatError, `threw a non-FormatError: ${String(r.error)}`);
        assert.ok(['chat_template_error', 'chat_template_invalid'].includes(r.error.code), r.error.code);
      } else {
        assert.equal(typeof r.out, 'string');
        for (const sign of ['process', '[object', 'function', 'class', 'globalThis', 'uid=']) assert.ok(!r.out!.includes(sign), `output ${JSON.stringify(r.out)} contains ${sign}`);
      }
      assert.equal(process.pid, pid);
    });
  }

  test('run time is bounded: runaway loops stop at the step budget, range() at 100,000 items; the longest conversation the server takes renders', () => {
    const run = (tpl: string, msgs: ChatMessage[] = MESSAGES) => new TextCodec(tk.tokenizer, { ...tk.config, chat_template: tpl }).applyChatTemplate(msgs);
    const refused = (tpl: string, why: RegExp) => assert.throws(() => run(tpl), (e: unknown) => e instanceof FormatError && e.code === 'chat_template_error' && why.test(e.message), tpl);
    // (empty loop bodies evaluate no node: their iterations count too)
    refused('{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}x', /evaluation steps/);
    refused('{% set r = range(2000) %}{% for a in r %}{% for b in r %}{{ b }}{% endfor %}{% endfor %}', /evaluation steps/);
    refused('{% for i in range(100000000) %}{% endfor %}', /range\(\) of 100000000 items/);
    refused('{{ range(0, 10 ** 300) }}', /range/);
    // range keeps Python's semantics under the cap
    assert.equal(run('{{ range(5)|join(",") }}|{{ range(2, 9, 3)|join(",") }}|{{ range(5, 0, -2)|join(",") }}|{{ range(100000)|length }}'), '0,1,2,3,4|2,5,8|5,3,1|100000');
    // the fixture's ChatML template over 1,024 long messages (the server's limit), and the other globals
    const long: ChatMessage[] = Array.from({ length: 1024 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `message ${i} `.repeat(50) }));
    assert.equal(run(tk.config.chat_template as string, long).split('<|im_start|>').length - 1, 1024 + 2, 'every message, the default system message and the generation prompt');
    assert.match(run("{{ strftime_now('%d %b %Y') }}{{ none is none }}{{ True }}"), /^\d\d [A-Z][a-z]{2} \d{4}truetrue$/);
    assert.throws(() => run("{{ raise_exception('no system role') }}"), (e: unknown) => e instanceof FormatError && /no system role/.test(e.message));
  });

  test('templates cannot mutate the caller\'s messages', () => {
    const msgs = structuredClone(MESSAGES);
    for (const tpl of ['{{ messages.pop() }}', "{% set _ = messages.append({'role': 'x'}) %}", "{% set m = messages[0] %}{% set m.content = 'pwned' %}", '{{ messages.clear() }}']) {
      try {
        new TextCodec(tk.tokenizer, { ...tk.config, chat_template: tpl }).applyChatTemplate(msgs);
      } catch (e) {
        assert.ok(e instanceof FormatError, String(e));
      }
    }
    assert.deepEqual(msgs, MESSAGES);
  });

  test('output over 4 MB -> chat_template_error; exactly 4 MiB is allowed', () => {
    const doubling = (n: number, extra = '') =>
      `{% set ns = namespace(s='0123456789abcdef') %}{% for i in range(${n}) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}${extra}`;
    const huge = new TextCodec(tk.tokenizer, { ...tk.config, chat_template: doubling(19) }); // 8 MiB
    assert.throws(
      () => huge.applyChatTemplate(MESSAGES),
      (e: unknown) => e instanceof FormatError && e.code === 'chat_template_error',
    );
    assert.throws(
      () => new TextCodec(tk.tokenizer, { ...tk.config, chat_template: doubling(18, 'x') }).applyChatTemplate(MESSAGES),
      (e: unknown) => e instanceof FormatError && e.code === 'chat_template_error',
    );
    const limit = new TextCodec(tk.tokenizer, { ...tk.config, chat_template: doubling(18) }).applyChatTemplate(MESSAGES);
    assert.equal(limit.length, 4 * 1024 * 1024);
    // a runaway that the JS engine itself refuses (string length limit) is still a FormatError
    const runaway = new TextCodec(tk.tokenizer, { ...tk.config, chat_template: doubling(40) });
    assert.throws(
      () => runaway.applyChatTemplate(MESSAGES),
      (e: unknown) => e instanceof FormatError && e.code === 'chat_template_error',
    );
  });
});

test('tokenBytes: the raw bytes of each token rebuild the UTF-8 text, multi-byte characters split or not', async () => {
  const codec = await TextCodec.load('models/quench-tiny');
  const text = 'naïve café, 27 + 58 = 85 — ünïcødé ☃ 😀 end';
  const ids = codec.encode(text, false);
  const bytes = ids.flatMap((id) => codec.tokenBytes(id));
  assert.deepEqual(Buffer.from(bytes), Buffer.from(text, 'utf8'));
  // a token that is part of a character is U+FFFD on its own, its bytes are still exact
  assert.ok(ids.some((id) => codec.decode([id]).includes('\uFFFD')), 'some token splits a character');
});

test('tokenBytes: an added token is the UTF-8 of its text, not byte-level pieces', () => {
  const tk = fixtureTokenizer('llada');
  const json = structuredClone(tk.tokenizer) as { added_tokens: Record<string, unknown>[] };
  const id = Math.max(...json.added_tokens.map((t) => t.id as number)) + 1000;
  json.added_tokens.push({ id, content: ' <think> é', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const codec = new TextCodec(json, tk.config);
  assert.deepEqual(Buffer.from(codec.tokenBytes(id)), Buffer.from(' <think> é', 'utf8'));
});

test('tokenBytes: a SentencePiece-style tokenizer (Metaspace, byte fallback): pieces and <0xNN> tokens rebuild the UTF-8 text', () => {
  // the layout of Llama-2 / Mistral tokenizer.json files: "▁" marks a space, characters
  // outside the vocabulary fall back to one <0xNN> token per byte
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  const merges: string[] = [];
  for (const w of ['▁the', '▁cat', '▁caf']) {
    let cur = w[0];
    for (const ch of w) vocab[ch] ??= Object.keys(vocab).length;
    for (let i = 1; i < w.length; i++) {
      merges.push(`${cur} ${w[i]}`);
      cur += w[i];
      vocab[cur] ??= Object.keys(vocab).length;
    }
  }
  vocab['▁'] ??= Object.keys(vocab).length;
  const json = {
    version: '1.0',
    added_tokens: [0, 1, 2].map((id) => ({ id, content: ['<unk>', '<s>', '</s>'][id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges },
  };
  const codec = new TextCodec(json, { bos_token: '<s>', eos_token: '</s>' });
  const text = 'the cat café ☃';
  const ids = codec.encode(text, false);
  assert.ok(ids.some((id) => /^<0x/.test(Object.keys(vocab).find((k) => vocab[k] === id) ?? '')), 'some characters fell back to bytes');
  assert.equal(codec.decode(ids), text);
  // the pieces' bytes: the leading "▁" is the space SentencePiece prepends
  assert.deepEqual(Buffer.from(ids.flatMap((id) => codec.tokenBytes(id))), Buffer.from(` ${text}`, 'utf8'));
  assert.deepEqual(codec.tokenBytes(vocab['<0xE2>']), [0xe2]);
  assert.deepEqual(codec.tokenBytes(vocab['▁cat']), [...Buffer.from(' cat')]);
  // for constrained decoding: pieces as bytes, the special tokens (added: unk, bos, eos) none,
  // ids past the tokenizer none
  const size = Object.keys(vocab).length + 3;
  const vb = codec.vocabBytes(size);
  assert.equal(vb.length, size);
  assert.deepEqual(vb[vocab['▁cat']], Uint8Array.from(Buffer.from(' cat')));
  assert.deepEqual(vb[vocab['<0xE2>']], Uint8Array.of(0xe2));
  for (const id of [0, 1, 2, size - 1]) assert.equal(vb[id], null, `id ${id}`);
});
