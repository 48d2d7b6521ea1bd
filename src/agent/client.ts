/**
 * AgentClient: the host side of the agent protocol (./protocol.ts), over the sandbox's Unix socket. The only
 * caller of the in-sandbox agent. One client is one authenticated connection; requests are pipelined and
 * answered in order, process output and file events arrive as events.
 */
import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import { Readable } from 'node:stream';
import { signalName } from '../isolation/signals.js';
import {
  encodeFrame,
  FILE_CHUNK_BYTES,
  type Frame,
  FrameDecoder,
  type FsEventType,
  type OutputStream,
  PROTOCOL_VERSION,
  ProtocolError,
  TOKEN_BYTES,
  type WireDirEntry,
} from './protocol.js';

export type AgentExit = ({ kind: 'exit'; code: number } | { kind: 'signal'; signal: string }) & {
  cpuUs?: number;
  maxRssKb?: number;
};

export interface AgentProcessInfo {
  id: number;
  pid: number;
  /** The first arguments (the agent keeps up to 2 KiB of them). */
  argv: string[];
  tag: string;
  running: boolean;
  exit?: AgentExit;
  /** Bytes each stream has produced since the process started. */
  outputBytes: { stdout: number; stderr: number };
}

export interface AgentDirEntry {
  path: string;
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  /** Permission bits (0o7777 part of st_mode). */
  mode: number;
  mtimeMs: number;
}

export interface AgentFsEvent {
  type: FsEventType;
  path: string;
}

/**
 * One program start (execve/execveat) inside an audited process tree, as the agent read it from the caller's
 * memory. An audit record, not proof: another thread of the caller can change the memory after the agent read
 * it (see docs/agent-protocol.md), and attempts that then fail (a shell trying each PATH entry) are reported too.
 */
export interface AgentExecEvent {
  /** The calling process, pid inside the sandbox. */
  pid: number;
  /** The path as given to execve ('' if unreadable; relative to a directory fd for execveat). */
  path: string;
  argv: string[];
  /** Set when the caller's memory could not be read (fully). */
  unreadable?: true;
  /** Set when argv was cut at the agent's bounds (64 arguments, 4 KiB each, 16 KiB in all). */
  truncated?: true;
}

export interface AgentSpawnRequest {
  argv: string[];
  /** Laid over the sandbox's own environment (the policy's env). */
  env: Record<string, string>;
  /** Working directory inside the sandbox; '' keeps the sandbox's workdir. */
  cwd: string;
  /** A terminal instead of pipes: stdin, stdout and stderr all go through it (output arrives as stdout). */
  pty?: { rows: number; cols: number };
  /** Keep a stdin pipe open for writeStdin (otherwise stdin is /dev/null). Implied by pty. */
  stdin?: boolean;
  /** NAME=SOFT:HARD, as `ironcage-agent exec --rlimit` takes them. */
  rlimits?: string[];
  /**
   * Landlock rules for this process (kernel Landlock, see `ironcage doctor`): with any rule, the process and its
   * children may touch no path but these, `ro` (read, list, execute) or `rw` (everything) beneath each path.
   * A kernel without Landlock makes the spawn fail rather than run unconfined.
   */
  landlock?: { path: string; access: 'ro' | 'rw' }[];
  /**
   * Report every program this process and its descendants start, as 'exec' events (procId, AgentExecEvent),
   * the process's own start included. An audit trail: the sandbox's static layers stay the security boundary.
   */
  auditExec?: boolean;
  tag?: string;
}

/** A refusal or failure reported by the agent (or the connection ending). */
export class AgentError extends Error {
  readonly code: string;
  /** errno name such as 'ENOENT', when the failure came from a system call. */
  readonly errno?: string;
  constructor(code: string, message: string, errno?: string) {
    super(message);
    this.name = 'AgentError';
    this.code = code;
    if (errno !== undefined && errno !== '') this.errno = errno;
  }
}

type Reply = Extract<
  Frame,
  {
    type:
      | 'ok'
      | 'error'
      | 'spawned'
      | 'procList'
      | 'replayData'
      | 'watchOk'
      | 'helloOk'
      | 'dirEntries'
      | 'fileData';
  }
>;
type OutgoingFrame = Frame extends infer F ? (F extends { id: number } ? Omit<F, 'id'> : never) : never;

interface Pending {
  resolve(frame: Reply): void;
  reject(err: Error): void;
  /** Frames before the final reply (file data, directory entries); returns true when it took the frame. */
  partial?(frame: Reply): boolean;
}

export interface AgentConnectOptions {
  /** How long to keep trying (the socket may not exist yet while the sandbox starts). Default 5000. */
  timeoutMs?: number;
}

const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export class AgentClient extends EventEmitter {
  readonly #socket: Socket;
  readonly #decoder = new FrameDecoder();
  readonly #pending = new Map<number, Pending>();
  /** Next expected output offset per `${procId}:${stream}`, to notice output the agent could not send live. */
  readonly #nextOffset = new Map<string, number>();
  /** Frames received and not yet handled (see #drain). */
  readonly #queue: Frame[] = [];
  #draining = false;
  #nextId = 1;
  #closed = false;
  #agentVersion = 0;
  #agentPid = 0;

  private constructor(socket: Socket) {
    super();
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => {}); // 'close' follows and says everything needed
    socket.on('close', () =>
      this.#onClose(new AgentError('CONNECTION_CLOSED', 'the agent connection closed')),
    );
  }

  /** Connect and authenticate with the sandbox's token. Rejects with AgentError('AUTH_REFUSED') when dropped. */
  static async connect(
    socketPath: string,
    token: Buffer,
    options: AgentConnectOptions = {},
  ): Promise<AgentClient> {
    if (token.length !== TOKEN_BYTES)
      throw new AgentError('BAD_TOKEN', `the token must be ${TOKEN_BYTES} bytes`);
    const deadline = Date.now() + (options.timeoutMs ?? 5000);
    let socket: Socket;
    for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
      try {
        socket = await connectOnce(socketPath);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (!RETRYABLE.has(code) || Date.now() + delay > deadline) {
          throw new AgentError(
            'CONNECT_FAILED',
            `cannot connect to the agent at ${socketPath}: ${code}`,
            code,
          );
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    socket.setNoDelay?.(true);
    const client = new AgentClient(socket);
    const timer = setTimeout(
      () => client.#onClose(new AgentError('AUTH_TIMEOUT', 'the agent did not answer HELLO in time')),
      Math.max(deadline - Date.now(), 1000),
    );
    try {
      const reply = await client.#request({ type: 'hello', version: PROTOCOL_VERSION, token });
      if (reply.type !== 'helloOk')
        throw new AgentError('PROTOCOL', `unexpected reply ${reply.type} to HELLO`);
      client.#agentVersion = reply.version;
      client.#agentPid = reply.pid;
      return client;
    } catch (err) {
      client.close();
      if (err instanceof AgentError && err.code === 'CONNECTION_CLOSED') {
        throw new AgentError(
          'AUTH_REFUSED',
          'the agent refused the connection (wrong token or protocol version)',
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get agentVersion(): number {
    return this.#agentVersion;
  }
  get agentPid(): number {
    return this.#agentPid;
  }
  get closed(): boolean {
    return this.#closed;
  }

  async spawn(req: AgentSpawnRequest): Promise<{ id: number; pid: number }> {
    const reply = await this.#request({
      type: 'spawn',
      pty: req.pty ?? null,
      stdin: req.stdin ?? false,
      cwd: req.cwd,
      tag: req.tag ?? '',
      argv: req.argv,
      env: Object.entries(req.env).map(([k, v]) => `${k}=${v}`),
      rlimits: req.rlimits ?? [],
      landlock: (req.landlock ?? []).map((rule) => `${rule.access}:${rule.path}`),
      auditExec: req.auditExec ?? false,
    });
    const spawned = expect(reply, 'spawned');
    return { id: spawned.procId, pid: spawned.pid };
  }

  async writeStdin(id: number, data: Uint8Array): Promise<void> {
    const chunks: Promise<Reply>[] = [];
    for (let at = 0; at < data.byteLength || at === 0; at += FILE_CHUNK_BYTES) {
      chunks.push(
        this.#request({
          type: 'stdin',
          procId: id,
          data: Buffer.from(data.subarray(at, at + FILE_CHUNK_BYTES)),
        }),
      );
      if (data.byteLength === 0) break;
    }
    for (const r of await Promise.all(chunks)) expect(r, 'ok');
  }

  async closeStdin(id: number): Promise<void> {
    expect(await this.#request({ type: 'stdinClose', procId: id }), 'ok');
  }

  /** Signal the process's whole process group (it is a session leader). */
  async signal(id: number, signal: NodeJS.Signals | number): Promise<void> {
    const signo = typeof signal === 'number' ? signal : osConstants.signals[signal];
    if (signo === undefined) throw new AgentError('BAD_REQUEST', `unknown signal ${String(signal)}`);
    expect(await this.#request({ type: 'signal', procId: id, signal: signo }), 'ok');
  }

  async resize(id: number, rows: number, cols: number): Promise<void> {
    expect(await this.#request({ type: 'resize', procId: id, rows, cols }), 'ok');
  }

  async list(): Promise<AgentProcessInfo[]> {
    const reply = expect(await this.#request({ type: 'listProcs' }), 'procList');
    return reply.procs
      .map((p) => {
        const info: AgentProcessInfo = {
          id: p.procId,
          pid: p.pid,
          argv: p.argv,
          tag: p.tag,
          running: p.state === 'running',
          outputBytes: { stdout: p.stdoutBytes, stderr: p.stderrBytes },
        };
        if (p.state !== 'running') {
          const base = { cpuUs: p.cpuUs, maxRssKb: p.maxRssKb };
          info.exit =
            p.state === 'exit'
              ? { kind: 'exit', code: p.value, ...base }
              : { kind: 'signal', signal: signalName(p.value), ...base };
        }
        return info;
      })
      .sort((a, b) => a.id - b.id);
  }

  /**
   * Output of a process from `fromOffset` (bytes since it started) as far as the agent still holds it; `lost`
   * counts the bytes that fell out of its ring before `offset`.
   */
  async replay(
    id: number,
    stream: OutputStream,
    fromOffset: number,
  ): Promise<{ data: Buffer; offset: number; lost: number }> {
    const reply = expect(
      await this.#request({ type: 'replay', procId: id, stream, fromOffset }),
      'replayData',
    );
    return { data: reply.data, offset: reply.offset, lost: reply.lost };
  }

  async readFile(path: string, options: { offset?: number; length?: number } = {}): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await this.#readChunks(path, options, (c) => chunks.push(c));
    return Buffer.concat(chunks);
  }

  /** The file as a stream of chunks (up to 256 KiB each) as the agent sends them. */
  readFileStream(path: string, options: { offset?: number; length?: number } = {}): Readable {
    const stream = new Readable({ read() {} });
    this.#readChunks(path, options, (c) => stream.push(c)).then(
      () => stream.push(null),
      (err: Error) => stream.destroy(err),
    );
    return stream;
  }

  #readChunks(
    path: string,
    options: { offset?: number; length?: number },
    onChunk: (c: Buffer) => void,
  ): Promise<void> {
    const frame: OutgoingFrame = {
      type: 'readFile',
      path,
      offset: options.offset ?? 0,
      length: options.length ?? 0,
    };
    return this.#request(frame, (f) => {
      if (f.type !== 'fileData') return false;
      onChunk(f.data);
      return true;
    }).then((r) => void expect(r, 'ok'));
  }

  /** Create or truncate (or append to) a file; mode applies to the file whether new or not. */
  async writeFile(
    path: string,
    data: Uint8Array,
    options: { mode?: number; append?: boolean } = {},
  ): Promise<void> {
    const mode = options.mode ?? null;
    const requests: Promise<Reply>[] = [];
    // The first chunk truncates (unless appending); later ones append, in order on the one connection.
    for (let at = 0; at === 0 || at < data.byteLength; at += FILE_CHUNK_BYTES) {
      const chunk = Buffer.from(
        data.buffer,
        data.byteOffset + at,
        Math.min(FILE_CHUNK_BYTES, data.byteLength - at),
      );
      requests.push(
        this.#request({
          type: 'writeFile',
          path,
          mode,
          append: at > 0 || options.append === true,
          data: chunk,
        }),
      );
    }
    for (const r of await Promise.all(requests)) expect(r, 'ok');
  }

  /** Entries below `path`, `depth` levels deep (1 = its children); symlinks are listed, never followed. */
  async listDir(path: string, depth = 1): Promise<AgentDirEntry[]> {
    const entries: AgentDirEntry[] = [];
    const reply = await this.#request({ type: 'listDir', path, depth }, (f) => {
      if (f.type !== 'dirEntries') return false;
      for (const e of f.entries) entries.push(toEntry(e));
      return true;
    });
    expect(reply, 'ok');
    return entries;
  }

  /** Like lstat: a symlink is reported as itself. */
  async stat(path: string): Promise<AgentDirEntry> {
    const reply = expect(await this.#request({ type: 'stat', path }), 'dirEntries');
    const entry = reply.entries[0];
    if (reply.entries.length !== 1 || entry === undefined)
      throw new AgentError('PROTOCOL', 'stat returned no entry');
    return toEntry(entry);
  }

  async mkdir(path: string, options: { parents?: boolean; mode?: number } = {}): Promise<void> {
    expect(
      await this.#request({
        type: 'mkdir',
        path,
        parents: options.parents ?? false,
        mode: options.mode ?? 0o755,
      }),
      'ok',
    );
  }

  async rename(from: string, to: string): Promise<void> {
    expect(await this.#request({ type: 'rename', from, to }), 'ok');
  }

  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    expect(await this.#request({ type: 'remove', path, recursive: options.recursive ?? false }), 'ok');
  }

  /** Watch a file or directory (and, recursive, its subdirectories, best effort); events come as 'fs-event'. */
  async watch(path: string, options: { recursive?: boolean } = {}): Promise<{ watchId: number }> {
    const reply = expect(
      await this.#request({ type: 'watch', path, recursive: options.recursive ?? false }),
      'watchOk',
    );
    return { watchId: reply.watchId };
  }

  async unwatch(watchId: number): Promise<void> {
    expect(await this.#request({ type: 'unwatch', watchId }), 'ok');
  }

  /** Ask the agent to kill every process and end the sandbox. */
  async shutdown(): Promise<void> {
    try {
      await this.#request({ type: 'shutdown' });
    } catch (err) {
      if (!(err instanceof AgentError && err.code === 'CONNECTION_CLOSED')) throw err;
    }
  }

  close(): void {
    this.#socket.destroy();
  }

  #request(frame: OutgoingFrame, partial?: (f: Reply) => boolean): Promise<Reply> {
    if (this.#closed)
      return Promise.reject(new AgentError('CONNECTION_CLOSED', 'the agent connection is closed'));
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffff_ffff ? 1 : this.#nextId + 1;
    let bytes: Buffer;
    try {
      bytes = encodeFrame({ ...frame, id } as Frame);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<Reply>((resolve, reject) => {
      this.#pending.set(id, partial ? { resolve, reject, partial } : { resolve, reject });
      this.#socket.write(bytes);
    });
  }

  #onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.#onClose(err as ProtocolError);
      this.#socket.destroy();
      return;
    }
    this.#queue.push(...frames);
    this.#drain();
  }

  /**
   * Handle queued frames in order. After a reply settles a request, the rest wait for the next macrotask, so
   * the caller's `await` (e.g. learning a process id from spawn) runs before that process's output events.
   */
  #drain(): void {
    if (this.#draining) return;
    let frame = this.#queue.shift();
    while (frame !== undefined && !this.#closed) {
      if (this.#onFrame(frame) && this.#queue.length > 0) {
        this.#draining = true;
        setImmediate(() => {
          this.#draining = false;
          this.#drain();
        });
        return;
      }
      frame = this.#queue.shift();
    }
  }

  /** Returns true when the frame settled a request. */
  #onFrame(frame: Frame): boolean {
    switch (frame.type) {
      case 'output': {
        const key = `${frame.procId}:${frame.stream}`;
        const expected = this.#nextOffset.get(key);
        // The agent skips live output to a host that fell far behind; the gap can be replayed.
        if (expected !== undefined && frame.offset > expected) {
          this.emit('output-lost', frame.procId, frame.stream, expected, frame.offset);
        }
        this.#nextOffset.set(key, frame.offset + frame.data.length);
        this.emit('output', frame.procId, frame.stream, frame.data);
        return false;
      }
      case 'exit': {
        const usage = { cpuUs: frame.cpuUs, maxRssKb: frame.maxRssKb };
        const exit: AgentExit =
          frame.kind === 'exit'
            ? { kind: 'exit', code: frame.value, ...usage }
            : { kind: 'signal', signal: signalName(frame.value), ...usage };
        this.emit('exit', frame.procId, exit);
        return false;
      }
      case 'fsEvent':
        this.emit('fs-event', frame.watchId, { type: frame.kind, path: frame.path } satisfies AgentFsEvent);
        return false;
      case 'execEvent': {
        const event: AgentExecEvent = { pid: frame.pid, path: frame.path, argv: frame.argv };
        if (frame.unreadable) event.unreadable = true;
        if (frame.truncated) event.truncated = true;
        this.emit('exec', frame.procId, event);
        return false;
      }
      case 'ok':
      case 'error':
      case 'spawned':
      case 'procList':
      case 'replayData':
      case 'watchOk':
      case 'helloOk':
      case 'dirEntries':
      case 'fileData': {
        const pending = this.#pending.get(frame.id);
        if (pending === undefined) break;
        if (pending.partial?.(frame)) return false;
        this.#pending.delete(frame.id);
        if (frame.type === 'spawned') {
          this.#nextOffset.set(`${frame.procId}:stdout`, 0);
          this.#nextOffset.set(`${frame.procId}:stderr`, 0);
        }
        if (frame.type === 'error') pending.reject(new AgentError(frame.code, frame.message, frame.errno));
        else pending.resolve(frame);
        return true;
      }
      default:
        break;
    }
    this.#onClose(new ProtocolError(`unexpected ${frame.type} frame (id ${frame.id}) from the agent`));
    this.#socket.destroy();
    return false;
  }

  #onClose(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.#socket.destroy();
    this.emit('close');
  }
}

function expect<T extends Reply['type']>(reply: Reply, type: T): Extract<Reply, { type: T }> {
  if (reply.type !== type)
    throw new AgentError('PROTOCOL', `expected ${type} from the agent, got ${reply.type}`);
  return reply as Extract<Reply, { type: T }>;
}

function toEntry(e: WireDirEntry): AgentDirEntry {
  const slash = e.path.lastIndexOf('/');
  return {
    path: e.path,
    name: slash >= 0 && e.path.length > 1 ? e.path.slice(slash + 1) : e.path,
    type: e.type,
    size: e.size,
    mode: e.mode,
    mtimeMs: e.mtimeMs,
  };
}
