/**
 * What is written where to enforce a sandbox's limits: a pure plan, so the exact files and values for both
 * cgroup versions are unit-tested even though only one version runs on any given host.
 *
 * Enforced:
 *   memory  v2: memory.max (hard limit; beyond it the kernel reclaims, then OOM-kills inside the sandbox)
 *               memory.swap.max = 0 (no swap at all, so swapping cannot stretch the limit)
 *           v1: memory.limit_in_bytes, and memory.memsw.limit_in_bytes = the same value when the kernel
 *               accounts swap, so memory + swap together stay under the limit
 *   pids    v2/v1: pids.max (fork/clone fails with EAGAIN beyond it; counts threads too)
 *   cpu     optional relative weight only (v2 cpu.weight, v1 cpu.shares); CPU *time* is limited per process
 *           by RLIMIT_CPU elsewhere, the cgroup only measures it
 */
import { CgroupError } from './errors.js';

export interface CgroupLimits {
  /** Hard memory limit of the whole sandbox, bytes. */
  memoryBytes: number;
  /** Max processes + threads alive in the sandbox at once. */
  pids: number;
  /** Relative CPU weight, cgroup v2 scale 1..10000 (default share is 100). */
  cpuWeight?: number;
}

export interface ControlWrite {
  /** File name inside the sandbox's cgroup directory. */
  file: string;
  value: string;
  /** Skip (and report as not enforced) when the kernel does not offer this file. */
  optional: boolean;
}

export function validateLimits(limits: CgroupLimits): void {
  if (!Number.isSafeInteger(limits.memoryBytes) || limits.memoryBytes < 1) {
    throw new CgroupError(
      'INVALID_ARGUMENT',
      `memoryBytes must be a positive integer, got ${limits.memoryBytes}`,
    );
  }
  if (!Number.isSafeInteger(limits.pids) || limits.pids < 1) {
    throw new CgroupError('INVALID_ARGUMENT', `pids must be a positive integer, got ${limits.pids}`);
  }
  const w = limits.cpuWeight;
  if (w !== undefined && (!Number.isInteger(w) || w < 1 || w > 10_000)) {
    throw new CgroupError('INVALID_ARGUMENT', `cpuWeight must be an integer in 1..10000, got ${w}`);
  }
}

/** v2 weight (1..10000, default 100) → v1 shares (2..262144, default 1024), keeping the default aligned. */
export function cpuWeightToShares(weight: number): number {
  return Math.min(262_144, Math.max(2, Math.round((weight * 1024) / 100)));
}

export function planV2Writes(limits: CgroupLimits, cpuAvailable: boolean): ControlWrite[] {
  const writes: ControlWrite[] = [
    { file: 'memory.max', value: String(limits.memoryBytes), optional: false },
    { file: 'memory.swap.max', value: '0', optional: true },
    { file: 'pids.max', value: String(limits.pids), optional: false },
  ];
  if (limits.cpuWeight !== undefined && cpuAvailable) {
    writes.push({ file: 'cpu.weight', value: String(limits.cpuWeight), optional: false });
  }
  return writes;
}

export type V1Hierarchy = 'memory' | 'pids' | 'cpu' | 'cpuacct' | 'freezer';

export function planV1Writes(hierarchy: V1Hierarchy, limits: CgroupLimits): ControlWrite[] {
  switch (hierarchy) {
    case 'memory':
      // Order matters: memsw must never be below the memory limit, so memory goes first.
      return [
        { file: 'memory.limit_in_bytes', value: String(limits.memoryBytes), optional: false },
        { file: 'memory.memsw.limit_in_bytes', value: String(limits.memoryBytes), optional: true },
      ];
    case 'pids':
      return [{ file: 'pids.max', value: String(limits.pids), optional: false }];
    case 'cpu':
      return limits.cpuWeight === undefined
        ? []
        : [{ file: 'cpu.shares', value: String(cpuWeightToShares(limits.cpuWeight)), optional: false }];
    case 'cpuacct':
    case 'freezer':
      return [];
  }
}
