/**
 * SandboxManager: creates warm sandboxes, keeps their registry, and recovers after a crash. No process-global
 * state: every manager has its own state directory, cgroup detection, seccomp cache and registry, so many
 * managers (with different policies) can live in one process. One manager per state directory at a time
 * (a lock file with the owner's pid and start time enforces it).
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, posix, resolve } from 'node:path';
import { AgentClient } from '../agent/client.js';
import type { EgressAskRequest } from '../egress/proxy.js';
import { rulesToInput } from '../egress/rules.js';
import { EGRESS_SOCKET_NAME } from '../egress/sandbox-egress.js';
import { type EgressServices, lazyEgressServices } from '../egress/services.js';
import {
  type CgroupHost,
  openSandboxCgroup,
  type SandboxCgroup,
  sweepStaleCgroups,
} from '../isolation/cgroups.js';
import {
  type EngineHost,
  type LocalEngineOptions,
  resolveEngineHost,
  seccompProgram,
  usableCgroups,
} from '../isolation/local-engine.js';
import { launchWarmSandbox } from '../isolation/warm.js';
import { resolvePolicy } from '../policy/merge.js';
import type { PresetName } from '../policy/presets.js';
import type { SandboxPolicy, SandboxPolicyInput } from '../policy/schema.js';
import { PauseUnsupportedError, SandboxManagerError, SandboxStartError } from './errors.js';
import { ID_PATTERN, type SandboxPaths, sandboxesDir, sandboxPaths } from './layout.js';
import { readMeta, type SandboxMeta, writeMeta } from './meta.js';
import { type EgressLogLimits, startWarmEgress, type WarmEgress } from './network.js';
import { isSameProcess, type ProcessIdentity, processIdentity } from './proc.js';
import { destroySandboxResources, Sandbox, type StopReason } from './sandbox.js';

export interface SandboxManagerOptions {
  /** Directory for sandbox records, sockets, workspaces and snapshots (created 0711 when missing). */
  stateDir: string;
  /** bwrap/agent paths, cgroup override and the host identity sandboxes run as (see LocalEngineOptions). */
  engineOptions?: LocalEngineOptions;
  /** What start() does with sandboxes a previous (crashed) manager left running: re-adopt or kill them. */
  onStartup: 'adopt' | 'reap';
  /**
   * Seconds a sandbox's agent waits without an authenticated host connection before it kills everything
   * (fail closed; default 30). A crashed manager's sandboxes must be adopted within this time.
   */
  orphanTimeoutS?: number;
  /** How long create() waits for the agent to answer (default 10 s). */
  readyTimeoutMs?: number;
  /** Period of the workspace quota check, ms (default 30 s; 0 disables it). */
  quotaCheckMs?: number;
  /**
   * The installation's CA and vault for network mode `proxy` (TLS interception, `network.secrets`). Default:
   * opened from `stateDir` (ca/, vault/) when the first proxy-mode sandbox starts.
   */
  egress?: EgressServices;
  /** Size caps of each sandbox's egress audit log (network mode `proxy`; see network.ts). */
  egressLog?: Partial<EgressLogLimits>;
  /**
   * Asked about destinations no rule decides when a sandbox's rules say `onUndecided: 'ask'` (the approvals
   * flow); absent means those are refused. Gets the sandbox id with each request.
   */
  egressAsk?: (request: EgressAskRequest) => Promise<boolean>;
}

export interface CreateOptions {
  /** Policy preset the sandbox starts from (default `default`). */
  preset?: PresetName;
  /** Layered on the preset (see resolvePolicy). */
  policy?: SandboxPolicyInput;
  /** Files written (through the agent, inside the sandbox's view) before create() resolves. */
  files?: { path: string; content: string | Uint8Array }[];
  /** Environment for every command of this sandbox, on top of the policy's. */
  env?: Record<string, string>;
  /** TTL in ms (default 5 minutes; null: none). */
  timeoutMs?: number | null;
  /** What happens when the TTL expires (default kill). `pause` needs the cgroup freezer. */
  onTimeout?: 'kill' | 'pause';
  /** Sandbox id (default: random); [A-Za-z0-9][A-Za-z0-9_.-]{0,63}, unique in this state directory. */
  id?: string;
  /** Relative CPU share against other sandboxes, cgroup v2 scale 1..10000 (default 100). */
  cpuWeight?: number;
  /** Workspace disk quota (default: the size of the preset's scratch mount at the workdir, else 1024 MiB). */
  workspaceQuotaMb?: number;
}

export interface StartReport {
  adopted: string[];
  /** Live sandboxes killed (onStartup: reap, or adoption failed). */
  reaped: string[];
  /** Dead sandboxes (or directories without a valid record) whose leftovers were removed. */
  cleaned: string[];
  failed: { id: string; error: Error }[];
}

const DEFAULT_TTL_MS = 5 * 60_000;

interface Engine extends EngineHost {
  cgroups: CgroupHost | null;
}

export class SandboxManager {
  readonly stateDir: string;
  readonly #options: SandboxManagerOptions;
  readonly #sandboxes = new Map<string, Sandbox>();
  /** Ids being created (reserved before their directory exists). */
  readonly #creating = new Set<string>();
  #engine: Engine | null = null;
  #seccomp: Promise<Buffer> | null = null;
  readonly #egressServices: () => Promise<EgressServices>;
  #state: 'new' | 'started' | 'closed' = 'new';

  constructor(options: SandboxManagerOptions) {
    this.#options = options;
    this.stateDir = resolve(options.stateDir);
    // The CA and vault: the configured ones, else opened in the state directory on first use.
    this.#egressServices = lazyEgressServices(options.egress, () => this.#options.stateDir);
  }

  get #lockPath(): string {
    return posix.join(this.stateDir, 'manager.lock');
  }

  /** Prepares the state directory and recovers what a previous manager left (see onStartup). */
  async start(): Promise<StartReport> {
    if (this.#state !== 'new') throw new SandboxManagerError('MANAGER_CLOSED', 'start() may be called once');
    const options = this.#options.engineOptions ?? {};
    const host = resolveEngineHost(options);
    this.#engine = { ...host, cgroups: options.cgroups !== undefined ? options.cgroups : usableCgroups() };
    this.#prepareStateDir(host.hostId);
    this.#takeLock();
    this.#state = 'started';
    return this.#recover();
  }

  #prepareStateDir(hostId: Engine['hostId']): void {
    const mode = hostId === null ? 0o700 : 0o711;
    mkdirSync(sandboxesDir(this.stateDir), { recursive: true, mode });
    for (const dir of [this.stateDir, sandboxesDir(this.stateDir)]) chmodSync(dir, mode);
    if (hostId === null) return;
    // bwrap runs as the sandbox's host uid and must reach the sandbox directories to bind them.
    for (let dir = dirname(this.stateDir); ; dir = dirname(dir)) {
      const st = statSync(dir);
      if ((st.mode & 0o001) === 0 && !(st.uid === hostId.uid && (st.mode & 0o100) !== 0)) {
        throw new SandboxManagerError(
          'STATE_DIR_UNUSABLE',
          `state directory ${this.stateDir} is unusable: its parent ${dir} is not searchable by uid ${hostId.uid}, ` +
            `which sandboxes run as; \`chmod o+x ${dir}\` or choose another stateDir`,
        );
      }
      if (dir === '/') break;
    }
  }

  #takeLock(): void {
    try {
      const [pid, start] = readFileSync(this.#lockPath, 'utf8').trim().split(' ').map(Number);
      if (
        pid !== undefined &&
        start !== undefined &&
        pid !== process.pid &&
        isSameProcess({ pid, startTime: start })
      ) {
        throw new SandboxManagerError(
          'STATE_DIR_UNUSABLE',
          `state directory ${this.stateDir} is in use by the manager in process ${pid}`,
        );
      }
    } catch (err) {
      if (err instanceof SandboxManagerError) throw err;
    }
    const me = processIdentity(process.pid);
    writeFileSync(this.#lockPath, `${process.pid} ${me?.startTime ?? 0}\n`, { mode: 0o600 });
  }

  #releaseLock(): void {
    try {
      const [pid] = readFileSync(this.#lockPath, 'utf8').trim().split(' ').map(Number);
      if (pid === process.pid) rmSync(this.#lockPath, { force: true });
    } catch {
      // already gone
    }
  }

  get #started(): Engine {
    if (this.#state === 'closed')
      throw new SandboxManagerError('MANAGER_CLOSED', 'the sandbox manager is closed');
    if (this.#engine === null)
      throw new SandboxManagerError('MANAGER_NOT_STARTED', 'call start() before using the sandbox manager');
    return this.#engine;
  }

  #openCgroup(name: string | null): SandboxCgroup | null {
    const host = this.#engine?.cgroups ?? null;
    if (name === null || host === null) return null;
    try {
      return openSandboxCgroup(host, name);
    } catch {
      return null;
    }
  }

  async #recover(): Promise<StartReport> {
    const report: StartReport = { adopted: [], reaped: [], cleaned: [], failed: [] };
    const root = sandboxesDir(this.stateDir);
    await Promise.all(
      readdirSync(root).map(async (id) => {
        const paths = sandboxPaths(this.stateDir, id);
        try {
          if (!lstatSync(paths.dir).isDirectory()) return;
          let meta: SandboxMeta;
          try {
            meta = readMeta(paths.meta);
          } catch {
            // No usable record: a create that crashed before writing it. Its agent dies by orphan-timeout and
            // its cgroup is swept once its bwrap is gone; the directory goes now.
            rmSync(paths.dir, { recursive: true, force: true });
            report.cleaned.push(id);
            return;
          }
          const cgroup = this.#openCgroup(meta.cgroup);
          const alive = meta.state !== 'stopped' && isSameProcess(meta.init);
          if (alive && this.#options.onStartup === 'adopt') {
            try {
              this.#register(await this.#adopt(meta, paths, cgroup));
              report.adopted.push(id);
              return;
            } catch (err) {
              report.failed.push({ id, error: err as Error });
            }
          }
          await destroySandboxResources(meta, paths, cgroup, meta.state === 'paused');
          (alive ? report.reaped : report.cleaned).push(id);
        } catch (err) {
          report.failed.push({ id, error: err as Error });
        }
      }),
    );
    if (this.#engine?.cgroups) await sweepStaleCgroups(this.#engine.cgroups);
    return report;
  }

  async #adopt(meta: SandboxMeta, paths: SandboxPaths, cgroup: SandboxCgroup | null): Promise<Sandbox> {
    const token = readFileSync(paths.token);
    const connect = () =>
      connectAgent(paths.hostSocket, token, meta.init, this.#options.readyTimeoutMs ?? 10_000);
    // The sandbox's relay reaches the socket through its bound directory, so listening at the same path again
    // (with the rules last set) is all it takes for its network to come back.
    const egress = await this.#startEgress(meta, paths);
    try {
      // A frozen agent cannot answer: a paused sandbox is connected to on resume().
      const client = meta.state === 'paused' ? null : await connect();
      return this.#sandbox(meta, paths, cgroup, client, connect, egress);
    } catch (err) {
      await egress?.close();
      throw err;
    }
  }

  /** Starts the sandbox's egress proxy and log (network mode `proxy`), with its persisted rules if any. */
  async #startEgress(
    meta: Pick<SandboxMeta, 'id' | 'policy' | 'hostId' | 'egressRules' | 'secretPlaceholders'>,
    paths: SandboxPaths,
  ): Promise<WarmEgress | null> {
    const network = meta.policy.network;
    if (network.mode !== 'proxy') return null;
    return startWarmEgress({
      sandboxId: meta.id,
      network,
      services: await this.#egressServices(),
      ...(this.#options.egressAsk ? { ask: this.#options.egressAsk } : {}),
      ...(meta.secretPlaceholders === undefined ? {} : { placeholders: meta.secretPlaceholders }),
      ...(meta.egressRules === undefined ? {} : { rules: meta.egressRules }),
      dir: paths.egressDir,
      logPath: paths.egressLog,
      hostId: meta.hostId,
      ...(this.#options.egressLog === undefined ? {} : { logLimits: this.#options.egressLog }),
    });
  }

  #sandbox(
    meta: SandboxMeta,
    paths: SandboxPaths,
    cgroup: SandboxCgroup | null,
    client: AgentClient | null,
    connect: () => Promise<AgentClient>,
    egress: WarmEgress | null,
  ): Sandbox {
    return new Sandbox({
      meta,
      paths,
      cgroup,
      client,
      connect,
      egress,
      quotaCheckMs: this.#options.quotaCheckMs ?? 30_000,
      onStopped: (sandbox: Sandbox, _reason: StopReason) => {
        if (this.#sandboxes.get(sandbox.id) === sandbox) this.#sandboxes.delete(sandbox.id);
      },
    });
  }

  #register(sandbox: Sandbox): void {
    this.#sandboxes.set(sandbox.id, sandbox);
  }

  /** Creates a sandbox and resolves once its agent has answered (and the initial files are written). */
  async create(options: CreateOptions = {}): Promise<Sandbox> {
    const engine = this.#started;
    const id = options.id ?? randomBytes(8).toString('hex');
    if (!ID_PATTERN.test(id)) {
      throw new SandboxManagerError(
        'INVALID_ID',
        `invalid sandbox id ${JSON.stringify(id)}: must match ${ID_PATTERN}`,
      );
    }
    const paths = sandboxPaths(this.stateDir, id);
    if (this.#creating.has(id) || this.#sandboxes.has(id) || existsSync(paths.dir)) {
      throw new SandboxManagerError('ID_IN_USE', `a sandbox with id ${id} already exists`);
    }
    const preset = options.preset ?? 'default';
    const policy = resolvePolicy(preset, options.policy ?? {});
    const onTimeout = options.onTimeout ?? 'kill';
    if (onTimeout === 'pause' && !canFreeze(engine.cgroups)) {
      throw new PauseUnsupportedError(
        id,
        'onTimeout "pause" was asked for but this host has no usable cgroup freezer',
      );
    }
    if (policy.seccomp !== 'default') {
      throw new SandboxStartError(
        `refused: warm sandboxes run with the "default" seccomp profile (the agent must fork and wait); ` +
          `policy.seccomp "${policy.seccomp}" is available through the one-shot engine (ironcage run)`,
      );
    }
    const timeoutMs = options.timeoutMs === undefined ? DEFAULT_TTL_MS : options.timeoutMs;
    const cpuWeight = options.cpuWeight ?? 100;
    const quotaMb =
      options.workspaceQuotaMb ??
      policy.filesystem.scratch.find((s) => s.path === policy.filesystem.workdir)?.sizeMb ??
      1024;

    this.#creating.add(id);
    const token = randomBytes(32);
    let launched: Awaited<ReturnType<typeof launchWarmSandbox>> | null = null;
    let meta: SandboxMeta | null = null;
    let egress: WarmEgress | null = null;
    try {
      this.#makeDirs(paths, engine.hostId, token, policy.network.mode === 'proxy');
      // The proxy listens before bwrap starts: the sandbox binds the directory its socket is in.
      egress = await this.#startEgress({ id, policy, hostId: engine.hostId }, paths);
      this.#seccomp ??= seccompProgram('default');
      launched = await launchWarmSandbox({
        id,
        policy,
        paths: { workspace: paths.workspace, run: paths.run },
        logPath: paths.log,
        token,
        orphanTimeoutS: this.#options.orphanTimeoutS ?? 30,
        bwrapPath: engine.bwrapPath,
        agentPath: engine.agentPath,
        hostId: engine.hostId,
        seccomp: await this.#seccomp,
        cgroups: engine.cgroups,
        limits: {
          memoryBytes: policy.limits.memoryMb * 1024 * 1024,
          pids: policy.limits.processes,
          cpuWeight,
        },
        ...(egress === null || policy.network.mode !== 'proxy'
          ? {}
          : {
              egress: {
                dir: paths.egressDir,
                socketName: EGRESS_SOCKET_NAME,
                port: policy.network.port,
                ...(egress.egress.trustBundle === undefined
                  ? {}
                  : { trustBundle: egress.egress.trustBundle }),
                env: egress.egress.secretEnv,
              },
            }),
      });
      const bwrap = processIdentity(launched.bwrapPid);
      const init = processIdentity(launched.initPid);
      if (bwrap === null || init === null)
        throw new SandboxStartError(`sandbox ${id} ended right after it started${logTail(paths.log)}`);
      meta = {
        version: 1,
        id,
        createdAt: new Date().toISOString(),
        preset,
        policy,
        env: options.env ?? {},
        hostId: engine.hostId,
        bwrap,
        init,
        cgroup: launched.cgroup?.name ?? null,
        cpuWeight,
        workspaceQuotaBytes: quotaMb * 1024 * 1024,
        deadline: timeoutMs === null ? null : Date.now() + timeoutMs,
        timeoutMs,
        onTimeout,
        state: 'running',
        ...(egress === null
          ? {}
          : {
              egressRules: rulesToInput(egress.egress.proxy.rules),
              secretPlaceholders: { ...egress.egress.secretEnv },
            }),
      };
      writeMeta(paths.meta, meta);
      const readyMeta = meta;
      const connect = () =>
        connectAgent(paths.hostSocket, token, readyMeta.init, this.#options.readyTimeoutMs ?? 10_000);
      let client: AgentClient;
      try {
        await withTimeout(
          launched.ready,
          this.#options.readyTimeoutMs ?? 10_000,
          'the sandbox agent did not start listening',
        );
        linkHostSocket(paths);
        client = await connect();
      } catch (err) {
        throw new SandboxStartError(
          `sandbox ${id} did not become ready: ${(err as Error).message}${logTail(paths.log)}`,
          { cause: err },
        );
      }
      const sandbox = this.#sandbox(meta, paths, launched.cgroup, client, connect, egress);
      this.#register(sandbox);
      this.#creating.delete(id);
      try {
        for (const file of options.files ?? []) await sandbox.files.write(file.path, file.content);
      } catch (err) {
        await sandbox.kill();
        throw err;
      }
      return sandbox;
    } catch (err) {
      if (this.#sandboxes.get(id) === undefined) {
        await egress?.close().catch(() => {});
        const fallback: SandboxMeta = meta ?? placeholderMeta(id, policy, launched);
        await destroySandboxResources(fallback, paths, launched?.cgroup ?? null, false);
      }
      throw err;
    } finally {
      this.#creating.delete(id);
    }
  }

  #makeDirs(paths: SandboxPaths, hostId: Engine['hostId'], token: Buffer, egress: boolean): void {
    const mode = hostId === null ? 0o700 : 0o711;
    mkdirSync(paths.dir, { mode });
    chmodSync(paths.dir, mode);
    writeFileSync(paths.token, token, { mode: 0o600 });
    for (const dir of [paths.run, paths.workspace]) {
      mkdirSync(dir, { mode: 0o700 });
      if (hostId !== null) chownSync(dir, hostId.uid, hostId.gid);
    }
    if (egress) {
      // Owned by the manager: the sandbox's uid reaches the socket by name, and cannot list, add or replace
      // anything where the manager unlinks, listens and chowns (it is also bound read-only).
      mkdirSync(paths.egressDir, { mode });
      chmodSync(paths.egressDir, mode);
    }
  }

  get(id: string): Sandbox | undefined {
    return this.#sandboxes.get(id);
  }

  list(): Sandbox[] {
    return [...this.#sandboxes.values()];
  }

  /**
   * Closes the manager. By default every sandbox is killed; with `keep: true` they keep running for the next
   * manager on this state directory to adopt (each agent kills its sandbox if nobody connects within
   * orphanTimeoutS).
   */
  async close(options: { keep?: boolean } = {}): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    const all = [...this.#sandboxes.values()];
    if (options.keep) await Promise.all(all.map((sandbox) => sandbox.detach()));
    else await Promise.all(all.map((sandbox) => sandbox.stop('manager-closed')));
    this.#sandboxes.clear();
    this.#releaseLock();
  }
}

function canFreeze(host: CgroupHost | null): boolean {
  if (host === null || host.mode === 'none') return false;
  return host.mode === 'v2' || host.controllers.freezer !== undefined;
}

/** A record for cleaning up a create that failed before its meta.json existed. */
function placeholderMeta(
  id: string,
  policy: SandboxPolicy,
  launched: { bwrapPid: number; initPid: number } | null,
): SandboxMeta {
  const identity = (pid: number | undefined): ProcessIdentity =>
    processIdentity(pid ?? 0) ?? { pid: pid ?? 1, startTime: -1 };
  return {
    version: 1,
    id,
    createdAt: new Date().toISOString(),
    preset: 'default',
    policy,
    env: {},
    hostId: null,
    bwrap: launched === null ? { pid: 1, startTime: -1 } : identity(launched.bwrapPid),
    init: launched === null ? { pid: 1, startTime: -1 } : identity(launched.initPid),
    cgroup: null,
    cpuWeight: 100,
    workspaceQuotaBytes: 1,
    deadline: null,
    timeoutMs: null,
    onTimeout: 'kill',
    state: 'running',
  };
}

/**
 * The sandbox user can write run/ (the agent, which runs as that user, creates its socket there), so a process
 * inside could replace run/agent.sock with a symlink to some host socket. The host therefore connects through
 * a hard link in the root-owned sandbox directory, made when the agent reports ready: no process of the
 * sandbox runs yet at that moment, and link() never follows a symlink anyway (checked: it must be a socket).
 */
function linkHostSocket(paths: SandboxPaths): void {
  linkSync(paths.socket, paths.hostSocket);
  if (!lstatSync(paths.hostSocket).isSocket()) {
    throw new SandboxStartError(`the sandbox agent's socket ${paths.socket} is not a socket`);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SandboxStartError(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function logTail(path: string): string {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return text === '' ? '' : ` (sandbox log: ${text.split('\n').slice(-5).join(' | ')})`;
  } catch {
    return '';
  }
}

/**
 * Connects to a sandbox's agent (the client retries while the socket is not there yet). Gives up when the
 * agent process is gone or after `timeoutMs`.
 */
async function connectAgent(
  socket: string,
  token: Buffer,
  init: ProcessIdentity,
  timeoutMs: number,
): Promise<AgentClient> {
  if (!isSameProcess(init)) throw new SandboxStartError('the sandbox agent is not running');
  return AgentClient.connect(socket, token, { timeoutMs });
}
