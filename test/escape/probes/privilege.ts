/** Privilege: becoming root, gaining capabilities, creating namespaces, changing the mount table. */
import assert from 'node:assert/strict';
import { expectAllBlocked, expectAttempts, factOf, fail, type Probe } from '../harness.js';

const py = String.raw;

/** CLONE_NEW* flags (identical on x86_64 and aarch64). */
const NS_FLAGS = py`
NS = {'CLONE_NEWUSER': 0x10000000, 'CLONE_NEWNS': 0x00020000, 'CLONE_NEWNET': 0x40000000,
      'CLONE_NEWPID': 0x20000000, 'CLONE_NEWUTS': 0x04000000, 'CLONE_NEWIPC': 0x08000000,
      'CLONE_NEWCGROUP': 0x02000000, 'CLONE_NEWTIME': 0x00000080}
SIGCHLD = 17
def clone_child(flags):
    pid = syscall('clone', flags | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
`;

const STATUS = py`
status = {}
for line in open('/proc/self/status'):
    key, _, value = line.partition(':')
    status[key] = value.strip()
`;

export const privilegeProbes: Probe[] = [
  {
    id: 'priv-identity',
    category: 'privilege',
    tries: 'read the real, effective and saved ids, supplementary groups and the user namespace id maps',
    proves: 'the command runs as uid/gid 1000 and exactly one id is mapped into its user namespace',
    expected:
      'uid=euid=1000, gid=egid=1000, groups only 1000 or the overflow id 65534, uid_map "1000 <host> 1"',
    python: py`
fact('ids', list(os.getresuid()) + list(os.getresgid()))
fact('groups', os.getgroups())
fact('uid_map', open('/proc/self/uid_map').read().split())
fact('gid_map', open('/proc/self/gid_map').read().split())
`,
    check: (run) => {
      assert.deepEqual(factOf(run, 'ids'), [1000, 1000, 1000, 1000, 1000, 1000]);
      // 65534 is how the kernel shows a host group that is not mapped: it grants nothing.
      for (const g of factOf<number[]>(run, 'groups')) assert.ok(g === 1000 || g === 65534, `group ${g}`);
      for (const key of ['uid_map', 'gid_map']) {
        const map = factOf<string[]>(run, key);
        assert.equal(map.length, 3, `${key} has exactly one line: ${map.join(' ')}`);
        assert.equal(map[0], '1000');
        assert.equal(map[2], '1', `${key} maps a single id`);
      }
    },
  },
  {
    id: 'priv-capabilities',
    category: 'privilege',
    tries: 'read CapInh/CapPrm/CapEff/CapBnd/CapAmb from /proc/self/status',
    proves: 'the sandboxed process holds no capability at all, not even in its own user namespace',
    expected: 'all five capability sets are 0000000000000000',
    python: py`
${STATUS}
fact('caps', {k: status.get(k) for k in ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']})
`,
    check: (run) => {
      const caps = factOf<Record<string, string>>(run, 'caps');
      for (const [k, v] of Object.entries(caps)) assert.equal(v, '0000000000000000', `${k} must be empty`);
    },
  },
  {
    id: 'priv-no-new-privs',
    category: 'privilege',
    tries: 'read NoNewPrivs from /proc/self/status',
    proves: 'no_new_privs is set: no exec (setuid, file capabilities) can ever raise privilege',
    expected: 'NoNewPrivs: 1',
    python: py`
${STATUS}
fact('nnp', status.get('NoNewPrivs'))
`,
    check: (run) => assert.equal(factOf(run, 'nnp'), '1'),
  },
  {
    id: 'priv-seccomp-active',
    category: 'privilege',
    tries: 'read Seccomp and Seccomp_filters from /proc/self/status',
    proves:
      'the command runs under a seccomp filter (mode 2), so the kernel-surface probes test the real filter',
    expected: 'Seccomp: 2 and at least one filter',
    python: py`
${STATUS}
fact('seccomp', status.get('Seccomp'))
fact('filters', int(status.get('Seccomp_filters', '0')))
`,
    check: (run) => {
      assert.equal(factOf(run, 'seccomp'), '2');
      assert.ok(factOf<number>(run, 'filters') >= 1);
    },
  },
  {
    id: 'priv-setuid-programs',
    category: 'privilege',
    tries:
      'run the setuid-root programs present in /usr (su, mount, newgrp) and watch their effective uid in ' +
      '/proc/<pid>/status while they run',
    proves: 'setuid binaries give no root: their effective uid stays 1000 and su/mount achieve nothing',
    expected: 'su has its setuid bit; every observed euid is 1000; su prints no "0"; /tmp/m is not a mount',
    timeoutMs: 30_000,
    python: py`
import stat, subprocess
bits = {}
for path in ['/usr/bin/su', '/usr/bin/mount', '/usr/bin/newgrp', '/usr/bin/passwd']:
    try:
        bits[path] = bool(os.stat(path).st_mode & stat.S_ISUID)
    except OSError as e:
        bits[path] = ename(e.errno)
fact('setuid_bits', bits)
os.mkdir('/tmp/m')
def observe(argv):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    euids = set()
    deadline = time.time() + 1.5
    while time.time() < deadline and p.poll() is None:
        try:
            for line in open('/proc/%d/status' % p.pid):
                if line.startswith('Uid:'):
                    euids.add(int(line.split()[2]))
        except OSError:
            pass
        time.sleep(0.005)
    if p.poll() is None:
        p.kill()
    out = p.communicate()[0].decode('latin1')
    return {'euids': sorted(euids), 'exit': p.returncode, 'out': out[-300:]}
fact('su', observe(['/usr/bin/su', 'root', '-c', 'id -u']))
fact('mount', observe(['/usr/bin/mount', '-t', 'tmpfs', 'none', '/tmp/m']))
fact('newgrp', observe(['/usr/bin/newgrp', 'root']))
fact('tmp_m_is_mount', os.path.ismount('/tmp/m'))
`,
    check: (run) => {
      const bits = factOf<Record<string, unknown>>(run, 'setuid_bits');
      assert.equal(bits['/usr/bin/su'], true, 'su must carry its setuid bit, or this probe proves nothing');
      for (const prog of ['su', 'mount', 'newgrp']) {
        const seen = factOf<{ euids: number[]; exit: number; out: string }>(run, prog);
        const bad = seen.euids.filter((u) => u !== 1000);
        if (bad.length > 0) fail(run, `${prog} ran with effective uid ${bad.join(',')}`);
      }
      const su = factOf<{ out: string; exit: number }>(run, 'su');
      if (/^0$/m.test(su.out) || su.exit === 0) fail(run, 'su root succeeded');
      assert.equal(factOf(run, 'tmp_m_is_mount'), false, 'the setuid mount must not have mounted anything');
    },
  },
  {
    id: 'priv-unshare-userns',
    category: 'privilege',
    tries: 'unshare(CLONE_NEWUSER), alone and combined with a mount namespace',
    proves:
      'no nested user namespace: that is the step that would give the process a full capability set to ' +
      'remount the read-only view',
    expected: 'EPERM (seccomp)',
    python: py`
${NS_FLAGS}
attempt('unshare(CLONE_NEWUSER)', lambda: syscall('unshare', NS['CLONE_NEWUSER']))
attempt('unshare(CLONE_NEWUSER|CLONE_NEWNS)', lambda: syscall('unshare', NS['CLONE_NEWUSER'] | NS['CLONE_NEWNS']))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-clone-userns',
    category: 'privilege',
    tries: 'clone(CLONE_NEWUSER | SIGCHLD) and clone with every other namespace flag',
    proves: 'namespaces cannot be created through clone() either (not only through unshare)',
    expected: 'EPERM for every flag',
    python: py`
${NS_FLAGS}
for name, flag in NS.items():
    # CLONE_NEWTIME shares its bit with the exit signal in clone(); it only exists for unshare and clone3.
    if name != 'CLONE_NEWTIME':
        attempt('clone(%s)' % name, lambda f=flag: clone_child(f))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-unshare-namespaces',
    category: 'privilege',
    tries: 'unshare every other namespace type (mount, net, pid, uts, ipc, cgroup, time)',
    proves: 'the namespace set is fixed by ironcage; the command cannot build its own',
    expected: 'EPERM for every flag',
    python: py`
${NS_FLAGS}
for name, flag in NS.items():
    if name != 'CLONE_NEWUSER':
        attempt('unshare(%s)' % name, lambda f=flag: syscall('unshare', f))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-mount',
    category: 'privilege',
    tries: 'mount a tmpfs, bind-mount / and remount /usr read-write',
    proves: 'the mount table cannot be changed from inside (no uncovering of hidden paths, no rw remount)',
    expected: 'EPERM for every mount(2) call',
    python: py`
MS_REMOUNT, MS_BIND, MS_RDONLY = 32, 4096, 1
os.mkdir('/tmp/mnt')
attempt('mount tmpfs /tmp/mnt', lambda: syscall('mount', 'none', '/tmp/mnt', 'tmpfs', 0, None))
attempt('bind / onto /tmp/mnt', lambda: syscall('mount', '/', '/tmp/mnt', None, MS_BIND, None))
attempt('remount /usr rw', lambda: syscall('mount', None, '/usr', None, MS_REMOUNT | MS_BIND, None))
attempt('remount / rw', lambda: syscall('mount', None, '/', None, MS_REMOUNT, None))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-umount',
    category: 'privilege',
    tries: 'umount2 /usr, /etc/passwd, /tmp and /proc (plain and MNT_DETACH)',
    proves: 'mounts cannot be removed to reveal what lies beneath them',
    expected: 'EPERM',
    python: py`
MNT_DETACH = 2
for target in ['/usr', '/etc/passwd', '/tmp', '/proc']:
    attempt('umount ' + target, lambda t=target: syscall('umount2', t, 0))
    attempt('umount -l ' + target, lambda t=target: syscall('umount2', t, MNT_DETACH))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-pivot-root',
    category: 'privilege',
    tries: 'pivot_root("/tmp", "/tmp/old") and pivot_root(".", ".")',
    proves: 'the root of the sandbox cannot be swapped',
    expected: 'EPERM',
    python: py`
os.mkdir('/tmp/old')
attempt('pivot_root /tmp /tmp/old', lambda: syscall('pivot_root', '/tmp', '/tmp/old'))
os.chdir('/tmp')
attempt('pivot_root . .', lambda: syscall('pivot_root', '.', '.'))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-chroot',
    category: 'privilege',
    tries: 'chroot("/tmp") (the first step of the classic chroot-breakout with a kept directory fd)',
    proves: 'chroot is refused, so the fd-outside-chroot escape cannot even start',
    expected: 'EPERM',
    python: py`
keep = os.open('/', os.O_RDONLY)
attempt('chroot /tmp', lambda: syscall('chroot', '/tmp'))
attempt('chroot .', lambda: syscall('chroot', '.'))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-setns',
    category: 'privilege',
    tries: 'open /proc/self/ns/* and /proc/1/ns/* and setns() into each',
    proves: 'namespace fds cannot be used to enter another namespace',
    expected: 'opening may work; every setns fails with EPERM',
    python: py`
for pid in ['self', '1']:
    for ns in ['user', 'mnt', 'net', 'pid', 'uts', 'ipc', 'cgroup']:
        path = '/proc/%s/ns/%s' % (pid, ns)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            fact('open ' + path, ename(e.errno))
            continue
        attempt('setns ' + path, lambda f=fd: syscall('setns', f, 0))
`,
    check: (run) => expectAllBlocked(run, 'EPERM'),
  },
  {
    id: 'priv-become-root',
    category: 'privilege',
    tries: 'setuid(0), setresuid(0,0,0), setgid(0), setgroups([0]) and capset() raising every capability',
    proves: 'there is no way to uid 0 or to capabilities inside',
    expected: 'EPERM (or EINVAL: uid/gid 0 is not even mapped in the sandbox user namespace)',
    python: py`
attempt('setuid(0)', lambda: os.setuid(0))
attempt('setresuid(0,0,0)', lambda: os.setresuid(0, 0, 0))
attempt('setgid(0)', lambda: os.setgid(0))
attempt('setgroups([0])', lambda: os.setgroups([0]))
header = ctypes.create_string_buffer(struct.pack('<Ii', 0x20080522, 0))
data = ctypes.create_string_buffer(struct.pack('<6I', *([0xffffffff] * 6)))
attempt('capset(all)', lambda: syscall('capset', header, data))
fact('euid_after', os.geteuid())
`,
    check: (run) => {
      expectAttempts(run, {
        'setuid(0)': ['EPERM', 'EINVAL'],
        'setresuid(0,0,0)': ['EPERM', 'EINVAL'],
        'setgid(0)': ['EPERM', 'EINVAL'],
        'setgroups([0])': ['EPERM', 'EINVAL'],
        'capset(all)': 'EPERM',
      });
      assert.equal(factOf(run, 'euid_after'), 1000);
    },
  },
  {
    id: 'priv-chmod-setuid',
    category: 'privilege',
    tries: 'create a file in /tmp, chmod u+s/g+s (also via fchmod) and chown it to root',
    proves:
      'no set-id program can be made inside (one left in a writable bind would run as the sandbox host uid for ' +
      'any host user): the seccomp filter refuses set-id bits, chown to root is refused, /tmp is nosuid',
    expected: 'chmod 0755 works; chmod/fchmod with 6755 fail with EPERM; chown to 0 fails; owner stays 1000',
    python: py`
import shutil
shutil.copy('/usr/bin/id', '/tmp/myid')
attempt('chmod 0755', lambda: os.chmod('/tmp/myid', 0o755))
attempt('chmod 6755', lambda: os.chmod('/tmp/myid', 0o6755))
def fchmod_setuid():
    fd = os.open('/tmp/myid', os.O_RDONLY)
    try:
        os.fchmod(fd, 0o4755)
    finally:
        os.close(fd)
attempt('fchmod 4755', fchmod_setuid)
attempt('chown 0:0', lambda: os.chown('/tmp/myid', 0, 0))
st = os.stat('/tmp/myid')
fact('owner', [st.st_uid, st.st_gid])
fact('euid_via_copy', __import__('subprocess').run(['/tmp/myid', '-u'], capture_output=True, text=True).stdout.strip())
opts = [l.split()[5] for l in open('/proc/self/mountinfo') if l.split()[4] == '/tmp']
fact('tmp_opts', opts[-1] if opts else '')
`,
    check: (run) => {
      expectAttempts(run, {
        'chmod 0755': 'ok',
        'chmod 6755': 'EPERM',
        'fchmod 4755': 'EPERM',
        'chown 0:0': ['EPERM', 'EINVAL'],
      });
      assert.deepEqual(factOf(run, 'owner'), [1000, 1000]);
      assert.equal(factOf(run, 'euid_via_copy'), '1000', 'running the setuid copy does not change the uid');
      assert.ok(factOf<string>(run, 'tmp_opts').split(',').includes('nosuid'), '/tmp must be nosuid');
    },
  },
];
