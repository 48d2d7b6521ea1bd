/**
 * Kernel attack surface: syscalls and socket families that host most kernel privilege-escalation bugs, and
 * attempts to slip past the seccomp filter's argument checks. Expected errnos come from the `default` seccomp
 * profile (src/isolation/seccomp/profiles.ts): EPERM for denied syscalls, EAFNOSUPPORT for refused socket
 * families, ENOSYS for clone3. Where the kernel alone would give another errno, the probe says so: that is what
 * makes it fail if the filter were missing.
 */
import { expectAllBlocked, expectAttempts, type Probe, reportOf } from '../harness.js';

const py = String.raw;

const FORK_CHILD = py`
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
`;

export const kernelProbes: Probe[] = [
  {
    id: 'kern-io-uring',
    category: 'kernel',
    tries: 'io_uring_setup(8, params)',
    proves: 'io_uring (kernel workers that bypass seccomp, many CVEs) is unavailable',
    expected: 'EPERM (the kernel alone would return a ring fd)',
    python: py`
params = ctypes.create_string_buffer(120)
attempt('io_uring_setup', lambda: syscall('io_uring_setup', 8, params))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-userfaultfd',
    category: 'kernel',
    tries: 'userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY), the variant unprivileged users may use',
    proves: 'the race-widening primitive of many kernel exploits is unavailable',
    expected: 'EPERM',
    python: py`
attempt('userfaultfd(USER_MODE_ONLY)', lambda: syscall('userfaultfd', 0o2000000 | 1))
attempt('userfaultfd(0)', lambda: syscall('userfaultfd', 0o2000000))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-bpf',
    category: 'kernel',
    tries: 'bpf(BPF_MAP_CREATE) for an array map and bpf(BPF_PROG_LOAD)',
    proves: 'eBPF (verifier bugs, kernel memory reads) is unavailable',
    expected: 'EPERM',
    python: py`
attr = ctypes.create_string_buffer(struct.pack('<IIII', 2, 4, 4, 1) + b'\0' * 112)
attempt('bpf(BPF_MAP_CREATE)', lambda: syscall('bpf', 0, attr, 128))
attempt('bpf(BPF_PROG_LOAD)', lambda: syscall('bpf', 5, ctypes.create_string_buffer(128), 128))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-perf-event',
    category: 'kernel',
    tries: 'perf_event_open for a software CPU-clock counter on itself',
    proves: 'perf events (kernel address and timing leaks, many CVEs) are unavailable',
    expected: 'EPERM',
    python: py`
attr = ctypes.create_string_buffer(struct.pack('<IIQ', 1, 128, 0) + b'\0' * 112)
attempt('perf_event_open(self)', lambda: syscall('perf_event_open', attr, 0, -1, -1, 0))
attempt('perf_event_open(all cpus)', lambda: syscall('perf_event_open', attr, -1, 0, -1, 0))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-keyrings',
    category: 'kernel',
    tries: 'add_key into the process keyring, keyctl GET_KEYRING_ID / JOIN_SESSION_KEYRING, request_key',
    proves: "the kernel keyrings (not namespaced: the host user's keys live there) are unreachable",
    expected: 'EPERM',
    python: py`
attempt('add_key', lambda: syscall('add_key', 'user', 'ironcage-probe', b'secret', 6, -2))
attempt('keyctl(GET_KEYRING_ID, session)', lambda: syscall('keyctl', 0, -3, 0))
attempt('keyctl(JOIN_SESSION_KEYRING)', lambda: syscall('keyctl', 1, 0))
attempt('request_key', lambda: syscall('request_key', 'user', 'ironcage-probe', None, 0))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-af-packet',
    category: 'kernel',
    tries: 'socket(AF_PACKET, SOCK_RAW / SOCK_DGRAM, ETH_P_ALL)',
    proves: 'raw link-layer sockets (sniffing, frequent CVEs) are refused by the filter',
    expected: 'EAFNOSUPPORT (the kernel alone would say EPERM for lack of CAP_NET_RAW, or succeed as root)',
    python: py`
attempt('AF_PACKET SOCK_RAW', lambda: syscall('socket', 17, 3, 0x0300))
attempt('AF_PACKET SOCK_DGRAM', lambda: syscall('socket', 17, 2, 0x0300))
`,
    check: (run) => expectAllBlocked(run, 'EAFNOSUPPORT'),
  },
  {
    id: 'kern-af-alg',
    category: 'kernel',
    tries: 'socket(AF_ALG, SOCK_SEQPACKET, 0), the kernel crypto API socket',
    proves: 'AF_ALG (open to every user on a normal host; several root exploits) is refused',
    expected: 'EAFNOSUPPORT (the kernel alone would return a socket)',
    python: py`
attempt('AF_ALG', lambda: syscall('socket', 38, 5, 0))
`,
    check: (run) => expectAllBlocked(run, 'EAFNOSUPPORT'),
  },
  {
    id: 'kern-af-vsock',
    category: 'kernel',
    tries: 'socket(AF_VSOCK, SOCK_STREAM / SOCK_DGRAM, 0)',
    proves: 'the VM-to-hypervisor channel is unreachable (this host is a VM with /dev/vsock)',
    expected: 'EAFNOSUPPORT',
    python: py`
attempt('AF_VSOCK SOCK_STREAM', lambda: syscall('socket', 40, 1, 0))
attempt('AF_VSOCK SOCK_DGRAM', lambda: syscall('socket', 40, 2, 0))
`,
    check: (run) => expectAllBlocked(run, 'EAFNOSUPPORT'),
  },
  {
    id: 'kern-netlink-families',
    category: 'kernel',
    tries:
      'open netlink sockets for audit, uevent, netfilter, xfrm, generic, sock_diag, connector, crypto, and route',
    proves: 'only NETLINK_ROUTE is allowed (getaddrinfo/ip need it); the rest of netlink is refused',
    expected: 'NETLINK_ROUTE works (control); every other protocol fails with EAFNOSUPPORT',
    python: py`
SOCK_RAW, SOCK_CLOEXEC = 3, 0o2000000
for name, proto in [('ROUTE', 0), ('SOCK_DIAG', 4), ('XFRM', 6), ('AUDIT', 9), ('CONNECTOR', 11),
                    ('NETFILTER', 12), ('KOBJECT_UEVENT', 15), ('GENERIC', 16), ('CRYPTO', 21)]:
    attempt('NETLINK_' + name, lambda p=proto: syscall('socket', 16, SOCK_RAW | SOCK_CLOEXEC, p))
`,
    check: (run) => {
      const others = reportOf(run).attempts.filter((a) => a.label !== 'NETLINK_ROUTE');
      expectAttempts(run, {
        NETLINK_ROUTE: 'ok',
        ...Object.fromEntries(others.map((a) => [a.label, 'EAFNOSUPPORT'])),
      });
    },
  },
  {
    id: 'kern-socket-family-sweep',
    category: 'kernel',
    tries: 'socket() with every address family 0..45 except AF_UNIX, AF_INET, AF_INET6, AF_NETLINK',
    proves:
      'socket families are an allowlist: rarely used protocol modules (AX.25, TIPC, RDS, CAN, ...) are unreachable',
    expected: 'EAFNOSUPPORT for every family and socket type',
    python: py`
for family in range(0, 46):
    if family in (1, 2, 10, 16):
        continue
    for stype in (1, 2, 3, 5):
        attempt('family %d type %d' % (family, stype), lambda f=family, t=stype: syscall('socket', f, t, 0))
`,
    check: (run) => expectAllBlocked(run, 'EAFNOSUPPORT'),
  },
  {
    id: 'kern-kexec',
    category: 'kernel',
    tries: 'kexec_load and kexec_file_load',
    proves: 'the running kernel cannot be replaced',
    expected: 'EPERM',
    python: py`
attempt('kexec_load', lambda: syscall('kexec_load', 0, 0, None, 0))
attempt('kexec_file_load', lambda: syscall('kexec_file_load', -1, -1, 0, b'', 0))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-modules',
    category: 'kernel',
    tries: 'init_module with a junk image, finit_module on /dev/null, delete_module("ext4")',
    proves: 'no kernel module can be loaded or unloaded',
    expected: 'EPERM',
    python: py`
image = ctypes.create_string_buffer(64)
attempt('init_module', lambda: syscall('init_module', image, 64, b''))
fd = os.open('/dev/null', os.O_RDONLY)
attempt('finit_module', lambda: syscall('finit_module', fd, b'', 0))
attempt('delete_module', lambda: syscall('delete_module', 'ext4', 0o4000))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-process-vm',
    category: 'kernel',
    tries: 'process_vm_readv / process_vm_writev on its own child (same uid) and on the ironcage agent',
    proves:
      "no process can read or write another one's memory (the kernel alone would allow it for the child)",
    expected: 'EPERM',
    python: py`
${FORK_CHILD}
buf = ctypes.create_string_buffer(16)
iov = struct.pack('<QQ', ctypes.addressof(buf), 16)
local = ctypes.create_string_buffer(iov)
remote = ctypes.create_string_buffer(iov)
for name, pid in [('child', child), ('agent', os.getppid())]:
    attempt('process_vm_readv ' + name, lambda p=pid: syscall('process_vm_readv', p, local, 1, remote, 1, 0))
    attempt('process_vm_writev ' + name, lambda p=pid: syscall('process_vm_writev', p, local, 1, remote, 1, 0))
os.kill(child, 9)
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-ptrace',
    category: 'kernel',
    tries: 'ptrace(PTRACE_TRACEME), PTRACE_ATTACH to pid 1, to the agent and to its own child, PTRACE_SEIZE',
    proves: 'ptrace is refused entirely: no process can take over another (the agent or a sibling)',
    expected: 'EPERM',
    python: py`
${FORK_CHILD}
attempt('PTRACE_TRACEME', lambda: syscall('ptrace', 0, 0, 0, 0))
attempt('PTRACE_ATTACH pid 1', lambda: syscall('ptrace', 16, 1, 0, 0))
attempt('PTRACE_ATTACH agent', lambda: syscall('ptrace', 16, os.getppid(), 0, 0))
attempt('PTRACE_ATTACH child', lambda: syscall('ptrace', 16, child, 0, 0))
attempt('PTRACE_SEIZE child', lambda: syscall('ptrace', 0x4206, child, 0, 0))
os.kill(child, 9)
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-pidfd-getfd',
    category: 'kernel',
    tries: 'pidfd_open on the agent and on its own child, then pidfd_getfd to steal their descriptors',
    proves: "the agent's status pipe (which reports the run's result) cannot be stolen and forged",
    expected: 'pidfd_open may work; pidfd_getfd fails with EPERM',
    python: py`
${FORK_CHILD}
for name, pid in [('agent', os.getppid()), ('child', child)]:
    pidfd = attempt('pidfd_open ' + name, lambda p=pid: syscall('pidfd_open', p, 0))
    if pidfd is not None:
        for fd in range(0, 10):
            attempt('pidfd_getfd %s fd %d' % (name, fd), lambda f=fd, pf=pidfd: syscall('pidfd_getfd', pf, f, 0))
os.kill(child, 9)
`,
    check: (run) => {
      const report = reportOf(run);
      const getfd = report.attempts.filter((a) => a.label.startsWith('pidfd_getfd'));
      if (getfd.length === 0) {
        expectAttempts(run, { 'pidfd_open agent': 'EPERM', 'pidfd_open child': 'EPERM' });
        return;
      }
      expectAttempts(run, {
        'pidfd_open agent': ['ok', 'EPERM'],
        'pidfd_open child': ['ok', 'EPERM'],
        ...Object.fromEntries(getfd.map((a) => [a.label, 'EPERM'])),
      });
    },
  },
  {
    id: 'kern-tiocsti',
    category: 'kernel',
    tries:
      "ioctl TIOCSTI (push characters into a terminal's input) and TIOCLINUX on stdin and on a fresh pty",
    proves:
      'terminal input injection is refused by request number: on stdin (/dev/null) the kernel alone would ' +
      'say ENOTTY, so EPERM proves the filter; there is no controlling terminal to reach either',
    expected: 'EPERM for every ioctl; opening /dev/tty fails with ENXIO',
    python: py`
import fcntl
attempt('open /dev/tty', lambda: os.open('/dev/tty', os.O_RDWR))
attempt('TIOCSTI stdin', lambda: fcntl.ioctl(0, 0x5412, b'x'))
attempt('TIOCLINUX stdin', lambda: fcntl.ioctl(0, 0x541C, b'\x0c'))
master, slave = os.openpty()
attempt('TIOCSTI pty', lambda: fcntl.ioctl(slave, 0x5412, b'x'))
attempt('TIOCLINUX pty', lambda: fcntl.ioctl(slave, 0x541C, b'\x0c'))
`,
    check: (run) =>
      expectAttempts(run, {
        'open /dev/tty': 'ENXIO',
        'TIOCSTI stdin': 'EPERM',
        'TIOCLINUX stdin': 'EPERM',
        'TIOCSTI pty': 'EPERM',
        'TIOCLINUX pty': 'EPERM',
      }),
  },
  {
    id: 'kern-personality',
    category: 'kernel',
    tries: 'personality(ADDR_NO_RANDOMIZE) and personality(READ_IMPLIES_EXEC)',
    proves: 'ASLR cannot be switched off and legacy executable-memory behaviour cannot be enabled',
    expected: 'EPERM (the kernel alone accepts both)',
    python: py`
attempt('ADDR_NO_RANDOMIZE', lambda: syscall('personality', 0x0040000))
attempt('READ_IMPLIES_EXEC', lambda: syscall('personality', 0x0400000))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-clone3',
    category: 'kernel',
    tries: 'clone3 with plain fork arguments and with CLONE_NEWUSER',
    proves:
      "clone3 (whose flags live in memory seccomp cannot read) is unavailable, so clone's checked flags rule",
    expected: 'ENOSYS (callers such as glibc fall back to clone)',
    python: py`
def clone3(flags):
    args = ctypes.create_string_buffer(struct.pack('<11Q', flags, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0))
    pid = syscall('clone3', args, 88)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
attempt('clone3(fork)', lambda: clone3(0))
attempt('clone3(CLONE_NEWUSER)', lambda: clone3(0x10000000))
`,
    check: (run) => expectAllBlocked(run, 'ENOSYS'),
  },
  {
    id: 'kern-high-bits-bypass',
    category: 'kernel',
    tries:
      'pass refused values with bits set above bit 31 (the kernel truncates int arguments, a filter comparing ' +
      '64 bits might not): AF_ALG/AF_VSOCK families, netlink audit protocol, TIOCSTI, ADDR_NO_RANDOMIZE, ' +
      'clone/unshare(CLONE_NEWUSER)',
    proves:
      'argument checks compare what the kernel uses: high-bit variants are refused like the plain values',
    expected: 'EAFNOSUPPORT for the sockets, EPERM for ioctl/personality/clone/unshare',
    python: py`
HI = 1 << 32
attempt('socket(AF_ALG|HI)', lambda: syscall('socket', HI | 38, 5, 0))
attempt('socket(AF_VSOCK|HI)', lambda: syscall('socket', HI | 40, 1, 0))
attempt('socket(AF_NETLINK, NETLINK_AUDIT|HI)', lambda: syscall('socket', 16, 3, HI | 9))
attempt('ioctl(TIOCSTI|HI)', lambda: syscall('ioctl', 0, HI | 0x5412, b'x'))
attempt('personality(ADDR_NO_RANDOMIZE|HI)', lambda: syscall('personality', HI | 0x0040000))
def clone_hi():
    pid = syscall('clone', HI | 0x10000000 | 17, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
attempt('clone(CLONE_NEWUSER|HI)', clone_hi)
attempt('unshare(CLONE_NEWUSER|HI)', lambda: syscall('unshare', HI | 0x10000000))
`,
    check: (run) =>
      expectAttempts(run, {
        'socket(AF_ALG|HI)': 'EAFNOSUPPORT',
        'socket(AF_VSOCK|HI)': 'EAFNOSUPPORT',
        'socket(AF_NETLINK, NETLINK_AUDIT|HI)': 'EAFNOSUPPORT',
        'ioctl(TIOCSTI|HI)': 'EPERM',
        'personality(ADDR_NO_RANDOMIZE|HI)': 'EPERM',
        'clone(CLONE_NEWUSER|HI)': 'EPERM',
        'unshare(CLONE_NEWUSER|HI)': 'EPERM',
      }),
  },
  {
    id: 'kern-raw-sockets',
    category: 'kernel',
    tries: 'raw IPv4/IPv6 sockets and an unprivileged ICMP "ping" socket',
    proves: 'no raw network access (packet forging) from inside',
    expected:
      'EPERM for raw sockets (no CAP_NET_RAW); EACCES for the ping socket (ping_group_range of the sandbox netns)',
    python: py`
attempt('raw IPv4 ICMP', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))
attempt('raw IPv6 ICMPv6', lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, 58))
attempt('raw IPv4 IPPROTO_RAW', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 255))
attempt('ping socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 1))
`,
    check: (run) =>
      expectAttempts(run, {
        'raw IPv4 ICMP': 'EPERM',
        'raw IPv6 ICMPv6': 'EPERM',
        'raw IPv4 IPPROTO_RAW': 'EPERM',
        'ping socket': ['EACCES', 'EPERM'],
      }),
  },
  {
    id: 'kern-mknod',
    category: 'kernel',
    tries: 'mknod a block device for /dev/sda and a char device for /dev/mem in /tmp',
    proves: 'device nodes cannot be created (and /tmp is nodev besides)',
    expected: 'EPERM',
    python: py`
import stat
attempt('mknod block 8:0', lambda: os.mknod('/tmp/sda', stat.S_IFBLK | 0o600, os.makedev(8, 0)))
attempt('mknod char 1:1', lambda: os.mknod('/tmp/mem', stat.S_IFCHR | 0o600, os.makedev(1, 1)))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-ioport',
    category: 'kernel',
    requires: ['x86_64'],
    tries: 'iopl(3) and ioperm(0x80, 1, 1)',
    proves: 'no direct hardware I/O port access',
    expected: 'EPERM',
    python: py`
attempt('iopl(3)', lambda: syscall('iopl', 3))
attempt('ioperm(0x80)', lambda: syscall('ioperm', 0x80, 1, 1))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-reboot-swap-acct',
    category: 'kernel',
    tries: 'reboot(CAD_OFF), swapon on a /tmp file, acct() to a /tmp file, sethostname',
    proves: 'host-wide administrative switches are unreachable',
    expected: 'EPERM',
    python: py`
open('/tmp/swap', 'wb').write(b'\0' * 4096)
attempt('reboot(CAD_OFF)', lambda: syscall('reboot', 0xfee1dead, 672274793, 0, None))
attempt('swapon', lambda: syscall('swapon', '/tmp/swap', 0))
attempt('acct', lambda: syscall('acct', '/tmp/acct'))
attempt('sethostname', lambda: syscall('sethostname', b'pwned', 5))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-fanotify',
    category: 'kernel',
    tries: 'fanotify_init in notification and FID-reporting modes',
    proves: 'filesystem-wide event monitoring (watching host activity on shared mounts) is unavailable',
    expected: 'EPERM',
    python: py`
attempt('fanotify_init(CLASS_NOTIF)', lambda: syscall('fanotify_init', 0, 0))
attempt('fanotify_init(REPORT_FID)', lambda: syscall('fanotify_init', 0x200, 0))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'kern-mount-api',
    category: 'kernel',
    tries:
      'the new mount API: fsopen("tmpfs"), open_tree(/usr, CLONE), fspick(/usr), move_mount, mount_setattr',
    proves: 'the fd-based mount syscalls are closed as well as mount(2)',
    expected: 'EPERM',
    python: py`
AT_FDCWD = -100
attempt('fsopen(tmpfs)', lambda: syscall('fsopen', 'tmpfs', 0))
attempt('open_tree(/usr, CLONE)', lambda: syscall('open_tree', AT_FDCWD, '/usr', 1))
attempt('fspick(/usr)', lambda: syscall('fspick', AT_FDCWD, '/usr', 0))
attempt('move_mount', lambda: syscall('move_mount', AT_FDCWD, '/usr', AT_FDCWD, '/tmp', 0))
attr = ctypes.create_string_buffer(32)
attempt('mount_setattr(/usr)', lambda: syscall('mount_setattr', AT_FDCWD, '/usr', 0, attr, 32))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
];
