/** A sandbox on an ironcage server, E2B-style: Sandbox.create / connect / list, then commands, files, network. */
import { Commands } from './commands.js';
import { NotFoundError } from './errors.js';
import { Files } from './files.js';
import { type ConnectionOptions, HttpClient, seg } from './http.js';
import { Network } from './network.js';
import { Pty } from './pty.js';
import type { SandboxInfo, SandboxPage, SnapshotInfo } from './types.js';

export interface SandboxCreateOptions extends ConnectionOptions {
  /** 'default' or 'strict' (the server's presets); default 'default'. */
  preset?: string;
  /** Layered on the preset; see docs/policy.md (tenant keys may not bind host paths or open private addresses). */
  policy?: Record<string, unknown>;
  /** TTL in ms (server default 5 minutes); null for none. */
  timeoutMs?: number | null;
  /** Environment variables of every command in the sandbox. */
  env?: Record<string, string>;
  /** Free key/value labels; Sandbox.list filters on them. */
  metadata?: Record<string, string>;
}

export interface SandboxListOptions extends ConnectionOptions {
  /** Only sandboxes whose metadata has all these entries. */
  metadata?: Record<string, string>;
  /** Page size (1-1000). */
  limit?: number;
  /** `next` of the previous page. */
  cursor?: string;
}

export class Sandbox implements AsyncDisposable {
  readonly id: string;
  readonly commands: Commands;
  readonly files: Files;
  readonly network: Network;
  /** Interactive terminals (WebSocket). */
  readonly pty: Pty;
  readonly #http: HttpClient;
  readonly #base: string;

  /** Use Sandbox.create or Sandbox.connect. */
  protected constructor(http: HttpClient, id: string) {
    this.#http = http;
    this.id = id;
    this.#base = `/v1/sandboxes/${seg(id)}`;
    this.commands = new Commands(http, id);
    this.files = new Files(http, id);
    this.network = new Network(http, id);
    this.pty = new Pty(http, id);
  }

  /** Creates a sandbox and resolves once it is ready. */
  static async create(options: SandboxCreateOptions = {}): Promise<Sandbox> {
    const http = new HttpClient(options);
    const { preset, policy, timeoutMs, env, metadata } = options;
    const info = await http.json<SandboxInfo>('POST', '/v1/sandboxes', {
      json: {
        ...(preset === undefined ? {} : { preset }),
        ...(policy === undefined ? {} : { policy }),
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
        ...(env === undefined ? {} : { env }),
        ...(metadata === undefined ? {} : { metadata }),
      },
    });
    return new Sandbox(http, info.id);
  }

  /** A sandbox that already exists (checked: NotFoundError when it does not, or is not this key's). */
  static async connect(id: string, options: ConnectionOptions = {}): Promise<Sandbox> {
    const http = new HttpClient(options);
    const info = await http.json<SandboxInfo>('GET', `/v1/sandboxes/${seg(id)}`);
    return new Sandbox(http, info.id);
  }

  /** One page of the key's sandboxes (every tenant's for an admin key). */
  static async list(options: SandboxListOptions = {}): Promise<SandboxPage> {
    const http = new HttpClient(options);
    return http.json<SandboxPage>('GET', '/v1/sandboxes', { query: listQuery(options) });
  }

  /** Every matching sandbox, fetching pages as the loop goes. */
  static async *listAll(options: Omit<SandboxListOptions, 'cursor'> = {}): AsyncGenerator<SandboxInfo> {
    const http = new HttpClient(options);
    let cursor: string | undefined;
    do {
      const page = await http.json<SandboxPage>('GET', '/v1/sandboxes', {
        query: listQuery({ ...options, ...(cursor === undefined ? {} : { cursor }) }),
      });
      yield* page.items;
      cursor = page.next ?? undefined;
    } while (cursor !== undefined);
  }

  async info(): Promise<SandboxInfo> {
    return this.#http.json('GET', this.#base);
  }

  /** Sets the TTL to ms from now; null removes it. */
  async setTimeout(ms: number | null): Promise<SandboxInfo> {
    return this.#http.json('POST', `${this.#base}/timeout`, { json: { timeoutMs: ms } });
  }

  /** Freezes every process (ConflictError when the host has no freezer: see info().canPause). */
  async pause(): Promise<SandboxInfo> {
    return this.#http.json('POST', `${this.#base}/pause`, { json: {} });
  }

  async resume(options: { timeoutMs?: number } = {}): Promise<SandboxInfo> {
    return this.#http.json('POST', `${this.#base}/resume`, { json: options });
  }

  /** Checkpoints the workspace under a name. */
  async snapshot(name: string): Promise<SnapshotInfo> {
    return this.#http.json('POST', `${this.#base}/snapshots`, { json: { name } });
  }

  async snapshots(): Promise<SnapshotInfo[]> {
    return (await this.#http.json<{ snapshots: SnapshotInfo[] }>('GET', `${this.#base}/snapshots`)).snapshots;
  }

  /** Rolls the workspace back to a snapshot. */
  async restore(name: string): Promise<SandboxInfo> {
    return this.#http.json('POST', `${this.#base}/snapshots/${seg(name)}/restore`, { json: {} });
  }

  async deleteSnapshot(name: string): Promise<void> {
    await this.#http.json('DELETE', `${this.#base}/snapshots/${seg(name)}`);
  }

  /** Kills the sandbox (processes, workspace, snapshots). False when it was already gone. */
  async kill(): Promise<boolean> {
    try {
      await this.#http.json('DELETE', this.#base);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  /** `await using sandbox = await Sandbox.create()` kills it at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

function listQuery(options: SandboxListOptions): Record<string, string | number | undefined> {
  const query: Record<string, string | number | undefined> = { limit: options.limit, cursor: options.cursor };
  for (const [key, value] of Object.entries(options.metadata ?? {})) query[`metadata.${key}`] = value;
  return query;
}
