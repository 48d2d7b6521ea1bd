/** /v1/sandboxes: create, list, get, kill, TTL, pause/resume, snapshots. */
import { randomBytes } from 'node:crypto';
import type { z } from 'zod';
import { resolvePolicy } from '../../policy/merge.js';
import type { PresetName } from '../../policy/presets.js';
import type { SandboxPolicyInput } from '../../policy/schema.js';
import type { CreateOptions } from '../../sandbox/manager.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { type Action, authorize } from '../auth/authorize.js';
import { ForbiddenError } from '../auth/errors.js';
import { reserveSandbox } from '../auth/limits.js';
import { ApiError } from '../errors.js';
import {
  createSandboxBody,
  emptyBody,
  errorSchema,
  sandboxInfoSchema as infoSchema,
  listSandboxesQuery,
  resumeBody,
  sandboxIdParams,
  type sandboxInfoSchema,
  sandboxPageSchema,
  setTimeoutBody,
  snapshotBody,
  snapshotInfoSchema,
  snapshotListSchema,
  snapshotParams,
} from '../schemas.js';
import type { ApiKeyRecord, SandboxRecord } from '../store/types.js';
import { defineRoute, type RouteDef, SANDBOX_404, type ServerContext } from './route.js';
import { layerRequest, loadTemplate, type SandboxRequest } from './templates.js';

export type SandboxInfo = z.infer<typeof sandboxInfoSchema>;

export function sandboxInfo(sandbox: Sandbox, record: SandboxRecord): SandboxInfo {
  return {
    id: sandbox.id,
    state: sandbox.state,
    createdAt: sandbox.createdAt.toISOString(),
    deadline: sandbox.deadline === null ? null : new Date(sandbox.deadline).toISOString(),
    metadata: { ...record.metadata },
    owner: record.ownerKeyId,
    canPause: sandbox.canPause,
    network: { enabled: sandbox.network.enabled },
  };
}

/**
 * What a non-admin key may not put in a policy: host paths bound in (or revealed), host environment variables
 * copied in, private addresses reachable through the proxy (the host's own loopback included), and the
 * installation's vault secrets. Each would let one tenant reach what belongs to the host or to other tenants.
 */
export function tenantPolicyRefusals(policy: SandboxPolicyInput): string[] {
  const refused: string[] = [];
  const fs = policy.filesystem;
  for (const field of ['readOnly', 'writable', 'optional', 'reveal'] as const) {
    if ((fs?.[field]?.length ?? 0) > 0) refused.push(`policy.filesystem.${field} (host paths)`);
  }
  if ((policy.env?.pass?.length ?? 0) > 0) refused.push('policy.env.pass (host environment)');
  const network = policy.network;
  if (network?.mode === 'proxy') {
    if ((network.allowPrivate?.length ?? 0) > 0)
      refused.push('policy.network.allowPrivate (private addresses)');
    if ((network.secrets?.length ?? 0) > 0) refused.push('policy.network.secrets (vault secrets)');
  }
  return refused;
}

/**
 * The live sandbox `id` if `key` may do `action` on it. Otherwise `missing` (a 404), also for another tenant's
 * sandbox, so ids cannot be probed; a record whose sandbox has ended is dropped on the way.
 */
export async function findOwnedSandbox(
  ctx: Pick<ServerContext, 'store' | 'manager'>,
  key: ApiKeyRecord,
  id: string,
  action: Action,
  missing: Error,
): Promise<{ sandbox: Sandbox; record: SandboxRecord }> {
  const record = await ctx.store.getSandbox(id);
  if (record === null) throw missing;
  try {
    authorize(key, action, record.ownerKeyId);
  } catch (err) {
    if (err instanceof ForbiddenError && err.reason === 'not-owner') throw missing;
    throw err;
  }
  const sandbox = ctx.manager.get(id);
  if (sandbox === undefined || sandbox.state === 'stopped') {
    await ctx.store.deleteSandbox(id).catch(() => {});
    throw missing;
  }
  return { sandbox, record };
}

/**
 * Creates a sandbox owned by `key`: the ownership row is reserved first (the quota is checked in the same
 * transaction), removed again if the sandbox cannot start, and the server tracks the sandbox's end.
 */
export async function createOwnedSandbox(
  ctx: ServerContext,
  key: ApiKeyRecord,
  metadata: Record<string, string>,
  create: Omit<CreateOptions, 'id'>,
  template: string | null = null,
): Promise<{ sandbox: Sandbox; record: SandboxRecord }> {
  const id = randomBytes(8).toString('hex');
  const record = await reserveSandbox(ctx.store, key, { sandboxId: id, template, metadata });
  let sandbox: Sandbox;
  try {
    sandbox = await ctx.metrics.timeCreate(() => ctx.manager.create({ ...create, id }));
  } catch (err) {
    await ctx.store.deleteSandbox(id).catch(() => {});
    throw err;
  }
  ctx.track(sandbox);
  return { sandbox, record };
}

export function sandboxRoutes(ctx: ServerContext): RouteDef[] {
  const isAdmin = (key: ApiKeyRecord) => key.scopes.includes('admin');

  return [
    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes',
      summary: 'Create a sandbox',
      tag: 'sandboxes',
      auth: 'sandbox:create',
      body: createSandboxBody,
      status: 201,
      responses: {
        201: { description: 'Created and ready', schema: infoSchema },
        400: { description: 'Invalid policy or options', schema: errorSchema },
        403: { description: 'Policy fields reserved for admin keys', schema: errorSchema },
        404: { description: 'No such template', schema: errorSchema },
        429: { description: 'Sandbox quota or rate limit reached', schema: errorSchema },
      },
      async handler(call) {
        const { body, key } = call;
        // The client's own fields: the parsed policy has defaults filled in, which would override the preset.
        const sent = { ...(call.request.body as SandboxRequest | undefined) };
        delete (sent as { template?: unknown }).template;
        const request =
          body.template === undefined
            ? sent
            : layerRequest(await loadTemplate(ctx.store, body.template), sent);
        const raw = request.policy ?? {};
        if (!isAdmin(key)) {
          // Checked on the combined policy against the caller's rights: an admin's template may bind host paths
          // or name vault secrets, and a tenant cannot borrow those rights by naming the template.
          const refused = tenantPolicyRefusals(raw);
          if (refused.length > 0) {
            const via = body.template === undefined ? '' : ` (with template "${body.template}")`;
            throw new ApiError(
              403,
              'POLICY_FORBIDDEN',
              `these policy fields${via} need an admin key: ${refused.join(', ')}; remove them or ask an admin`,
            );
          }
        }
        const preset = (request.preset ?? 'default') as PresetName;
        // Layering raw input (not the defaulted parse) keeps the preset's values where the layers are silent.
        const resolved = resolvePolicy(preset, raw);
        if (resolved.seccomp !== 'default') {
          throw new ApiError(
            400,
            'POLICY_INVALID',
            `sandboxes run with the "default" seccomp profile; preset or policy asked for "${resolved.seccomp}"`,
          );
        }
        const { sandbox, record } = await createOwnedSandbox(
          ctx,
          key,
          request.metadata ?? {},
          {
            preset,
            policy: raw,
            ...(request.env === undefined ? {} : { env: request.env }),
            ...(request.timeoutMs === undefined ? {} : { timeoutMs: request.timeoutMs }),
          },
          body.template ?? null,
        );
        await call.audit(
          'sandbox.create',
          { preset, template: record.template, metadata: record.metadata },
          sandbox.id,
        );
        return sandboxInfo(sandbox, record);
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes',
      summary: 'List sandboxes (yours; every tenant for admin keys), filtered by metadata.<key>=<value>',
      tag: 'sandboxes',
      auth: 'sandbox:list',
      query: listSandboxesQuery,
      responses: {
        200: { description: 'One page', schema: sandboxPageSchema },
        400: { description: 'Bad filter or cursor', schema: errorSchema },
      },
      async handler(call) {
        const { query, key } = call;
        const metadata: Record<string, string> = {};
        for (const [k, v] of Object.entries(query)) {
          if (k.startsWith('metadata.') && typeof v === 'string') metadata[k.slice('metadata.'.length)] = v;
        }
        const owner = isAdmin(key) ? undefined : key.id;
        const page = await ctx.store.listSandboxes({
          ...(owner === undefined ? {} : { ownerKeyId: owner }),
          ...(Object.keys(metadata).length > 0 ? { metadata } : {}),
          ...(query.limit === undefined ? {} : { limit: query.limit as number }),
          ...(query.cursor === undefined ? {} : { cursor: query.cursor as string }),
        });
        const items: SandboxInfo[] = [];
        for (const record of page.items) {
          const sandbox = ctx.manager.get(record.sandboxId);
          if (sandbox !== undefined && sandbox.state !== 'stopped') items.push(sandboxInfo(sandbox, record));
        }
        return { items, next: page.next };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id',
      summary: 'Get a sandbox',
      tag: 'sandboxes',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      responses: { 200: { description: 'The sandbox', schema: infoSchema }, 404: SANDBOX_404 },
      async handler(call) {
        const { sandbox, record } = await call.sandbox(call.params.id, 'sandbox:read');
        return sandboxInfo(sandbox, record);
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/v1/sandboxes/:id',
      summary: 'Kill a sandbox (its processes, workspace and snapshots are gone)',
      tag: 'sandboxes',
      auth: 'sandbox:kill',
      params: sandboxIdParams,
      responses: {
        200: { description: 'Killed', schema: infoSchema },
        404: SANDBOX_404,
      },
      async handler(call) {
        const { sandbox, record } = await call.sandbox(call.params.id, 'sandbox:kill');
        await sandbox.kill();
        await ctx.store.deleteSandbox(sandbox.id);
        await call.audit('sandbox.kill', {}, sandbox.id);
        return sandboxInfo(sandbox, record);
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/timeout',
      summary: 'Set the TTL to timeoutMs from now (null: none)',
      tag: 'sandboxes',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      body: setTimeoutBody,
      responses: { 200: { description: 'Updated', schema: infoSchema }, 404: SANDBOX_404 },
      async handler(call) {
        const { sandbox, record } = await call.sandbox(call.params.id, 'sandbox:write');
        sandbox.setTimeout(call.body.timeoutMs);
        await call.audit('sandbox.timeout', { timeoutMs: call.body.timeoutMs }, sandbox.id);
        return sandboxInfo(sandbox, record);
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/pause',
      summary: 'Freeze every process of the sandbox (cgroup freezer)',
      tag: 'sandboxes',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      body: emptyBody.optional(),
      responses: {
        200: { description: 'Paused', schema: infoSchema },
        404: SANDBOX_404,
        409: { description: 'Stopped, or no freezer on this host', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox, record } = await call.sandbox(call.params.id, 'sandbox:write');
        await sandbox.pause();
        await call.audit('sandbox.pause', {}, sandbox.id);
        return sandboxInfo(sandbox, record);
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/resume',
      summary: 'Thaw a paused sandbox (optionally with a new TTL)',
      tag: 'sandboxes',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      body: resumeBody.optional(),
      responses: { 200: { description: 'Running', schema: infoSchema }, 404: SANDBOX_404 },
      async handler(call) {
        const { sandbox, record } = await call.sandbox(call.params.id, 'sandbox:write');
        const timeoutMs = call.body?.timeoutMs;
        await sandbox.resume(timeoutMs === undefined ? {} : { timeoutMs });
        await call.audit('sandbox.resume', {}, sandbox.id);
        return sandboxInfo(sandbox, record);
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/snapshots',
      summary: 'Checkpoint the workspace under a name',
      tag: 'snapshots',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      body: snapshotBody,
      status: 201,
      responses: {
        201: { description: 'Taken', schema: snapshotInfoSchema },
        404: SANDBOX_404,
        409: { description: 'Name taken, sandbox stopped, or no freezer', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        const info = await sandbox.snapshot(call.body.name);
        await call.audit('snapshot.create', { name: info.name, bytes: info.bytes }, sandbox.id);
        return info;
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/snapshots',
      summary: 'List snapshots, oldest first',
      tag: 'snapshots',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      responses: {
        200: { description: 'Snapshots, oldest first', schema: snapshotListSchema },
        404: SANDBOX_404,
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        return { snapshots: await sandbox.listSnapshots() };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/snapshots/:name/restore',
      summary: 'Roll the workspace back to a snapshot',
      tag: 'snapshots',
      auth: 'sandbox:write',
      params: snapshotParams,
      body: emptyBody.optional(),
      responses: {
        200: { description: 'Restored', schema: infoSchema },
        404: { description: 'No such sandbox or snapshot', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox, record } = await call.sandbox(call.params.id, 'sandbox:write');
        await sandbox.restore(call.params.name);
        await call.audit('snapshot.restore', { name: call.params.name }, sandbox.id);
        return sandboxInfo(sandbox, record);
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/v1/sandboxes/:id/snapshots/:name',
      summary: 'Delete a snapshot',
      tag: 'snapshots',
      auth: 'sandbox:write',
      params: snapshotParams,
      responses: {
        200: { description: 'Deleted', schema: snapshotInfoSchema.pick({ name: true }) },
        404: { description: 'No such sandbox or snapshot', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        await sandbox.deleteSnapshot(call.params.name);
        await call.audit('snapshot.delete', { name: call.params.name }, sandbox.id);
        return { name: call.params.name };
      },
    }),
  ];
}
