import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CgroupError } from '../../src/isolation/cgroups/errors.js';
import {
  cpuWeightToShares,
  planV1Writes,
  planV2Writes,
  validateLimits,
} from '../../src/isolation/cgroups/limits.js';
import {
  parseControllerList,
  parseFlatKeyed,
  parseMountInfo,
  parsePidList,
  parseProcSelfCgroup,
  parseSingleNumber,
} from '../../src/isolation/cgroups/parse.js';
import { parseSandboxCgroupName } from '../../src/isolation/cgroups/sandbox-cgroup.js';

describe('parseProcSelfCgroup', () => {
  test('hybrid host: v1 lines plus the empty v2 line', () => {
    const entries = parseProcSelfCgroup(
      '9:name=systemd:/\n4:memory:/process_api/ef78\n2:cpu,cpuacct:/user.slice\n0::/\n',
    );
    assert.deepEqual(entries, [
      { hierarchyId: 9, controllers: ['name=systemd'], path: '/' },
      { hierarchyId: 4, controllers: ['memory'], path: '/process_api/ef78' },
      { hierarchyId: 2, controllers: ['cpu', 'cpuacct'], path: '/user.slice' },
      { hierarchyId: 0, controllers: [], path: '/' },
    ]);
  });

  test('a path may contain colons; garbage lines are skipped', () => {
    const entries = parseProcSelfCgroup('junk\n\nx:memory:/a\n0::/weird:name/with:colons\n');
    assert.deepEqual(entries, [{ hierarchyId: 0, controllers: [], path: '/weird:name/with:colons' }]);
  });
});

describe('parseMountInfo', () => {
  test('reads cgroup and cgroup2 lines with optional fields', () => {
    const text = [
      '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
      '35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 master:2 - cgroup cgroup rw,cpu,cpuacct',
      '40 30 0:37 /docker/abc /sys/fs/cgroup rw,relatime shared:1 - cgroup2 cgroup2 rw,nsdelegate',
      'short line',
    ].join('\n');
    const mounts = parseMountInfo(text);
    assert.equal(mounts.length, 3);
    assert.deepEqual(mounts[1], {
      root: '/',
      mountPoint: '/sys/fs/cgroup/cpu,cpuacct',
      mountOptions: ['rw', 'nosuid'],
      fsType: 'cgroup',
      superOptions: ['rw', 'cpu', 'cpuacct'],
    });
    assert.equal(mounts[2]?.root, '/docker/abc');
    assert.equal(mounts[2]?.fsType, 'cgroup2');
  });

  test('mount points with escaped characters round-trip (property)', () => {
    const escapeMountField = (s: string) =>
      s.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
    const pathChar = fc.constantFrom('a', 'z', '0', '/', '-', ' ', '\t', '\n', '\\', 'é');
    fc.assert(
      fc.property(fc.array(pathChar, { minLength: 1, maxLength: 30 }), (chars) => {
        const mountPoint = `/${chars.join('')}`;
        const line = `40 30 0:37 / ${escapeMountField(mountPoint)} rw shared:1 - cgroup2 cgroup2 rw`;
        const [mount] = parseMountInfo(line);
        assert.equal(mount?.mountPoint, mountPoint);
        assert.equal(mount?.fsType, 'cgroup2');
      }),
    );
  });
});

describe('control file parsers', () => {
  test('flat keyed files (cpu.stat, memory.oom_control, memory.events)', () => {
    const cpuStat = parseFlatKeyed('usage_usec 250123\nuser_usec 200000\nsystem_usec 50123\n');
    assert.equal(cpuStat.get('usage_usec'), 250123);
    const oom = parseFlatKeyed('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n');
    assert.equal(oom.get('oom_kill'), 3);
    const events = parseFlatKeyed('low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n');
    assert.equal(events.get('oom_kill'), 1);
    assert.equal(events.get('max'), 12);
    const odd = parseFlatKeyed('a b c\nnum -1\nok 5\n');
    assert.deepEqual([...odd], [['ok', 5]]);
  });

  test('single numbers, pid lists, controller lists', () => {
    assert.equal(parseSingleNumber('67108864\n'), 67108864);
    assert.equal(parseSingleNumber('max\n'), null);
    assert.equal(parseSingleNumber(''), null);
    assert.deepEqual(parsePidList('12\n345\n\n'), [12, 345]);
    assert.deepEqual(parsePidList(''), []);
    assert.deepEqual(parseControllerList('cpuset cpu io memory pids\n'), [
      'cpuset',
      'cpu',
      'io',
      'memory',
      'pids',
    ]);
    assert.deepEqual(parseControllerList('\n'), []);
  });

  test('sandbox cgroup names', () => {
    assert.deepEqual(parseSandboxCgroupName('1234-run.7_a'), { ownerPid: 1234, id: 'run.7_a' });
    assert.deepEqual(parseSandboxCgroupName('9-1-2'), { ownerPid: 9, id: '1-2' });
    for (const bad of ['cgroup.procs', 'memory.max', '-x', '12-', '0-x', 'abc-1', '12-.hidden', '12-a/b']) {
      assert.equal(parseSandboxCgroupName(bad), null, bad);
    }
  });
});

describe('limit plans', () => {
  const limits = { memoryBytes: 64 * 1024 * 1024, pids: 32 };

  test('v2 writes memory.max, memory.swap.max=0 and pids.max; cpu.weight only when asked and available', () => {
    assert.deepEqual(planV2Writes(limits, true), [
      { file: 'memory.max', value: '67108864', optional: false },
      { file: 'memory.swap.max', value: '0', optional: true },
      { file: 'pids.max', value: '32', optional: false },
    ]);
    const weighted = planV2Writes({ ...limits, cpuWeight: 50 }, true);
    assert.deepEqual(weighted.at(-1), { file: 'cpu.weight', value: '50', optional: false });
    assert.equal(
      planV2Writes({ ...limits, cpuWeight: 50 }, false).some((w) => w.file === 'cpu.weight'),
      false,
    );
  });

  test('v1 writes the memory limit before memsw (the kernel rejects memsw below it)', () => {
    assert.deepEqual(
      planV1Writes('memory', limits).map((w) => w.file),
      ['memory.limit_in_bytes', 'memory.memsw.limit_in_bytes'],
    );
    assert.ok(planV1Writes('memory', limits).every((w) => w.value === '67108864'));
    assert.deepEqual(planV1Writes('pids', limits), [{ file: 'pids.max', value: '32', optional: false }]);
    assert.deepEqual(planV1Writes('cpu', limits), []);
    assert.deepEqual(planV1Writes('cpu', { ...limits, cpuWeight: 100 }), [
      { file: 'cpu.shares', value: '1024', optional: false },
    ]);
    assert.deepEqual(planV1Writes('freezer', limits), []);
  });

  test('cpu weight maps onto shares monotonically and within the kernel range', () => {
    assert.equal(cpuWeightToShares(100), 1024);
    assert.equal(cpuWeightToShares(1), 10);
    assert.equal(cpuWeightToShares(10_000), 102_400);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9_999 }), (w) => {
        const shares = cpuWeightToShares(w);
        assert.ok(shares >= 2 && shares <= 262_144);
        assert.ok(cpuWeightToShares(w + 1) >= shares);
      }),
    );
  });

  test('invalid limits are refused with INVALID_ARGUMENT', () => {
    for (const bad of [
      { memoryBytes: 0, pids: 1 },
      { memoryBytes: 1.5, pids: 1 },
      { memoryBytes: 1024, pids: 0 },
      { memoryBytes: 1024, pids: 1, cpuWeight: 0 },
      { memoryBytes: 1024, pids: 1, cpuWeight: 10_001 },
    ]) {
      assert.throws(
        () => validateLimits(bad),
        (err: unknown) => err instanceof CgroupError && err.code === 'INVALID_ARGUMENT',
        JSON.stringify(bad),
      );
    }
    validateLimits({ memoryBytes: 1024, pids: 1, cpuWeight: 100 });
  });
});
