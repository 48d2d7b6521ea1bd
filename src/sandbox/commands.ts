/**
 * sandbox.commands: processes inside a warm sandbox, started by its agent. Foreground runs resolve with the
 * result; background runs return a ProcessHandle that can be waited for, signalled, written to and re-attached
 * later with output replayed from an offset (the agent keeps a bounded ring per stream, so a re-attaching host
 * gets what it missed, or learns how many bytes fell out of the ring).
 */
import { StringDecoder } from 'node:string_decoder';
import type { AgentClient, AgentExecEvent, AgentExit, AgentProcessInfo } from '../agent/client.js';

export type Stream = 'stdout' | 'stderr';

export interface CommandResult {
  /** Exit code when the process exited, else null. */
  exitCode: number | null;
  /** Signal name when a signal ended it (SIGKILL after a timeout), else null. */
  signal: string | null;
  stdout: string;
  stderr: string;
  /** The run's timeoutMs elapsed and the process was killed. */
  timedOut: boolean;
  /** Output beyond the policy's limits.outputBytes was not kept in stdout/stderr (callbacks saw all of it). */
  truncated: boolean;
  cpuMs: number | null;
  maxRssKb: number | null;
}

export interface RunOptions {
  /** Added to the sandbox's environment (policy env, then create-time env, then this). */
  env?: Record<string, string>;
  /** Working directory inside the sandbox (default: the policy's workdir). */
  cwd?: string;
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  /** Kill the process after this long. Foreground default: the policy's limits.wallTimeMs; background: none. */
  timeoutMs?: number;
  /** Bytes for stdin (then closed), or true to keep stdin open for sendStdin(). Default: empty stdin. */
  stdin?: boolean | string | Uint8Array;
  /** Run on a pseudo-terminal of this size (output then arrives as stdout). */
  pty?: { rows: number; cols: number };
  /** Free-form label shown by commands.list(). */
  tag?: string;
  /**
   * Bytes of each stream kept for the result (at most, and by default, the policy's limits.outputBytes). 0 keeps
   * none, for long-lived processes read through onStdout/onStderr only; the result is then marked truncated.
   */
  keepBytes?: number;
  /**
   * Kernel Landlock rules for this command and its children: with any, no path but these (`ro`: read, list,
   * execute; `rw`: everything beneath) is reachable, on top of the sandbox's own view. Needs Landlock.
   */
  landlock?: { path: string; access: 'ro' | 'rw' }[];
  /**
   * Audit every program this command and its descendants start (seccomp user notification in the agent): each
   * is passed to onExec until the command itself exits. An audit trail; the sandbox's layers stay the boundary.
   */
  auditExec?: boolean;
  onExec?: (event: AgentExecEvent) => void;
}

export interface AttachOptions {
  /** Byte offsets (since the process started) to replay from; a number applies to both streams. Default 0. */
  fromOffset?: number | { stdout?: number; stderr?: number };
  onStdout?: (data: Buffer) => void;
  onStderr?: (data: Buffer) => void;
}

export interface Attachment {
  /** Bytes that had fallen out of the agent's ring and could not be replayed, per stream. */
  lost: { stdout: number; stderr: number };
  detach(): void;
}

export interface CommandsHost {
  client(operation: string): AgentClient;
  /** Environment laid over the policy's (which the agent has): create-time env + `extra`. */
  environment(extra: Record<string, string> | undefined): Record<string, string>;
  workdir: string;
  /** rlimits for every command (NAME=SOFT:HARD). */
  rlimits: string[];
  defaultTimeoutMs: number;
  outputLimit: number;
}

type Chunk = { stream: Stream; data: Buffer; offset: number };
type Listener = (chunk: Chunk) => void;

/** What the manager tracks per process. Offsets count bytes since the process started, as the agent does. */
class Tracked {
  exit: AgentExit | null = null;
  readonly offsets = { stdout: 0, stderr: 0 };
  /**
   * True while every byte since the process started reached this manager live over the current agent
   * connection (gaps arrive as output-lost jumps of `offsets`): then a replay from at or past `offsets` has
   * nothing to return, and attach() skips those round trips. Set for processes run() started; cleared when the
   * connection is replaced (output during the gap was not heard).
   */
  heardAll = false;
  readonly listeners = new Set<Listener>();
  readonly #waiters: ((exit: AgentExit) => void)[] = [];
  constructor(
    readonly id: number,
    readonly pid: number,
    readonly argv: readonly string[],
    readonly tag: string,
  ) {}

  output(stream: Stream, data: Buffer): void {
    const at = this.offsets[stream];
    this.offsets[stream] = at + data.length;
    for (const listener of this.listeners) listener({ stream, data, offset: at });
  }

  exited(exit: AgentExit): void {
    this.exit = exit;
    for (const resolve of this.#waiters.splice(0)) resolve(exit);
  }

  waitExit(): Promise<AgentExit> {
    if (this.exit !== null) return Promise.resolve(this.exit);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** Bounded accumulation of a stream for the final result. */
class Collector {
  text = '';
  truncated = false;
  readonly #decoder = new StringDecoder('utf8');
  #bytes = 0;
  constructor(
    readonly limit: number,
    readonly onText: ((data: string) => void) | undefined,
  ) {}
  push(data: Buffer): void {
    const text = this.#decoder.write(data);
    this.onText?.(text);
    if (this.#bytes + data.length > this.limit) this.truncated = true;
    else this.text += text;
    this.#bytes += data.length;
  }
  end(): void {
    const rest = this.#decoder.end();
    if (rest !== '') {
      this.onText?.(rest);
      if (!this.truncated) this.text += rest;
    }
  }
}

function toResult(exit: AgentExit, out: Collector, err: Collector, timedOut: boolean): CommandResult {
  out.end();
  err.end();
  return {
    exitCode: exit.kind === 'exit' ? exit.code : null,
    signal: exit.kind === 'signal' ? exit.signal : null,
    stdout: out.text,
    stderr: err.text,
    timedOut,
    truncated: out.truncated || err.truncated,
    cpuMs: exit.cpuUs === undefined ? null : exit.cpuUs / 1000,
    maxRssKb: exit.maxRssKb ?? null,
  };
}

export class ProcessHandle {
  readonly #commands: Commands;
  readonly #tracked: Tracked;
  readonly #result: Promise<CommandResult>;

  /** @internal created by Commands. */
  constructor(commands: Commands, tracked: Tracked, result: Promise<CommandResult>) {
    this.#commands = commands;
    this.#tracked = tracked;
    this.#result = result;
  }

  /** The agent's process id (stable for the sandbox's life). */
  get id(): number {
    return this.#tracked.id;
  }
  /** Pid inside the sandbox's PID namespace. */
  get pid(): number {
    return this.#tracked.pid;
  }
  get argv(): readonly string[] {
    return this.#tracked.argv;
  }
  /** Bytes of each stream produced so far, as far as this manager has seen. */
  get offsets(): { stdout: number; stderr: number } {
    return { ...this.#tracked.offsets };
  }

  /** Resolves when the process ends (it never rejects because of a non-zero exit). */
  wait(): Promise<CommandResult> {
    return this.#result;
  }

  async kill(signal: NodeJS.Signals | number = 'SIGKILL'): Promise<void> {
    if (this.#tracked.exit !== null) return;
    await this.#commands.client('signal a process').signal(this.id, signal);
  }

  sendStdin(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    return this.#commands.client('write to a process').writeStdin(this.id, bytes);
  }

  closeStdin(): Promise<void> {
    return this.#commands.client('close stdin').closeStdin(this.id);
  }

  resize(rows: number, cols: number): Promise<void> {
    return this.#commands.client('resize a terminal').resize(this.id, rows, cols);
  }

  /** Replays output from `fromOffset`, then streams live output until detach(). No byte is delivered twice. */
  attach(options: AttachOptions = {}): Promise<Attachment> {
    return this.#commands.attach(this.#tracked, options);
  }
}

export class Commands {
  readonly #host: CommandsHost;
  readonly #tracked = new Map<number, Tracked>();
  /** Events for ids whose spawn reply has not been processed yet (the agent may answer and emit in one read). */
  readonly #early = new Map<number, (() => void)[]>();
  #client: AgentClient | null = null;

  constructor(host: CommandsHost) {
    this.#host = host;
  }

  /** @internal the agent connection's output for every process comes through here. */
  bind(client: AgentClient): void {
    this.#client?.off('output', this.#onOutput).off('exit', this.#onExit).off('output-lost', this.#onLost);
    for (const tracked of this.#tracked.values()) tracked.heardAll = false;
    this.#client = client;
    client.on('output', this.#onOutput).on('exit', this.#onExit).on('output-lost', this.#onLost);
  }

  /** @internal */
  client(operation: string): AgentClient {
    return this.#host.client(operation);
  }

  readonly #onOutput = (id: number, stream: Stream, data: Buffer) => {
    const tracked = this.#tracked.get(id);
    if (tracked !== undefined) tracked.output(stream, data);
    else this.#defer(id, () => this.#tracked.get(id)?.output(stream, data));
  };

  /** The agent skipped live output to us (we fell far behind): our offsets jump; attach() replays the gap. */
  readonly #onLost = (id: number, stream: Stream, _expected: number, offset: number) => {
    const tracked = this.#tracked.get(id);
    if (tracked !== undefined) tracked.offsets[stream] = Math.max(tracked.offsets[stream], offset);
  };

  readonly #onExit = (id: number, exit: AgentExit) => {
    const tracked = this.#tracked.get(id);
    if (tracked !== undefined) tracked.exited(exit);
    else this.#defer(id, () => this.#tracked.get(id)?.exited(exit));
  };

  #defer(id: number, event: () => void): void {
    let queue = this.#early.get(id);
    if (queue === undefined) {
      queue = [];
      this.#early.set(id, queue);
      // Unclaimed events (a process this manager did not start) are dropped soon; replay has them.
      setTimeout(() => this.#early.delete(id), 5_000).unref();
    }
    if (queue.length < 10_000) queue.push(event);
  }

  /** `listener` is added before the early events are replayed, so it also sees output that beat the reply. */
  #track(id: number, pid: number, argv: readonly string[], tag: string, listener?: Listener): Tracked {
    const tracked = new Tracked(id, pid, argv, tag);
    if (listener !== undefined) tracked.listeners.add(listener);
    this.#tracked.set(id, tracked);
    const early = this.#early.get(id);
    this.#early.delete(id);
    for (const event of early ?? []) event();
    return tracked;
  }

  run(
    command: string | readonly string[],
    options: RunOptions & { background: true },
  ): Promise<ProcessHandle>;
  run(
    command: string | readonly string[],
    options?: RunOptions & { background?: false },
  ): Promise<CommandResult>;
  async run(
    command: string | readonly string[],
    options: RunOptions & { background?: boolean } = {},
  ): Promise<CommandResult | ProcessHandle> {
    const argv = typeof command === 'string' ? ['/bin/sh', '-c', command] : [...command];
    if (argv.length === 0) throw new TypeError('no command given');
    const client = this.#host.client('run a command');
    const keepStdin = options.stdin === true;
    const stdinData =
      typeof options.stdin === 'string' || options.stdin instanceof Uint8Array ? options.stdin : null;
    // Listen before spawning: the agent reports the command's own exec right after its spawn reply.
    const onExec = options.onExec;
    let execId = -1;
    const early: [number, AgentExecEvent][] = [];
    const execListener = (procId: number, event: AgentExecEvent) => {
      if (execId < 0) early.push([procId, event]);
      else if (procId === execId) onExec?.(event);
    };
    const auditExec = options.auditExec === true;
    if (auditExec && onExec !== undefined) client.on('exec', execListener);
    const { id, pid } = await client
      .spawn({
        argv,
        env: this.#host.environment(options.env),
        cwd: options.cwd ?? this.#host.workdir,
        ...(options.pty === undefined ? {} : { pty: options.pty }),
        stdin: keepStdin || stdinData !== null,
        rlimits: this.#host.rlimits,
        ...(options.landlock === undefined ? {} : { landlock: options.landlock }),
        ...(options.tag === undefined ? {} : { tag: options.tag }),
        auditExec,
      })
      .catch((err: unknown) => {
        client.off('exec', execListener);
        throw err;
      });
    execId = id;
    for (const [procId, event] of early.splice(0)) if (procId === id) onExec?.(event);
    const keep = Math.min(Math.max(0, options.keepBytes ?? Number.POSITIVE_INFINITY), this.#host.outputLimit);
    const out = new Collector(keep, options.onStdout);
    const err = new Collector(keep, options.onStderr);
    const tracked = this.#track(id, pid, argv, options.tag ?? '', (chunk) =>
      (chunk.stream === 'stdout' ? out : err).push(chunk.data),
    );
    tracked.heardAll = true;
    if (stdinData !== null) {
      const bytes = typeof stdinData === 'string' ? Buffer.from(stdinData, 'utf8') : stdinData;
      await client.writeStdin(id, bytes).catch(() => {});
      await client.closeStdin(id).catch(() => {});
    }
    let timedOut = false;
    const timeoutMs = options.timeoutMs ?? (options.background ? undefined : this.#host.defaultTimeoutMs);
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        client.signal(id, 'SIGKILL').catch(() => {});
      }, timeoutMs);
      timer.unref();
    }
    const result = tracked.waitExit().then((exit) => {
      clearTimeout(timer);
      client.off('exec', execListener);
      return toResult(exit, out, err, timedOut);
    });
    if (options.background) return new ProcessHandle(this, tracked, result);
    return result;
  }

  /** A handle for a process this manager did not start (e.g. before a crash): look it up by id. */
  async connect(id: number): Promise<ProcessHandle> {
    let tracked = this.#tracked.get(id);
    if (tracked === undefined) {
      const info = (await this.list()).find((p) => p.id === id);
      if (info === undefined) throw new RangeError(`no process ${id} in this sandbox`);
      tracked = this.#adopt(info);
    }
    const out = new Collector(this.#host.outputLimit, undefined);
    const err = new Collector(this.#host.outputLimit, undefined);
    const result = tracked.waitExit().then((exit) => toResult(exit, out, err, false));
    return new ProcessHandle(this, tracked, result);
  }

  #adopt(info: AgentProcessInfo): Tracked {
    const tracked = this.#tracked.get(info.id) ?? this.#track(info.id, info.pid, info.argv, info.tag);
    // A process heard live keeps exact offsets: bytes the agent counted but not yet delivered are in flight.
    if (!tracked.heardAll) {
      tracked.offsets.stdout = Math.max(tracked.offsets.stdout, info.outputBytes.stdout);
      tracked.offsets.stderr = Math.max(tracked.offsets.stderr, info.outputBytes.stderr);
    }
    if (!info.running && info.exit !== undefined && tracked.exit === null) tracked.exited(info.exit);
    return tracked;
  }

  /** Every process the agent knows (running, and ended ones it still remembers). */
  async list(): Promise<AgentProcessInfo[]> {
    const infos = await this.#host.client('list processes').list();
    for (const info of infos) this.#adopt(info);
    return infos;
  }

  /** @internal */
  async attach(tracked: Tracked, options: AttachOptions): Promise<Attachment> {
    const from =
      typeof options.fromOffset === 'number'
        ? { stdout: options.fromOffset, stderr: options.fromOffset }
        : { stdout: options.fromOffset?.stdout ?? 0, stderr: options.fromOffset?.stderr ?? 0 };
    const deliver = (stream: Stream, data: Buffer) => {
      if (data.length > 0) (stream === 'stdout' ? options.onStdout : options.onStderr)?.(data);
    };
    // Everything delivered so far, per stream, as an absolute offset: the watermark that removes overlap
    // between the replayed bytes and live chunks that arrived while the replay was in flight.
    const next = { ...from };
    let live = false;
    const buffered: Chunk[] = [];
    const emit = (chunk: Chunk) => {
      const end = chunk.offset + chunk.data.length;
      if (end <= next[chunk.stream]) return;
      const skip = Math.max(0, next[chunk.stream] - chunk.offset);
      next[chunk.stream] = end;
      deliver(chunk.stream, chunk.data.subarray(skip));
    };
    const listener: Listener = (chunk) => {
      if (live) emit(chunk);
      else buffered.push(chunk);
    };
    tracked.listeners.add(listener);
    const lost = { stdout: 0, stderr: 0 };
    try {
      const client = this.#host.client('attach to a process');
      for (const stream of ['stdout', 'stderr'] as const) {
        if (tracked.heardAll && from[stream] >= tracked.offsets[stream]) continue; // the rest comes live
        const replayed = await client.replay(tracked.id, stream, from[stream]);
        lost[stream] = replayed.lost;
        emit({ stream, data: replayed.data, offset: replayed.offset });
      }
    } catch (err) {
      tracked.listeners.delete(listener);
      throw err;
    }
    live = true;
    for (const chunk of buffered.splice(0)) emit(chunk);
    return { lost, detach: () => tracked.listeners.delete(listener) };
  }
}
