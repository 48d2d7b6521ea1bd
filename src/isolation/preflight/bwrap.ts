/**
 * bubblewrap checks: found, new enough for --disable-userns, not setuid, and able to start a minimal sandbox
 * with the namespaces and flags every ironcage run uses.
 */
import { distroFix, type FixContext, installBubblewrapFix, sudo } from './fixes.js';
import { describeFailure, isUserNamespaceFailure, succeeded } from './outcome.js';
import { compareVersions, formatVersion, parseBwrapVersion, type Version } from './parse.js';
import type { Check, HostSnapshot } from './types.js';
import { usernsFailureFix } from './userns.js';

/** --disable-userns first shipped in 0.8.0; without it a sandboxed process can make its own user namespace. */
export const MIN_BWRAP_VERSION: Version = { major: 0, minor: 8, patch: 0 };

/** The smallest sandbox with every namespace and privilege flag a real run uses; runs /usr/bin/true. */
export const BWRAP_PROBE_ARGS: readonly string[] = [
  '--unshare-user',
  '--unshare-pid',
  '--unshare-net',
  '--unshare-ipc',
  '--unshare-uts',
  '--disable-userns',
  '--cap-drop',
  'ALL',
  '--die-with-parent',
  '--new-session',
  '--ro-bind',
  '/usr',
  '/usr',
  '--symlink',
  'usr/bin',
  '/bin',
  '--symlink',
  'usr/lib',
  '/lib',
  '--symlink',
  'usr/lib64',
  '/lib64',
  '--proc',
  '/proc',
  '--dev',
  '/dev',
];
export const BWRAP_PROBE_COMMAND: readonly string[] = ['/usr/bin/true'];

/** The descriptor the seccomp probe hands its filter on (stdin/stdout/stderr come first). */
export const SECCOMP_PROBE_FD = 3;

/** classic BPF `ret #SECCOMP_RET_ALLOW`: the smallest valid filter (struct sock_filter, little-endian). */
export function allowAllFilter(): Buffer {
  const insn = Buffer.alloc(8);
  insn.writeUInt16LE(0x06, 0); // BPF_RET | BPF_K
  insn.writeUInt8(0, 2); // jt
  insn.writeUInt8(0, 3); // jf
  insn.writeUInt32LE(0x7fff0000, 4); // SECCOMP_RET_ALLOW
  return insn;
}

export function probeArgs(withSeccomp: boolean): string[] {
  const seccomp = withSeccomp ? ['--seccomp', String(SECCOMP_PROBE_FD)] : [];
  return [...BWRAP_PROBE_ARGS, ...seccomp, ...BWRAP_PROBE_COMMAND];
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

export function probeCommandLine(bwrapPath: string): string {
  return [bwrapPath, ...probeArgs(false)].map(shellQuote).join(' ');
}

const VERSION_TITLE = `bubblewrap >= ${formatVersion(MIN_BWRAP_VERSION)}`;
const SETUID_TITLE = 'bubblewrap not setuid';
const PROBE_TITLE = 'bubblewrap starts a sandbox';

export interface BwrapEvaluation {
  checks: Check[];
  path: string | null;
  version: Version | null;
  /** The minimal sandbox ran. */
  functional: boolean;
  /** Fix for whatever stops bwrap from working, reused by checks that depend on it. */
  blockingFix: string | null;
}

export function upgradeBubblewrapFix(ctx: FixContext): string {
  const s = sudo(ctx);
  const fromSource =
    'build it from source: `git clone https://github.com/containers/bubblewrap && cd bubblewrap && ' +
    `meson setup build && ninja -C build && ${s}ninja -C build install\`, then \`export IRONCAGE_BWRAP=/usr/local/bin/bwrap\``;
  return distroFix(ctx, {
    debian: `Debian 12+ ships >= 0.8.0: \`${s}apt-get install bubblewrap\`; on older releases ${fromSource}`,
    ubuntu: `Ubuntu 23.10+ ships >= 0.8.0: \`${s}apt-get install bubblewrap\`; on 22.04 and older ${fromSource}`,
    fedora: `\`${s}dnf upgrade bubblewrap\` (Fedora 38+ ships >= 0.8.0)`,
  });
}

function presentCheck(snap: HostSnapshot, ctx: FixContext): Check {
  const { bwrap } = snap;
  const title = 'bubblewrap installed';
  if (bwrap.path !== null) {
    const how = bwrap.source === 'PATH' ? 'found on PATH' : `from ${bwrap.source}`;
    return { id: 'bwrap.present', title, status: 'ok', detail: `${bwrap.path} (${how})`, required: true };
  }
  const where = {
    PATH: 'bwrap is not on PATH',
    IRONCAGE_BWRAP: `IRONCAGE_BWRAP=${bwrap.requested} is not an executable file`,
    option: `the configured bwrap path ${bwrap.requested} is not an executable file`,
  }[bwrap.source];
  const fix = {
    PATH: installBubblewrapFix(ctx),
    IRONCAGE_BWRAP: `point IRONCAGE_BWRAP at an executable bwrap (e.g. \`export IRONCAGE_BWRAP=/usr/bin/bwrap\`) or unset it; to install: ${installBubblewrapFix(ctx)}`,
    option: `configure the path of an executable bwrap (e.g. /usr/bin/bwrap); to install: ${installBubblewrapFix(ctx)}`,
  }[bwrap.source];
  return {
    id: 'bwrap.present',
    title,
    status: 'fail',
    detail: `${where}${bwrap.lookupError ? ` (${bwrap.lookupError})` : ''}`,
    fix,
    required: true,
  };
}

export function evaluateBwrap(snap: HostSnapshot, ctx: FixContext): BwrapEvaluation {
  const { bwrap } = snap;
  const present = presentCheck(snap, ctx);
  if (bwrap.path === null) {
    // Every check id appears in every report, so consumers of the JSON need no special cases.
    const fix = present.fix ?? installBubblewrapFix(ctx);
    const notChecked = (id: string, title: string, required: boolean): Check => ({
      id,
      title,
      status: required ? 'fail' : 'warn',
      detail: 'not checked: bubblewrap was not found',
      fix,
      required,
    });
    return {
      checks: [
        present,
        notChecked('bwrap.version', VERSION_TITLE, true),
        notChecked('bwrap.setuid', SETUID_TITLE, false),
        notChecked('bwrap.probe', PROBE_TITLE, true),
      ],
      path: null,
      version: null,
      functional: false,
      blockingFix: fix,
    };
  }
  const checks: Check[] = [present];
  let blockingFix: string | null = null;

  // Version.
  const version = bwrap.version && succeeded(bwrap.version) ? parseBwrapVersion(bwrap.version.stdout) : null;
  if (version === null) {
    blockingFix = `reinstall bubblewrap: ${installBubblewrapFix(ctx)}`;
    const why = bwrap.version ? describeFailure(bwrap.version) : 'not run';
    checks.push({
      id: 'bwrap.version',
      title: VERSION_TITLE,
      status: 'fail',
      detail: `\`${bwrap.path} --version\` gave no version (${succeeded(bwrap.version) ? `output: ${bwrap.version?.stdout.trim()}` : why})`,
      fix: blockingFix,
      required: true,
    });
  } else if (compareVersions(version, MIN_BWRAP_VERSION) < 0) {
    blockingFix = upgradeBubblewrapFix(ctx);
    checks.push({
      id: 'bwrap.version',
      title: VERSION_TITLE,
      status: 'fail',
      detail: `${formatVersion(version)} is too old: --disable-userns (keeps sandboxed code from creating user namespaces) needs ${formatVersion(MIN_BWRAP_VERSION)}`,
      fix: blockingFix,
      required: true,
    });
  } else {
    checks.push({
      id: 'bwrap.version',
      title: VERSION_TITLE,
      status: 'ok',
      detail: `${formatVersion(version)} (supports --disable-userns)`,
      required: true,
    });
  }

  // Setuid: a setuid bwrap runs as root for every caller; ironcage relies on user namespaces instead.
  checks.push(
    bwrap.setuid
      ? {
          id: 'bwrap.setuid',
          title: SETUID_TITLE,
          status: 'warn',
          detail:
            'bwrap is setuid root: it then acts with root privileges on behalf of any user, a larger attack surface; ' +
            'ironcage only needs unprivileged user namespaces',
          fix: `${sudo(ctx)}chmod u-s ${bwrap.path} (once the user-namespace check passes for unprivileged users)`,
          required: false,
        }
      : {
          id: 'bwrap.setuid',
          title: SETUID_TITLE,
          status: 'ok',
          detail: 'not setuid: runs with the caller’s privileges and user namespaces',
          required: false,
        },
  );

  // Functional probe.
  const functional = succeeded(bwrap.probe);
  if (functional) {
    checks.push({
      id: 'bwrap.probe',
      title: PROBE_TITLE,
      status: 'ok',
      detail: 'ran /usr/bin/true with user, pid, net, ipc, uts namespaces, --disable-userns, --cap-drop ALL',
      required: true,
    });
  } else {
    const outcome = bwrap.probe;
    const detail = outcome ? describeFailure(outcome) : 'not run';
    let fix: string;
    if (blockingFix !== null) fix = blockingFix;
    else if (outcome && isUserNamespaceFailure(outcome)) fix = usernsFailureFix(snap, ctx);
    else {
      fix =
        `reproduce with \`${probeCommandLine(bwrap.path)}\`; inside a container, allow unshare and mount ` +
        '(Docker/Podman: `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`, or use the gVisor/runsc engine)';
    }
    blockingFix ??= fix;
    checks.push({
      id: 'bwrap.probe',
      title: PROBE_TITLE,
      status: 'fail',
      detail: `the minimal sandbox failed: ${detail}`,
      fix,
      required: true,
    });
  }
  return { checks, path: bwrap.path, version, functional, blockingFix };
}
