/** Host basics: CPU architecture (the seccomp filters are per-architecture), kernel version, privileges. */
import { distroFix, type FixContext, sudo } from './fixes.js';
import {
  compareVersions,
  formatVersion,
  normalizeArch,
  parseKernelRelease,
  SUPPORTED_ARCHES,
  type Version,
} from './parse.js';
import type { Check, HostSnapshot } from './types.js';

/** Landlock arrived in 5.13; older kernels run sandboxes, minus per-command filesystem rules. */
export const RECOMMENDED_KERNEL: Version = { major: 5, minor: 13, patch: 0 };

export function evaluateArch(snap: HostSnapshot): Check {
  const arch = normalizeArch(snap.machine);
  const base = { id: 'host.arch', title: 'CPU architecture', required: true } as const;
  if ((SUPPORTED_ARCHES as readonly string[]).includes(arch)) {
    return { ...base, status: 'ok', detail: arch };
  }
  return {
    ...base,
    status: 'fail',
    detail: `${arch} is not supported: ironcage generates seccomp filters for ${SUPPORTED_ARCHES.join(' and ')} only`,
    fix: `run ironcage on an ${SUPPORTED_ARCHES.join(' or ')} Linux host`,
  };
}

export function evaluateKernel(snap: HostSnapshot, ctx: FixContext): Check {
  const base = { id: 'host.kernel', title: 'kernel version', required: false } as const;
  const version = parseKernelRelease(snap.kernelRelease);
  if (version === null) {
    return {
      ...base,
      status: 'warn',
      detail: `unrecognised release '${snap.kernelRelease}'`,
      fix: 'none needed if the other checks pass',
    };
  }
  if (compareVersions(version, RECOMMENDED_KERNEL) >= 0)
    return { ...base, status: 'ok', detail: snap.kernelRelease };
  const s = sudo(ctx);
  return {
    ...base,
    status: 'warn',
    detail: `${snap.kernelRelease} is older than ${formatVersion(RECOMMENDED_KERNEL)}: no Landlock`,
    fix: distroFix(ctx, {
      debian: `\`${s}apt-get install linux-image-$(dpkg --print-architecture)\` from a newer release or backports, then reboot`,
      ubuntu: `\`${s}apt-get install linux-generic-hwe-$(. /etc/os-release; echo $VERSION_ID)\`, then reboot`,
      fedora: `\`${s}dnf upgrade kernel\`, then reboot`,
    }),
  };
}

export function evaluatePrivileges(snap: HostSnapshot): Check {
  const base = { id: 'host.user', title: 'privileges', required: false, status: 'ok' } as const;
  return snap.isRoot
    ? {
        ...base,
        detail:
          'running as root: bwrap would keep every capability, so ironcage always passes --cap-drop ALL and ' +
          'runs commands as an unprivileged uid',
      }
    : {
        ...base,
        detail:
          'running as an ordinary user: sandboxes get no capabilities; memory/process limits need a delegated ' +
          'cgroup, otherwise rlimits',
      };
}
