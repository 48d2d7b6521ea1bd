/** /v1/sandboxes/:id/network: the egress rules in force (live updates) and the egress audit log. */
import { type EgressRulesInput, rulesToInput } from '../../egress/rules.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { ApiError } from '../errors.js';
import {
  egressRulesBody,
  errorSchema,
  networkEventsQuery,
  networkEventsSchema,
  networkSchema,
  sandboxIdParams,
} from '../schemas.js';
import type { ApiKeyRecord } from '../store/types.js';
import { defineRoute, type RouteDef, SANDBOX_404, type ServerContext } from './route.js';

const DISABLED_409 = { description: 'Sandbox created with network mode none', schema: errorSchema };

function view(sandbox: Sandbox) {
  return { enabled: sandbox.network.enabled, rules: rulesToInput(sandbox.network.rules()) };
}

/** Tenants may not open private addresses (the host's loopback, the LAN, cloud metadata) to their sandbox. */
function checkTenantRules(key: ApiKeyRecord, rules: Partial<EgressRulesInput>): void {
  if (key.scopes.includes('admin')) return;
  if ((rules.allowPrivate?.length ?? 0) > 0) {
    throw new ApiError(
      403,
      'POLICY_FORBIDDEN',
      'allowPrivate (private addresses) needs an admin key; remove it or ask an admin',
    );
  }
}

/** PATCH merges into the rules in force, PUT replaces them; both answer with the rules now in force. */
function rulesUpdateRoute(method: 'PATCH' | 'PUT', summary: string, how: 'merge' | 'replace'): RouteDef {
  return defineRoute({
    method,
    url: '/v1/sandboxes/:id/network',
    summary,
    tag: 'network',
    auth: 'sandbox:write',
    params: sandboxIdParams,
    body: egressRulesBody,
    ...(method === 'PATCH' ? { mergePatch: true } : {}),
    responses: {
      200: { description: 'Rules now in force', schema: networkSchema },
      400: { description: 'Invalid rule (the old rules stay)', schema: errorSchema },
      404: SANDBOX_404,
      409: DISABLED_409,
    },
    async handler(call) {
      const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
      checkTenantRules(call.key, call.body);
      sandbox.network[how](call.body);
      await call.audit(`network.${how}`, call.body, sandbox.id);
      return view(sandbox);
    },
  });
}

export function networkRoutes(_ctx: ServerContext): RouteDef[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/network',
      summary: 'The egress rules in force',
      tag: 'network',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      responses: { 200: { description: 'Rules', schema: networkSchema }, 404: SANDBOX_404 },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        return view(sandbox);
      },
    }),

    rulesUpdateRoute(
      'PATCH',
      'Add egress rules live (union with the rules in force; application/json or application/merge-patch+json)',
      'merge',
    ),
    rulesUpdateRoute('PUT', 'Replace every egress rule live (the way to remove one)', 'replace'),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/network/events',
      summary: 'The egress audit log, oldest first: events with seq >= since; pass next as since to page on',
      tag: 'network',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      query: networkEventsQuery,
      responses: { 200: { description: 'Events', schema: networkEventsSchema }, 404: SANDBOX_404 },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        return sandbox.network.events({
          ...(call.query.since === undefined ? {} : { since: call.query.since }),
          ...(call.query.limit === undefined ? {} : { limit: call.query.limit }),
        });
      },
    }),
  ];
}
