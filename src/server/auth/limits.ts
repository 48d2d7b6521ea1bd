/**
 * Per-key limits: a token-bucket request rate and a cap on owned sandboxes.
 *
 * A sandbox's ownership row is its liveness: the server deletes the row when the sandbox is killed or
 * expires (and reconciles rows with the manager at startup), so the quota counts rows.
 */
import { StoreError } from '../store/errors.js';
import type { ApiKeyRecord, NewSandbox, SandboxRecord, Store } from '../store/types.js';
import { QuotaExceededError, RateLimitError } from './errors.js';

export type RateDecision =
  | { readonly allowed: true; readonly remaining: number }
  | { readonly allowed: false; readonly retryAfterMs: number };

interface Bucket {
  tokens: number;
  updatedAt: number;
  perMinute: number;
}

export interface RateLimiterOptions {
  /** Milliseconds clock (default Date.now); tests inject one. */
  now?: () => number;
  /** Buckets kept before full (idle) ones are dropped (default 10 000). */
  maxBuckets?: number;
}

/**
 * One bucket per key: capacity `requestsPerMinute` (the allowed burst), refilled continuously at
 * requestsPerMinute / 60 per second. In memory: limits restart full with the server, which errs towards
 * letting requests through, never towards locking a tenant out.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;
  readonly #maxBuckets: number;

  constructor(options: RateLimiterOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxBuckets = options.maxBuckets ?? 10_000;
  }

  /** Buckets currently held (bounded by maxBuckets). */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes one token for the key; keys without a limit are always allowed. */
  take(key: Pick<ApiKeyRecord, 'id' | 'limits'>): RateDecision {
    const perMinute = key.limits.requestsPerMinute;
    if (perMinute === null) return { allowed: true, remaining: Number.POSITIVE_INFINITY };
    const now = this.#now();
    let bucket = this.#buckets.get(key.id);
    if (!bucket) {
      this.#evict(now);
      bucket = { tokens: perMinute, updatedAt: now, perMinute };
      this.#buckets.set(key.id, bucket);
    }
    this.#refill(bucket, now, perMinute);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true, remaining: Math.floor(bucket.tokens) };
    }
    const msPerToken = 60_000 / perMinute;
    return { allowed: false, retryAfterMs: Math.max(1, Math.ceil((1 - bucket.tokens) * msPerToken)) };
  }

  /** take(), throwing RateLimitError when the bucket is empty. */
  enforce(key: Pick<ApiKeyRecord, 'id' | 'limits'>): void {
    const decision = this.take(key);
    if (!decision.allowed) {
      throw new RateLimitError(key.id, decision.retryAfterMs, key.limits.requestsPerMinute ?? 0);
    }
  }

  #refill(bucket: Bucket, now: number, perMinute: number): void {
    // A clock that steps back refills nothing rather than draining the bucket.
    const elapsed = Math.max(0, now - bucket.updatedAt);
    bucket.tokens = Math.min(perMinute, bucket.tokens + (elapsed * perMinute) / 60_000);
    bucket.perMinute = perMinute;
    bucket.updatedAt = now;
  }

  #evict(now: number): void {
    if (this.#buckets.size < this.#maxBuckets) return;
    for (const [id, bucket] of this.#buckets) {
      this.#refill(bucket, now, bucket.perMinute);
      if (bucket.tokens >= bucket.perMinute) this.#buckets.delete(id);
    }
    // Still full of busy keys: forget the oldest; it restarts with a full bucket (errs towards allowing).
    for (const id of this.#buckets.keys()) {
      if (this.#buckets.size < this.#maxBuckets) break;
      this.#buckets.delete(id);
    }
  }
}

/** Throws QuotaExceededError when the key already owns its maximum of sandboxes; returns the counts. */
export async function checkSandboxQuota(
  store: Store,
  key: Pick<ApiKeyRecord, 'id' | 'limits'>,
): Promise<{ used: number; limit: number | null }> {
  const used = await store.countSandboxes(key.id);
  const limit = key.limits.maxSandboxes;
  if (limit !== null && used >= limit) throw new QuotaExceededError(key.id, used, limit);
  return { used, limit };
}

/**
 * Records `key` as the owner of a sandbox about to be created, checking the quota in the same transaction
 * so concurrent creates cannot overshoot it. Call before starting the sandbox; delete the row if it fails.
 */
export async function reserveSandbox(
  store: Store,
  key: Pick<ApiKeyRecord, 'id' | 'limits'>,
  sandbox: Omit<NewSandbox, 'ownerKeyId'>,
): Promise<SandboxRecord> {
  try {
    return await store.recordSandbox(
      { ...sandbox, ownerKeyId: key.id },
      { ownerLimit: key.limits.maxSandboxes },
    );
  } catch (error) {
    if (error instanceof StoreError && error.code === 'LIMIT_REACHED') {
      const limit = key.limits.maxSandboxes ?? 0;
      throw new QuotaExceededError(key.id, await store.countSandboxes(key.id), limit);
    }
    throw error;
  }
}
