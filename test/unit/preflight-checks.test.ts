/**
 * The evaluators, driven by hand-built host snapshots: the hosts this machine is not (Ubuntu with AppArmor
 * restrictions, old bubblewrap, no seccomp, odd architectures) are covered here; the real host is covered by
 * test/integration/doctor.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  assertIsolationAvailable,
  type Check,
  type ExecOutcome,
  evaluatePreflight,
  type HostSnapshot,
  IsolationUnavailableError,
  REQUIRED_CHECK_IDS,
} from '../../src/isolation/preflight.js';

const OK: ExecOutcome = { exitCode: 0, signal: null, stdout: '', stderr: '' };
const failed = (stderr: string): ExecOutcome => ({ exitCode: 1, signal: null, stdout: '', stderr });

const DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n';
const UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n';
const FEDORA = 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n';
const UNIFIED_MOUNTS =
  '35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n';

/** A healthy Debian 12 host run by root; each test changes what it is about. */
function host(overrides: Partial<HostSnapshot> = {}): HostSnapshot {
  return {
    isRoot: true,
    machine: 'x86_64',
    kernelRelease: '6.1.0-18-amd64',
    osRelease: DEBIAN,
    bwrap: {
      requested: 'bwrap',
      source: 'PATH',
      path: '/usr/bin/bwrap',
      setuid: false,
      version: { ...OK, stdout: 'bubblewrap 0.8.0\n' },
      probe: OK,
      seccompProbe: OK,
    },
    procStatus: 'Name:\tnode\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n',
    seccompActionsAvail: 'kill_process kill_thread trap errno user_notif trace log allow\n',
    sysctls: {
      'user.max_user_namespaces': '63445\n',
      'kernel.unprivileged_userns_clone': null,
      'kernel.apparmor_restrict_unprivileged_userns': null,
      'kernel.unprivileged_bpf_disabled': '2\n',
      'kernel.perf_event_paranoid': '3\n',
      'kernel.dmesg_restrict': '1\n',
      'kernel.kptr_restrict': '1\n',
      'kernel.yama.ptrace_scope': '1\n',
      'fs.protected_symlinks': '1\n',
      'fs.protected_hardlinks': '1\n',
      'vm.unprivileged_userfaultfd': '0\n',
      'kernel.io_uring_disabled': '2\n',
    },
    cgroups: {
      host: { mode: 'v2', base: '/sys/fs/cgroup/system.slice', controllers: ['cpu', 'memory', 'pids'] },
      mountInfo: UNIFIED_MOUNTS,
    },
    agent: {
      path: '/opt/ironcage/native/build/ironcage-agent',
      probe: { ...OK, stdout: '{"v":1,"landlock_abi":4}\n' },
    },
    ...overrides,
  };
}

function withBwrap(snap: HostSnapshot, bwrap: Partial<HostSnapshot['bwrap']>): HostSnapshot {
  return { ...snap, bwrap: { ...snap.bwrap, ...bwrap } };
}
function withSysctls(snap: HostSnapshot, sysctls: Record<string, string | null>): HostSnapshot {
  return { ...snap, sysctls: { ...snap.sysctls, ...sysctls } };
}
function check(snap: HostSnapshot, id: string): Check {
  return evaluatePreflight(snap).checks.find((c) => c.id === id) ?? assert.fail(`no check ${id}`);
}

describe('a healthy host', () => {
  test('passes every required check and reports the facts the engine needs', () => {
    const report = evaluatePreflight(host());
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.checks.filter((c) => c.status !== 'ok').map((c) => c.id),
      [],
    );
    assert.deepEqual(report.facts, {
      bwrapPath: '/usr/bin/bwrap',
      bwrapVersion: '0.8.0',
      bwrapSetuid: false,
      userns: true,
      seccomp: true,
      cgroupMode: 'v2',
      cgroupHost: { mode: 'v2', base: '/sys/fs/cgroup/system.slice', controllers: ['cpu', 'memory', 'pids'] },
      cgroupLayout: 'unified',
      landlockAbi: 4,
      isRoot: true,
      arch: 'x86_64',
      kernelRelease: '6.1.0-18-amd64',
      distro: 'debian',
    });
    assert.doesNotThrow(() => assertIsolationAvailable(report));
  });

  test('marks exactly the documented checks as required', () => {
    const required = evaluatePreflight(host())
      .checks.filter((c) => c.required)
      .map((c) => c.id);
    assert.deepEqual(required.sort(), [...REQUIRED_CHECK_IDS].sort());
  });
});

describe('bubblewrap', () => {
  test('missing from PATH: every bwrap check fails with the install command, and ironcage refuses', () => {
    const snap = withBwrap(host(), { path: null, lookupError: 'not found in PATH=/usr/bin:/bin' });
    const report = evaluatePreflight(snap);
    assert.equal(report.ok, false);
    for (const id of ['bwrap.present', 'bwrap.version', 'bwrap.probe', 'userns']) {
      const c = report.checks.find((x) => x.id === id);
      assert.equal(c?.status, 'fail', id);
      assert.match(c?.fix ?? '', /^apt-get install bubblewrap$/, id);
    }
    assert.equal(report.facts.bwrapPath, null);
    assert.equal(report.facts.userns, false);
    assert.throws(
      () => assertIsolationAvailable(report),
      (err: unknown) =>
        err instanceof IsolationUnavailableError &&
        err.code === 'ISOLATION_UNAVAILABLE' &&
        err.message.includes('bubblewrap installed') &&
        err.message.includes('fix: apt-get install bubblewrap') &&
        err.failures.length === 4,
    );
  });

  test('the install command follows the distribution and privileges', () => {
    const missing = (snap: HostSnapshot) => check(withBwrap(snap, { path: null }), 'bwrap.present').fix;
    assert.equal(missing(host({ osRelease: FEDORA })), 'dnf install bubblewrap');
    assert.equal(missing(host({ osRelease: UBUNTU, isRoot: false })), 'sudo apt-get install bubblewrap');
    assert.equal(
      missing(host({ osRelease: null })),
      'Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap',
    );
  });

  test('a wrong IRONCAGE_BWRAP says so and how to correct it', () => {
    const snap = withBwrap(host(), {
      requested: '/nonexistent',
      source: 'IRONCAGE_BWRAP',
      path: null,
      lookupError: 'ENOENT',
    });
    const c = check(snap, 'bwrap.present');
    assert.match(c.detail, /IRONCAGE_BWRAP=\/nonexistent .*ENOENT/);
    assert.match(c.fix ?? '', /export IRONCAGE_BWRAP=\/usr\/bin\/bwrap/);
  });

  test('0.6.1 (Ubuntu 22.04) is too old for --disable-userns', () => {
    const snap = withBwrap(host({ osRelease: UBUNTU }), {
      version: { ...OK, stdout: 'bubblewrap 0.6.1\n' },
      probe: failed('bwrap: Unknown option --disable-userns\n'),
      seccompProbe: failed('bwrap: Unknown option --disable-userns\n'),
    });
    const report = evaluatePreflight(snap);
    const version = report.checks.find((c) => c.id === 'bwrap.version');
    assert.equal(version?.status, 'fail');
    assert.match(version?.detail ?? '', /0\.6\.1 is too old/);
    assert.match(version?.fix ?? '', /meson setup build/);
    // The probe fails for the same reason and points at the same fix.
    assert.equal(report.checks.find((c) => c.id === 'bwrap.probe')?.fix, version?.fix);
    assert.equal(report.facts.bwrapVersion, '0.6.1');
    assert.equal(report.ok, false);
  });

  test('0.10.0 is newer than 0.8.0', () => {
    const snap = withBwrap(host(), { version: { ...OK, stdout: 'bubblewrap 0.10.0\n' } });
    assert.equal(check(snap, 'bwrap.version').status, 'ok');
  });

  test('unreadable --version output fails', () => {
    const snap = withBwrap(host(), { version: failed('') });
    const c = check(snap, 'bwrap.version');
    assert.equal(c.status, 'fail');
    assert.match(c.fix ?? '', /reinstall bubblewrap/);
  });

  test('setuid bwrap is a warning with the chmod', () => {
    const c = check(withBwrap(host({ isRoot: false }), { setuid: true }), 'bwrap.setuid');
    assert.equal(c.status, 'warn');
    assert.equal(c.required, false);
    assert.match(c.fix ?? '', /^sudo chmod u-s \/usr\/bin\/bwrap/);
  });

  test('a probe failure that is not about namespaces gives the command to reproduce it', () => {
    const stderr = "bwrap: Can't mount proc on /newroot/proc: Operation not permitted\n";
    const snap = withBwrap(host(), { probe: failed(stderr), seccompProbe: failed(stderr) });
    const report = evaluatePreflight(snap);
    const probe = report.checks.find((c) => c.id === 'bwrap.probe');
    assert.equal(probe?.status, 'fail');
    assert.match(probe?.detail ?? '', /exit 1: bwrap: Can't mount proc/);
    assert.match(probe?.fix ?? '', /reproduce with `\/usr\/bin\/bwrap --unshare-user .* \/usr\/bin\/true`/);
    const userns = report.checks.find((c) => c.id === 'userns');
    assert.equal(userns?.status, 'fail');
    assert.match(userns?.detail ?? '', /not confirmed/);
  });

  test('a probe that times out is a failure', () => {
    const timedOut: ExecOutcome = {
      ...failed(''),
      exitCode: null,
      signal: 'SIGKILL',
      error: 'bwrap: no answer within 5000 ms',
    };
    const c = check(withBwrap(host(), { probe: timedOut, seccompProbe: timedOut }), 'bwrap.probe');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /no answer within 5000 ms/);
  });
});

describe('user namespaces', () => {
  const uidMapDenied = failed('bwrap: setting up uid map: Permission denied\n');

  test('Ubuntu 24.04 AppArmor restriction, probe denied: AppArmor profile fix on userns and probe', () => {
    const snap = withBwrap(
      withSysctls(host({ osRelease: UBUNTU, isRoot: false }), {
        'kernel.apparmor_restrict_unprivileged_userns': '1\n',
      }),
      { probe: uidMapDenied, seccompProbe: uidMapDenied },
    );
    const report = evaluatePreflight(snap);
    const userns = report.checks.find((c) => c.id === 'userns');
    assert.equal(userns?.status, 'fail');
    assert.match(userns?.detail ?? '', /apparmor_restrict_unprivileged_userns=1/);
    assert.match(userns?.fix ?? '', /profile ironcage-bwrap \/usr\/bin\/bwrap flags=\(unconfined\)/);
    assert.match(userns?.fix ?? '', /sudo apparmor_parser -r \/etc\/apparmor.d\/ironcage-bwrap/);
    assert.equal(report.checks.find((c) => c.id === 'bwrap.probe')?.fix, userns?.fix);
    assert.equal(report.facts.userns, false);
    assert.equal(report.ok, false);
  });

  test('the probe decides: restriction set but bwrap has a profile', () => {
    const snap = withSysctls(host({ osRelease: UBUNTU, isRoot: false }), {
      'kernel.apparmor_restrict_unprivileged_userns': '1\n',
    });
    assert.equal(check(snap, 'userns').status, 'ok');
  });

  test('Debian unprivileged_userns_clone=0 blocks users, not root', () => {
    const denied = failed(
      'bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces.\n',
    );
    const asUser = withBwrap(
      withSysctls(host({ isRoot: false }), { 'kernel.unprivileged_userns_clone': '0\n' }),
      {
        probe: denied,
        seccompProbe: denied,
      },
    );
    const c = check(asUser, 'userns');
    assert.equal(c.status, 'fail');
    assert.match(c.fix ?? '', /^sudo sysctl -w kernel\.unprivileged_userns_clone=1 && echo/);

    const asRoot = withSysctls(host(), { 'kernel.unprivileged_userns_clone': '0\n' });
    const r = check(asRoot, 'userns');
    assert.equal(r.status, 'ok');
    assert.match(r.detail, /unprivileged users are blocked by kernel\.unprivileged_userns_clone=0/);
  });

  test('user.max_user_namespaces=0 blocks root too', () => {
    const enospc = failed('bwrap: Creating new namespace failed: No space left on device\n');
    const snap = withBwrap(withSysctls(host(), { 'user.max_user_namespaces': '0\n' }), {
      probe: enospc,
      seccompProbe: enospc,
    });
    const c = check(snap, 'userns');
    assert.equal(c.status, 'fail');
    assert.match(c.fix ?? '', /^sysctl -w user\.max_user_namespaces=16384/);
  });

  test('a namespace error with no sysctl to blame points at the container runtime', () => {
    const eperm = failed('bwrap: Creating new namespace failed: Operation not permitted\n');
    const c = check(withBwrap(host(), { probe: eperm, seccompProbe: eperm }), 'userns');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /could not create a user namespace/);
    assert.match(c.fix ?? '', /--security-opt seccomp=unconfined/);
  });
});

describe('seccomp', () => {
  test('kernel without CONFIG_SECCOMP fails a required check', () => {
    const report = evaluatePreflight(host({ procStatus: 'Name:\tnode\n', seccompActionsAvail: null }));
    const c = report.checks.find((x) => x.id === 'seccomp');
    assert.equal(c?.status, 'fail');
    assert.match(c?.fix ?? '', /CONFIG_SECCOMP_FILTER=y/);
    assert.equal(report.facts.seccomp, false);
    assert.equal(report.ok, false);
  });

  test('no filter mode (neither Seccomp_filters nor actions_avail) fails', () => {
    const c = check(host({ procStatus: 'Seccomp:\t0\n', seccompActionsAvail: null }), 'seccomp');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /filter mode is unavailable/);
  });

  test('older kernels qualify through actions_avail alone', () => {
    assert.equal(check(host({ procStatus: 'Seccomp:\t0\n' }), 'seccomp').status, 'ok');
  });

  test('missing kill_process fails', () => {
    const c = check(host({ seccompActionsAvail: 'kill_thread trap errno trace allow\n' }), 'seccomp');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /kill_process/);
  });

  test('bwrap refusing the filter while the plain sandbox runs fails', () => {
    const snap = withBwrap(host(), {
      seccompProbe: failed('bwrap: prctl(PR_SET_SECCOMP): Invalid argument\n'),
    });
    const report = evaluatePreflight(snap);
    const c = report.checks.find((x) => x.id === 'seccomp');
    assert.equal(c?.status, 'fail');
    assert.match(c?.detail ?? '', /PR_SET_SECCOMP/);
    assert.equal(report.checks.find((x) => x.id === 'bwrap.probe')?.status, 'ok');
  });

  test('running under a container filter is noted', () => {
    const c = check(host({ procStatus: 'NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n' }), 'seccomp');
    assert.equal(c.status, 'ok');
    assert.match(c.detail, /already runs under 1 filter/);
  });
});

describe('cgroups', () => {
  const none = {
    mode: 'none' as const,
    reason: 'cgroup v2: no directory is writable',
    fix: 'mount /sys/fs/cgroup read-write',
  };

  test('nothing writable for a user on a unified host: warn with systemd delegation', () => {
    const snap = host({ isRoot: false, cgroups: { host: none, mountInfo: UNIFIED_MOUNTS } });
    const report = evaluatePreflight(snap);
    const c = report.checks.find((x) => x.id === 'cgroups');
    assert.equal(c?.status, 'warn');
    assert.equal(c?.required, false);
    assert.match(c?.detail ?? '', /rlimits/);
    assert.match(c?.fix ?? '', /systemd-run --user --scope -p Delegate=yes/);
    assert.match(c?.fix ?? '', /Delegate=memory pids cpu/);
    assert.equal(report.facts.cgroupMode, 'none');
    assert.equal(report.ok, true);
  });

  test('as root the detector’s own fix is used', () => {
    const c = check(host({ cgroups: { host: none, mountInfo: UNIFIED_MOUNTS } }), 'cgroups');
    assert.equal(c.fix, 'mount /sys/fs/cgroup read-write');
  });

  test('a user on a v1 host is told about root or cgroup v2 (Fedora: grubby)', () => {
    const legacy = '28 24 0:24 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n';
    const c = check(
      host({ isRoot: false, osRelease: FEDORA, cgroups: { host: none, mountInfo: legacy } }),
      'cgroups',
    );
    assert.match(c.detail, /v1 only/);
    assert.match(c.fix ?? '', /sudo grubby --update-kernel=ALL --args=systemd\.unified_cgroup_hierarchy=1/);
  });

  test('a detector error is a warning, not a crash', () => {
    const c = check(
      host({ cgroups: { host: { error: 'EACCES: /proc/self/cgroup' }, mountInfo: null } }),
      'cgroups',
    );
    assert.equal(c.status, 'warn');
    assert.match(c.detail, /detection failed: EACCES/);
  });

  test('v1 hierarchies are listed', () => {
    const v1 = {
      mode: 'v1' as const,
      controllers: { memory: '/sys/fs/cgroup/memory', pids: '/sys/fs/cgroup/pids' },
    };
    const report = evaluatePreflight(host({ cgroups: { host: v1, mountInfo: null } }));
    const c = report.checks.find((x) => x.id === 'cgroups');
    assert.equal(c?.status, 'ok');
    assert.match(c?.detail ?? '', /memory \/sys\/fs\/cgroup\/memory, pids \/sys\/fs\/cgroup\/pids/);
    assert.equal(report.facts.cgroupMode, 'v1');
  });
});

describe('Landlock', () => {
  const agentSays = (stdout: string): HostSnapshot =>
    host({ agent: { path: '/x/ironcage-agent', probe: { ...OK, stdout } } });

  test('no agent built: warn, not probed', () => {
    const report = evaluatePreflight(host({ agent: { path: null } }));
    const c = report.checks.find((x) => x.id === 'landlock');
    assert.equal(c?.status, 'warn');
    assert.match(c?.detail ?? '', /^not probed/);
    assert.match(c?.fix ?? '', /npm run build/);
    assert.equal(report.facts.landlockAbi, null);
  });

  test('the ABI and what it lacks', () => {
    const c = check(agentSays('{"v":1,"landlock_abi":3}\n'), 'landlock');
    assert.equal(c.status, 'ok');
    assert.match(c.detail, /^ABI 3 \(without: TCP bind\/connect/);
  });

  test('built in but not enabled at boot (EOPNOTSUPP)', () => {
    const c = check(agentSays('{"v":1,"landlock_abi":-95}\n'), 'landlock');
    assert.equal(c.status, 'warn');
    assert.match(c.fix ?? '', /lsm=landlock,/);
  });

  test('not in the kernel (ENOSYS)', () => {
    const c = check(agentSays('{"v":1,"landlock_abi":-38}\n'), 'landlock');
    assert.equal(c.status, 'warn');
    assert.match(c.fix ?? '', /kernel >= 5\.13/);
  });

  test('an agent that fails or prints nonsense is "not probed"', () => {
    const c = check(
      host({ agent: { path: '/x/ironcage-agent', probe: failed('Exec format error') } }),
      'landlock',
    );
    assert.equal(c.status, 'warn');
    assert.match(c.detail, /^not probed: .*Exec format error/);
    assert.equal(check(agentSays('hello\n'), 'landlock').status, 'warn');
  });
});

describe('hardening sysctls', () => {
  const weak: [string, string, RegExp][] = [
    ['kernel.unprivileged_bpf_disabled', '0', /kernel\.unprivileged_bpf_disabled=2/],
    ['kernel.perf_event_paranoid', '1', /kernel\.perf_event_paranoid=2/],
    ['kernel.dmesg_restrict', '0', /kernel\.dmesg_restrict=1/],
    ['kernel.kptr_restrict', '0', /kernel\.kptr_restrict=1/],
    ['kernel.yama.ptrace_scope', '0', /kernel\.yama\.ptrace_scope=1/],
    ['fs.protected_symlinks', '0', /fs\.protected_symlinks=1/],
    ['fs.protected_hardlinks', '0', /fs\.protected_hardlinks=1/],
    ['vm.unprivileged_userfaultfd', '1', /vm\.unprivileged_userfaultfd=0/],
    ['kernel.io_uring_disabled', '0', /kernel\.io_uring_disabled=2/],
  ];
  for (const [name, value, fix] of weak) {
    test(`${name}=${value} is weak`, () => {
      const c = check(withSysctls(host(), { [name]: `${value}\n` }), `sysctl.${name}`);
      assert.equal(c.status, 'warn');
      assert.equal(c.required, false);
      assert.match(c.fix ?? '', fix);
      assert.match(c.fix ?? '', /tee -a \/etc\/sysctl\.d\/60-ironcage\.conf$/);
    });
  }

  test('absent sysctls: fine where the feature is missing, warned where protection is missing', () => {
    const absent = (name: string) => check(withSysctls(host(), { [name]: null }), `sysctl.${name}`);
    assert.equal(absent('kernel.yama.ptrace_scope').status, 'ok');
    assert.equal(absent('kernel.io_uring_disabled').status, 'ok');
    assert.equal(absent('vm.unprivileged_userfaultfd').status, 'ok');
    assert.equal(absent('fs.protected_symlinks').status, 'warn');
  });

  test('a value that is not a number is reported', () => {
    const c = check(withSysctls(host(), { 'kernel.dmesg_restrict': 'x\n' }), 'sysctl.kernel.dmesg_restrict');
    assert.equal(c.status, 'warn');
    assert.match(c.detail, /unreadable value 'x'/);
  });
});

describe('host', () => {
  test('only x86_64 and aarch64 are supported', () => {
    const riscv = evaluatePreflight(host({ machine: 'riscv64' }));
    const c = riscv.checks.find((x) => x.id === 'host.arch');
    assert.equal(c?.status, 'fail');
    assert.equal(c?.required, true);
    assert.equal(riscv.ok, false);
    assert.equal(check(host({ machine: 'arm64' }), 'host.arch').status, 'ok');
    assert.equal(evaluatePreflight(host({ machine: 'aarch64' })).facts.arch, 'aarch64');
  });

  test('kernels before 5.13 are a warning (no Landlock)', () => {
    const c = check(host({ kernelRelease: '5.10.0-28-amd64' }), 'host.kernel');
    assert.equal(c.status, 'warn');
    assert.match(c.fix ?? '', /linux-image-\$\(dpkg --print-architecture\)/);
  });

  test('root and non-root explain what differs', () => {
    assert.match(check(host(), 'host.user').detail, /--cap-drop ALL/);
    assert.match(check(host({ isRoot: false }), 'host.user').detail, /rlimits/);
  });
});

describe('report invariants over arbitrary hosts', () => {
  const outcome = fc.constantFrom<ExecOutcome | undefined>(
    OK,
    failed('bwrap: setting up uid map: Permission denied'),
    failed("bwrap: Can't mount proc on /newroot/proc: Operation not permitted"),
    { ...failed(''), exitCode: null, error: 'ENOENT' },
    undefined,
  );
  const sysctl = fc.constantFrom<string | null>(null, '0\n', '1\n', '2\n', '3\n', 'junk');
  const arbitraryHost = fc
    .record({
      isRoot: fc.boolean(),
      machine: fc.constantFrom('x86_64', 'aarch64', 'arm64', 'riscv64', 's390x'),
      kernelRelease: fc.constantFrom('6.8.0-45-generic', '5.4.0-1', '4.19.0', 'weird'),
      osRelease: fc.constantFrom<string | null>(DEBIAN, UBUNTU, FEDORA, null, 'ID=arch\n'),
      path: fc.constantFrom<string | null>('/usr/bin/bwrap', null),
      setuid: fc.boolean(),
      version: fc.constantFrom<ExecOutcome | undefined>(
        { ...OK, stdout: 'bubblewrap 0.8.0' },
        { ...OK, stdout: 'bubblewrap 0.4.0' },
        failed(''),
        undefined,
      ),
      probe: outcome,
      seccompProbe: outcome,
      procStatus: fc.constantFrom<string | null>(
        null,
        '',
        'Seccomp:\t0\n',
        'Seccomp:\t2\nSeccomp_filters:\t3\n',
      ),
      actions: fc.constantFrom<string | null>(null, 'kill_process errno allow', 'trap allow'),
      sysctlValues: fc.array(sysctl, { minLength: 12, maxLength: 12 }),
      agent: fc.constantFrom<HostSnapshot['agent']>(
        { path: null },
        { path: '/a', probe: { ...OK, stdout: '{"landlock_abi":2}' } },
        { path: '/a', probe: { ...OK, stdout: '{"landlock_abi":-95}' } },
        { path: '/a', probe: failed('boom') },
      ),
      cgroupHost: fc.constantFrom<HostSnapshot['cgroups']['host']>(
        { mode: 'none', reason: 'r', fix: 'f' },
        { mode: 'v2', base: '/sys/fs/cgroup', controllers: ['memory', 'pids'] },
        { error: 'boom' },
      ),
    })
    .map((r): HostSnapshot => {
      const base = host();
      const names = Object.keys(base.sysctls);
      return host({
        isRoot: r.isRoot,
        machine: r.machine,
        kernelRelease: r.kernelRelease,
        osRelease: r.osRelease,
        bwrap: {
          requested: 'bwrap',
          source: 'PATH',
          path: r.path,
          setuid: r.setuid,
          ...(r.version ? { version: r.version } : {}),
          ...(r.probe ? { probe: r.probe } : {}),
          ...(r.seccompProbe ? { seccompProbe: r.seccompProbe } : {}),
        },
        procStatus: r.procStatus,
        seccompActionsAvail: r.actions,
        sysctls: Object.fromEntries(names.map((n, i) => [n, r.sysctlValues[i] ?? null])),
        agent: r.agent,
        cgroups: { host: r.cgroupHost, mountInfo: UNIFIED_MOUNTS },
      });
    });

  test('every non-ok check carries a fix; ok means no required failure; ids are unique and stable', () => {
    const expectedIds = evaluatePreflight(host()).checks.map((c) => c.id);
    fc.assert(
      fc.property(arbitraryHost, (snap) => {
        const report = evaluatePreflight(snap);
        for (const c of report.checks) {
          if (c.status !== 'ok') assert.ok(c.fix && c.fix.length > 0, `${c.id} has no fix`);
          if (c.status === 'fail') assert.ok(c.required, `${c.id} fails but is not required`);
        }
        assert.deepEqual(
          report.checks.map((c) => c.id),
          expectedIds,
        );
        assert.equal(report.ok, !report.checks.some((c) => c.required && c.status === 'fail'));
        if (report.ok) assertIsolationAvailable(report);
        else assert.throws(() => assertIsolationAvailable(report), IsolationUnavailableError);
        // The facts agree with the checks.
        assert.equal(report.facts.userns, report.checks.find((c) => c.id === 'userns')?.status === 'ok');
      }),
      { numRuns: 300 },
    );
  });
});
