/** sandbox.commands: foreground runs (streamed), background processes, stdin, signals, output replay. */
import { IroncageError, NotFoundError } from './errors.js';
import { type HttpClient, seg } from './http.js';
import type { CommandResult, ProcessInfo } from './types.js';

export interface RunOptions {
  /** Extra environment variables for this command. */
  env?: Record<string, string>;
  cwd?: string;
  /** Foreground default: the policy's limits.wallTimeMs; background: none. */
  timeoutMs?: number;
  /** Text written to stdin and then closed; `true` (background only) keeps stdin open for sendStdin. */
  stdin?: string | boolean;
  /** Free text shown in commands.list(). */
  tag?: string;
  /** Output as it arrives, decoded as UTF-8. */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  /** Aborting a foreground run disconnects, and the server kills the command. */
  signal?: AbortSignal;
}

export interface OutputOptions {
  /** Replay from this byte offset of each stream (default 0: everything the sandbox still holds). */
  fromOffset?: number;
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  /** Aborting stops following (the process keeps running). */
  signal?: AbortSignal;
}

/** What output() and wait() return: the exit plus the output seen on this attachment. */
export interface ProcessResult extends Omit<CommandResult, 'id' | 'pid'> {
  /** Bytes the sandbox no longer held when replaying (its buffer is bounded), per stream. */
  lost: { stdout: number; stderr: number };
}

type NdjsonLine =
  | { type: 'start'; id: number; pid: number }
  | { type: 'stdout' | 'stderr'; data: string }
  | { type: 'lost'; stdout: number; stderr: number }
  | {
      type: 'exit';
      exitCode: number | null;
      signal: string | null;
      timedOut?: boolean;
      truncated?: boolean;
      cpuMs?: number | null;
      maxRssKb?: number | null;
    }
  | { type: 'error'; code: string; message: string };

/** Folds an NDJSON output stream into a result, calling the callbacks on the way. */
async function consume(
  lines: AsyncIterable<NdjsonLine>,
  callbacks: { onStdout?: (data: string) => void; onStderr?: (data: string) => void },
  onStart?: (id: number, pid: number) => void,
): Promise<ProcessResult> {
  // One decoder per stream: a UTF-8 character may be split across chunks.
  const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  const text = { stdout: '', stderr: '' };
  const lost = { stdout: 0, stderr: 0 };
  const deliver = (stream: 'stdout' | 'stderr', data: string) => {
    if (data === '') return;
    text[stream] += data;
    const callback = stream === 'stdout' ? callbacks.onStdout : callbacks.onStderr;
    callback?.(data);
  };
  for await (const line of lines) {
    switch (line.type) {
      case 'start':
        onStart?.(line.id, line.pid);
        break;
      case 'stdout':
      case 'stderr':
        deliver(line.type, decoders[line.type].decode(Buffer.from(line.data, 'base64'), { stream: true }));
        break;
      case 'lost':
        lost.stdout += line.stdout;
        lost.stderr += line.stderr;
        break;
      case 'error':
        throw new IroncageError({ status: null, code: line.code, message: line.message });
      case 'exit':
        deliver('stdout', decoders.stdout.decode());
        deliver('stderr', decoders.stderr.decode());
        return {
          exitCode: line.exitCode,
          signal: line.signal,
          stdout: text.stdout,
          stderr: text.stderr,
          timedOut: line.timedOut ?? false,
          truncated: line.truncated ?? false,
          cpuMs: line.cpuMs ?? null,
          maxRssKb: line.maxRssKb ?? null,
          lost,
        };
    }
  }
  throw new IroncageError({
    status: null,
    code: 'STREAM_ENDED',
    message: 'the output stream ended before the exit line; the connection broke or the server stopped',
  });
}

/** A background process: survives this client; reattach with sandbox.commands.connect(id). */
export class CommandHandle {
  readonly #http: HttpClient;
  readonly #base: string;

  constructor(
    http: HttpClient,
    sandboxId: string,
    /** Process id (stable for the sandbox's life). */
    readonly id: number,
    /** Pid inside the sandbox. */
    readonly pid: number,
    readonly argv: readonly string[],
  ) {
    this.#http = http;
    this.#base = `/v1/sandboxes/${seg(sandboxId)}/processes/${seg(id)}`;
  }

  /** Signals the process group (default SIGKILL). */
  async kill(signal?: string | number): Promise<void> {
    await this.#http.json('POST', `${this.#base}/kill`, { json: signal === undefined ? {} : { signal } });
  }

  /** Writes to stdin (the process must have been started with stdin: true); eof closes it after. */
  async sendStdin(data: string | Uint8Array, options: { eof?: boolean } = {}): Promise<{ bytes: number }> {
    const raw = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    const res = await this.#http.json<{ bytes: number }>('POST', `${this.#base}/stdin`, {
      raw,
      ...(options.eof ? { query: { eof: true } } : {}),
    });
    return { bytes: res.bytes };
  }

  async closeStdin(): Promise<void> {
    await this.sendStdin(new Uint8Array(0), { eof: true });
  }

  /** Replays the output from fromOffset, then follows it live until the process exits. */
  output(options: OutputOptions = {}): Promise<ProcessResult> {
    const lines = this.#http.ndjson<NdjsonLine>('GET', `${this.#base}/output`, {
      query: { fromOffset: options.fromOffset },
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    return consume(lines, options);
  }

  /** Waits for the exit; the result carries the whole output the sandbox still holds. */
  wait(): Promise<ProcessResult> {
    return this.output();
  }
}

export class Commands {
  readonly #http: HttpClient;
  readonly #sandboxId: string;

  constructor(http: HttpClient, sandboxId: string) {
    this.#http = http;
    this.#sandboxId = sandboxId;
  }

  /**
   * Runs a command: a string goes through /bin/sh -c, an array is argv without a shell. Foreground runs resolve
   * with the result whatever the exit code; `background: true` resolves with a handle as soon as it started.
   */
  run(
    command: string | readonly string[],
    options: RunOptions & { background: true },
  ): Promise<CommandHandle>;
  run(
    command: string | readonly string[],
    options?: RunOptions & { background?: false },
  ): Promise<CommandResult>;
  async run(
    command: string | readonly string[],
    options: RunOptions & { background?: boolean } = {},
  ): Promise<CommandResult | CommandHandle> {
    const body = {
      ...(typeof command === 'string' ? { cmd: command } : { argv: [...command] }),
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.stdin === undefined ? {} : { stdin: options.stdin }),
      ...(options.tag === undefined ? {} : { tag: options.tag }),
      ...(options.background ? { background: true } : {}),
    };
    const path = `/v1/sandboxes/${seg(this.#sandboxId)}/commands`;
    const signal = options.signal === undefined ? {} : { signal: options.signal };
    if (options.background) {
      const started = await this.#http.json<{ id: number; pid: number; argv: string[] }>('POST', path, {
        json: body,
        ...signal,
      });
      return new CommandHandle(this.#http, this.#sandboxId, started.id, started.pid, started.argv);
    }
    // Always the NDJSON stream: its headers arrive at once, so a long command never meets fetch's
    // headers timeout, and callbacks see output as it happens.
    let id = -1;
    let pid = -1;
    const result = await consume(
      this.#http.ndjson<NdjsonLine>('POST', path, { json: body, ...signal }),
      options,
      (i, p) => {
        id = i;
        pid = p;
      },
    );
    const { lost: _lost, ...rest } = result;
    return { id, pid, ...rest };
  }

  /** Processes the sandbox knows: running ones and ended ones it still remembers. */
  async list(): Promise<ProcessInfo[]> {
    const res = await this.#http.json<{ processes: ProcessInfo[] }>(
      'GET',
      `/v1/sandboxes/${seg(this.#sandboxId)}/processes`,
    );
    return res.processes;
  }

  /** A handle on a process started earlier (by this client or another one). */
  async connect(processId: number): Promise<CommandHandle> {
    const found = (await this.list()).find((p) => p.id === processId);
    if (found === undefined) {
      throw new NotFoundError({
        status: 404,
        code: 'PROCESS_NOT_FOUND',
        message: `process ${processId} not found in sandbox ${this.#sandboxId}; list them with commands.list()`,
      });
    }
    return new CommandHandle(this.#http, this.#sandboxId, found.id, found.pid, found.argv);
  }
}
