/**
 * A sandbox's egress budget: requests per second (a token bucket, so short bursts pass) and total bytes over
 * the proxy's life. Each refusal says which budget ran out and how to raise it.
 */
export interface BudgetLimits {
  /** Sustained rate; bursts up to twice this (at least 1) pass at once. Infinity: no limit. */
  readonly requestsPerSecond: number;
  /** Bytes sandbox → world plus world → sandbox; Infinity: no limit. */
  readonly maxTotalBytes: number;
}

export type BudgetRefusal = { readonly rule: string; readonly reason: string };

export class EgressBudget {
  #tokens: number;
  #last: number;
  #bytes = 0;
  readonly #burst: number;

  constructor(
    readonly limits: BudgetLimits,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.#burst = Math.max(1, limits.requestsPerSecond * 2);
    this.#tokens = this.#burst;
    this.#last = now();
  }

  /** Take one request (or tunnel) from the bucket; a refusal when the rate or the byte budget is spent. */
  takeRequest(): BudgetRefusal | undefined {
    const spent = this.bytesExhausted();
    if (spent) return spent;
    if (!Number.isFinite(this.limits.requestsPerSecond)) return undefined;
    const t = this.now();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + ((t - this.#last) / 1000) * this.limits.requestsPerSecond,
    );
    this.#last = t;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return undefined;
    }
    return {
      rule: 'limit:requests-per-second',
      reason:
        `more than ${this.limits.requestsPerSecond} requests per second from this sandbox; wait and retry, or raise ` +
        'network.limits.requestsPerSecond',
    };
  }

  /** Count bytes moved; true while the budget still holds. */
  addBytes(n: number): boolean {
    this.#bytes += n;
    return this.#bytes <= this.limits.maxTotalBytes;
  }

  get bytes(): number {
    return this.#bytes;
  }

  bytesExhausted(): BudgetRefusal | undefined {
    if (this.#bytes <= this.limits.maxTotalBytes) return undefined;
    return {
      rule: 'limit:total-bytes',
      reason:
        `this sandbox has moved ${this.#bytes} bytes through the proxy, over its budget of ${this.limits.maxTotalBytes}; ` +
        'raise network.limits.maxTotalBytes to allow more',
    };
  }
}
