/**
 * The HTTP API as a Fastify instance, built from a started SandboxManager, an open Store and the egress
 * services. Nothing here listens: `ironcage serve` does that (serve.ts), tests inject or listen on port 0.
 *
 * Request pipeline: request id (x-request-id, echoed) → route lookup → authentication, scope and rate limit
 * (onRequest, before any body is read) → body parsing (JSON, or a raw stream for uploads) → zod validation
 * of params, query and body → handler. Every failure on the way is `{ error: { code, message } }`.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { EgressServices } from '../egress/services.js';
import type { SandboxManager } from '../sandbox/manager.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { authenticate, presentedKeyFromHeaders } from './auth/api-keys.js';
import { type Action, authorize } from './auth/authorize.js';
import { RateLimiter } from './auth/limits.js';
import { registerE2bRoutes } from './e2b/index.js';
import { ApiError, describeZodError, notFound, toApiError } from './errors.js';
import { type McpHttpOptions, registerMcpRoutes } from './mcp-http.js';
import { ServerMetrics } from './metrics.js';
import { commandRoutes } from './routes/commands.js';
import { fileRoutes } from './routes/files.js';
import { keyRoutes } from './routes/keys.js';
import { networkRoutes } from './routes/network.js';
import { registerPtyRoutes, WEBSOCKET_MAX_MESSAGE_BYTES } from './routes/pty.js';
import { type Call, type RouteDef, SENT, type ServerContext } from './routes/route.js';
import { findOwnedSandbox, sandboxRoutes } from './routes/sandboxes.js';
import { secretRoutes } from './routes/secrets.js';
import { systemRoutes } from './routes/system.js';
import { templateRoutes } from './routes/templates.js';
import { endWatchStreams, watchRoutes } from './routes/watch.js';
import type { ApiKeyRecord, Store } from './store/types.js';
import { parseUntrustedJson } from './untrusted-json.js';

export interface AppOptions {
  /** Fastify's logger (pino): true, or its options. Default off. */
  logger?: boolean | Record<string, unknown>;
  /** Largest JSON body, bytes (default 1 MiB). Uploads and stdin are streams and not bound by it. */
  bodyLimit?: number;
  /** Per-key request buckets (default: a new one). */
  rateLimiter?: RateLimiter;
  /** Silence after which NDJSON and MCP event streams get a heartbeat, ms (default 15 s; 0 disables). */
  heartbeatMs?: number;
  /** The /mcp endpoint's limits, or false to serve no /mcp at all. */
  mcp?: McpHttpOptions | false;
  /** Terminals one key may have open at once (default DEFAULT_MAX_TERMINALS_PER_KEY). */
  maxTerminalsPerKey?: number;
}

export interface BuildAppInput {
  /** Started (start() resolved). The app never closes it: its owner decides whether sandboxes are kept. */
  manager: SandboxManager;
  store: Store;
  services: EgressServices;
  options?: AppOptions;
}

export interface ReconcileReport {
  /** Ownership rows whose sandbox no longer exists (deleted). */
  staleRows: string[];
  /** Live sandboxes without an owner row, which no key could reach (killed). */
  unowned: string[];
}

type RouteConfig = { auth?: RouteDef['auth'] };

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const JSON_TYPES = ['application/json', 'application/merge-patch+json'];

/** JSON without prototype keys; parse errors never echo the body (it may hold a secret value). */
function parseJson(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return parseUntrustedJson(text);
  } catch {
    throw new ApiError(
      400,
      'INVALID_JSON',
      'request body is not valid JSON (keys __proto__ and constructor are refused)',
    );
  }
}

function parse<S extends z.ZodTypeAny>(schema: S | undefined, value: unknown, where: string): z.output<S> {
  if (schema === undefined) return undefined as z.output<S>;
  const result = schema.safeParse(value);
  if (!result.success) throw new ApiError(400, 'INVALID_INPUT', describeZodError(result.error, where));
  return result.data;
}

/**
 * Builds the app and reconciles ownership with the manager: rows of sandboxes that are gone are deleted,
 * sandboxes no row owns are killed (nobody could reach them), and every live sandbox's end removes its row.
 */
export async function buildApp(
  input: BuildAppInput,
): Promise<{ app: FastifyInstance; reconciled: ReconcileReport }> {
  const { manager, store, services } = input;
  const options = input.options ?? {};
  const limiter = options.rateLimiter ?? new RateLimiter();
  const metrics = new ServerMetrics(manager);
  const keys = new WeakMap<FastifyRequest, ApiKeyRecord>();
  const tracked = new WeakSet<Sandbox>();
  let accepting = true;

  const ctx: ServerContext = {
    manager,
    store,
    services,
    metrics,
    ...(options.heartbeatMs === undefined ? {} : { ndjsonHeartbeatMs: options.heartbeatMs }),
    get accepting() {
      return accepting;
    },
    track(sandbox) {
      if (tracked.has(sandbox)) return;
      tracked.add(sandbox);
      metrics.observeSandbox(sandbox);
      // The ownership row is the sandbox's liveness (quota counts rows): it goes when the sandbox does.
      sandbox.once('stopped', (reason) => {
        void store.deleteSandbox(sandbox.id).catch(() => {});
        void store
          .appendAuditEvent({ type: 'sandbox.stopped', sandboxId: sandbox.id, payload: { reason } })
          .catch(() => {});
      });
    },
  };

  const reconciled = await reconcile(ctx);

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    frameworkErrors: (err, request, rawReply) => {
      void (rawReply as FastifyReply)
        .header('x-request-id', request.id)
        .status(400)
        .send({ error: { code: 'BAD_URL', message: `${err.message}; check the URL's percent-encoding` } });
    },
  });

  // Only JSON (and raw streams where a route says so): anything else is a clear 415, not a guess.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(JSON_TYPES, { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseJson(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  app.setErrorHandler((err, request, rawReply) => {
    const api = toApiError(err);
    if (api.status >= 500) request.log.error({ err }, 'request failed');
    const reply = rawReply as FastifyReply;
    void reply
      .header('x-request-id', request.id)
      .headers({ ...api.headers })
      .status(api.status)
      .send({ error: { code: api.code, message: api.message } });
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0]?.slice(0, 200) ?? '';
    void reply.status(404).send({
      error: {
        code: 'ROUTE_NOT_FOUND',
        message: `no route ${request.method} ${path}; the routes are listed in GET /openapi.json`,
      },
    });
  });

  // WebSocket upgrades are routed like requests (onRequest authentication runs before any 101); a route opts
  // in with a wsHandler, an upgrade to any other route is closed. Registered before the other hooks: its own
  // onRequest marks the request as an upgrade, so a refusal by a later hook still closes the socket.
  await app.register(fastifyWebsocket, { options: { maxPayload: WEBSOCKET_MAX_MESSAGE_BYTES } });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    const auth = (request.routeOptions.config as RouteConfig | undefined)?.auth;
    if (auth === undefined || auth === 'public') return;
    const key = await authenticate(store, presentedKeyFromHeaders(request.headers));
    // Per-sandbox actions check the owner later (call.sandbox); here only scope and revocation.
    authorize(key, auth, key.id);
    limiter.enforce(key);
    keys.set(request, key);
  });

  // Request latency and counts by route pattern, and refusals (auth, rate limit, quota) in every scope.
  metrics.instrument(app);

  // Connections that never sent a byte: fetch (undici) opens a spare one after a client aborts a stream. Node's
  // idle-connection close does not count them as idle, so closing the app would wait for them until a timeout.
  const connections = new Set<Socket>();
  app.server.on('connection', (socket: Socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
  });

  app.addHook('preClose', async () => {
    accepting = false;
    for (const socket of connections) if (socket.bytesRead === 0) socket.destroy();
    // Watch streams never end on their own: end them, or closing would wait for every watching client.
    endWatchStreams(ctx);
  });

  const routes: RouteDef[] = [];
  routes.push(
    ...systemRoutes(ctx, () => routes),
    ...sandboxRoutes(ctx),
    ...commandRoutes(ctx),
    ...fileRoutes(ctx),
    ...watchRoutes(ctx),
    ...networkRoutes(ctx),
    ...secretRoutes(ctx),
    ...templateRoutes(ctx),
    ...keyRoutes(ctx),
  );

  const register = (instance: FastifyInstance, def: RouteDef) => {
    instance.route({
      method: def.method,
      url: def.url,
      config: { auth: def.auth } satisfies RouteConfig,
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        const call = makeCall(def, request, reply);
        const result = await def.handler(call);
        if (result === SENT) return reply;
        if (def.status !== undefined && reply.statusCode === 200) reply.status(def.status);
        return result;
      },
    });
  };

  const makeCall = (
    def: RouteDef,
    request: FastifyRequest,
    reply: FastifyReply,
  ): Call<unknown, unknown, unknown> => {
    const key = keys.get(request) as ApiKeyRecord;
    const params = parse(def.params, request.params, 'path parameters');
    const query = parse(def.query, { ...(request.query as object) }, 'query string');
    const body = def.bodyKind === 'raw' ? undefined : parse(def.body, request.body, 'request body');
    if (def.body === undefined && def.bodyKind !== 'raw' && request.body !== undefined) {
      throw new ApiError(400, 'INVALID_INPUT', `${def.method} ${def.url} takes no request body`);
    }
    return {
      request,
      reply,
      key,
      requestId: request.id,
      params,
      query,
      body,
      ctx,
      audit: async (type, payload, sandboxId = null) => {
        try {
          await store.appendAuditEvent({ requestId: request.id, keyId: key.id, sandboxId, type, payload });
        } catch (err) {
          request.log.error({ err }, `audit event ${type} not recorded`);
        }
      },
      sandbox: (id: string, action: Action) =>
        findOwnedSandbox(
          ctx,
          key,
          id,
          action,
          notFound(`sandbox ${id}`, 'list yours with GET /v1/sandboxes'),
        ),
    };
  };

  for (const def of routes) if (def.bodyKind !== 'raw') register(app, def);
  await app.register(async (scope) => {
    // Uploads and stdin: the body is handed to the handler as the request stream, whatever its media type.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
    for (const def of routes) if (def.bodyKind === 'raw') register(scope, def);
  });

  // E2B wire compatibility: the unmodified e2b SDK's control plane under /e2b, its sandbox plane under /e2b/envd.
  await registerE2bRoutes(app, { ctx, limiter });
  // MCP over streamable HTTP, with the same keys and tenancy as the rest of the API.
  if (options.mcp !== false) {
    await registerMcpRoutes(app, {
      ctx,
      limiter,
      ...(options.heartbeatMs === undefined ? {} : { sseKeepAliveMs: options.heartbeatMs }),
      ...options.mcp,
    });
  }

  // Terminals over WebSocket: served by their module (upgrade), listed in the OpenAPI document from here on.
  routes.push(
    ...(await registerPtyRoutes(app, {
      ctx,
      keyOf: (request) => keys.get(request),
      ...(options.maxTerminalsPerKey === undefined ? {} : { maxPerKey: options.maxTerminalsPerKey }),
    })),
  );

  // Not `return app`: a Fastify instance is thenable, and an async function would await it.
  return { app, reconciled };
}

async function reconcile(ctx: ServerContext): Promise<ReconcileReport> {
  const report: ReconcileReport = { staleRows: [], unowned: [] };
  const owned = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await ctx.store.listSandboxes({ limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const record of page.items) {
      const sandbox = ctx.manager.get(record.sandboxId);
      if (sandbox === undefined || sandbox.state === 'stopped') report.staleRows.push(record.sandboxId);
      else owned.add(record.sandboxId);
    }
    cursor = page.next ?? undefined;
  } while (cursor !== undefined);
  for (const id of report.staleRows) await ctx.store.deleteSandbox(id);
  for (const sandbox of ctx.manager.list()) {
    if (owned.has(sandbox.id)) ctx.track(sandbox);
    else {
      report.unowned.push(sandbox.id);
      await sandbox.kill();
    }
  }
  return report;
}
