/** Information leaks: what the sandbox can learn about the host (environment, processes, network, kernel, mounts). */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { AGENT_PATH } from '../../../src/isolation/mounts.js';
import {
  expectAllBlocked,
  expectAttempts,
  factOf,
  fail,
  onTeardown,
  type Probe,
  reportOf,
} from '../harness.js';

const py = String.raw;

/** Variables the default preset sets; nothing else may appear in any environment inside. */
const POLICY_ENV = new Set(['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'TMPDIR']);
/** Variables a process may add for itself at run time (bwrap's --chdir sets none; shells add PWD). */
const SELF_ADDED_ENV = new Set(['PWD', 'OLDPWD', 'SHLVL', '_']);

/** Host SysV shared-memory segments created by the info-sysv-ipc probe, removed by its check. */
const ipcSegments: string[] = [];

export const infoLeakProbes: Probe[] = [
  {
    id: 'info-env-canary',
    category: 'info-leak',
    tries:
      'list the variable names of every environment readable inside: its own, and /proc/<pid>/environ of each ' +
      'visible process (pid 1 included), while the test process has a unique canary variable set',
    proves:
      "no host environment variable (API keys, tokens) reaches the sandbox, not even through another process's " +
      '/proc/<pid>/environ',
    expected: "the canary name appears nowhere; every environment holds only the policy's variables",
    python: py`
names = {}
for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['self']:
    try:
        raw = open('/proc/%s/environ' % pid, 'rb').read()
        # names only: the values could be host secrets and must not be copied into test output
        names[pid] = sorted(set(kv.split(b'=', 1)[0].decode('latin1') for kv in raw.split(b'\0') if kv))
    except OSError as e:
        names[pid] = ename(e.errno)
fact('environ_names', names)
fact('os_environ', sorted(os.environ))
`,
    check: (run, fx) => {
      const all = factOf<Record<string, string[] | string>>(run, 'environ_names');
      assert.ok(all.self !== undefined && Array.isArray(all.self), 'own environment was readable');
      for (const [pid, names] of Object.entries(all)) {
        if (typeof names === 'string') continue; // unreadable is fine
        if (names.includes(fx.canaryName)) {
          fail(run, `HOST ENVIRONMENT LEAK: the test's canary ${fx.canaryName} is in /proc/${pid}/environ`);
        }
        const foreign = names.filter((n) => !POLICY_ENV.has(n) && !SELF_ADDED_ENV.has(n));
        if (foreign.length > 0) {
          fail(
            run,
            `HOST ENVIRONMENT LEAK: /proc/${pid}/environ holds host variables: ${foreign.join(', ')}`,
          );
        }
      }
      assert.ok(!factOf<string[]>(run, 'os_environ').includes(fx.canaryName));
      assert.ok(!run.stdout.includes(process.env[fx.canaryName] ?? '\0'), 'canary value in output');
    },
  },
  {
    id: 'info-proc-pids',
    category: 'info-leak',
    tries: 'list every pid in /proc',
    proves: "only the sandbox's own few processes are visible (own pid namespace); host processes are not",
    expected: 'at most 5 pids, all below 20',
    python: py`
fact('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
`,
    check: (run) => {
      const pids = factOf<number[]>(run, 'pids');
      if (pids.length > 5 || pids.some((p) => p >= 20))
        fail(run, `host processes visible: ${pids.join(',')}`);
    },
  },
  {
    id: 'info-self-pid',
    category: 'info-leak',
    tries: 'read its own pid, parent pid and the NSpid chain in /proc/self/status',
    proves: 'the command sees only sandbox-local pids; no host pid of itself or its parent is exposed',
    expected: 'pid < 10, ppid < 10, NSpid has a single entry',
    python: py`
fact('pid', os.getpid())
fact('ppid', os.getppid())
fact('nspid', [l.split()[1:] for l in open('/proc/self/status') if l.startswith('NSpid:')][0])
`,
    check: (run) => {
      assert.ok(factOf<number>(run, 'pid') < 10, 'pid is small');
      assert.ok(factOf<number>(run, 'ppid') < 10, 'ppid is small');
      assert.equal(factOf<string[]>(run, 'nspid').length, 1, 'only one pid namespace level is visible');
    },
  },
  {
    id: 'info-net-interfaces',
    category: 'info-leak',
    tries: 'list network interfaces (if_nameindex, /proc/net/dev) and routes (/proc/net/route)',
    proves:
      'the sandbox has its own network namespace with loopback only: no host interface, address or route',
    expected: 'interfaces == ["lo"]; no IPv4 route',
    python: py`
fact('ifaces', sorted(name for _, name in socket.if_nameindex()))
fact('proc_net_dev', sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))
fact('routes', [l.split()[0] for l in open('/proc/net/route').readlines()[1:]])
`,
    check: (run) => {
      assert.deepEqual(factOf(run, 'ifaces'), ['lo']);
      assert.deepEqual(factOf(run, 'proc_net_dev'), ['lo']);
      assert.deepEqual(factOf(run, 'routes'), []);
    },
  },
  {
    id: 'info-kernel-log',
    category: 'info-leak',
    tries: 'read the kernel log: syslog(READ_ALL), syslog(SIZE_BUFFER), /dev/kmsg and /proc/kmsg',
    proves: 'the kernel log (host activity, kernel addresses) is closed',
    expected: 'EPERM for syslog; ENOENT for /dev/kmsg; EACCES (or EPERM) for /proc/kmsg',
    python: py`
buf = ctypes.create_string_buffer(4096)
attempt('syslog(READ_ALL)', lambda: syscall('syslog', 3, buf, 4096))
attempt('syslog(SIZE_BUFFER)', lambda: syscall('syslog', 10, None, 0))
attempt('open /dev/kmsg', lambda: open('/dev/kmsg', 'rb').read(1))
attempt('open /proc/kmsg', lambda: open('/proc/kmsg', 'rb').read(1))
`,
    check: (run) =>
      expectAttempts(run, {
        'syslog(READ_ALL)': 'EPERM',
        'syslog(SIZE_BUFFER)': 'EPERM',
        'open /dev/kmsg': 'ENOENT',
        'open /proc/kmsg': ['EACCES', 'EPERM'],
      }),
  },
  {
    id: 'info-hostname',
    category: 'info-leak',
    tries: 'read the hostname three ways, then try to change it (sethostname, /proc/sys/kernel/hostname)',
    proves: 'the sandbox has its own UTS namespace: it sees the policy hostname and cannot rename the host',
    expected: 'hostname "sandbox" everywhere; sethostname EPERM; the host hostname is unchanged afterwards',
    python: py`
fact('gethostname', socket.gethostname())
fact('uname', os.uname().nodename)
fact('proc', open('/proc/sys/kernel/hostname').read().strip())
attempt('sethostname', lambda: syscall('sethostname', b'pwned-by-sandbox', 16))
def write_proc():
    with open('/proc/sys/kernel/hostname', 'w') as f:
        f.write('pwned-by-sandbox')
attempt('write /proc/sys/kernel/hostname', write_proc)
`,
    check: (run, fx) => {
      for (const key of ['gethostname', 'uname', 'proc']) assert.equal(factOf(run, key), 'sandbox', key);
      assert.notEqual(
        fx.hostName,
        'sandbox',
        'the host must have another name for this probe to mean anything',
      );
      // The write may succeed on the sandbox's own UTS namespace; what matters is that the host did not change.
      expectAttempts(run, {
        sethostname: 'EPERM',
        'write /proc/sys/kernel/hostname': ['ok', 'EPERM', 'EACCES', 'EROFS'],
      });
      assert.equal(hostname(), fx.hostName, 'the HOST hostname changed');
    },
  },
  {
    id: 'info-kallsyms',
    category: 'info-leak',
    tries: 'read /proc/kallsyms and /proc/modules and count non-zero kernel addresses',
    proves: 'kernel addresses (the KASLR secret every kernel exploit needs) are hidden',
    expected: 'the files are unreadable, or every address reads as zero',
    python: py`
def nonzero(path, field):
    total = hidden = 0
    for line in open(path):
        parts = line.split()
        if len(parts) <= field:
            continue
        total += 1
        if int(parts[field], 16) == 0:
            hidden += 1
    return [total, total - hidden]
fact('kallsyms', attempt('read /proc/kallsyms', lambda: nonzero('/proc/kallsyms', 0)))
fact('modules', attempt('read /proc/modules', lambda: nonzero('/proc/modules', 5)))
`,
    check: (run) => {
      expectAttempts(run, {
        'read /proc/kallsyms': ['ok', 'EACCES', 'ENOENT', 'EPERM'],
        'read /proc/modules': ['ok', 'EACCES', 'ENOENT', 'EPERM'],
      });
      for (const key of ['kallsyms', 'modules']) {
        const counts = factOf<[number, number] | null>(run, key);
        if (counts !== null && counts[1] > 0)
          fail(run, `${key}: ${counts[1]} of ${counts[0]} addresses are real`);
      }
    },
  },
  {
    id: 'info-root-only-proc-files',
    category: 'info-leak',
    tries:
      'read the root-only (mode 0400) /proc files: kpageflags, kpagecount, kpagecgroup (physical page data), ' +
      'timer_list (host-wide timers with host process names), slabinfo, pagetypeinfo, vmallocinfo',
    proves:
      'kernel-internal data meant for host root stays closed: the sandbox user is not the owner of host ' +
      "root's files (physical page maps feed Rowhammer and side channels, slabinfo feeds heap exploits)",
    expected: 'EACCES (or EPERM) for every file that exists; ENOENT where this kernel lacks one',
    python: py`
for path in ['/proc/kpageflags', '/proc/kpagecount', '/proc/kpagecgroup', '/proc/timer_list', '/proc/slabinfo',
             '/proc/pagetypeinfo', '/proc/vmallocinfo']:
    attempt('read ' + path, lambda p=path: len(open(p, 'rb').read(64)))
`,
    check: (run) => {
      expectAllBlocked(run, ['EACCES', 'EPERM', 'ENOENT']);
      const present = reportOf(run).attempts.filter((a) => a.errno !== 'ENOENT');
      if (present.length < 3) fail(run, 'too few of these files exist for this probe to mean anything');
    },
  },
  {
    id: 'info-mountinfo',
    category: 'info-leak',
    tries: 'list every mount point in /proc/self/mountinfo',
    proves:
      "the sandbox sees only the planned mounts, none of the host's (/work, /sys, /run, /boot, /var, ...)",
    expected:
      'every mount point is /, /proc..., /dev..., a system dir, a planned /etc file, a scratch dir or the agent',
    python: py`
fact('mounts', [line.split()[4] for line in open('/proc/self/mountinfo')])
`,
    check: (run) => {
      const planned = new Set([
        '/',
        '/usr',
        '/bin',
        '/sbin',
        '/lib',
        '/lib32',
        '/lib64',
        '/libx32',
        '/tmp',
        '/home/sandbox',
        '/dev/shm',
        AGENT_PATH,
      ]);
      const foreign = factOf<string[]>(run, 'mounts').filter(
        (m) =>
          !planned.has(m) &&
          !m.startsWith('/proc/') &&
          m !== '/proc' &&
          !m.startsWith('/dev/') &&
          m !== '/dev' &&
          !/^\/etc\/[^/]+(\/[^/]+)?$/.test(m),
      );
      if (foreign.length > 0) fail(run, `unplanned mounts visible: ${foreign.join(', ')}`);
    },
  },
  {
    id: 'info-sys-absent',
    category: 'info-leak',
    tries: 'stat /sys, /sys/fs/cgroup, /sys/firmware and /sys/kernel',
    proves: 'sysfs (hardware inventory, cgroup tree of the host, firmware tables) is not mounted',
    expected: 'ENOENT',
    python: py`
for path in ['/sys', '/sys/fs/cgroup', '/sys/firmware', '/sys/kernel/debug', '/sys/class/net']:
    attempt('stat ' + path, lambda p=path: os.stat(p))
`,
    check: (run) => expectAllBlocked(run, 'ENOENT'),
  },
  {
    id: 'info-cgroup-path',
    category: 'info-leak',
    tries: 'read /proc/self/cgroup',
    proves:
      "the cgroup namespace hides the host's cgroup tree: no path above the sandbox's own cgroup is visible",
    expected:
      'every path is "/" or the sandbox\'s own leaf "/ironcage/<owner pid>-<id>" (the namespace is created ' +
      "before the sandbox is moved into its cgroup), and no component of the host's own cgroup paths appears",
    python: py`
fact('cgroup', [l.strip() for l in open('/proc/self/cgroup')])
`,
    check: (run) => {
      const lines = factOf<string[]>(run, 'cgroup');
      assert.ok(lines.length > 0);
      const leaky = lines.filter((l) => !/:\/$/.test(l) && !/:\/ironcage\/\d+-[A-Za-z0-9_.-]+$/.test(l));
      if (leaky.length > 0) fail(run, `host cgroup paths visible: ${leaky.join(' | ')}`);
      const hostParts = readFileSync('/proc/self/cgroup', 'utf8')
        .split('\n')
        .flatMap((l) => l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1).split('/'))
        .filter((part) => part !== '' && part !== 'ironcage');
      const shown = lines.flatMap((l) => l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1).split('/'));
      const leaked = hostParts.filter((part) => shown.includes(part));
      if (leaked.length > 0) fail(run, `host cgroup path components visible: ${leaked.join(', ')}`);
    },
  },
  {
    id: 'info-passwd',
    category: 'info-leak',
    tries: 'read /etc/passwd and /etc/group',
    proves: 'the account database is generated: host user names (and so host home paths) are not revealed',
    expected: 'users exactly root, sandbox, nobody; groups exactly root, sandbox, nogroup; root has no shell',
    python: py`
fact('users', [l.split(':')[0] for l in open('/etc/passwd') if l.strip()])
fact('root_shell', [l.strip().split(':')[6] for l in open('/etc/passwd') if l.startswith('root:')])
fact('groups', [l.split(':')[0] for l in open('/etc/group') if l.strip()])
`,
    check: (run) => {
      assert.deepEqual(factOf(run, 'users'), ['root', 'sandbox', 'nobody']);
      assert.deepEqual(factOf(run, 'groups'), ['root', 'sandbox', 'nogroup']);
      assert.deepEqual(factOf(run, 'root_shell'), ['/usr/sbin/nologin']);
    },
  },
  {
    id: 'info-sysv-ipc',
    category: 'info-leak',
    tries:
      'list SysV shared memory, semaphores and message queues while the host holds a shared memory segment',
    proves: 'the sandbox has its own IPC namespace: host SysV IPC objects can be neither seen nor attached',
    expected: 'the host segment exists; /proc/sysvipc/* inside lists nothing',
    prepare: () => {
      const out = execFileSync('ipcmk', ['-M', '4096'], { encoding: 'utf8' });
      const id = /(\d+)\s*$/.exec(out.trim())?.[1];
      if (id === undefined) throw new Error(`ipcmk printed no id: ${out}`);
      ipcSegments.push(id);
      onTeardown(() => {
        spawnSync('ipcrm', ['-m', id]); // already removed by the check unless the run threw
      });
    },
    python: py`
for kind in ['shm', 'sem', 'msg']:
    fact(kind, [l.split() for l in open('/proc/sysvipc/' + kind).readlines()[1:]])
`,
    check: (run) => {
      const id = ipcSegments.shift();
      try {
        const host = execFileSync('ipcs', ['-m', '-i', String(id)], { encoding: 'utf8' });
        assert.match(host, new RegExp(`shmid=${id}`), 'the host segment existed during the run');
        for (const kind of ['shm', 'sem', 'msg']) {
          const rows = factOf<string[][]>(run, kind);
          if (rows.length > 0) fail(run, `host SysV ${kind} objects visible: ${JSON.stringify(rows)}`);
        }
      } finally {
        spawnSync('ipcrm', ['-m', String(id)]);
      }
    },
  },
];
