/**
 * cgroups: which mode ironcage will use for memory and process limits. Not required: without a writable
 * cgroup the engine enforces limits with rlimits and says so in every RunResult (`enforcement`).
 */
import type { CgroupHost } from '../cgroups/detect.js';
import { distroFix, type FixContext, sudo } from './fixes.js';
import { classifyCgroupLayout } from './parse.js';
import type { CgroupLayout, Check, HostSnapshot } from './types.js';

const LAYOUT_TEXT: Record<CgroupLayout, string> = {
  unified: 'v2 unified',
  hybrid: 'hybrid v1+v2',
  legacy: 'v1 only',
  none: 'no cgroup filesystem',
};

function switchToV2Fix(ctx: FixContext): string {
  const s = sudo(ctx);
  const grub =
    'add systemd.unified_cgroup_hierarchy=1 to GRUB_CMDLINE_LINUX in /etc/default/grub, run `' +
    `${s}update-grub\` and reboot`;
  return distroFix(ctx, {
    debian: grub,
    ubuntu: grub,
    fedora: `\`${s}grubby --update-kernel=ALL --args=systemd.unified_cgroup_hierarchy=1\` and reboot`,
  });
}

/** Non-root users get cgroups through systemd delegation, which only exists on cgroup v2. */
function userFix(ctx: FixContext, layout: CgroupLayout): string {
  const s = sudo(ctx);
  const delegate =
    'run ironcage in a delegated scope: `systemd-run --user --scope -p Delegate=yes ironcage ...`; if memory or ' +
    `pids are still missing, delegate them to user sessions: \`${s}mkdir -p /etc/systemd/system/user@.service.d && ` +
    `printf '[Service]\\nDelegate=memory pids cpu\\n' | ${s}tee /etc/systemd/system/user@.service.d/delegate.conf && ` +
    `${s}systemctl daemon-reload\`, then log in again`;
  if (layout === 'unified') return `${delegate}; or run ironcage as root`;
  return `run ironcage as root (v1 hierarchies cannot be delegated safely), or switch to cgroup v2: ${switchToV2Fix(ctx)}`;
}

function describeHost(host: Exclude<CgroupHost, { mode: 'none' }>): string {
  if (host.mode === 'v2') return `cgroup v2 under ${host.base} (controllers: ${host.controllers.join(' ')})`;
  const dirs = Object.entries(host.controllers).map(([name, dir]) => `${name} ${dir}`);
  return `cgroup v1 (${dirs.join(', ')})`;
}

export interface CgroupEvaluation {
  check: Check;
  host: CgroupHost | null;
  layout: CgroupLayout;
}

export function evaluateCgroups(snap: HostSnapshot, ctx: FixContext): CgroupEvaluation {
  const layout = snap.cgroups.mountInfo === null ? 'none' : classifyCgroupLayout(snap.cgroups.mountInfo);
  const base = { id: 'cgroups', title: 'cgroups (memory, pids)', required: false } as const;
  const detected = snap.cgroups.host;
  const fallback = 'limits fall back to rlimits';
  if ('error' in detected) {
    return {
      check: {
        ...base,
        status: 'warn',
        detail: `layout ${LAYOUT_TEXT[layout]}; detection failed: ${detected.error}; ${fallback}`,
        fix: 'report `cat /proc/self/cgroup; grep cgroup /proc/self/mountinfo` as an ironcage bug',
      },
      host: null,
      layout,
    };
  }
  if (detected.mode === 'none') {
    return {
      check: {
        ...base,
        status: 'warn',
        detail: `layout ${LAYOUT_TEXT[layout]}; nothing writable with memory+pids (${detected.reason}); ${fallback}`,
        fix: snap.isRoot ? detected.fix : userFix(ctx, layout),
      },
      host: detected,
      layout,
    };
  }
  return {
    check: {
      ...base,
      status: 'ok',
      detail: `layout ${LAYOUT_TEXT[layout]}; using ${describeHost(detected)}`,
    },
    host: detected,
    layout,
  };
}
