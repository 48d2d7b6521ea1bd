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

/** The memory ceiling and page cache, which the library's usage does not report. */
function memoryLimits(dirs: readonly string[]): { total: number; cache: number } {
  // "max" (v2) or a huge number (v1) mean no limit: the host's memory is the ceiling.
  const limit = firstNumber(dirs, 'memory.max') ?? firstNumber(dirs, 'memory.limit_in_bytes');
  const total = limit === null || limit > totalmem() ? totalmem() : limit;
  const cache = keyed(dirs, 'memory.stat', 'file') ?? keyed(dirs, 'memory.stat', 'cache') ?? 0;
  return { total, cache };
}

/**
 * The current metric of `sandbox`, or null when its CPU and memory cannot be measured (no cgroup, or no
 * CPU or memory accounting in it).
 */
export async function sampleMetric(sandbox: Sandbox): Promise<E2bMetric | null> {
  const start = sandbox.resourceUsage();
  const startedAt = process.hrtime.bigint();
  if (start?.cpuMs == null || start.memoryBytes === null) return null;
  await new Promise((resolve) => setTimeout(resolve, CPU_SAMPLE_MS));
  const endCpuMs = sandbox.resourceUsage()?.cpuMs;
  const elapsedMs = Number(process.hrtime.bigint() - startedAt) / 1e6;
  if (endCpuMs == null || sandbox.state === 'stopped') return null;
  const dirs = sandbox.cgroupDirs;
  const mem = { used: start.memoryBytes, ...memoryLimits(dirs) };
  const cpus = cpuCount(dirs);
  const pct = (100 * Math.max(0, endCpuMs - start.cpuMs)) / (elapsedMs * cpus);
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
