// Stored responses (the Responses API's `store`, `previous_response_id`, GET / DELETE
// /v1/responses/{id} and its input items), in memory, bounded: the oldest responses go first
// once there are more than `maxResponses` of them or their JSON passes `maxBytes`. A server
// restart forgets them all, as documented for `quench serve --response-store`.

/** One stored response: what GET returns, the request's input items, and the conversation
 *  that a follow-up with previous_response_id continues (the chat messages, this answer included). */
export interface StoredResponse {
  response: Record<string, unknown>;
  inputItems: Record<string, unknown>[];
  conversation: unknown[];
  /** the ids of every item in the conversation (input and output items), for duplicate checks */
  itemIds: string[];
}

export interface ResponseStoreOptions {
  /** most responses kept (0: nothing is stored) */
  maxResponses?: number;
  /** most bytes kept, counted as the JSON of each entry */
  maxBytes?: number;
}

export class ResponseStore {
  readonly maxResponses: number;
  readonly maxBytes: number;
  /** insertion order is age order: the first key is the oldest */
  private entries = new Map<string, { entry: StoredResponse; bytes: number }>();
  private total = 0;

  constructor(o: ResponseStoreOptions = {}) {
    this.maxResponses = o.maxResponses ?? 1000;
    this.maxBytes = o.maxBytes ?? 64 * 2 ** 20;
  }

  get enabled(): boolean {
    return this.maxResponses > 0;
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.total;
  }

  /** Keep an entry (a deep copy); false when it is larger than the whole store. */
  put(id: string, entry: StoredResponse): boolean {
    if (!this.enabled) return false;
    const text = JSON.stringify(entry);
    const bytes = Buffer.byteLength(text);
    if (bytes > this.maxBytes) return false;
    this.delete(id);
    this.entries.set(id, { entry: JSON.parse(text) as StoredResponse, bytes });
    this.total += bytes;
    for (const [old, e] of this.entries) {
      if (this.entries.size <= this.maxResponses && this.total <= this.maxBytes) break;
      this.entries.delete(old);
      this.total -= e.bytes;
    }
    return true;
  }

  get(id: string): StoredResponse | undefined {
    return this.entries.get(id)?.entry;
  }

  delete(id: string): boolean {
    const e = this.entries.get(id);
    if (!e) return false;
    this.entries.delete(id);
    this.total -= e.bytes;
    return true;
  }
}

/** A page of a list the API pages through (`after` an item's id, `limit`, `order`). */
export function page<T extends { id?: unknown }>(items: T[], q: { after?: string; limit?: number; order?: 'asc' | 'desc' }): { object: 'list'; data: T[]; first_id: string | null; last_id: string | null; has_more: boolean } {
  const ordered = q.order === 'asc' ? items : [...items].reverse();
  let from = 0;
  if (q.after !== undefined) {
    from = ordered.findIndex((x) => x.id === q.after) + 1; // (an unknown id: from the start; the route refuses it)
  }
  const limit = q.limit ?? 20;
  const data = ordered.slice(from, from + limit);
  return { object: 'list', data, first_id: (data[0]?.id as string) ?? null, last_id: (data[data.length - 1]?.id as string) ?? null, has_more: from + limit < ordered.length };
}
