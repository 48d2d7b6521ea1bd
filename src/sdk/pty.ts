/**
 * sandbox.pty: an interactive terminal in a sandbox over the server's WebSocket route
 * (GET /v1/sandboxes/:id/pty). Binary frames carry terminal bytes both ways; text frames carry JSON control
 * messages (resize and kill out; start, lost, error and exit in).
 *
 * The socket comes from the `ws` package when it can be loaded (Node has no WebSocket before 22, and only `ws`
 * reports the HTTP status of a refused handshake, which picks the typed error), else from globalThis.WebSocket
 * (Node 22's accepts the Authorization header as a non-standard option; a browser's cannot send it).
 */
import { ConnectionError, errorForStatus, IroncageError } from './errors.js';
import { seg } from './http.js';

export interface PtyCreateOptions {
  /** Terminal size (default 24 x 80). */
  rows?: number;
  cols?: number;
  /** argv, or a string run with /bin/sh -c. Default: a login shell (/bin/bash if present, else /bin/sh). */
  cmd?: string | readonly string[];
  cwd?: string;
  /** Extra environment (TERM defaults to xterm-256color). */
  env?: Record<string, string>;
  /** Terminal output, as raw bytes (a UTF-8 character may be split across calls). */
  onData?: (data: Uint8Array) => void;
  /** Errors the server reports during the session (a failed resize, a malformed message). */
  onError?: (error: IroncageError) => void;
  /** How long to wait for the terminal to start, ms (default 30 s). */
  timeoutMs?: number;
}

export interface PtyExit {
  /** Exit code when the process exited, else null. */
  exitCode: number | null;
  /** Signal name when a signal ended it, else null. */
  signal: string | null;
}

/** The terminal's connection ended before the process's exit was reported (close(), or a dropped socket). */
export class PtyClosedError extends IroncageError {
  override readonly name = 'PtyClosedError';
  /** The WebSocket close code. */
  readonly closeCode: number;

  constructor(closeCode: number, reason: string) {
    super({
      status: null,
      code: 'PTY_CLOSED',
      message: `the terminal connection closed (${closeCode}${reason === '' ? '' : ` ${reason}`}) before the process exited`,
    });
    this.closeCode = closeCode;
  }
}

/** Where and how to open the socket (the API key stays with the caller). */
export interface PtyTarget {
  apiUrl: string;
  headers(): Record<string, string>;
}

/** The subset of the WHATWG WebSocket both `ws` and the global one implement. */
interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: never) => void): void;
}

type SocketFactory = (url: string, headers: Record<string, string>) => SocketLike;
const OPEN = 1;
const DEFAULT_TIMEOUT_MS = 30_000;

type ServerMessage =
  | { type: 'start'; processId: number; pid: number }
  | { type: 'lost'; bytes: number }
  | { type: 'exit'; exitCode: number | null; signal: string | null }
  | { type: 'error'; code: string; message: string; status?: number };

let factory: Promise<SocketFactory> | null = null;

/** `ws` first (see the module comment), else the global WebSocket. */
function socketFactory(): Promise<SocketFactory> {
  factory ??= import('ws').then(
    (mod) => {
      const WsSocket = mod.WebSocket;
      return (url, headers) => {
        const socket = new WsSocket(url, { headers, maxPayload: 16 * 1024 * 1024 });
        // A refused handshake: the API's JSON error becomes the typed error (see rejectHandshake).
        socket.on('unexpected-response', (req, res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            socket.emit(
              'handshake-refused',
              res.statusCode ?? 0,
              Buffer.concat(chunks).toString('utf8'),
              res,
            );
            req.destroy();
          });
        });
        return socket as unknown as SocketLike;
      };
    },
    () => {
      const Global = (globalThis as { WebSocket?: new (url: string, init?: unknown) => SocketLike })
        .WebSocket;
      if (Global === undefined) {
        throw new IroncageError({
          status: null,
          code: 'WEBSOCKET_UNAVAILABLE',
          message: 'no WebSocket implementation: install the `ws` package (Node 20 has no global WebSocket)',
        });
      }
      return (url, headers) => new Global(url, { headers });
    },
  );
  return factory;
}

function handshakeError(status: number, body: string, requestId: string | null): IroncageError {
  let code = `HTTP_${status}`;
  let message = `the server refused the terminal (HTTP ${status})`;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed.error?.code === 'string') code = parsed.error.code;
    if (typeof parsed.error?.message === 'string') message = parsed.error.message;
  } catch {
    // Not the API's JSON error: the status is all there is.
  }
  return errorForStatus({ status, code, message, requestId });
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  return new Uint8Array(0);
}

export class PtyHandle {
  /** The server's process id (GET /v1/sandboxes/:id/processes lists it). */
  readonly processId: number;
  /** Pid inside the sandbox. */
  readonly pid: number;
  readonly #socket: SocketLike;
  readonly #exit: Promise<PtyExit>;

  /** @internal created by Pty.create. */
  constructor(socket: SocketLike, start: { processId: number; pid: number }, exit: Promise<PtyExit>) {
    this.#socket = socket;
    this.processId = start.processId;
    this.pid = start.pid;
    this.#exit = exit;
  }

  /** True until the connection closes. */
  get open(): boolean {
    return this.#socket.readyState === OPEN;
  }

  /** Keyboard input: bytes, or text sent as UTF-8. */
  write(data: string | Uint8Array): void {
    this.#send(typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }

  resize(rows: number, cols: number): void {
    this.#send(JSON.stringify({ type: 'resize', rows, cols }));
  }

  /** Signals the process (default SIGKILL); wait() then resolves with how it ended. */
  kill(signal: 'SIGHUP' | 'SIGINT' | 'SIGTERM' | 'SIGKILL' = 'SIGKILL'): void {
    this.#send(JSON.stringify({ type: 'kill', signal }));
  }

  /** Resolves when the process ends; rejects with PtyClosedError if the connection ends first. */
  wait(): Promise<PtyExit> {
    return this.#exit;
  }

  /** Closes the connection; the server kills the process. */
  close(): void {
    if (this.#socket.readyState <= OPEN) this.#socket.close(1000, 'closed by the client');
  }

  #send(data: string | Uint8Array): void {
    if (this.#socket.readyState !== OPEN) {
      throw new IroncageError({ status: null, code: 'PTY_CLOSED', message: 'the terminal is closed' });
    }
    this.#socket.send(data);
  }
}

export class Pty {
  readonly #target: PtyTarget;
  readonly #sandboxId: string;

  /** @internal use sandbox.pty. */
  constructor(target: PtyTarget, sandboxId: string) {
    this.#target = target;
    this.#sandboxId = sandboxId;
  }

  /** Starts a process on a new terminal; resolves once it runs (typed errors when it cannot start). */
  async create(options: PtyCreateOptions = {}): Promise<PtyHandle> {
    const url = new URL(`${this.#target.apiUrl}/v1/sandboxes/${seg(this.#sandboxId)}/pty`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (options.rows !== undefined) url.searchParams.set('rows', String(options.rows));
    if (options.cols !== undefined) url.searchParams.set('cols', String(options.cols));
    if (options.cmd !== undefined) {
      const argv = typeof options.cmd === 'string' ? ['/bin/sh', '-c', options.cmd] : options.cmd;
      url.searchParams.set('cmd', JSON.stringify(argv));
    }
    if (options.cwd !== undefined) url.searchParams.set('cwd', options.cwd);
    if (options.env !== undefined) url.searchParams.set('env', JSON.stringify(options.env));
    const target = url.toString();

    const socket = (await socketFactory())(target, this.#target.headers());
    socket.binaryType = 'arraybuffer';

    let started: { processId: number; pid: number } | null = null;
    let exit: PtyExit | null = null;
    let lastError: IroncageError | null = null;
    let settleStart: { resolve(start: { processId: number; pid: number }): void; reject(err: Error): void };
    const start = new Promise<{ processId: number; pid: number }>((resolve, reject) => {
      settleStart = { resolve, reject };
    });
    let settleExit: { resolve(exit: PtyExit): void; reject(err: Error): void };
    const exitPromise = new Promise<PtyExit>((resolve, reject) => {
      settleExit = { resolve, reject };
    });
    // Nobody may ever wait(): an unobserved rejection must not crash the caller's process.
    exitPromise.catch(() => {});

    const timer = setTimeout(() => {
      settleStart.reject(
        new IroncageError({
          status: null,
          code: 'PTY_START_TIMEOUT',
          message: `the terminal did not start within ${options.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`,
        }),
      );
      socket.close(1000, 'start timeout');
    }, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);

    (socket as unknown as { on?(event: string, listener: (...args: never[]) => void): void }).on?.(
      'handshake-refused',
      (status: number, body: string, res: { headers: Record<string, unknown> }) => {
        const requestId =
          typeof res.headers['x-request-id'] === 'string' ? res.headers['x-request-id'] : null;
        settleStart.reject(handshakeError(status, body, requestId));
      },
    );
    socket.addEventListener('message', (event: { data: unknown }) => {
      if (typeof event.data !== 'string') {
        options.onData?.(toBytes(event.data));
        return;
      }
      let message: ServerMessage;
      try {
        message = JSON.parse(event.data) as ServerMessage;
      } catch {
        return;
      }
      if (message.type === 'start') {
        started = { processId: message.processId, pid: message.pid };
        settleStart.resolve(started);
      } else if (message.type === 'exit') {
        exit = { exitCode: message.exitCode, signal: message.signal };
      } else if (message.type === 'error') {
        const err = errorForStatus({
          status: message.status ?? null,
          code: message.code,
          message: message.message,
        });
        lastError = err;
        if (started === null) settleStart.reject(err);
        else options.onError?.(err);
      }
    });
    socket.addEventListener('error', (event: { error?: unknown; message?: string }) => {
      settleStart.reject(
        new ConnectionError(target, event.error ?? new Error(event.message ?? 'WebSocket error')),
      );
    });
    socket.addEventListener('close', (event: { code: number; reason: string }) => {
      clearTimeout(timer);
      settleStart.reject(lastError ?? new PtyClosedError(event.code, event.reason));
      if (exit !== null) settleExit.resolve(exit);
      else settleExit.reject(lastError ?? new PtyClosedError(event.code, event.reason));
    });

    try {
      const info = await start;
      clearTimeout(timer);
      return new PtyHandle(socket, info, exitPromise);
    } catch (err) {
      clearTimeout(timer);
      if (socket.readyState <= OPEN) socket.close(1000, 'start failed');
      throw err;
    }
  }
}
