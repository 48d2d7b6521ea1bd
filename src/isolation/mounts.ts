/**
 * The mount planner: policy → bubblewrap arguments. A pure function over a HostView (what the host filesystem
 * looks like), so it is property-tested without touching the disk; ./host-view.ts gives the real one.
 *
 * Rules it guarantees:
 * - own user, pid, ipc, uts, net and cgroup namespaces; no further user namespaces; no capabilities; a new
 *   session (no TIOCSTI into the caller's terminal); the sandbox dies with its parent; an empty environment;
 * - a fresh /proc and a minimal /dev; system directories read-only; never a bind of `/`;
 * - binds are planned parents-first, and hidden paths are planned after every bind, so deny wins also for a
 *   path inside an allowed directory;
 * - a bind's source is resolved to its real path before any rule is checked, so a symlink cannot carry a bind
 *   into a hidden path; symlinks *inside* a bound directory resolve within the sandbox's own view.
 */
import { posix } from 'node:path';
import { SYSTEM_CA_BUNDLE, trustEnv } from '../egress/tls/trust.js';
import type { Bind, SandboxPolicy } from '../policy/schema.js';

export type HostEntry = { kind: 'dir' | 'file' | 'other' } | { kind: 'symlink'; target: string };

/** What the planner may know about the host. All paths absolute. */
export interface HostView {
  /** The entry at `path` itself (a final symlink is not followed); null when absent. */
  lookup(path: string): HostEntry | null;
  /** The fully resolved path, or null when it does not resolve. */
  realpath(path: string): string | null;
  /** Home directories that `~/` in hidden paths expands to. */
  homes: readonly string[];
}

/** File descriptors the caller passes to bwrap; data fds carry generated /etc files. */
export interface PlanFds {
  seccomp: number;
  passwd: number;
  group: number;
  hosts: number;
  /** bwrap writes {"child-pid": N} here once the sandbox exists (used to place it in a cgroup). */
  info?: number;
  /** bwrap waits for one byte here before it starts the command. */
  block?: number;
}

export interface PlanContext {
  host: HostView;
  /**
   * The in-sandbox agent binary, placed read-only at AGENT_PATH: bound from its host path, or copied from a
   * descriptor when bwrap runs as a host uid that may not be able to reach the build directory.
   */
  agent: { path: string } | { fd: number };
  /** The caller's environment, read only for names listed in policy.env.pass. */
  hostEnv: Readonly<Record<string, string | undefined>>;
  fds: PlanFds;
  /**
   * Set for `network.mode: 'proxy'`: the host path of the run's egress proxy socket, bound at EGRESS_SOCKET_PATH,
   * and the loopback port the agent relays to it; the usual proxy variables then point at that port.
   */
  egress?: {
    socket: string;
    port: number;
    /** A descriptor carrying the trust bundle (system roots + the installation's CA) for TLS interception. */
    trustFd?: number;
    /** Variables the egress setup provides: one placeholder per vault secret, never a real value. */
    env?: Readonly<Record<string, string>>;
  };
}

export const AGENT_PATH = '/.ironcage/agent';
export const EGRESS_SOCKET_PATH = '/.ironcage/egress.sock';
/** Where the trust bundle goes when the system bundle's directory is not in the sandbox. */
export const TRUST_BUNDLE_PATH = '/.ironcage/ca-bundle.pem';

/**
 * Proxy variables for common tools, in both spellings (curl, pip, git, python requests/httpx/urllib, Go, npm
 * and yarn read HTTP(S)_PROXY; Node >= 24 fetch with NODE_USE_ENV_PROXY; the JVM with its system properties).
 * They are a convenience, not the boundary: nothing else leaves the sandbox's network namespace anyway.
 */
export function egressProxyEnvironment(port: number): Record<string, string> {
  const url = `http://127.0.0.1:${port}`;
  const env: Record<string, string> = { NO_PROXY: '', no_proxy: '', NODE_USE_ENV_PROXY: '1' };
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY']) {
    env[name] = url;
    env[name.toLowerCase()] = url;
  }
  env.JAVA_TOOL_OPTIONS = ['http', 'https']
    .map((p) => `-D${p}.proxyHost=127.0.0.1 -D${p}.proxyPort=${port}`)
    .join(' ');
  return env;
}

export class MountPlanError extends Error {
  readonly code = 'MOUNT_REFUSED';
  constructor(
    message: string,
    /** The policy field that caused the refusal. */
    readonly rule: string,
  ) {
    super(message);
    this.name = 'MountPlanError';
  }
}

/** Sandbox paths that ironcage itself provides and a bind may not replace. */
const RESERVED = ['/', '/proc', '/dev', '/.ironcage'];

type Mount =
  | { op: 'ro-bind' | 'bind'; src: string; dest: string; rule: string }
  | { op: 'symlink'; target: string; dest: string }
  | { op: 'tmpfs'; dest: string; sizeBytes: number; mode: string };

export function isWithin(path: string, dir: string): boolean {
  return path === dir || dir === '/' || path.startsWith(`${dir}/`);
}

function depth(path: string): number {
  return path === '/' ? 0 : path.split('/').length - 1;
}

function expandHidden(entries: readonly string[], homes: readonly string[]): string[] {
  const out = new Set<string>();
  for (const entry of entries) {
    if (entry.startsWith('~/')) for (const home of homes) out.add(posix.join(home, entry.slice(2)));
    else out.add(posix.normalize(entry));
  }
  return [...out];
}

function checkDest(dest: string, rule: string): void {
  const clash = RESERVED.find((r) => dest === r || (r !== '/' && r !== '/dev' && isWithin(dest, r)));
  if (clash !== undefined) {
    throw new MountPlanError(
      `refused: ${rule} target ${dest} would replace ${clash}, which ironcage provides itself; bind it elsewhere`,
      rule,
    );
  }
}

/** Plan one user bind: resolve it, check it against hidden paths, and say what to do if refused. */
function planBind(
  bind: Bind,
  op: 'ro-bind' | 'bind',
  rule: string,
  hidden: string[],
  host: HostView,
): Mount | null {
  const entry = host.lookup(bind.host);
  if (entry === null) {
    if (rule === 'filesystem.optional') return null;
    throw new MountPlanError(
      `refused: ${rule} path ${bind.host} does not exist on the host; create it or remove it from ${rule}`,
      rule,
    );
  }
  checkDest(bind.sandbox, rule);
  // System entries such as /bin -> usr/bin are mirrored as links, so the sandbox view matches the host's.
  if (entry.kind === 'symlink' && rule === 'filesystem.optional' && bind.host === bind.sandbox) {
    return { op: 'symlink', target: entry.target, dest: bind.sandbox };
  }
  const real = host.realpath(bind.host);
  if (real === null) {
    throw new MountPlanError(`refused: ${rule} path ${bind.host} is a dangling symlink`, rule);
  }
  if (real === '/') {
    throw new MountPlanError(
      `refused: ${rule} path ${bind.host} is the host's root; bind only the directories the command needs`,
      rule,
    );
  }
  const secret = hidden.find((h) => isWithin(real, h));
  if (secret !== undefined) {
    const via = real === bind.host ? '' : ` (it resolves to ${real})`;
    throw new MountPlanError(
      `refused: ${rule} path ${bind.host}${via} is inside the hidden path ${secret}; ` +
        `to allow it, add "${secret}" to filesystem.reveal`,
      'filesystem.hidden',
    );
  }
  return { op, src: real, dest: bind.sandbox, rule };
}

/** Where a hidden host path appears inside the sandbox, through each bind that covers it. */
function hiddenTargets(hidden: string[], binds: Mount[], host: HostView): { dest: string; dir: boolean }[] {
  const out = new Map<string, boolean>();
  for (const h of hidden) {
    const real = host.realpath(h);
    const entry = real === null ? null : host.lookup(real);
    if (real === null || entry === null || entry.kind === 'symlink') continue;
    for (const m of binds) {
      if (m.op === 'symlink' || m.op === 'tmpfs' || !isWithin(real, m.src) || real === m.src) continue;
      out.set(posix.join(m.dest, real.slice(m.src.length)), entry.kind === 'dir');
    }
  }
  return [...out].map(([dest, dir]) => ({ dest, dir }));
}

function passwdFile(policy: SandboxPolicy): string {
  const { uid, gid, name } = policy.user;
  const home = policy.env.set.HOME ?? '/';
  return `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n${name}:x:${uid}:${gid}:${name}:${home}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`;
}

function groupFile(policy: SandboxPolicy): string {
  return `root:x:0:\n${policy.user.name}:x:${policy.user.gid}:\nnogroup:x:65534:\n`;
}

function hostsFile(policy: SandboxPolicy): string {
  return `127.0.0.1\tlocalhost ${policy.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`;
}

/** Generated /etc files the caller writes into the data fds (contents depend only on the policy). */
export function planEtcFiles(policy: SandboxPolicy): { passwd: string; group: string; hosts: string } {
  return { passwd: passwdFile(policy), group: groupFile(policy), hosts: hostsFile(policy) };
}

/** The environment the command starts with: nothing from the host except names passed explicitly. */
export function planEnvironment(
  policy: SandboxPolicy,
  hostEnv: PlanContext['hostEnv'],
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of policy.env.pass) {
    const value = hostEnv[name];
    if (value !== undefined) env[name] = value;
  }
  return Object.assign(env, policy.env.set);
}

/** policy → bwrap argv (everything before the command). Throws MountPlanError for a refused policy. */
export function planBwrapArgs(policy: SandboxPolicy, ctx: PlanContext): string[] {
  const fs = policy.filesystem;
  const reveal = new Set(expandHidden(fs.reveal, ctx.host.homes));
  const hidden = expandHidden(fs.hidden, ctx.host.homes).filter((h) => !reveal.has(h));

  const mounts: Mount[] = [];
  const add = (binds: Bind[], op: 'ro-bind' | 'bind', rule: string) => {
    for (const b of binds) {
      const m = planBind(b, op, rule, hidden, ctx.host);
      if (m !== null) mounts.push(m);
    }
  };
  add(fs.optional, 'ro-bind', 'filesystem.optional');
  add(fs.readOnly, 'ro-bind', 'filesystem.readOnly');
  add(fs.writable, 'bind', 'filesystem.writable');
  for (const s of fs.scratch) {
    if (s.path !== '/dev/shm') checkDest(s.path, 'filesystem.scratch');
    mounts.push({ op: 'tmpfs', dest: s.path, sizeBytes: s.sizeMb * 1024 * 1024, mode: '1777' });
  }
  // A later mount at the same place wins; parents go before children so nested mounts stay visible.
  const byDest = new Map<string, Mount>();
  for (const m of mounts) {
    byDest.delete(m.dest);
    byDest.set(m.dest, m);
  }
  const ordered = [...byDest.values()].sort((a, b) => depth(a.dest) - depth(b.dest));

  const workdirCovered = ordered.some((m) => m.op !== 'symlink' && isWithin(fs.workdir, m.dest));
  if (!workdirCovered) {
    throw new MountPlanError(
      `refused: filesystem.workdir ${fs.workdir} is not inside any bound path or scratch mount; ` +
        'add it to filesystem.scratch or filesystem.writable',
      'filesystem.workdir',
    );
  }

  // The trust bundle replaces the system one where tools look by default, if that directory is in the sandbox.
  const systemBundleBound = ordered.some(
    (m) =>
      (m.op === 'ro-bind' || m.op === 'bind') &&
      isWithin(SYSTEM_CA_BUNDLE, m.dest) &&
      ctx.host.lookup(SYSTEM_CA_BUNDLE)?.kind === 'file',
  );
  const trustPath =
    ctx.egress?.trustFd === undefined ? undefined : systemBundleBound ? SYSTEM_CA_BUNDLE : TRUST_BUNDLE_PATH;

  const { uid, gid } = policy.user;
  const args = [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-net',
    '--unshare-cgroup',
    '--disable-userns',
    '--cap-drop',
    'ALL',
    '--new-session',
    '--die-with-parent',
    '--clearenv',
    '--uid',
    String(uid),
    '--gid',
    String(gid),
    '--hostname',
    policy.hostname,
    '--proc',
    '/proc',
    '--dev',
    '/dev',
  ];
  for (const m of ordered) {
    if (m.op === 'symlink') args.push('--symlink', m.target, m.dest);
    else if (m.op === 'tmpfs') args.push('--perms', m.mode, '--size', String(m.sizeBytes), '--tmpfs', m.dest);
    else args.push(`--${m.op}`, m.src, m.dest);
  }
  // Deny wins: hidden directories become empty read-only tmpfs, hidden files become unopenable.
  for (const h of hiddenTargets(hidden, ordered, ctx.host)) {
    if (h.dir) args.push('--perms', '0000', '--tmpfs', h.dest, '--remount-ro', h.dest);
    else args.push('--ro-bind', '/dev/null', h.dest);
  }
  args.push(
    '--ro-bind-data',
    String(ctx.fds.passwd),
    '/etc/passwd',
    '--ro-bind-data',
    String(ctx.fds.group),
    '/etc/group',
    '--ro-bind-data',
    String(ctx.fds.hosts),
    '/etc/hosts',
    ...('fd' in ctx.agent
      ? ['--perms', '0555', '--ro-bind-data', String(ctx.agent.fd), AGENT_PATH]
      : ['--ro-bind', ctx.agent.path, AGENT_PATH]),
    ...(ctx.egress === undefined ? [] : ['--bind', ctx.egress.socket, EGRESS_SOCKET_PATH]),
    ...(trustPath === undefined
      ? []
      : ['--perms', '0444', '--ro-bind-data', String(ctx.egress?.trustFd), trustPath]),
    // Everything is in place: the root and /dev become read-only (they are bwrap's own unbounded tmpfs, so a
    // writable root would let a sandbox fill host memory); scratch mounts stay writable.
    '--remount-ro',
    '/',
    '--remount-ro',
    '/dev',
    '--chdir',
    fs.workdir,
  );
  // Proxy variables first, so a policy's env.set can still override them (the proxy stays the only route).
  const env = {
    ...(ctx.egress === undefined ? {} : egressProxyEnvironment(ctx.egress.port)),
    ...(trustPath === undefined ? {} : trustEnv(trustPath)),
    ...ctx.egress?.env,
    ...planEnvironment(policy, ctx.hostEnv),
  };
  for (const [name, value] of Object.entries(env)) {
    args.push('--setenv', name, value);
  }
  args.push('--seccomp', String(ctx.fds.seccomp));
  if (ctx.fds.info !== undefined) args.push('--info-fd', String(ctx.fds.info));
  if (ctx.fds.block !== undefined) args.push('--block-fd', String(ctx.fds.block));
  return args;
}
