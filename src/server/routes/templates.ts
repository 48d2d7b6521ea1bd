/**
 * /v1/templates: named, reusable create requests. Templates are installation-wide (every tenant sees the same
 * ones), so writing them needs an admin key while any key may read them. A template is stored as it was sent
 * (the raw policy layer, not the defaulted parse) so that layering it later keeps the preset's values where
 * it is silent, exactly as a create request's own policy does.
 */
import { z } from 'zod';
import { mergePolicyInputs, resolvePolicy } from '../../policy/merge.js';
import type { PresetName } from '../../policy/presets.js';
import type { SandboxPolicyInput } from '../../policy/schema.js';
import { ApiError, describeZodError, notFound } from '../errors.js';
import {
  errorSchema,
  templateBody,
  templateInfoSchema,
  templateListSchema,
  templateParams,
} from '../schemas.js';
import type { Store, TemplateRecord } from '../store/types.js';
import { defineRoute, type RouteDef, type ServerContext } from './route.js';

/** The fields of a create request as the client sent them (policy unparsed: no defaults filled in). */
export interface SandboxRequest {
  preset?: string;
  policy?: SandboxPolicyInput;
  timeoutMs?: number | null;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
}

/**
 * The template as the base and the request on top: the policy layered with the library's semantics
 * (mergePolicyInputs: lists add up, objects merge, scalars replaced), env and metadata merged per entry,
 * and for every other field the request wins where it says anything.
 */
export function layerRequest(base: SandboxRequest, request: SandboxRequest): SandboxRequest {
  const out: SandboxRequest = {};
  const preset = request.preset ?? base.preset;
  if (preset !== undefined) out.preset = preset;
  if (base.policy !== undefined || request.policy !== undefined) {
    out.policy = mergePolicyInputs(base.policy ?? {}, request.policy ?? {});
  }
  const timeoutMs = request.timeoutMs === undefined ? base.timeoutMs : request.timeoutMs;
  if (timeoutMs !== undefined) out.timeoutMs = timeoutMs;
  if (base.env !== undefined || request.env !== undefined) out.env = { ...base.env, ...request.env };
  if (base.metadata !== undefined || request.metadata !== undefined) {
    out.metadata = { ...base.metadata, ...request.metadata };
  }
  return out;
}

/** Loads a template for a create request: 404 when there is none, 409 when the stored one no longer validates. */
export async function loadTemplate(store: Store, name: string): Promise<SandboxRequest> {
  const record = await store.getTemplate(name);
  if (record === null) {
    throw notFound(`template "${name}"`, 'list them with GET /v1/templates (an admin creates them with PUT)');
  }
  const parsed = templateBody.safeParse(record.template);
  if (!parsed.success) {
    throw new ApiError(
      409,
      'TEMPLATE_INVALID',
      `${describeZodError(parsed.error, `stored template "${name}"`)}; an admin must PUT it again`,
    );
  }
  // The stored (raw) value, not the parse: the parse fills policy defaults that would override the preset.
  return record.template as SandboxRequest;
}

function templateInfo(record: TemplateRecord): z.infer<typeof templateInfoSchema> {
  return {
    name: record.name,
    template: record.template as z.infer<typeof templateBody>,
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
  };
}

const TEMPLATE_404 = { description: 'No such template', schema: errorSchema };

export function templateRoutes(ctx: ServerContext): RouteDef[] {
  const missing = (name: string) => notFound(`template "${name}"`, 'list them with GET /v1/templates');
  return [
    defineRoute({
      method: 'PUT',
      url: '/v1/templates/:name',
      summary: 'Create or replace a template (a reusable create request); admin only, shared by every tenant',
      tag: 'templates',
      auth: 'template:write',
      params: templateParams,
      body: templateBody,
      responses: {
        200: { description: 'Stored', schema: templateInfoSchema },
        400: { description: 'Invalid name, policy or options', schema: errorSchema },
      },
      async handler(call) {
        const raw = call.request.body as SandboxRequest;
        // Refuse a template no sandbox could be created from, now rather than at every create.
        const resolved = resolvePolicy((raw.preset ?? 'default') as PresetName, raw.policy ?? {});
        if (resolved.seccomp !== 'default') {
          throw new ApiError(
            400,
            'POLICY_INVALID',
            `sandboxes run with the "default" seccomp profile; the template asks for "${resolved.seccomp}"`,
          );
        }
        const record = await ctx.store.putTemplate(call.params.name, { ...raw });
        await call.audit('template.put', { name: record.name });
        return templateInfo(record);
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/templates',
      summary: 'List templates, by name',
      tag: 'templates',
      auth: 'template:read',
      responses: { 200: { description: 'Templates', schema: templateListSchema } },
      async handler() {
        return { templates: (await ctx.store.listTemplates()).map(templateInfo) };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/templates/:name',
      summary: 'Get a template',
      tag: 'templates',
      auth: 'template:read',
      params: templateParams,
      responses: { 200: { description: 'The template', schema: templateInfoSchema }, 404: TEMPLATE_404 },
      async handler(call) {
        const record = await ctx.store.getTemplate(call.params.name);
        if (record === null) throw missing(call.params.name);
        return templateInfo(record);
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/v1/templates/:name',
      summary: 'Delete a template (sandboxes created from it keep running); admin only',
      tag: 'templates',
      auth: 'template:write',
      params: templateParams,
      responses: {
        200: { description: 'Deleted', schema: z.object({ name: z.string() }) },
        404: TEMPLATE_404,
      },
      async handler(call) {
        if (!(await ctx.store.deleteTemplate(call.params.name))) throw missing(call.params.name);
        await call.audit('template.delete', { name: call.params.name });
        return { name: call.params.name };
      },
    }),
  ];
}
