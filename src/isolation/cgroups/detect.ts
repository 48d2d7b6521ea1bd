/**
 * Which cgroup mode this process can use, in three steps so the decision is testable without a kernel:
 *   locateCgroups  (pure)  /proc/self/cgroup + mountinfo text → candidate directories
 *   probeCgroups   (fs)    candidate directories → facts (writable? which controllers?)
 *   decideCgroupHost (pure) facts → CgroupHost
 * detectCgroups() runs all three. The result is plain data: callers cache it, nothing is kept here.
 *
 * Where sandboxes go: under the cgroup this process already lives in (v1) or its nearest suitable ancestor
 * (v2), never at the hierarchy root. A sandbox then stays inside whatever limits the caller itself runs under
 * (a systemd service's MemoryMax, a container's cgroup), and a user with a delegated subtree needs no more
 * rights than that subtree gives.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { parseControllerList, parseMountInfo, parseProcSelfCgroup } from './parse.js';

export const V1_CONTROLLERS = ['memory', 'pids', 'cpu', 'cpuacct', 'freezer'] as const;
export type V1Controller = (typeof V1_CONTROLLERS)[number];

/** Base directories (each gets an `ironcage/` child) per v1 hierarchy; memory and pids are required. */
export interface V1Hierarchies {
  memory: string;
  pids: string;
  cpu?: string;
  cpuacct?: string;
  freezer?: string;
}

export type CgroupHost =
  | {
      mode: 'v2';
      /** Directory that gets the `ironcage/` child; its cgroup.subtree_control has memory and pids. */
      base: string;
      /** Controllers enabled in base's subtree_control (always memory and pids; cpu when delegated). */
      controllers: readonly string[];
    }
  | { mode: 'v1'; controllers: V1Hierarchies }
  | {
      mode: 'none';
      /** Why neither mode is usable, one clause per mode. */
      reason: string;
      /** What the user can do about it. */
      fix: string;
    };

export const SANDBOX_PARENT = 'ironcage';

// ---------------------------------------------------------------------------------------------- locate

export interface CgroupLocations {
  v2: {
    mountPoint: string;
    /** Our own cgroup dir first, then each ancestor up to the mount point; empty if ours is not visible. */
    chain: string[];
  } | null;
  v1: Partial<Record<V1Controller, { mountPoint: string; dir: string }>>;
}

/**
 * Maps a cgroup path from /proc/self/cgroup to a directory below a mount whose root is `mountRoot`.
 * Null when the cgroup is not visible through that mount (e.g. `/..` paths outside our cgroup namespace).
 */
function dirUnderMount(mountPoint: string, mountRoot: string, cgroupPath: string): string | null {
  if (!cgroupPath.startsWith('/') || cgroupPath.split('/').includes('..')) return null;
  let relative: string;
  if (mountRoot === '/') relative = cgroupPath;
  else if (cgroupPath === mountRoot) relative = '/';
  else if (cgroupPath.startsWith(`${mountRoot}/`)) relative = cgroupPath.slice(mountRoot.length);
  else return null;
  const dir = posix.join(mountPoint, relative);
  return dir.length > 1 && dir.endsWith('/') ? dir.slice(0, -1) : dir;
}

export function locateCgroups(procSelfCgroup: string, mountInfo: string): CgroupLocations {
  const ownCgroups = parseProcSelfCgroup(procSelfCgroup);
  const mounts = parseMountInfo(mountInfo);
  const locations: CgroupLocations = { v2: null, v1: {} };

  const v2Mount = mounts.find((m) => m.fsType === 'cgroup2');
  const v2Own = ownCgroups.find((e) => e.hierarchyId === 0 && e.controllers.length === 0);
  if (v2Mount) {
    const chain: string[] = [];
    const ownDir = v2Own ? dirUnderMount(v2Mount.mountPoint, v2Mount.root, v2Own.path) : null;
    // Walk up to the mount point; ownDir is below it by construction, the '/' check is only a backstop.
    for (
      let dir = ownDir;
      dir !== null;
      dir = dir === v2Mount.mountPoint || dir === '/' ? null : posix.dirname(dir)
    ) {
      chain.push(dir);
    }
    locations.v2 = { mountPoint: v2Mount.mountPoint, chain };
  }

  for (const controller of V1_CONTROLLERS) {
    const mount = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.includes(controller));
    const own = ownCgroups.find((e) => e.hierarchyId !== 0 && e.controllers.includes(controller));
    if (!mount || !own) continue;
    const dir = dirUnderMount(mount.mountPoint, mount.root, own.path);
    if (dir !== null) locations.v1[controller] = { mountPoint: mount.mountPoint, dir };
  }
  return locations;
}

// ----------------------------------------------------------------------------------------------- probe

export interface CgroupDirFacts {
  dir: string;
  /** We may create children here and move processes in (dir and cgroup.procs writable). */
  writable: boolean;
  /** cgroup.controllers: what this cgroup may use. */
  controllers: string[];
  /** cgroup.subtree_control: what its children get. */
  subtreeControl: string[];
}

export interface CgroupFacts {
  isRoot: boolean;
  v2: { mountPoint: string; chain: CgroupDirFacts[] } | null;
  v1: Partial<Record<V1Controller, { dir: string; writable: boolean }>>;
}

function canWrite(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Also requires an existing `ironcage/` child (maybe made by another user) to be ours to write. */
function isWritableCgroupDir(dir: string): boolean {
  if (!canWrite(dir) || !canWrite(posix.join(dir, 'cgroup.procs'))) return false;
  const parent = posix.join(dir, SANDBOX_PARENT);
  try {
    accessSync(parent, constants.F_OK);
  } catch {
    return true;
  }
  return canWrite(parent);
}

function readControllers(path: string): string[] {
  try {
    return parseControllerList(readFileSync(path, 'utf8'));
  } catch {
    return [];
  }
}

export function probeCgroups(locations: CgroupLocations, isRoot: boolean): CgroupFacts {
  const facts: CgroupFacts = { isRoot, v2: null, v1: {} };
  if (locations.v2) {
    facts.v2 = {
      mountPoint: locations.v2.mountPoint,
      chain: locations.v2.chain.map((dir) => ({
        dir,
        writable: isWritableCgroupDir(dir),
        controllers: readControllers(posix.join(dir, 'cgroup.controllers')),
        subtreeControl: readControllers(posix.join(dir, 'cgroup.subtree_control')),
      })),
    };
  }
  for (const controller of V1_CONTROLLERS) {
    const location = locations.v1[controller];
    if (location) facts.v1[controller] = { dir: location.dir, writable: isWritableCgroupDir(location.dir) };
  }
  return facts;
}

// ---------------------------------------------------------------------------------------------- decide

const REQUIRED = ['memory', 'pids'] as const;

function v2Problem(facts: CgroupFacts): { base?: CgroupDirFacts; problem: string; fix: string } {
  const v2 = facts.v2;
  if (!v2) return { problem: 'cgroup v2: no cgroup2 filesystem is mounted', fix: '' };
  if (v2.chain.length === 0) {
    return {
      problem: `cgroup v2: this process's cgroup is not visible under ${v2.mountPoint}`,
      fix: '',
    };
  }
  // Nearest first: the sandbox stays inside every limit that applies to this process.
  const base = v2.chain.find((d) => d.writable && REQUIRED.every((c) => d.subtreeControl.includes(c)));
  if (base) return { base, problem: '', fix: '' };

  const ownDir = v2.chain[0]?.dir ?? v2.mountPoint;
  const anywhere = v2.chain.some((d) => REQUIRED.every((c) => d.controllers.includes(c)));
  if (!anywhere) {
    return {
      problem: `cgroup v2: the memory and pids controllers are not available to ${ownDir} (on a hybrid host they belong to the v1 hierarchies)`,
      fix: '',
    };
  }
  // A writable cgroup that has the controllers but does not hand them down: usually a container root that
  // still holds processes (cgroup v2 refuses to enable controllers for children of a cgroup with members).
  const enableable = v2.chain.find((d) => d.writable && REQUIRED.every((c) => d.controllers.includes(c)));
  if (enableable) {
    return {
      problem: `cgroup v2: ${enableable.dir} is writable but does not enable memory and pids for its children`,
      fix:
        `move the processes of ${enableable.dir} into a leaf cgroup and enable the controllers, e.g. ` +
        `\`mkdir ${enableable.dir}/init && echo $$ > ${enableable.dir}/init/cgroup.procs && ` +
        `echo '+memory +pids' > ${enableable.dir}/cgroup.subtree_control\``,
    };
  }
  return {
    problem: `cgroup v2: no directory from ${ownDir} up to ${v2.mountPoint} is writable by this user with memory and pids enabled`,
    fix: facts.isRoot
      ? `mount ${v2.mountPoint} read-write (a container needs a writable cgroup mount)`
      : 'delegate a cgroup subtree to your user: `sudo systemctl edit user@.service`, add ' +
        '`[Service]` `Delegate=memory pids cpu`, then log out and in again (or run ironcage as root)',
  };
}

function v1Problem(facts: CgroupFacts): string {
  const missing = REQUIRED.filter((c) => !facts.v1[c]);
  if (missing.length === REQUIRED.length) return 'cgroup v1: no memory or pids hierarchy is mounted';
  if (missing.length > 0) return `cgroup v1: no ${missing.join(' or ')} hierarchy is mounted`;
  const readOnly = REQUIRED.flatMap((c) => {
    const h = facts.v1[c];
    return h && !h.writable ? [h.dir] : [];
  });
  return readOnly.length > 0 ? `cgroup v1: ${readOnly.join(' and ')} not writable by this user` : '';
}

export function decideCgroupHost(facts: CgroupFacts): CgroupHost {
  const v2 = v2Problem(facts);
  if (v2.base) return { mode: 'v2', base: v2.base.dir, controllers: [...v2.base.subtreeControl] };

  const v1Reason = v1Problem(facts);
  const memory = facts.v1.memory;
  const pids = facts.v1.pids;
  if (v1Reason === '' && memory && pids) {
    const controllers: V1Hierarchies = { memory: memory.dir, pids: pids.dir };
    for (const optional of ['cpu', 'cpuacct', 'freezer'] as const) {
      const h = facts.v1[optional];
      if (h?.writable) controllers[optional] = h.dir;
    }
    return { mode: 'v1', controllers };
  }

  const fallback =
    'until then ironcage enforces limits with rlimits only (address space per process, process count per user)';
  const generalFix = facts.isRoot
    ? 'mount a cgroup2 filesystem with the memory and pids controllers, or writable v1 memory and pids hierarchies'
    : 'run ironcage as root, or on a cgroup v2 host delegate memory and pids to your user ' +
      '(`Delegate=memory pids cpu` for user@.service)';
  return {
    mode: 'none',
    reason: `${v2.problem}; ${v1Reason}`,
    fix: `${v2.fix !== '' ? v2.fix : generalFix}; ${fallback}`,
  };
}

// ------------------------------------------------------------------------------------------------ detect

export interface DetectOptions {
  /** Text of /proc/self/cgroup (default: read it). */
  procSelfCgroup?: string;
  /** Text of /proc/self/mountinfo (default: read it). */
  mountInfo?: string;
  /** Default: whether this process runs as uid 0. Only changes the advice in `fix`. */
  isRoot?: boolean;
}

/** Reads the kernel's view of this process and decides; costs a few dozen small reads, cache the result. */
export function detectCgroups(options: DetectOptions = {}): CgroupHost {
  const procSelfCgroup = options.procSelfCgroup ?? readFileSync('/proc/self/cgroup', 'utf8');
  const mountInfo = options.mountInfo ?? readFileSync('/proc/self/mountinfo', 'utf8');
  const isRoot = options.isRoot ?? process.getuid?.() === 0;
  return decideCgroupHost(probeCgroups(locateCgroups(procSelfCgroup, mountInfo), isRoot));
}
