/** Health, readiness, the OpenAPI document and Prometheus metrics. */
import { z } from 'zod';
import { buildOpenApiDocument } from '../openapi.js';
import { healthSchema, readySchema } from '../schemas.js';
import { defineRoute, type RouteDef, SENT, type ServerContext } from './route.js';

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function systemRoutes(ctx: ServerContext, allRoutes: () => readonly RouteDef[]): RouteDef[] {
  let openapi: Record<string, unknown> | null = null;
  return [
    defineRoute({
      method: 'GET',
      url: '/health',
      summary: 'Liveness: the process answers',
      tag: 'system',
      auth: 'public',
      responses: { 200: { description: 'Up', schema: healthSchema } },
      async handler() {
        return { status: 'ok' };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/ready',
      summary: 'Readiness: the store answers and the sandbox manager is usable',
      tag: 'system',
      auth: 'public',
      responses: {
        200: { description: 'Ready', schema: readySchema },
        503: {
          description: 'Not ready (starting or shutting down, or the store fails)',
          schema: readySchema,
        },
      },
      async handler(call) {
        const checks: Record<string, string> = {};
        try {
          await ctx.store.getApiKey('readiness-probe');
          checks.store = 'ok';
        } catch (err) {
          checks.store = `failing: ${(err as Error).message}`;
        }
        checks.manager = ctx.accepting ? 'ok' : 'shutting down';
        const ready = Object.values(checks).every((c) => c === 'ok');
        call.reply.status(ready ? 200 : 503);
        return { status: ready ? 'ready' : 'not-ready', checks };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/openapi.json',
      summary: 'This document',
      tag: 'system',
      auth: 'sandbox:list',
      responses: { 200: { description: 'OpenAPI 3.0 document', schema: z.record(z.unknown()) } },
      async handler() {
        openapi ??= buildOpenApiDocument(allRoutes());
        return openapi;
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/metrics',
      summary: 'Prometheus metrics (admin)',
      tag: 'system',
      auth: 'audit:read',
      responses: { 200: { description: 'Prometheus text format 0.0.4', contentType: 'text/plain' } },
      async handler(call) {
        const sandboxes = ctx.manager.list();
        const byState = { running: 0, paused: 0 };
        for (const s of sandboxes) if (s.state === 'running' || s.state === 'paused') byState[s.state]++;
        const lines = [
          '# HELP ironcage_sandboxes Sandboxes this server manages, by state.',
          '# TYPE ironcage_sandboxes gauge',
          `ironcage_sandboxes{state="running"} ${byState.running}`,
          `ironcage_sandboxes{state="paused"} ${byState.paused}`,
          '# HELP ironcage_execs_total Commands started through the API.',
          '# TYPE ironcage_execs_total counter',
          `ironcage_execs_total ${ctx.metrics.execs}`,
          '# HELP ironcage_http_requests_total HTTP requests by route and status.',
          '# TYPE ironcage_http_requests_total counter',
        ];
        for (const [key, count] of ctx.metrics.requests) {
          const [method, route, status] = key.split(' ');
          lines.push(
            `ironcage_http_requests_total{method="${escapeLabel(method ?? '')}",route="${escapeLabel(route ?? '')}",status="${status}"} ${count}`,
          );
        }
        call.reply.header('content-type', 'text/plain; version=0.0.4').send(`${lines.join('\n')}\n`);
        return SENT;
      },
    }),
  ];
}
