// The code-editing endpoints (/v1/apply/completions, /v1/edit/completions): a well-formed
// tagged message decodes exactly as the chat endpoint decodes it (the oracle: the chat
// endpoint on the same model), streamed too; a malformed one is a 400 naming the field, and
// the server keeps serving.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { fixtureModel } from './helpers.ts';
import { startServer } from './serve.ts';
import { checkCodeEditMessages } from '../src/server/code-edits.ts';
import { OptionError } from '../src/errors.ts';

const { model } = await fixtureModel({ arch: 'llada', hidden: 64, heads: 4, layers: 2, std: 0.3, maxPositions: 1024 });
const servers: { close(): Promise<unknown> }[] = [];
after(async () => {
  for (const s of servers) await s.close();
  await model.close();
});
const main = await startServer(model, servers, { maxTokens: 24 });
const post = (path: string, body: object) => fetch(`${main.base}/v1/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, json: await r.json() }));

const APPLY = '<|original_code|>\ndef add(a, b):\n    return a - b\n<|/original_code|>\n<|update_snippet|>\n    return a + b\n<|/update_snippet|>';
const EDIT = '<|recently_viewed_code_snippets|>\n<|/recently_viewed_code_snippets|>\n<|current_file_content|>\ncurrent_file_path: add.py\n<|code_to_edit|>\ndef add(a, b):\n    return a - b<|cursor|>\n<|/code_to_edit|>\n<|/current_file_content|>\n<|edit_diff_history|>\n# addition, not subtraction\n<|/edit_diff_history|>';

test('apply and edit: a tagged message decodes as the chat endpoint decodes it, streamed or not', async () => {
  for (const [path, content] of [['apply/completions', APPLY], ['edit/completions', EDIT]] as const) {
    const body = { model: model.id, messages: [{ role: 'user', content }], max_tokens: 16, temperature: 0 };
    const r = await post(path, body);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const chat = await post('chat/completions', body);
    assert.equal(r.json.object, 'chat.completion');
    assert.equal(r.json.choices[0].message.content, chat.json.choices[0].message.content);
    assert.equal(r.json.usage.prompt_tokens, chat.json.usage.prompt_tokens);
    // streamed: the deltas join to the same text
    const res = await fetch(`${main.base}/v1/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
    const text = (await res.text()).split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]').map((l) => JSON.parse(l.slice(6)).choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, chat.json.choices[0].message.content);
  }
});

test('apply and edit: malformed messages get a 400 naming the field; the server keeps serving', async () => {
  const cases: [string, unknown, string][] = [
    ['apply/completions', [{ role: 'user', content: '<|original_code|>x<|/original_code|>' }], 'messages[0].content'],
    ['apply/completions', [{ role: 'user', content: '<|update_snippet|>y<|/update_snippet|><|original_code|>x<|/original_code|>' }], 'messages[0].content'],
    ['apply/completions', [{ role: 'user', content: '<|original_code|>x<|original_code|>y<|/original_code|><|update_snippet|>y<|/update_snippet|>' }], 'messages[0].content'],
    ['apply/completions', [{ role: 'system', content: APPLY }], 'messages[0].role'],
    ['apply/completions', [{ role: 'user', content: APPLY }, { role: 'user', content: APPLY }], 'messages'],
    ['edit/completions', [{ role: 'user', content: '<|current_file_content|>x<|/current_file_content|>' }], 'messages[0].content'],
    ['edit/completions', [{ role: 'user', content: EDIT.replace('a - b<|cursor|>', 'a<|cursor|> - b<|cursor|>') }], 'messages[0].content'],
    ['edit/completions', [{ role: 'user', content: EDIT.replace('<|cursor|>', '').replace('current_file_path', '<|cursor|>current_file_path') }], 'messages[0].content'],
    ['edit/completions', [{ role: 'user', content: APPLY }], 'messages[0].content'],
  ];
  for (const [path, messages, param] of cases) {
    const r = await post(path, { model: model.id, messages, max_tokens: 4 });
    assert.equal(r.status, 400, `${path} ${JSON.stringify(messages)}: ${JSON.stringify(r.json)}`);
    assert.equal(r.json.error.param, param, JSON.stringify(r.json));
  }
  assert.equal((await post('apply/completions', { model: model.id, messages: [{ role: 'user', content: APPLY }], tools: [{ type: 'function', function: { name: 'f' } }] })).json.error.param, 'tools');
  assert.equal((await post('edit/completions', { model: model.id, messages: [{ role: 'user', content: EDIT }], response_format: { type: 'json_object' } })).json.error.param, 'response_format');
  // optional sections may be left out; text parts are read as the string
  assert.equal(checkCodeEditMessages('edit', [{ role: 'user', content: [{ type: 'text', text: '<|current_file_content|><|code_to_edit|>x<|/code_to_edit|><|/current_file_content|>' }] }]).length > 0, true);
  assert.throws(() => checkCodeEditMessages('edit', [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }]), OptionError);
  const ok = await post('apply/completions', { model: model.id, messages: [{ role: 'user', content: APPLY }], max_tokens: 4 });
  assert.equal(ok.status, 200);
});
