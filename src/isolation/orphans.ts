/**
 * Reaps one-shot sandboxes whose ironcage died at the worst moment. bwrap arms --die-with-parent only after it
 * has cloned the sandbox; a CLI killed with SIGKILL just before that leaves bwrap re-parented to init, where
 * (if its sandbox child died early, e.g. on a half-written seccomp program) it waits forever on an eventfd.
 * A one-shot bwrap always has ironcage as its parent, so one whose parent is init is a leftover by definition.
 * Warm sandboxes (`agent serve`) legitimately outlive their manager and are never touched here.
 */
import { readdirSync, readFileSync } from 'node:fs';

const ONE_SHOT_MARKER = '\0/.ironcage/agent\0exec\0';

/** Pids of orphaned one-shot bwrap processes visible to this user. */
export function orphanedOneShotRuns(): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      if (comm !== 'bwrap' || ppid !== 1) continue;
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(ONE_SHOT_MARKER)) found.push(Number(name));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/** SIGKILLs every orphaned one-shot bwrap (its sandbox, if any, dies with it); returns how many. */
export function reapOrphanedOneShotRuns(): number {
  let reaped = 0;
  for (const pid of orphanedOneShotRuns()) {
    try {
      process.kill(pid, 'SIGKILL');
      reaped++;
    } catch {
      // exited meanwhile, or another user's
    }
  }
  return reaped;
}
