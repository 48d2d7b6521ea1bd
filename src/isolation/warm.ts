/**
 * How a warm sandbox's bubblewrap is started: the one-shot engine's planner and identity rules, plus what a
 * long-lived sandbox needs (docs/warm-sandboxes.md):
 * - the agent is PID 1 (`--as-pid-1`, it reaps zombies) and runs `serve` on a socket in a bind-mounted host dir;
 * - no `--die-with-parent`, and bwrap runs detached: the sandbox survives its manager, so a crashed manager's
 *   sandboxes can be re-adopted or reaped (the agent itself kills everything when no host connects in time);
 * - the workspace is a host directory bound read-write at the policy's workdir, so snapshots are host copies;
 * - the cgroup is named after the long-lived bwrap process (not the manager), so sweepStaleCgroups() of any
 *   other ironcage process leaves a live warm sandbox alone and cleans it once bwrap is gone;
 * - network mode `proxy`: the egress socket's host *directory* is bound (read-only) and EGRESS_SOCKET_PATH is a
 *   symlink into it. A bound socket file would pin that socket's inode, and a manager restarted after a crash
 *   listens on a new one; through the directory the sandbox reaches whatever socket is there now.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import type { SandboxPolicy } from '../policy/schema.js';
import { type BwrapStdio, feedSetupData, watchInfo } from './bwrap-io.js';
import { type CgroupHost, createSandboxCgroup, type SandboxCgroup } from './cgroups.js';
import { realHostView } from './host-view.js';
import { refuseUnwritableBinds } from './local-engine.js';
import {
  AGENT_PATH,
  EGRESS_SOCKET_PATH,
  isWithin,
  MountPlanError,
  type PlanContext,
  planBwrapArgs,
} from './mounts.js';

/** Where the sandbox's agent socket directory appears inside. */
export const WARM_RUN_DIR = '/.ironcage/run';
export const WARM_SOCKET = `${WARM_RUN_DIR}/agent.sock`;
/** Where the egress socket's directory appears inside (EGRESS_SOCKET_PATH links into it). */
export const WARM_EGRESS_DIR = '/.ironcage/egress';

/** Descriptor numbers inside bwrap (they follow stdin/stdout/stderr in the spawn stdio array). */
const FD = {
  seccomp: 3,
  passwd: 4,
  group: 5,
  hosts: 6,
  info: 7,
  block: 8,
  agent: 9,
  token: 10,
  ready: 11,
  trust: 12,
} as const;

export class WarmLaunchError extends Error {
  readonly code = 'WARM_LAUNCH_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WarmLaunchError';
  }
}

export interface WarmPlanPaths {
  /** Host directory bound read-write at the policy's workdir. */
  workspace: string;
  /** Host directory bound read-write at WARM_RUN_DIR (the agent's socket lives there). */
  run: string;
}

/** Network mode `proxy`: the host directory holding the proxy's socket, and the loopback port relayed to it. */
export interface WarmEgressPlan {
  /** Host directory bound read-only at WARM_EGRESS_DIR. */
  dir: string;
  /** File name of the socket in `dir`. */
  socketName: string;
  port: number;
  /** System roots plus the installation CA, mounted for TLS interception. */
  trustBundle?: string;
  /** Secret placeholders for the sandbox's environment. */
  env?: Readonly<Record<string, string>>;
}

/**
 * The policy the planner sees: a (tiny) scratch mount at the workdir, which the workspace bind then covers.
 * This keeps the planner's workdir check and its parents-first ordering; the bind goes right after it.
 */
function withWorkdirMount(policy: SandboxPolicy): SandboxPolicy {
  const fs = policy.filesystem;
  const below = (path: string) => path !== fs.workdir && isWithin(path, fs.workdir);
  const nested = [
    ...fs.scratch.map((s) => s.path),
    ...fs.writable.map((b) => b.sandbox),
    ...fs.readOnly.map((b) => b.sandbox),
  ].find(below);
  if (nested !== undefined) {
    throw new MountPlanError(
      `refused: ${nested} is inside the workdir ${fs.workdir}, which a warm sandbox replaces with its ` +
        'workspace directory; mount it outside the workdir',
      'filesystem.workdir',
    );
  }
  const scratch = [...fs.scratch.filter((s) => s.path !== fs.workdir), { path: fs.workdir, sizeMb: 1 }];
  return { ...policy, filesystem: { ...fs, scratch } };
}

/** policy → bwrap argv of a warm sandbox (everything before the agent command). Pure apart from ctx.host. */
export function planWarmBwrapArgs(
  policy: SandboxPolicy,
  ctx: Omit<PlanContext, 'fds' | 'egress'> & { fds: Omit<PlanContext['fds'], 'block'> & { block?: number } },
  paths: WarmPlanPaths,
  egress: WarmEgressPlan | null = null,
): string[] {
  const workdir = policy.filesystem.workdir;
  // The planner's own egress handling gives the proxy variables (in its precedence); its socket bind is
  // swapped for the directory bind below.
  const socket = egress === null ? null : posix.join(egress.dir, egress.socketName);
  const planned = planBwrapArgs(withWorkdirMount(policy), {
    ...ctx,
    ...(egress === null || socket === null
      ? {}
      : {
          egress: {
            socket,
            port: egress.port,
            ...(egress.trustBundle === undefined ? {} : { trustFd: FD.trust }),
            ...(egress.env === undefined ? {} : { env: egress.env }),
          },
        }),
  });
  const args = planned.filter((a) => a !== '--die-with-parent');
  if (egress !== null) {
    const at = args.findIndex(
      (a, i) => a === '--bind' && args[i + 1] === socket && args[i + 2] === EGRESS_SOCKET_PATH,
    );
    if (at < 0) throw new MountPlanError('internal: no egress socket bind planned', 'network');
    args.splice(
      at,
      3,
      '--ro-bind',
      egress.dir,
      WARM_EGRESS_DIR,
      '--symlink',
      posix.join(WARM_EGRESS_DIR, egress.socketName),
      EGRESS_SOCKET_PATH,
    );
  }
  const tmpfsAt = args.findIndex((a, i) => a === '--tmpfs' && args[i + 1] === workdir);
  if (tmpfsAt < 0) throw new MountPlanError(`internal: no mount planned at ${workdir}`, 'filesystem.workdir');
  args.splice(tmpfsAt + 2, 0, '--bind', paths.workspace, workdir);
  const rootRo = args.findIndex((a, i) => a === '--remount-ro' && args[i + 1] === '/');
  if (rootRo < 0) throw new MountPlanError('internal: no read-only remount of / planned', 'filesystem');
  args.splice(rootRo, 0, '--bind', paths.run, WARM_RUN_DIR);
  return ['--as-pid-1', ...args];
}

/** The agent's command line inside the sandbox (`relayPort`: network mode `proxy`). */
export function warmAgentCommand(orphanTimeoutS: number, relayPort: number | null = null): string[] {
  return [
    AGENT_PATH,
    'serve',
    '--socket',
    WARM_SOCKET,
    '--token-fd',
    String(FD.token),
    '--orphan-timeout',
    String(orphanTimeoutS),
    '--ready-fd',
    String(FD.ready),
    ...(relayPort === null ? [] : ['--relay', `${relayPort}:${EGRESS_SOCKET_PATH}`]),
  ];
}

export interface WarmLaunchRequest {
  /** Sandbox id, also the cgroup id. */
  id: string;
  policy: SandboxPolicy;
  paths: WarmPlanPaths;
  /** bwrap's stdout and stderr go here (the agent's diagnostics; setup errors). */
  logPath: string;
  token: Buffer;
  orphanTimeoutS: number;
  bwrapPath: string;
  agentPath: string;
  /** As root: the unprivileged host identity bwrap and the sandbox run as; null when not root. */
  hostId: { uid: number; gid: number } | null;
  /** The `default` seccomp program every warm sandbox's processes (agent included) run under. */
  seccomp: Buffer;
  cgroups: CgroupHost | null;
  limits: { memoryBytes: number; pids: number; cpuWeight?: number };
  /** Network mode `proxy`: where the (already listening) egress proxy's socket is. */
  egress?: WarmEgressPlan;
}

export interface WarmProcess {
  /** The outer bwrap process (outside the sandbox's namespaces); lives as long as the sandbox. */
  bwrapPid: number;
  /** The agent, PID 1 of the sandbox, as a host pid: killing it ends the whole PID namespace. */
  initPid: number;
  cgroup: SandboxCgroup | null;
  /** The bwrap child this process started. */
  child: ChildProcess;
  /** Resolves once the agent listens on its socket (it writes to --ready-fd); rejects if it never does. */
  ready: Promise<void>;
}

/** Starts bwrap with the agent in `serve` mode; resolves once the sandbox exists (not yet once it answers). */
export function launchWarmSandbox(req: WarmLaunchRequest): Promise<WarmProcess> {
  const { policy } = req;
  if (req.hostId !== null) refuseUnwritableBinds(policy, req.hostId);
  const withCgroup = req.cgroups !== null && req.cgroups.mode !== 'none';
  const args = planWarmBwrapArgs(
    policy,
    {
      host: realHostView(),
      agent: req.hostId === null ? { path: req.agentPath } : { fd: FD.agent },
      hostEnv: process.env,
      fds: withCgroup ? FD : { ...FD, block: undefined },
    },
    req.paths,
    req.egress ?? null,
  );
  const logFd = openSync(req.logPath, 'a', 0o600);
  const agentFd = req.hostId === null ? 'ignore' : openSync(req.agentPath, 'r');
  let child: ChildProcess;
  try {
    const agent = warmAgentCommand(req.orphanTimeoutS, req.egress?.port ?? null);
    child = spawn(req.bwrapPath, [...args, '--', ...agent], {
      env: {},
      ...(req.hostId ?? {}),
      detached: true,
      stdio: [
        'ignore',
        logFd,
        logFd,
        'pipe',
        'pipe',
        'pipe',
        'pipe',
        'pipe',
        withCgroup ? 'pipe' : 'ignore',
        agentFd,
        'pipe',
        'pipe',
        // The trust bundle's pipe exists only when there is a bundle: an idle open pipe would keep this
        // process alive after the manager let go of a kept sandbox.
        req.egress?.trustBundle === undefined ? 'ignore' : 'pipe',
      ],
    });
  } finally {
    closeSync(logFd);
    if (typeof agentFd === 'number') closeSync(agentFd);
  }
  const stdio = child.stdio as unknown as (BwrapStdio[number] & { destroy(): void })[];
  for (const s of stdio.slice(3)) s?.on('error', () => {});
  const readyStream = stdio[FD.ready];
  const ready = new Promise<void>((resolveReady, rejectReady) => {
    let text = '';
    readyStream?.on('data', (c: Buffer) => {
      text += c.toString('utf8');
      if (text.includes('ready')) {
        resolveReady();
        readyStream.destroy();
      }
    });
    readyStream?.on('close', () =>
      rejectReady(new WarmLaunchError(`the sandbox agent ended before it was ready${logTail(req.logPath)}`)),
    );
  });
  ready.catch(() => {}); // observed by the caller; never an unhandled rejection

  return new Promise<WarmProcess>((resolve, reject) => {
    let settled = false;
    let cgroup: SandboxCgroup | null = null;
    const fail = (why: string, cause?: unknown) => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      const destroyed = cgroup?.destroy().catch(() => {}) ?? Promise.resolve();
      void destroyed.then(() => reject(new WarmLaunchError(`${why}${logTail(req.logPath)}`, { cause })));
    };
    child.on('error', (err) => fail(`cannot start bubblewrap (${req.bwrapPath}): ${err.message}`, err));
    child.on('exit', (code, signal) =>
      fail(`bubblewrap ended during setup (${signal ?? `exit code ${code}`})`),
    );
    const pid = child.pid;
    if (pid === undefined) return; // 'error' follows
    if (withCgroup && req.cgroups !== null) {
      try {
        cgroup = createSandboxCgroup(req.cgroups, { id: req.id, ownerPid: pid, ...req.limits });
      } catch (err) {
        fail(`cannot create the sandbox cgroup: ${(err as Error).message}`, err);
        return;
      }
    }
    const trustBundle = req.egress?.trustBundle;
    feedSetupData(
      stdio,
      FD,
      req.seccomp,
      policy,
      trustBundle === undefined ? undefined : { fd: FD.trust, bundle: trustBundle },
    );
    stdio[FD.token]?.end(req.token);
    watchInfo(stdio[FD.info], (initPid) => {
      if (initPid === null) return; // bwrap failed before creating the sandbox; its exit reports why
      try {
        cgroup?.place(initPid);
      } catch (err) {
        fail(`cannot place the sandbox in its cgroup: ${(err as Error).message}`, err);
        return;
      }
      if (withCgroup) stdio[FD.block]?.end('x');
      if (settled) return;
      settled = true;
      child.removeAllListeners('exit');
      child.removeAllListeners('error');
      child.on('error', () => {});
      // The trust bundle is larger than a pipe holds: bwrap may still be reading it, so it closes on its own
      // once written (destroying it now would hand the sandbox a truncated bundle).
      const trust = stdio[FD.trust];
      trust?.on('error', () => {});
      for (const s of stdio.slice(3)) if (s !== readyStream && s !== trust) s?.destroy();
      child.unref();
      resolve({ bwrapPid: pid, initPid, cgroup, child, ready });
    });
  });
}

/** The last lines of the sandbox log, for an error message (bwrap and the agent explain failures there). */
function logTail(path: string): string {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return text === '' ? '' : `: ${text.split('\n').slice(-5).join(' | ')}`;
  } catch {
    return '';
  }
}
