/** /v1/keys (admin): API keys. The plaintext is in the create response only; the store keeps its hash. */
import { z } from 'zod';
import { createApiKey } from '../auth/api-keys.js';
import { ApiError, notFound } from '../errors.js';
import {
  createdKeySchema,
  createKeyBody,
  errorSchema,
  keyInfoSchema,
  keyParams,
  listKeysQuery,
} from '../schemas.js';
import type { ApiKeyRecord } from '../store/types.js';
import { defineRoute, type RouteDef, type ServerContext } from './route.js';

const keyListSchema = z.object({ keys: z.array(keyInfoSchema) });

function keyInfo(record: ApiKeyRecord) {
  return {
    id: record.id,
    name: record.name,
    prefix: record.prefix,
    scopes: [...record.scopes],
    limits: { ...record.limits },
    createdAt: record.createdAt,
    revokedAt: record.revokedAt,
  };
}

export function keyRoutes(ctx: ServerContext): RouteDef[] {
  return [
    defineRoute({
      method: 'POST',
      url: '/v1/keys',
      summary: 'Create an API key; the response is the only time its plaintext is shown',
      tag: 'keys',
      auth: 'key:manage',
      body: createKeyBody,
      status: 201,
      responses: {
        201: { description: 'Created', schema: createdKeySchema },
        400: { description: 'Invalid name, scopes or limits', schema: errorSchema },
      },
      async handler(call) {
        const limits = call.body.limits ?? {};
        const created = await createApiKey(ctx.store, {
          name: call.body.name,
          scopes: call.body.scopes,
          limits: {
            ...(limits.maxSandboxes === undefined ? {} : { maxSandboxes: limits.maxSandboxes }),
            ...(limits.requestsPerMinute === undefined
              ? {}
              : { requestsPerMinute: limits.requestsPerMinute }),
          },
        });
        await call.audit('key.create', { id: created.record.id, scopes: created.record.scopes });
        return { ...keyInfo(created.record), key: created.key };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/keys',
      summary: 'API keys, oldest first (?includeRevoked=true for revoked ones too)',
      tag: 'keys',
      auth: 'key:manage',
      query: listKeysQuery,
      responses: { 200: { description: 'Keys', schema: keyListSchema } },
      async handler(call) {
        const keys = await ctx.store.listApiKeys({ includeRevoked: call.query.includeRevoked ?? false });
        return { keys: keys.map(keyInfo) };
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/v1/keys/:keyId',
      summary: 'Revoke an API key (its sandboxes keep running until killed or expired)',
      tag: 'keys',
      auth: 'key:manage',
      params: keyParams,
      responses: {
        200: { description: 'Revoked', schema: keyInfoSchema },
        404: { description: 'No such key', schema: errorSchema },
        409: { description: 'It is the last active admin key', schema: errorSchema },
      },
      async handler(call) {
        const target = await ctx.store.getApiKey(call.params.keyId);
        if (target === null) throw notFound(`API key ${call.params.keyId}`, 'list them with GET /v1/keys');
        if (target.revokedAt === null && target.scopes.includes('admin')) {
          const admins = (await ctx.store.listApiKeys()).filter((k) => k.scopes.includes('admin'));
          if (admins.length <= 1) {
            throw new ApiError(
              409,
              'LAST_ADMIN_KEY',
              'refusing to revoke the last active admin key (nobody could manage the server); create another first',
            );
          }
        }
        const revoked = await ctx.store.revokeApiKey(target.id);
        await call.audit('key.revoke', { id: revoked.id });
        return keyInfo(revoked);
      },
    }),
  ];
}
