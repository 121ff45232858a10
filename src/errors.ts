// Typed errors. Every error quench raises on bad input carries a stable `code`, the HTTP
// status it maps to, and (for request fields) the offending `param`, so the server can
// answer in the OpenAI error envelope without string matching.

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'overloaded_error'
  | 'server_error';

export class QuenchError extends Error {
  readonly code: string;
  readonly status: number;
  readonly type: ErrorType;
  readonly param: string | null;

  constructor(code: string, message: string, opts: { status?: number; type?: ErrorType; param?: string | null } = {}) {
    super(message);
    this.name = 'QuenchError';
    this.code = code;
    this.status = opts.status ?? 400;
    this.type = opts.type ?? (this.status === 400 ? 'invalid_request_error' : 'server_error');
    this.param = opts.param ?? null;
  }
}

/** A file on disk is malformed (safetensors, config.json, tokenizer files). */
export class FormatError extends QuenchError {
  constructor(code: string, message: string) {
    super(code, message, { status: 400 });
    this.name = 'FormatError';
  }
}

/** A generation or request option is out of range. */
export class OptionError extends QuenchError {
  constructor(param: string, message: string, code = 'invalid_option') {
    super(code, message, { status: 400, param });
    this.name = 'OptionError';
  }
}

export class CancelledError extends QuenchError {
  constructor() {
    super('cancelled', 'the request was cancelled', { status: 499, type: 'invalid_request_error' });
    this.name = 'CancelledError';
  }
}

export class NotFoundError extends QuenchError {
  constructor(param: string, message: string, code = 'not_found') {
    super(code, message, { status: 404, type: 'invalid_request_error', param });
    this.name = 'NotFoundError';
  }
}

export class UnavailableError extends QuenchError {
  constructor(message: string, code = 'unavailable') {
    super(code, message, { status: 503, type: 'overloaded_error' });
    this.name = 'UnavailableError';
  }
}

/** Fetching a model from the Hugging Face Hub failed (not found, no access, not a loadable model). */
export class HubError extends QuenchError {
  constructor(code: string, message: string) {
    super(code, message, { status: 400 });
    this.name = 'HubError';
  }
}

/** A constrained output (JSON mode, json_schema) reached a state where the model's vocabulary
 * has no allowed token: the request was valid, the server cannot finish it. */
export class ConstraintError extends QuenchError {
  constructor(message: string) {
    super('constraint_dead_end', message, { status: 500, type: 'server_error' });
    this.name = 'ConstraintError';
  }
}
