// Every error leaves the server in the OpenAI envelope:
// {"error": {"message", "type", "param", "code"}} with the matching HTTP status.

import { QuenchError } from '../errors.ts';

export interface Envelope {
  status: number;
  body: { error: { message: string; type: string; param: string | null; code: string | null } };
}

export function apiError(status: number, type: string, message: string, code: string | null = null, param: string | null = null): Envelope {
  return { status, body: { error: { message, type, param, code } } };
}

interface FastifyLikeError {
  statusCode?: number;
  code?: string;
  message?: string;
  validation?: { instancePath?: string; params?: Record<string, unknown>; message?: string; keyword?: string }[];
}

/** A message for a client: absolute paths (POSIX or Windows) become <path> (the server's files
 * are not the client's business), control characters spaces. */
export function withoutPaths(message: string): string {
  return message.replace(/(^|[\s'"(=:,\[])(?:\/(?!\/)|[A-Za-z]:[\\/]|\\\\)[^\s'",)\]]*/g, '$1<path>').replace(/[\u0000-\u001f\u007f]/g, ' ');
}

/** Map anything thrown while handling a request to an envelope. Never leaks stack traces or paths. */
export function toEnvelope(err: unknown): Envelope {
  if (err instanceof QuenchError) return apiError(err.status, err.type, err.message, err.code, err.param);
  const e = err as FastifyLikeError;
  if (e && Array.isArray(e.validation) && e.validation.length > 0) {
    const v = e.validation[0];
    // (the JSON pointer as quench's own errors name fields: messages[0].content)
    let param = (v.instancePath ?? '')
      .split('/')
      .slice(1)
      .map((seg) => seg.replace(/~1/g, '/').replace(/~0/g, '~'))
      .reduce((p, seg) => (/^\d+$/.test(seg) ? `${p}[${seg}]` : p ? `${p}.${seg}` : seg), '');
    const extra = v.params?.additionalProperty ?? v.params?.missingProperty;
    if (typeof extra === 'string') param = param ? `${param}.${extra}` : extra;
    const what = param || 'body';
    return apiError(400, 'invalid_request_error', `${what} ${v.message ?? 'is invalid'}`, 'invalid_value', param || null);
  }
  if (e?.statusCode === 413 || e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return apiError(413, 'invalid_request_error', 'request body is too large', 'body_too_large');
  if (e?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return apiError(415, 'invalid_request_error', 'content-type must be application/json', 'unsupported_media_type');
  if (e?.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || e?.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (e?.statusCode === 400 && err instanceof SyntaxError))
    return apiError(400, 'invalid_request_error', 'request body is not valid JSON', 'invalid_json');
  if (e?.statusCode && e.statusCode >= 400 && e.statusCode < 500) return apiError(e.statusCode, 'invalid_request_error', withoutPaths(String(e.message ?? 'bad request')), e.code ?? null);
  return apiError(500, 'server_error', 'internal error', 'internal_error');
}
