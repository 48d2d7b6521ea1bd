/**
 * Reaps one-shot sandboxes whose ironcage died at the worst moment. bwrap arms --die-with-parent only after it
 * has cloned the sandbox; a CLI killed with SIGKILL just before that leaves bwrap re-parented to init, where
 * (if its sandbox child died early, e.g. on a half-written seccomp program) it waits forever on an eventfd.
 * A one-shot bwrap always has ironcage as its parent, so one whose parent is init is a leftover by definition.
 * Warm sandboxes (`agent serve`) legitimately outlive their manager and are never touched here. The same goes
 * for the egress proxy directory such a run leaves in the temp dir.
 */
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAlive, readProcStat } from './pids.js';

const ONE_SHOT_MARKER = '\0/.ironcage/agent\0exec\0';

/** Pids of orphaned one-shot bwrap processes visible to this user. */
export function orphanedOneShotRuns(): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readProcStat(Number(name));
    if (stat?.comm !== 'bwrap' || stat.ppid !== 1) continue;
    try {
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

/**
 * Removes egress proxy directories (`ironcage-egress-<owner pid>-*` in the temp dir) whose owner is dead: what a
 * run killed with SIGKILL leaves behind. Only this user's; a live (or reused) owner pid keeps its directory.
 */
export function sweepStaleEgressDirs(dir = tmpdir()): number {
  let removed = 0;
  const uid = process.getuid?.();
  for (const name of readdirSync(dir)) {
    const owner = /^ironcage-egress-(\d+)-/.exec(name)?.[1];
    if (owner === undefined || isAlive(Number(owner))) continue;
    const path = join(dir, name);
    try {
      if (uid !== undefined && statSync(path).uid !== uid) continue;
      rmSync(path, { recursive: true, force: true });
      removed++;
    } catch {
      // gone meanwhile, or not ours
    }
  }
  return removed;
}
