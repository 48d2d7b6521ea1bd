/**
 * The seccomp profiles as data: per syscall, allow / errno / argument-conditioned rules, each denial with its
 * reason. compile.ts turns a profile into BPF and oci.ts into OCI JSON, so both always say the same thing.
 */
import type { SeccompProfileName } from '../../policy/schema.js';
import { type SeccompArch, SYSCALL_TABLES, seccompArches } from './arch.js';
import {
  AF,
  CLONE,
  CLONE_NEW_NAMESPACE_FLAGS,
  ERRNO,
  NETLINK_ROUTE,
  PERSONALITY,
  TTY_IOCTL,
} from './constants.js';

export type RuleAction = { kind: 'allow' } | { kind: 'errno'; errno: number };
export type ArgIndex = 0 | 1 | 2 | 3 | 4 | 5;

/**
 * `(arg & mask) == value`. width 32 marks an argument the kernel truncates to 32 bits (int / unsigned int):
 * only the low word is compared, so setting high bits can neither dodge nor trigger the rule. width 64 marks
 * an unsigned long, compared on both words.
 */
export interface ArgMatch {
  arg: ArgIndex;
  width: 32 | 64;
  mask: bigint;
  value: bigint;
}

/** All matches must hold (AND). */
export interface ArgCase {
  when: readonly ArgMatch[];
  action: RuleAction;
}

export interface SyscallRule {
  /** Tried in order; the first case whose matches all hold decides. None → `otherwise`. */
  cases: readonly ArgCase[];
  otherwise: RuleAction;
  /** Why the syscall is refused or conditioned (for docs and messages); plain allows need none. */
  reason?: string;
}

export interface SeccompProfile {
  name: SeccompProfileName;
  summary: string;
  /** Known syscalls without a rule. */
  defaultAction: RuleAction;
  /** Numbers missing from the syscall table: ENOSYS, so libc and runtimes fall back as on an older kernel. */
  unknownErrno: number;
  /** x86_64 only: x32-ABI numbers (bit 30 set). */
  x32Errno: number;
  rules: Readonly<Record<string, SyscallRule>>;
}

export class ProfileDefinitionError extends Error {
  readonly code = 'SECCOMP_PROFILE_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'ProfileDefinitionError';
  }
}

export const ALLOW: RuleAction = Object.freeze({ kind: 'allow' });
export const errno = (n: number): RuleAction => ({ kind: 'errno', errno: n });
const EPERM = errno(ERRNO.EPERM);

const LOW32 = 0xffff_ffffn;
const HIGH32 = LOW32 << 32n;

/** The low 32 bits of `arg` equal `value` (an int argument). */
export function int32Equals(arg: ArgIndex, value: number): ArgMatch {
  return { arg, width: 32, mask: LOW32, value: BigInt(value >>> 0) };
}

/** `(arg & mask) == value` on a 32- or 64-bit argument. */
export function masked(arg: ArgIndex, width: 32 | 64, mask: bigint, value = 0n): ArgMatch {
  return { arg, width, mask, value };
}

// ---------------------------------------------------------------------------------------------------------
// Denials shared by both profiles. Listing them (rather than leaving them to the default action) documents
// the decision and keeps them refused even if someone later widens an allowlist by a group.
// ---------------------------------------------------------------------------------------------------------

const DENIALS: ReadonlyArray<{ names: string[]; reason: string; errno?: number }> = [
  {
    names: ['io_uring_setup', 'io_uring_enter', 'io_uring_register'],
    reason:
      'io_uring runs file and socket operations from kernel workers that seccomp never sees, and has been a ' +
      'steady source of kernel privilege-escalation bugs; libuv/node, tokio and liburing fall back to threads',
  },
  {
    names: ['userfaultfd'],
    reason:
      'lets a process stall kernel copies from user memory at will, the standard trick to win kernel races',
  },
  {
    names: ['bpf'],
    reason: 'eBPF programs and maps are a large kernel attack surface and can read kernel memory',
  },
  {
    names: ['perf_event_open'],
    reason: 'performance counters leak timing and kernel addresses and have a long history of kernel bugs',
  },
  {
    names: ['add_key', 'keyctl', 'request_key'],
    reason: 'kernel keyrings are not namespaced: a sandbox could read or plant keys of the host user',
  },
  {
    names: [
      'mount',
      'umount2',
      'pivot_root',
      'chroot',
      'fsopen',
      'fsconfig',
      'fsmount',
      'fspick',
      'move_mount',
      'open_tree',
      'open_tree_attr',
      'mount_setattr',
    ],
    reason: 'the mount table is fixed by the sandbox; changing it could uncover hidden host paths',
  },
  {
    names: ['setns'],
    reason: 'entering another namespace (e.g. through an inherited /proc fd) would leave the sandbox',
  },
  {
    names: ['kexec_load', 'kexec_file_load', 'reboot'],
    reason: 'replaces or restarts the running kernel',
  },
  {
    names: ['init_module', 'finit_module', 'delete_module'],
    reason: 'loading or unloading kernel modules is kernel code execution',
  },
  {
    names: ['ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'process_madvise'],
    reason:
      'reads or changes another process: every process in the sandbox shares one uid, so the command could ' +
      'tamper with the in-sandbox agent or each other; debuggers (gdb, strace) do not work inside',
  },
  {
    names: ['open_by_handle_at', 'name_to_handle_at'],
    reason: 'file handles bypass path lookup and can reach files outside the bound directories',
  },
  {
    names: ['acct'],
    reason: 'process accounting writes a host-chosen file for every exit',
  },
  { names: ['swapon', 'swapoff'], reason: 'changes host swap devices' },
  {
    names: ['settimeofday', 'clock_settime', 'adjtimex', 'clock_adjtime'],
    reason: 'the clock is not namespaced: setting it would change the host time',
  },
  { names: ['quotactl', 'quotactl_fd'], reason: 'disk quota administration of host filesystems' },
  { names: ['lookup_dcookie'], reason: 'profiling interface that reveals host kernel paths' },
  { names: ['vhangup'], reason: 'hangs up the controlling terminal of other sessions' },
  { names: ['syslog'], reason: 'the kernel log leaks host activity and kernel addresses' },
  { names: ['iopl', 'ioperm'], reason: 'direct hardware I/O port access' },
  {
    names: ['modify_ldt'],
    reason: 'x86 segment tables: only 16-bit code and Wine need them; a past source of kernel bugs',
  },
  {
    names: ['fanotify_init', 'fanotify_mark'],
    reason: 'filesystem-wide event monitoring could watch host activity on shared mounts',
  },
  {
    names: [
      'mbind',
      'migrate_pages',
      'move_pages',
      'set_mempolicy',
      'get_mempolicy',
      'set_mempolicy_home_node',
    ],
    reason: 'NUMA placement: no use inside a sandbox, and migrate_pages/move_pages act on other processes',
  },
  { names: ['sethostname', 'setdomainname'], reason: 'the sandbox hostname is fixed by the policy' },
  {
    names: ['_sysctl', 'uselib'],
    reason: 'obsolete interfaces kept only for old binaries; attack surface only',
  },
  {
    names: ['clone3'],
    errno: ERRNO.ENOSYS,
    reason:
      'clone3 passes its flags in memory, which seccomp cannot inspect; ENOSYS makes glibc fall back to clone, ' +
      'whose flags are checked',
  },
];

// ---------------------------------------------------------------------------------------------------------
// Argument-conditioned rules.
// ---------------------------------------------------------------------------------------------------------

/** Terminal ioctls that act on other sessions or the kernel (the cmd argument is an unsigned int). */
const ioctlRule: SyscallRule = {
  cases: [TTY_IOCTL.TIOCSTI, TTY_IOCTL.TIOCLINUX, TTY_IOCTL.TIOCCONS, TTY_IOCTL.TIOCSETD].map((cmd) => ({
    when: [int32Equals(1, cmd)],
    action: EPERM,
  })),
  otherwise: ALLOW,
  reason:
    'ioctl is allowed except TIOCSTI (types into a terminal another process reads: a classic escape through ' +
    'an inherited tty), TIOCLINUX (console control), TIOCCONS (redirects the console) and TIOCSETD ' +
    '(line disciplines load rarely used kernel code); cmd is compared on its low 32 bits as the kernel does',
};

const socketRule: SyscallRule = {
  cases: [
    ...[AF.UNIX, AF.INET, AF.INET6].map((family) => ({ when: [int32Equals(0, family)], action: ALLOW })),
    { when: [int32Equals(0, AF.NETLINK), int32Equals(2, NETLINK_ROUTE)], action: ALLOW },
  ],
  otherwise: errno(ERRNO.EAFNOSUPPORT),
  reason:
    'only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK/NETLINK_ROUTE (what getaddrinfo and ip need); AF_PACKET, ' +
    'AF_ALG, AF_VSOCK, other netlink families and the rest fail with EAFNOSUPPORT: rarely used protocol code ' +
    'is where kernel socket bugs live, and AF_VSOCK reaches the hypervisor host',
};

const socketpairRule: SyscallRule = {
  cases: [{ when: [int32Equals(0, AF.UNIX)], action: ALLOW }],
  otherwise: errno(ERRNO.EAFNOSUPPORT),
  reason: 'AF_UNIX only, for the same reason as socket',
};

const personalityRule: SyscallRule = {
  cases: [
    { when: [int32Equals(0, PERSONALITY.PER_LINUX)], action: ALLOW },
    { when: [int32Equals(0, PERSONALITY.QUERY)], action: ALLOW },
  ],
  otherwise: EPERM,
  reason:
    'only PER_LINUX and the 0xffffffff query: other personalities switch off ASLR (ADDR_NO_RANDOMIZE) or ' +
    'enable legacy behaviour such as READ_IMPLIES_EXEC',
};

/**
 * clone flags are an unsigned long. The kernel uses only the low word today, but clone3's flags already
 * reach the high word, so any high bit is refused rather than trusted to be ignored.
 */
const cloneNoNamespaces: SyscallRule = {
  cases: [{ when: [masked(0, 64, HIGH32 | BigInt(CLONE_NEW_NAMESPACE_FLAGS))], action: ALLOW }],
  otherwise: EPERM,
  reason:
    'new processes and threads are fine; any CLONE_NEW* flag (new namespaces) or high flag bit is refused',
};

const cloneThreadsOnly: SyscallRule = {
  cases: [
    {
      when: [masked(0, 64, HIGH32 | BigInt(CLONE_NEW_NAMESPACE_FLAGS | CLONE.THREAD), BigInt(CLONE.THREAD))],
      action: ALLOW,
    },
  ],
  otherwise: EPERM,
  reason: 'threads only (CLONE_THREAD set, no CLONE_NEW*): the strict profile starts no new processes',
};

const unshareNoNamespaces: SyscallRule = {
  cases: [
    { when: [masked(0, 64, HIGH32 | BigInt(CLONE_NEW_NAMESPACE_FLAGS | CLONE.NEWTIME))], action: ALLOW },
  ],
  otherwise: EPERM,
  reason: 'unsharing files/fs/semaphores is fine; new namespaces are refused (user namespaces above all)',
};

/** S_ISUID | S_ISGID (mode_t is an unsigned int, compared on its low 32 bits). */
const SET_ID_BITS = 0o6000;
const noSetIdBits = (modeArg: ArgIndex): SyscallRule => ({
  cases: [{ when: [masked(modeArg, 32, BigInt(SET_ID_BITS))], action: ALLOW }],
  otherwise: EPERM,
  reason:
    'permission changes are fine except setting the set-user-ID or set-group-ID bit: a set-id program left in ' +
    'a writable bind would let any host user run code as the host uid the sandbox runs as',
});

/** O_ACCMODE | O_CREAT | O_TRUNC: identical on x86_64 and aarch64. */
const OPEN_WRITE_FLAGS = 0x3 | 0x40 | 0x200;
const readOnlyOpen = (flagsArg: ArgIndex): SyscallRule => ({
  cases: [{ when: [masked(flagsArg, 32, BigInt(OPEN_WRITE_FLAGS))], action: ALLOW }],
  otherwise: EPERM,
  reason:
    'read-only opens: O_WRONLY, O_RDWR, O_CREAT and O_TRUNC are refused (strict computes, it does not write files)',
});

// ---------------------------------------------------------------------------------------------------------
// Allowlists. Names absent from an arch's table (open on aarch64, arch_prctl there) are skipped for it.
// ---------------------------------------------------------------------------------------------------------

/** The core of any Linux program: memory, signals, threads, time, exit. Shared by both profiles. */
const CORE = [
  // I/O on descriptors the process already has
  'read',
  'write',
  'readv',
  'writev',
  'pread64',
  'pwrite64',
  'lseek',
  'close',
  'dup',
  'dup2',
  'dup3',
  'fcntl',
  // file metadata and directory reads
  'fstat',
  'stat',
  'lstat',
  'newfstatat',
  'statx',
  'access',
  'faccessat',
  'faccessat2',
  'readlink',
  'readlinkat',
  'getdents64',
  'getcwd',
  'chdir',
  'fchdir',
  'fadvise64',
  // memory
  'mmap',
  'munmap',
  'mprotect',
  'mremap',
  'brk',
  'madvise',
  // signals
  'rt_sigaction',
  'rt_sigprocmask',
  'rt_sigreturn',
  'sigaltstack',
  'restart_syscall',
  'tgkill',
  // threads and synchronisation
  'futex',
  'set_robust_list',
  'set_tid_address',
  'rseq',
  'sched_yield',
  'gettid',
  'membarrier',
  // waiting
  'poll',
  'ppoll',
  'pipe2',
  // time
  'clock_gettime',
  'clock_getres',
  'clock_nanosleep',
  'nanosleep',
  'gettimeofday',
  'time',
  // identity and environment
  'getpid',
  'getppid',
  'getuid',
  'geteuid',
  'getgid',
  'getegid',
  'uname',
  'sysinfo',
  'getrandom',
  'arch_prctl',
  'prlimit64',
  'getrlimit',
  'sched_getaffinity',
  'umask',
  // program start and end (execve: bwrap execs the command after installing the filter)
  'execve',
  'exit',
  'exit_group',
  // bwrap's pid 1 runs under the same filter and reaps with wait4
  'wait4',
];

/** What shells, coreutils, python, node, git, compilers and make use on top of CORE. */
const DEFAULT_EXTRA = [
  // files
  'open',
  'openat',
  'openat2',
  'creat',
  'preadv',
  'pwritev',
  'preadv2',
  'pwritev2',
  'close_range',
  'flock',
  'fsync',
  'fdatasync',
  'sync',
  'syncfs',
  'sync_file_range',
  'ftruncate',
  'truncate',
  'fallocate',
  'readahead',
  'sendfile',
  'splice',
  'tee',
  'vmsplice',
  'copy_file_range',
  'cachestat',
  'statfs',
  'fstatfs',
  'getdents',
  'mkdir',
  'mkdirat',
  'rmdir',
  'unlink',
  'unlinkat',
  'rename',
  'renameat',
  'renameat2',
  'link',
  'linkat',
  'symlink',
  'symlinkat',
  'chown',
  'fchown',
  'lchown',
  'fchownat',
  'utime',
  'utimes',
  'utimensat',
  'futimesat',
  'mknod', // without capabilities only FIFOs and sockets can be made
  'mknodat',
  'getxattr',
  'lgetxattr',
  'fgetxattr',
  'listxattr',
  'llistxattr',
  'flistxattr',
  'setxattr',
  'lsetxattr',
  'fsetxattr',
  'removexattr',
  'lremovexattr',
  'fremovexattr',
  'getxattrat',
  'setxattrat',
  'listxattrat',
  'removexattrat',
  'file_getattr',
  'file_setattr',
  'inotify_init',
  'inotify_init1',
  'inotify_add_watch',
  'inotify_rm_watch',
  'memfd_create',
  // memory
  'msync',
  'mincore',
  'mlock',
  'mlock2',
  'munlock',
  'mlockall',
  'munlockall',
  'pkey_alloc',
  'pkey_free',
  'pkey_mprotect',
  'mseal',
  'map_shadow_stack',
  // signals and timers
  'rt_sigsuspend',
  'rt_sigpending',
  'rt_sigtimedwait',
  'rt_sigqueueinfo',
  'rt_tgsigqueueinfo',
  'pause',
  'alarm',
  'kill',
  'tkill',
  'signalfd',
  'signalfd4',
  'times',
  'getitimer',
  'setitimer',
  'timer_create',
  'timer_settime',
  'timer_gettime',
  'timer_getoverrun',
  'timer_delete',
  'timerfd_create',
  'timerfd_settime',
  'timerfd_gettime',
  // event loops
  'select',
  'pselect6',
  'epoll_create',
  'epoll_create1',
  'epoll_ctl',
  'epoll_wait',
  'epoll_pwait',
  'epoll_pwait2',
  'eventfd',
  'eventfd2',
  'pipe',
  'futex_waitv',
  'futex_wake',
  'futex_wait',
  'futex_requeue',
  'get_robust_list',
  // processes (inside the sandbox's own pid namespace)
  'fork',
  'vfork',
  'execveat',
  'waitid',
  'getpgid',
  'getpgrp',
  'setpgid',
  'getsid',
  'setsid',
  'prctl',
  'pidfd_open',
  'pidfd_send_signal',
  // credentials: without capabilities these can only drop or shuffle the sandbox's own ids
  'getresuid',
  'getresgid',
  'getgroups',
  'setuid',
  'setgid',
  'setreuid',
  'setregid',
  'setresuid',
  'setresgid',
  'setgroups',
  'setfsuid',
  'setfsgid',
  'capget',
  'capset',
  // scheduling and resources
  'setrlimit',
  'getrusage',
  'getpriority',
  'setpriority',
  'sched_setaffinity',
  'sched_getparam',
  'sched_setparam',
  'sched_getscheduler',
  'sched_setscheduler',
  'sched_get_priority_max',
  'sched_get_priority_min',
  'sched_rr_get_interval',
  'sched_getattr',
  'sched_setattr',
  'ioprio_get',
  'ioprio_set',
  'getcpu',
  // sockets (creation is argument-checked below)
  'bind',
  'connect',
  'listen',
  'accept',
  'accept4',
  'getsockname',
  'getpeername',
  'sendto',
  'recvfrom',
  'sendmsg',
  'recvmsg',
  'sendmmsg',
  'recvmmsg',
  'shutdown',
  'setsockopt',
  'getsockopt',
  // System V and POSIX IPC (postgres, python multiprocessing)
  'shmget',
  'shmat',
  'shmdt',
  'shmctl',
  'semget',
  'semop',
  'semtimedop',
  'semctl',
  'msgget',
  'msgsnd',
  'msgrcv',
  'msgctl',
  'mq_open',
  'mq_unlink',
  'mq_timedsend',
  'mq_timedreceive',
  'mq_notify',
  'mq_getsetattr',
  // Linux AIO (libaio users such as databases)
  'io_setup',
  'io_destroy',
  'io_submit',
  'io_cancel',
  'io_getevents',
  'io_pgetevents',
  // self-confinement only ever narrows what a process may do (the agent uses Landlock and seccomp)
  'seccomp',
  'landlock_create_ruleset',
  'landlock_add_rule',
  'landlock_restrict_self',
];

const STRICT_CONDITIONAL: Readonly<Record<string, SyscallRule>> = {
  ioctl: ioctlRule,
  open: readOnlyOpen(1),
  openat: readOnlyOpen(2),
  clone: cloneThreadsOnly,
  personality: personalityRule,
};

const DEFAULT_CONDITIONAL: Readonly<Record<string, SyscallRule>> = {
  chmod: noSetIdBits(1),
  fchmod: noSetIdBits(1),
  fchmodat: noSetIdBits(2),
  fchmodat2: noSetIdBits(2),
  ioctl: ioctlRule,
  socket: socketRule,
  socketpair: socketpairRule,
  clone: cloneNoNamespaces,
  unshare: unshareNoNamespaces,
  personality: personalityRule,
};

function buildProfile(
  name: SeccompProfileName,
  summary: string,
  allowed: readonly string[],
  conditional: Readonly<Record<string, SyscallRule>>,
): SeccompProfile {
  const rules: Record<string, SyscallRule> = {};
  const add = (syscall: string, rule: SyscallRule) => {
    if (syscall in rules) throw new ProfileDefinitionError(`profile ${name}: ${syscall} has two rules`);
    if (!seccompArches.some((arch) => syscall in SYSCALL_TABLES[arch])) {
      throw new ProfileDefinitionError(
        `profile ${name}: '${syscall}' is not a syscall on any supported arch`,
      );
    }
    rules[syscall] = Object.freeze(rule);
  };
  for (const syscall of allowed) add(syscall, { cases: [], otherwise: ALLOW });
  for (const [syscall, rule] of Object.entries(conditional)) add(syscall, rule);
  for (const denial of DENIALS) {
    for (const syscall of denial.names) {
      add(syscall, { cases: [], otherwise: errno(denial.errno ?? ERRNO.EPERM), reason: denial.reason });
    }
  }
  for (const [syscall, rule] of Object.entries(rules)) validateRule(name, syscall, rule);
  return Object.freeze({
    name,
    summary,
    defaultAction: EPERM,
    unknownErrno: ERRNO.ENOSYS,
    x32Errno: ERRNO.ENOSYS,
    rules: Object.freeze(rules),
  });
}

function validateRule(profile: string, syscall: string, rule: SyscallRule): void {
  for (const c of rule.cases) {
    if (c.when.length === 0) throw new ProfileDefinitionError(`${profile}/${syscall}: a case needs a match`);
    for (const m of c.when) {
      const limit = m.width === 32 ? LOW32 : (1n << 64n) - 1n;
      if (m.mask <= 0n || m.mask > limit) {
        throw new ProfileDefinitionError(
          `${profile}/${syscall}: mask ${m.mask} does not fit a ${m.width}-bit arg`,
        );
      }
      if ((m.value & ~m.mask) !== 0n) {
        throw new ProfileDefinitionError(
          `${profile}/${syscall}: value has bits outside its mask, never matches`,
        );
      }
    }
  }
}

export const PROFILES: Readonly<Record<SeccompProfileName, SeccompProfile>> = Object.freeze({
  strict: buildProfile(
    'strict',
    'pure computation: read files, compute, write to inherited descriptors; threads but no new processes, ' +
      'no sockets, no file creation',
    CORE,
    STRICT_CONDITIONAL,
  ),
  default: buildProfile(
    'default',
    'what real tools need (shells, coreutils, python, node, git, gcc, make) minus kernel attack surface and ' +
      'anything that could leave the sandbox',
    [...CORE, ...DEFAULT_EXTRA],
    DEFAULT_CONDITIONAL,
  ),
});

// ---------------------------------------------------------------------------------------------------------
// Listing for docs.
// ---------------------------------------------------------------------------------------------------------

export interface ProfileListing {
  profile: SeccompProfileName;
  arch: SeccompArch;
  summary: string;
  /** Allowed whatever the arguments. */
  allowed: string[];
  /** Allowed for some arguments only. */
  conditional: { syscall: string; rule: string }[];
  /** Refused outright, with the errno returned and why. */
  denied: { syscall: string; errno: number; reason: string }[];
  /** What every other syscall gets. */
  otherwise: string;
}

/** Whether a rule can allow some call (unconditional or conditional). */
export function ruleCanAllow(rule: SyscallRule): boolean {
  return rule.otherwise.kind === 'allow' || rule.cases.some((c) => c.action.kind === 'allow');
}

/** Each profile's allowed syscalls and denials with reasons, for one arch (names it lacks are left out). */
export function listProfile(profile: SeccompProfileName, arch: SeccompArch): ProfileListing {
  const p = PROFILES[profile];
  const table = SYSCALL_TABLES[arch];
  const listing: ProfileListing = {
    profile,
    arch,
    summary: p.summary,
    allowed: [],
    conditional: [],
    denied: [],
    otherwise:
      `known syscalls without a rule: ${describeAction(p.defaultAction)}; numbers unknown to the ${arch} ` +
      `table: ENOSYS${arch === 'x86_64' ? '; x32 ABI numbers: ENOSYS' : ''}; another architecture: the process is killed`,
  };
  for (const [syscall, rule] of Object.entries(p.rules).sort(([a], [b]) => a.localeCompare(b))) {
    if (!(syscall in table)) continue;
    if (rule.cases.length === 0 && rule.otherwise.kind === 'allow') listing.allowed.push(syscall);
    else if (rule.cases.length > 0) listing.conditional.push({ syscall, rule: rule.reason ?? '' });
    else if (rule.otherwise.kind === 'errno') {
      listing.denied.push({ syscall, errno: rule.otherwise.errno, reason: rule.reason ?? '' });
    }
  }
  return listing;
}

const ERRNO_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(ERRNO).map(([name, n]) => [n, name]),
);

function describeAction(action: RuleAction): string {
  return action.kind === 'allow' ? 'allow' : (ERRNO_NAMES[action.errno] ?? `errno ${action.errno}`);
}

/** Count of syscalls a profile allows at least sometimes on an arch (unconditional + conditional). */
export function allowedSyscallCount(profile: SeccompProfileName, arch: SeccompArch): number {
  const table = SYSCALL_TABLES[arch];
  return Object.entries(PROFILES[profile].rules).filter(([s, r]) => s in table && ruleCanAllow(r)).length;
}
