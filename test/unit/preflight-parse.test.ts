import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  classifyCgroupLayout,
  compareVersions,
  formatVersion,
  normalizeArch,
  parseAgentProbe,
  parseBwrapVersion,
  parseKernelRelease,
  parseOsRelease,
  parseSeccompActions,
  parseSeccompStatus,
  parseSysctlInt,
} from '../../src/isolation/preflight/parse.js';

describe('parseBwrapVersion', () => {
  test('reads the version line bwrap prints', () => {
    assert.deepEqual(parseBwrapVersion('bubblewrap 0.8.0\n'), { major: 0, minor: 8, patch: 0 });
    assert.deepEqual(parseBwrapVersion('bubblewrap 0.11.0'), { major: 0, minor: 11, patch: 0 });
    assert.deepEqual(parseBwrapVersion('bubblewrap 0.6'), { major: 0, minor: 6, patch: 0 });
    assert.deepEqual(parseBwrapVersion('bubblewrap 0.4.0-1ubuntu0.1'), { major: 0, minor: 4, patch: 0 });
  });
  test('rejects anything else', () => {
    assert.equal(parseBwrapVersion(''), null);
    assert.equal(parseBwrapVersion('bwrap 0.8.0'), null);
    assert.equal(parseBwrapVersion('usage: bwrap [OPTIONS...] [--] COMMAND [ARGS...]'), null);
  });
  test('formatVersion output parses back to the same version', () => {
    fc.assert(
      fc.property(fc.nat(999), fc.nat(999), fc.nat(999), (major, minor, patch) => {
        const v = { major, minor, patch };
        assert.deepEqual(parseBwrapVersion(`bubblewrap ${formatVersion(v)}`), v);
      }),
    );
  });
});

describe('compareVersions', () => {
  test('compares numerically, not as text', () => {
    const v = (s: string) => parseKernelRelease(s) ?? assert.fail(s);
    assert.ok(compareVersions(v('0.10.0'), v('0.8.0')) > 0);
    assert.ok(compareVersions(v('0.7.9'), v('0.8.0')) < 0);
    assert.equal(compareVersions(v('0.8.0'), v('0.8')), 0);
  });
  test('is antisymmetric', () => {
    const version = fc.record({ major: fc.nat(20), minor: fc.nat(20), patch: fc.nat(20) });
    fc.assert(
      fc.property(
        version,
        version,
        (a, b) => Math.sign(compareVersions(a, b)) === -Math.sign(compareVersions(b, a)),
      ),
    );
  });
});

test('parseKernelRelease reads distribution kernel releases', () => {
  assert.deepEqual(parseKernelRelease('6.1.0-18-amd64'), { major: 6, minor: 1, patch: 0 });
  assert.deepEqual(parseKernelRelease('6.8.0-45-generic'), { major: 6, minor: 8, patch: 0 });
  assert.deepEqual(parseKernelRelease('6.10.12-200.fc40.x86_64'), { major: 6, minor: 10, patch: 12 });
  assert.deepEqual(parseKernelRelease('5.4'), { major: 5, minor: 4, patch: 0 });
  assert.equal(parseKernelRelease('linux'), null);
});

const STATUS_6_X = `Name:\tcat
Umask:\t0022
State:\tR (running)
NoNewPrivs:\t0
Seccomp:\t0
Seccomp_filters:\t0
Speculation_Store_Bypass:\tthread vulnerable
`;

describe('parseSeccompStatus', () => {
  test('kernel >= 5.9: mode and filter count', () => {
    assert.deepEqual(parseSeccompStatus(STATUS_6_X), {
      supported: true,
      mode: 0,
      filters: 0,
      noNewPrivs: false,
    });
  });
  test('inside a container: already filtered, no_new_privs set', () => {
    const text = STATUS_6_X.replace('Seccomp:\t0', 'Seccomp:\t2')
      .replace('Seccomp_filters:\t0', 'Seccomp_filters:\t1')
      .replace('NoNewPrivs:\t0', 'NoNewPrivs:\t1');
    assert.deepEqual(parseSeccompStatus(text), { supported: true, mode: 2, filters: 1, noNewPrivs: true });
  });
  test('older kernel: no Seccomp_filters line', () => {
    const text = STATUS_6_X.replace('Seccomp_filters:\t0\n', '');
    assert.deepEqual(parseSeccompStatus(text), {
      supported: true,
      mode: 0,
      filters: null,
      noNewPrivs: false,
    });
  });
  test('kernel without CONFIG_SECCOMP', () => {
    const text = STATUS_6_X.replace(/^Seccomp.*\n/gm, '');
    assert.equal(parseSeccompStatus(text).supported, false);
    assert.equal(parseSeccompStatus(text).mode, null);
  });
});

test('parseSeccompActions splits the actions_avail line', () => {
  assert.deepEqual(parseSeccompActions('kill_process kill_thread trap errno user_notif trace log allow\n'), [
    'kill_process',
    'kill_thread',
    'trap',
    'errno',
    'user_notif',
    'trace',
    'log',
    'allow',
  ]);
  assert.deepEqual(parseSeccompActions(''), []);
});

test('parseSysctlInt accepts one integer only', () => {
  assert.equal(parseSysctlInt('2\n'), 2);
  assert.equal(parseSysctlInt('-1\n'), -1);
  assert.equal(parseSysctlInt('96365'), 96365);
  assert.equal(parseSysctlInt(null), null);
  assert.equal(parseSysctlInt(''), null);
  assert.equal(parseSysctlInt('4096 87380 6291456\n'), null);
  assert.equal(parseSysctlInt('yes'), null);
});

describe('parseOsRelease', () => {
  test('Debian 12', () => {
    const os = parseOsRelease(
      'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
    );
    assert.deepEqual(os, {
      id: 'debian',
      idLike: [],
      versionId: '12',
      prettyName: 'Debian GNU/Linux 12 (bookworm)',
    });
  });
  test('Ubuntu and its derivatives list their parents in ID_LIKE', () => {
    assert.deepEqual(parseOsRelease('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n').idLike, ['debian']);
    assert.deepEqual(parseOsRelease('ID=linuxmint\nID_LIKE="ubuntu debian"\n').idLike, ['ubuntu', 'debian']);
  });
  test('Fedora, single quotes and escapes', () => {
    const os = parseOsRelease(
      'ID=fedora\nVERSION_ID=40\nPRETTY_NAME=\'Fedora Linux 40 (\\"Workstation\\")\'\n',
    );
    assert.equal(os.id, 'fedora');
    assert.equal(os.versionId, '40');
    assert.equal(os.prettyName, 'Fedora Linux 40 ("Workstation")');
  });
  test('empty file', () => {
    assert.deepEqual(parseOsRelease(''), { id: null, idLike: [], versionId: null, prettyName: null });
  });
});

// The hybrid text is this Debian VM's (trimmed); the others follow the layouts of stock Fedora 40 (unified)
// and CentOS 7 (legacy).
const HYBRID = `22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const UNIFIED = `25 1 0:23 / / rw,relatime shared:1 - btrfs /dev/nvme0n1p3 rw,subvol=/root
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,seclabel,nsdelegate,memory_recursiveprot
`;
const LEGACY = `24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:6 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,xattr,name=systemd
28 24 0:24 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
29 24 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
`;

test('classifyCgroupLayout tells unified, hybrid, legacy and none apart', () => {
  assert.equal(classifyCgroupLayout(HYBRID), 'hybrid');
  assert.equal(classifyCgroupLayout(UNIFIED), 'unified');
  assert.equal(classifyCgroupLayout(LEGACY), 'legacy');
  assert.equal(classifyCgroupLayout('22 1 0:21 / / rw,relatime - ext4 /dev/vda rw\n'), 'none');
  // systemd's named v1 hierarchy holds no controller: still a unified host for resource control.
  const namedOnly = `${UNIFIED}39 30 0:36 / /run/systemd/cgroup rw,relatime - cgroup cgroup rw,name=systemd\n`;
  assert.equal(classifyCgroupLayout(namedOnly), 'unified');
});

test('parseAgentProbe reads the landlock_abi line', () => {
  assert.deepEqual(parseAgentProbe('{"v":1,"landlock_abi":7}\n'), { landlockAbi: 7 });
  assert.deepEqual(parseAgentProbe('{"v":1,"landlock_abi":-38}\n'), { landlockAbi: -38 });
  assert.deepEqual(parseAgentProbe('warning: something\n{"landlock_abi":3}\n'), { landlockAbi: 3 });
  assert.equal(parseAgentProbe(''), null);
  assert.equal(parseAgentProbe('{"v":1}\n'), null);
  assert.equal(parseAgentProbe('{"landlock_abi":"7"}\n'), null);
  assert.equal(parseAgentProbe('{not json\n'), null);
});

test('normalizeArch maps the other spellings', () => {
  assert.equal(normalizeArch('arm64'), 'aarch64');
  assert.equal(normalizeArch('amd64'), 'x86_64');
  assert.equal(normalizeArch('x86_64'), 'x86_64');
  assert.equal(normalizeArch('riscv64'), 'riscv64');
});
