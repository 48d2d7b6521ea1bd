/**
 * sandbox.files: file operations executed by the agent INSIDE the sandbox's own view, with the sandbox user's
 * rights. Symlinks and `..` resolve there, so they can never reach a host path outside that view, whatever the
 * sandbox does to its files concurrently (the host never touches the workspace path-by-path for these).
 */
import { posix } from 'node:path';
import type { AgentClient, AgentDirEntry } from '../agent/client.js';

export type FileEntry = AgentDirEntry;
export type FileEvent = { type: 'create' | 'write' | 'remove' | 'rename' | 'chmod'; path: string };

export interface FilesHost {
  /** The live agent connection; throws SandboxStateError when paused or stopped. */
  client(operation: string): AgentClient;
  workdir: string;
  /** Throws WorkspaceQuotaError when a write of `bytes` more would exceed the workspace quota. */
  checkQuota(bytes: number): void;
}

export class Files {
  readonly #host: FilesHost;
  constructor(host: FilesHost) {
    this.#host = host;
  }

  /** Relative paths are relative to the policy's workdir (lexically; the agent resolves the rest inside). */
  #path(path: string): string {
    if (path.includes('\0')) throw new TypeError('path must not contain NUL bytes');
    return posix.resolve(this.#host.workdir, path);
  }

  read(path: string): Promise<string>;
  read(path: string, options: { format: 'bytes' }): Promise<Buffer>;
  read(path: string, options: { format: 'text' }): Promise<string>;
  async read(path: string, options: { format?: 'text' | 'bytes' } = {}): Promise<string | Buffer> {
    const data = await this.#host.client('read a file').readFile(this.#path(path));
    return options.format === 'bytes' ? data : data.toString('utf8');
  }

  async write(
    path: string,
    data: string | Uint8Array,
    options: { mode?: number; append?: boolean } = {},
  ): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    this.#host.checkQuota(bytes.byteLength);
    const client = this.#host.client('write a file');
    const target = this.#path(path);
    try {
      await client.writeFile(target, bytes, options);
    } catch (err) {
      // Like E2B, missing parent directories are created (inside the sandbox's view, as its user).
      if ((err as { errno?: string }).errno !== 'ENOENT') throw err;
      await client.mkdir(posix.dirname(target), { parents: true });
      await client.writeFile(target, bytes, options);
    }
  }

  list(path: string, options: { depth?: number } = {}): Promise<FileEntry[]> {
    return this.#host.client('list a directory').listDir(this.#path(path), options.depth ?? 1);
  }

  stat(path: string): Promise<FileEntry> {
    return this.#host.client('stat a file').stat(this.#path(path));
  }

  async exists(path: string): Promise<boolean> {
    try {
      await this.stat(path);
      return true;
    } catch (err) {
      if ((err as { errno?: string }).errno === 'ENOENT' || (err as { code?: string }).code === 'ENOENT')
        return false;
      throw err;
    }
  }

  makeDir(path: string, options: { parents?: boolean } = {}): Promise<void> {
    return this.#host
      .client('create a directory')
      .mkdir(this.#path(path), { parents: options.parents ?? true });
  }

  rename(from: string, to: string): Promise<void> {
    return this.#host.client('rename a file').rename(this.#path(from), this.#path(to));
  }

  remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    return this.#host.client('remove a file').remove(this.#path(path), options);
  }

  /** Calls onEvent for changes below `path` until stop() is called or the sandbox stops. */
  async watch(
    path: string,
    onEvent: (event: FileEvent) => void,
    options: { recursive?: boolean } = {},
  ): Promise<{ stop(): Promise<void> }> {
    const client = this.#host.client('watch a directory');
    const { watchId } = await client.watch(this.#path(path), options);
    const watches = watchesOf(client);
    watches.set(watchId, onEvent);
    return {
      stop: async () => {
        watches.delete(watchId);
        await client.unwatch(watchId).catch(() => {});
      },
    };
  }
}

/** One fs-event listener per agent connection, dispatching by watch id: many watches must not pile up listeners. */
const watchesByClient = new WeakMap<AgentClient, Map<number, (event: FileEvent) => void>>();

function watchesOf(client: AgentClient): Map<number, (event: FileEvent) => void> {
  let watches = watchesByClient.get(client);
  if (watches === undefined) {
    const created = new Map<number, (event: FileEvent) => void>();
    client.on('fs-event', (id: number, event: FileEvent) => created.get(id)?.(event));
    watchesByClient.set(client, created);
    watches = created;
  }
  return watches;
}
