/**
 * Resources: each limit of the policy holds against a deliberate attempt to exceed it, and the host stays
 * usable. Some outcomes depend on how ironcage runs: as root with cgroups the kernel OOM-kills inside the
 * sandbox's cgroup (`oom`); unprivileged without cgroups RLIMIT_DATA makes the allocation fail (MemoryError).
 * Those probes accept both, because both mean "contained", and still check the amount that got through.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  expectAttempts,
  expectExited,
  factOf,
  fail,
  hostPidsWithMarker,
  type Probe,
  reportOf,
  type SandboxRun,
} from '../harness.js';

const py = String.raw;
const MiB = 1024 * 1024;

/** How long the host needs to start `true` right now, ms (the "is the host still responsive" yardstick). */
function hostSpawnMs(): number {
  let worst = 0;
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    const r = spawnSync('true');
    assert.equal(r.status, 0);
    worst = Math.max(worst, performance.now() - t);
  }
  return worst;
}

function expectOutcome(run: SandboxRun, ...outcomes: string[]): void {
  if (!outcomes.includes(run.result.outcome)) fail(run, `expected outcome ${outcomes.join(' or ')}`);
}

export const resourceProbes: Probe[] = [
  {
    id: 'res-fork-limit',
    category: 'resources',
    tries: 'fork sleeping children one after another until fork fails, with limits.processes = 32',
    proves: 'the process limit caps the whole sandbox: forking stops with EAGAIN below the limit',
    expected: 'fork fails with EAGAIN after fewer than 32 children; the run exits normally',
    policy: { limits: { processes: 32 } },
    python: py`
children = 0
err = None
while children < 500:
    try:
        pid = os.fork()
    except OSError as e:
        err = ename(e.errno)
        break
    if pid == 0:
        time.sleep(20)
        os._exit(0)
    children += 1
fact('children', children)
fact('error', err)
`,
    check: (run) => {
      expectExited(run);
      assert.equal(factOf(run, 'error'), 'EAGAIN');
      const n = factOf<number>(run, 'children');
      if (n >= 32) fail(run, `${n} children were created with a limit of 32`);
    },
  },
  {
    id: 'res-fork-bomb',
    category: 'resources',
    tries: 'a real fork bomb (every process forks forever) for 2 s, with limits.processes = 64',
    proves:
      'a fork bomb is contained: the run ends at its wall-time limit, nothing survives, and the host can still start processes quickly',
    expected:
      "outcome 'timeout' near 2 s; no process with the bomb's marker afterwards; host spawns `true` in < 1 s",
    timeoutMs: 30_000,
    policy: { limits: { processes: 64, wallTimeMs: 2000 } },
    python: (fx) => py`
# marker: ironcage-escape-bomb-${fx.token}
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.001)
`,
    check: (run, fx) => {
      expectOutcome(run, 'timeout');
      // Generous slack: on a loaded 2-core machine, tearing down 64 busy forkers takes seconds. What matters is
      // that the run ends well before the probe's own 30 s timeout, with nothing left (checked below).
      assert.ok(run.result.wallMs < 2000 + 10_000, `the bomb was stopped late (${run.result.wallMs} ms)`);
      const left = hostPidsWithMarker(`ironcage-escape-bomb-${fx.token}`);
      if (left.length > 0) fail(run, `fork bomb processes survived on the host: ${left.join(',')}`);
      const ms = hostSpawnMs();
      assert.ok(ms < 1000, `the host needed ${ms.toFixed(0)} ms to spawn true after the bomb`);
    },
  },
  {
    id: 'res-thread-limit',
    category: 'resources',
    tries: 'start threads until it fails, with limits.processes = 32',
    proves: 'threads count against the same limit as processes (a thread bomb is a fork bomb too)',
    expected: 'thread creation fails (RuntimeError) before 32 threads',
    policy: { limits: { processes: 32 } },
    python: py`
import threading
stop = threading.Event()
threads = []
err = None
while len(threads) < 500:
    t = threading.Thread(target=stop.wait, daemon=True)
    try:
        t.start()
    except RuntimeError as e:
        err = 'RuntimeError'
        break
    threads.append(t)
fact('threads', len(threads))
fact('error', err)
stop.set()
`,
    check: (run) => {
      expectExited(run);
      assert.equal(factOf(run, 'error'), 'RuntimeError');
      const n = factOf<number>(run, 'threads');
      if (n >= 32) fail(run, `${n} threads were started with a limit of 32`);
    },
  },
  {
    id: 'res-memory-bomb',
    category: 'resources',
    tries: 'allocate and touch memory in 8 MiB steps without end, with limits.memoryMb = 96',
    proves:
      'memory is capped: either the kernel OOM-kills inside the sandbox cgroup (root with cgroups) or the ' +
      'allocation fails at the RLIMIT_DATA cap (unprivileged); both are containment, and little more than the ' +
      'limit is ever used',
    expected: "outcome 'oom', or exit with MemoryError after at most ~96 MiB; never a timeout",
    policy: { limits: { memoryMb: 96 } },
    python: py`
chunks = []
try:
    while len(chunks) < 512:
        chunks.append(b'\x01' * (8 << 20))
        sys.stdout.write('ALLOCATED %d\n' % (len(chunks) * 8))
        sys.stdout.flush()
    fact('result', 'never stopped')
except MemoryError:
    fact('result', 'MemoryError')
fact('allocated_mb', len(chunks) * 8)
`,
    check: (run) => {
      const lastAllocated = Math.max(
        0,
        ...[...run.stdout.matchAll(/ALLOCATED (\d+)/g)].map((m) => Number(m[1])),
      );
      if (lastAllocated > 96 + 16) fail(run, `${lastAllocated} MiB were allocated with a 96 MiB limit`);
      if (run.result.outcome === 'oom') return;
      expectExited(run);
      assert.equal(factOf(run, 'result'), 'MemoryError');
    },
  },
  {
    id: 'res-tmpfs-fill',
    category: 'resources',
    tries: 'write 1 MiB blocks into /tmp until it fails, with the /tmp scratch mount capped at 8 MiB',
    proves: 'scratch space is capped at its declared size: a disk-fill cannot grow past it',
    expected: 'ENOSPC after at most 8 MiB',
    policy: { filesystem: { scratch: [{ path: '/tmp', sizeMb: 8 }] } },
    python: py`
written = 0
with open('/tmp/fill', 'wb', buffering=0) as f:
    def fill():
        global written
        while written < (64 << 20):
            written += f.write(b'\x01' * (1 << 20))
    attempt('fill /tmp', fill)
fact('written', written)
`,
    check: (run) => {
      expectAttempts(run, { 'fill /tmp': 'ENOSPC' });
      const written = factOf<number>(run, 'written');
      if (written > 8 * MiB) fail(run, `${written} bytes fit into an 8 MiB scratch mount`);
    },
  },
  {
    id: 'res-shm-fill',
    category: 'resources',
    tries: 'fill /dev/shm (POSIX shared memory), capped at 4 MiB',
    proves: 'shared memory is scratch space with a cap as well, not a way around the memory limit',
    expected: 'ENOSPC after at most 4 MiB',
    policy: { filesystem: { scratch: [{ path: '/dev/shm', sizeMb: 4 }] } },
    python: py`
written = 0
with open('/dev/shm/fill', 'wb', buffering=0) as f:
    def fill():
        global written
        while written < (64 << 20):
            written += f.write(b'\x01' * (1 << 20))
    attempt('fill /dev/shm', fill)
fact('written', written)
`,
    check: (run) => {
      expectAttempts(run, { 'fill /dev/shm': 'ENOSPC' });
      if (factOf<number>(run, 'written') > 4 * MiB) fail(run, 'more than 4 MiB fit into /dev/shm');
    },
  },
  {
    id: 'res-fd-exhaustion',
    category: 'resources',
    tries: 'open /dev/null until it fails with limits.openFiles = 64, then try to raise the hard limit',
    proves: 'open files are capped per process and the cap cannot be lifted from inside',
    expected:
      'EMFILE at 64 descriptors; raising RLIMIT_NOFILE fails (ValueError: not allowed to raise maximum)',
    policy: { limits: { openFiles: 64 } },
    python: py`
import resource
fds = []
def exhaust():
    while len(fds) < 100000:
        fds.append(os.open('/dev/null', os.O_RDONLY))
attempt('open until failure', exhaust)
highest = max(fds) if fds else -1
for fd in fds:
    os.close(fd)
fact('highest_fd', highest)
fact('limit', list(resource.getrlimit(resource.RLIMIT_NOFILE)))
attempt('raise RLIMIT_NOFILE', lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)))
`,
    check: (run) => {
      expectAttempts(run, { 'open until failure': 'EMFILE', 'raise RLIMIT_NOFILE': ['ValueError', 'EPERM'] });
      assert.deepEqual(factOf(run, 'limit'), [64, 64]);
      assert.ok(factOf<number>(run, 'highest_fd') < 64, 'no descriptor number at or above the limit');
    },
  },
  {
    id: 'res-output-flood',
    category: 'resources',
    tries: 'write to stdout without end, with limits.outputBytes = 64 KiB',
    proves: 'output is capped: the run ends with output-limit and the caller receives at most the limit',
    expected:
      "outcome 'output-limit'; stdoutBytes + stderrBytes <= 65536 and equal to what onStdout/onStderr got",
    policy: { limits: { outputBytes: 65_536 } },
    argv: ['python3', '-c', 'import sys\nwhile True: sys.stdout.write("x" * 65536)'],
    check: (run) => {
      expectOutcome(run, 'output-limit');
      const total = run.result.stdoutBytes + run.result.stderrBytes;
      if (total > 65_536) fail(run, `${total} bytes were kept with a 65536-byte limit`);
      assert.equal(run.deliveredBytes, total, 'the callbacks received exactly the counted bytes');
      assert.ok(total > 0, 'some output arrived before the cut');
    },
  },
  {
    id: 'res-stderr-flood',
    category: 'resources',
    tries: 'interleave endless stdout and stderr writes, with limits.outputBytes = 32 KiB',
    proves: 'the output cap counts both streams together',
    expected: "outcome 'output-limit'; stdout + stderr bytes <= 32768",
    policy: { limits: { outputBytes: 32_768 } },
    argv: [
      'python3',
      '-c',
      'import sys\nwhile True:\n  sys.stderr.write("e" * 4096); sys.stderr.flush(); sys.stdout.write("o" * 4096); sys.stdout.flush()',
    ],
    check: (run) => {
      expectOutcome(run, 'output-limit');
      const total = run.result.stdoutBytes + run.result.stderrBytes;
      if (total > 32_768) fail(run, `${total} bytes were kept with a 32768-byte limit`);
      assert.ok(run.result.stderrBytes > 0, 'stderr counted');
    },
  },
  {
    id: 'res-sleep-forever',
    category: 'resources',
    tries: 'sleep forever with limits.wallTimeMs = 1500',
    proves: 'the wall-clock limit ends a run that does nothing, close to the limit',
    expected: "outcome 'timeout' with wallMs between 1500 and 3500",
    policy: { limits: { wallTimeMs: 1500 } },
    argv: ['sleep', '1000'],
    check: (run) => {
      expectOutcome(run, 'timeout');
      const ms = run.result.wallMs;
      if (ms < 1500 || ms > 3500) fail(run, `the run ended after ${ms.toFixed(0)} ms for a 1500 ms limit`);
    },
  },
  {
    id: 'res-cpu-spin',
    category: 'resources',
    tries: 'spin the CPU forever with limits.cpuTimeMs = 1000 and a generous wall limit',
    proves: 'CPU time is capped per process independently of wall time',
    expected: "outcome 'cpu-limit' well before the 8 s wall limit",
    policy: { limits: { cpuTimeMs: 1000, wallTimeMs: 8000 } },
    argv: ['python3', '-c', 'while True: pass'],
    check: (run) => {
      expectOutcome(run, 'cpu-limit');
      assert.ok(run.result.wallMs < 7000, `stopped after ${run.result.wallMs} ms`);
    },
  },
  {
    id: 'res-file-size-signal',
    category: 'resources',
    tries: 'dd 4 MiB into /tmp with limits.fileSizeMb = 1',
    proves: 'the file size limit stops a writer with SIGXFSZ, reported as file-size-limit',
    expected: "outcome 'file-size-limit'",
    policy: { limits: { fileSizeMb: 1 } },
    argv: ['dd', 'if=/dev/zero', 'of=/tmp/big', 'bs=1M', 'count=4'],
    check: (run) => expectOutcome(run, 'file-size-limit'),
  },
  {
    id: 'res-file-size-efbig',
    category: 'resources',
    tries: 'write 2 MiB to a file from python (which ignores SIGXFSZ) with limits.fileSizeMb = 1',
    proves: 'a writer that ignores SIGXFSZ still cannot grow a file past the limit',
    expected: 'EFBIG and the file holds at most 1 MiB',
    policy: { limits: { fileSizeMb: 1 } },
    python: py`
with open('/tmp/big', 'wb', buffering=0) as f:
    def write_big():
        for _ in range(8):
            f.write(b'\x01' * (256 << 10))
    attempt('write 2 MiB', write_big)
fact('size', os.path.getsize('/tmp/big'))
`,
    check: (run) => {
      expectAttempts(run, { 'write 2 MiB': 'EFBIG' });
      if (factOf<number>(run, 'size') > MiB) fail(run, 'the file grew past 1 MiB');
      assert.equal(reportOf(run).attempts.length, 1);
    },
  },
];
