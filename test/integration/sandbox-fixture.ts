/**
 * Shared helpers for the warm-sandbox integration tests (not a test file): temporary state directories, and
 * the leftover accounting that every test ends with (processes, cgroup directories, state entries).
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sandboxParents } from '../../src/isolation/cgroups/sandbox-cgroup.js';
import { detectCgroups } from '../../src/isolation/cgroups.js';

export const isRoot = process.getuid?.() === 0;
export const cgroupHost = detectCgroups();
export const hasFreezer =
  cgroupHost.mode === 'v2' || (cgroupHost.mode === 'v1' && cgroupHost.controllers.freezer !== undefined);
export const PYTHON = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p));

/** Why root-only tests (cgroups, freezer) skip here, or false. */
export const skipNoRoot: string | false = isRoot ? false : 'needs root: sandbox cgroups and the freezer';
export const skipNoFreezer: string | false =
  skipNoRoot || (hasFreezer ? false : `needs a cgroup freezer; this host: ${cgroupHost.mode}`);

/** A fresh state directory below a traversable temporary parent (sandboxes run as another uid when root). */
export function tempStateDir(prefix: string): { dir: string; cleanup(): void } {
  const parent = mkdtempSync(join(tmpdir(), `ironcage-${prefix}-`));
  // bwrap runs as the sandbox's host uid and must traverse to the sandbox directories it binds.
  chmodSync(parent, 0o711);
  return {
    dir: join(parent, 'state'),
    cleanup: () => rmSync(parent, { recursive: true, force: true }),
  };
}

/** Host pids whose command line contains `marker`. */
export function processesWithMarker(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmdline.includes(marker)) found.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/**
 * Polls until exactly `count` processes carry `marker` (they need a moment to appear or to be reaped), or
 * `timeoutMs` passed, and returns the count it saw. Callers assert on that count, not on a fresh look: a
 * process in the middle of an exec reads as an empty cmdline for a moment, so a second look can miss it.
 */
export async function waitForMarked(marker: string, count: number, timeoutMs = 5_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let seen = processesWithMarker(marker).length;
  while (seen !== count && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
    seen = processesWithMarker(marker).length;
  }
  return seen;
}

/** Sandbox cgroup directories (any hierarchy) whose name ends with `-<id>`. */
export function cgroupDirsOf(ids: readonly string[]): string[] {
  const out: string[] = [];
  for (const parent of sandboxParents(cgroupHost)) {
    let names: string[] = [];
    try {
      names = readdirSync(parent);
    } catch {
      continue;
    }
    for (const n of names) if (ids.some((id) => n.endsWith(`-${id}`))) out.push(join(parent, n));
  }
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Percentile of a list of numbers (nearest rank). */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return (
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN
  );
}
