/**
 * What a route module declares: method, path, who may call it, the zod schemas of its inputs and outputs,
 * and the handler. app.ts registers these with Fastify and openapi.ts documents the very same objects.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { EgressServices } from '../../egress/services.js';
import type { SandboxManager } from '../../sandbox/manager.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import type { Action } from '../auth/authorize.js';
import type { ServerMetrics } from '../metrics.js';
import { errorSchema } from '../schemas.js';
import type { ApiKeyRecord, SandboxRecord, Store } from '../store/types.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface ResponseDoc {
  description: string;
  schema?: z.ZodTypeAny;
  /** Default application/json. */
  contentType?: string;
  /** A second representation of the same status (NDJSON beside JSON). */
  alt?: { contentType: string; schema: z.ZodTypeAny };
}

/** The 404 of every route under /v1/sandboxes/:id: another tenant's sandbox is answered the same way. */
export const SANDBOX_404: ResponseDoc = {
  description: 'No such sandbox (or not yours)',
  schema: errorSchema,
};

export type { ServerMetrics };

/** Everything a handler can reach: the library objects, the store, and the app's own state. */
export interface ServerContext {
  manager: SandboxManager;
  store: Store;
  services: EgressServices;
  /** What /metrics reports; the routes feed what only they can see (commands, creates). */
  metrics: ServerMetrics;
  /** Silence after which an NDJSON stream gets a `{"type":"heartbeat"}` line, ms (default 15 s). */
  ndjsonHeartbeatMs?: number;
  /** Calls `sandbox.once('stopped')` bookkeeping for a sandbox this server hands out (row removal, audit). */
  track(sandbox: Sandbox): void;
  /** False once the server is shutting down (readiness). */
  readonly accepting: boolean;
}

export interface Call<P, Q, B> {
  request: FastifyRequest;
  reply: FastifyReply;
  /** The authenticated key (routes with `auth: 'public'` never reach a handler that reads it). */
  key: ApiKeyRecord;
  requestId: string;
  params: P;
  query: Q;
  body: B;
  ctx: ServerContext;
  /** Appends an audit event with this request's id and key. Never throws (a failing store is logged). */
  audit(type: string, payload: unknown, sandboxId?: string | null): Promise<void>;
  /** The sandbox `id` if this key may act on it; 404 otherwise (also for other tenants' sandboxes). */
  sandbox(id: string, action: Action): Promise<{ sandbox: Sandbox; record: SandboxRecord }>;
}

export interface RouteDef<
  P extends z.ZodTypeAny = z.ZodTypeAny,
  Q extends z.ZodTypeAny = z.ZodTypeAny,
  B extends z.ZodTypeAny = z.ZodTypeAny,
> {
  method: HttpMethod;
  /** Fastify syntax: /v1/sandboxes/:id */
  url: string;
  summary: string;
  tag: string;
  /** `public`: no key needed; otherwise the action whose scope the key must hold. */
  auth: 'public' | Action;
  params?: P;
  query?: Q;
  /** JSON body schema; absent for bodiless routes. */
  body?: B;
  /** `raw`: the body is a byte stream of any media type (uploads, stdin). */
  bodyKind?: 'json' | 'raw';
  /** Also accept `application/merge-patch+json` as JSON. */
  mergePatch?: boolean;
  /** Status of a successful JSON result (default 200). */
  status?: number;
  responses: Record<number, ResponseDoc>;
  handler(call: Call<z.output<P>, z.output<Q>, z.output<B>>): Promise<unknown>;
}

/** Keeps the handler's parameter types tied to the schemas. */
export function defineRoute<
  P extends z.ZodTypeAny = z.ZodUndefined,
  Q extends z.ZodTypeAny = z.ZodUndefined,
  B extends z.ZodTypeAny = z.ZodUndefined,
>(def: RouteDef<P, Q, B>): RouteDef {
  return def as unknown as RouteDef;
}

/** Sentinel a handler returns when it has already sent (or is streaming) the reply itself. */
export const SENT = Symbol('sent');
