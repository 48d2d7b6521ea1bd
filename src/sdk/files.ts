/** sandbox.files: run by the sandbox's agent, inside its view, with the sandbox user's rights. */
import { type HttpClient, seg } from './http.js';
import type { FileEntry } from './types.js';

export class Files {
  readonly #http: HttpClient;
  readonly #base: string;

  constructor(http: HttpClient, sandboxId: string) {
    this.#http = http;
    this.#base = `/v1/sandboxes/${seg(sandboxId)}/files`;
  }

  /** Writes a whole file (strings as UTF-8); missing parent directories are created. */
  async write(path: string, data: string | Uint8Array): Promise<{ path: string; bytes: number }> {
    const raw = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    return this.#http.json('PUT', this.#base, { query: { path }, raw });
  }

  async read(path: string): Promise<Uint8Array> {
    const res = await this.#http.request('GET', this.#base, {
      query: { path },
      accept: 'application/octet-stream',
    });
    return new Uint8Array(await res.arrayBuffer());
  }

  async readText(path: string): Promise<string> {
    return new TextDecoder().decode(await this.read(path));
  }

  /** Entries `depth` levels deep (default 1); symlinks are listed, never followed. */
  async list(path: string, options: { depth?: number } = {}): Promise<FileEntry[]> {
    const res = await this.#http.json<{ entries: FileEntry[] }>('GET', `${this.#base}/list`, {
      query: { path, depth: options.depth },
    });
    return res.entries;
  }

  /** Not following a final symlink; NotFoundError when absent. */
  async stat(path: string): Promise<FileEntry> {
    return this.#http.json('GET', `${this.#base}/stat`, { query: { path } });
  }

  /** Creates a directory, with its parents unless parents: false. */
  async makeDir(path: string, options: { parents?: boolean } = {}): Promise<void> {
    await this.#http.json('POST', `${this.#base}/mkdir`, {
      json: { path, ...(options.parents === undefined ? {} : { parents: options.parents }) },
    });
  }

  async rename(from: string, to: string): Promise<void> {
    await this.#http.json('POST', `${this.#base}/rename`, { json: { from, to } });
  }

  /** A non-empty directory needs recursive: true. */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.#http.json('DELETE', this.#base, { query: { path, recursive: options.recursive } });
  }
}
