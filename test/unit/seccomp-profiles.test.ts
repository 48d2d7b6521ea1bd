import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  AUDIT_ARCH,
  type SeccompArch,
  SYSCALL_TABLES,
  seccompArches,
} from '../../src/isolation/seccomp/arch.js';
import { compileProfile } from '../../src/isolation/seccomp/compile.js';
import { AF, CLONE, ERRNO, TTY_IOCTL } from '../../src/isolation/seccomp/constants.js';
import {
  archFromNode,
  compileSeccomp,
  decodeProgram,
  listProfile,
  UnsupportedArchError,
} from '../../src/isolation/seccomp/index.js';
import { runSeccomp, type SeccompVerdict } from '../../src/isolation/seccomp/interpreter.js';
import {
  allowedSyscallCount,
  PROFILES,
  ruleCanAllow,
  type SeccompProfile,
} from '../../src/isolation/seccomp/profiles.js';

const U64 = (1n << 64n) - 1n;
const profileNames = ['strict', 'default'] as const;

/** Independent reading of a profile (straight from its data, no BPF) used as the oracle. */
function reference(
  profile: SeccompProfile,
  arch: SeccompArch,
  nr: number,
  args: readonly bigint[],
): SeccompVerdict {
  const u = nr >>> 0;
  if (arch === 'x86_64' && (u & 0x4000_0000) !== 0) return { action: 'errno', errno: profile.x32Errno };
  const name = Object.entries(SYSCALL_TABLES[arch]).find(([, n]) => n === u)?.[0];
  if (name === undefined) return { action: 'errno', errno: profile.unknownErrno };
  const rule = profile.rules[name];
  const toVerdict = (a: { kind: 'allow' } | { kind: 'errno'; errno: number }): SeccompVerdict =>
    a.kind === 'allow' ? { action: 'allow' } : { action: 'errno', errno: a.errno };
  if (rule === undefined) return toVerdict(profile.defaultAction);
  for (const c of rule.cases) {
    const hit = c.when.every((m) => {
      const raw = (args[m.arg] ?? 0n) & U64;
      const seen = m.width === 32 ? raw & 0xffff_ffffn : raw; // the kernel's view of an int argument
      return (seen & m.mask) === m.value;
    });
    if (hit) return toVerdict(c.action);
  }
  return toVerdict(rule.otherwise);
}

const programs = new Map<string, Buffer>();
function program(profile: (typeof profileNames)[number], arch: SeccompArch): Buffer {
  const key = `${profile}/${arch}`;
  let p = programs.get(key);
  if (p === undefined) {
    p = compileSeccomp(profile, arch);
    programs.set(key, p);
  }
  return p;
}

function run(profile: (typeof profileNames)[number], arch: SeccompArch, name: string, args: bigint[] = []) {
  const nr = SYSCALL_TABLES[arch][name];
  assert.notEqual(nr, undefined, `${name} on ${arch}`);
  return runSeccomp(program(profile, arch), { nr: nr as number, arch: AUDIT_ARCH[arch], args });
}
const verdict = (
  profile: (typeof profileNames)[number],
  arch: SeccompArch,
  name: string,
  args: bigint[] = [],
) => run(profile, arch, name, args).verdict;

const ALLOW = { action: 'allow' };
const EPERM = { action: 'errno', errno: ERRNO.EPERM };
const ENOSYS = { action: 'errno', errno: ERRNO.ENOSYS };
const EAFNOSUPPORT = { action: 'errno', errno: ERRNO.EAFNOSUPPORT };

/** Argument vectors that exercise every case of a rule: zeros, each match's value, and noise around them. */
function probeArgs(profile: SeccompProfile, name: string): bigint[][] {
  const rule = profile.rules[name];
  const out: bigint[][] = [[0n, 0n, 0n, 0n, 0n, 0n]];
  for (const c of rule?.cases ?? []) {
    const args = [0n, 0n, 0n, 0n, 0n, 0n];
    for (const m of c.when) args[m.arg] = (args[m.arg] as bigint) | m.value;
    out.push(args);
    for (const noise of [0xdead_beef_0000_0000n, 0xffff_ffffn, 1n, U64]) {
      out.push(args.map((a) => a ^ noise));
      out.push(args.map((a, i) => (i === c.when[0]?.arg ? a | (noise & ~0xffff_ffffn) : a)));
    }
  }
  return out;
}

describe('every rule of both profiles, through the BPF interpreter', () => {
  for (const profileName of profileNames) {
    for (const arch of seccompArches) {
      test(`${profileName}/${arch}: every syscall number in the table matches the profile data`, () => {
        const profile = PROFILES[profileName];
        for (const [name, nr] of Object.entries(SYSCALL_TABLES[arch])) {
          for (const args of probeArgs(profile, name)) {
            const got = runSeccomp(program(profileName, arch), { nr, arch: AUDIT_ARCH[arch], args });
            assert.deepEqual(got.verdict, reference(profile, arch, nr, args), `${name}(${args.join(', ')})`);
            const rule = profile.rules[name];
            // Syscalls without argument rules never look at arguments, so the kernel can cache their action.
            if (rule === undefined || rule.cases.length === 0) assert.equal(got.readArguments, false, name);
          }
        }
      });
    }
  }
});

describe('decisions spelled out (not derived from the profile data)', () => {
  for (const arch of seccompArches) {
    for (const profile of profileNames) {
      test(`${profile}/${arch}: denied in both profiles`, () => {
        const denied = [
          'io_uring_setup',
          'io_uring_enter',
          'io_uring_register',
          'userfaultfd',
          'bpf',
          'perf_event_open',
          'keyctl',
          'add_key',
          'request_key',
          'fsopen',
          'fsconfig',
          'fsmount',
          'fspick',
          'move_mount',
          'open_tree',
          'mount_setattr',
          'mount',
          'umount2',
          'pivot_root',
          'chroot',
          'setns',
          'kexec_load',
          'kexec_file_load',
          'init_module',
          'finit_module',
          'delete_module',
          'process_vm_readv',
          'process_vm_writev',
          'ptrace',
          'open_by_handle_at',
          'name_to_handle_at',
          'acct',
          'swapon',
          'swapoff',
          'reboot',
          'settimeofday',
          'clock_settime',
          'adjtimex',
          'clock_adjtime',
          'quotactl',
          'lookup_dcookie',
          'vhangup',
          'syslog',
          'pidfd_getfd',
          'kcmp',
        ];
        if (arch === 'x86_64') denied.push('iopl', 'ioperm', 'modify_ldt', 'uselib', '_sysctl');
        for (const name of denied) assert.deepEqual(verdict(profile, arch, name), EPERM, name);
        assert.deepEqual(
          verdict(profile, arch, 'clone3'),
          ENOSYS,
          'clone3 → ENOSYS so glibc falls back to clone',
        );
      });

      test(`${profile}/${arch}: personality only PER_LINUX and the query`, () => {
        assert.deepEqual(verdict(profile, arch, 'personality', [0n]), ALLOW);
        assert.deepEqual(verdict(profile, arch, 'personality', [0xffff_ffffn]), ALLOW);
        assert.deepEqual(verdict(profile, arch, 'personality', [0x0040000n]), EPERM, 'ADDR_NO_RANDOMIZE');
        assert.deepEqual(verdict(profile, arch, 'personality', [0x0400000n]), EPERM, 'READ_IMPLIES_EXEC');
        // The kernel reads an unsigned int: high bits do not turn a query into something else, or back.
        assert.deepEqual(verdict(profile, arch, 'personality', [0x1_0000_0000n]), ALLOW);
        assert.deepEqual(verdict(profile, arch, 'personality', [0xffff_ffff_0004_0000n]), EPERM);
      });

      test(`${profile}/${arch}: ioctl TIOCSTI/TIOCLINUX/TIOCCONS/TIOCSETD refused, even with high bits set`, () => {
        for (const cmd of Object.values(TTY_IOCTL)) {
          assert.deepEqual(verdict(profile, arch, 'ioctl', [0n, BigInt(cmd)]), EPERM);
          assert.deepEqual(verdict(profile, arch, 'ioctl', [0n, (1n << 32n) | BigInt(cmd)]), EPERM);
          assert.deepEqual(verdict(profile, arch, 'ioctl', [0n, (0xffff_ffffn << 32n) | BigInt(cmd)]), EPERM);
        }
        assert.deepEqual(verdict(profile, arch, 'ioctl', [1n, 0x5401n]), ALLOW, 'TCGETS (isatty)');
        assert.deepEqual(verdict(profile, arch, 'ioctl', [1n, 0x5413n]), ALLOW, 'TIOCGWINSZ');
      });
    }

    test(`default/${arch}: socket families`, () => {
      for (const family of [AF.UNIX, AF.INET, AF.INET6]) {
        assert.deepEqual(
          verdict('default', arch, 'socket', [BigInt(family), 1n, 0n]),
          ALLOW,
          `family ${family}`,
        );
        // high bits of an int argument are ignored by the kernel, so they must not change our answer either
        assert.deepEqual(verdict('default', arch, 'socket', [(7n << 32n) | BigInt(family), 1n, 0n]), ALLOW);
      }
      assert.deepEqual(
        verdict('default', arch, 'socket', [BigInt(AF.NETLINK), 3n, 0n]),
        ALLOW,
        'NETLINK_ROUTE',
      );
      assert.deepEqual(
        verdict('default', arch, 'socket', [BigInt(AF.NETLINK), 3n, 9n]),
        EAFNOSUPPORT,
        'NETLINK_AUDIT',
      );
      assert.deepEqual(
        verdict('default', arch, 'socket', [BigInt(AF.NETLINK), 3n, 15n]),
        EAFNOSUPPORT,
        'uevent',
      );
      for (const family of [AF.PACKET, AF.ALG, AF.VSOCK, 4 /* IPX */, 29 /* CAN */, 44 /* XDP */]) {
        assert.deepEqual(
          verdict('default', arch, 'socket', [BigInt(family), 1n, 0n]),
          EAFNOSUPPORT,
          `${family}`,
        );
        // the bypass a 64-bit compare would allow: family AF_VSOCK with junk in the high word
        assert.deepEqual(
          verdict('default', arch, 'socket', [(1n << 32n) | BigInt(family), 1n, 0n]),
          EAFNOSUPPORT,
        );
      }
      assert.deepEqual(verdict('default', arch, 'socketpair', [BigInt(AF.UNIX), 1n, 0n, 0n]), ALLOW);
      assert.deepEqual(verdict('default', arch, 'socketpair', [BigInt(AF.INET), 1n, 0n, 0n]), EAFNOSUPPORT);
    });

    test(`default/${arch}: clone and unshare refuse every namespace flag, clone refuses high flag bits`, () => {
      const fork = 0x0120_0011n; // CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, as glibc fork()
      const thread = 0x003d_0f00n; // pthread_create's flags
      assert.deepEqual(verdict('default', arch, 'clone', [fork]), ALLOW);
      assert.deepEqual(verdict('default', arch, 'clone', [thread]), ALLOW);
      assert.deepEqual(verdict('default', arch, 'clone', [0x4111n]), ALLOW, 'vfork-style posix_spawn');
      for (const flag of ['NEWNS', 'NEWCGROUP', 'NEWUTS', 'NEWIPC', 'NEWUSER', 'NEWPID', 'NEWNET'] as const) {
        assert.deepEqual(verdict('default', arch, 'clone', [fork | BigInt(CLONE[flag])]), EPERM, flag);
        assert.deepEqual(verdict('default', arch, 'unshare', [BigInt(CLONE[flag])]), EPERM, flag);
      }
      assert.deepEqual(verdict('default', arch, 'unshare', [BigInt(CLONE.NEWTIME)]), EPERM, 'NEWTIME');
      assert.deepEqual(verdict('default', arch, 'unshare', [BigInt(CLONE.FILES | CLONE.FS)]), ALLOW);
      assert.deepEqual(verdict('default', arch, 'clone', [(1n << 32n) | fork]), EPERM, 'high word');
      assert.deepEqual(verdict('default', arch, 'clone', [(1n << 63n) | fork]), EPERM, 'top bit');
    });

    test(`strict/${arch}: threads yes, processes and sockets no, files read-only`, () => {
      assert.deepEqual(verdict('strict', arch, 'clone', [0x003d_0f00n]), ALLOW, 'pthread_create');
      assert.deepEqual(verdict('strict', arch, 'clone', [0x0120_0011n]), EPERM, 'fork');
      assert.deepEqual(verdict('strict', arch, 'clone', [0x003d_0f00n | BigInt(CLONE.NEWUSER)]), EPERM);
      assert.deepEqual(verdict('strict', arch, 'clone', [(1n << 40n) | 0x003d_0f00n]), EPERM);
      for (const name of ['socket', 'socketpair', 'connect', 'bind', 'unshare', 'kill', 'setsid', 'prctl']) {
        assert.deepEqual(verdict('strict', arch, name), EPERM, name);
      }
      if (arch === 'x86_64') {
        assert.deepEqual(verdict('strict', arch, 'fork'), EPERM);
        assert.deepEqual(verdict('strict', arch, 'vfork'), EPERM);
        assert.deepEqual(verdict('strict', arch, 'open', [0n, 0n]), ALLOW);
        assert.deepEqual(verdict('strict', arch, 'open', [0n, 0x41n]), EPERM, 'O_WRONLY|O_CREAT');
      }
      const O_RDONLY_CLOEXEC = 0x80000n;
      assert.deepEqual(verdict('strict', arch, 'openat', [0n, 0n, O_RDONLY_CLOEXEC]), ALLOW);
      for (const flags of [1n, 2n, 0x40n, 0x200n]) {
        assert.deepEqual(verdict('strict', arch, 'openat', [0n, 0n, flags]), EPERM, `flags ${flags}`);
      }
      for (const name of ['read', 'write', 'mmap', 'futex', 'exit_group', 'execve', 'getrandom', 'wait4']) {
        assert.deepEqual(verdict('strict', arch, name), ALLOW, name);
      }
    });
  }
});

describe('program structure', () => {
  for (const profileName of profileNames) {
    for (const arch of seccompArches) {
      test(`${profileName}/${arch}: arch check first, then nr, within limits`, () => {
        const insns = decodeProgram(program(profileName, arch));
        assert.deepEqual(insns[0], { code: 0x20, jt: 0, jf: 0, k: 4 }, 'A = seccomp_data.arch');
        assert.equal(insns[1]?.k, AUDIT_ARCH[arch]);
        // A long jump to the kill action may sit between the arch test and the nr load (a `ja` trampoline).
        const afterArch = insns.slice(2).find((i) => i.code !== 0x05);
        assert.deepEqual(afterArch, { code: 0x20, jt: 0, jf: 0, k: 0 }, 'A = seccomp_data.nr');
        assert.ok(insns.length < 1024, `${insns.length} instructions`);
        const { argumentChecked } = compileProfile(PROFILES[profileName], arch);
        for (const name of ['read', 'write', 'futex', 'mmap', 'close', 'openat']) {
          assert.ok(profileName === 'strict' || !argumentChecked.includes(name), `${name} is argument-free`);
        }
      });
    }
  }

  test('hot syscalls resolve in a handful of instructions (binary search, not a linear list)', () => {
    for (const name of ['read', 'write', 'futex', 'mmap', 'epoll_wait', 'close']) {
      assert.ok(run('default', 'x86_64', name).steps <= 16, name);
    }
  });

  test('compileSeccomp memoises per (profile, arch) and hands out independent copies', () => {
    const a = compileSeccomp('default', 'x86_64');
    const b = compileSeccomp('default', 'x86_64');
    assert.deepEqual(a, b);
    a.fill(0);
    assert.notDeepEqual(compileSeccomp('default', 'x86_64'), a);
    assert.notDeepEqual(compileSeccomp('default', 'aarch64'), compileSeccomp('default', 'x86_64'));
    assert.deepEqual(compileSeccomp('strict'), compileSeccomp('strict', archFromNode()));
  });

  test('host arch mapping and a named error for others', () => {
    assert.equal(archFromNode('x64'), 'x86_64');
    assert.equal(archFromNode('arm64'), 'aarch64');
    assert.throws(
      () => archFromNode('ia32'),
      (err: unknown) => err instanceof UnsupportedArchError && err.code === 'SECCOMP_UNSUPPORTED_ARCH',
    );
  });
});

describe('property tests', () => {
  const archArb = fc.constantFrom(...seccompArches);
  const profileArb = fc.constantFrom(...profileNames);
  const argsArb = fc.array(fc.bigInt({ min: 0n, max: U64 }), { minLength: 6, maxLength: 6 });

  test('a number the profile never allows is never allowed, whatever the arguments', () => {
    fc.assert(
      fc.property(
        profileArb,
        archArb,
        fc.integer({ min: 0, max: 0xffff_ffff }),
        argsArb,
        (p, arch, raw, args) => {
          const profile = PROFILES[p];
          const allowedNumbers = new Set(
            Object.entries(profile.rules)
              .filter(([name, rule]) => name in SYSCALL_TABLES[arch] && ruleCanAllow(rule))
              .map(([name]) => SYSCALL_TABLES[arch][name]),
          );
          // bias towards the syscall range, where the interesting numbers are
          const nr = raw % 3 === 0 ? raw : raw % 512;
          if (allowedNumbers.has(nr)) return;
          const v = runSeccomp(program(p, arch), { nr, arch: AUDIT_ARCH[arch], args }).verdict;
          assert.notEqual(v.action, 'allow', `nr ${nr}`);
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('random calls: the BPF agrees with the profile data', () => {
    fc.assert(
      fc.property(profileArb, archArb, fc.integer({ min: 0, max: 600 }), argsArb, (p, arch, nr, args) => {
        const got = runSeccomp(program(p, arch), { nr, arch: AUDIT_ARCH[arch], args }).verdict;
        assert.deepEqual(got, reference(PROFILES[p], arch, nr, args));
      }),
      { numRuns: 3000 },
    );
  });

  test('random high bits in 32-bit (int) arguments never change the decision', () => {
    const int32Only = (p: (typeof profileNames)[number], arch: SeccompArch) =>
      Object.entries(PROFILES[p].rules)
        .filter(([name, r]) => name in SYSCALL_TABLES[arch] && r.cases.length > 0)
        .filter(([, r]) => r.cases.every((c) => c.when.every((m) => m.width === 32)))
        .map(([name]) => name);
    fc.assert(
      fc.property(
        profileArb,
        archArb,
        fc.nat(),
        fc.array(fc.nat({ max: 0xffff_ffff }), { minLength: 6, maxLength: 6 }),
        fc.array(fc.bigInt({ min: 1n, max: 0xffff_ffffn }), { minLength: 6, maxLength: 6 }),
        fc.boolean(),
        (p, arch, pick, lows, highs, useCaseValues) => {
          const names = int32Only(p, arch);
          const name = names[pick % names.length] as string;
          const rule = PROFILES[p].rules[name];
          const args = lows.map(BigInt);
          if (useCaseValues && rule) {
            const c = rule.cases[pick % rule.cases.length];
            for (const m of c?.when ?? []) args[m.arg] = m.value;
          }
          const noisy = args.map((a, i) => a | ((highs[i] as bigint) << 32n));
          assert.deepEqual(verdict(p, arch, name, noisy), verdict(p, arch, name, args), name);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('any other architecture is killed', () => {
    fc.assert(
      fc.property(
        profileArb,
        archArb,
        fc.nat({ max: 0xffff_ffff }),
        fc.nat({ max: 1000 }),
        (p, arch, other, nr) => {
          if (other === AUDIT_ARCH[arch]) return;
          const v = runSeccomp(program(p, arch), { nr, arch: other }).verdict;
          assert.deepEqual(v, { action: 'kill_process' });
        },
      ),
      { numRuns: 2000 },
    );
    // i386 (int 0x80 on x86_64) and arm32 compat calls in particular
    assert.deepEqual(runSeccomp(program('default', 'x86_64'), { nr: 11, arch: 0x4000_0003 }).verdict, {
      action: 'kill_process',
    });
    assert.deepEqual(runSeccomp(program('default', 'aarch64'), { nr: 11, arch: 0x4000_0028 }).verdict, {
      action: 'kill_process',
    });
  });

  test('x32 syscall numbers are refused with ENOSYS on x86_64', () => {
    fc.assert(
      fc.property(profileArb, fc.nat({ max: 0x3fff_ffff }), argsArb, (p, low, args) => {
        const nr = (0x4000_0000 | (low % 1024 === 0 ? low : low % 600)) >>> 0;
        const v = runSeccomp(program(p, 'x86_64'), { nr, arch: AUDIT_ARCH.x86_64, args }).verdict;
        assert.deepEqual(v, ENOSYS);
      }),
      { numRuns: 2000 },
    );
  });

  test('numbers unknown to the table get ENOSYS (newer-kernel fallback), known ones without a rule EPERM', () => {
    for (const p of profileNames) {
      for (const arch of seccompArches) {
        assert.deepEqual(runSeccomp(program(p, arch), { nr: 999, arch: AUDIT_ARCH[arch] }).verdict, ENOSYS);
        assert.deepEqual(
          runSeccomp(program(p, arch), { nr: 0x3fff_ffff, arch: AUDIT_ARCH[arch] }).verdict,
          ENOSYS,
        );
        assert.deepEqual(verdict(p, arch, 'lsm_list_modules'), EPERM);
      }
    }
    // aarch64 has no x32 bit: a negative number is simply unknown
    assert.deepEqual(
      runSeccomp(program('default', 'aarch64'), { nr: -1, arch: AUDIT_ARCH.aarch64 }).verdict,
      ENOSYS,
    );
  });
});

describe('profile data and listing', () => {
  test('every profile syscall name exists on at least one arch; allowlist sizes are as documented', () => {
    for (const p of profileNames) {
      for (const name of Object.keys(PROFILES[p].rules)) {
        assert.ok(
          seccompArches.some((a) => name in SYSCALL_TABLES[a]),
          name,
        );
      }
    }
    for (const arch of seccompArches) {
      const strict = allowedSyscallCount('strict', arch);
      assert.ok(strict >= 60 && strict <= 80, `strict/${arch} allows ${strict}`);
      assert.ok(allowedSyscallCount('default', arch) > strict + 100);
    }
  });

  test('default: permission changes are allowed, set-user-ID and set-group-ID bits are not', () => {
    for (const arch of ['x86_64', 'aarch64'] as const) {
      const [name, modeArg] = arch === 'x86_64' ? (['chmod', 1] as const) : (['fchmodat', 2] as const);
      const args = (mode: bigint) => [0n, 0n, 0n].map((a, i) => (i === modeArg ? mode : a));
      assert.deepEqual(verdict('default', arch, name, args(0o755n)), ALLOW, `${arch} ${name} 0755`);
      assert.deepEqual(verdict('default', arch, name, args(0o1777n)), ALLOW, `${arch} ${name} sticky`);
      for (const mode of [0o4755n, 0o2755n, 0o6755n, (1n << 32n) | 0o4755n]) {
        assert.deepEqual(
          verdict('default', arch, name, args(mode)),
          EPERM,
          `${arch} ${name} ${mode.toString(8)}`,
        );
      }
      assert.deepEqual(verdict('default', arch, 'fchmod', [3n, 0o4700n]), EPERM, `${arch} fchmod`);
    }
  });

  test('listProfile gives allowed, conditional and denied syscalls with reasons', () => {
    const listing = listProfile('default', 'x86_64');
    assert.ok(listing.allowed.includes('read'));
    assert.ok(!listing.allowed.includes('ptrace'));
    assert.deepEqual(
      listing.conditional.map((c) => c.syscall),
      [
        'chmod',
        'clone',
        'fchmod',
        'fchmodat',
        'fchmodat2',
        'ioctl',
        'personality',
        'socket',
        'socketpair',
        'unshare',
      ],
    );
    const ptrace = listing.denied.find((d) => d.syscall === 'ptrace');
    assert.equal(ptrace?.errno, ERRNO.EPERM);
    assert.match(ptrace?.reason ?? '', /agent/);
    for (const d of listing.denied) assert.ok(d.reason.length > 10, d.syscall);
    for (const c of listing.conditional) assert.ok(c.rule.length > 10, c.syscall);
    assert.equal(
      listing.allowed.length + listing.conditional.length,
      allowedSyscallCount('default', 'x86_64'),
    );
    assert.ok(!listProfile('default', 'aarch64').allowed.includes('open'), 'aarch64 has no open(2)');
  });
});
