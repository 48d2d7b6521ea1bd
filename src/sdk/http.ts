/** The one place that talks HTTP: base URL, API key, query strings, JSON/raw bodies, error mapping, NDJSON. */
import { ConnectionError, errorForStatus, IroncageError } from './errors.js';

export const DEFAULT_API_URL = 'http://127.0.0.1:3000';

export interface ConnectionOptions {
  /** Default: the IRONCAGE_API_URL environment variable, else http://127.0.0.1:3000. */
  apiUrl?: string;
  /** Default: the IRONCAGE_API_KEY environment variable. */
  apiKey?: string;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
}

export type QueryValue = string | number | boolean | undefined;

export interface RequestOptions {
  query?: Record<string, QueryValue>;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as application/octet-stream. */
  raw?: Uint8Array;
  accept?: string;
  signal?: AbortSignal;
}

export class HttpClient {
  readonly apiUrl: string;
  readonly #apiKey: string;
  readonly #headers: Record<string, string>;

  constructor(options: ConnectionOptions = {}) {
    const url = options.apiUrl ?? process.env.IRONCAGE_API_URL ?? DEFAULT_API_URL;
    this.apiUrl = url.replace(/\/+$/, '');
    const key = options.apiKey ?? process.env.IRONCAGE_API_KEY;
    if (key === undefined || key === '') {
      throw new IroncageError({
        status: null,
        code: 'API_KEY_MISSING',
        message: 'no API key: pass apiKey or set IRONCAGE_API_KEY (the admin key is in <state>/admin-key)',
      });
    }
    this.#apiKey = key;
    this.#headers = { ...(options.headers ?? {}) };
  }

  /** The configured headers plus the key: for requests, and for connections made outside fetch (WebSockets). */
  headers(): Record<string, string> {
    return { ...this.#headers, authorization: `Bearer ${this.#apiKey}` };
  }

  /** Sends a request; a non-2xx answer is thrown as the matching typed error. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const url = this.#url(path, options.query);
    const headers: Record<string, string> = {
      ...this.headers(),
      accept: options.accept ?? 'application/json',
    };
    let body: string | Uint8Array | undefined;
    if (options.raw !== undefined) {
      body = options.raw;
      headers['content-type'] = 'application/octet-stream';
    } else if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers['content-type'] = 'application/json';
    }
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      throw new ConnectionError(url, err);
    }
    if (!res.ok) throw await responseError(res);
    return res;
  }

  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.request(method, path, options);
    try {
      return (await res.json()) as T;
    } catch (err) {
      throw new ConnectionError(this.#url(path, options.query), err);
    }
  }

  /**
   * Streams an application/x-ndjson response, one parsed object per line. Heartbeat lines (the server's
   * keep-alive during silence) are consumed here and never yielded.
   */
  async *ndjson<T>(method: string, path: string, options: RequestOptions = {}): AsyncGenerator<T> {
    const res = await this.request(method, path, { ...options, accept: 'application/x-ndjson' });
    if (res.body === null) return;
    const decoder = new TextDecoder();
    let pending = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        pending += decoder.decode(chunk, { stream: true });
        let newline = pending.indexOf('\n');
        while (newline !== -1) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          const parsed = parseLine(line);
          if (parsed !== undefined) yield parsed as T;
          newline = pending.indexOf('\n');
        }
      }
    } catch (err) {
      if (options.signal?.aborted || err instanceof SyntaxError) throw err;
      throw new ConnectionError(this.#url(path, options.query), err);
    }
    pending += decoder.decode();
    const last = parseLine(pending);
    if (last !== undefined) yield last as T;
  }

  #url(path: string, query: Record<string, QueryValue> | undefined): string {
    const url = new URL(`${this.apiUrl}${path}`);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }
}

/** One NDJSON line, or undefined for a blank line or a heartbeat. */
function parseLine(line: string): unknown {
  if (line.trim() === '') return undefined;
  const value = JSON.parse(line) as unknown;
  return isHeartbeat(value) ? undefined : value;
}

/** The server's keep-alive line during a silent stream: `{"type":"heartbeat"}`. */
export function isHeartbeat(value: unknown): boolean {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'heartbeat';
}

/** Path segment for an id or name: the server's patterns already exclude '/', this keeps odd input harmless. */
export function seg(value: string | number): string {
  return encodeURIComponent(String(value));
}

async function responseError(res: Response): Promise<IroncageError> {
  const requestId = res.headers.get('x-request-id');
  let code = `HTTP_${res.status}`;
  let message = `${res.status} ${res.statusText}`;
  try {
    const text = await res.text();
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed.error?.code === 'string') code = parsed.error.code;
    if (typeof parsed.error?.message === 'string') message = parsed.error.message;
  } catch {
    // Not the API's JSON error (a proxy in between, say): the status line is all there is.
  }
  const retryAfter = Number(res.headers.get('retry-after'));
  return errorForStatus({
    status: res.status,
    code,
    message,
    requestId,
    retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : null,
  });
}
