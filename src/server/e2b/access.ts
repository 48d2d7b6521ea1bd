/**
 * Who may touch which sandbox through the E2B-compatible routes. The control plane takes ironcage API keys
 * (E2B's SDK sends them as X-API-Key); the sandbox daemon routes take the per-sandbox access token that create
 * and connect hand out (E2B's envdAccessToken, sent as X-Access-Token), which acts with its owner key's rights
 * and dies with that key's revocation.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { authenticate, presentedKeyFromHeaders } from '../auth/api-keys.js';
import { type Action, authorize } from '../auth/authorize.js';
import type { RateLimiter } from '../auth/limits.js';
import { ApiError } from '../errors.js';
import type { ServerContext } from '../routes/route.js';
import { findOwnedSandbox } from '../routes/sandboxes.js';
import type { ApiKeyRecord, SandboxRecord } from '../store/types.js';

export interface E2bDeps {
  ctx: ServerContext;
  /** The app's per-key request buckets (the same ones the /v1 routes draw from). */
  limiter?: RateLimiter;
}

type Headers = Readonly<Record<string, string | readonly string[] | undefined>>;

export class E2bAccess {
  readonly #deps: E2bDeps;
  /**
   * Signs sandbox access tokens. Kept in memory only: after a restart old tokens stop working and the SDK's
   * Sandbox.connect() (which returns a fresh token) recovers, so no secret has to be stored on disk.
   */
  readonly #secret = randomBytes(32);

  constructor(deps: E2bDeps) {
    this.#deps = deps;
  }

  async key(headers: Headers): Promise<ApiKeyRecord> {
    const key = await authenticate(this.#deps.ctx.store, presentedKeyFromHeaders(headers));
    this.#deps.limiter?.enforce(key);
    return key;
  }

  accessToken(sandboxId: string): string {
    return createHmac('sha256', this.#secret).update(`e2b-envd:${sandboxId}`).digest('base64url');
  }

  /** The live sandbox `id` if `key` may do `action` on it; 404 otherwise (also for other tenants' ones). */
  sandbox(
    key: ApiKeyRecord,
    id: string,
    action: Action,
  ): Promise<{ sandbox: Sandbox; record: SandboxRecord }> {
    return findOwnedSandbox(
      this.#deps.ctx,
      key,
      id,
      action,
      new ApiError(404, 'NOT_FOUND', `sandbox ${id} not found`),
    );
  }

  /** The sandbox a daemon request is for (E2b-Sandbox-Id), checked against its access token. */
  async envdSandbox(headers: Headers): Promise<Sandbox> {
    const id = single(headers, 'e2b-sandbox-id');
    if (id === undefined) throw new ApiError(400, 'NO_SANDBOX_ID', 'header E2b-Sandbox-Id is required');
    const token = single(headers, 'x-access-token');
    if (token === undefined) {
      throw new ApiError(401, 'UNAUTHENTICATED', 'header X-Access-Token is required (from sandbox create)');
    }
    const expected = Buffer.from(this.accessToken(id));
    const given = Buffer.from(token);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new ApiError(401, 'UNAUTHENTICATED', 'invalid sandbox access token');
    }
    const record = await this.#deps.ctx.store.getSandbox(id);
    const owner = record === null ? null : await this.#deps.ctx.store.getApiKey(record.ownerKeyId);
    if (record === null || owner === null) throw new ApiError(502, 'SANDBOX_GONE', `sandbox ${id} is gone`);
    // The token acts for its owner key: revoking that key revokes the token.
    authorize(owner, 'sandbox:write', record.ownerKeyId);
    this.#deps.limiter?.enforce(owner);
    const sandbox = this.#deps.ctx.manager.get(id);
    // 502 is what E2B's daemon proxy answers for a sandbox that is not running; the SDK reads it that way.
    if (sandbox === undefined || sandbox.state === 'stopped') {
      throw new ApiError(502, 'SANDBOX_GONE', `sandbox ${id} is not running`);
    }
    return sandbox;
  }
}

function single(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  if (Array.isArray(value)) throw new ApiError(400, 'BAD_HEADER', `header ${name} given more than once`);
  return typeof value === 'string' && value !== '' ? value : undefined;
}
