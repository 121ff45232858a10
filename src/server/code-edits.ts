// The code-editing endpoints of the API quench mirrors: POST /v1/apply/completions (merge an
// update snippet into the original code) and POST /v1/edit/completions (next edit: rewrite the
// region around the cursor). Both are chat requests whose one user message holds tagged
// sections; this file checks those sections, so a malformed prompt is a 400 naming what is
// missing instead of an answer to a prompt the model was never trained on. Decoding is the
// chat endpoint's.

import { OptionError } from '../errors.ts';

export type CodeEditKind = 'apply' | 'edit';

/** [section, required] in the order they must appear */
const SECTIONS: Record<CodeEditKind, [string, boolean][]> = {
  apply: [
    ['original_code', true],
    ['update_snippet', true],
  ],
  edit: [
    ['recently_viewed_code_snippets', false],
    ['current_file_content', true],
    ['edit_diff_history', false],
  ],
};

const bad = (message: string, param = 'messages[0].content'): never => {
  throw new OptionError(param, message);
};

function count(text: string, s: string): number {
  return text.split(s).length - 1;
}

/** The [start, end) of a section's body, or null when the section is absent. */
function section(text: string, name: string, required: boolean): [number, number] | null {
  const open = `<|${name}|>`;
  const close = `<|/${name}|>`;
  const n = count(text, open);
  const m = count(text, close);
  if (n === 0 && m === 0) return required ? bad(`the message has no ${open}...${close} section`) : null;
  if (n !== 1 || m !== 1) bad(`${open} and ${close} must each appear once (found ${n} and ${m})`);
  const a = text.indexOf(open) + open.length;
  const b = text.indexOf(close);
  if (b < a) bad(`${close} comes before ${open}`);
  return [a, b];
}

/** The one user message's text, its tagged sections checked for this endpoint. */
export function checkCodeEditMessages(kind: CodeEditKind, messages: unknown): string {
  if (!Array.isArray(messages) || messages.length !== 1) return bad(`/v1/${kind}/completions takes exactly one user message`, 'messages');
  const m = messages[0] as { role?: unknown; content?: unknown };
  if (m.role !== 'user') bad('the message must have role "user"', 'messages[0].role');
  let text: string;
  if (typeof m.content === 'string') text = m.content;
  else if (Array.isArray(m.content) && m.content.every((p) => p && typeof p === 'object' && (p as { type?: unknown }).type === 'text' && typeof (p as { text?: unknown }).text === 'string'))
    text = m.content.map((p) => (p as { text: string }).text).join('');
  else return bad('content must be a string or text parts');
  let end = 0;
  for (const [name, required] of SECTIONS[kind]) {
    const s = section(text, name, required);
    if (!s) continue;
    if (s[0] < end) bad(`<|${name}|> must come after the sections before it (${SECTIONS[kind].map(([n]) => n).join(', ')})`);
    end = s[1];
  }
  if (kind === 'edit') {
    // the region to rewrite sits in the current file, with at most one cursor in it
    const [fa, fb] = section(text, 'current_file_content', true)!;
    const [ca, cb] = section(text, 'code_to_edit', true)!;
    if (ca < fa || cb > fb) bad('<|code_to_edit|>...<|/code_to_edit|> must be inside <|current_file_content|>');
    if (count(text, '<|cursor|>') > 1) bad('<|cursor|> may appear at most once');
    if (text.includes('<|cursor|>') && (text.indexOf('<|cursor|>') < ca || text.indexOf('<|cursor|>') > cb)) bad('<|cursor|> must be inside <|code_to_edit|>');
  }
  return text;
}
