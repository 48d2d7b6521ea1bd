/**
 * Real-kernel tests of sandbox cgroups on this host's cgroup v1 hierarchies (hybrid host, run as root).
 * Without root or without v1 they skip with the reason; the v2 path is covered by the unit tests against a
 * fake cgroupfs tree (test/unit/cgroups-fake-v2.test.ts).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { after, describe, test } from 'node:test';
import type { CgroupHost, SandboxCgroup, SandboxCgroupOptions } from '../../src/isolation/cgroups.js';
import { createSandboxCgroup, detectCgroups, sweepStaleCgroups } from '../../src/isolation/cgroups.js';

const MiB = 1024 * 1024;
const host: CgroupHost = detectCgroups();
const PYTHON = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p));

function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root: writes to the cgroup v1 hierarchies of this host';
  if (host.mode !== 'v1') {
    return `needs cgroup v1 memory+pids hierarchies; this host: ${host.mode}${host.mode === 'none' ? ` (${host.reason})` : ''}`;
  }
  return false;
}
const skip = skipReason();
const skipPython = skip || (PYTHON === undefined ? 'needs python3 at /usr/bin/python3' : false);

// Everything a test creates is registered here and removed in after(), even when an assertion failed.
const cgroups: SandboxCgroup[] = [];
const children: ChildProcess[] = [];
const parents = new Set<string>();
let counter = 0;

function newCgroup(options: Omit<SandboxCgroupOptions, 'id'>): SandboxCgroup {
  const cg = createSandboxCgroup(host, { id: `test-${counter++}`, ...options });
  cgroups.push(cg);
  for (const dir of cg.dirs) parents.add(dirname(dir));
  return cg;
}

after(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const cg of cgroups) await cg.destroy().catch(() => undefined);
  // The shared ironcage/ parents only go if empty, so a concurrent ironcage elsewhere is unaffected.
  for (const parent of parents) {
    try {
      rmdirSync(parent);
    } catch {
      // still used by someone else
    }
  }
});

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Spawns a command that must wait for one byte on stdin before doing anything (so it can be placed first). */
function spawnBlocked(
  command: string,
  args: string[],
): { child: ChildProcess; release(): void; exit: Promise<Exit> } {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exit = new Promise<Exit>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, release: () => child.stdin?.end('x'), exit };
}

function pythonBlocked(body: string) {
  return spawnBlocked(PYTHON ?? 'python3', ['-c', `import sys\nsys.stdin.buffer.read(1)\n${body}`]);
}

function pidOf(child: ChildProcess): number {
  assert.ok(child.pid !== undefined, 'child has a pid');
  return child.pid;
}

/** Gone, or a zombie waiting for its parent: either way no longer running. */
function isDeadProcess(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('cgroup v1 sandbox (real kernel)', { timeout: 60_000 }, () => {
  test('detects v1 with the memory and pids hierarchies', { skip }, () => {
    assert.equal(host.mode, 'v1');
    if (host.mode !== 'v1') return;
    assert.ok(existsSync(`${host.controllers.memory}/memory.limit_in_bytes`));
    assert.ok(existsSync(`${host.controllers.pids}/cgroup.procs`));
  });

  test('writes the limits it was asked for', { skip }, async () => {
    const cg = newCgroup({ memoryBytes: 96 * MiB, pids: 12, cpuWeight: 200 });
    assert.equal(cg.enforcement.mode, 'cgroup-v1');
    const byFile = (suffix: string) => {
      const dir = cg.dirs.find((d) => existsSync(`${d}/${suffix}`));
      assert.ok(dir, `some hierarchy has ${suffix}`);
      return readFileSync(`${dir}/${suffix}`, 'utf8').trim();
    };
    assert.equal(byFile('memory.limit_in_bytes'), String(96 * MiB));
    assert.equal(byFile('pids.max'), '12');
    if (cg.enforcement.swapLimited) assert.equal(byFile('memory.memsw.limit_in_bytes'), String(96 * MiB));
    if (cg.enforcement.cpuWeighted) assert.equal(byFile('cpu.shares'), '2048');
    await cg.destroy();
  });

  test('the kernel OOM-kills a process that allocates beyond the memory limit', {
    skip: skipPython,
  }, async () => {
    const limit = 64 * MiB;
    const cg = newCgroup({ memoryBytes: limit, pids: 16 });
    // 512 MiB in 8 MiB chunks; bytes repetition writes every page, so each chunk is really charged.
    const run = pythonBlocked("chunks = [b'\\x01' * (8 << 20) for _ in range(64)]\nprint('survived')");
    cg.place(pidOf(run.child));
    run.release();
    const exit = await run.exit;
    assert.equal(exit.signal, 'SIGKILL', `expected an OOM kill, got ${JSON.stringify(exit)}`);
    assert.doesNotMatch(exit.stdout, /survived/);
    const stats = cg.stats();
    assert.ok((stats.oomKills ?? 0) >= 1, `oomKills ${stats.oomKills}`);
    assert.ok(
      stats.peakMemoryBytes !== null && stats.peakMemoryBytes <= limit,
      `peak ${stats.peakMemoryBytes}`,
    );
    assert.ok(stats.peakMemoryBytes > limit / 2, `peak ${stats.peakMemoryBytes} should be near the limit`);
    await cg.destroy();
  });

  test('pids.max makes fork fail beyond the limit', { skip: skipPython }, async () => {
    const cg = newCgroup({ memoryBytes: 256 * MiB, pids: 8 });
    const run = pythonBlocked(
      [
        'import os, json',
        'r, w = os.pipe()',
        'ok = failed = 0',
        'for _ in range(20):',
        '    try:',
        '        pid = os.fork()',
        '    except OSError:',
        '        failed += 1',
        '        continue',
        '    if pid == 0:',
        '        os.close(w); os.read(r, 1); os._exit(0)',
        '    ok += 1',
        'os.close(w)',
        'for _ in range(ok): os.wait()',
        'print(json.dumps({"ok": ok, "failed": failed}))',
      ].join('\n'),
    );
    cg.place(pidOf(run.child));
    run.release();
    const exit = await run.exit;
    assert.equal(exit.code, 0, exit.stderr);
    const counts = JSON.parse(exit.stdout) as { ok: number; failed: number };
    // The parent itself is one of the 8.
    assert.ok(counts.ok >= 1 && counts.ok <= 7, `forked ${counts.ok}`);
    assert.equal(counts.ok + counts.failed, 20);
    assert.ok((cg.stats().pidsLimitHits ?? 0) >= 1);
    await cg.destroy();
  });

  test('stats report peak memory and CPU time plausibly', { skip: skipPython }, async () => {
    const cg = newCgroup({ memoryBytes: 256 * MiB, pids: 16 });
    const run = pythonBlocked(
      [
        'import time',
        "keep = b'\\x01' * (48 << 20)",
        'start = time.process_time()',
        'while time.process_time() - start < 0.2: pass',
        'print(len(keep))',
      ].join('\n'),
    );
    cg.place(pidOf(run.child));
    run.release();
    const exit = await run.exit;
    assert.equal(exit.code, 0, exit.stderr);
    const stats = cg.stats();
    assert.ok(
      stats.peakMemoryBytes !== null && stats.peakMemoryBytes >= 48 * MiB,
      `peak ${stats.peakMemoryBytes}`,
    );
    assert.ok(stats.peakMemoryBytes < 256 * MiB, `peak ${stats.peakMemoryBytes}`);
    assert.ok(stats.cpuMs !== null && stats.cpuMs >= 150 && stats.cpuMs < 5_000, `cpuMs ${stats.cpuMs}`);
    assert.equal(stats.oomKills, 0);
    await cg.destroy();
  });

  test('killAll kills a whole process tree, grandchildren included', { skip }, async () => {
    const cg = newCgroup({ memoryBytes: 128 * MiB, pids: 32 });
    const run = spawnBlocked('/bin/sh', [
      '-c',
      'read x; sleep 300 & sleep 300 & (sleep 300 & sleep 300 & wait) & echo started; wait',
    ]);
    cg.place(pidOf(run.child));
    run.release();
    // sh, two sleeps, the subshell and its two sleeps.
    await waitFor('six processes in the cgroup', () => cg.pids().length >= 6);
    const members = cg.pids();
    await cg.killAll();
    assert.deepEqual(cg.pids(), []);
    const exit = await run.exit;
    assert.equal(exit.signal, 'SIGKILL');
    await waitFor('every member to be gone', () => members.every(isDeadProcess));
    await cg.destroy();
  });

  test('killAll stops a tree that keeps forking', { skip }, async () => {
    const cg = newCgroup({ memoryBytes: 128 * MiB, pids: 24 });
    const run = spawnBlocked('/bin/sh', ['-c', 'read x; while :; do (sleep 300 &); done']);
    cg.place(pidOf(run.child));
    run.release();
    await waitFor('the fork loop to hit pids.max', () => (cg.stats().pidsLimitHits ?? 0) > 0);
    await cg.killAll();
    assert.deepEqual(cg.pids(), []);
    await run.exit;
    await cg.destroy();
  });

  test('destroy kills what is left, removes every dir and is idempotent', { skip }, async () => {
    const cg = newCgroup({ memoryBytes: 64 * MiB, pids: 8 });
    const run = spawnBlocked('/bin/sh', ['-c', 'read x; exec sleep 300']);
    cg.place(pidOf(run.child));
    run.release();
    assert.ok(cg.dirs.length >= 2);
    for (const dir of cg.dirs) assert.ok(existsSync(dir), dir);
    await cg.destroy();
    for (const dir of cg.dirs) assert.equal(existsSync(dir), false, `${dir} is gone`);
    assert.equal((await run.exit).signal, 'SIGKILL');
    await cg.destroy();

    // A directory removed behind our back is fine too.
    const other = newCgroup({ memoryBytes: 64 * MiB, pids: 8 });
    const first = other.dirs[0];
    assert.ok(first);
    rmdirSync(first);
    await other.destroy();
    for (const dir of other.dirs) assert.equal(existsSync(dir), false);
  });

  test('creating the same id twice fails with CREATE_FAILED', { skip }, async () => {
    const cg = createSandboxCgroup(host, { id: 'dup-check', memoryBytes: 64 * MiB, pids: 8 });
    cgroups.push(cg);
    assert.throws(
      () => createSandboxCgroup(host, { id: 'dup-check', memoryBytes: 64 * MiB, pids: 8 }),
      (err: Error & { code?: string }) => err.name === 'CgroupError' && err.code === 'CREATE_FAILED',
    );
    await cg.destroy();
  });

  test('sweep removes the cgroups of a SIGKILLed owner and leaves live owners alone', { skip }, async () => {
    const moduleUrl = new URL('../../src/isolation/cgroups.js', import.meta.url).href;
    // A real owner process: creates a sandbox, puts a detached sleep in it, reports, then waits to be killed.
    const ownerScript = `
      import { spawn } from 'node:child_process';
      import { createSandboxCgroup, detectCgroups } from ${JSON.stringify(moduleUrl)};
      const cg = createSandboxCgroup(detectCgroups(), { id: 'sweep-me', memoryBytes: 64 << 20, pids: 8 });
      const sleeper = spawn('/bin/sleep', ['300'], { detached: true, stdio: 'ignore' });
      cg.place(sleeper.pid);
      sleeper.unref();
      console.log(JSON.stringify({ name: cg.name, dirs: cg.dirs, sleeper: sleeper.pid }));
      setInterval(() => {}, 1000);
    `;
    const startOwner = async () => {
      const owner = spawn(process.execPath, ['--input-type=module', '-e', ownerScript], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.push(owner);
      const line = await new Promise<string>((resolve, reject) => {
        owner.on('error', reject);
        owner.on('exit', (code) => reject(new Error(`owner exited early (${code})`)));
        owner.stdout.once('data', (d: Buffer) => resolve(d.toString()));
      });
      const info = JSON.parse(line) as { name: string; dirs: string[]; sleeper: number };
      for (const dir of info.dirs) parents.add(dirname(dir));
      const killOwner = async () => {
        const gone = new Promise((r) => owner.once('close', r));
        owner.kill('SIGKILL');
        await gone;
      };
      return { ...info, killOwner };
    };

    const dead = await startOwner();
    const alive = await startOwner();
    const mine = newCgroup({ memoryBytes: 64 * MiB, pids: 8 });
    try {
      await dead.killOwner();
      const swept = await sweepStaleCgroups(host);
      assert.ok(swept.removed.includes(dead.name), `removed ${JSON.stringify(swept)}`);
      for (const dir of dead.dirs) assert.equal(existsSync(dir), false, `${dir} swept`);
      await waitFor('the orphaned sleeper to be killed', () => isDeadProcess(dead.sleeper));

      assert.ok(!swept.removed.includes(alive.name));
      for (const dir of alive.dirs) assert.ok(existsSync(dir), `${dir} of a live owner stays`);
      for (const dir of mine.dirs) assert.ok(existsSync(dir), `${dir} of this process stays`);
      assert.equal(isDeadProcess(alive.sleeper), false);

      // Nothing to do now for the dead owner; the live one is swept once it dies.
      await alive.killOwner();
      const second = await sweepStaleCgroups(host);
      assert.ok(second.removed.includes(alive.name));
      assert.ok(!second.removed.includes(dead.name));
      await waitFor('the second sleeper to be killed', () => isDeadProcess(alive.sleeper));
    } finally {
      for (const pid of [dead.sleeper, alive.sleeper]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await sweepStaleCgroups(host);
    }
    await mine.destroy();
  });
});

// Runs everywhere: proves the skip reasons are computed, not hard-coded.
test('skip reason matches this environment', () => {
  if (process.getuid?.() !== 0) assert.match(String(skip), /root/);
  else if (host.mode === 'v1') assert.equal(skip, false);
  else assert.match(String(skip), /cgroup v1/);
});
