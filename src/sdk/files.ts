/** sandbox.files: run by the sandbox's agent, inside its view, with the sandbox user's rights. */
import { IroncageError } from './errors.js';
import { type HttpClient, seg } from './http.js';
import type { FileEntry, FileWatchEvent } from './types.js';

export interface WatchDirOptions {
  /** Also watch subdirectories, including ones created later (default false). */
  recursive?: boolean;
  /** Aborting stops the watch, like stop(). */
  signal?: AbortSignal;
  /** Called once when the watch ends: null after stop() or the signal, else what ended it. */
  onExit?: (error: IroncageError | null) => void;
}

type WatchLine =
  | { type: 'start'; path: string }
  | ({ type: 'event' } & FileWatchEvent)
  | { type: 'error'; code: string; message: string };

/** A running directory watch (files.watchDir). */
export class WatchHandle {
  readonly #stop: () => void;
  /** The watched directory, absolute inside the sandbox. */
  readonly path: string;
  /** Resolves when the watch ends: null after stop(), else the error that ended it (sandbox stopped...). */
  readonly ended: Promise<IroncageError | null>;

  /** @internal files.watchDir() creates it. */
  constructor(path: string, stop: () => void, ended: Promise<IroncageError | null>) {
    this.path = path;
    this.#stop = stop;
    this.ended = ended;
  }

  /** Stops watching (the server removes the watch when the stream closes). Resolves once the stream ended. */
  async stop(): Promise<void> {
    this.#stop();
    await this.ended;
  }
}

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

  /**
   * Calls onEvent for every change below the directory `path` until stop(), the signal, or the sandbox's end.
   * Resolves once the watch is in place (changes made after that are reported); a missing path is a
   * NotFoundError, a file a ValidationError.
   */
  async watchDir(
    path: string,
    onEvent: (event: FileWatchEvent) => void,
    options: WatchDirOptions = {},
  ): Promise<WatchHandle> {
    const abort = new AbortController();
    const outer = options.signal;
    const forward = () => abort.abort(outer?.reason);
    if (outer?.aborted) forward();
    outer?.addEventListener('abort', forward, { once: true });
    const lines = this.#http
      .ndjson<WatchLine>('GET', `${this.#base}/watch`, {
        query: { path, recursive: options.recursive },
        signal: abort.signal,
      })
      [Symbol.asyncIterator]();
    let first: IteratorResult<WatchLine>;
    try {
      first = await lines.next();
    } catch (err) {
      outer?.removeEventListener('abort', forward);
      throw err;
    }
    if (first.done || first.value.type !== 'start') {
      outer?.removeEventListener('abort', forward);
      abort.abort();
      throw first.done || first.value.type !== 'error'
        ? new IroncageError({
            status: null,
            code: 'STREAM_ENDED',
            message: 'the watch stream ended before it started; the connection broke or the server stopped',
          })
        : new IroncageError({ status: null, code: first.value.code, message: first.value.message });
    }
    const ended = (async (): Promise<IroncageError | null> => {
      try {
        for (;;) {
          const next = await lines.next();
          if (next.done) break;
          const line = next.value;
          if (line.type === 'event') onEvent({ kind: line.kind, name: line.name, path: line.path });
          else if (line.type === 'error') {
            return new IroncageError({ status: null, code: line.code, message: line.message });
          }
          // Other line types (heartbeats) carry nothing for the caller.
        }
        if (abort.signal.aborted) return null;
        return new IroncageError({
          status: null,
          code: 'STREAM_ENDED',
          message: 'the watch stream ended; the connection broke or the server stopped',
        });
      } catch (err) {
        if (abort.signal.aborted) return null;
        return err instanceof IroncageError
          ? err
          : new IroncageError({ status: null, code: 'WATCH_FAILED', message: String(err), cause: err });
      } finally {
        outer?.removeEventListener('abort', forward);
        abort.abort();
      }
    })().then((error) => {
      options.onExit?.(error);
      return error;
    });
    return new WatchHandle(first.value.path, () => abort.abort(), ended);
  }
}
