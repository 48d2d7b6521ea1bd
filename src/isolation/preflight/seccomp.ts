/**
 * seccomp: the kernel must support filter mode (CONFIG_SECCOMP_FILTER) with the actions our profiles return,
 * and bwrap must be able to install a filter (checked by the same probe sandbox with an allow-all filter).
 */
import type { BwrapEvaluation } from './bwrap.js';
import { distroFix, type FixContext } from './fixes.js';
import { describeFailure, succeeded } from './outcome.js';
import { parseSeccompActions, parseSeccompStatus } from './parse.js';
import type { Check, HostSnapshot } from './types.js';

/** Actions ironcage's filters return: kill on a foreign architecture, an errno for denied syscalls. */
export const REQUIRED_SECCOMP_ACTIONS = ['kill_process', 'errno'] as const;

function kernelFix(ctx: FixContext): string {
  const why = 'boot a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y';
  return distroFix(ctx, {
    debian: `${why} (the stock Debian kernel has both: \`apt-get install linux-image-$(dpkg --print-architecture)\`)`,
    ubuntu: `${why} (the stock Ubuntu kernel has both: \`apt-get install linux-generic\`)`,
    fedora: `${why} (the stock Fedora kernel has both: \`dnf install kernel\`)`,
  });
}

export interface SeccompEvaluation {
  check: Check;
  supported: boolean;
}

export function evaluateSeccomp(
  snap: HostSnapshot,
  ctx: FixContext,
  bwrap: BwrapEvaluation,
): SeccompEvaluation {
  const base = { id: 'seccomp', title: 'seccomp filters', required: true } as const;
  const fail = (detail: string, fix: string): SeccompEvaluation => ({
    check: { ...base, status: 'fail', detail, fix },
    supported: false,
  });
  if (snap.procStatus === null) {
    return fail('/proc/self/status is not readable', 'mount procfs: `mount -t proc proc /proc`');
  }
  const status = parseSeccompStatus(snap.procStatus);
  if (!status.supported)
    return fail('the kernel has no seccomp support (no Seccomp: line in /proc/self/status)', kernelFix(ctx));

  const actions = snap.seccompActionsAvail === null ? null : parseSeccompActions(snap.seccompActionsAvail);
  if (actions === null && status.filters === null) {
    return fail(
      'filter mode is unavailable (no Seccomp_filters: line, no kernel/seccomp/actions_avail)',
      kernelFix(ctx),
    );
  }
  const missing = actions === null ? [] : REQUIRED_SECCOMP_ACTIONS.filter((a) => !actions.includes(a));
  if (missing.length > 0) {
    return fail(
      `the kernel lacks seccomp action(s) ${missing.join(', ')} (kernel older than 4.14?)`,
      kernelFix(ctx),
    );
  }

  const notes: string[] = ['filter mode supported'];
  if (actions !== null) {
    notes.push(
      actions.includes('user_notif') ? 'user_notif available' : 'no user_notif (execve reporting off)',
    );
  }
  if (status.mode === 2) {
    notes.push(
      `this process already runs under ${status.filters ?? 'some'} filter(s); sandbox filters stack on them`,
    );
  }
  if (bwrap.functional) {
    const probe = snap.bwrap.seccompProbe;
    if (!succeeded(probe)) {
      return fail(
        `bwrap could not install a seccomp filter: ${probe ? describeFailure(probe) : 'not run'}`,
        status.mode === 2
          ? 'this process runs under a seccomp filter that forbids installing more; run ironcage outside that ' +
              'container or with a runtime profile that allows seccomp(2) and prctl(PR_SET_SECCOMP)'
          : kernelFix(ctx),
      );
    }
    notes.unshift('bwrap installed a filter');
  } else {
    notes.push('not installed through bwrap (the probe sandbox did not run)');
  }
  return { check: { ...base, status: 'ok', detail: notes.join('; ') }, supported: true };
}
