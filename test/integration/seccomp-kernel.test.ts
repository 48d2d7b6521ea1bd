/**
 * The compiled filters on the real kernel: bwrap loads them from fd 3 and the commands below run under them.
 * Each refusal is checked by errno, and a control run without the filter shows the same probe would have
 * got a different answer, so a filter that silently did nothing would fail here.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { BWRAP_PROBE_ARGS } from '../../src/isolation/preflight/bwrap.js';
import { archFromNode, SYSCALL_TABLES } from '../../src/isolation/seccomp/arch.js';
import { compileSeccomp } from '../../src/isolation/seccomp/index.js';

const haveBwrap = spawnSync('bwrap', ['--version']).status === 0;
const arch = archFromNode();
const nr = SYSCALL_TABLES[arch];

// The doctor's minimal probe view, plus a scratch /tmp for the compiler checks.
const VIEW = [
  ...BWRAP_PROBE_ARGS,
  '--tmpfs',
  '/tmp',
  '--chdir',
  '/tmp',
  '--clearenv',
  '--setenv',
  'PATH',
  '/usr/bin:/bin',
  '--setenv',
  'HOME',
  '/tmp',
];

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function sandbox(
  profile: 'strict' | 'default' | null,
  argv: string[],
  env: Record<string, string> = {},
): Promise<Result> {
  const envArgs = Object.entries(env).flatMap(([k, v]) => ['--setenv', k, v]);
  const seccomp = profile === null ? [] : ['--seccomp', '3'];
  const child = spawn('bwrap', [...VIEW, ...envArgs, ...seccomp, '--', ...argv], {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  const fd3 = child.stdio[3] as NodeJS.WritableStream;
  if (profile === null) fd3.end();
  else fd3.end(compileSeccomp(profile));
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Python probe: runs each named check and prints {name: errno or 0} as JSON. */
const PROBE = `
import ctypes, errno, json, os, socket, sys
nr = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(n, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(n), *[ctypes.c_ulong(a & 0xffffffffffffffff) for a in args])
    return 0 if r >= 0 else ctypes.get_errno()
def sock(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return 0
    except OSError as e:
        return e.errno
buf = ctypes.create_string_buffer(256)
addr = ctypes.addressof(buf)
out = {
    'af_packet': sock(17, socket.SOCK_RAW),
    'af_alg': sock(38, socket.SOCK_SEQPACKET),
    'af_vsock': sock(40, socket.SOCK_STREAM),
    'af_netlink_audit': sock(16, socket.SOCK_RAW, 9),
    'af_netlink_route': sock(16, socket.SOCK_RAW, 0),
    'af_inet': sock(socket.AF_INET, socket.SOCK_STREAM),
    'af_unix': sock(socket.AF_UNIX, socket.SOCK_STREAM),
    'af_vsock_high_bits': sc(nr['socket'], (1 << 32) | 40, 1, 0),
    'socketpair_inet': sc(nr['socketpair'], 2, 1, 0, addr),
    'unshare_newuser': sc(nr['unshare'], 0x10000000),
    'io_uring_setup': sc(nr['io_uring_setup'], 1, addr),
    'ptrace_traceme': sc(nr['ptrace'], 0, 0, 0, 0),
    'tiocsti': sc(nr['ioctl'], 0, 0x5412, addr),
    'tiocsti_high_bits': sc(nr['ioctl'], 0, (1 << 32) | 0x5412, addr),
    'personality_no_aslr': sc(nr['personality'], 0x0040000),
    'personality_query': sc(nr['personality'], 0xffffffff),
    'clone3': sc(nr['clone3'], 0, 0),
    'clone_newnet': sc(nr['clone'], 0x40000000 | 17, 0, 0, 0, 0),
    'bpf': sc(nr['bpf'], 0, addr, 0),
    'userfaultfd': sc(nr['userfaultfd'], 0),
    'keyctl': sc(nr['keyctl'], 0, 0),
    'perf_event_open': sc(nr['perf_event_open'], addr, 0, -1, -1, 0),
    'unknown_syscall': sc(1000),
}
if 'x32_getpid' in nr:
    out['x32_getpid'] = sc(nr['x32_getpid'])
print(json.dumps(out))
`;

const probeNumbers = JSON.stringify({
  ...Object.fromEntries(
    [
      'socket',
      'socketpair',
      'unshare',
      'io_uring_setup',
      'ptrace',
      'ioctl',
      'personality',
      'clone3',
      'clone',
      'bpf',
      'userfaultfd',
      'keyctl',
      'perf_event_open',
    ].map((n) => [n, nr[n]]),
  ),
  ...(arch === 'x86_64' ? { x32_getpid: 0x4000_0000 | (nr.getpid as number) } : {}),
});

const { EPERM, ENOSYS, EAFNOSUPPORT } = { EPERM: 1, ENOSYS: 38, EAFNOSUPPORT: 97 };

describe('seccomp filters on the real kernel (bwrap --seccomp)', {
  skip: !haveBwrap && 'bwrap is not installed',
}, () => {
  test('default: refusals happen in the kernel, with the documented errno', async () => {
    const r = await sandbox('default', ['python3', '-c', PROBE, probeNumbers]);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout);
    assert.equal(got.af_packet, EAFNOSUPPORT);
    assert.equal(got.af_alg, EAFNOSUPPORT);
    assert.equal(got.af_vsock, EAFNOSUPPORT);
    assert.equal(got.af_netlink_audit, EAFNOSUPPORT);
    assert.equal(got.af_vsock_high_bits, EAFNOSUPPORT, 'high bits in the family must not bypass the rule');
    assert.equal(got.socketpair_inet, EAFNOSUPPORT);
    assert.equal(got.af_netlink_route, 0);
    assert.equal(got.af_inet, 0);
    assert.equal(got.af_unix, 0);
    assert.equal(got.unshare_newuser, EPERM);
    assert.equal(got.io_uring_setup, EPERM);
    assert.equal(got.ptrace_traceme, EPERM);
    assert.equal(got.tiocsti, EPERM);
    assert.equal(got.tiocsti_high_bits, EPERM, 'the kernel truncates cmd to 32 bits; so must the rule');
    assert.equal(got.personality_no_aslr, EPERM);
    assert.equal(got.personality_query, 0);
    assert.equal(got.clone3, ENOSYS);
    assert.equal(got.clone_newnet, EPERM);
    for (const name of ['bpf', 'userfaultfd', 'keyctl', 'perf_event_open'])
      assert.equal(got[name], EPERM, name);
    assert.equal(got.unknown_syscall, ENOSYS);
    if (arch === 'x86_64') assert.equal(got.x32_getpid, ENOSYS);
  });

  test('control: without the filter the same probes get different answers (the probes can fail)', async () => {
    const r = await sandbox(null, ['python3', '-c', PROBE, probeNumbers]);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout);
    assert.equal(got.tiocsti, 25, 'stdin is /dev/null: TIOCSTI alone fails with ENOTTY');
    assert.equal(got.tiocsti_high_bits, 25);
    assert.equal(got.af_netlink_audit, 0);
    assert.equal(got.ptrace_traceme, 0);
    assert.notEqual(got.clone3, ENOSYS);
    assert.notEqual(got.unshare_newuser, EPERM, '--disable-userns alone answers ENOSPC');
    assert.equal(got.personality_no_aslr, 0);
  });

  test('default: shell, python, node (io_uring forced on falls back), git, gcc and make work', async () => {
    const sh = await sandbox('default', ['sh', '-c', 'echo "$((6 * 7))"; ls / >/dev/null && echo listed']);
    assert.equal(sh.code, 0, sh.stderr);
    assert.equal(sh.stdout, '42\nlisted\n');

    const py = await sandbox('default', ['python3', '-c', 'print(1)']);
    assert.deepEqual([py.code, py.stdout], [0, '1\n'], py.stderr);

    const pool = await sandbox('default', [
      'python3',
      '-c',
      'import multiprocessing as m, subprocess\nwith m.Pool(2) as p: print(p.map(abs, [-1, -2]))\n' +
        'print(subprocess.run(["true"]).returncode)',
    ]);
    assert.deepEqual([pool.code, pool.stdout], [0, '[1, 2]\n0\n'], pool.stderr);

    const pip = await sandbox('default', ['python3', '-m', 'pip', '--version']);
    assert.equal(pip.code, 0, pip.stderr);
    assert.match(pip.stdout, /^pip /);

    const node = await sandbox('default', [
      'node',
      '-e',
      'console.log(require("fs").readdirSync("/").join(","))',
    ]);
    assert.equal(node.code, 0, node.stderr);
    assert.ok(node.stdout.trim().split(',').includes('usr'));

    // UV_USE_IO_URING=1 makes libuv try io_uring_setup; it must get EPERM and fall back to its thread pool.
    const uring = await sandbox(
      'default',
      [
        'node',
        '-e',
        'const fs=require("fs/promises");(async()=>{await fs.writeFile("/tmp/f","data");' +
          'console.log(await fs.readFile("/tmp/f","utf8"));' +
          'console.log(require("child_process").execFileSync("echo",["child"]).toString().trim())})()',
      ],
      { UV_USE_IO_URING: '1' },
    );
    assert.deepEqual([uring.code, uring.stdout], [0, 'data\nchild\n'], uring.stderr);

    const git = await sandbox('default', ['git', '--version']);
    assert.equal(git.code, 0, git.stderr);
    assert.match(git.stdout, /^git version /);

    const gcc = await sandbox('default', [
      'sh',
      '-c',
      'printf \'#include <stdio.h>\\nint main(void){puts("hello");return 0;}\\n\' > /tmp/h.c && ' +
        "gcc -O2 -o /tmp/h /tmp/h.c && /tmp/h && printf 'all:\\n\\t@echo made\\n' > /tmp/Makefile && make -s -C /tmp",
    ]);
    assert.deepEqual([gcc.code, gcc.stdout], [0, 'hello\nmade\n'], gcc.stderr);
  });

  test('strict: simple programs and python run; fork, sockets and file writes fail', async () => {
    const t = await sandbox('strict', ['/usr/bin/true']);
    assert.equal(t.code, 0, t.stderr);

    const cat = await sandbox('strict', ['cat', '/usr/lib/os-release']);
    assert.equal(cat.code, 0, cat.stderr);
    assert.match(cat.stdout, /^NAME=|\nNAME=/);

    const py = await sandbox('strict', [
      'python3',
      '-c',
      'import threading\nt = threading.Thread(target=print, args=("thread",))\nt.start(); t.join()\nprint(sum(range(10)))',
    ]);
    assert.deepEqual([py.code, py.stdout], [0, 'thread\n45\n'], py.stderr);

    const refused = await sandbox('strict', [
      'python3',
      '-c',
      'import os, socket\n' +
        'def errno_of(f):\n    try:\n        f()\n        return 0\n    except OSError as e:\n        return e.errno\n' +
        'print(errno_of(os.fork), errno_of(lambda: socket.socket()), errno_of(lambda: open("/tmp/x", "w")))',
    ]);
    assert.equal(refused.code, 0, refused.stderr);
    assert.equal(refused.stdout, `${EPERM} ${EPERM} ${EPERM}\n`);

    const sh = await sandbox('strict', ['sh', '-c', '/usr/bin/true; echo after']);
    assert.notEqual(sh.code, 0, 'a shell cannot start child processes under strict');
  });
});
