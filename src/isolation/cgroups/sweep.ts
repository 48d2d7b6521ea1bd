/**
 * Cleanup of sandbox cgroups whose owner died without destroy() (SIGKILLed CLI, crashed server): the next
 * ironcage run calls sweepStaleCgroups() and kills + removes them. Cheap when there is nothing to do: one
 * readdir per hierarchy and one kill(pid, 0) per sandbox directory found.
 *
 * Liveness is judged by the owner pid in the directory name. A dead owner whose pid was reused by an
 * unrelated live process keeps its leftovers until that process exits too: we prefer leaking a directory
 * for a while over killing a sandbox that might still be in use.
 */
import type { Dirent } from 'node:fs';
import { readdirSync } from 'node:fs';
import { isAlive } from '../pids.js';
import type { CgroupHost } from './detect.js';
import { CgroupError, errnoOf } from './errors.js';
import { openSandboxCgroup, parseSandboxCgroupName, sandboxParents } from './sandbox-cgroup.js';

export interface SweepResult {
  /** Directory names (`<ownerPid>-<id>`) removed from every hierarchy. */
  removed: string[];
  /** Stale sandboxes (or an unreadable `ironcage/` directory) that could not be cleaned, with why. */
  failed: { name: string; error: CgroupError }[];
}

function listDirs(parent: string, result: SweepResult): Dirent[] {
  try {
    return readdirSync(parent, { withFileTypes: true });
  } catch (err) {
    const errno = errnoOf(err);
    if (errno !== 'ENOENT') {
      const error = new CgroupError('DESTROY_FAILED', `could not list ${parent}: ${errno}`, { cause: err });
      result.failed.push({ name: parent, error });
    }
    return [];
  }
}

/** Never rejects: problems are reported in `failed`, so a caller may fire and forget it at startup. */
export async function sweepStaleCgroups(
  host: CgroupHost,
  options: { timeoutMs?: number } = {},
): Promise<SweepResult> {
  const result: SweepResult = { removed: [], failed: [] };
  const stale = new Set<string>();
  for (const parent of sandboxParents(host)) {
    for (const entry of listDirs(parent, result)) {
      if (!entry.isDirectory()) continue;
      const parsed = parseSandboxCgroupName(entry.name);
      if (parsed === null || parsed.ownerPid === process.pid || isAlive(parsed.ownerPid)) continue;
      stale.add(entry.name);
    }
  }
  for (const name of stale) {
    try {
      await openSandboxCgroup(host, name).destroy(options);
      result.removed.push(name);
    } catch (err) {
      const error =
        err instanceof CgroupError
          ? err
          : new CgroupError('DESTROY_FAILED', `could not sweep ${name}: ${String(err)}`, { cause: err });
      result.failed.push({ name, error });
    }
  }
  return result;
}
