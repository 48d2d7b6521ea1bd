/** sandbox.network: the egress rules in force (changed live) and the egress audit log. */
import { type HttpClient, seg } from './http.js';
import type { EgressRules, NetworkEvents, NetworkView } from './types.js';

export class Network {
  readonly #http: HttpClient;
  readonly #base: string;

  constructor(http: HttpClient, sandboxId: string) {
    this.#http = http;
    this.#base = `/v1/sandboxes/${seg(sandboxId)}/network`;
  }

  async rules(): Promise<NetworkView> {
    return this.#http.json('GET', this.#base);
  }

  /** Adds rules to those in force (a union); returns the rules now in force. */
  async merge(patch: EgressRules): Promise<NetworkView> {
    return this.#http.json('PATCH', this.#base, { json: patch });
  }

  /** Replaces every rule: the way to remove one. */
  async replace(rules: EgressRules): Promise<NetworkView> {
    return this.#http.json('PUT', this.#base, { json: rules });
  }

  /** Egress audit records with seq >= since, oldest first; pass `next` as since to page on. */
  async events(options: { since?: number; limit?: number } = {}): Promise<NetworkEvents> {
    return this.#http.json('GET', `${this.#base}/events`, {
      query: { since: options.since, limit: options.limit },
    });
  }
}
