/** The local engine for real: bwrap, the kernel, cgroups (as root) or rlimits (as a user). */
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { LocalEngine } from '../../src/isolation/local-engine.js';
import { MountPlanError } from '../../src/isolation/mounts.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import type { SandboxPolicyInput } from '../../src/policy/schema.js';
import type { RunRequest } from '../../src/sandbox/engine.js';

const engine = new LocalEngine();
const isRoot = process.getuid?.() === 0;

async function run(argv: string[], layer: SandboxPolicyInput = {}, extra: Partial<RunRequest> = {}) {
  let stdout = '';
  let stderr = '';
  const result = await engine.run({
    policy: resolvePolicy('default', { limits: { wallTimeMs: 15_000 } }, layer),
    argv,
    onStdout: (c) => (stdout += c.toString()),
    onStderr: (c) => (stderr += c.toString()),
    ...extra,
  });
  return { ...result, stdout, stderr };
}

const scratch = mkdtempSync(join(tmpdir(), 'ironcage-engine-test-'));
// As root, sandboxes run as host uid 65534: the directories they use must be reachable by it.
chmodSync(scratch, 0o755);
after(() => rmSync(scratch, { recursive: true, force: true }));

describe('local engine', { concurrency: 4 }, () => {
  test('passes the exit code and output through, and reports resource use', async () => {
    const r = await run(['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.outcome, 'exit');
    assert.equal(r.exitCode, 7);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(r.stdoutBytes, 4);
    assert.ok(r.cpuMs !== null && r.cpuMs >= 0);
    assert.ok(r.peakMemoryBytes !== null && r.peakMemoryBytes > 0);
    assert.equal(r.enforcement.memory, isRoot ? 'cgroup-v1' : 'rlimit');
  });

  test('runs as the unprivileged sandbox user with no capabilities', async () => {
    const r = await run([
      'sh',
      '-c',
      'id -u; id -g; grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status',
    ]);
    assert.match(r.stdout, /^1000\n1000\nCapEff:\t0+\nCapBnd:\t0+\nNoNewPrivs:\t1\n$/);
  });

  test('feeds stdin bytes to the command', async () => {
    const r = await run(['sh', '-c', 'tr a-z A-Z'], {}, { stdin: 'hello sandbox' });
    assert.equal(r.stdout, 'HELLO SANDBOX');
  });

  test('a missing command is exit code 127 with a message, not a setup error', async () => {
    const r = await run(['definitely-not-a-command']);
    assert.equal(r.outcome, 'exit');
    assert.equal(r.exitCode, 127);
    assert.match(r.stderr, /cannot execute 'definitely-not-a-command'/);
  });

  test('wall-clock timeout kills the whole tree', async () => {
    const r = await run(['sh', '-c', 'sleep 100 & sleep 100'], { limits: { wallTimeMs: 500 } });
    assert.equal(r.outcome, 'timeout');
    assert.ok(r.wallMs >= 450 && r.wallMs < 5000, `wall ${r.wallMs}`);
    assert.match(r.message ?? '', /limits\.wallTimeMs/);
  });

  test('output beyond limits.outputBytes ends the run and is cut exactly at the limit', async () => {
    const r = await run(['sh', '-c', 'yes'], { limits: { outputBytes: 100_000 } });
    assert.equal(r.outcome, 'output-limit');
    assert.equal(r.stdoutBytes, 100_000);
    assert.equal(r.stdout.length, 100_000);
  });

  test('memory beyond the limit is contained', async () => {
    const r = await run(['python3', '-c', 'x = bytearray(256 << 20); print("allocated")'], {
      limits: { memoryMb: 64 },
    });
    assert.ok(!r.stdout.includes('allocated'), 'the allocation must not succeed');
    // With a cgroup the kernel kills (oom); with RLIMIT_DATA the allocation fails (MemoryError, exit 1).
    if (isRoot) assert.equal(r.outcome, 'oom');
    else assert.match(r.stderr, /MemoryError/);
  });

  test('CPU time beyond limits.cpuTimeMs ends with cpu-limit', async () => {
    const r = await run(['sh', '-c', 'while :; do :; done'], {
      limits: { cpuTimeMs: 1000, wallTimeMs: 10_000 },
    });
    assert.equal(r.outcome, 'cpu-limit');
    assert.equal(r.signal, 'SIGXCPU');
  });

  test('a file beyond limits.fileSizeMb ends with file-size-limit', async () => {
    const r = await run(['sh', '-c', 'head -c 3000000 /dev/zero > /tmp/big'], { limits: { fileSizeMb: 1 } });
    // dash's head is killed by SIGXFSZ; the shell then exits 128+25.
    assert.ok(r.outcome === 'file-size-limit' || r.exitCode === 153, JSON.stringify(r));
  });

  test('a command killed by a signal reports it', async () => {
    const r = await run(['sh', '-c', 'kill -TERM $$']);
    assert.equal(r.outcome, 'signal');
    assert.equal(r.signal, 'SIGTERM');
  });

  test('aborting a run kills the tree and reports aborted', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const r = await run(['sleep', '100'], {}, { signal: controller.signal });
    assert.equal(r.outcome, 'aborted');
  });

  test('a read-only bind is visible and not writable; a writable bind writes through to the host', async () => {
    const ro = join(scratch, 'ro');
    const rw = join(scratch, 'rw');
    mkdirSync(ro);
    mkdirSync(rw);
    chmodSync(rw, 0o777);
    writeFileSync(join(ro, 'input.txt'), 'from host\n');
    const r = await run(
      ['sh', '-c', `cat ${ro}/input.txt; touch ${ro}/x 2>&1 || true; echo written > ${rw}/out.txt`],
      { filesystem: { readOnly: [ro], writable: [rw] } },
    );
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /from host/);
    assert.match(r.stdout, /Read-only file system/);
    assert.equal(readFileSync(join(rw, 'out.txt'), 'utf8'), 'written\n');
    assert.ok(!existsSync(join(ro, 'x')));
  });

  test('a refused policy throws MountPlanError before anything starts', async () => {
    await assert.rejects(run(['true'], { filesystem: { readOnly: ['/root'] } }), MountPlanError);
  });

  test('as root, sandboxes run as an unprivileged host uid and a bind they cannot write is refused', {
    skip: isRoot ? false : 'needs root',
  }, async () => {
    const controller = new AbortController();
    const running = run(['sleep', '31.415'], {}, { signal: controller.signal });
    const sleeperUids = () =>
      readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .flatMap((pid) => {
          try {
            if (readFileSync(`/proc/${pid}/cmdline`, 'utf8') !== 'sleep\u000031.415\u0000') return [];
            return [/^Uid:\t(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]];
          } catch {
            return [];
          }
        });
    // Setup time varies with load: look until the sleeper is there (or 15 s have passed).
    let uids = sleeperUids();
    for (let i = 0; uids.length === 0 && i < 300; i++) {
      await new Promise((r) => setTimeout(r, 50));
      uids = sleeperUids();
    }
    controller.abort();
    await running;
    assert.deepEqual(uids, ['65534'], 'the sandboxed process runs as nobody on the host, not root');
    const closed = join(scratch, 'closed');
    mkdirSync(closed, { mode: 0o755 });
    await assert.rejects(
      run(['true'], { filesystem: { writable: [closed] } }),
      (err: unknown) =>
        err instanceof MountPlanError && /not writable by the sandbox.*chown 65534:65534/.test(err.message),
    );
  });

  test('the strict profile runs computation but cannot start processes or open sockets', async () => {
    const ok = await run(['python3', '-c', 'print(sum(range(10)))'], {}, {});
    assert.equal(ok.stdout, '45\n');
    const strict = (code: string) =>
      engine.run({
        policy: resolvePolicy('strict'),
        argv: ['python3', '-c', code],
        onStdout: () => {},
      });
    const compute = await strict('import sys; sys.exit(sum(range(10)))');
    assert.equal(compute.exitCode, 45);
    const fork = await strict('import os, sys\ntry:\n    os.fork()\nexcept OSError as e:\n    sys.exit(42)');
    assert.equal(fork.exitCode, 42);
    const sock = await strict(
      'import socket, sys\ntry:\n    socket.socket()\nexcept OSError:\n    sys.exit(43)',
    );
    assert.equal(sock.exitCode, 43);
  });

  test('many sandboxes with different policies run at once', async () => {
    const runs = Array.from({ length: 12 }, (_, i) =>
      run(['sh', '-c', 'echo $SLOT $(hostname)'], { env: { set: { SLOT: String(i) } }, hostname: `box${i}` }),
    );
    const results = await Promise.all(runs);
    for (const [i, r] of results.entries()) assert.equal(r.stdout, `${i} box${i}\n`);
  });

  test('aborting at any moment of setup leaves no sandbox process behind', async () => {
    const marker = '31.4159';
    const runs = Array.from({ length: 16 }, (_, i) => {
      const controller = new AbortController();
      setTimeout(() => controller.abort(), i * 3); // from before bwrap starts to after the command runs
      return run(['sleep', marker], {}, { signal: controller.signal });
    });
    for (const r of await Promise.all(runs)) assert.equal(r.outcome, 'aborted');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(hostProcessesRunning(`sleep\u0000${marker}\u0000`), []);
  });
});

/** Host pids whose command line is exactly `cmdline` (NUL-separated argv). */
function hostProcessesRunning(cmdline: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === cmdline;
      } catch {
        return false;
      }
    })
    .map(Number);
}
