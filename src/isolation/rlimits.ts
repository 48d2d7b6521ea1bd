/**
 * Per-process resource limits, applied by the in-sandbox agent before it starts the command (Node cannot set
 * rlimits on a child). They are the floor under the cgroup: always set for CPU time, file size, open files and
 * core dumps; memory (RLIMIT_DATA) and processes (RLIMIT_NPROC) only where no cgroup enforces them.
 */
import type { Limits } from '../policy/schema.js';

const MiB = 1024 * 1024;

/** Agent `--rlimit NAME=SOFT:HARD` arguments for these limits. */
export function planRlimits(limits: Limits, host: { cgroup: boolean }): string[] {
  const cpuSeconds = Math.ceil(limits.cpuTimeMs / 1000);
  const out = [
    // SIGXCPU at the soft limit, SIGKILL one second later if the process ignores it.
    `cpu=${cpuSeconds}:${cpuSeconds + 1}`,
    `fsize=${limits.fileSizeMb * MiB}:${limits.fileSizeMb * MiB}`,
    `nofile=${limits.openFiles}:${limits.openFiles}`,
    'core=0:0',
  ];
  if (!host.cgroup) {
    // RLIMIT_NPROC is counted per user namespace, so it caps this sandbox alone (the sandbox never maps to
    // host root, which the kernel would exempt).
    out.push(
      `nproc=${limits.processes}:${limits.processes}`,
      `data=${limits.memoryMb * MiB}:${limits.memoryMb * MiB}`,
    );
  }
  return out;
}
