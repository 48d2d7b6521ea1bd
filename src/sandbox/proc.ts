/**
 * Process identity that survives our own restart: a pid plus the kernel's start time of that process
 * (/proc/PID/stat field 22), so a pid reused by an unrelated process is never mistaken for a sandbox's.
 */
import { readFileSync } from 'node:fs';

export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot, as /proc/PID/stat reports it. */
  startTime: number;
}

/** Parses the start time out of /proc/PID/stat text (the command name may contain spaces and parentheses). */
export function parseStatStartTime(stat: string): number | null {
  const close = stat.lastIndexOf(')');
  if (close < 0) return null;
  // After "pid (comm) " come fields 3.. ; starttime is field 22, i.e. index 19 of the rest.
  const value = stat
    .slice(close + 2)
    .split(' ')
    .at(19);
  const n = Number(value);
  return value !== undefined && Number.isSafeInteger(n) ? n : null;
}

/** The identity of a live process, or null when it does not exist (or is a zombie: it will not answer). */
export function processIdentity(pid: number): ProcessIdentity | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z' || state === 'X') return null;
  const startTime = parseStatStartTime(stat);
  return startTime === null ? null : { pid, startTime };
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
