/**
 * Typed errors of the SDK. The server answers every failure with `{ error: { code, message } }` and a status;
 * the status picks the class (so callers can `instanceof` without parsing codes) and the code stays stable.
 */

export interface IroncageErrorInit {
  /** HTTP status, or null when there was none (connection failure, error line inside a stream). */
  status: number | null;
  code: string;
  message: string;
  requestId?: string | null;
  cause?: unknown;
}

export class IroncageError extends Error {
  readonly status: number | null;
  readonly code: string;
  /** The server's x-request-id for this call (quote it when reading the server log). */
  readonly requestId: string | null;

  constructor(init: IroncageErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'IroncageError';
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId ?? null;
  }
}

/** 401: missing, unknown or revoked API key. */
export class AuthenticationError extends IroncageError {
  // Spelled out: a minifier renames classes, and callers match on the name.
  override readonly name = 'AuthenticationError';
}
/** 403: the key lacks a scope, or the request needs an admin key. */
export class ForbiddenError extends IroncageError {
  override readonly name = 'ForbiddenError';
}
/** 404: no such sandbox (or not this key's), process, file, snapshot, secret or key. */
export class NotFoundError extends IroncageError {
  override readonly name = 'NotFoundError';
}
/** 409: wrong state (paused, stopped, stdin closed, name taken...). */
export class ConflictError extends IroncageError {
  override readonly name = 'ConflictError';
}
/** 400, 413, 415, 422: the request itself is wrong; the message says what to change. */
export class ValidationError extends IroncageError {
  override readonly name = 'ValidationError';
}

/** 429: rate limit or quota. */
export class RateLimitError extends IroncageError {
  override readonly name = 'RateLimitError';
  /** From Retry-After when the server sent one (rate limits do; sandbox quotas do not). */
  readonly retryAfterMs: number | null;

  constructor(init: IroncageErrorInit & { retryAfterMs?: number | null }) {
    super(init);
    this.retryAfterMs = init.retryAfterMs ?? null;
  }
}

/** The server could not be reached, or the connection broke mid-response. */
export class ConnectionError extends IroncageError {
  override readonly name = 'ConnectionError';
  readonly url: string;

  constructor(url: string, cause: unknown) {
    const reason = cause instanceof Error ? (causeMessage(cause) ?? cause.message) : String(cause);
    super({
      status: null,
      code: 'CONNECTION_FAILED',
      message: `cannot reach the ironcage API at ${url}: ${reason}; is \`ironcage serve\` running there (IRONCAGE_API_URL)?`,
      cause,
    });
    this.url = url;
  }
}

/** fetch's own message is "fetch failed"; the useful part (ECONNREFUSED...) is in its cause. */
function causeMessage(err: Error): string | undefined {
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) return cause.message;
  return undefined;
}

/** The error class for a status; unknown statuses (5xx included) are the base class. */
export function errorForStatus(init: IroncageErrorInit & { retryAfterMs?: number | null }): IroncageError {
  switch (init.status) {
    case 400:
    case 413:
    case 415:
    case 422:
      return new ValidationError(init);
    case 401:
      return new AuthenticationError(init);
    case 403:
      return new ForbiddenError(init);
    case 404:
      return new NotFoundError(init);
    case 409:
      return new ConflictError(init);
    case 429:
      return new RateLimitError(init);
    default:
      return new IroncageError(init);
  }
}
