/** The warm-sandbox agent for real (bwrap, the kernel): processes, output, stdin, signals, terminals, replay. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AgentClient, type AgentError, type AgentExit } from '../../src/agent/client.js';
import { PROTOCOL_VERSION } from '../../src/agent/protocol.js';
import { type TestSandbox, useConnectedSandbox } from './agent-harness.js';

/** Collects one process's output and end from a client's events. */
function watchProcess(client: AgentClient, id: () => number) {
  const out = { stdout: '', stderr: '' };
  let resolveExit: (e: AgentExit) => void = () => {};
  const exit = new Promise<AgentExit>((r) => {
    resolveExit = r;
  });
  client.on('output', (pid: number, stream: 'stdout' | 'stderr', data: Buffer) => {
    if (pid === id()) out[stream] += data.toString();
  });
  client.on('exit', (pid: number, e: AgentExit) => {
    if (pid === id()) resolveExit(e);
  });
  return { out, exit };
}

async function run(
  client: AgentClient,
  argv: string[],
  extra: Partial<Parameters<AgentClient['spawn']>[0]> = {},
) {
  let procId = -1;
  const w = watchProcess(client, () => procId);
  const { id } = await client.spawn({ argv, env: {}, cwd: '', ...extra });
  procId = id;
  const exit = await w.exit;
  return { id, exit, ...w.out };
}

async function until<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  ms = 5000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('agent per-process Landlock', () => {
  let client: AgentClient;
  useConnectedSandbox((_sandbox, c) => {
    client = c;
  });

  test('a process with rules reaches only the listed paths; one without rules is unaffected', async () => {
    const script =
      'mkdir -p /tmp/allowed; echo a > /tmp/allowed/f && echo write-allowed-ok; ' +
      'echo b > /home/sandbox/f 2>/dev/null && echo write-home-ok || echo write-home-denied; ' +
      'cat /etc/passwd >/dev/null 2>&1 && echo read-etc-ok || echo read-etc-denied';
    const prepare = await run(client, ['sh', '-c', 'mkdir -p /tmp/allowed']);
    assert.deepEqual(prepare.exit, { ...prepare.exit, kind: 'exit', code: 0 });
    const confined = await run(client, ['/bin/sh', '-c', script], {
      landlock: [
        { path: '/usr', access: 'ro' },
        { path: '/etc/ld.so.cache', access: 'ro' },
        { path: '/tmp/allowed', access: 'rw' },
        { path: '/dev/null', access: 'rw' },
      ],
    });
    assert.equal(confined.stdout, 'write-allowed-ok\nwrite-home-denied\nread-etc-denied\n', confined.stderr);
    const free = await run(client, ['/bin/sh', '-c', script]);
    assert.equal(free.stdout, 'write-allowed-ok\nwrite-home-ok\nread-etc-ok\n');
  });

  test('a rule on a path that does not exist fails the spawn with ENOENT, nothing runs', async () => {
    await assert.rejects(
      client.spawn({ argv: ['true'], env: {}, cwd: '', landlock: [{ path: '/nope', access: 'ro' }] }),
      (err: AgentError) => err.errno === 'ENOENT' && /Landlock/.test(err.message),
    );
  });
});

describe('agent processes', () => {
  let sb: TestSandbox;
  let client: AgentClient;
  useConnectedSandbox((s, c) => {
    sb = s;
    client = c;
  });

  test('the agent is PID 1 and speaks the current protocol', () => {
    assert.equal(client.agentVersion, PROTOCOL_VERSION);
    assert.equal(client.agentPid, 1);
  });

  test('spawn streams stdout and stderr and reports the exit code and usage', async () => {
    const r = await run(client, ['sh', '-c', 'echo out; echo err >&2; id -u; exit 7']);
    assert.equal(r.stdout, 'out\n1000\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(r.exit.kind, 'exit');
    assert.equal(r.exit.kind === 'exit' && r.exit.code, 7);
    assert.ok((r.exit.maxRssKb ?? 0) > 0);
  });

  test('env is laid over the sandbox environment, cwd and rlimits apply', async () => {
    const r = await run(client, ['sh', '-c', 'echo "$GREETING $HOME"; pwd; ulimit -n'], {
      env: { GREETING: 'hello' },
      cwd: '/tmp',
      rlimits: ['nofile=77:77'],
    });
    assert.equal(r.stdout, 'hello /home/sandbox\n/tmp\n77\n');
  });

  test('spawn failures are AgentErrors with the errno, not processes', async () => {
    await assert.rejects(
      client.spawn({ argv: ['no-such-command-here'], env: {}, cwd: '' }),
      (err: AgentError) => {
        assert.equal(err.code, 'SPAWN_FAILED');
        assert.equal(err.errno, 'ENOENT');
        return true;
      },
    );
    await assert.rejects(client.spawn({ argv: ['true'], env: {}, cwd: '/does/not/exist' }), {
      code: 'SPAWN_FAILED',
      errno: 'ENOENT',
      message: /change directory/,
    });
    await assert.rejects(client.spawn({ argv: ['true'], env: {}, cwd: '', rlimits: ['bogus=1:1'] }), {
      code: 'BAD_REQUEST',
    });
  });

  test('stdin is delivered and closing it ends the input', async () => {
    let procId = -1;
    const w = watchProcess(client, () => procId);
    const { id } = await client.spawn({
      argv: ['sh', '-c', 'tr a-z A-Z; echo done'],
      env: {},
      cwd: '',
      stdin: true,
    });
    procId = id;
    await client.writeStdin(id, Buffer.from('hello '));
    await client.writeStdin(id, Buffer.from('sandbox\n'));
    await client.closeStdin(id);
    const exit = await w.exit;
    assert.deepEqual(exit.kind, 'exit');
    assert.equal(w.out.stdout, 'HELLO SANDBOX\ndone\n');
    await assert.rejects(client.writeStdin(id, Buffer.from('late')), { code: 'STDIN_CLOSED' });
  });

  test('a background server started by one process is reached from another', async () => {
    await client
      .writeFile('/home/sandbox/www/index.html', Buffer.from('served from inside'))
      .catch(async () => {
        await client.mkdir('/home/sandbox/www', { parents: true });
        await client.writeFile('/home/sandbox/www/index.html', Buffer.from('served from inside'));
      });
    const server = await client.spawn({
      argv: ['python3', '-m', 'http.server', '8123', '--bind', '127.0.0.1'],
      env: {},
      cwd: '/home/sandbox/www',
      tag: 'web',
    });
    const fetch = [
      'python3',
      '-c',
      'import time,urllib.request\n' +
        'for i in range(100):\n' +
        '  try:\n' +
        "    print(urllib.request.urlopen('http://127.0.0.1:8123/index.html').read().decode()); break\n" +
        '  except OSError: time.sleep(0.05)\n',
    ];
    const r = await run(client, fetch);
    assert.equal(r.stdout, 'served from inside\n');
    const listed = (await client.list()).find((p) => p.id === server.id);
    assert.equal(listed?.running, true);
    assert.equal(listed?.tag, 'web');
    assert.deepEqual(listed?.argv.slice(0, 3), ['python3', '-m', 'http.server']);
    await client.signal(server.id, 'SIGTERM');
    await until('server exit', async () =>
      (await client.list()).find((p) => p.id === server.id && !p.running),
    );
  });

  test('SIGNAL reaches the whole process group', async () => {
    const procId = { v: -1 };
    const w = watchProcess(client, () => procId.v);
    const { id } = await client.spawn({
      argv: ['sh', '-c', 'sleep 101 & sleep 102 & echo started; wait'],
      env: {},
      cwd: '',
    });
    procId.v = id;
    await until('start', () => (w.out.stdout.includes('started') ? true : undefined));
    const sleepers = async () =>
      (await run(client, ['sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "'])).stdout;
    assert.match(await sleepers(), /sleep 101/);
    await client.signal(id, 'SIGTERM');
    const exit = await w.exit;
    assert.deepEqual(
      { kind: exit.kind, signal: exit.kind === 'signal' ? exit.signal : null },
      { kind: 'signal', signal: 'SIGTERM' },
    );
    await until('group gone', async () => (/sleep 10[12]/.test(await sleepers()) ? undefined : true));
  });

  test('a PTY session reports its size and follows resize', async () => {
    let procId = -1;
    const w = watchProcess(client, () => procId);
    const { id } = await client.spawn({
      argv: ['sh', '-c', 'stty size; read line; stty size; tty'],
      env: {},
      cwd: '',
      pty: { rows: 24, cols: 80 },
    });
    procId = id;
    await until('first size', () => (w.out.stdout.includes('24 80') ? true : undefined));
    await client.resize(id, 40, 120);
    await client.writeStdin(id, Buffer.from('\n'));
    const exit = await w.exit;
    assert.equal(exit.kind, 'exit');
    assert.match(w.out.stdout, /24 80\r?\n[\s\S]*40 120\r?\n\/dev\/pts\/\d+/);
    await assert.rejects(client.resize(id, 1, 1), { code: 'BAD_REQUEST' }); // the terminal is gone
  });

  test('on a PTY, EXIT comes after the last output', async () => {
    for (let i = 0; i < 10; i++) {
      const r = await run(client, ['sh', '-c', 'seq 1 3000; printf end'], { pty: { rows: 24, cols: 80 } });
      assert.equal(r.exit.kind, 'exit');
      assert.match(r.stdout, /\r?\n3000\r?\nend$/);
    }
  });

  test('zombies are reaped by the agent as PID 1', async () => {
    const states = async () =>
      (await run(client, ['sh', '-c', 'for f in /proc/[0-9]*/stat; do cut -d" " -f2,3 "$f"; done'])).stdout;
    let procId = -1;
    const w = watchProcess(client, () => procId);
    // sleep 0 exits while its parent (sh, exec'd into sleep 1) never waits: a zombie until PID 1 reaps it.
    const { id } = await client.spawn({ argv: ['sh', '-c', 'sleep 0 & exec sleep 1'], env: {}, cwd: '' });
    procId = id;
    await until('a zombie to appear', async () => (/\(sleep\) Z/.test(await states()) ? true : undefined));
    await w.exit;
    await until('no zombie left', async () => (/ Z$/m.test(await states()) ? undefined : true));
  });

  test('output is replayed from an offset after the host reconnects', async () => {
    let procId = -1;
    const w = watchProcess(client, () => procId);
    const { id } = await client.spawn({
      argv: ['sh', '-c', 'echo first; read x; echo second; echo third >&2'],
      env: {},
      cwd: '',
      stdin: true,
    });
    procId = id;
    await until('first line', () => (w.out.stdout === 'first\n' ? true : undefined));
    const second = await AgentClient.connect(sb.socketPath, sb.token);
    try {
      // The first connection goes away; the process keeps running and its output is kept.
      client.close();
      await client.writeStdin(id, Buffer.from('\n')).catch(() => {});
      await second.writeStdin(id, Buffer.from('\n'));
      await until('exit', async () => (await second.list()).find((p) => p.id === id && !p.running));
      assert.deepEqual(await second.replay(id, 'stdout', 0), {
        data: Buffer.from('first\nsecond\n'),
        offset: 0,
        lost: 0,
      });
      assert.deepEqual(await second.replay(id, 'stdout', 6), {
        data: Buffer.from('second\n'),
        offset: 6,
        lost: 0,
      });
      assert.deepEqual(await second.replay(id, 'stderr', 0), {
        data: Buffer.from('third\n'),
        offset: 0,
        lost: 0,
      });
      assert.deepEqual(await second.replay(id, 'stdout', 1000), {
        data: Buffer.alloc(0),
        offset: 13,
        lost: 0,
      });
    } finally {
      client = second;
    }
  });

  test('the ring keeps the last 1 MiB and reports what was lost', async () => {
    const total = 3_000_000;
    const r = await run(client, ['head', '-c', String(total), '/dev/urandom']);
    assert.equal(r.exit.kind, 'exit');
    const replay = await client.replay(r.id, 'stdout', 0);
    assert.equal(replay.data.length, 1024 * 1024);
    assert.equal(replay.lost, total - 1024 * 1024);
    assert.equal(replay.offset, replay.lost);
    const listed = (await client.list()).find((p) => p.id === r.id);
    assert.equal(listed?.outputBytes.stdout, total);
  });

  test('unknown process ids are refused', async () => {
    await assert.rejects(client.signal(999_999, 'SIGKILL'), { code: 'NO_SUCH_PROCESS', errno: 'ESRCH' });
    await assert.rejects(client.replay(999_999, 'stdout', 0), { code: 'NO_SUCH_PROCESS' });
  });
});
