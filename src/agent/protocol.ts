/**
 * The wire protocol between the host and the in-sandbox agent (`ironcage-agent serve`), version
 * PROTOCOL_VERSION: pure
 * encoding and decoding of frames, no I/O. docs/agent-protocol.md is the specification; src/agent/agent.c is
 * the other implementation. Every frame is
 *
 *   u32 LE payload length | u8 type | u32 LE request id | payload
 *
 * Integers are little-endian; strings are UTF-8 ending in one NUL byte (so they may not contain NUL); a byte
 * field that ends the payload takes "the rest". Decoding validates every field and throws only ProtocolError.
 */

/** 2: SPAWN carries Landlock rules. 3: SPAWN flag 4 (exec audit) and the EXEC_EVENT frame. */
export const PROTOCOL_VERSION = 3;
export const HEADER_BYTES = 9;
/** Largest payload either side accepts (a whole 1 MiB output replay fits). */
export const MAX_PAYLOAD_BYTES = 2 * 1024 * 1024;
export const TOKEN_BYTES = 32;
/** Bytes of file data the client puts in one WRITE frame. */
export const FILE_CHUNK_BYTES = 256 * 1024;

export class ProtocolError extends Error {
  readonly code = 'AGENT_PROTOCOL';
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export const FRAME_TYPES = {
  // host → agent
  hello: 0x01,
  spawn: 0x02,
  stdin: 0x03,
  stdinClose: 0x04,
  signal: 0x05,
  resize: 0x06,
  listProcs: 0x07,
  replay: 0x08,
  shutdown: 0x09,
  readFile: 0x10,
  writeFile: 0x11,
  listDir: 0x12,
  stat: 0x13,
  mkdir: 0x14,
  rename: 0x15,
  remove: 0x16,
  watch: 0x17,
  unwatch: 0x18,
  // agent → host: replies (same id as the request)
  helloOk: 0x40,
  ok: 0x41,
  error: 0x42,
  spawned: 0x43,
  procList: 0x44,
  replayData: 0x45,
  fileData: 0x46,
  dirEntries: 0x47,
  watchOk: 0x48,
  // agent → host: events (id 0)
  output: 0x50,
  exit: 0x51,
  fsEvent: 0x52,
  execEvent: 0x53,
} as const;
export type FrameTypeName = keyof typeof FRAME_TYPES;

export type OutputStream = 'stdout' | 'stderr';
export type EntryType = 'file' | 'dir' | 'symlink' | 'other';
export type FsEventType = 'create' | 'write' | 'remove' | 'rename' | 'chmod';

export interface WireProcInfo {
  procId: number;
  pid: number;
  /** 'running' until reaped. */
  state: 'running' | 'exit' | 'signal';
  /** Exit code or signal number (0 while running). */
  value: number;
  cpuUs: number;
  maxRssKb: number;
  stdoutBytes: number;
  stderrBytes: number;
  tag: string;
  argv: string[];
}

export interface WireDirEntry {
  type: EntryType;
  /** Permission bits (st_mode & 0o7777). */
  mode: number;
  size: number;
  mtimeMs: number;
  path: string;
}

export type Frame =
  | { type: 'hello'; id: number; version: number; token: Buffer }
  | {
      type: 'spawn';
      id: number;
      pty: { rows: number; cols: number } | null;
      stdin: boolean;
      cwd: string;
      tag: string;
      argv: string[];
      /** NAME=VALUE entries, laid over the agent's own environment. */
      env: string[];
      rlimits: string[];
      /** Landlock rules `ro:PATH` / `rw:PATH`; with any, the process may touch nothing else. */
      landlock: string[];
      /** Report every execve/execveat of the process and its descendants as execEvent frames. */
      auditExec: boolean;
    }
  | { type: 'stdin'; id: number; procId: number; data: Buffer }
  | { type: 'stdinClose'; id: number; procId: number }
  | { type: 'signal'; id: number; procId: number; signal: number }
  | { type: 'resize'; id: number; procId: number; rows: number; cols: number }
  | { type: 'listProcs'; id: number }
  | { type: 'replay'; id: number; procId: number; stream: OutputStream; fromOffset: number }
  | { type: 'shutdown'; id: number }
  | { type: 'readFile'; id: number; offset: number; length: number; path: string }
  | { type: 'writeFile'; id: number; append: boolean; mode: number | null; path: string; data: Buffer }
  | { type: 'listDir'; id: number; depth: number; path: string }
  | { type: 'stat'; id: number; path: string }
  | { type: 'mkdir'; id: number; parents: boolean; mode: number; path: string }
  | { type: 'rename'; id: number; from: string; to: string }
  | { type: 'remove'; id: number; recursive: boolean; path: string }
  | { type: 'watch'; id: number; recursive: boolean; path: string }
  | { type: 'unwatch'; id: number; watchId: number }
  | { type: 'helloOk'; id: number; version: number; pid: number; features: number }
  | { type: 'ok'; id: number }
  | { type: 'error'; id: number; code: string; errno: string; message: string }
  | { type: 'spawned'; id: number; procId: number; pid: number }
  | { type: 'procList'; id: number; procs: WireProcInfo[] }
  | { type: 'replayData'; id: number; offset: number; lost: number; data: Buffer }
  | { type: 'fileData'; id: number; data: Buffer }
  | { type: 'dirEntries'; id: number; entries: WireDirEntry[] }
  | { type: 'watchOk'; id: number; watchId: number }
  | { type: 'output'; id: number; procId: number; stream: OutputStream; offset: number; data: Buffer }
  | {
      type: 'exit';
      id: number;
      procId: number;
      kind: 'exit' | 'signal';
      value: number;
      cpuUs: number;
      maxRssKb: number;
    }
  | { type: 'fsEvent'; id: number; watchId: number; kind: FsEventType; path: string }
  | {
      type: 'execEvent';
      id: number;
      /** The audited tree's root process. */
      procId: number;
      /** The calling process (pid inside the sandbox). */
      pid: number;
      path: string;
      argv: string[];
      /** The caller's memory could not be read (fully): path and argv hold what could be. */
      unreadable: boolean;
      /** argv was cut at the agent's bounds (64 arguments, 4 KiB each, 16 KiB in all). */
      truncated: boolean;
    };

const TYPE_NAMES = new Map<number, FrameTypeName>(
  Object.entries(FRAME_TYPES).map(([name, code]) => [code, name as FrameTypeName]),
);
const STREAMS: readonly OutputStream[] = ['stdout', 'stderr'];
const ENTRY_TYPES: readonly EntryType[] = ['file', 'dir', 'symlink', 'other'];
const FS_EVENTS: readonly FsEventType[] = ['create', 'write', 'remove', 'rename', 'chmod'];
const PROC_STATES = ['running', 'exit', 'signal'] as const;
const SPAWN_PTY = 1;
const SPAWN_STDIN = 2;
const SPAWN_AUDIT_EXEC = 4;
const EXEC_UNREADABLE = 1;
const EXEC_TRUNCATED = 2;
const WRITE_APPEND = 1;
const WRITE_TRUNCATE = 2;
const WRITE_MODE = 4;

class Writer {
  readonly #parts: Buffer[] = [];
  #size = 0;

  #push(b: Buffer): void {
    this.#parts.push(b);
    this.#size += b.length;
  }
  u8(v: number): this {
    checkInt(v, 0xff, 'u8');
    this.#push(Buffer.of(v));
    return this;
  }
  u16(v: number): this {
    checkInt(v, 0xffff, 'u16');
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16LE(v);
    this.#push(b);
    return this;
  }
  u32(v: number): this {
    checkInt(v, 0xffff_ffff, 'u32');
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(v);
    this.#push(b);
    return this;
  }
  u64(v: number): this {
    checkInt(v, Number.MAX_SAFE_INTEGER, 'u64');
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(BigInt(v));
    this.#push(b);
    return this;
  }
  i64(v: number): this {
    if (!Number.isSafeInteger(v)) throw new ProtocolError(`i64 field must be a safe integer, got ${v}`);
    const b = Buffer.allocUnsafe(8);
    b.writeBigInt64LE(BigInt(v));
    this.#push(b);
    return this;
  }
  str(s: string): this {
    if (typeof s !== 'string') throw new ProtocolError('string field is not a string');
    if (s.includes('\0')) throw new ProtocolError('strings may not contain NUL bytes');
    this.#push(Buffer.from(`${s}\0`, 'utf8'));
    return this;
  }
  strs(list: readonly string[]): this {
    this.u32(list.length);
    for (const s of list) this.str(s);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.#push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    return this;
  }
  frame(type: FrameTypeName, id: number): Buffer {
    checkInt(id, 0xffff_ffff, 'request id');
    if (this.#size > MAX_PAYLOAD_BYTES) {
      throw new ProtocolError(`payload of ${this.#size} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
    }
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    header.writeUInt32LE(this.#size, 0);
    header.writeUInt8(FRAME_TYPES[type], 4);
    header.writeUInt32LE(id, 5);
    return Buffer.concat([header, ...this.#parts], HEADER_BYTES + this.#size);
  }
}

function checkInt(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new ProtocolError(`${what} field out of range: ${v}`);
}

class Reader {
  #at = 0;
  constructor(readonly buf: Buffer) {}

  #need(n: number): number {
    if (this.buf.length - this.#at < n) throw new ProtocolError('frame payload is truncated');
    const at = this.#at;
    this.#at += n;
    return at;
  }
  u8(): number {
    return this.buf.readUInt8(this.#need(1));
  }
  u16(): number {
    return this.buf.readUInt16LE(this.#need(2));
  }
  u32(): number {
    return this.buf.readUInt32LE(this.#need(4));
  }
  u64(): number {
    const v = this.buf.readBigUInt64LE(this.#need(8));
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('u64 field exceeds 2^53');
    return Number(v);
  }
  i64(): number {
    const v = this.buf.readBigInt64LE(this.#need(8));
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new ProtocolError('i64 field exceeds 2^53');
    }
    return Number(v);
  }
  str(): string {
    const end = this.buf.indexOf(0, this.#at);
    if (end < 0) throw new ProtocolError('string field is not NUL-terminated');
    const s = this.buf.toString('utf8', this.#at, end);
    this.#at = end + 1;
    return s;
  }
  strs(): string[] {
    const n = this.u32();
    // Each string takes at least its NUL: a count larger than the bytes left is malformed.
    if (n > this.buf.length - this.#at) throw new ProtocolError('string list count exceeds the payload');
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.str());
    return out;
  }
  fixed(n: number): Buffer {
    const at = this.#need(n);
    return Buffer.from(this.buf.subarray(at, at + n));
  }
  rest(): Buffer {
    const out = Buffer.from(this.buf.subarray(this.#at));
    this.#at = this.buf.length;
    return out;
  }
  end(): void {
    if (this.#at !== this.buf.length) throw new ProtocolError('frame payload has trailing bytes');
  }
}

function pick<T>(list: readonly T[], index: number, what: string): T {
  const v = list[index];
  if (v === undefined) throw new ProtocolError(`${what} ${index} is unknown`);
  return v;
}

/** Encode one frame. Throws ProtocolError for values the wire cannot carry (NUL in a string, out of range). */
export function encodeFrame(frame: Frame): Buffer {
  const w = new Writer();
  switch (frame.type) {
    case 'hello':
      if (frame.token.length !== TOKEN_BYTES)
        throw new ProtocolError(`the token must be ${TOKEN_BYTES} bytes`);
      w.u32(frame.version).bytes(frame.token);
      break;
    case 'spawn':
      w.u32(
        (frame.pty ? SPAWN_PTY : 0) |
          (frame.stdin ? SPAWN_STDIN : 0) |
          (frame.auditExec ? SPAWN_AUDIT_EXEC : 0),
      )
        .u16(frame.pty?.rows ?? 0)
        .u16(frame.pty?.cols ?? 0)
        .str(frame.cwd)
        .str(frame.tag)
        .strs(frame.argv)
        .strs(frame.env)
        .strs(frame.rlimits)
        .strs(frame.landlock);
      break;
    case 'stdin':
      w.u32(frame.procId).bytes(frame.data);
      break;
    case 'stdinClose':
      w.u32(frame.procId);
      break;
    case 'signal':
      w.u32(frame.procId).u32(frame.signal);
      break;
    case 'resize':
      w.u32(frame.procId).u16(frame.rows).u16(frame.cols);
      break;
    case 'listProcs':
    case 'shutdown':
    case 'ok':
      break;
    case 'replay':
      w.u32(frame.procId)
        .u8(STREAMS.indexOf(frame.stream) + 1)
        .u64(frame.fromOffset);
      break;
    case 'readFile':
      w.u64(frame.offset).u64(frame.length).str(frame.path);
      break;
    case 'writeFile':
      w.u32((frame.append ? WRITE_APPEND : WRITE_TRUNCATE) | (frame.mode === null ? 0 : WRITE_MODE))
        .u32(frame.mode ?? 0)
        .str(frame.path)
        .bytes(frame.data);
      break;
    case 'listDir':
      w.u32(frame.depth).str(frame.path);
      break;
    case 'stat':
      w.str(frame.path);
      break;
    case 'mkdir':
      w.u32(frame.parents ? 1 : 0)
        .u32(frame.mode)
        .str(frame.path);
      break;
    case 'rename':
      w.str(frame.from).str(frame.to);
      break;
    case 'remove':
      w.u32(frame.recursive ? 1 : 0).str(frame.path);
      break;
    case 'watch':
      w.u32(frame.recursive ? 1 : 0).str(frame.path);
      break;
    case 'unwatch':
      w.u32(frame.watchId);
      break;
    case 'helloOk':
      w.u32(frame.version).u32(frame.pid).u32(frame.features);
      break;
    case 'error':
      w.str(frame.code).str(frame.errno).str(frame.message);
      break;
    case 'spawned':
      w.u32(frame.procId).u32(frame.pid);
      break;
    case 'procList':
      w.u32(frame.procs.length);
      for (const p of frame.procs) {
        w.u32(p.procId)
          .u32(p.pid)
          .u8(PROC_STATES.indexOf(p.state))
          .u32(p.value)
          .u64(p.cpuUs)
          .u64(p.maxRssKb)
          .u64(p.stdoutBytes)
          .u64(p.stderrBytes)
          .str(p.tag)
          .strs(p.argv);
      }
      break;
    case 'replayData':
      w.u64(frame.offset).u64(frame.lost).bytes(frame.data);
      break;
    case 'fileData':
      w.bytes(frame.data);
      break;
    case 'dirEntries':
      w.u32(frame.entries.length);
      for (const e of frame.entries) {
        w.u8(ENTRY_TYPES.indexOf(e.type)).u32(e.mode).u64(e.size).i64(e.mtimeMs).str(e.path);
      }
      break;
    case 'watchOk':
      w.u32(frame.watchId);
      break;
    case 'output':
      w.u32(frame.procId)
        .u8(STREAMS.indexOf(frame.stream) + 1)
        .u64(frame.offset)
        .bytes(frame.data);
      break;
    case 'exit':
      w.u32(frame.procId)
        .u8(frame.kind === 'exit' ? 1 : 2)
        .u32(frame.value)
        .u64(frame.cpuUs)
        .u64(frame.maxRssKb);
      break;
    case 'fsEvent':
      w.u32(frame.watchId)
        .u8(FS_EVENTS.indexOf(frame.kind) + 1)
        .str(frame.path);
      break;
    case 'execEvent':
      w.u32(frame.procId)
        .u32(frame.pid)
        .u8((frame.unreadable ? EXEC_UNREADABLE : 0) | (frame.truncated ? EXEC_TRUNCATED : 0))
        .str(frame.path)
        .strs(frame.argv);
      break;
    default:
      throw new ProtocolError(`unknown frame type ${(frame as { type: unknown }).type}`);
  }
  return w.frame(frame.type, frame.id);
}

function decodePayload(name: FrameTypeName, id: number, r: Reader): Frame {
  switch (name) {
    case 'hello':
      return { type: name, id, version: r.u32(), token: r.fixed(TOKEN_BYTES) };
    case 'spawn': {
      const flags = r.u32();
      if ((flags & ~(SPAWN_PTY | SPAWN_STDIN | SPAWN_AUDIT_EXEC)) !== 0)
        throw new ProtocolError('unknown spawn flags');
      const rows = r.u16();
      const cols = r.u16();
      return {
        type: name,
        id,
        pty: flags & SPAWN_PTY ? { rows, cols } : null,
        stdin: (flags & SPAWN_STDIN) !== 0,
        cwd: r.str(),
        tag: r.str(),
        argv: r.strs(),
        env: r.strs(),
        rlimits: r.strs(),
        landlock: r.strs(),
        auditExec: (flags & SPAWN_AUDIT_EXEC) !== 0,
      };
    }
    case 'stdin':
      return { type: name, id, procId: r.u32(), data: r.rest() };
    case 'stdinClose':
      return { type: name, id, procId: r.u32() };
    case 'signal':
      return { type: name, id, procId: r.u32(), signal: r.u32() };
    case 'resize':
      return { type: name, id, procId: r.u32(), rows: r.u16(), cols: r.u16() };
    case 'listProcs':
    case 'shutdown':
    case 'ok':
      return { type: name, id };
    case 'replay':
      return {
        type: name,
        id,
        procId: r.u32(),
        stream: pick(STREAMS, r.u8() - 1, 'stream'),
        fromOffset: r.u64(),
      };
    case 'readFile':
      return { type: name, id, offset: r.u64(), length: r.u64(), path: r.str() };
    case 'writeFile': {
      const flags = r.u32();
      const mode = r.u32();
      const append = (flags & WRITE_APPEND) !== 0;
      if (
        (flags & ~(WRITE_APPEND | WRITE_TRUNCATE | WRITE_MODE)) !== 0 ||
        append === ((flags & WRITE_TRUNCATE) !== 0)
      ) {
        throw new ProtocolError('write flags must say exactly one of append or truncate');
      }
      if ((flags & WRITE_MODE) === 0 && mode !== 0)
        throw new ProtocolError('write mode given without its flag');
      return {
        type: name,
        id,
        append,
        mode: flags & WRITE_MODE ? mode : null,
        path: r.str(),
        data: r.rest(),
      };
    }
    case 'listDir':
      return { type: name, id, depth: r.u32(), path: r.str() };
    case 'stat':
      return { type: name, id, path: r.str() };
    case 'mkdir':
      return { type: name, id, parents: bool(r.u32()), mode: r.u32(), path: r.str() };
    case 'rename':
      return { type: name, id, from: r.str(), to: r.str() };
    case 'remove':
      return { type: name, id, recursive: bool(r.u32()), path: r.str() };
    case 'watch':
      return { type: name, id, recursive: bool(r.u32()), path: r.str() };
    case 'unwatch':
      return { type: name, id, watchId: r.u32() };
    case 'helloOk':
      return { type: name, id, version: r.u32(), pid: r.u32(), features: r.u32() };
    case 'error':
      return { type: name, id, code: r.str(), errno: r.str(), message: r.str() };
    case 'spawned':
      return { type: name, id, procId: r.u32(), pid: r.u32() };
    case 'procList': {
      const count = r.u32();
      if (count > r.buf.length) throw new ProtocolError('process count exceeds the payload');
      const procs: WireProcInfo[] = [];
      for (let i = 0; i < count; i++) {
        procs.push({
          procId: r.u32(),
          pid: r.u32(),
          state: pick(PROC_STATES, r.u8(), 'process state'),
          value: r.u32(),
          cpuUs: r.u64(),
          maxRssKb: r.u64(),
          stdoutBytes: r.u64(),
          stderrBytes: r.u64(),
          tag: r.str(),
          argv: r.strs(),
        });
      }
      return { type: name, id, procs };
    }
    case 'replayData':
      return { type: name, id, offset: r.u64(), lost: r.u64(), data: r.rest() };
    case 'fileData':
      return { type: name, id, data: r.rest() };
    case 'dirEntries': {
      const count = r.u32();
      if (count > r.buf.length) throw new ProtocolError('entry count exceeds the payload');
      const entries: WireDirEntry[] = [];
      for (let i = 0; i < count; i++) {
        entries.push({
          type: pick(ENTRY_TYPES, r.u8(), 'entry type'),
          mode: r.u32(),
          size: r.u64(),
          mtimeMs: r.i64(),
          path: r.str(),
        });
      }
      return { type: name, id, entries };
    }
    case 'watchOk':
      return { type: name, id, watchId: r.u32() };
    case 'output':
      return {
        type: name,
        id,
        procId: r.u32(),
        stream: pick(STREAMS, r.u8() - 1, 'stream'),
        offset: r.u64(),
        data: r.rest(),
      };
    case 'exit': {
      const procId = r.u32();
      const kind = r.u8();
      if (kind !== 1 && kind !== 2) throw new ProtocolError(`exit kind ${kind} is unknown`);
      return {
        type: name,
        id,
        procId,
        kind: kind === 1 ? 'exit' : 'signal',
        value: r.u32(),
        cpuUs: r.u64(),
        maxRssKb: r.u64(),
      };
    }
    case 'fsEvent':
      return {
        type: name,
        id,
        watchId: r.u32(),
        kind: pick(FS_EVENTS, r.u8() - 1, 'event kind'),
        path: r.str(),
      };
    case 'execEvent': {
      const procId = r.u32();
      const pid = r.u32();
      const flags = r.u8();
      if ((flags & ~(EXEC_UNREADABLE | EXEC_TRUNCATED)) !== 0)
        throw new ProtocolError('unknown exec event flags');
      return {
        type: name,
        id,
        procId,
        pid,
        path: r.str(),
        argv: r.strs(),
        unreadable: (flags & EXEC_UNREADABLE) !== 0,
        truncated: (flags & EXEC_TRUNCATED) !== 0,
      };
    }
  }
}

function bool(v: number): boolean {
  if (v > 1) throw new ProtocolError(`flag field must be 0 or 1, got ${v}`);
  return v === 1;
}

/**
 * Decode the first frame of `buf`. Returns null when more bytes are needed, else the frame and how many bytes
 * it took. Throws ProtocolError for anything malformed (including a length above the maximum).
 */
export function decodeFrame(
  buf: Buffer,
  maxPayload = MAX_PAYLOAD_BYTES,
): { frame: Frame; bytes: number } | null {
  if (buf.length < HEADER_BYTES) return null;
  const length = buf.readUInt32LE(0);
  if (length > maxPayload)
    throw new ProtocolError(`frame of ${length} bytes exceeds the ${maxPayload} maximum`);
  const code = buf.readUInt8(4);
  const name = TYPE_NAMES.get(code);
  if (name === undefined) throw new ProtocolError(`frame type 0x${code.toString(16)} is unknown`);
  if (buf.length < HEADER_BYTES + length) return null;
  const reader = new Reader(buf.subarray(HEADER_BYTES, HEADER_BYTES + length));
  const frame = decodePayload(name, buf.readUInt32LE(5), reader);
  reader.end();
  return { frame, bytes: HEADER_BYTES + length };
}

/** Turns a byte stream into frames; once it has thrown, the stream is unusable (drop the connection). */
export class FrameDecoder {
  #pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      const next = decodeFrame(this.#pending);
      if (next === null) break;
      frames.push(next.frame);
      this.#pending = this.#pending.subarray(next.bytes);
    }
    return frames;
  }

  /** Bytes received but not yet part of a whole frame. */
  get buffered(): number {
    return this.#pending.length;
  }
}
