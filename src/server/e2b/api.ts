/**
 * E2B's control-plane REST API (what its SDK calls at E2B_API_URL), over the same manager, store and keys as
 * /v1: create, list, get, connect, set timeout, pause, resume, metrics, kill. Errors are E2B's
 * `{ code, message }` shape.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { type PresetName, presetNames } from '../../policy/presets.js';
import type { SandboxPolicyInput } from '../../policy/schema.js';
import { PauseUnsupportedError } from '../../sandbox/errors.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { reserveSandbox } from '../auth/limits.js';
import { ApiError, describeZodError, toApiError } from '../errors.js';
import { tenantPolicyRefusals } from '../routes/sandboxes.js';
import type { ApiKeyRecord, SandboxRecord } from '../store/types.js';
import type { E2bAccess, E2bDeps } from './access.js';
import { sampleMetric } from './metrics.js';

/** E2B's own default sandbox lifetime when create names none. */
const DEFAULT_TIMEOUT_S = 300;
/** E2B's default template; here it means the `default` preset. */
const BASE_TEMPLATE = 'base';
/** @e2b/code-interpreter's default template: the `default` preset too (python3 is there; see interpreter.ts). */
const CODE_INTERPRETER_TEMPLATE = 'code-interpreter-v1';
/**
 * The envd version reported to the SDK, which gates features on it: the highest whose gated features this
 * plane implements (recursive watch 0.1.4, metrics 0.1.5, stdin choice 0.3.0, closeStdin 0.5.2). Not 0.5.7
 * (gzip octet-stream uploads) nor 0.6.x (file metadata, watch entries): the SDK then refuses those options
 * itself instead of sending what would be misread here.
 */
export const E2B_ENVD_VERSION = '0.5.2';

const createBody = z.object({
  templateID: z.string().max(128).optional(),
  timeout: z.number().int().min(0).max(86_400).optional(),
  metadata: z.record(z.string().min(1).max(256), z.string().max(2048)).nullish(),
  envVars: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).nullish(),
  allow_internet_access: z.boolean().optional(),
  network: z
    .object({
      allowOut: z.array(z.string().max(255)).max(1000).optional(),
      denyOut: z.array(z.string().max(255)).max(1000).optional(),
    })
    .passthrough()
    .optional(),
});

/** Means "every destination" in E2B; ironcage's egress denies whatever no rule allows, so it is implied. */
const ALL_TRAFFIC = '0.0.0.0/0';

/**
 * E2B's network options as an ironcage network policy: allowOut becomes the egress allowlist (through the
 * proxy), denyOut the denylist. E2B's "internet on" default has no ironcage equivalent (egress is an allowlist
 * by design), so an explicit allowInternetAccess: true is refused rather than silently narrowed.
 */
export function e2bNetworkPolicy(body: z.output<typeof createBody>): SandboxPolicyInput['network'] {
  if (body.allow_internet_access === true) {
    throw new ApiError(
      400,
      'NETWORK_UNSUPPORTED',
      'allowInternetAccess: true (all destinations) is not offered: ironcage egress is an allowlist; ' +
        'list the destinations in network.allowOut instead',
    );
  }
  const allow = body.network?.allowOut ?? [];
  if (allow.includes(ALL_TRAFFIC)) {
    throw new ApiError(
      400,
      'NETWORK_UNSUPPORTED',
      `network.allowOut ${ALL_TRAFFIC} (all destinations) is not offered`,
    );
  }
  if (allow.length === 0) return { mode: 'none' };
  const deny = (body.network?.denyOut ?? []).filter((rule) => rule !== ALL_TRAFFIC);
  return { mode: 'proxy', allow, deny };
}

const timeoutBody = z.object({ timeout: z.number().int().min(0).max(86_400) });
const connectBody = z.object({ timeout: z.number().int().min(0).max(86_400).optional() }).passthrough();
const pauseBody = z.object({ memory: z.boolean().nullish() }).passthrough();
const resumeBody = z
  .object({ timeout: z.number().int().min(0).max(86_400).optional(), memory: z.boolean().nullish() })
  .passthrough();
const metricsQuery = z
  .object({ start: z.coerce.number().int().optional(), end: z.coerce.number().int().optional() })
  .passthrough();
const idParams = z.object({ id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/) });
const listQuery = z
  .object({
    metadata: z.string().max(4096).optional(),
    state: z.string().optional(),
    limit: z.coerce.number().int().min(1).max(1000).optional(),
    nextToken: z.string().max(256).optional(),
  })
  .passthrough();

function parse<S extends z.ZodTypeAny>(schema: S, value: unknown, where: string): z.output<S> {
  const result = schema.safeParse(value ?? {});
  if (!result.success) throw new ApiError(400, 'INVALID_INPUT', describeZodError(result.error, where));
  return result.data;
}

/** E2B's ListedSandbox / SandboxDetail. cpuCount and memoryMB are the policy's, not measured. */
function detail(sandbox: Sandbox, record: SandboxRecord) {
  const limits = sandbox.policy.limits as { memoryMb?: number };
  const network = sandbox.policy.network;
  return {
    sandboxID: sandbox.id,
    templateID: record.template ?? BASE_TEMPLATE,
    clientID: record.ownerKeyId,
    startedAt: sandbox.createdAt.toISOString(),
    endAt: new Date(sandbox.deadline ?? Date.now() + 86_400_000).toISOString(),
    state: sandbox.state === 'paused' ? 'paused' : 'running',
    cpuCount: 1,
    memoryMB: limits.memoryMb ?? 0,
    diskSizeMB: 0,
    envdVersion: E2B_ENVD_VERSION,
    metadata: { ...record.metadata },
    // Never "all destinations" here (see e2bNetworkPolicy); the allowlist is reported as E2B's allowOut.
    allowInternetAccess: false,
    ...(network.mode === 'proxy'
      ? { network: { allowOut: [...network.allow], denyOut: [...network.deny] } }
      : {}),
  };
}

export function registerE2bApi(app: FastifyInstance, deps: E2bDeps, access: E2bAccess): void {
  const { ctx } = deps;
  const isAdmin = (key: ApiKeyRecord) => key.scopes.includes('admin');

  const connection = (sandbox: Sandbox, record: SandboxRecord) => ({
    sandboxID: sandbox.id,
    templateID: record.template ?? BASE_TEMPLATE,
    clientID: record.ownerKeyId,
    envdVersion: E2B_ENVD_VERSION,
    envdAccessToken: access.accessToken(sandbox.id),
    // @e2b/code-interpreter sends this one (not X-Access-Token) on its /contexts calls; same token, same rights.
    trafficAccessToken: access.accessToken(sandbox.id),
  });

  const audit = (request: FastifyRequest, key: ApiKeyRecord, type: string, sandboxId: string) =>
    ctx.store
      .appendAuditEvent({ requestId: request.id, keyId: key.id, sandboxId, type, payload: { via: 'e2b' } })
      .catch((err: unknown) => request.log.error({ err }, `audit event ${type} not recorded`));

  const create = async (request: FastifyRequest, reply: FastifyReply) => {
    const key = await access.key(request.headers);
    const body = parse(createBody, request.body, 'request body');
    const template = body.templateID ?? BASE_TEMPLATE;
    const preset: PresetName | undefined =
      template === BASE_TEMPLATE || template === CODE_INTERPRETER_TEMPLATE
        ? 'default'
        : presetNames.find((name) => name === template);
    if (preset === undefined) {
      throw new ApiError(
        400,
        'UNKNOWN_TEMPLATE',
        `template ${JSON.stringify(template)} is not known; use "base", "${CODE_INTERPRETER_TEMPLATE}" or a preset (${presetNames.join(', ')})`,
      );
    }
    const policy: SandboxPolicyInput = { network: e2bNetworkPolicy(body) };
    if (!isAdmin(key)) {
      const refused = tenantPolicyRefusals(policy);
      if (refused.length > 0)
        throw new ApiError(403, 'POLICY_FORBIDDEN', `needs an admin key: ${refused.join(', ')}`);
    }
    const id = randomBytes(8).toString('hex');
    const record = await reserveSandbox(ctx.store, key, {
      sandboxId: id,
      metadata: body.metadata ?? {},
      template: preset,
    });
    let sandbox: Sandbox;
    try {
      sandbox = await ctx.metrics.timeCreate(() =>
        ctx.manager.create({
          id,
          preset,
          policy,
          ...(body.envVars ? { env: body.envVars } : {}),
          timeoutMs: (body.timeout ?? DEFAULT_TIMEOUT_S) * 1000,
        }),
      );
    } catch (err) {
      await ctx.store.deleteSandbox(id).catch(() => {});
      throw err;
    }
    ctx.track(sandbox);
    await audit(request, key, 'sandbox.create', id);
    return reply.status(201).send(connection(sandbox, record));
  };
  app.post('/v2/sandboxes', create);
  app.post('/sandboxes', create);

  const list = async (request: FastifyRequest, reply: FastifyReply) => {
    const key = await access.key(request.headers);
    const query = parse(listQuery, request.query, 'query string');
    // E2B sends metadata filters as one url-encoded `k=v&k2=v2` string.
    const metadata: Record<string, string> = {};
    if (query.metadata) {
      for (const [k, v] of new URLSearchParams(query.metadata)) metadata[k] = v;
    }
    const states = query.state?.split(',').filter((s) => s !== '') ?? [];
    const page = await ctx.store.listSandboxes({
      ...(isAdmin(key) ? {} : { ownerKeyId: key.id }),
      ...(Object.keys(metadata).length > 0 ? { metadata } : {}),
      ...(query.limit === undefined ? {} : { limit: query.limit }),
      ...(query.nextToken === undefined ? {} : { cursor: query.nextToken }),
    });
    const items = [];
    for (const record of page.items) {
      const sandbox = ctx.manager.get(record.sandboxId);
      if (sandbox === undefined || sandbox.state === 'stopped') continue;
      const item = detail(sandbox, record);
      if (states.length === 0 || states.includes(item.state)) items.push(item);
    }
    if (page.next) void reply.header('x-next-token', page.next);
    return items;
  };
  app.get('/v2/sandboxes', list);
  app.get('/sandboxes', list);

  app.get('/sandboxes/:id', async (request) => {
    const key = await access.key(request.headers);
    const { id } = parse(idParams, request.params, 'path');
    const { sandbox, record } = await access.sandbox(key, id, 'sandbox:read');
    return detail(sandbox, record);
  });

  app.delete('/sandboxes/:id', async (request, reply) => {
    const key = await access.key(request.headers);
    const { id } = parse(idParams, request.params, 'path');
    const { sandbox } = await access.sandbox(key, id, 'sandbox:kill');
    await sandbox.kill();
    await ctx.store.deleteSandbox(id);
    await audit(request, key, 'sandbox.kill', id);
    return reply.status(204).send();
  });

  app.post('/sandboxes/:id/timeout', async (request, reply) => {
    const key = await access.key(request.headers);
    const { id } = parse(idParams, request.params, 'path');
    const { timeout } = parse(timeoutBody, request.body, 'request body');
    const { sandbox } = await access.sandbox(key, id, 'sandbox:write');
    sandbox.setTimeout(timeout * 1000);
    await audit(request, key, 'sandbox.timeout', id);
    return reply.status(204).send();
  });

  const connect = async (request: FastifyRequest, reply: FastifyReply) => {
    const key = await access.key(request.headers);
    const { id } = parse(idParams, request.params, 'path');
    const { timeout } = parse(connectBody, request.body, 'request body');
    const { sandbox, record } = await access.sandbox(key, id, 'sandbox:write');
    if (sandbox.state === 'paused') {
      await sandbox.resume(timeout === undefined ? {} : { timeoutMs: timeout * 1000 });
    } else if (timeout !== undefined) {
      // Connecting never shortens a sandbox's life (E2B's rule): only a later deadline is applied.
      const wanted = Date.now() + timeout * 1000;
      if (sandbox.deadline !== null && sandbox.deadline < wanted) sandbox.setTimeout(timeout * 1000);
    }
    return reply.status(200).send(connection(sandbox, record));
  };
  app.post('/v2/sandboxes/:id/connect', connect);
  app.post('/sandboxes/:id/connect', connect);

  app.post('/sandboxes/:id/pause', async (request, reply) => {
    const key = await access.key(request.headers);
    const { id } = parse(idParams, request.params, 'path');
    const { memory } = parse(pauseBody, request.body, 'request body');
    const { sandbox } = await access.sandbox(key, id, 'sandbox:write');
    // A pause here is the cgroup freezer: memory is always kept, and a resume never reboots.
    if (memory === false) {
      throw new ApiError(
        400,
        'PAUSE_UNSUPPORTED',
        'keepMemory: false (a filesystem-only pause) is not offered: a pause keeps the memory; omit keepMemory',
      );
    }
    // The SDK reads 409 as "already paused", so it is only ever sent for that.
    if (sandbox.state === 'paused')
      throw new ApiError(409, 'ALREADY_PAUSED', `sandbox ${id} is already paused`);
    try {
      await sandbox.pause();
    } catch (err) {
      if (err instanceof PauseUnsupportedError) throw new ApiError(501, err.code, err.message);
      throw err;
    }
    await audit(request, key, 'sandbox.pause', id);
    return reply.status(204).send();
  });

  // E2B's deprecated resume (connect is its successor and resumes too).
  app.post('/sandboxes/:id/resume', async (request, reply) => {
    const key = await access.key(request.headers);
    const { id } = parse(idParams, request.params, 'path');
    const { timeout, memory } = parse(resumeBody, request.body, 'request body');
    const { sandbox, record } = await access.sandbox(key, id, 'sandbox:write');
    if (memory === false) {
      throw new ApiError(400, 'RESUME_UNSUPPORTED', 'memory: false (a cold boot) is not offered; omit it');
    }
    if (sandbox.state !== 'paused') {
      throw new ApiError(409, 'NOT_PAUSED', `sandbox ${id} is not paused`);
    }
    await sandbox.resume(timeout === undefined ? {} : { timeoutMs: timeout * 1000 });
    await audit(request, key, 'sandbox.resume', id);
    return reply.status(201).send(connection(sandbox, record));
  });

  app.get('/sandboxes/:id/metrics', async (request) => {
    const key = await access.key(request.headers);
    const { id } = parse(idParams, request.params, 'path');
    const { start, end } = parse(metricsQuery, request.query, 'query string');
    const { sandbox } = await access.sandbox(key, id, 'sandbox:read');
    // Only the present is measured (no history is kept): an interval that excludes now is empty.
    const nowS = Math.floor(Date.now() / 1000);
    if ((start !== undefined && start > nowS + 1) || (end !== undefined && end < nowS - 1)) return [];
    const metric = await sampleMetric(sandbox);
    return metric === null ? [] : [metric];
  });
}

/** E2B's error body: `{ code: <HTTP status>, message }`. */
export function e2bErrorBody(err: unknown): { status: number; body: { code: number; message: string } } {
  const api = toApiError(err);
  return { status: api.status, body: { code: api.status, message: api.message } };
}
