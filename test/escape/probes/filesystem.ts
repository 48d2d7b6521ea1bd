/** Filesystem escape: writing outside the sandbox's scratch space, reading host secrets, walking out of the view. */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  expectAllBlocked,
  expectAttempts,
  expectExited,
  factOf,
  fail,
  type Probe,
  reportOf,
  scratchHostDir,
} from '../harness.js';

const py = String.raw;

/**
 * Top-level names the sandbox's `/` may contain: the default preset's system binds, /etc, the scratch mounts,
 * /proc, /dev and ironcage's own /.ironcage. Host-only names (root, var, run, boot, sys, work, ...) must be absent.
 */
export const SANDBOX_ROOT_ENTRIES = new Set([
  'usr',
  'bin',
  'sbin',
  'lib',
  'lib32',
  'lib64',
  'libx32',
  'etc',
  'tmp',
  'home',
  'dev',
  'proc',
  '.ironcage',
]);

function expectOnlySandboxRoot(
  run: Parameters<NonNullable<Probe['check']>>[0],
  entries: unknown,
  where: string,
) {
  if (!Array.isArray(entries)) fail(run, `${where}: no directory listing was reported`);
  const foreign = (entries as string[]).filter((e) => !SANDBOX_ROOT_ENTRIES.has(e));
  if (foreign.length > 0) fail(run, `${where} shows host entries: ${foreign.join(', ')}`);
}

/** Errnos that mean "a write to the read-only system view was refused" (EROFS: ro mount; EACCES: not ours). */
const READ_ONLY = ['EROFS', 'EACCES'];

export const filesystemProbes: Probe[] = [
  {
    id: 'fs-write-usr',
    category: 'filesystem',
    tries:
      'create, overwrite, rename and mkdir inside /usr (the host system directories bound into the sandbox)',
    proves: '/usr is bound read-only: nothing the sandbox does can change the host system files',
    expected:
      'EROFS for create, rename, mkdir and chmod; EROFS or EACCES for opening a root-owned file for writing',
    python: py`
attempt('create /usr/bin/ironcage-probe', lambda: os.open('/usr/bin/ironcage-probe', os.O_WRONLY | os.O_CREAT, 0o755))
attempt('open /usr/bin/su for writing', lambda: os.open('/usr/bin/su', os.O_WRONLY))
attempt('rename /usr/lib/os-release', lambda: os.rename('/usr/lib/os-release', '/usr/lib/os-release.bak'))
attempt('mkdir /usr/ironcage-probe', lambda: os.mkdir('/usr/ironcage-probe'))
attempt('chmod /usr/bin/su', lambda: os.chmod('/usr/bin/su', 0o777))
`,
    check: (run) =>
      expectAttempts(run, {
        'create /usr/bin/ironcage-probe': 'EROFS',
        // Unprivileged, su belongs to an unmapped uid and the permission check answers first (EACCES).
        'open /usr/bin/su for writing': READ_ONLY,
        'rename /usr/lib/os-release': 'EROFS',
        'mkdir /usr/ironcage-probe': 'EROFS',
        'chmod /usr/bin/su': 'EROFS',
      }),
  },
  {
    id: 'fs-write-etc',
    category: 'filesystem',
    tries:
      'create /etc/ld.so.preload and other files in /etc, and write the generated /etc/passwd and /etc/hosts',
    proves:
      '/etc inside the sandbox cannot be written (no planted preload library, no rewritten passwd or hosts)',
    expected: 'every attempt fails with EROFS (or EACCES)',
    python: py`
attempt('create /etc/ld.so.preload', lambda: os.open('/etc/ld.so.preload', os.O_WRONLY | os.O_CREAT, 0o644))
attempt('create /etc/ironcage-probe', lambda: os.open('/etc/ironcage-probe', os.O_WRONLY | os.O_CREAT, 0o644))
attempt('mkdir /etc/cron.d', lambda: os.mkdir('/etc/cron.d'))
attempt('append to /etc/passwd', lambda: os.open('/etc/passwd', os.O_WRONLY | os.O_APPEND))
attempt('write /etc/hosts', lambda: os.open('/etc/hosts', os.O_WRONLY | os.O_TRUNC))
attempt('write /etc/os-release', lambda: os.open('/etc/os-release', os.O_WRONLY))
`,
    check: (run) => expectAllBlocked(run, READ_ONLY),
  },
  {
    id: 'fs-write-root',
    category: 'filesystem',
    tries: 'create files and directories directly in / and in /dev',
    proves:
      'the sandbox root and /dev are not writable: only the declared scratch mounts take writes (and those have ' +
      'a size cap; an unbounded writable root would be a memory sink outside every limit)',
    expected: 'every attempt fails with EROFS (or EACCES)',
    python: py`
attempt('create /ironcage-probe', lambda: os.open('/ironcage-probe', os.O_WRONLY | os.O_CREAT, 0o644))
attempt('mkdir /opt', lambda: os.mkdir('/opt'))
attempt('symlink /var -> /tmp', lambda: os.symlink('/tmp', '/var'))
attempt('create /dev/ironcage-probe', lambda: os.open('/dev/ironcage-probe', os.O_WRONLY | os.O_CREAT, 0o644))
attempt('mkdir /dev/ironcage-dir', lambda: os.mkdir('/dev/ironcage-dir'))
`,
    check: (run) => expectAllBlocked(run, READ_ONLY),
  },
  {
    id: 'fs-write-proc-sys',
    category: 'filesystem',
    tries:
      'open host-global kernel tunables under /proc/sys for writing (core_pattern, drop_caches, ...) and write ' +
      'the CURRENT value back into kernel.randomize_va_space and fs.suid_dumpable (a no-op if it works)',
    proves:
      'global sysctls stay out of reach: kernel.core_pattern alone would run a sandbox-chosen program as host ' +
      'root, randomize_va_space would switch off ASLR for the whole host',
    expected: 'every open and write fails with EACCES or EROFS; absent tunables (ENOENT) are fine',
    python: py`
for path in ['/proc/sys/kernel/core_pattern', '/proc/sys/kernel/core_uses_pid', '/proc/sys/vm/drop_caches',
             '/proc/sys/kernel/modprobe', '/proc/sys/kernel/sysrq', '/proc/sys/kernel/panic']:
    attempt('open for writing ' + path, lambda p=path: os.open(p, os.O_WRONLY))
for path in ['/proc/sys/kernel/randomize_va_space', '/proc/sys/fs/suid_dumpable']:
    def write_back(p=path):
        current = open(p).read()
        with open(p, 'w') as f:
            f.write(current)
        return 'wrote %r back' % current
    attempt('write back ' + path, write_back)
attempt('open for writing /proc/sysrq-trigger', lambda: os.open('/proc/sysrq-trigger', os.O_WRONLY))
`,
    check: (run) => {
      const report = reportOf(run);
      // ENOENT: this kernel has no such tunable (e.g. no module support), which is not a way in either.
      expectAllBlocked(run, ['EACCES', 'EROFS', 'EPERM', 'ENOENT']);
      const real = report.attempts.filter((a) => a.errno !== 'ENOENT');
      if (real.length < 4) fail(run, 'too few tunables exist for this probe to mean anything');
    },
  },
  {
    id: 'fs-host-shadow',
    category: 'filesystem',
    tries: 'read /etc/shadow, /etc/gshadow, /etc/sudoers and the host SSH keys',
    proves: 'host password hashes, sudo rules and SSH host keys are not in the sandbox at all',
    expected: 'every open fails with ENOENT',
    python: py`
for path in ['/etc/shadow', '/etc/gshadow', '/etc/shadow-', '/etc/sudoers', '/etc/ssh/ssh_host_ed25519_key',
             '/etc/ssh/ssh_host_rsa_key', '/etc/ssl/private']:
    attempt('read ' + path, lambda p=path: open(p, 'rb').read())
`,
    check: (run) => expectAllBlocked(run, 'ENOENT'),
  },
  {
    id: 'fs-root-home',
    category: 'filesystem',
    tries: "list /root and read root's shell files",
    proves: "the host root account's home is not visible",
    expected: 'ENOENT for every attempt',
    python: py`
attempt('list /root', lambda: os.listdir('/root'))
attempt('read /root/.bashrc', lambda: open('/root/.bashrc', 'rb').read())
attempt('read /root/.ssh/authorized_keys', lambda: open('/root/.ssh/authorized_keys', 'rb').read())
`,
    check: (run) => expectAllBlocked(run, 'ENOENT'),
  },
  {
    id: 'fs-host-homes',
    category: 'filesystem',
    tries:
      'list every real host home directory (the test passes /root and /home/* of the host) and their ~/.ssh',
    proves: 'no host user home, SSH key or cloud credential is reachable; /home holds only the sandbox home',
    expected: 'ENOENT for every host home and ~/.ssh; /home lists exactly ["sandbox"]',
    python: (fx) => py`
homes = ${JSON.stringify(fx.hostHomes)}
for home in homes:
    attempt('list ' + home, lambda h=home: os.listdir(h))
    attempt('list ' + home + '/.ssh', lambda h=home: os.listdir(h + '/.ssh'))
    attempt('read ' + home + '/.aws/credentials', lambda h=home: open(h + '/.aws/credentials', 'rb').read())
fact('home', sorted(os.listdir('/home')))
fact('sandbox_home', sorted(os.listdir('/home/sandbox')))
`,
    check: (run) => {
      expectAllBlocked(run, 'ENOENT');
      assert.deepEqual(factOf(run, 'home'), ['sandbox'], 'only the sandbox home exists under /home');
      assert.deepEqual(factOf(run, 'sandbox_home'), [], 'the sandbox home starts empty (no host files)');
    },
  },
  {
    id: 'fs-host-tmp-file',
    category: 'filesystem',
    tries: "read a file the test just wrote in the host's /tmp, by its exact path",
    proves: "/tmp is the sandbox's own tmpfs: files other host processes keep in /tmp are not visible",
    expected: 'ENOENT for the file and its directory',
    python: (fx) => py`
path = ${JSON.stringify(fx.hostTmpFile)}
attempt('read host tmp file', lambda: open(path, 'rb').read())
attempt('list host tmp dir', lambda: os.listdir(os.path.dirname(path)))
`,
    check: (run) => expectAllBlocked(run, 'ENOENT'),
  },
  {
    id: 'fs-run-and-var',
    category: 'filesystem',
    tries: 'list /run, /var/run and /var/lib (daemon sockets, pid files, container state)',
    proves: 'host runtime state directories are absent from the view',
    expected: 'ENOENT for every attempt',
    python: py`
for path in ['/run', '/var/run', '/var', '/var/lib/docker', '/run/user', '/run/secrets']:
    attempt('list ' + path, lambda p=path: os.listdir(p))
`,
    check: (run) => expectAllBlocked(run, 'ENOENT'),
  },
  {
    id: 'fs-daemon-sockets',
    category: 'filesystem',
    tries:
      'connect to the Docker, containerd, D-Bus, systemd and PostgreSQL Unix sockets by their host paths',
    proves: 'no host daemon socket (a root-equivalent door such as docker.sock) exists inside',
    expected: 'every connect fails with ENOENT',
    python: py`
for path in ['/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock',
             '/run/dbus/system_bus_socket', '/run/systemd/private', '/run/postgresql/.s.PGSQL.5432',
             '/var/run/crio/crio.sock', '/run/podman/podman.sock']:
    def connect(p=path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(p)
        return 'connected'
    attempt('connect ' + path, connect)
`,
    check: (run) => expectAllBlocked(run, 'ENOENT'),
  },
  {
    id: 'fs-symlink-to-secret',
    category: 'filesystem',
    tries:
      'create symlinks in /tmp pointing at /etc/shadow, /root/.bashrc and the host tmp file, then read them',
    proves:
      'symlinks resolve inside the sandbox view: a link cannot name a host file the view does not contain',
    expected: 'creating the links works; reading through them fails with ENOENT',
    python: (fx) => py`
targets = {'shadow': '/etc/shadow', 'root-bashrc': '/root/.bashrc', 'host-tmp': ${JSON.stringify(fx.hostTmpFile)}}
for name, target in targets.items():
    attempt('symlink ' + name, lambda n=name, t=target: os.symlink(t, '/tmp/link-' + n))
    attempt('read via ' + name, lambda n=name: open('/tmp/link-' + n, 'rb').read())
`,
    check: (run) =>
      expectAttempts(run, {
        'symlink shadow': 'ok',
        'read via shadow': 'ENOENT',
        'symlink root-bashrc': 'ok',
        'read via root-bashrc': 'ENOENT',
        'symlink host-tmp': 'ok',
        'read via host-tmp': 'ENOENT',
      }),
  },
  {
    id: 'fs-symlink-to-root',
    category: 'filesystem',
    tries: 'create /tmp/rootlink -> / and list it, and ../.. through it',
    proves: 'a link to / shows the sandbox root, never the host root',
    expected: 'the listing holds only sandbox entries (usr, etc, tmp, home, dev, proc, ...)',
    python: py`
attempt('symlink /tmp/rootlink -> /', lambda: os.symlink('/', '/tmp/rootlink'))
fact('via_link', sorted(os.listdir('/tmp/rootlink')))
fact('via_link_parent', sorted(os.listdir('/tmp/rootlink/../../..')))
`,
    check: (run) => {
      expectAttempts(run, { 'symlink /tmp/rootlink -> /': 'ok' });
      expectOnlySandboxRoot(run, factOf(run, 'via_link'), '/tmp/rootlink');
      expectOnlySandboxRoot(run, factOf(run, 'via_link_parent'), '/tmp/rootlink/../../..');
    },
  },
  {
    id: 'fs-hardlink-host-file',
    category: 'filesystem',
    tries:
      'hard-link host files (/usr/bin/su, /etc/passwd, the agent) into /tmp, also via /proc/self/fd + AT_SYMLINK_FOLLOW',
    proves:
      'host files cannot be given a second, writable name: links across the read-only binds are refused',
    expected: 'EXDEV into /tmp (different mount), EROFS inside /usr',
    python: py`
attempt('link /usr/bin/su -> /tmp/su', lambda: os.link('/usr/bin/su', '/tmp/su'))
attempt('link /etc/passwd -> /tmp/passwd', lambda: os.link('/etc/passwd', '/tmp/passwd'))
attempt('link agent -> /tmp/agent', lambda: os.link('/.ironcage/agent', '/tmp/agent'))
attempt('link /usr/bin/su -> /usr/bin/su2', lambda: os.link('/usr/bin/su', '/usr/bin/su2'))
fd = os.open('/usr/bin/su', os.O_RDONLY)
attempt('linkat /proc/self/fd -> /tmp/su-fd',
        lambda: os.link('/proc/self/fd/%d' % fd, '/tmp/su-fd', follow_symlinks=True))
`,
    check: (run) =>
      expectAttempts(run, {
        'link /usr/bin/su -> /tmp/su': 'EXDEV',
        'link /etc/passwd -> /tmp/passwd': 'EXDEV',
        'link agent -> /tmp/agent': 'EXDEV',
        'link /usr/bin/su -> /usr/bin/su2': 'EROFS',
        'linkat /proc/self/fd -> /tmp/su-fd': 'EXDEV',
      }),
  },
  {
    id: 'fs-dotdot-traversal',
    category: 'filesystem',
    tries: 'walk 40 levels of ".." up from the workdir, then list and open host paths relative to it',
    proves: '".." stops at the sandbox root; relative paths cannot climb into the host filesystem',
    expected: 'realpath is "/", the listing holds only sandbox entries, host files give ENOENT',
    python: py`
os.chdir('/home/sandbox')
up = '/'.join(['..'] * 40)
fact('cwd', os.getcwd())
fact('realpath', os.path.realpath(up))
fact('listing', sorted(os.listdir(up)))
attempt('read ../../etc/shadow', lambda: open(up + '/etc/shadow', 'rb').read())
attempt('list ../../root', lambda: os.listdir(up + '/root'))
attempt('list ../../work', lambda: os.listdir(up + '/work'))
`,
    check: (run) => {
      expectAllBlocked(run, 'ENOENT');
      assert.equal(factOf(run, 'cwd'), '/home/sandbox');
      assert.equal(factOf(run, 'realpath'), '/');
      expectOnlySandboxRoot(run, factOf(run, 'listing'), '../ x40');
    },
  },
  {
    id: 'fs-proc-pid-root',
    category: 'filesystem',
    tries: 'list /proc/<pid>/root of every visible process (pid 1 included) and read /etc/shadow through it',
    proves:
      "/proc/<pid>/root never leads to the host root: every process's root is the sandbox root (or refused)",
    expected:
      'each listing is refused (EACCES) or holds only sandbox entries; /etc/shadow through it is ENOENT/EACCES',
    python: py`
roots = {}
for pid in sorted((p for p in os.listdir('/proc') if p.isdigit()), key=int):
    try:
        roots[pid] = sorted(os.listdir('/proc/%s/root' % pid))
    except OSError as e:
        roots[pid] = ename(e.errno)
    attempt('read /proc/%s/root/etc/shadow' % pid, lambda p=pid: open('/proc/%s/root/etc/shadow' % p, 'rb').read())
fact('roots', roots)
`,
    check: (run) => {
      const roots = factOf<Record<string, string[] | string>>(run, 'roots');
      assert.ok(Object.keys(roots).includes('1'), 'pid 1 was examined');
      for (const [pid, listing] of Object.entries(roots)) {
        if (typeof listing === 'string') {
          if (listing !== 'EACCES' && listing !== 'ENOENT')
            fail(run, `/proc/${pid}/root: unexpected ${listing}`);
        } else {
          expectOnlySandboxRoot(run, listing, `/proc/${pid}/root`);
        }
      }
      expectAllBlocked(run, ['ENOENT', 'EACCES']);
    },
  },
  {
    id: 'fs-proc-self-root',
    category: 'filesystem',
    tries: 'walk /proc/self/root/../.. and /proc/self/cwd/../../.. and read host files through them',
    proves: 'the magic links of /proc/self resolve inside the sandbox view only',
    expected: 'listings hold only sandbox entries; host files give ENOENT',
    python: py`
fact('self_root', sorted(os.listdir('/proc/self/root/../../..')))
fact('self_cwd', sorted(os.listdir('/proc/self/cwd/../../../../..')))
attempt('read /proc/self/root/etc/shadow', lambda: open('/proc/self/root/etc/shadow', 'rb').read())
attempt('list /proc/self/root/root', lambda: os.listdir('/proc/self/root/root'))
attempt('list /proc/thread-self/root/run', lambda: os.listdir('/proc/thread-self/root/run'))
`,
    check: (run) => {
      expectAllBlocked(run, 'ENOENT');
      expectOnlySandboxRoot(run, factOf(run, 'self_root'), '/proc/self/root/../../..');
      expectOnlySandboxRoot(run, factOf(run, 'self_cwd'), '/proc/self/cwd/../../..');
    },
  },
  {
    id: 'fs-open-by-handle',
    category: 'filesystem',
    tries:
      'name_to_handle_at on a bound file, then open_by_handle_at with that handle and with a forged handle for ' +
      'inode 2 (the root directory of the host filesystem behind /usr)',
    proves: 'file handles (the "shocker" container escape) cannot open host files past the bind boundaries',
    expected: 'both syscalls fail with EPERM (seccomp)',
    python: py`
AT_FDCWD = -100
handle = ctypes.create_string_buffer(8 + 128)
struct.pack_into('<Ii', handle, 0, 128, 0)
mount_id = ctypes.c_int(0)
attempt('name_to_handle_at /usr/bin/su', lambda: syscall('name_to_handle_at', AT_FDCWD, '/usr/bin/su', handle, ctypes.byref(mount_id), 0))
mount_fd = os.open('/usr', os.O_RDONLY | os.O_DIRECTORY)
forged = ctypes.create_string_buffer(8 + 8)
struct.pack_into('<IiII', forged, 0, 8, 1, 2, 0)  # FILEID_INO32_GEN: inode 2, generation 0
attempt('open_by_handle_at forged root handle', lambda: syscall('open_by_handle_at', mount_fd, forged, os.O_RDONLY | os.O_DIRECTORY))
attempt('open_by_handle_at returned handle', lambda: syscall('open_by_handle_at', mount_fd, handle, os.O_RDONLY))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'fs-tmp-stays-private',
    category: 'filesystem',
    tries: 'write a uniquely named file into /tmp and /dev/shm inside the sandbox',
    proves:
      "the sandbox's /tmp and /dev/shm are private tmpfs mounts: nothing written there reaches the host's",
    expected: 'the writes work inside; afterwards neither file exists on the host',
    python: (fx) => py`
name = 'ironcage-escape-${fx.token}-private'
attempt('write /tmp', lambda: open('/tmp/' + name, 'w').write('x'))
attempt('write /dev/shm', lambda: open('/dev/shm/' + name, 'w').write('x'))
fact('tmp_listing', os.listdir('/tmp'))
`,
    check: (run, fx) => {
      expectAttempts(run, { 'write /tmp': 'ok', 'write /dev/shm': 'ok' });
      const name = `ironcage-escape-${fx.token}-private`;
      assert.ok((factOf<string[]>(run, 'tmp_listing') ?? []).includes(name), 'the file existed inside');
      for (const dir of ['/tmp', '/dev/shm']) {
        if (existsSync(join(dir, name))) fail(run, `${dir}/${name} appeared on the HOST`);
      }
    },
  },
  {
    id: 'fs-agent-tamper',
    category: 'filesystem',
    tries:
      'overwrite, truncate, chmod and rename the in-sandbox agent binary /.ironcage/agent (a read-only bind of ' +
      'the host build as a user; a private mode-0555 copy on a read-only mount as root)',
    proves: 'the sandbox cannot plant code in the agent that every later sandbox runs',
    expected:
      'EROFS (read-only mount), EACCES (mode 0555 copy) or ETXTBSY (running) for open and truncate; EROFS for chmod; ' +
      'EROFS, EBUSY or EACCES for rename',
    python: py`
attempt('open agent for writing', lambda: os.open('/.ironcage/agent', os.O_WRONLY))
attempt('truncate agent', lambda: os.truncate('/.ironcage/agent', 0))
attempt('chmod agent', lambda: os.chmod('/.ironcage/agent', 0o777))
attempt('rename agent', lambda: os.rename('/.ironcage/agent', '/.ironcage/old'))
`,
    check: (run) =>
      expectAttempts(run, {
        // ETXTBSY: the agent is running; EACCES: the root-mode copy is 0555. chmod shows the mount is read-only.
        'open agent for writing': ['EROFS', 'ETXTBSY', 'EACCES'],
        'truncate agent': ['EROFS', 'EACCES'],
        'chmod agent': 'EROFS',
        'rename agent': ['EROFS', 'EBUSY', 'EACCES'],
      }),
  },
  {
    id: 'fs-mount-flags',
    category: 'filesystem',
    tries: 'read /proc/self/mountinfo and look at the flags of the system and scratch mounts',
    proves:
      'system binds are mounted ro; every writable mount is nosuid and nodev (no device or setuid tricks)',
    expected: '/usr ro,nosuid,nodev; /tmp, /home/sandbox, /dev/shm rw,nosuid,nodev',
    python: py`
flags = {}
for line in open('/proc/self/mountinfo'):
    parts = line.split()
    flags[parts[4]] = parts[5]
fact('flags', flags)
`,
    check: (run) => {
      const flags = factOf<Record<string, string>>(run, 'flags');
      const opts = (mount: string) => {
        const f = flags[mount];
        if (f === undefined) fail(run, `${mount} is not a mount point inside`);
        return f.split(',');
      };
      for (const o of ['ro', 'nosuid', 'nodev']) assert.ok(opts('/usr').includes(o), `/usr must be ${o}`);
      for (const m of ['/tmp', '/home/sandbox', '/dev/shm']) {
        for (const o of ['nosuid', 'nodev']) assert.ok(opts(m).includes(o), `${m} must be ${o}`);
      }
    },
  },
  {
    id: 'fs-dev-nodes',
    category: 'filesystem',
    tries: 'open raw disks, kernel memory, the kernel log, KVM, TUN, vsock and FUSE device nodes',
    proves: '/dev is minimal: no device node that reaches hardware, kernel memory or the hypervisor',
    expected: 'ENOENT for every node',
    python: py`
for path in ['/dev/mem', '/dev/kmem', '/dev/port', '/dev/sda', '/dev/vda', '/dev/nvme0n1', '/dev/kmsg',
             '/dev/kvm', '/dev/net/tun', '/dev/vsock', '/dev/fuse', '/dev/userfaultfd', '/dev/loop0',
             '/dev/mapper/control', '/dev/cpu/0/msr']:
    attempt('open ' + path, lambda p=path: os.open(p, os.O_RDONLY))
fact('dev', sorted(os.listdir('/dev')))
`,
    check: (run) => {
      expectAllBlocked(run, 'ENOENT');
      const allowed = new Set([
        'null',
        'zero',
        'full',
        'random',
        'urandom',
        'tty',
        'pts',
        'ptmx',
        'shm',
        'fd',
      ]);
      for (const n of ['stdin', 'stdout', 'stderr', 'core', 'console', 'mqueue']) allowed.add(n);
      const extra = factOf<string[]>(run, 'dev').filter((d) => !allowed.has(d));
      if (extra.length > 0) fail(run, `unexpected /dev entries: ${extra.join(', ')}`);
    },
  },
  {
    id: 'fs-deny-wins-in-bind',
    category: 'filesystem',
    tries:
      'with a user bind of a host directory that contains a hidden subdirectory and a hidden file, read both ' +
      'through the bind, and write into the read-only bind',
    proves: 'filesystem.hidden wins over a bind that covers it, and a readOnly bind really is read-only',
    expected:
      'the visible file reads; hidden dir EACCES; hidden file EACCES (or reads as empty); writes EROFS',
    policy: () => {
      const dir = boundDir();
      return { filesystem: { readOnly: [dir], hidden: [join(dir, 'secret-dir'), join(dir, 'secret.txt')] } };
    },
    python: () => {
      const dir = boundDir();
      return py`
d = ${JSON.stringify(dir)}
attempt('read visible file', lambda: open(d + '/visible.txt').read())
attempt('list hidden dir', lambda: os.listdir(d + '/secret-dir'))
attempt('read file in hidden dir', lambda: open(d + '/secret-dir/key', 'rb').read())
attempt('read hidden file', lambda: open(d + '/secret.txt', 'rb').read())
attempt('write into readOnly bind', lambda: os.open(d + '/new', os.O_WRONLY | os.O_CREAT, 0o644))
`;
    },
    check: (run) => {
      expectExited(run);
      expectAttempts(run, {
        'read visible file': 'ok',
        'list hidden dir': 'EACCES',
        'read file in hidden dir': 'EACCES',
        'read hidden file': ['ok', 'EACCES'],
        'write into readOnly bind': 'EROFS',
      });
      const hiddenFile = reportOf(run).attempts.find((a) => a.label === 'read hidden file');
      if (hiddenFile?.ok && hiddenFile.detail !== "b''")
        fail(run, `the hidden file was read: ${hiddenFile.detail}`);
      const visible = reportOf(run).attempts.find((a) => a.label === 'read visible file');
      assert.match(visible?.detail ?? '', /visible content/);
    },
  },
];

let bound: string | null = null;

/** A host directory with a visible file, a secret file and a secret directory (created once). */
function boundDir(): string {
  if (bound !== null) return bound;
  const dir = scratchHostDir('ironcage-escape-bind-');
  writeFileSync(join(dir, 'visible.txt'), 'visible content\n');
  writeFileSync(join(dir, 'secret.txt'), 'SECRET-FILE-CONTENT\n');
  mkdirSync(join(dir, 'secret-dir'));
  writeFileSync(join(dir, 'secret-dir', 'key'), 'SECRET-KEY\n');
  assert.equal(readFileSync(join(dir, 'secret.txt'), 'utf8'), 'SECRET-FILE-CONTENT\n');
  bound = dir;
  return dir;
}
