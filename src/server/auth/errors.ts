/** Errors of authentication and authorization; each has a stable `code` the HTTP layer maps to a status. */
import type { Scope } from '../store/types.js';

const HOW_TO_PASS = 'pass an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`';

/** No key, a malformed or unknown key, or a revoked one (HTTP 401). Never says which key exists. */
export class UnauthenticatedError extends Error {
  readonly code = 'UNAUTHENTICATED';
  constructor(problem: string) {
    super(`${problem}; ${HOW_TO_PASS}`);
    this.name = 'UnauthenticatedError';
  }
}

/**
 * The key may not do this (HTTP 403). `reason` `not-owner`: the resource belongs to another key; a server
 * answers that with 404 so a tenant cannot probe which ids exist.
 */
export class ForbiddenError extends Error {
  readonly code = 'FORBIDDEN';
  constructor(
    readonly missingScope: Scope,
    readonly reason: 'scope' | 'not-owner' | 'revoked' | 'unknown-action',
    message: string,
  ) {
    super(message);
    this.name = 'ForbiddenError';
  }
}

/** The key's requests-per-minute bucket is empty (HTTP 429 with Retry-After). */
export class RateLimitError extends Error {
  readonly code = 'RATE_LIMITED';
  constructor(
    readonly keyId: string,
    readonly retryAfterMs: number,
    readonly requestsPerMinute: number,
  ) {
    super(
      `API key ${keyId} exceeded its rate limit of ${requestsPerMinute} requests per minute; ` +
        `retry in ${Math.ceil(retryAfterMs / 1000)} s`,
    );
    this.name = 'RateLimitError';
  }
}

/** The key already owns as many sandboxes as its quota allows (HTTP 429, or 403 for E2B clients). */
export class QuotaExceededError extends Error {
  readonly code = 'QUOTA_EXCEEDED';
  constructor(
    readonly keyId: string,
    readonly used: number,
    readonly limit: number,
  ) {
    super(
      `API key ${keyId} owns ${used} sandboxes, its quota is ${limit}; kill one of them first, ` +
        'or ask an admin to raise the key limit maxSandboxes',
    );
    this.name = 'QuotaExceededError';
  }
}

export type AdminKeyErrorCode =
  | 'ADMIN_KEY_FILE_EXISTS'
  | 'ENV_KEY_INVALID'
  | 'ENV_KEY_REVOKED'
  | 'ENV_KEY_NOT_ADMIN'
  | 'STATE_DIR_UNUSABLE';

/** ensureAdminKey could not establish an admin key; the message says what the operator should do. */
export class AdminKeyError extends Error {
  constructor(
    readonly code: AdminKeyErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AdminKeyError';
  }
}
