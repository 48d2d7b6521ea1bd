/**
 * The HTTP error contract: every failure is `{ error: { code, message } }` with a status that says whose fault
 * it is. Library, store, auth and vault errors each carry a stable `code`; this module is the one place that
 * maps them to statuses, so a route never picks a status by hand for an error it did not raise itself.
 */
import { ZodError } from 'zod';
import { AgentError } from '../agent/client.js';
import { DestinationError } from '../egress/destination.js';
import { RuleSyntaxError } from '../egress/rules.js';
import { MountPlanError } from '../isolation/mounts.js';
import { PolicyError } from '../policy/merge.js';
import {
  PauseUnsupportedError,
  SandboxManagerError,
  SandboxStartError,
  SandboxStateError,
  SnapshotError,
  WorkspaceQuotaError,
} from '../sandbox/errors.js';
import { SandboxNetworkDisabledError } from '../sandbox/network.js';
import { VaultError } from '../vault/vault.js';
import {
  AdminKeyError,
  ForbiddenError,
  QuotaExceededError,
  RateLimitError,
  UnauthenticatedError,
} from './auth/errors.js';
import { StoreError } from './store/errors.js';

/** An error with its HTTP status decided; what every other error is turned into. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra response headers (Retry-After). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export function notFound(what: string, hint: string): ApiError {
  return new ApiError(404, 'NOT_FOUND', `${what} not found; ${hint}`);
}

/** zod issues as one line, at most five, each prefixed with its path. Never includes the offending values. */
export function describeZodError(error: ZodError, where: string): string {
  const issues = error.issues.slice(0, 5).map((i) => {
    const path = i.path.length > 0 ? `${i.path.join('.')}: ` : '';
    return `${path}${i.message}`;
  });
  const more = error.issues.length > 5 ? ` (and ${error.issues.length - 5} more)` : '';
  return `invalid ${where}: ${issues.join('; ')}${more}`;
}

const FILE_ERRNO_STATUS: Readonly<Record<string, [number, string]>> = {
  ENOENT: [404, 'FILE_NOT_FOUND'],
  EEXIST: [409, 'FILE_EXISTS'],
  ENOTEMPTY: [409, 'DIRECTORY_NOT_EMPTY'],
  EACCES: [403, 'FILE_PERMISSION_DENIED'],
  EPERM: [403, 'FILE_PERMISSION_DENIED'],
  EROFS: [403, 'FILE_READ_ONLY'],
  EISDIR: [400, 'IS_A_DIRECTORY'],
  ENOTDIR: [400, 'NOT_A_DIRECTORY'],
  ENAMETOOLONG: [400, 'PATH_TOO_LONG'],
  ELOOP: [400, 'TOO_MANY_SYMLINKS'],
  EINVAL: [400, 'INVALID_ARGUMENT'],
  EXDEV: [400, 'CROSS_DEVICE'],
  ENOSPC: [507, 'NO_SPACE'],
  EDQUOT: [507, 'NO_SPACE'],
  EFBIG: [413, 'FILE_TOO_LARGE'],
};

function fromAgent(err: AgentError): ApiError {
  if (err.errno !== undefined) {
    const mapped = FILE_ERRNO_STATUS[err.errno];
    if (mapped) return new ApiError(mapped[0], mapped[1], err.message);
  }
  switch (err.code) {
    case 'BAD_REQUEST':
      return new ApiError(400, 'BAD_REQUEST', err.message);
    case 'NO_SUCH_PROCESS':
      return new ApiError(404, 'PROCESS_NOT_FOUND', `${err.message}; list processes with GET .../processes`);
    case 'SPAWN_FAILED':
      return new ApiError(400, 'SPAWN_FAILED', `${err.message}; check argv[0] and cwd`);
    case 'STDIN_CLOSED':
      return new ApiError(409, 'STDIN_CLOSED', `${err.message}; start the process with stdin: true`);
    case 'LIMIT':
      return new ApiError(429, 'SANDBOX_LIMIT', err.message);
    case 'BUSY':
      return new ApiError(409, 'BUSY', `${err.message}; retry shortly`);
    case 'CONNECTION_CLOSED':
      return new ApiError(
        409,
        'SANDBOX_UNAVAILABLE',
        `${err.message}; the sandbox stopped or is reconnecting`,
      );
    case 'FILE_ERROR':
      return new ApiError(400, 'FILE_ERROR', err.message);
    default:
      return new ApiError(500, err.code, err.message);
  }
}

/** Fastify's own errors (bad JSON, body too large, wrong media type) carry a 4xx statusCode and FST_ code. */
function fromFramework(err: { code: string; statusCode: number; message: string }): ApiError {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(
        415,
        'UNSUPPORTED_MEDIA_TYPE',
        'unsupported Content-Type: send JSON with `Content-Type: application/json` ' +
          '(raw bodies only where the API says application/octet-stream)',
      );
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(
        413,
        'BODY_TOO_LARGE',
        'request body too large (JSON bodies are limited to 1 MiB; upload files with PUT .../files)',
      );
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError(400, 'INVALID_CONTENT_LENGTH', 'Content-Length does not match the body');
    default:
      return new ApiError(err.statusCode, err.code.replace(/^FST_ERR_/, ''), err.message);
  }
}

function isFrameworkError(err: unknown): err is { code: string; statusCode: number; message: string } {
  const e = err as { code?: unknown; statusCode?: unknown };
  return (
    typeof e?.code === 'string' &&
    e.code.startsWith('FST_') &&
    typeof e.statusCode === 'number' &&
    e.statusCode >= 400 &&
    e.statusCode < 500
  );
}

/** Maps any thrown value to an ApiError; unknown errors become 500 INTERNAL (their message is logged, not sent). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ZodError) return new ApiError(400, 'INVALID_INPUT', describeZodError(err, 'input'));
  if (err instanceof UnauthenticatedError) return new ApiError(401, err.code, err.message);
  if (err instanceof ForbiddenError) {
    return new ApiError(403, err.code, `${err.message}; ask an admin for a key with that scope`);
  }
  if (err instanceof RateLimitError) {
    return new ApiError(429, err.code, err.message, {
      'retry-after': String(Math.max(1, Math.ceil(err.retryAfterMs / 1000))),
    });
  }
  if (err instanceof QuotaExceededError) return new ApiError(429, err.code, err.message);
  if (err instanceof StoreError) {
    const status: Record<string, number> = {
      INVALID_INPUT: 400,
      INVALID_CURSOR: 400,
      NOT_FOUND: 404,
      CONFLICT: 409,
      LIMIT_REACHED: 429,
    };
    return new ApiError(status[err.code] ?? 500, err.code, err.message);
  }
  if (err instanceof VaultError) {
    const status = err.code.startsWith('INVALID_') ? 400 : err.code === 'NOT_FOUND' ? 404 : 500;
    return new ApiError(status, `SECRET_${err.code}`, err.message);
  }
  if (err instanceof SandboxStateError) return new ApiError(409, err.code, err.message);
  if (err instanceof PauseUnsupportedError) return new ApiError(409, err.code, err.message);
  if (err instanceof SnapshotError) {
    const status = { SNAPSHOT_NOT_FOUND: 404, SNAPSHOT_EXISTS: 409, SNAPSHOT_INVALID_NAME: 400 }[
      err.code as string
    ];
    return new ApiError(status ?? 500, err.code, err.message);
  }
  if (err instanceof WorkspaceQuotaError) return new ApiError(413, err.code, err.message);
  if (err instanceof SandboxNetworkDisabledError) return new ApiError(409, err.code, err.message);
  if (err instanceof PolicyError) {
    return new ApiError(
      400,
      err.code,
      `${err.message}${err.issues.length ? `: ${err.issues.join('; ')}` : ''}`,
    );
  }
  if (err instanceof MountPlanError)
    return new ApiError(400, err.code, `${err.message} (policy ${err.rule})`);
  if (err instanceof RuleSyntaxError) return new ApiError(400, err.code, err.message);
  if (err instanceof DestinationError) return new ApiError(400, 'INVALID_DESTINATION', err.message);
  if (err instanceof SandboxManagerError) {
    const status = { SANDBOX_NOT_FOUND: 404, INVALID_ID: 400, ID_IN_USE: 409 }[err.code as string];
    return new ApiError(status ?? 503, err.code, err.message);
  }
  if (err instanceof SandboxStartError) return new ApiError(500, err.code, err.message);
  if (err instanceof AdminKeyError) return new ApiError(500, err.code, err.message);
  if (err instanceof AgentError) return fromAgent(err);
  if (isFrameworkError(err)) return fromFramework(err);
  // The library's own argument checks (no command, NUL in a path, unknown process id, bad timeout).
  if (err instanceof RangeError || err instanceof TypeError) {
    if (/^no process \d+/.test(err.message)) {
      return new ApiError(404, 'PROCESS_NOT_FOUND', `${err.message}; list processes with GET .../processes`);
    }
    if (err instanceof RangeError) return new ApiError(400, 'INVALID_INPUT', err.message);
  }
  return new ApiError(500, 'INTERNAL', 'internal error; the server log has the details (see x-request-id)');
}
