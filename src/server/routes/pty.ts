/**
 * GET /v1/sandboxes/:id/pty: an interactive terminal over a WebSocket. The upgrade is refused with an ordinary
 * HTTP error (401, 403, 404, 400) before any 101, because authentication runs in the app's onRequest hook and
 * the checks below in preHandler; only then does @fastify/websocket answer the handshake.
 *
 * Protocol: binary frames are terminal bytes both ways (keyboard in, screen out). Text frames are JSON control
 * messages: the client sends {type:'resize', rows, cols} or {type:'kill', signal?}; the server sends
 * {type:'start', processId, pid}, {type:'lost', bytes} (output that fell out of the agent's ring while the
 * client was slow), {type:'error', code, message} and, last, {type:'exit', exitCode, signal} before closing
 * with 1000. The process is killed when the socket closes for any other reason, including a peer that stops
 * answering the server's pings.
 */
import type {} from '@fastify/websocket';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RawData, WebSocket } from 'ws';
import type { z } from 'zod';
import type { Attachment, CommandResult, ProcessHandle } from '../../sandbox/commands.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { ApiError, describeZodError, notFound, toApiError } from '../errors.js';
import { errorSchema, ptyClientMessage, ptyQuery, sandboxIdParams } from '../schemas.js';
import type { ApiKeyRecord } from '../store/types.js';
import { auditArgv } from './commands.js';
import { defineRoute, type RouteDef, SANDBOX_404, type ServerContext } from './route.js';
import { findOwnedSandbox } from './sandboxes.js';

export const PTY_URL = '/v1/sandboxes/:id/pty';
/** Largest WebSocket message the server accepts (ws closes the socket with 1009 beyond it). */
export const WEBSOCKET_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Largest control (text) message: a resize is a few dozen bytes. */
const MAX_CONTROL_BYTES = 4096;
/** Output is paused (detached from the process) above this many unsent bytes, resumed below LOW_WATER. */
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 64 * 1024;
/** Incoming messages not yet handed to the agent: reading from the socket pauses above this. */
const MAX_PENDING_MESSAGES = 64;
/** A peer that answers no ping within this long is gone (a sleeping laptop): the socket and process end. */
const PING_INTERVAL_MS = 30_000;
/** Terminals one API key may have open at once, unless configured. */
export const DEFAULT_MAX_TERMINALS_PER_KEY = 16;
const DEFAULT_ROWS = 24;
const DEFAULT_COLS = 80;

type PtyQuery = z.output<typeof ptyQuery>;

export interface PtyDeps {
  ctx: ServerContext;
  /** The key the app's onRequest hook authenticated for this request. */
  keyOf(request: FastifyRequest): ApiKeyRecord | undefined;
  /** Terminals one key may have open at once (default DEFAULT_MAX_TERMINALS_PER_KEY). */
  maxPerKey?: number;
}

function terminalLimit(limit: number): ApiError {
  return new ApiError(
    429,
    'TERMINAL_LIMIT',
    `this API key has ${limit} terminals open, its limit: close one (or ask the operator to raise ` +
      'ironcage serve --max-terminals-per-key)',
  );
}

interface Prepared {
  sandbox: Sandbox;
  key: ApiKeyRecord;
  query: PtyQuery;
}

function upgradeRequired(): ApiError {
  return new ApiError(
    426,
    'UPGRADE_REQUIRED',
    'this route is a WebSocket: connect with a WebSocket client (Upgrade: websocket)',
  );
}

/** The route as the OpenAPI document lists it; `registerPtyRoutes` serves it. */
export const ptyRoute: RouteDef = defineRoute({
  method: 'GET',
  url: PTY_URL,
  summary:
    'Interactive terminal over a WebSocket (upgrade; auth and ownership are checked before the 101). Binary ' +
    'frames: terminal bytes both ways. Text frames: JSON control messages; client → server ' +
    '{type:"resize",rows,cols} or {type:"kill",signal?}; server → client {type:"start",processId,pid}, ' +
    '{type:"lost",bytes}, {type:"error",code,message}, then {type:"exit",exitCode,signal} and close 1000. ' +
    'Closing the socket kills the process.',
  tag: 'commands',
  auth: 'sandbox:write',
  params: sandboxIdParams,
  query: ptyQuery,
  responses: {
    101: { description: 'Switching Protocols: the terminal session' },
    404: SANDBOX_404,
    426: { description: 'Not a WebSocket upgrade request', schema: errorSchema },
  },
  async handler() {
    throw upgradeRequired();
  },
});

/** Registers the WebSocket route (the app must have registered @fastify/websocket first). */
export async function registerPtyRoutes(app: FastifyInstance, deps: PtyDeps): Promise<RouteDef[]> {
  const { ctx } = deps;
  const prepared = new WeakMap<FastifyRequest, Prepared>();
  const maxPerKey = deps.maxPerKey ?? DEFAULT_MAX_TERMINALS_PER_KEY;
  /** Open terminals per key id. */
  const open = new Map<string, number>();

  app.route({
    method: 'GET',
    url: PTY_URL,
    // Read by the app's onRequest hook: same authentication, scope and rate limit as every route.
    config: { auth: ptyRoute.auth },
    preHandler: async (request: FastifyRequest) => {
      const params = sandboxIdParams.safeParse(request.params);
      if (!params.success) throw new ApiError(400, 'INVALID_INPUT', describeZodError(params.error, 'path'));
      const query = ptyQuery.safeParse({ ...(request.query as object) });
      if (!query.success) {
        throw new ApiError(400, 'INVALID_INPUT', describeZodError(query.error, 'query string'));
      }
      const key = deps.keyOf(request);
      if (key === undefined) throw new ApiError(401, 'UNAUTHENTICATED', 'no API key');
      const { id } = params.data;
      const missing = notFound(`sandbox ${id}`, 'list yours with GET /v1/sandboxes');
      const { sandbox } = await findOwnedSandbox(ctx, key, id, 'sandbox:write', missing);
      if (sandbox.state !== 'running') {
        throw new ApiError(409, 'SANDBOX_NOT_RUNNING', `sandbox ${id} is ${sandbox.state}; resume it first`);
      }
      // The readable refusal; wsHandler enforces the limit exactly (upgrades can race past this check).
      if ((open.get(key.id) ?? 0) >= maxPerKey) throw terminalLimit(maxPerKey);
      prepared.set(request, { sandbox, key, query: query.data });
    },
    handler: async (_request: FastifyRequest, reply: FastifyReply) => {
      reply.header('upgrade', 'websocket');
      throw upgradeRequired();
    },
    wsHandler: (socket: WebSocket, request: FastifyRequest) => {
      const ready = prepared.get(request);
      if (ready === undefined) {
        socket.close(1011, 'not prepared');
        return;
      }
      const keyId = ready.key.id;
      const count = (open.get(keyId) ?? 0) + 1;
      if (count > maxPerKey) {
        const { code, message } = terminalLimit(maxPerKey);
        socket.send(JSON.stringify({ type: 'error', code, message, status: 429 }));
        socket.close(1008, 'terminal limit');
        return;
      }
      open.set(keyId, count);
      socket.once('close', () => {
        const left = (open.get(keyId) ?? 1) - 1;
        if (left > 0) open.set(keyId, left);
        else open.delete(keyId);
      });
      void new PtySession(socket, ready, request, ctx).run();
    },
  });
  return [ptyRoute];
}

/** /bin/bash when the sandbox has it, else /bin/sh; both as login shells. */
async function defaultShell(sandbox: Sandbox): Promise<string[]> {
  const bash = await sandbox.files.exists('/bin/bash').catch(() => false);
  return [bash ? '/bin/bash' : '/bin/sh', '-l'];
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** One terminal: the process, its output pump (with backpressure) and the ordered input queue. */
class PtySession {
  readonly #socket: WebSocket;
  readonly #prep: Prepared;
  readonly #request: FastifyRequest;
  readonly #ctx: ServerContext;
  #handle: ProcessHandle | null = null;
  #closed = false;
  #finished = false;
  /** Every message is handled in arrival order, after the process started. */
  #queue: Promise<void>;
  readonly #startQueue: () => void;
  #pending = 0;
  // Output pump state: bytes delivered (absolute offset), the live attachment, and pause bookkeeping.
  #offset = 0;
  #attachment: Attachment | null = null;
  #attaching = false;
  #paused = false;

  constructor(socket: WebSocket, prep: Prepared, request: FastifyRequest, ctx: ServerContext) {
    this.#socket = socket;
    this.#prep = prep;
    this.#request = request;
    this.#ctx = ctx;
    let start = () => {};
    this.#queue = new Promise((resolve) => {
      start = resolve;
    });
    this.#startQueue = start;
    socket.on('message', (data, isBinary) => this.#enqueue(data, isBinary));
    let answered = true;
    socket.on('pong', () => {
      answered = true;
    });
    const ping = setInterval(() => {
      if (!answered) socket.terminate();
      answered = false;
      socket.ping();
    }, PING_INTERVAL_MS);
    ping.unref();
    socket.on('close', () => {
      clearInterval(ping);
      this.#closed = true;
      this.#detach();
      // A terminal whose client left has no reader: the process goes too.
      if (!this.#finished) this.#handle?.kill('SIGKILL').catch(() => {});
    });
  }

  async run(): Promise<void> {
    const { sandbox, query } = this.#prep;
    let onStopped = () => {};
    const stopped = new Promise<'stopped'>((resolve) => {
      onStopped = () => resolve('stopped');
    });
    sandbox.once('stopped', onStopped);
    try {
      const argv = query.cmd ?? (await defaultShell(sandbox));
      const rows = query.rows ?? DEFAULT_ROWS;
      const cols = query.cols ?? DEFAULT_COLS;
      const handle = await this.#ctx.metrics.timeExec('rest', () =>
        sandbox.commands.run(argv, {
          background: true,
          pty: { rows, cols },
          env: { TERM: 'xterm-256color', ...(query.env ?? {}) },
          ...(query.cwd === undefined ? {} : { cwd: query.cwd }),
          tag: 'pty',
        }),
      );
      this.#handle = handle;
      await this.#audit({ argv: auditArgv(argv), rows, cols, processId: handle.id });
      if (this.#closed) {
        await handle.kill('SIGKILL').catch(() => {});
        return;
      }
      this.#sendControl({ type: 'start', processId: handle.id, pid: handle.pid });
      await this.#attach();
      this.#startQueue();
      const outcome = await Promise.race([handle.wait(), stopped]);
      this.#finished = true;
      if (outcome === 'stopped') {
        this.#fail(new ApiError(409, 'SANDBOX_STOPPED', `sandbox ${sandbox.id} stopped`));
        return;
      }
      await this.#flush();
      this.#exit(outcome);
    } catch (err) {
      this.#finished = true;
      this.#fail(err);
    } finally {
      sandbox.off('stopped', onStopped);
      // Messages still queued are dropped (the session is over) rather than left waiting.
      this.#startQueue();
    }
  }

  async #audit(payload: Record<string, unknown>): Promise<void> {
    try {
      await this.#ctx.store.appendAuditEvent({
        requestId: this.#request.id,
        keyId: this.#prep.key.id,
        sandboxId: this.#prep.sandbox.id,
        type: 'pty.start',
        payload,
      });
    } catch (err) {
      this.#request.log.error({ err }, 'audit event pty.start not recorded');
    }
  }

  // ---------------------------------------------------------------------------------------- input

  #enqueue(data: RawData, isBinary: boolean): void {
    const bytes = toBuffer(data);
    this.#pending++;
    if (this.#pending > MAX_PENDING_MESSAGES) this.#socket.pause();
    this.#queue = this.#queue
      .then(() => this.#handleMessage(bytes, isBinary))
      .catch((err: unknown) => this.#sendError(err))
      .finally(() => {
        this.#pending--;
        if (this.#pending <= MAX_PENDING_MESSAGES / 2 && this.#socket.isPaused) this.#socket.resume();
      });
  }

  async #handleMessage(bytes: Buffer, isBinary: boolean): Promise<void> {
    const handle = this.#handle;
    if (handle === null || this.#finished) return;
    if (isBinary) {
      await handle.sendStdin(bytes);
      return;
    }
    if (bytes.length > MAX_CONTROL_BYTES) {
      throw new ApiError(400, 'INVALID_MESSAGE', `control messages are at most ${MAX_CONTROL_BYTES} bytes`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch {
      throw new ApiError(400, 'INVALID_MESSAGE', 'a text frame must be a JSON control message');
    }
    const message = ptyClientMessage.safeParse(parsed);
    if (!message.success) {
      throw new ApiError(400, 'INVALID_MESSAGE', describeZodError(message.error, 'control message'));
    }
    if (message.data.type === 'resize') await handle.resize(message.data.rows, message.data.cols);
    else await handle.kill(message.data.signal ?? 'SIGKILL');
  }

  // --------------------------------------------------------------------------------------- output

  #deliver = (data: Buffer): void => {
    this.#offset += data.length;
    if (this.#closed) return;
    this.#socket.send(data, { binary: true }, () => this.#maybeResume());
    if (!this.#paused && this.#socket.bufferedAmount > HIGH_WATER) {
      // The client reads slower than the process writes: stop taking output; the agent's ring keeps it.
      this.#paused = true;
      this.#detach();
    }
  };

  async #attach(): Promise<void> {
    const handle = this.#handle;
    if (handle === null || this.#attaching || this.#closed) return;
    this.#attaching = true;
    try {
      const attachment = await handle.attach({ fromOffset: this.#offset, onStdout: this.#deliver });
      const lost = attachment.lost.stdout;
      if (lost > 0) {
        this.#offset += lost;
        this.#sendControl({ type: 'lost', bytes: lost });
      }
      if (this.#paused || this.#closed) attachment.detach();
      else this.#attachment = attachment;
    } finally {
      this.#attaching = false;
    }
  }

  #detach(): void {
    this.#attachment?.detach();
    this.#attachment = null;
  }

  #maybeResume(): void {
    if (!this.#paused || this.#finished || this.#closed) return;
    if (this.#socket.bufferedAmount > LOW_WATER) return;
    this.#paused = false;
    this.#attach().catch((err: unknown) => this.#sendError(err));
  }

  /** After the exit: anything not yet delivered (paused, or skipped by the agent) is replayed once. */
  async #flush(): Promise<void> {
    this.#detach();
    const handle = this.#handle;
    if (handle === null || this.#closed || this.#offset >= handle.offsets.stdout) return;
    const attachment = await handle.attach({ fromOffset: this.#offset, onStdout: this.#deliver });
    attachment.detach();
    if (attachment.lost.stdout > 0) this.#sendControl({ type: 'lost', bytes: attachment.lost.stdout });
  }

  // ------------------------------------------------------------------------------------ control out

  #sendControl(message: Record<string, unknown>): void {
    if (!this.#closed) this.#socket.send(JSON.stringify(message));
  }

  #sendError(err: unknown): void {
    const api = toApiError(err);
    if (api.status >= 500) this.#request.log.error({ err }, 'pty session error');
    this.#sendControl({ type: 'error', code: api.code, message: api.message, status: api.status });
  }

  #exit(result: CommandResult): void {
    this.#sendControl({ type: 'exit', exitCode: result.exitCode, signal: result.signal });
    if (!this.#closed) this.#socket.close(1000, 'exited');
  }

  #fail(err: unknown): void {
    this.#sendError(err);
    this.#detach();
    if (!this.#closed) this.#socket.close(1011, 'failed');
  }
}
