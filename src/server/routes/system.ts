/** Health, readiness, the OpenAPI document and Prometheus metrics. */
import { z } from 'zod';
import { buildOpenApiDocument } from '../openapi.js';
import { healthSchema, readySchema } from '../schemas.js';
import { defineRoute, type RouteDef, SENT, type ServerContext } from './route.js';

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
        const text = await ctx.metrics.render();
        call.reply.header('content-type', ctx.metrics.contentType).send(text);
        return SENT;
      },
    }),
  ];
}
