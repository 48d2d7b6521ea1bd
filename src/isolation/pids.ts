/**
 * Reading the host's process table: /proc/PID/stat fields and liveness. One parser for every caller (cgroup
 * sweep, orphan reaper, warm-sandbox process identity), because the command name in stat may contain spaces
 * and parentheses and is easy to mis-split.
 */
import { readFileSync } from 'node:fs';

export interface ProcStat {
  /** The command name (field 2, without its parentheses). */
  comm: string;
  /** One letter: R, S, D, Z, ... (field 3). */
  state: string;
  ppid: number;
  /** Start time in clock ticks since boot (field 22): with the pid, it identifies a process across pid reuse. */
  startTime: number;
}

/** Parses /proc/PID/stat text; null when it is not in the expected shape. */
export function parseProcStat(text: string): ProcStat | null {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  // After "pid (comm) " come fields 3.. : state, ppid, ... starttime is field 22, index 19 of the rest.
  const rest = text.slice(close + 2).split(' ');
  const ppid = Number(rest[1]);
  const startTime = Number(rest[19]);
  if (rest[0] === undefined || !Number.isSafeInteger(ppid) || !Number.isSafeInteger(startTime)) return null;
  return { comm: text.slice(open + 1, close), state: rest[0], ppid, startTime };
}

/** The stat of a process, or null when it is gone (or unreadable). */
export function readProcStat(pid: number): ProcStat | null {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/** True while a process with this pid exists (EPERM: it exists but belongs to another user). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
