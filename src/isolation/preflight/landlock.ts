/**
 * Landlock: the in-sandbox agent restricts each command's filesystem access with it, on top of the mount
 * namespace. Node cannot make the syscall, so the agent reports the ABI (`ironcage-agent probe`).
 */
import { distroFix, type FixContext, sudo } from './fixes.js';
import { describeFailure, succeeded } from './outcome.js';
import { parseAgentProbe } from './parse.js';
import type { Check, HostSnapshot } from './types.js';

/** What each Landlock ABI version added (see landlock(7)). */
export const LANDLOCK_FEATURES: readonly string[] = [
  'filesystem access rights',
  'file reparenting (refer)',
  'truncate',
  'TCP bind/connect',
  'device ioctl',
  'abstract unix socket and signal scoping',
  'audit logging',
];

const ENOSYS = 38;
const EOPNOTSUPP = 95;

function buildAgentFix(ctx: FixContext): string {
  const s = sudo(ctx);
  return distroFix(ctx, {
    debian: `\`${s}apt-get install gcc libc6-dev && npm run build\``,
    ubuntu: `\`${s}apt-get install gcc libc6-dev && npm run build\``,
    fedora: `\`${s}dnf install gcc glibc-devel && npm run build\``,
  });
}

function enableAtBootFix(ctx: FixContext): string {
  const s = sudo(ctx);
  const list = 'landlock,lockdown,yama,integrity,apparmor,bpf';
  const grub =
    `add lsm=${list} (keep the order of \`cat /sys/kernel/security/lsm\`, with landlock first) to ` +
    `GRUB_CMDLINE_LINUX in /etc/default/grub, run \`${s}update-grub\` and reboot`;
  return distroFix(ctx, {
    debian: grub,
    ubuntu: grub,
    fedora: `\`${s}grubby --update-kernel=ALL --args=lsm=landlock,lockdown,yama,integrity,selinux,bpf\` and reboot`,
  });
}

function upgradeKernelFix(ctx: FixContext): string {
  const s = sudo(ctx);
  return distroFix(ctx, {
    debian: `boot a kernel >= 5.13 with CONFIG_SECURITY_LANDLOCK: \`${s}apt-get install linux-image-$(dpkg --print-architecture)\` (Debian 12+)`,
    ubuntu: `boot a kernel >= 5.13 with CONFIG_SECURITY_LANDLOCK: \`${s}apt-get install linux-generic\` (Ubuntu 22.04+)`,
    fedora: `boot a kernel >= 5.13 with CONFIG_SECURITY_LANDLOCK: \`${s}dnf upgrade kernel\``,
  });
}

export function describeLandlockAbi(abi: number): string {
  const features = LANDLOCK_FEATURES.slice(0, Math.min(abi, LANDLOCK_FEATURES.length));
  const missing = LANDLOCK_FEATURES.slice(features.length);
  return `ABI ${abi}${missing.length > 0 ? ` (without: ${missing.join(', ')})` : ' (all features ironcage knows)'}`;
}

export interface LandlockEvaluation {
  check: Check;
  abi: number | null;
}

export function evaluateLandlock(snap: HostSnapshot, ctx: FixContext): LandlockEvaluation {
  const base = { id: 'landlock', title: 'Landlock', required: false } as const;
  const lost = 'per-command filesystem rules are not enforced, the mount namespace still is';
  const warn = (detail: string, fix: string): LandlockEvaluation => ({
    check: { ...base, status: 'warn', detail, fix },
    abi: null,
  });
  const { agent } = snap;
  if (agent.path === null) {
    return warn('not probed: ironcage-agent is not built (native/build/ironcage-agent)', buildAgentFix(ctx));
  }
  const parsed = agent.probe && succeeded(agent.probe) ? parseAgentProbe(agent.probe.stdout) : null;
  if (parsed === null) {
    const why = agent.probe
      ? succeeded(agent.probe)
        ? 'no landlock_abi in its output'
        : describeFailure(agent.probe)
      : 'not run';
    return warn(
      `not probed: \`${agent.path} probe\` failed (${why})`,
      `rebuild the agent: ${buildAgentFix(ctx)}`,
    );
  }
  const abi = parsed.landlockAbi;
  if (abi >= 1) return { check: { ...base, status: 'ok', detail: describeLandlockAbi(abi) }, abi };
  if (-abi === EOPNOTSUPP)
    return warn(`built into the kernel but not enabled at boot; ${lost}`, enableAtBootFix(ctx));
  if (-abi === ENOSYS) return warn(`not in this kernel; ${lost}`, upgradeKernelFix(ctx));
  return warn(`landlock_create_ruleset failed with errno ${-abi}; ${lost}`, upgradeKernelFix(ctx));
}
