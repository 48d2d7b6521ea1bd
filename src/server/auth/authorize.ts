/**
 * Who may do what. `admin` keys may do everything to every tenant's resources. `sandbox` keys may create
 * sandboxes and use only the ones they own; everything installation-wide (keys, templates, secrets, the
 * audit log) needs `admin`.
 */
import type { ApiKeyRecord, Scope } from '../store/types.js';
import { ForbiddenError } from './errors.js';

interface ActionRule {
  /** The scope (besides admin) that allows the action. */
  readonly scope: Scope;
  /** Whether the action targets one sandbox whose owner must be the key. */
  readonly owned: boolean;
}

export const ACTIONS = {
  'sandbox:create': { scope: 'sandbox', owned: false },
  /** Listing is allowed; what is listed is narrowed with ownerFilterFor. */
  'sandbox:list': { scope: 'sandbox', owned: false },
  'sandbox:read': { scope: 'sandbox', owned: true },
  /** Exec, files, network policy, pause/resume, timeouts, snapshots. */
  'sandbox:write': { scope: 'sandbox', owned: true },
  'sandbox:kill': { scope: 'sandbox', owned: true },
  'template:read': { scope: 'sandbox', owned: false },
  'template:write': { scope: 'admin', owned: false },
  'secret:manage': { scope: 'admin', owned: false },
  'key:manage': { scope: 'admin', owned: false },
  'audit:read': { scope: 'admin', owned: false },
} as const satisfies Record<string, ActionRule>;

export type Action = keyof typeof ACTIONS;

export type AuthorizedKey = Pick<ApiKeyRecord, 'id' | 'scopes' | 'revokedAt'>;

/**
 * Throws ForbiddenError unless `key` may perform `action`. For per-sandbox actions pass the sandbox's owner
 * key id (from the store); a missing owner is refused for non-admin keys (fail closed).
 */
export function authorize(key: AuthorizedKey, action: Action, resourceOwner?: string | null): void {
  const rule: ActionRule | undefined = Object.hasOwn(ACTIONS, action) ? ACTIONS[action] : undefined;
  if (!rule) {
    const shown = typeof action === 'string' ? JSON.stringify(action) : `of type ${typeof action}`;
    throw new ForbiddenError('admin', 'unknown-action', `unknown action ${shown}`);
  }
  if (key.revokedAt !== null) {
    throw new ForbiddenError(rule.scope, 'revoked', `API key ${key.id} is revoked`);
  }
  if (key.scopes.includes('admin')) return;
  if (!key.scopes.includes(rule.scope)) {
    throw new ForbiddenError(
      rule.scope,
      'scope',
      `API key ${key.id} lacks scope "${rule.scope}" needed for ${action} (it has: ${key.scopes.join(', ')})`,
    );
  }
  if (rule.owned && (resourceOwner === undefined || resourceOwner === null || resourceOwner !== key.id)) {
    throw new ForbiddenError(
      'admin',
      'not-owner',
      `API key ${key.id} may ${action} only its own sandboxes; this one needs scope "admin"`,
    );
  }
}

/** The owner filter for listings: admins see every tenant (undefined), other keys only their own. */
export function ownerFilterFor(key: Pick<ApiKeyRecord, 'id' | 'scopes'>): string | undefined {
  return key.scopes.includes('admin') ? undefined : key.id;
}
