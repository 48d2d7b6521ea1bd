/** Installation-level operations that belong to no sandbox: the secret vault and API keys (admin keys). */
import { type ConnectionOptions, HttpClient, seg } from './http.js';
import type { CreatedKey, KeyInfo, KeyLimits, Scope, SecretInfo } from './types.js';

export interface CreateSecretOptions {
  name: string;
  /** Write-only: never returned by the server. */
  value: string;
  /** Hosts the value may be sent to. */
  hosts: string[];
  headers?: string[];
  paths?: string[];
  body?: boolean;
}

export interface CreateKeyOptions {
  name: string;
  scopes: Scope[];
  limits?: Partial<KeyLimits>;
}

export class IroncageClient {
  readonly #http: HttpClient;

  readonly secrets = {
    /** Creates or replaces a secret; sandboxes naming it in policy.network.secrets see a placeholder. */
    create: (secret: CreateSecretOptions): Promise<SecretInfo> =>
      this.#http.json('POST', '/v1/secrets', { json: secret }),
    /** Names and bindings, never values. */
    list: async (): Promise<SecretInfo[]> =>
      (await this.#http.json<{ secrets: SecretInfo[] }>('GET', '/v1/secrets')).secrets,
    delete: async (name: string): Promise<void> => {
      await this.#http.json('DELETE', `/v1/secrets/${seg(name)}`);
    },
  };

  readonly keys = {
    /** The plaintext key is in this response only. */
    create: (options: CreateKeyOptions): Promise<CreatedKey> =>
      this.#http.json('POST', '/v1/keys', { json: options }),
    list: async (options: { includeRevoked?: boolean } = {}): Promise<KeyInfo[]> =>
      (
        await this.#http.json<{ keys: KeyInfo[] }>('GET', '/v1/keys', {
          query: { includeRevoked: options.includeRevoked },
        })
      ).keys,
    /** Its sandboxes keep running until killed or expired. */
    revoke: (keyId: string): Promise<KeyInfo> => this.#http.json('DELETE', `/v1/keys/${seg(keyId)}`),
  };

  constructor(options: ConnectionOptions = {}) {
    this.#http = new HttpClient(options);
  }

  get apiUrl(): string {
    return this.#http.apiUrl;
  }

  /** Readiness of the server (store and sandbox manager). */
  async ready(): Promise<{ status: 'ready' | 'not-ready'; checks: Record<string, string> }> {
    const res = await this.#http.request('GET', '/ready');
    return (await res.json()) as { status: 'ready' | 'not-ready'; checks: Record<string, string> };
  }
}
