/**
 * One sandbox's cgroup: created under `<base>/ironcage/<ownerPid>-<id>` in every hierarchy it needs, with
 * limits written once at creation (see ./limits.ts for what is enforced how). The owner pid in the name is
 * what lets sweepStaleCgroups() find leftovers of a process that died without destroy().
 */
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { posix } from 'node:path';
import type { Enforcement } from '../../sandbox/engine.js';
import type { CgroupHost } from './detect.js';
import { SANDBOX_PARENT } from './detect.js';
import { CgroupError, errnoOf } from './errors.js';
import { readControl, sleep, writeControl } from './kernfs.js';
import type { CgroupLimits, ControlWrite, V1Hierarchy } from './limits.js';
import { planV1Writes, planV2Writes, validateLimits } from './limits.js';
import { parseControllerList, parseFlatKeyed, parsePidList, parseSingleNumber } from './parse.js';

export interface SandboxCgroupOptions extends CgroupLimits {
  /** Unique among this process's live sandboxes: [A-Za-z0-9][A-Za-z0-9_.-]{0,99}. */
  id: string;
  /**
   * The process whose death makes this cgroup stale for sweepStaleCgroups() (default: this process). A warm
   * sandbox that outlives its manager names its own long-lived bubblewrap process here.
   */
  ownerPid?: number;
}

export interface CgroupStats {
  /** Memory the sandbox uses now, bytes (page cache included, as the limit counts it). */
  memoryBytes: number | null;
  /** Highest memory use of the sandbox, bytes (v2 memory.peak needs kernel 5.19+, else null). */
  peakMemoryBytes: number | null;
  /** User + system CPU time of every process that ran in the sandbox, ms (v1 needs cpuacct). */
  cpuMs: number | null;
  /** Processes the kernel OOM killer killed inside the sandbox. */
  oomKills: number | null;
  /** Times a fork/clone failed because pids.max was reached. */
  pidsLimitHits: number | null;
}

/** What this cgroup actually enforces (reported, never silently weakened). */
export interface CgroupEnforcement {
  mode: Extract<Enforcement, 'cgroup-v2' | 'cgroup-v1'>;
  /** Swap counts against the limit (v2 memory.swap.max=0, v1 memsw); false means RAM only. */
  swapLimited: boolean;
  /** The requested cpuWeight was applied (needs the cpu controller). */
  cpuWeighted: boolean;
  /** cpuMs is measured (always on v2; v1 needs the cpuacct hierarchy). */
  cpuAccounted: boolean;
  /**
   * How killAll() stops the tree: `cgroup.kill` (v2, kernel 5.14+, atomic), `freeze` (freeze, SIGKILL every
   * member, thaw: no member can fork or exit in between, so no pid can be reused under us), `kill-loop`
   * (SIGKILL members until empty; pids.max bounds a fork race).
   */
  killMethod: 'cgroup.kill' | 'freeze' | 'kill-loop';
}

type Layout = { mode: 'v2'; dir: string } | { mode: 'v1'; dirs: Partial<Record<V1Hierarchy, string>> };

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
const NAME_PATTERN = /^(\d+)-([A-Za-z0-9][A-Za-z0-9_.-]{0,99})$/;
const DEFAULT_TIMEOUT_MS = 5_000;

/** Parses a sandbox cgroup directory name `<ownerPid>-<id>`; null for anything else. */
export function parseSandboxCgroupName(name: string): { ownerPid: number; id: string } | null {
  const match = NAME_PATTERN.exec(name);
  if (!match?.[1] || !match[2]) return null;
  const ownerPid = Number(match[1]);
  return Number.isSafeInteger(ownerPid) && ownerPid > 0 ? { ownerPid, id: match[2] } : null;
}

/** The `ironcage/` directories of a host, one per hierarchy (deduplicated: v1 may co-mount cpu,cpuacct). */
export function sandboxParents(host: CgroupHost): string[] {
  if (host.mode === 'none') return [];
  const bases = host.mode === 'v2' ? [host.base] : Object.values(host.controllers);
  return [...new Set(bases.map((b) => posix.join(b, SANDBOX_PARENT)))];
}

function uniqueDirs(layout: Layout): string[] {
  return layout.mode === 'v2' ? [layout.dir] : [...new Set(Object.values(layout.dirs))];
}

function applyWrites(dir: string, writes: ControlWrite[]): Set<string> {
  const applied = new Set<string>();
  for (const w of writes) {
    try {
      writeControl(posix.join(dir, w.file), w.value);
      applied.add(w.file);
    } catch (err) {
      if (w.optional && errnoOf(err) === 'ENOENT') continue;
      throw new CgroupError(
        'LIMIT_FAILED',
        `could not write ${w.value} to ${dir}/${w.file}: ${errnoOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }
  return applied;
}

/** mkdir of the leaf; the shared parent is created on first use (one syscall in the common case). */
function makeLeaf(parent: string, leaf: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(leaf);
      return;
    } catch (err) {
      const errno = errnoOf(err);
      if (errno === 'ENOENT' && attempt < 3) {
        // Someone (an admin, a test) may remove the empty parent between our two mkdirs: retry a few times.
        mkdirSync(parent, { recursive: true });
        continue;
      }
      const why = errno === 'EEXIST' ? 'it already exists (is the id reused?)' : String(errno);
      throw new CgroupError('CREATE_FAILED', `could not create cgroup ${leaf}: ${why}`, { cause: err });
    }
  }
}

/** v2 only: controllers a child can use must be enabled in the parent's cgroup.subtree_control. */
function enableControllers(parent: string, wanted: string[]): void {
  const path = posix.join(parent, 'cgroup.subtree_control');
  const enabled = parseControllerList(readControl(path) ?? '');
  const missing = wanted.filter((c) => !enabled.includes(c));
  if (missing.length === 0) return;
  try {
    writeControl(path, missing.map((c) => `+${c}`).join(' '));
  } catch (err) {
    throw new CgroupError(
      'CREATE_FAILED',
      `could not enable ${missing.join(', ')} in ${path}: ${errnoOf(err)}`,
      {
        cause: err,
      },
    );
  }
}

function removeDirs(dirs: string[]): void {
  for (const dir of dirs) {
    try {
      rmdirSync(dir);
    } catch {
      // best effort during rollback; sweepStaleCgroups() catches what is left
    }
  }
}

/**
 * Creates the sandbox cgroup and writes its limits. Synchronous: a handful of mkdir/write calls on kernfs.
 * Put the first process in with place() BEFORE it forks: children inherit the cgroup, but processes forked
 * earlier stay where they were.
 */
export function createSandboxCgroup(host: CgroupHost, options: SandboxCgroupOptions): SandboxCgroup {
  if (host.mode === 'none') {
    throw new CgroupError('UNAVAILABLE', `no usable cgroup: ${host.reason}. Fix: ${host.fix}`);
  }
  if (!ID_PATTERN.test(options.id)) {
    throw new CgroupError(
      'INVALID_ARGUMENT',
      `cgroup id must match ${ID_PATTERN}, got ${JSON.stringify(options.id)}`,
    );
  }
  validateLimits(options);
  const ownerPid = options.ownerPid ?? process.pid;
  if (!Number.isSafeInteger(ownerPid) || ownerPid < 1) {
    throw new CgroupError('INVALID_ARGUMENT', `ownerPid must be a positive integer, got ${ownerPid}`);
  }
  const name = `${ownerPid}-${options.id}`;

  if (host.mode === 'v2') {
    const parent = posix.join(host.base, SANDBOX_PARENT);
    const dir = posix.join(parent, name);
    const cpuAvailable = host.controllers.includes('cpu');
    const wantCpu = options.cpuWeight !== undefined && cpuAvailable;
    makeLeaf(parent, dir);
    try {
      enableControllers(parent, wantCpu ? ['memory', 'pids', 'cpu'] : ['memory', 'pids']);
      const applied = applyWrites(dir, planV2Writes(options, cpuAvailable));
      return new SandboxCgroup({ mode: 'v2', dir }, name, {
        mode: 'cgroup-v2',
        swapLimited: applied.has('memory.swap.max'),
        cpuWeighted: applied.has('cpu.weight'),
        cpuAccounted: true,
        killMethod: existsSync(posix.join(dir, 'cgroup.kill')) ? 'cgroup.kill' : 'freeze',
      });
    } catch (err) {
      removeDirs([dir]);
      throw err;
    }
  }

  // v1: one directory per hierarchy. cpu only when a weight is asked for (one mkdir fewer otherwise).
  const wanted: V1Hierarchy[] = ['memory', 'pids', 'cpuacct', 'freezer'];
  if (options.cpuWeight !== undefined) wanted.push('cpu');
  const dirs: Partial<Record<V1Hierarchy, string>> = {};
  const created: string[] = [];
  const applied = new Set<string>();
  try {
    for (const hierarchy of wanted) {
      const base = host.controllers[hierarchy];
      if (base === undefined) continue;
      const parent = posix.join(base, SANDBOX_PARENT);
      const dir = posix.join(parent, name);
      dirs[hierarchy] = dir;
      // Co-mounted hierarchies (cpu,cpuacct) share one directory.
      if (!created.includes(dir)) {
        makeLeaf(parent, dir);
        created.push(dir);
      }
      for (const file of applyWrites(dir, planV1Writes(hierarchy, options))) applied.add(file);
    }
  } catch (err) {
    removeDirs(created);
    throw err;
  }
  return new SandboxCgroup({ mode: 'v1', dirs }, name, {
    mode: 'cgroup-v1',
    swapLimited: applied.has('memory.memsw.limit_in_bytes'),
    cpuWeighted: applied.has('cpu.shares'),
    cpuAccounted: dirs.cpuacct !== undefined,
    killMethod: dirs.freezer !== undefined ? 'freeze' : 'kill-loop',
  });
}

/**
 * Attaches to an existing sandbox cgroup by its directory name (`<ownerPid>-<id>`), e.g. to clean up after
 * a crash. Hierarchies where the directory does not exist are left out.
 */
export function openSandboxCgroup(host: CgroupHost, name: string): SandboxCgroup {
  if (host.mode === 'none') throw new CgroupError('UNAVAILABLE', `no usable cgroup: ${host.reason}`);
  if (parseSandboxCgroupName(name) === null) {
    throw new CgroupError('INVALID_ARGUMENT', `not a sandbox cgroup name: ${JSON.stringify(name)}`);
  }
  if (host.mode === 'v2') {
    const dir = posix.join(host.base, SANDBOX_PARENT, name);
    return new SandboxCgroup({ mode: 'v2', dir }, name, {
      mode: 'cgroup-v2',
      swapLimited: readControl(posix.join(dir, 'memory.swap.max'))?.trim() === '0',
      cpuWeighted: existsSync(posix.join(dir, 'cpu.weight')),
      cpuAccounted: true,
      killMethod: existsSync(posix.join(dir, 'cgroup.kill')) ? 'cgroup.kill' : 'freeze',
    });
  }
  const dirs: Partial<Record<V1Hierarchy, string>> = {};
  for (const [hierarchy, base] of Object.entries(host.controllers) as [V1Hierarchy, string][]) {
    const dir = posix.join(base, SANDBOX_PARENT, name);
    if (existsSync(dir)) dirs[hierarchy] = dir;
  }
  return new SandboxCgroup({ mode: 'v1', dirs }, name, {
    mode: 'cgroup-v1',
    swapLimited:
      dirs.memory !== undefined && existsSync(posix.join(dirs.memory, 'memory.memsw.limit_in_bytes')),
    cpuWeighted: dirs.cpu !== undefined,
    cpuAccounted: dirs.cpuacct !== undefined,
    killMethod: dirs.freezer !== undefined ? 'freeze' : 'kill-loop',
  });
}

function readNumber(path: string): number | null {
  const text = readControl(path);
  return text === null ? null : parseSingleNumber(text);
}

function readKey(path: string, key: string): number | null {
  const text = readControl(path);
  return text === null ? null : (parseFlatKeyed(text).get(key) ?? null);
}

export class SandboxCgroup {
  /** Directory name in every hierarchy: `<ownerPid>-<id>`. */
  readonly name: string;
  readonly enforcement: CgroupEnforcement;
  readonly #layout: Layout;

  /** @internal use createSandboxCgroup() or openSandboxCgroup(). */
  constructor(layout: Layout, name: string, enforcement: CgroupEnforcement) {
    this.#layout = layout;
    this.name = name;
    this.enforcement = enforcement;
  }

  /** Every directory of this sandbox cgroup (one for v2, one per hierarchy for v1). */
  get dirs(): readonly string[] {
    return uniqueDirs(this.#layout);
  }

  /**
   * Moves a process (all its threads) into the sandbox in every hierarchy. Only that process moves: place it
   * while it is blocked and before it forks. On PLACE_FAILED it may already be in some hierarchies: kill it.
   */
  place(pid: number): void {
    if (!Number.isSafeInteger(pid) || pid < 1) {
      throw new CgroupError('INVALID_ARGUMENT', `pid must be a positive integer, got ${pid}`);
    }
    for (const dir of this.dirs) {
      try {
        writeControl(posix.join(dir, 'cgroup.procs'), String(pid));
      } catch (err) {
        throw new CgroupError('PLACE_FAILED', `could not move pid ${pid} into ${dir}: ${errnoOf(err)}`, {
          cause: err,
        });
      }
    }
  }

  /** Pids currently inside (union over hierarchies; a half-placed process still counts). */
  pids(): number[] {
    const all = new Set<number>();
    for (const dir of this.dirs) {
      for (const pid of parsePidList(readControl(posix.join(dir, 'cgroup.procs')) ?? '')) all.add(pid);
    }
    return [...all];
  }

  stats(): CgroupStats {
    const layout = this.#layout;
    if (layout.mode === 'v2') {
      const at = (file: string) => posix.join(layout.dir, file);
      const cpuUsec = readKey(at('cpu.stat'), 'usage_usec');
      return {
        memoryBytes: readNumber(at('memory.current')),
        peakMemoryBytes: readNumber(at('memory.peak')),
        cpuMs: cpuUsec === null ? null : cpuUsec / 1_000,
        oomKills: readKey(at('memory.events'), 'oom_kill'),
        pidsLimitHits: readKey(at('pids.events'), 'max'),
      };
    }
    const { memory, cpuacct, pids } = layout.dirs;
    const cpuNs = cpuacct === undefined ? null : readNumber(posix.join(cpuacct, 'cpuacct.usage'));
    return {
      memoryBytes: memory === undefined ? null : readNumber(posix.join(memory, 'memory.usage_in_bytes')),
      peakMemoryBytes:
        memory === undefined ? null : readNumber(posix.join(memory, 'memory.max_usage_in_bytes')),
      cpuMs: cpuNs === null ? null : cpuNs / 1_000_000,
      // The oom_kill line exists since Linux 4.13.
      oomKills: memory === undefined ? null : readKey(posix.join(memory, 'memory.oom_control'), 'oom_kill'),
      pidsLimitHits: pids === undefined ? null : readKey(posix.join(pids, 'pids.events'), 'max'),
    };
  }

  /**
   * SIGKILLs every process in the sandbox and resolves once none is left (members that already exited but
   * are not yet reaped do not count: the kernel drops them from cgroup.procs at exit).
   * Throws CgroupError KILL_TIMEOUT if members remain after `timeoutMs`.
   */
  async killAll(options: { timeoutMs?: number } = {}): Promise<void> {
    const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const layout = this.#layout;
    if (layout.mode === 'v2' && this.#v2Kill(layout.dir)) {
      await this.#waitEmpty(deadline);
      return;
    }
    for (let pause = 1; ; pause = Math.min(pause * 2, 20)) {
      if (this.pids().length === 0) return;
      if (Date.now() > deadline) break;
      const frozen = await this.#freeze(deadline);
      try {
        // Read the member list only once frozen: frozen members can neither fork nor exit, so every pid
        // we signal is still the sandbox's process.
        for (const pid of this.pids()) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // ESRCH: already gone. EPERM: not ours to kill; reported through the timeout below.
          }
        }
      } finally {
        if (frozen) this.#thaw();
      }
      await sleep(pause);
    }
    throw new CgroupError(
      'KILL_TIMEOUT',
      `processes ${this.pids().join(', ')} are still in cgroup ${this.name} after the kill deadline`,
    );
  }

  /**
   * Kills what is left, waits until empty and removes every directory. Idempotent: already-removed
   * directories are fine. The shared `ironcage/` parent stays: recreating it costs as much as the sandbox
   * directory itself (memcg mkdir is the slowest step), and an empty one is harmless.
   */
  async destroy(options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const dirs = this.dirs.filter((d) => existsSync(d));
    if (dirs.length === 0) return;
    await this.killAll({ timeoutMs });
    for (const dir of dirs) {
      for (let pause = 1; ; pause = Math.min(pause * 2, 20)) {
        try {
          rmdirSync(dir);
          break;
        } catch (err) {
          const errno = errnoOf(err);
          if (errno === 'ENOENT') break;
          // EBUSY: a member is still exiting; anything else will not get better by waiting.
          if (errno !== 'EBUSY' || Date.now() > deadline) {
            throw new CgroupError('DESTROY_FAILED', `could not remove ${dir}: ${errno}`, { cause: err });
          }
          await sleep(pause);
        }
      }
    }
  }

  /** True when this cgroup has a freezer (v2 cgroup.freeze, v1 freezer hierarchy): pause is possible. */
  get canFreeze(): boolean {
    const layout = this.#layout;
    return layout.mode === 'v2'
      ? existsSync(posix.join(layout.dir, 'cgroup.freeze'))
      : layout.dirs.freezer !== undefined;
  }

  /**
   * Freezes every member (they keep their memory; no fork, exit or syscall progress until thaw()). Resolves
   * once the kernel reports the cgroup frozen. Throws CgroupError UNAVAILABLE when there is no freezer, and
   * FREEZE_TIMEOUT (after thawing again) when a member stays unfrozen, e.g. in uninterruptible sleep.
   */
  async freeze(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.canFreeze) {
      throw new CgroupError(
        'UNAVAILABLE',
        `cgroup ${this.name} has no freezer (needs cgroup v2 or the v1 freezer)`,
      );
    }
    const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    // Each write makes the kernel try again: a task caught in the middle of fork() can be missed by one pass
    // (v1 then stays FREEZING until the state is written again).
    for (;;) {
      if (!(await this.#freeze(deadline))) {
        throw new CgroupError('UNAVAILABLE', `could not write the freezer state of cgroup ${this.name}`);
      }
      if (this.#isFrozen()) return;
      if (Date.now() > deadline) {
        this.#thaw();
        throw new CgroupError('FREEZE_TIMEOUT', `cgroup ${this.name} did not reach the frozen state in time`);
      }
    }
  }

  /** Lets the members of a frozen cgroup run again. */
  thaw(): void {
    this.#thaw();
  }

  /** cgroup.kill: the kernel kills every member, including ones forked while it runs. */
  #v2Kill(dir: string): boolean {
    try {
      writeControl(posix.join(dir, 'cgroup.kill'), '1');
      return true;
    } catch {
      return false; // before Linux 5.14, or the cgroup is gone (then pids() is empty anyway)
    }
  }

  async #waitEmpty(deadline: number): Promise<void> {
    for (let pause = 1; this.pids().length > 0; pause = Math.min(pause * 2, 20)) {
      if (Date.now() > deadline) {
        throw new CgroupError('KILL_TIMEOUT', `processes ${this.pids().join(', ')} outlived cgroup.kill`);
      }
      await sleep(pause);
    }
  }

  /** Freezes the sandbox; true if a freezer exists (the caller must thaw). Waits briefly for FROZEN. */
  async #freeze(deadline: number): Promise<boolean> {
    const layout = this.#layout;
    const target =
      layout.mode === 'v2'
        ? { file: posix.join(layout.dir, 'cgroup.freeze'), value: '1' }
        : layout.dirs.freezer === undefined
          ? null
          : { file: posix.join(layout.dirs.freezer, 'freezer.state'), value: 'FROZEN' };
    if (target === null) return false;
    try {
      writeControl(target.file, target.value);
    } catch {
      return false;
    }
    // Freezing is asynchronous; a task in uninterruptible sleep can delay it, so the wait is bounded and
    // killing proceeds regardless (the loop in killAll repeats until the cgroup is empty).
    const waitUntil = Math.min(deadline, Date.now() + 200);
    for (let pause = 1; Date.now() < waitUntil; pause = Math.min(pause * 2, 10)) {
      if (this.#isFrozen()) break;
      await sleep(pause);
    }
    return true;
  }

  #isFrozen(): boolean {
    const layout = this.#layout;
    if (layout.mode === 'v2') return readKey(posix.join(layout.dir, 'cgroup.events'), 'frozen') === 1;
    if (layout.dirs.freezer === undefined) return false;
    return readControl(posix.join(layout.dirs.freezer, 'freezer.state'))?.trim() === 'FROZEN';
  }

  #thaw(): void {
    const layout = this.#layout;
    try {
      if (layout.mode === 'v2') writeControl(posix.join(layout.dir, 'cgroup.freeze'), '0');
      else if (layout.dirs.freezer !== undefined) {
        writeControl(posix.join(layout.dirs.freezer, 'freezer.state'), 'THAWED');
      }
    } catch {
      // the cgroup vanished under us: nothing left to thaw
    }
  }
}
