/**
 * The local Linux engine: one bubblewrap process per run, confined by the planned namespaces and mounts,
 * the compiled seccomp filter, a cgroup where one is writable and rlimits always (set by the in-sandbox agent).
 * Like nsjail's contain.cc, this file only orchestrates: each concern lives in its own module.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startSandboxEgress } from '../egress/sandbox-egress.js';
import { defaultStateDir, type EgressServices, lazyEgressServices } from '../egress/services.js';
import type { SandboxPolicy, SeccompProfileName } from '../policy/schema.js';
import type { Enforcement, Engine, Outcome, RunRequest, RunResult } from '../sandbox/engine.js';
import { type AgentStatus, parseAgentStatus } from './agent-status.js';
import { type BwrapStdio, feedSetupData, watchInfo } from './bwrap-io.js';
import {
  type CgroupHost,
  createSandboxCgroup,
  detectCgroups,
  type SandboxCgroup,
  sweepStaleCgroups,
} from './cgroups.js';
import { realHostView } from './host-view.js';
import { AGENT_PATH, EGRESS_SOCKET_PATH, MountPlanError, type PlanContext, planBwrapArgs } from './mounts.js';
import { reapOrphanedOneShotRuns, sweepStaleEgressDirs } from './orphans.js';
import { AGENT_BUILD_PATH, packageFile, seccompBuildPath } from './package-files.js';
import { planRlimits } from './rlimits.js';
import { signalName } from './signals.js';

/** Descriptor numbers inside bwrap; they follow stdin/stdout/stderr in the spawn stdio array. */
const FD = {
  seccomp: 3,
  status: 4,
  passwd: 5,
  group: 6,
  hosts: 7,
  info: 8,
  block: 9,
  commandSeccomp: 10,
  // 11: the agent binary (AGENT_FD)
  trust: 12,
} as const;

export class SandboxSetupError extends Error {
  readonly code = 'SANDBOX_SETUP_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'SandboxSetupError';
  }
}

export interface LocalEngineOptions {
  /** bubblewrap binary (default: IRONCAGE_BWRAP, else `bwrap` found on PATH). */
  bwrapPath?: string;
  /** Host path of the built agent (default: native/build/ironcage-agent of this package). */
  agentPath?: string;
  /** Cgroup support: detected on first use unless given; `null` forces rlimits only. */
  cgroups?: CgroupHost | null;
  /**
   * When ironcage runs as root: the unprivileged host uid/gid that bubblewrap and every sandboxed process run as
   * (default nobody, 65534). The sandbox user inside maps to it, never to host root.
   */
  sandboxHostId?: { uid: number; gid: number };
  /**
   * The installation's CA and vault for network mode `proxy` (TLS interception, `network.secrets`). Default:
   * opened from the default state directory on the first proxy-mode run.
   */
  egress?: EgressServices;
}

/** Where the agent comes from: its build path, or a descriptor when bwrap runs as another host uid. */
const AGENT_FD = 11;

function defaultAgentPath(): string {
  const path = packageFile(AGENT_BUILD_PATH);
  if (path !== null) return path;
  throw new SandboxSetupError(
    `the in-sandbox agent is not built (${AGENT_BUILD_PATH}); run \`npm run build\` (needs gcc and libc6-dev)`,
  );
}

/** An absolute path for bwrap, so it can be started with an empty environment. */
function resolveExecutable(name: string): string {
  if (name.includes('/')) return name;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const candidate = join(dir || '.', name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return name; // spawn fails with ENOENT, and preflight explains
}

/** What LocalEngineOptions resolve to on this host (the warm-sandbox manager resolves them the same way). */
export interface EngineHost {
  bwrapPath: string;
  agentPath: string;
  /** Set when running as root: the unprivileged identity bwrap drops to. */
  hostId: { uid: number; gid: number } | null;
}

export function resolveEngineHost(options: LocalEngineOptions): EngineHost {
  return {
    bwrapPath: resolveExecutable(options.bwrapPath ?? process.env.IRONCAGE_BWRAP ?? 'bwrap'),
    agentPath: options.agentPath ?? defaultAgentPath(),
    hostId: process.getuid?.() === 0 ? (options.sandboxHostId ?? { uid: 65534, gid: 65534 }) : null,
  };
}

/** The cgroup hierarchy this process can use, or null when limits fall back to rlimits. */
export function usableCgroups(): CgroupHost | null {
  const detected = detectCgroups();
  return detected.mode === 'none' ? null : detected;
}

/** The BPF program of a profile for this host: precompiled by the build, else compiled now. */
export async function seccompProgram(profile: SeccompProfileName): Promise<Buffer> {
  const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  const prebuilt = packageFile(seccompBuildPath(profile, arch));
  if (prebuilt !== null) return readFileSync(prebuilt);
  const { compileSeccomp } = await import('./seccomp/index.js');
  return compileSeccomp(profile);
}

export class LocalEngine implements Engine {
  readonly name = 'local-bwrap';
  readonly #bwrap: string;
  readonly #agentPath: string;
  /** Set when running as root: bwrap drops to this identity before it creates the sandbox. */
  readonly #hostId: { uid: number; gid: number } | null;
  #cgroups: CgroupHost | null | undefined;
  readonly #filters = new Map<SeccompProfileName, Promise<Buffer>>();
  #swept = false;
  #reaped = false;
  readonly #openServices: () => Promise<EgressServices>;

  constructor(options: LocalEngineOptions = {}) {
    this.#openServices = lazyEgressServices(options.egress, () => defaultStateDir());
    const host = resolveEngineHost(options);
    this.#bwrap = host.bwrapPath;
    this.#agentPath = host.agentPath;
    this.#hostId = host.hostId;
    this.#cgroups = options.cgroups;
  }

  /** The cgroup hierarchy runs use, detected once per engine. */
  cgroupHost(): CgroupHost | null {
    if (this.#cgroups === undefined) this.#cgroups = usableCgroups();
    if (this.#cgroups !== null && !this.#swept) {
      this.#swept = true;
      void sweepStaleCgroups(this.#cgroups);
    }
    return this.#cgroups;
  }

  async run(request: RunRequest): Promise<RunResult> {
    const { policy } = request;
    if (!this.#reaped) {
      this.#reaped = true;
      // Leftovers of an ironcage killed mid-run (see orphans.ts); scanned while bwrap sets this run up.
      setImmediate(() => {
        reapOrphanedOneShotRuns();
        sweepStaleEgressDirs();
      });
    }
    if (request.argv.length === 0) throw new SandboxSetupError('no command given');
    if (this.#hostId !== null) refuseUnwritableBinds(policy, this.#hostId);
    if (policy.network.mode === 'none') return this.#run(request, null);
    const services = await this.#egressServices();
    const egress = await startSandboxEgress({
      network: policy.network,
      hostId: this.#hostId,
      services,
      ...(request.onEgress ? { onEvent: request.onEgress } : {}),
    }).catch((err: Error) => {
      throw new SandboxSetupError(err.message);
    });
    try {
      return await this.#run(request, {
        plan: {
          socket: egress.socketPath,
          port: policy.network.port,
          trustFd: FD.trust,
          env: egress.secretEnv,
        },
        trustBundle: services.trustBundle,
      });
    } finally {
      await egress.close();
    }
  }

  /** The installation's CA and vault, opened on the first proxy-mode run (see egress/services.ts). */
  #egressServices(): Promise<EgressServices> {
    return this.#openServices().catch((err: Error) => {
      throw new SandboxSetupError(
        `cannot open the egress CA and vault: ${err.message}; set IRONCAGE_STATE_DIR to a writable directory`,
      );
    });
  }

  async #run(
    request: RunRequest,
    egress: { plan: NonNullable<PlanContext['egress']>; trustBundle: string } | null,
  ): Promise<RunResult> {
    const { policy } = request;
    const cgroups = this.cgroupHost();
    const enforcement: Enforcement =
      cgroups === null ? 'rlimit' : cgroups.mode === 'v2' ? 'cgroup-v2' : 'cgroup-v1';
    const rlimits = planRlimits(policy.limits, { cgroup: cgroups !== null });

    const bwrapArgs = planBwrapArgs(policy, {
      host: realHostView(),
      agent: this.#hostId === null ? { path: this.#agentPath } : { fd: AGENT_FD },
      hostEnv: process.env,
      // The info fd always tells the sandbox's init pid; without a cgroup there is nothing to place before
      // the command starts, so bwrap does not wait on the block fd.
      fds: cgroups === null ? { ...FD, block: undefined } : FD,
      ...(egress === null ? {} : { egress: egress.plan }),
    });
    // bwrap confines everything (agent included) with the `default` filter; a stricter profile is stacked by the
    // agent onto the command alone, because the agent itself must fork and wait.
    const stacked = policy.seccomp === 'default' ? [] : ['--seccomp-fd', String(FD.commandSeccomp)];
    const command = [
      AGENT_PATH,
      'exec',
      '--status-fd',
      String(FD.status),
      ...stacked,
      ...(egress === null ? [] : ['--relay', `${egress.plan.port}:${EGRESS_SOCKET_PATH}`]),
      ...rlimits.flatMap((r) => ['--rlimit', r]),
      '--',
      ...request.argv,
    ];

    let cgroup: SandboxCgroup | null = null;
    if (cgroups !== null) {
      cgroup = createSandboxCgroup(cgroups, {
        id: randomBytes(6).toString('hex'),
        memoryBytes: policy.limits.memoryMb * 1024 * 1024,
        pids: policy.limits.processes,
      });
    }
    let result: RunResult;
    try {
      const filters = {
        sandbox: await this.#filter('default'),
        command: policy.seccomp === 'default' ? null : await this.#filter(policy.seccomp),
        trustBundle: egress?.trustBundle ?? null,
      };
      result = await this.#supervise(request, [...bwrapArgs, '--', ...command], filters, cgroup, enforcement);
    } catch (err) {
      await this.#refuseIfIsolationUnavailable();
      throw err;
    } finally {
      await cgroup?.destroy();
    }
    if (result.outcome === 'setup-error') await this.#refuseIfIsolationUnavailable();
    return result;
  }

  #filter(profile: SeccompProfileName): Promise<Buffer> {
    let program = this.#filters.get(profile);
    if (program === undefined) {
      program = seccompProgram(profile);
      this.#filters.set(profile, program);
    }
    return program;
  }

  /**
   * When a sandbox could not be set up, find out whether the host lacks a required isolation feature and, if so,
   * throw IsolationUnavailableError naming each missing feature and its fix. Preflight runs only on failure so
   * the common path stays fast; a run never proceeds with weaker isolation either way.
   */
  async #refuseIfIsolationUnavailable(): Promise<void> {
    const { runPreflight, assertIsolationAvailable } = await import('./preflight.js');
    const report = await runPreflight({ bwrapPath: this.#bwrap, agentPath: this.#agentPath });
    assertIsolationAvailable(report);
  }

  #supervise(
    request: RunRequest,
    args: string[],
    filters: { sandbox: Buffer; command: Buffer | null; trustBundle: string | null },
    cgroup: SandboxCgroup | null,
    enforcement: Enforcement,
  ): Promise<RunResult> {
    const { policy } = request;
    const started = performance.now();
    const stdinMode =
      request.stdin === 'inherit'
        ? 'inherit'
        : request.stdin === undefined || request.stdin === 'ignore'
          ? 'ignore'
          : 'pipe';
    // bwrap gets an empty environment (it is PID 1 inside, and /proc/1/environ is readable there) and, as
    // root, an unprivileged host identity; the agent then reaches it through a descriptor root opened.
    const agentFd = this.#hostId === null ? 'ignore' : openSync(this.#agentPath, 'r');
    let child: ChildProcess;
    try {
      child = spawn(this.#bwrap, args, {
        env: {},
        ...(this.#hostId ?? {}),
        stdio: [
          stdinMode,
          'pipe',
          'pipe',
          'pipe',
          'pipe',
          'pipe',
          'pipe',
          'pipe',
          'pipe',
          'pipe',
          'pipe',
          agentFd,
          filters.trustBundle === null ? 'ignore' : 'pipe',
        ],
      });
    } finally {
      if (typeof agentFd === 'number') closeSync(agentFd);
    }

    return new Promise<RunResult>((resolve, reject) => {
      let killedFor: Outcome | null = null;
      let message: string | undefined;
      let outputBytes = 0;
      let stdoutBytes = 0;
      let stderrBytes = 0;
      let statusText = '';
      let setupStderr = '';
      const limit = policy.limits.outputBytes;

      // The sandbox's init (PID 1 of its namespace) is known once bwrap reports it on the info fd. Killing it
      // takes every sandbox process with it. bwrap arms --die-with-parent for that init only late in its setup,
      // so killing bwrap alone could orphan a sandbox that is still being set up: until the init pid is known,
      // the kill waits for it (a wedged bwrap is killed regardless after a second).
      let initPid: number | null = null;
      let infoDone = false;
      let pendingKill: NodeJS.Timeout | undefined;
      const killSandbox = () => {
        clearTimeout(pendingKill);
        if (initPid !== null) {
          try {
            process.kill(initPid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        child.kill('SIGKILL');
      };
      const kill = (reason: Outcome, why: string) => {
        if (killedFor !== null) return;
        killedFor = reason;
        message = why;
        if (infoDone) killSandbox();
        else pendingKill = setTimeout(killSandbox, 1000);
        cgroup?.killAll().catch(() => {});
      };
      const timer = setTimeout(
        () =>
          kill('timeout', `wall-clock limit of ${policy.limits.wallTimeMs} ms reached (limits.wallTimeMs)`),
        policy.limits.wallTimeMs,
      );
      const onAbort = () => kill('aborted', 'the caller aborted the run');
      request.signal?.addEventListener('abort', onAbort, { once: true });
      if (request.signal?.aborted) onAbort();

      const output = (stream: 'stdout' | 'stderr', chunk: Buffer) => {
        if (killedFor === 'output-limit') return;
        const room = limit - outputBytes;
        const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
        outputBytes += kept.length;
        if (stream === 'stdout') stdoutBytes += kept.length;
        else stderrBytes += kept.length;
        if (stream === 'stderr' && setupStderr.length < 4096) setupStderr += kept.toString('utf8');
        if (kept.length > 0) (stream === 'stdout' ? request.onStdout : request.onStderr)?.(kept);
        if (chunk.length > room) kill('output-limit', `output exceeded ${limit} bytes (limits.outputBytes)`);
      };
      child.stdout?.on('data', (c: Buffer) => output('stdout', c));
      child.stderr?.on('data', (c: Buffer) => output('stderr', c));

      const stdio = child.stdio as unknown as BwrapStdio;
      feedSetupData(
        stdio,
        FD,
        filters.sandbox,
        policy,
        filters.trustBundle === null ? undefined : { fd: FD.trust, bundle: filters.trustBundle },
      );
      if (filters.command === null) stdio[FD.commandSeccomp]?.end();
      else stdio[FD.commandSeccomp]?.end(filters.command);
      stdio[FD.status]?.on('data', (c: Buffer) => {
        statusText += c.toString('utf8');
      });
      watchInfo(stdio[FD.info], (pid) => {
        infoDone = true;
        initPid = pid;
        if (killedFor !== null) return killSandbox();
        if (pid === null || cgroup === null) return; // no pid: bwrap failed before the sandbox existed
        try {
          cgroup.place(pid);
          stdio[FD.block]?.end('x'); // bwrap waits for this byte before it starts the command
        } catch (err) {
          kill('setup-error', `cannot place the sandbox in its cgroup: ${(err as Error).message}`);
        }
      });
      if (stdinMode === 'pipe') child.stdin?.end(request.stdin as string | Uint8Array);
      child.stdin?.on('error', () => {}); // the command may exit without reading its input
      for (const s of stdio.slice(3)) s?.on('error', () => {});

      child.on('error', (err) => {
        clearTimeout(timer);
        reject(
          new SandboxSetupError(
            `cannot start bubblewrap (${this.#bwrap}): ${err.message}; run \`ironcage doctor\` for the fix`,
          ),
        );
      });
      child.on('close', (code, sig) => {
        clearTimeout(timer);
        clearTimeout(pendingKill);
        request.signal?.removeEventListener('abort', onAbort);
        const wallMs = performance.now() - started;
        const stats = cgroup?.stats() ?? null;
        const status = parseAgentStatus(statusText);
        const base = {
          wallMs,
          stdoutBytes,
          stderrBytes,
          enforcement: { memory: enforcement, processes: enforcement },
          cpuMs: stats?.cpuMs ?? (status ? (status.utimeUs + status.stimeUs) / 1000 : null),
          peakMemoryBytes: stats?.peakMemoryBytes ?? (status ? status.maxRssKb * 1024 : null),
        };
        resolve({
          ...base,
          ...classify(policy, status, code, sig, killedFor, message, stats?.oomKills ?? 0, setupStderr),
        });
      });
    });
  }
}

function classify(
  policy: SandboxPolicy,
  status: AgentStatus | null,
  code: number | null,
  sig: NodeJS.Signals | null,
  killedFor: Outcome | null,
  message: string | undefined,
  oomKills: number,
  stderr: string,
): Pick<RunResult, 'outcome' | 'exitCode' | 'signal' | 'message'> {
  if (killedFor !== null) return { outcome: killedFor, exitCode: null, signal: 'SIGKILL', message };
  if (status === null) {
    if (oomKills > 0) {
      return { outcome: 'oom', exitCode: null, signal: 'SIGKILL', message: memoryMessage(policy) };
    }
    const why = stderr.trim() || `bubblewrap ended with ${sig ?? `exit code ${code}`}`;
    return { outcome: 'setup-error', exitCode: null, signal: null, message: `sandbox setup failed: ${why}` };
  }
  if (status.kind === 'exec-error') {
    const exitCode = status.errno === 2 ? 127 : 126;
    return {
      outcome: 'exit',
      exitCode,
      signal: null,
      message: `cannot execute the command (errno ${status.errno})`,
    };
  }
  if (status.kind === 'signal') {
    const name = signalName(status.signal);
    if (oomKills > 0 && name === 'SIGKILL')
      return { outcome: 'oom', exitCode: null, signal: name, message: memoryMessage(policy) };
    if (
      name === 'SIGXCPU' ||
      (name === 'SIGKILL' && (status.utimeUs + status.stimeUs) / 1000 >= policy.limits.cpuTimeMs)
    ) {
      return {
        outcome: 'cpu-limit',
        exitCode: null,
        signal: name,
        message: `CPU time limit of ${policy.limits.cpuTimeMs} ms reached (limits.cpuTimeMs)`,
      };
    }
    if (name === 'SIGXFSZ') {
      return {
        outcome: 'file-size-limit',
        exitCode: null,
        signal: name,
        message: `file size limit of ${policy.limits.fileSizeMb} MiB reached (limits.fileSizeMb)`,
      };
    }
    return { outcome: 'signal', exitCode: null, signal: name };
  }
  if (oomKills > 0 && status.code !== 0) {
    return { outcome: 'oom', exitCode: status.code, signal: null, message: memoryMessage(policy) };
  }
  return { outcome: 'exit', exitCode: status.code, signal: null };
}

/**
 * As root, sandboxes run as an unprivileged host uid, so a writable bind must be writable by it. Refuse up front
 * with the fix rather than letting every write fail inside; ironcage never changes ownership of your files.
 */
export function refuseUnwritableBinds(policy: SandboxPolicy, id: { uid: number; gid: number }): void {
  for (const bind of policy.filesystem.writable) {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(bind.host);
    } catch {
      continue; // the planner reports missing paths
    }
    const writable =
      (st.uid === id.uid && (st.mode & 0o200) !== 0) ||
      (st.gid === id.gid && (st.mode & 0o020) !== 0) ||
      (st.mode & 0o002) !== 0;
    if (!writable) {
      throw new MountPlanError(
        `refused: filesystem.writable path ${bind.host} is not writable by the sandbox: as root, ironcage runs ` +
          `sandboxes as host uid ${id.uid} (gid ${id.gid}), never as root; make it writable for them ` +
          `(e.g. \`chown ${id.uid}:${id.gid} ${bind.host}\`) or run ironcage as the directory's owner`,
        'filesystem.writable',
      );
    }
  }
}

function memoryMessage(policy: SandboxPolicy): string {
  return `memory limit of ${policy.limits.memoryMb} MiB reached; the kernel killed a process (limits.memoryMb)`;
}
