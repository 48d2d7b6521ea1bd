/** The pure halves of detection: locating directories from fixed text and deciding from fixed facts. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { CgroupDirFacts, CgroupFacts } from '../../src/isolation/cgroups.js';
import { decideCgroupHost, locateCgroups } from '../../src/isolation/cgroups.js';

// This machine: hybrid, v1 controllers, an empty cgroup2 at /sys/fs/cgroup/unified.
const HYBRID_MOUNTINFO = [
  '30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct',
  '34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer',
  '38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
  '39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd',
  '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');
const HYBRID_PROC =
  '9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/ef78\n2:cpuacct:/\n1:cpu:/\n0::/\n';

const USER_SCOPE = '/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope';
const V2_MOUNTINFO =
  '25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate';

describe('locateCgroups', () => {
  test('hybrid host: v1 dirs under our own cgroup of each hierarchy, v2 chain of one', () => {
    const loc = locateCgroups(HYBRID_PROC, HYBRID_MOUNTINFO);
    assert.deepEqual(loc.v1.memory, {
      mountPoint: '/sys/fs/cgroup/memory',
      dir: '/sys/fs/cgroup/memory/process_api/ef78',
    });
    assert.equal(loc.v1.pids?.dir, '/sys/fs/cgroup/pids');
    assert.equal(loc.v1.cpu?.dir, '/sys/fs/cgroup/cpu');
    assert.deepEqual(loc.v2, { mountPoint: '/sys/fs/cgroup/unified', chain: ['/sys/fs/cgroup/unified'] });
  });

  test('co-mounted cpu,cpuacct share one directory', () => {
    const loc = locateCgroups(
      '3:cpu,cpuacct:/a\n',
      '31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct',
    );
    assert.equal(loc.v1.cpu?.dir, '/sys/fs/cgroup/cpu,cpuacct/a');
    assert.equal(loc.v1.cpuacct?.dir, '/sys/fs/cgroup/cpu,cpuacct/a');
    assert.equal(loc.v2, null);
  });

  test('v2 user session: own scope first, then every ancestor up to the mount', () => {
    const loc = locateCgroups(`0::${USER_SCOPE}\n`, V2_MOUNTINFO);
    assert.deepEqual(loc.v2?.chain, [
      `/sys/fs/cgroup${USER_SCOPE}`,
      '/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice',
      '/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service',
      '/sys/fs/cgroup/user.slice/user-1000.slice',
      '/sys/fs/cgroup/user.slice',
      '/sys/fs/cgroup',
    ]);
    assert.deepEqual(loc.v1, {});
  });

  test('a mount of a subtree maps paths relative to its root; invisible cgroups are left out', () => {
    const sub = '40 30 0:37 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw';
    assert.deepEqual(locateCgroups('0::/docker/abc/inner\n', sub).v2?.chain, [
      '/sys/fs/cgroup/inner',
      '/sys/fs/cgroup',
    ]);
    assert.deepEqual(locateCgroups('0::/elsewhere\n', sub).v2?.chain, []);
    assert.deepEqual(locateCgroups('0::/../outside\n', V2_MOUNTINFO).v2?.chain, []);
  });
});

const dir = (path: string, facts: Partial<CgroupDirFacts> = {}): CgroupDirFacts => ({
  dir: path,
  writable: true,
  controllers: ['cpu', 'memory', 'pids'],
  subtreeControl: [],
  ...facts,
});

const ROOT = '/sys/fs/cgroup';
const SLICE = `${ROOT}/user.slice/user-1000.slice/user@1000.service/app.slice`;
const SERVICE = `${ROOT}/user.slice/user-1000.slice/user@1000.service`;

function v2Facts(chain: CgroupDirFacts[], isRoot = false): CgroupFacts {
  return { isRoot, v2: { mountPoint: ROOT, chain }, v1: {} };
}

describe('decideCgroupHost', () => {
  test('v2: the nearest writable ancestor that hands memory and pids down', () => {
    const host = decideCgroupHost(
      v2Facts([
        dir(`${SLICE}/run-r1.scope`),
        dir(SLICE, { subtreeControl: ['memory', 'pids'] }),
        dir(SERVICE, { subtreeControl: ['cpu', 'memory', 'pids'] }),
        dir(ROOT, { writable: false, subtreeControl: ['cpu', 'io', 'memory', 'pids'] }),
      ]),
    );
    assert.deepEqual(host, { mode: 'v2', base: SLICE, controllers: ['memory', 'pids'] });
  });

  test('v2: skips ancestors without both controllers or without write access', () => {
    const host = decideCgroupHost(
      v2Facts([
        dir(`${SLICE}/run-r1.scope`),
        dir(SLICE, { subtreeControl: ['pids'] }),
        dir(SERVICE, { writable: false, subtreeControl: ['memory', 'pids'] }),
        dir(`${ROOT}/user.slice`, { subtreeControl: ['cpu', 'memory', 'pids'] }),
      ]),
    );
    assert.equal(host.mode, 'v2');
    assert.equal(host.mode === 'v2' && host.base, `${ROOT}/user.slice`);
  });

  test('v2 is preferred over v1 when both work', () => {
    const facts = v2Facts([dir(ROOT, { subtreeControl: ['memory', 'pids'] })], true);
    facts.v1 = { memory: { dir: '/m', writable: true }, pids: { dir: '/p', writable: true } };
    assert.equal(decideCgroupHost(facts).mode, 'v2');
  });

  test('hybrid host with an empty cgroup2: v1 with the optional hierarchies that are writable', () => {
    const host = decideCgroupHost({
      isRoot: true,
      v2: {
        mountPoint: '/sys/fs/cgroup/unified',
        chain: [dir('/sys/fs/cgroup/unified', { controllers: [] })],
      },
      v1: {
        memory: { dir: '/sys/fs/cgroup/memory/x', writable: true },
        pids: { dir: '/sys/fs/cgroup/pids', writable: true },
        cpuacct: { dir: '/sys/fs/cgroup/cpuacct', writable: true },
        freezer: { dir: '/sys/fs/cgroup/freezer', writable: false },
      },
    });
    assert.deepEqual(host, {
      mode: 'v1',
      controllers: {
        memory: '/sys/fs/cgroup/memory/x',
        pids: '/sys/fs/cgroup/pids',
        cpuacct: '/sys/fs/cgroup/cpuacct',
      },
    });
  });

  test('unprivileged user with nothing delegated: none, and the fix says how to delegate', () => {
    const host = decideCgroupHost(
      v2Facts([
        dir(`${SLICE}/run-r1.scope`, { writable: false }),
        dir(SLICE, { writable: false, subtreeControl: ['memory', 'pids'] }),
        dir(ROOT, { writable: false, subtreeControl: ['memory', 'pids'] }),
      ]),
    );
    assert.equal(host.mode, 'none');
    if (host.mode !== 'none') return;
    assert.match(host.reason, /no directory from .*run-r1\.scope up to \/sys\/fs\/cgroup is writable/);
    assert.match(host.reason, /cgroup v1: no memory or pids hierarchy/);
    assert.match(host.fix, /Delegate=memory pids/);
    assert.match(host.fix, /rlimits/);
  });

  test('container root that holds processes: the fix moves them into a leaf', () => {
    const host = decideCgroupHost(v2Facts([dir(ROOT, { controllers: ['memory', 'pids'] })], true));
    assert.equal(host.mode, 'none');
    assert.match(host.mode === 'none' ? host.fix : '', /mkdir \/sys\/fs\/cgroup\/init .*\+memory \+pids/);
  });

  test('v1 not writable (read-only container mount): none, naming the directories', () => {
    const host = decideCgroupHost({
      isRoot: true,
      v2: null,
      v1: {
        memory: { dir: '/sys/fs/cgroup/memory', writable: false },
        pids: { dir: '/sys/fs/cgroup/pids', writable: true },
      },
    });
    assert.equal(host.mode, 'none');
    if (host.mode !== 'none') return;
    assert.match(host.reason, /no cgroup2 filesystem is mounted/);
    assert.match(host.reason, /\/sys\/fs\/cgroup\/memory not writable/);
  });

  test('v1 with only one of the two required hierarchies: none', () => {
    const host = decideCgroupHost({ isRoot: true, v2: null, v1: { memory: { dir: '/m', writable: true } } });
    assert.equal(host.mode, 'none');
    assert.match(host.mode === 'none' ? host.reason : '', /no pids hierarchy/);
  });
});
