/**
 * /v1/secrets (admin): the credential vault. Values are write-only: no response, log line or error carries
 * one (the vault never puts a value in a message, and the JSON parser's errors are not echoed either).
 */

import { z } from 'zod';
import { notFound } from '../errors.js';
import { createSecretBody, errorSchema, secretInfoSchema, secretParams } from '../schemas.js';
import { defineRoute, type RouteDef, type ServerContext } from './route.js';

const secretListSchema = z.object({ secrets: z.array(secretInfoSchema) });

export function secretRoutes(ctx: ServerContext): RouteDef[] {
  const vault = () => ctx.services.vault;
  return [
    defineRoute({
      method: 'POST',
      url: '/v1/secrets',
      summary: 'Create or replace a secret; sandboxes naming it in policy.network.secrets see a placeholder',
      tag: 'secrets',
      auth: 'secret:manage',
      body: createSecretBody,
      status: 201,
      responses: {
        201: { description: 'Stored (the value is never returned)', schema: secretInfoSchema },
        400: { description: 'Invalid name, value or binding', schema: errorSchema },
      },
      async handler(call) {
        const { name, value, hosts, headers, paths, body } = call.body;
        const info = vault().set(name, value, {
          hosts,
          ...(headers === undefined ? {} : { headers }),
          ...(paths === undefined ? {} : { paths }),
          ...(body === undefined ? {} : { body }),
        });
        await call.audit('secret.set', { name, hosts: info.hosts });
        return info;
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/secrets',
      summary: 'Secret names and bindings (never values)',
      tag: 'secrets',
      auth: 'secret:manage',
      responses: { 200: { description: 'Secrets', schema: secretListSchema } },
      async handler() {
        return { secrets: vault().list() };
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/v1/secrets/:name',
      summary: 'Delete a secret (running sandboxes keep their placeholder, which no longer resolves)',
      tag: 'secrets',
      auth: 'secret:manage',
      params: secretParams,
      responses: {
        200: { description: 'Deleted', schema: z.object({ name: z.string() }) },
        404: { description: 'No such secret', schema: errorSchema },
      },
      async handler(call) {
        if (!vault().delete(call.params.name)) {
          throw notFound(`secret ${call.params.name}`, 'list them with GET /v1/secrets');
        }
        await call.audit('secret.delete', { name: call.params.name });
        return { name: call.params.name };
      },
    }),
  ];
}
