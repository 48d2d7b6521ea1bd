/**
 * The cgroup v2 path against a FAKE cgroupfs: plain files and directories in a temp dir named
 * `ironcage-fake-cgroupfs-*`. This host's cgroup2 has no controllers, so real v2 cannot run here; the fake
 * checks what the code reads and writes. It cannot prove kernel behaviour (limits, kills): that is what the
 * v1 integration tests do for real.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { CgroupHost } from '../../src/isolation/cgroups.js';
import {
  CgroupError,
  createSandboxCgroup,
  detectCgroups,
  openSandboxCgroup,
} from '../../src/isolation/cgroups.js';

const SCOPE = 'user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope';
let fakeRoot = '';
let mount = '';

/** One fake cgroup directory with the core files the code consults. */
function fakeCgroup(relative: string, controllers: string, subtreeControl: string): string {
  const path = join(mount, relative);
  mkdirSync(path, { recursive: true });
  writeFileSync(join(path, 'cgroup.controllers'), `${controllers}\n`);
  writeFileSync(join(path, 'cgroup.subtree_control'), `${subtreeControl}\n`);
  writeFileSync(join(path, 'cgroup.procs'), '');
  return path;
}

function escapeMountPoint(path: string): string {
  return path.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

function detectFake(): CgroupHost {
  return detectCgroups({
    procSelfCgroup: `0::/${SCOPE}\n`,
    mountInfo: `25 21 0:22 / ${escapeMountPoint(mount)} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n`,
    isRoot: false,
  });
}

before(() => {
  fakeRoot = mkdtempSync(join(tmpdir(), 'ironcage-fake-cgroupfs-'));
  // A space in the mount point exercises mountinfo's octal escapes end to end.
  mount = join(fakeRoot, 'sys fs cgroup');
});

after(() => {
  rmSync(fakeRoot, { recursive: true, force: true });
});

describe('cgroup v2 on a fake cgroupfs', () => {
  test('detection picks the nearest ancestor that hands memory and pids down', () => {
    fakeCgroup('', 'cpuset cpu io memory pids', 'cpu io memory pids');
    fakeCgroup('user.slice', 'cpu io memory pids', 'cpu memory pids');
    fakeCgroup('user.slice/user-1000.slice', 'cpu memory pids', 'cpu memory pids');
    fakeCgroup('user.slice/user-1000.slice/user@1000.service', 'cpu memory pids', 'cpu memory pids');
    fakeCgroup('user.slice/user-1000.slice/user@1000.service/app.slice', 'cpu memory pids', '');
    fakeCgroup(SCOPE, '', '');
    assert.deepEqual(detectFake(), {
      mode: 'v2',
      base: join(mount, 'user.slice/user-1000.slice/user@1000.service'),
      controllers: ['cpu', 'memory', 'pids'],
    });

    // Once app.slice hands the controllers down, it is nearer and wins.
    writeFileSync(
      join(mount, 'user.slice/user-1000.slice/user@1000.service/app.slice/cgroup.subtree_control'),
      'memory pids\n',
    );
    const host = detectFake();
    assert.equal(
      host.mode === 'v2' && host.base,
      join(mount, 'user.slice/user-1000.slice/user@1000.service/app.slice'),
    );
  });

  test('create enables the controllers on ironcage/, and a missing kernel file is an error, never created', () => {
    const host = detectFake();
    assert.equal(host.mode, 'v2');
    if (host.mode !== 'v2') return;
    const parent = join(host.base, 'ironcage');
    mkdirSync(parent, { recursive: true });
    writeFileSync(join(parent, 'cgroup.subtree_control'), '');
    // A plain directory has no memory.max: the kernel would have made one. The create must fail and roll back.
    assert.throws(
      () => createSandboxCgroup(host, { id: 'fake-1', memoryBytes: 1 << 26, pids: 8, cpuWeight: 50 }),
      (err: unknown) =>
        err instanceof CgroupError && err.code === 'LIMIT_FAILED' && /memory\.max/.test(err.message),
    );
    assert.equal(readFileSync(join(parent, 'cgroup.subtree_control'), 'utf8'), '+memory +pids');
    assert.equal(existsSync(join(parent, `${process.pid}-fake-1`)), false, 'rolled back');
  });

  test('stats read memory.current, memory.peak, cpu.stat, memory.events and pids.events', () => {
    const host = detectFake();
    assert.equal(host.mode, 'v2');
    if (host.mode !== 'v2') return;
    const leaf = join(host.base, 'ironcage', '4242-fake-stats');
    mkdirSync(leaf, { recursive: true });
    writeFileSync(join(leaf, 'cgroup.procs'), '');
    writeFileSync(join(leaf, 'memory.current'), '31457280\n');
    writeFileSync(join(leaf, 'memory.peak'), '52428800\n');
    writeFileSync(join(leaf, 'cpu.stat'), 'usage_usec 212345\nuser_usec 200000\nsystem_usec 12345\n');
    writeFileSync(
      join(leaf, 'memory.events'),
      'low 0\nhigh 0\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\n',
    );
    writeFileSync(join(leaf, 'pids.events'), 'max 3\n');
    const cg = openSandboxCgroup(host, '4242-fake-stats');
    assert.equal(cg.enforcement.mode, 'cgroup-v2');
    assert.deepEqual(cg.dirs, [leaf]);
    assert.deepEqual(cg.stats(), {
      memoryBytes: 31457280,
      peakMemoryBytes: 52428800,
      cpuMs: 212.345,
      oomKills: 1,
      pidsLimitHits: 3,
    });

    // Kernels before 5.19 have no memory.peak: reported as unknown, not as zero.
    rmSync(join(leaf, 'memory.peak'));
    assert.equal(cg.stats().peakMemoryBytes, null);
  });

  test('killAll uses cgroup.kill when the kernel offers it', async () => {
    const host = detectFake();
    if (host.mode !== 'v2') return assert.fail('expected v2');
    const leaf = join(host.base, 'ironcage', '4242-fake-kill');
    mkdirSync(leaf, { recursive: true });
    writeFileSync(join(leaf, 'cgroup.procs'), '');
    writeFileSync(join(leaf, 'cgroup.kill'), '');
    const cg = openSandboxCgroup(host, '4242-fake-kill');
    assert.equal(cg.enforcement.killMethod, 'cgroup.kill');
    await cg.killAll({ timeoutMs: 1_000 });
    assert.equal(readFileSync(join(leaf, 'cgroup.kill'), 'utf8'), '1');
  });

  test('invalid ids and a none host are refused before touching the filesystem', () => {
    const host = detectFake();
    for (const id of ['', '../x', 'a/b', '.hidden', 'x'.repeat(101)]) {
      assert.throws(
        () => createSandboxCgroup(host, { id, memoryBytes: 1 << 20, pids: 1 }),
        (err: unknown) => err instanceof CgroupError && err.code === 'INVALID_ARGUMENT',
        id,
      );
    }
    assert.throws(
      () =>
        createSandboxCgroup(
          { mode: 'none', reason: 'r', fix: 'f' },
          { id: 'a', memoryBytes: 1 << 20, pids: 1 },
        ),
      (err: unknown) =>
        err instanceof CgroupError && err.code === 'UNAVAILABLE' && /r\. Fix: f/.test(err.message),
    );
  });
});
