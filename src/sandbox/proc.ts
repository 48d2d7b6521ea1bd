/**
 * Process identity that survives our own restart: a pid plus the kernel's start time of that process
 * (/proc/PID/stat field 22), so a pid reused by an unrelated process is never mistaken for a sandbox's.
 */
import { readProcStat } from '../isolation/pids.js';

export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot, as /proc/PID/stat reports it. */
  startTime: number;
}

/** The identity of a live process, or null when it does not exist (or is a zombie: it will not answer). */
export function processIdentity(pid: number): ProcessIdentity | null {
  const stat = readProcStat(pid);
  if (stat === null || stat.state === 'Z' || stat.state === 'X') return null;
  return { pid, startTime: stat.startTime };
}

/** True when the process recorded as `who` is still the same live process. */
export function isSameProcess(who: ProcessIdentity): boolean {
  return processIdentity(who.pid)?.startTime === who.startTime;
}

/** SIGKILL a recorded process only if it is still the same one; true when a signal was sent. */
export function killIfSame(who: ProcessIdentity): boolean {
  if (!isSameProcess(who)) return false;
  try {
    process.kill(who.pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}
