/**
 * One warm sandbox: its state machine (running ⇄ paused → stopped), TTL, pause/resume through the cgroup
 * freezer, workspace snapshots, the workspace quota check, and kill(). Processes and files go through the
 * agent connection (./commands.ts, ./files.ts). Created and re-adopted only by SandboxManager.
 */
import { EventEmitter } from 'node:events';
import { rmSync } from 'node:fs';
import type { AgentClient } from '../agent/client.js';
import { rulesToInput } from '../egress/rules.js';
import type { CgroupStats, SandboxCgroup } from '../isolation/cgroups.js';
import { planRlimits } from '../isolation/rlimits.js';
import type { SandboxPolicy } from '../policy/schema.js';
import { Commands } from './commands.js';
import { PauseUnsupportedError, SandboxStateError, WorkspaceQuotaError } from './errors.js';
import { Files } from './files.js';
import type { SandboxPaths } from './layout.js';
import { type SandboxMeta, type SandboxState, writeMeta } from './meta.js';
import {
  createSandboxNetwork,
  type EgressLogRecord,
  type SandboxNetwork,
  type WarmEgress,
} from './network.js';
import { isSameProcess, killIfSame } from './proc.js';
import type { SnapshotInfo } from './snapshots.js';
import * as snapshots from './snapshots.js';
import { diskUsage } from './tree.js';

/** Node timers hold at most 2^31-1 ms; longer TTLs are re-armed in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type StopReason = 'killed' | 'timeout' | 'died' | 'manager-closed';

/** What the manager gives a sandbox (so a Sandbox holds no reference to manager internals). */
export interface SandboxDeps {
  meta: SandboxMeta;
  paths: SandboxPaths;
  cgroup: SandboxCgroup | null;
  /** The agent connection; null while paused after adoption (a frozen agent cannot answer). */
  client: AgentClient | null;
  /** Opens a new authenticated agent connection (used on resume after adoption and on reconnect). */
  connect(): Promise<AgentClient>;
  /** How often the workspace quota is checked, ms; 0 disables the periodic check. */
  quotaCheckMs: number;
  /** The running egress proxy and its log (network mode `proxy`); null for mode `none`. */
  egress: WarmEgress | null;
  /** Called once when the sandbox reaches `stopped` and its resources are gone. */
  onStopped(sandbox: Sandbox, reason: StopReason): void;
}

export interface SandboxEvents {
  /** The sandbox stopped (killed, TTL, its agent died); its resources are released. */
  stopped: [reason: StopReason];
  /** The periodic check found the workspace over its quota (files.write is refused until it is back under). */
  'quota-exceeded': [usage: { usedBytes: number; quotaBytes: number }];
  /** The TTL expired and pausing (onTimeout: 'pause') failed; the sandbox was killed instead. */
  'timeout-error': [error: Error];
  /** One decision of the egress proxy (request, tunnel or refusal), as appended to the audit log. */
  egress: [event: EgressLogRecord];
}

export class Sandbox extends EventEmitter<SandboxEvents> {
  readonly id: string;
  readonly commands: Commands;
  readonly files: Files;
  /** Egress rules (live) and the egress audit log. */
  readonly network: SandboxNetwork;
  readonly #meta: SandboxMeta;
  readonly #paths: SandboxPaths;
  readonly #cgroup: SandboxCgroup | null;
  readonly #deps: SandboxDeps;
  #client: AgentClient | null;
  #ttlTimer: NodeJS.Timeout | null = null;
  #quotaTimer: NodeJS.Timeout | null = null;
  #usedBytes = 0;
  #killing: Promise<void> | null = null;
  #reconnecting: Promise<void> | null = null;
  /** Serialises pause/resume/snapshot/restore: each freezes or thaws the same cgroup. */
  #queue: Promise<unknown> = Promise.resolve();

  /** @internal use SandboxManager.create() / get(). */
  constructor(deps: SandboxDeps) {
    super();
    this.#deps = deps;
    this.#meta = deps.meta;
    this.#paths = deps.paths;
    this.#cgroup = deps.cgroup;
    this.#client = null;
    this.id = deps.meta.id;
    const policy = deps.meta.policy;
    const baseEnv = deps.meta.env;
    this.commands = new Commands({
      client: (op) => this.#live(op),
      environment: (extra) => ({ ...baseEnv, ...extra }),
      workdir: policy.filesystem.workdir,
      rlimits: planRlimits(policy.limits, { cgroup: deps.cgroup !== null }),
      defaultTimeoutMs: policy.limits.wallTimeMs,
      outputLimit: policy.limits.outputBytes,
    });
    this.files = new Files({
      client: (op) => this.#live(op),
      workdir: policy.filesystem.workdir,
      checkQuota: (bytes) => this.#checkQuota(bytes),
    });
    const egress = deps.egress;
    if (egress !== null) egress.listener = (record) => this.emit('egress', record);
    this.network = createSandboxNetwork({
      sandboxId: this.id,
      enabled: policy.network.mode === 'proxy',
      egress: () => egress,
      logPath: deps.paths.egressLog,
      check: (operation) => {
        if (this.#meta.state === 'stopped')
          throw new SandboxStateError('SANDBOX_STOPPED', this.id, operation);
      },
      onRulesChanged: (rules) => {
        this.#meta.egressRules = rulesToInput(rules);
        this.#persist();
      },
    });
    if (deps.client !== null) this.#attachClient(deps.client);
    this.#armTtl();
    this.#armQuota();
  }

  get state(): SandboxState {
    return this.#meta.state;
  }
  get policy(): SandboxPolicy {
    return this.#meta.policy;
  }
  get createdAt(): Date {
    return new Date(this.#meta.createdAt);
  }
  /** Epoch ms when the TTL expires, or null when the sandbox has none. */
  get deadline(): number | null {
    return this.#meta.deadline;
  }
  /** Pid (host view) of the sandbox's PID 1, the agent. */
  get initPid(): number {
    return this.#meta.init.pid;
  }
  /** Cgroup directories (empty when limits are rlimits only). */
  get cgroupDirs(): readonly string[] {
    return this.#cgroup?.dirs ?? [];
  }
  /**
   * CPU and memory the sandbox has used, from its cgroup (null without one: limits by rlimits only). Cheap: a
   * few small reads of kernel files, no process is stopped.
   */
  resourceUsage(): CgroupStats | null {
    return this.#cgroup?.stats() ?? null;
  }
  /** True when pause(), snapshots and restore are possible on this host. */
  get canPause(): boolean {
    return this.#cgroup?.canFreeze ?? false;
  }

  #live(operation: string): AgentClient {
    if (this.#meta.state === 'stopped') throw new SandboxStateError('SANDBOX_STOPPED', this.id, operation);
    if (this.#meta.state === 'paused') throw new SandboxStateError('SANDBOX_PAUSED', this.id, operation);
    if (this.#client === null) throw new SandboxStateError('SANDBOX_DISCONNECTED', this.id, operation);
    return this.#client;
  }

  #attachClient(client: AgentClient): void {
    this.#client = client;
    this.commands.bind(client);
    client.once('close', () => {
      if (this.#client === client) this.#client = null;
      void this.#onDisconnect();
    });
  }

  /** The connection dropped: the agent died (clean up) or the socket broke (reconnect before orphan-timeout). */
  async #onDisconnect(): Promise<void> {
    if (this.#meta.state === 'stopped' || this.#killing !== null) return;
    if (!isSameProcess(this.#meta.init)) {
      await this.#stop('died');
      return;
    }
    if (this.#meta.state === 'paused') return; // resume() reconnects
    this.#reconnecting ??= (async () => {
      for (let attempt = 0; attempt < 5 && this.#meta.state === 'running'; attempt++) {
        try {
          this.#attachClient(await this.#deps.connect());
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 50 * (attempt + 1)));
        }
      }
      if (this.#meta.state === 'running' && this.#client === null) await this.#stop('died');
    })().finally(() => {
      this.#reconnecting = null;
    });
    await this.#reconnecting;
  }

  #persist(): void {
    if (this.#meta.state !== 'stopped') writeMeta(this.#paths.meta, this.#meta);
  }

  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }

  // ------------------------------------------------------------------------------------------ TTL

  /**
   * Sets the TTL to `ms` from now (null: no TTL). On expiry the sandbox is killed or paused (create's
   * onTimeout). Calling it again extends or shortens the TTL.
   */
  setTimeout(ms: number | null): void {
    if (ms !== null && (!Number.isFinite(ms) || ms <= 0))
      throw new RangeError(`timeout must be a positive number of ms, got ${ms}`);
    if (this.#meta.state === 'stopped')
      throw new SandboxStateError('SANDBOX_STOPPED', this.id, 'set the timeout');
    this.#meta.timeoutMs = ms === null ? null : Math.ceil(ms);
    this.#meta.deadline = ms === null ? null : Date.now() + Math.ceil(ms);
    this.#persist();
    this.#armTtl();
  }

  #armTtl(): void {
    if (this.#ttlTimer !== null) clearTimeout(this.#ttlTimer);
    this.#ttlTimer = null;
    const { deadline, state, onTimeout } = this.#meta;
    if (deadline === null || state === 'stopped') return;
    // A paused sandbox waiting to be paused on expiry has nothing left to do; one that would be killed still is.
    if (state === 'paused' && onTimeout === 'pause') return;
    const delay = Math.max(0, deadline - Date.now());
    this.#ttlTimer = setTimeout(
      () => {
        if (Date.now() < deadline) this.#armTtl();
        else void this.#expire();
      },
      Math.min(delay, MAX_TIMER_MS),
    );
    this.#ttlTimer.unref();
  }

  async #expire(): Promise<void> {
    if (this.#meta.onTimeout === 'kill' || this.#meta.state !== 'running') {
      await this.#stop('timeout');
      return;
    }
    try {
      await this.pause();
    } catch (err) {
      this.emit('timeout-error', err as Error);
      await this.#stop('timeout');
    }
  }

  // --------------------------------------------------------------------------------- pause/resume

  /**
   * Freezes every process of the sandbox (cgroup freezer): memory, open files and sockets are kept, nothing
   * runs. Commands and files calls are refused until resume(). Throws PauseUnsupportedError without a freezer.
   */
  pause(): Promise<void> {
    return this.#serial(async () => {
      if (this.#meta.state === 'paused') return;
      if (this.#meta.state === 'stopped') throw new SandboxStateError('SANDBOX_STOPPED', this.id, 'pause');
      await this.#freeze('pause');
      this.#meta.state = 'paused';
      this.#persist();
      this.#armTtl();
    });
  }

  /** Thaws a paused sandbox; `timeoutMs` sets a new TTL (else an expired one is re-armed with its last length). */
  resume(options: { timeoutMs?: number } = {}): Promise<void> {
    return this.#serial(async () => {
      if (this.#meta.state === 'stopped') throw new SandboxStateError('SANDBOX_STOPPED', this.id, 'resume');
      if (this.#meta.state === 'running') return;
      this.#cgroup?.thaw();
      this.#meta.state = 'running';
      if (options.timeoutMs !== undefined) {
        this.#meta.timeoutMs = Math.ceil(options.timeoutMs);
        this.#meta.deadline = Date.now() + this.#meta.timeoutMs;
      } else if (
        this.#meta.deadline !== null &&
        this.#meta.deadline <= Date.now() &&
        this.#meta.timeoutMs !== null
      ) {
        this.#meta.deadline = Date.now() + this.#meta.timeoutMs;
      }
      this.#persist();
      if (this.#client === null) {
        try {
          this.#attachClient(await this.#deps.connect());
        } catch (err) {
          await this.#stop('died');
          throw err;
        }
      }
      this.#armTtl();
    });
  }

  async #freeze(operation: string): Promise<void> {
    const cgroup = this.#cgroup;
    if (cgroup === null)
      throw new PauseUnsupportedError(
        this.id,
        'this host gives ironcage no cgroup (limits are rlimits only)',
      );
    if (!cgroup.canFreeze) throw new PauseUnsupportedError(this.id, `cgroup ${cgroup.name} has no freezer`);
    try {
      await cgroup.freeze({ timeoutMs: 5_000 });
    } catch (err) {
      throw new PauseUnsupportedError(this.id, `${operation}: ${(err as Error).message}`);
    }
  }

  /** Runs `task` with the sandbox frozen (it stays frozen if it was paused already). */
  #frozen<T>(operation: string, task: () => T): Promise<T> {
    return this.#serial(async () => {
      if (this.#meta.state === 'stopped') throw new SandboxStateError('SANDBOX_STOPPED', this.id, operation);
      const wasPaused = this.#meta.state === 'paused';
      if (!wasPaused) await this.#freeze(operation);
      try {
        return task();
      } finally {
        if (!wasPaused) this.#cgroup?.thaw();
      }
    });
  }

  // ------------------------------------------------------------------------------------- snapshots

  /** Copies the workspace to a named checkpoint, with the sandbox frozen for the copy. */
  snapshot(name: string): Promise<SnapshotInfo> {
    return this.#frozen('take a snapshot', () =>
      snapshots.takeSnapshot(this.#paths.workspace, this.#paths.snapshots, name),
    );
  }

  /**
   * Rolls the workspace back to a checkpoint: everything written since is gone, everything removed is back.
   * Running processes keep their memory and their open files (a deleted file stays open until closed).
   */
  restore(name: string): Promise<void> {
    return this.#frozen('restore a snapshot', () =>
      snapshots.restoreSnapshot(this.#paths.workspace, this.#paths.snapshots, name),
    );
  }

  deleteSnapshot(name: string): Promise<void> {
    return this.#serial(async () => snapshots.deleteSnapshot(this.#paths.snapshots, name));
  }

  async listSnapshots(): Promise<SnapshotInfo[]> {
    return snapshots.listSnapshots(this.#paths.snapshots);
  }

  // ----------------------------------------------------------------------------------------- quota

  /** Measures the workspace now (frozen for the scan when a freezer exists, so nothing can race it). */
  async workspaceUsage(): Promise<{ usedBytes: number; quotaBytes: number; complete: boolean }> {
    const scan = () => diskUsage(this.#paths.workspace);
    const { bytes, complete } =
      this.canPause && this.#meta.state !== 'stopped'
        ? await this.#frozen('measure the workspace', scan)
        : scan();
    this.#usedBytes = bytes;
    return { usedBytes: bytes, quotaBytes: this.#meta.workspaceQuotaBytes, complete };
  }

  #checkQuota(bytes: number): void {
    if (this.#usedBytes + bytes > this.#meta.workspaceQuotaBytes) {
      throw new WorkspaceQuotaError(this.id, this.#usedBytes + bytes, this.#meta.workspaceQuotaBytes);
    }
    this.#usedBytes += bytes; // an estimate until the next scan
  }

  #armQuota(): void {
    if (this.#deps.quotaCheckMs <= 0) return;
    this.#quotaTimer = setInterval(() => {
      if (this.#meta.state !== 'running') return;
      this.workspaceUsage()
        .then((u) => {
          if (u.usedBytes > u.quotaBytes)
            this.emit('quota-exceeded', { usedBytes: u.usedBytes, quotaBytes: u.quotaBytes });
        })
        .catch(() => {});
    }, this.#deps.quotaCheckMs);
    this.#quotaTimer.unref();
  }

  // ------------------------------------------------------------------------------------------ kill

  /** Destroys the sandbox: every process, its cgroup, socket, workspace, snapshots and directory. Idempotent. */
  kill(): Promise<void> {
    return this.#stop('killed');
  }

  /**
   * @internal the manager's close(): stop timers, the connection and the egress proxy (the next manager starts
   * it again), but leave the sandbox running.
   */
  async detach(): Promise<void> {
    this.#clearTimers();
    const client = this.#client;
    this.#client = null;
    this.#killing = Promise.resolve(); // no reconnect, no cleanup from the close event
    client?.close();
    await this.#deps.egress?.close().catch(() => {});
  }

  /** @internal */
  stop(reason: StopReason): Promise<void> {
    return this.#stop(reason);
  }

  #clearTimers(): void {
    if (this.#ttlTimer !== null) clearTimeout(this.#ttlTimer);
    if (this.#quotaTimer !== null) clearInterval(this.#quotaTimer);
    this.#ttlTimer = null;
    this.#quotaTimer = null;
  }

  #stop(reason: StopReason): Promise<void> {
    this.#killing ??= (async () => {
      this.#clearTimers();
      const wasPaused = this.#meta.state === 'paused';
      this.#meta.state = 'stopped';
      const client = this.#client;
      this.#client = null;
      client?.close();
      // The proxy first: its socket goes, and no event is logged into a directory being removed.
      await this.#deps.egress?.close().catch(() => {});
      await destroySandboxResources(this.#meta, this.#paths, this.#cgroup, wasPaused);
      this.#deps.onStopped(this, reason);
      this.emit('stopped', reason);
    })();
    return this.#killing;
  }
}

/**
 * Kills a sandbox's processes and removes everything it owns. Used by kill() and by crash recovery (reap).
 * SIGKILL of the agent, PID 1 of the sandbox, makes the kernel kill every process of its PID namespace (and
 * with it the mount namespace: no mount is left on the host); the cgroup kill is the second net, and the one
 * that also reaches processes a frozen cgroup holds.
 */
export async function destroySandboxResources(
  meta: SandboxMeta,
  paths: SandboxPaths,
  cgroup: SandboxCgroup | null,
  frozen: boolean,
): Promise<void> {
  killIfSame(meta.init);
  killIfSame(meta.bwrap);
  // A frozen task only dies once thawed.
  if (frozen) cgroup?.thaw();
  if (cgroup !== null) await cgroup.destroy().catch(() => {});
  for (
    let pause = 1, waited = 0;
    waited < 5_000 && (isSameProcess(meta.init) || isSameProcess(meta.bwrap));
    pause = Math.min(pause * 2, 50)
  ) {
    await new Promise((r) => setTimeout(r, pause));
    waited += pause;
  }
  rmSync(paths.dir, { recursive: true, force: true, maxRetries: 3 });
}
