/**
 * User namespaces: every sandbox needs one (bwrap --unshare-user). The sysctls say why they might be blocked;
 * the bubblewrap probe decides whether they actually work for this user.
 */
import type { BwrapEvaluation } from './bwrap.js';
import { type FixContext, sudo, sysctlFix } from './fixes.js';
import { describeFailure, isUserNamespaceFailure } from './outcome.js';
import { parseSysctlInt } from './parse.js';
import type { Check, HostSnapshot } from './types.js';

export const USERNS_SYSCTLS = [
  'user.max_user_namespaces',
  // Debian/Ubuntu kernel patch (gone upstream-style on Debian 11+ kernels, which default to 1).
  'kernel.unprivileged_userns_clone',
  // Ubuntu 23.10+: unprivileged user namespaces only for programs an AppArmor profile grants `userns`.
  'kernel.apparmor_restrict_unprivileged_userns',
] as const;

interface Blocker {
  detail: string;
  fix: string;
}

export function appArmorUsernsFix(ctx: FixContext, bwrapPath: string): string {
  const s = sudo(ctx);
  const profile =
    `abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile ironcage-bwrap ${bwrapPath} flags=(unconfined) {\\n` +
    '  userns,\\n  include if exists <local/ironcage-bwrap>\\n}\\n';
  return (
    `allow bwrap to create user namespaces with an AppArmor profile: \`printf '${profile}' | ${s}tee /etc/apparmor.d/ironcage-bwrap && ` +
    `${s}apparmor_parser -r /etc/apparmor.d/ironcage-bwrap\` (or, weaker for the whole host: ` +
    `\`${s}sysctl -w kernel.apparmor_restrict_unprivileged_userns=0\`)`
  );
}

/** What in the sysctls stops this user (root is exempt from the unprivileged-only switches). */
export function usernsBlockers(snap: HostSnapshot, ctx: FixContext): Blocker[] {
  const value = (name: (typeof USERNS_SYSCTLS)[number]) => parseSysctlInt(snap.sysctls[name] ?? null);
  const blockers: Blocker[] = [];
  if (value('user.max_user_namespaces') === 0) {
    blockers.push({
      detail: 'user.max_user_namespaces=0 disables user namespaces for everyone',
      fix: sysctlFix(ctx, 'user.max_user_namespaces', 16384),
    });
  }
  if (!snap.isRoot && value('kernel.unprivileged_userns_clone') === 0) {
    blockers.push({
      detail: 'kernel.unprivileged_userns_clone=0 disables user namespaces for unprivileged users',
      fix: sysctlFix(ctx, 'kernel.unprivileged_userns_clone', 1),
    });
  }
  if (!snap.isRoot && value('kernel.apparmor_restrict_unprivileged_userns') === 1) {
    blockers.push({
      detail:
        'kernel.apparmor_restrict_unprivileged_userns=1 lets only AppArmor-profiled programs create user namespaces',
      fix: appArmorUsernsFix(ctx, snap.bwrap.path ?? '/usr/bin/bwrap'),
    });
  }
  return blockers;
}

/** The fix when bwrap reports a user-namespace failure. */
export function usernsFailureFix(snap: HostSnapshot, ctx: FixContext): string {
  const blockers = usernsBlockers(snap, ctx);
  if (blockers.length > 0) return blockers.map((b) => b.fix).join('; ');
  return (
    `check \`sysctl user.max_user_namespaces\` (must be > 0: ${sysctlFix(ctx, 'user.max_user_namespaces', 16384)}); ` +
    'inside a container, the runtime must allow unshare(CLONE_NEWUSER) ' +
    '(Docker/Podman: `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`)'
  );
}

/** Switches that do not apply to root but would block the same setup run by an ordinary user. */
function rootOnlyNotes(snap: HostSnapshot): string[] {
  if (!snap.isRoot) return [];
  const notes: string[] = [];
  if (parseSysctlInt(snap.sysctls['kernel.unprivileged_userns_clone'] ?? null) === 0) {
    notes.push('unprivileged users are blocked by kernel.unprivileged_userns_clone=0');
  }
  if (parseSysctlInt(snap.sysctls['kernel.apparmor_restrict_unprivileged_userns'] ?? null) === 1) {
    notes.push(
      'unprivileged users need an AppArmor profile (kernel.apparmor_restrict_unprivileged_userns=1)',
    );
  }
  return notes;
}

export function evaluateUserns(snap: HostSnapshot, ctx: FixContext, bwrap: BwrapEvaluation): Check {
  const base = { id: 'userns', title: 'user namespaces', required: true } as const;
  const max = parseSysctlInt(snap.sysctls['user.max_user_namespaces'] ?? null);
  if (bwrap.functional) {
    const notes = [
      `bwrap created one (user.max_user_namespaces=${max ?? 'unknown'})`,
      ...rootOnlyNotes(snap),
    ];
    return { ...base, status: 'ok', detail: notes.join('; ') };
  }
  const blockers = usernsBlockers(snap, ctx);
  if (blockers.length > 0) {
    return {
      ...base,
      status: 'fail',
      detail: blockers.map((b) => b.detail).join('; '),
      fix: blockers.map((b) => b.fix).join('; '),
    };
  }
  const probe = snap.bwrap.probe;
  if (probe && isUserNamespaceFailure(probe)) {
    return {
      ...base,
      status: 'fail',
      detail: `bwrap could not create a user namespace: ${describeFailure(probe)}`,
      fix: usernsFailureFix(snap, ctx),
    };
  }
  return {
    ...base,
    status: 'fail',
    detail: 'not confirmed: bubblewrap could not run the probe sandbox',
    fix: bwrap.blockingFix ?? usernsFailureFix(snap, ctx),
  };
}
