/**
 * E2B's SandboxMetric for GET /sandboxes/{id}/metrics, measured now from the sandbox's own cgroup (CPU and
 * memory) and workspace (disk). There is no history: one current sample is the whole series. A sandbox
 * without a cgroup (a host that gives ironcage none) has nothing to measure CPU and memory with, so its
 * series is empty rather than invented.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { posix } from 'node:path';
import type { Sandbox } from '../../sandbox/sandbox.js';

/** The CPU percentage is the usage over this window, sampled twice. */
export const CPU_SAMPLE_MS = 200;

export interface E2bMetric {
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  /** Of all cpuCount CPUs, 0-100. */
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

function read(dir: string, file: string): string | null {
  try {
    return readFileSync(posix.join(dir, file), 'utf8').trim();
  } catch {
    return null;
  }
}

function firstNumber(dirs: readonly string[], file: string): number | null {
  for (const dir of dirs) {
    const text = read(dir, file);
    if (text !== null && /^\d+$/.test(text)) return Number(text);
  }
  return null;
}

/** A `key value` line of a flat-keyed cgroup file (cpu.stat, memory.stat). */
function keyed(dirs: readonly string[], file: string, key: string): number | null {
  for (const dir of dirs) {
    const text = read(dir, file);
    const match = text === null ? null : new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
    if (match) return Number(match[1]);
  }
  return null;
}

/** CPU time used so far, µs: v2 cpu.stat usage_usec, v1 cpuacct.usage (ns). */
function cpuUsageUsec(dirs: readonly string[]): number | null {
  const v2 = keyed(dirs, 'cpu.stat', 'usage_usec');
  if (v2 !== null) return v2;
  const v1 = firstNumber(dirs, 'cpuacct.usage');
  return v1 === null ? null : v1 / 1_000;
}

/** CPUs the sandbox may use: its CFS quota when one is set, else the host's. */
function cpuCount(dirs: readonly string[]): number {
  const host = availableParallelism();
  for (const dir of dirs) {
    const max = read(dir, 'cpu.max')?.split(' ');
    if (max && max[0] !== 'max' && Number(max[1]) > 0) {
      return Math.min(host, Math.max(1, Math.ceil(Number(max[0]) / Number(max[1]))));
    }
  }
  const quota = Number(dirs.map((d) => read(d, 'cpu.cfs_quota_us')).find((v) => v !== null) ?? -1);
  const period = Number(dirs.map((d) => read(d, 'cpu.cfs_period_us')).find((v) => v !== null) ?? 0);
  if (quota > 0 && period > 0) return Math.min(host, Math.max(1, Math.ceil(quota / period)));
  return host;
}

function memory(dirs: readonly string[]): { used: number; total: number; cache: number } | null {
  const used = firstNumber(dirs, 'memory.current') ?? firstNumber(dirs, 'memory.usage_in_bytes');
  if (used === null) return null;
  // "max" (v2) or a huge number (v1) mean no limit: the host's memory is the ceiling.
  const limit = firstNumber(dirs, 'memory.max') ?? firstNumber(dirs, 'memory.limit_in_bytes');
  const total = limit === null || limit > totalmem() ? totalmem() : limit;
  const cache = keyed(dirs, 'memory.stat', 'file') ?? keyed(dirs, 'memory.stat', 'cache') ?? 0;
  return { used, total, cache };
}

/**
 * The current metric of `sandbox`, or null when its CPU and memory cannot be measured (no cgroup, or no
 * CPU or memory accounting in it).
 */
export async function sampleMetric(sandbox: Sandbox): Promise<E2bMetric | null> {
  const dirs = sandbox.cgroupDirs;
  if (dirs.length === 0) return null;
  const startUsec = cpuUsageUsec(dirs);
  const startedAt = process.hrtime.bigint();
  const mem = memory(dirs);
  if (startUsec === null || mem === null) return null;
  await new Promise((resolve) => setTimeout(resolve, CPU_SAMPLE_MS));
  const endUsec = cpuUsageUsec(dirs);
  const elapsedUsec = Number(process.hrtime.bigint() - startedAt) / 1_000;
  if (endUsec === null || sandbox.state === 'stopped') return null;
  const cpus = cpuCount(dirs);
  const pct = (100 * Math.max(0, endUsec - startUsec)) / (elapsedUsec * cpus);
  const disk = await sandbox.workspaceUsage();
  const now = Date.now();
  return {
    timestamp: new Date(now).toISOString(),
    timestampUnix: Math.floor(now / 1000),
    cpuCount: cpus,
    cpuUsedPct: Math.round(Math.min(100, pct) * 100) / 100,
    memUsed: mem.used,
    memTotal: mem.total,
    memCache: mem.cache,
    diskUsed: disk.usedBytes,
    diskTotal: disk.quotaBytes,
  };
}
