/**
 * Warm sandboxes on the real kernel with real bwrap and the real agent: commands (foreground, background,
 * re-attach with replay), pause/resume with the freezer, TTL, workspace quota, and cleanup accounting.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { SandboxStateError, WorkspaceQuotaError } from '../../src/sandbox/errors.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import type { Sandbox } from '../../src/sandbox/sandbox.js';
import {
  cgroupDirsOf,
  PYTHON,
  processesWithMarker,
  skipNoFreezer,
  skipNoRoot,
  sleep,
  tempStateDir,
  waitForMarked,
} from './sandbox-fixture.js';

const state = tempStateDir('lifecycle');
const manager = new SandboxManager({ stateDir: state.dir, onStartup: 'reap', quotaCheckMs: 0 });
const created: string[] = [];

async function newSandbox(options: Parameters<SandboxManager['create']>[0] = {}): Promise<Sandbox> {
  const sandbox = await manager.create(options);
  created.push(sandbox.id);
  return sandbox;
}

before(async () => {
  await manager.start();
});

after(async () => {
  await manager.close();
  state.cleanup();
});

/** A line-oriented counter: every line on stdin increments it and prints the new value. */
const COUNTER = [
  PYTHON ?? 'python3',
  '-u',
  '-c',
  'import sys\nn = 0\nfor line in sys.stdin:\n    n += 1\n    print(n, flush=True)\n',
];

function nextLine(output: { text: string }, timeoutMs = 5000): Promise<string> {
  const start = output.text.length;
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const poll = () => {
      const rest = output.text.slice(start);
      const nl = rest.indexOf('\n');
      if (nl >= 0) resolve(rest.slice(0, nl));
      else if (Date.now() > deadline)
        reject(new Error(`no line within ${timeoutMs} ms (got ${JSON.stringify(rest)})`));
      else setTimeout(poll, 5);
    };
    poll();
  });
}

describe('commands', () => {
  test('foreground: exit code, both streams, streaming callbacks, env, cwd and stdin', async () => {
    const sandbox = await newSandbox({ env: { GREETING: 'hello' } });
    const chunks: string[] = [];
    const result = await sandbox.commands.run('echo "$GREETING $EXTRA"; pwd; cat; echo oops >&2; exit 7', {
      env: { EXTRA: 'world' },
      cwd: '/tmp',
      stdin: 'from-stdin\n',
      onStdout: (d) => chunks.push(d),
    });
    assert.equal(result.exitCode, 7);
    assert.equal(result.signal, null);
    assert.equal(result.stdout, 'hello world\n/tmp\nfrom-stdin\n');
    assert.equal(result.stderr, 'oops\n');
    assert.equal(chunks.join(''), result.stdout);
    const id = await sandbox.commands.run(['id', '-u']);
    assert.equal(id.stdout.trim(), '1000');
  });

  test('keepBytes bounds what the result keeps; the callbacks still get everything', async () => {
    const sandbox = await newSandbox();
    const chunks: string[] = [];
    const none = await sandbox.commands.run(['printf', 'abcdef'], {
      keepBytes: 0,
      onStdout: (d) => chunks.push(d),
    });
    assert.equal(chunks.join(''), 'abcdef');
    assert.equal(none.stdout, '');
    assert.equal(none.truncated, true);
    const all = await sandbox.commands.run(['printf', 'abcdef'], { keepBytes: 6 });
    assert.equal(all.stdout, 'abcdef');
    assert.equal(all.truncated, false);
  });

  test('foreground timeout kills the process and says so', async () => {
    const sandbox = await newSandbox();
    const started = Date.now();
    const result = await sandbox.commands.run(['sleep', '30'], { timeoutMs: 200 });
    assert.equal(result.timedOut, true);
    assert.equal(result.signal, 'SIGKILL');
    assert.ok(Date.now() - started < 5000);
  });

  test('a background server started by one command is reached from another', {
    skip: !PYTHON && 'needs python3',
  }, async () => {
    const sandbox = await newSandbox();
    const server = await sandbox.commands.run(
      [PYTHON ?? 'python3', '-m', 'http.server', '8765', '--bind', '127.0.0.1'],
      { background: true, tag: 'web' },
    );
    await sandbox.files.write('index.html', 'served-from-the-sandbox');
    let body = '';
    for (let i = 0; i < 100 && body === ''; i++) {
      const r = await sandbox.commands.run([
        PYTHON ?? 'python3',
        '-c',
        'import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:8765/index.html").read().decode())',
      ]);
      if (r.exitCode === 0) body = r.stdout.trim();
      else await sleep(20);
    }
    assert.equal(body, 'served-from-the-sandbox');
    const listed = await sandbox.commands.list();
    const entry = listed.find((p) => p.id === server.id);
    assert.ok(entry?.running);
    assert.equal(entry?.tag, 'web');
    await server.kill();
    const result = await server.wait();
    assert.equal(result.signal, 'SIGKILL');
  });

  test('re-attach replays output from an offset, then streams live without duplicates', async () => {
    const sandbox = await newSandbox();
    const handle = await sandbox.commands.run(
      'for i in 1 2 3; do echo line$i; done; read go; for i in 4 5; do echo line$i; done',
      { background: true, stdin: true },
    );
    // Wait for the first three lines to have been produced.
    for (let i = 0; i < 200 && handle.offsets.stdout < 18; i++) await sleep(5);
    assert.equal(handle.offsets.stdout, 18);

    const all: Buffer[] = [];
    const full = await handle.attach({ fromOffset: 0, onStdout: (d) => all.push(d) });
    assert.deepEqual(full.lost, { stdout: 0, stderr: 0 });
    const tail: Buffer[] = [];
    const partial = await handle.attach({ fromOffset: 6, onStdout: (d) => tail.push(d) });
    assert.equal(Buffer.concat(all).toString(), 'line1\nline2\nline3\n');
    assert.equal(Buffer.concat(tail).toString(), 'line2\nline3\n');

    partial.detach();
    await handle.sendStdin('go\n');
    const result = await handle.wait();
    assert.equal(result.exitCode, 0);
    assert.equal(Buffer.concat(all).toString(), 'line1\nline2\nline3\nline4\nline5\n');
    assert.equal(Buffer.concat(tail).toString(), 'line2\nline3\n', 'a detached attachment gets nothing more');
    full.detach();

    // A handle obtained later by id (as after a reconnect) replays the finished process's output too.
    const again = await sandbox.commands.connect(handle.id);
    const replayed: Buffer[] = [];
    await again.attach({ fromOffset: 12, onStdout: (d) => replayed.push(d) });
    assert.equal(Buffer.concat(replayed).toString(), 'line3\nline4\nline5\n');
  });
});

describe('pause and resume', { skip: skipNoFreezer }, () => {
  test('a paused process keeps its memory state and answers after resume', {
    skip: !PYTHON && 'needs python3',
  }, async () => {
    const sandbox = await newSandbox();
    const out = { text: '' };
    const counter = await sandbox.commands.run(COUNTER, {
      background: true,
      stdin: true,
      onStdout: (d) => {
        out.text += d;
      },
    });
    for (const expected of ['1', '2', '3']) {
      const line = nextLine(out);
      await counter.sendStdin('tick\n');
      assert.equal(await line, expected);
    }
    await sandbox.pause();
    assert.equal(sandbox.state, 'paused');
    await assert.rejects(
      sandbox.commands.run(['true']),
      (err: unknown) => err instanceof SandboxStateError && err.code === 'SANDBOX_PAUSED',
    );
    await assert.rejects(sandbox.files.read('x'), SandboxStateError);
    // The kernel really froze it: the freezer reports FROZEN (v1) / frozen 1 (v2).
    const frozen = sandbox.cgroupDirs.some((dir) => {
      const v1 = `${dir}/freezer.state`;
      const v2 = `${dir}/cgroup.events`;
      if (existsSync(v1)) return readFileSync(v1, 'utf8').trim() === 'FROZEN';
      return existsSync(v2) && /frozen 1/.test(readFileSync(v2, 'utf8'));
    });
    assert.ok(frozen, 'the sandbox cgroup is frozen');
    await sleep(100);
    await sandbox.resume();
    assert.equal(sandbox.state, 'running');
    const line = nextLine(out);
    await counter.sendStdin('tick\n');
    assert.equal(await line, '4', 'the counter kept its value across pause/resume');
    await counter.kill();
  });

  test('TTL: onTimeout pause pauses; resume re-arms', async () => {
    const sandbox = await newSandbox({ timeoutMs: 150, onTimeout: 'pause' });
    await sleep(400);
    assert.equal(sandbox.state, 'paused');
    await sandbox.resume({ timeoutMs: 60_000 });
    assert.equal((await sandbox.commands.run(['echo', 'ok'])).stdout, 'ok\n');
  });
});

describe('TTL', () => {
  test('expiry kills the sandbox; setTimeout extends it', { timeout: 30_000 }, async () => {
    const short = await newSandbox({ timeoutMs: 300 });
    // Listen at once: on a loaded machine the second create can take longer than the first one's TTL.
    const stopped = new Promise((resolve) => short.once('stopped', resolve));
    const extended = await newSandbox({ timeoutMs: 2000 });
    extended.setTimeout(10_000);
    assert.equal(await stopped, 'timeout');
    assert.equal(short.state, 'stopped');
    assert.equal(manager.get(short.id), undefined);
    assert.ok(!existsSync(`${state.dir}/sandboxes/${short.id}`));
    await sleep(100);
    assert.equal(extended.state, 'running');
    assert.ok((extended.deadline ?? 0) > Date.now() + 5_000);
  });
});

describe('workspace quota', () => {
  test('usage over the quota is reported and files.write is refused', { skip: skipNoFreezer }, async () => {
    const sandbox = await newSandbox({ workspaceQuotaMb: 1 });
    await sandbox.commands.run(['sh', '-c', 'head -c 2000000 /dev/zero > big']);
    const usage = await sandbox.workspaceUsage();
    assert.ok(usage.usedBytes > usage.quotaBytes, JSON.stringify(usage));
    await assert.rejects(sandbox.files.write('more', 'x'), WorkspaceQuotaError);
    await sandbox.commands.run(['rm', 'big']);
    await sandbox.workspaceUsage();
    await sandbox.files.write('more', 'x');
  });
});

describe('cleanup accounting', () => {
  test('kill() leaves no process, cgroup, socket or directory', async () => {
    const marker = `ironcage-marker-${process.pid}-kill`;
    const sandbox = await newSandbox();
    await sandbox.commands.run(['bash', '-c', `exec -a ${marker} sleep 600`], { background: true });
    const detached = await sandbox.commands.run([
      'bash',
      '-c',
      `(exec -a ${marker} sleep 600) & disown; true`,
    ]);
    assert.deepEqual([detached.exitCode, detached.stderr], [0, ''], 'the detached child was started');
    const seen = await waitForMarked(marker, 2);
    const inside = await sandbox.commands.run(['ps', '-eo', 'pid,ppid,stat,args']);
    assert.equal(seen, 2, `both sleepers run; inside the sandbox:\n${inside.stdout}`);
    const init = sandbox.initPid;
    await sandbox.kill();
    assert.equal(sandbox.state, 'stopped');
    assert.deepEqual(processesWithMarker(marker), []);
    assert.ok(
      !existsSync(`/proc/${init}/stat`) || readFileSync(`/proc/${init}/stat`, 'utf8').includes(') Z'),
    );
    assert.deepEqual(cgroupDirsOf([sandbox.id]), []);
    assert.ok(!existsSync(`${state.dir}/sandboxes/${sandbox.id}`));
    await assert.rejects(sandbox.commands.run(['true']), SandboxStateError);
  });

  test('close() kills every sandbox of the manager and leaves nothing behind', {
    skip: skipNoRoot,
  }, async () => {
    const own = tempStateDir('close');
    try {
      const m = new SandboxManager({ stateDir: own.dir, onStartup: 'reap' });
      await m.start();
      const marker = `ironcage-marker-${process.pid}-close`;
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const sb = await m.create();
        ids.push(sb.id);
        await sb.commands.run(['bash', '-c', `exec -a ${marker} sleep 600`], { background: true });
      }
      assert.equal(await waitForMarked(marker, 3), 3);
      assert.equal(cgroupDirsOf(ids).length > 0, true);
      await m.close();
      assert.deepEqual(processesWithMarker(marker), []);
      assert.deepEqual(cgroupDirsOf(ids), []);
      assert.deepEqual(readdirSync(`${own.dir}/sandboxes`), []);
    } finally {
      own.cleanup();
    }
  });
});
