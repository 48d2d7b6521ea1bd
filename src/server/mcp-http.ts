/**
 * The MCP server (src/mcp/server.ts) on the HTTP API at /mcp, over the SDK's streamable HTTP transport, with the
 * API's own keys. Sessions are stateful (Mcp-Session-Id): the tools keep per-session state (the sandboxes a
 * session created, which sandbox_list shows and closing kills), so a stateless server that builds a new MCP
 * server per request would kill a sandbox the moment the request that created it ends.
 *
 * Each session belongs to the key that initialized it; every request re-authenticates and must present that
 * same key (another key gets the transport's "session not found"). Sandboxes a session creates are recorded as
 * owned by the key exactly like POST /v1/sandboxes (quota-checked reservation, then create, then tracking), so
 * the REST API, quotas and listings see them. Sessions are bounded in number (overall and per key) and closed
 * when idle, on DELETE, and when the app closes; closing one kills its sandboxes.
 */
import { randomUUID } from 'node:crypto';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  createSandboxMcpServer,
  type McpLimits,
  McpToolError,
  type SandboxMcpServer,
} from '../mcp/server.js';
import type { CreateOptions } from '../sandbox/manager.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { authenticate, presentedKeyFromHeaders } from './auth/api-keys.js';
import { authorize } from './auth/authorize.js';
import { QuotaExceededError } from './auth/errors.js';
import type { RateLimiter } from './auth/limits.js';
import { ApiError } from './errors.js';
import type { ServerContext } from './routes/route.js';
import { createOwnedSandbox } from './routes/sandboxes.js';
import type { ApiKeyRecord } from './store/types.js';

export const MCP_PATH = '/mcp';

/** Session bounds when McpHttpDeps names none. */
export const MCP_HTTP_DEFAULTS = {
  maxSessions: 64,
  maxSessionsPerKey: 8,
  sessionIdleMs: 30 * 60_000,
} as const;

export interface McpHttpDeps {
  ctx: ServerContext;
  limiter: RateLimiter;
  /** Limits of each session's MCP server (its maxSandboxes is per session; the key's quota applies too). */
  limits?: Partial<McpLimits>;
  /** Open sessions across every key (default 64). */
  maxSessions?: number;
  /** Open sessions of one key (default 8). */
  maxSessionsPerKey?: number;
  /** A session without any request (and no open stream) for this long is closed (default 30 minutes). */
  sessionIdleMs?: number;
  /** Silence after which an open SSE stream gets a keep-alive comment, ms (default 15 s; 0 disables). */
  sseKeepAliveMs?: number;
}

/** What an operator sets on the /mcp endpoint (`ironcage serve --mcp-*`). */
export type McpHttpOptions = Omit<McpHttpDeps, 'ctx' | 'limiter'>;

interface Session {
  mcp: SandboxMcpServer;
  transport: StreamableHTTPServerTransport;
  /** Refreshed on every request, so a key's revocation or new quota applies at once. */
  key: ApiKeyRecord;
  lastSeen: number;
  /** Requests in progress, an open GET event stream included: a session with one is never idle. */
  active: number;
  closed: boolean;
}

/** Registers POST, GET and DELETE /mcp in their own scope. */
export async function registerMcpRoutes(app: FastifyInstance, deps: McpHttpDeps): Promise<void> {
  const { ctx, limiter } = deps;
  const maxSessions = deps.maxSessions ?? MCP_HTTP_DEFAULTS.maxSessions;
  const maxPerKey = deps.maxSessionsPerKey ?? MCP_HTTP_DEFAULTS.maxSessionsPerKey;
  const idleMs = deps.sessionIdleMs ?? MCP_HTTP_DEFAULTS.sessionIdleMs;
  /** Every open session, initialized or not (so pending initializations count against the bounds). */
  const sessions = new Set<Session>();
  const byId = new Map<string, Session>();
  const keys = new WeakMap<FastifyRequest, ApiKeyRecord>();

  const closeSession = async (session: Session): Promise<void> => {
    if (session.closed) return;
    session.closed = true;
    sessions.delete(session);
    const id = session.transport.sessionId;
    if (id !== undefined && byId.get(id) === session) byId.delete(id);
    await session.transport.close().catch(() => {});
    await session.mcp.close().catch(() => {});
  };

  const sweep = setInterval(
    () => {
      const now = Date.now();
      for (const session of sessions) {
        if (session.active === 0 && now - session.lastSeen > idleMs) void closeSession(session);
      }
    },
    Math.min(60_000, Math.max(100, Math.floor(idleMs / 2))),
  );
  sweep.unref();

  // preClose, not onClose: open event streams would otherwise keep the listening server from closing.
  app.addHook('preClose', async () => {
    clearInterval(sweep);
    await Promise.all([...sessions].map(closeSession));
  });

  /** sandbox_create of a session: the same reservation, create and tracking as POST /v1/sandboxes. */
  const createOwned =
    (session: Session) =>
    async (create: CreateOptions): Promise<Sandbox> => {
      const key = session.key;
      let sandbox: Sandbox;
      try {
        ({ sandbox } = await createOwnedSandbox(ctx, key, { via: 'mcp' }, create));
      } catch (err) {
        if (err instanceof QuotaExceededError) {
          throw new McpToolError(
            'LIMIT_REACHED',
            `${err.message}; kill one of this key's sandboxes (sandbox_kill, or DELETE /v1/sandboxes/<id>) first`,
          );
        }
        throw err;
      }
      const id = sandbox.id;
      await ctx.store
        .appendAuditEvent({
          keyId: key.id,
          sandboxId: id,
          type: 'sandbox.create',
          payload: { preset: create.preset ?? 'default', via: 'mcp' },
        })
        .catch(() => {});
      return sandbox;
    };

  const openSession = async (key: ApiKeyRecord): Promise<Session> => {
    if (sessions.size >= maxSessions) {
      throw new ApiError(429, 'MCP_SESSION_LIMIT', `this server holds at most ${maxSessions} MCP sessions`);
    }
    const own = [...sessions].filter((s) => s.key.id === key.id).length;
    if (own >= maxPerKey) {
      throw new ApiError(
        429,
        'MCP_SESSION_LIMIT',
        `API key ${key.id} already has ${own} open MCP sessions (at most ${maxPerKey}); ` +
          'close one (DELETE /mcp with its Mcp-Session-Id) or wait for it to idle out',
      );
    }
    const session = { key, lastSeen: Date.now(), active: 0, closed: false } as Session;
    session.mcp = createSandboxMcpServer(ctx.manager, deps.limits ?? {}, {
      createSandbox: createOwned(session),
      measureExec: (start) => ctx.metrics.timeExec('mcp', start),
    });
    session.transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      // A long tool call (a quiet command) must not look like a dead stream to the client or a proxy.
      ...(deps.sseKeepAliveMs === undefined ? {} : { keepAliveMs: deps.sseKeepAliveMs }),
      onsessioninitialized: (id) => {
        byId.set(id, session);
      },
    });
    // DELETE /mcp, or the transport failing, closes the session and kills its sandboxes.
    session.transport.onclose = () => void closeSession(session);
    sessions.add(session);
    await session.mcp.server.connect(session.transport);
    return session;
  };

  /** Hands the raw request to the transport; Fastify no longer answers it. */
  const serve = async (session: Session, request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    session.active += 1;
    session.lastSeen = Date.now();
    reply.raw.once('close', () => {
      session.active -= 1;
      session.lastSeen = Date.now();
    });
    reply.hijack();
    await session.transport.handleRequest(request.raw, reply.raw, request.body);
  };

  const sessionOf = (request: FastifyRequest, key: ApiKeyRecord): Session => {
    const header = request.headers['mcp-session-id'];
    const id = typeof header === 'string' ? header : undefined;
    if (id === undefined) {
      throw new ApiError(
        400,
        'MCP_SESSION_REQUIRED',
        'header Mcp-Session-Id is required: start a session with an initialize request (POST /mcp)',
      );
    }
    const session = byId.get(id);
    // Another key's session is answered like an unknown one, so session ids cannot be probed.
    if (session === undefined || session.closed || session.key.id !== key.id) {
      throw new ApiError(
        404,
        'MCP_SESSION_NOT_FOUND',
        'no such MCP session (closed, idle past its timeout, or opened with another key); initialize a new one',
      );
    }
    session.key = key;
    return session;
  };

  await app.register(async (scope) => {
    // Before the body is read, as for every other API route.
    scope.addHook('onRequest', async (request) => {
      const key = await authenticate(ctx.store, presentedKeyFromHeaders(request.headers));
      authorize(key, 'sandbox:create', key.id);
      limiter.enforce(key);
      keys.set(request, key);
    });

    scope.post(MCP_PATH, async (request, reply) => {
      const key = keys.get(request) as ApiKeyRecord;
      if (request.headers['mcp-session-id'] !== undefined) {
        await serve(sessionOf(request, key), request, reply);
        return reply;
      }
      if (!isInitializeRequest(request.body)) {
        throw new ApiError(
          400,
          'MCP_SESSION_REQUIRED',
          'a request without Mcp-Session-Id must be an initialize request (JSON-RPC method "initialize")',
        );
      }
      const session = await openSession(key);
      try {
        await serve(session, request, reply);
      } finally {
        // An initialize the transport refused leaves a session nobody can address.
        if (session.transport.sessionId === undefined) await closeSession(session);
      }
      return reply;
    });

    for (const method of ['GET', 'DELETE'] as const) {
      scope.route({
        method,
        url: MCP_PATH,
        handler: async (request, reply) => {
          await serve(sessionOf(request, keys.get(request) as ApiKeyRecord), request, reply);
          return reply;
        },
      });
    }
  });
}
