/** Orphaned one-shot bwrap processes (their ironcage killed mid-setup) are found and reaped; warm ones are not. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  orphanedOneShotRuns,
  reapOrphanedOneShotRuns,
  sweepStaleEgressDirs,
} from '../../src/isolation/orphans.js';
import { BWRAP_PROBE_ARGS } from '../../src/isolation/preflight/bwrap.js';

/** Starts bwrap through a shell that exits at once, so bwrap is re-parented; returns its pid. */
async function orphanedBwrap(agentArgs: string[]): Promise<number> {
  // `sh -c 'sleep 60' /.ironcage/agent exec`: the agent's argv shape in bwrap's command line, with a harmless
  // sleep doing the work.
  const inner = ['bwrap', ...BWRAP_PROBE_ARGS, '--', '/bin/sh', '-c', 'sleep 60', ...agentArgs];
  const quoted = inner.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const launcher = spawn('/bin/sh', ['-c', `${quoted} >/dev/null 2>&1 & echo $!`], {
    stdio: ['ignore', 'pipe', 'ignore'],
    detached: true,
  });
  let out = '';
  launcher.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  await new Promise((r) => launcher.on('close', r));
  return Number(out.trim());
}

/** Running (not gone, not a zombie waiting for init). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

test('an orphaned one-shot bwrap is reaped; an orphaned warm sandbox is left alone', async (t) => {
  const oneShot = await orphanedBwrap(['/.ironcage/agent', 'exec']);
  const warm = await orphanedBwrap(['/.ironcage/agent', 'serve']);
  t.after(() => {
    for (const pid of [oneShot, warm]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
  await new Promise((r) => setTimeout(r, 200));
  if (parentOf(oneShot) !== 1) {
    t.skip('a subreaper adopts orphans here, so nothing is re-parented to init');
    return;
  }
  assert.ok(orphanedOneShotRuns().includes(oneShot));
  assert.ok(!orphanedOneShotRuns().includes(warm), 'a warm sandbox outlives its manager on purpose');
  assert.ok(reapOrphanedOneShotRuns() >= 1);
  for (let i = 0; i < 50 && alive(oneShot); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(alive(oneShot), false, 'the orphan is gone');
  assert.equal(alive(warm), true, 'the warm one still runs');
});

test('egress directories of dead owners are swept; a live owner keeps its directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ironcage-orphans-test-'));
  try {
    const dead = spawn('/bin/true');
    await new Promise((r) => dead.on('close', r));
    const stale = join(dir, `ironcage-egress-${dead.pid}-abc`);
    const live = join(dir, `ironcage-egress-${process.pid}-def`);
    const unrelated = join(dir, 'ironcage-egressive-1-x');
    for (const d of [stale, live, unrelated]) mkdirSync(d);
    assert.equal(sweepStaleEgressDirs(dir), 1);
    assert.equal(existsSync(stale), false);
    assert.equal(existsSync(live), true);
    assert.equal(existsSync(unrelated), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
