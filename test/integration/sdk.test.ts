/**
 * The TypeScript SDK (src/sdk) against a real `ironcage serve` app on 127.0.0.1:0: real fetch, real sandboxes
 * (bwrap + agent), the real store. Nothing is faked.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  AuthenticationError,
  ConflictError,
  ConnectionError,
  ForbiddenError,
  IroncageClient,
  IroncageError,
  NotFoundError,
  Sandbox,
  ValidationError,
} from '../../src/sdk/index.js';
import { serverStateDir, startServer, type TestServer } from './server-fixture.js';

const state = serverStateDir('sdk');
let server: TestServer;
let conn: { apiUrl: string; apiKey: string };

before(async () => {
  server = await startServer(state.dir);
  conn = { apiUrl: server.url, apiKey: server.adminKey };
});

after(async () => {
  await server.close();
  state.cleanup();
});

/** Sandboxes a test created, killed at the end even when an assertion failed first. */
async function withSandbox(
  options: Parameters<typeof Sandbox.create>[0],
  body: (sandbox: Sandbox) => Promise<void>,
): Promise<void> {
  await using sandbox = await Sandbox.create({ ...conn, ...options });
  await body(sandbox);
}

describe('sandboxes and commands', () => {
  test('create, shell and argv runs, env, cwd, exit codes, info, connect, kill', async () => {
    await withSandbox({ env: { GREETING: 'hello' }, metadata: { suite: 'sdk-basic' } }, async (sandbox) => {
      assert.match(sandbox.id, /^[0-9a-f]{16}$/);
      const shell = await sandbox.commands.run('echo "$GREETING $EXTRA"; echo oops >&2; exit 3', {
        env: { EXTRA: 'world' },
      });
      assert.equal(shell.stdout, 'hello world\n');
      assert.equal(shell.stderr, 'oops\n');
      assert.equal(shell.exitCode, 3);
      assert.equal(shell.timedOut, false);
      assert.ok(shell.id >= 0 && shell.pid > 0);

      // argv: no shell, so no expansion
      const argv = await sandbox.commands.run(['echo', '$HOME', '*']);
      assert.equal(argv.stdout, '$HOME *\n');
      assert.equal(argv.exitCode, 0);

      const py = await sandbox.commands.run(['python3', '-c', 'import os; print(os.getcwd())'], {
        cwd: '/tmp',
      });
      assert.equal(py.stdout, '/tmp\n');

      const piped = await sandbox.commands.run('tr a-z A-Z', { stdin: 'shout\n' });
      assert.equal(piped.stdout, 'SHOUT\n');

      const slow = await sandbox.commands.run(['sleep', '30'], { timeoutMs: 200 });
      assert.equal(slow.timedOut, true);

      const info = await sandbox.info();
      assert.equal(info.id, sandbox.id);
      assert.equal(info.state, 'running');
      assert.deepEqual(info.metadata, { suite: 'sdk-basic' });

      const again = await Sandbox.connect(sandbox.id, conn);
      assert.equal((await again.commands.run('echo $GREETING')).stdout, 'hello\n');

      const page = await Sandbox.list({ ...conn, metadata: { suite: 'sdk-basic' } });
      assert.deepEqual(
        page.items.map((s) => s.id),
        [sandbox.id],
      );

      assert.equal(await sandbox.kill(), true);
      assert.equal(await sandbox.kill(), false, 'a second kill finds nothing');
      await assert.rejects(sandbox.info(), NotFoundError);
    });
  });

  test('streaming callbacks see the output as it happens, split by stream', async () => {
    await withSandbox({}, async (sandbox) => {
      const seen: { stream: string; data: string; at: number }[] = [];
      const start = Date.now();
      const result = await sandbox.commands.run(
        ['sh', '-c', 'echo one; echo e1 >&2; sleep 1; echo two; printf "\\303\\251"'],
        {
          onStdout: (data) => seen.push({ stream: 'out', data, at: Date.now() - start }),
          onStderr: (data) => seen.push({ stream: 'err', data, at: Date.now() - start }),
        },
      );
      const out = seen.filter((s) => s.stream === 'out');
      assert.equal(out.map((s) => s.data).join(''), 'one\ntwo\né');
      assert.equal(result.stdout, 'one\ntwo\né');
      assert.equal(
        seen
          .filter((s) => s.stream === 'err')
          .map((s) => s.data)
          .join(''),
        'e1\n',
      );
      assert.equal(result.stderr, 'e1\n');
      // "one" arrived before the sleep ended, not with the result.
      const one = out.find((s) => s.data.includes('one'));
      assert.ok(one !== undefined && one.at < 900, `first chunk at ${one?.at} ms`);
    });
  });

  test('background: stdin, wait, replay from an offset, reattach, list, kill with a signal', async () => {
    await withSandbox({}, async (sandbox) => {
      const proc = await sandbox.commands.run(
        ['sh', '-c', 'while read line; do echo "got:$line"; done; echo done >&2; exit 7'],
        { background: true, stdin: true, tag: 'echoer' },
      );
      assert.ok(proc.pid > 0);
      assert.deepEqual(proc.argv.slice(0, 2), ['sh', '-c']);
      const sent = await proc.sendStdin('a\n');
      assert.equal(sent.bytes, 2);
      await proc.sendStdin(new TextEncoder().encode('b\n'), { eof: true });
      const result = await proc.wait();
      assert.equal(result.exitCode, 7);
      assert.equal(result.stdout, 'got:a\ngot:b\n');
      assert.equal(result.stderr, 'done\n');

      // Replay from an offset, through a handle found again by id.
      const again = await sandbox.commands.connect(proc.id);
      const chunks: string[] = [];
      const replay = await again.output({ fromOffset: 6, onStdout: (d) => chunks.push(d) });
      assert.equal(replay.stdout, 'got:b\n');
      assert.equal(chunks.join(''), 'got:b\n');
      assert.equal(replay.exitCode, 7);

      const listed = await sandbox.commands.list();
      const entry = listed.find((p) => p.id === proc.id);
      assert.equal(entry?.tag, 'echoer');
      assert.equal(entry?.running, false);
      assert.equal(entry?.exitCode, 7);

      // Live output, then a signal ends it.
      const sleeper = await sandbox.commands.run('echo ready; exec sleep 60', { background: true });
      const live: string[] = [];
      const following = sleeper.output({ onStdout: (d) => live.push(d) });
      await waitFor(() => live.join('') === 'ready\n');
      await sleeper.kill('SIGTERM');
      const ended = await following;
      assert.equal(ended.signal, 'SIGTERM');
      assert.equal(ended.exitCode, null);

      // stdin of a process that never opened it.
      const closed = await sandbox.commands.run(['sleep', '5'], { background: true });
      await assert.rejects(closed.sendStdin('x'), ConflictError);
      await closed.kill();
      await assert.rejects(sandbox.commands.connect(999_999), NotFoundError);
    });
  });
});

describe('files', () => {
  test('binary 1 MiB round trip, text, list, stat, mkdir, rename, remove', async () => {
    await withSandbox({}, async (sandbox) => {
      const data = new Uint8Array(randomBytes(1024 * 1024));
      const written = await sandbox.files.write('/home/sandbox/blob.bin', data);
      assert.equal(written.bytes, data.length);
      const back = await sandbox.files.read('/home/sandbox/blob.bin');
      assert.equal(back.length, data.length);
      assert.ok(Buffer.from(back).equals(Buffer.from(data)), 'bytes differ');
      const sum = await sandbox.commands.run(['sha256sum', '/home/sandbox/blob.bin']);
      assert.equal(sum.stdout.split(' ')[0], createHashHex(data));

      await sandbox.files.write('/home/sandbox/dir/a/note.txt', 'héllo\n');
      assert.equal(await sandbox.files.readText('/home/sandbox/dir/a/note.txt'), 'héllo\n');
      const stat = await sandbox.files.stat('/home/sandbox/dir/a/note.txt');
      assert.equal(stat.type, 'file');
      assert.equal(stat.size, Buffer.byteLength('héllo\n'));

      await sandbox.files.makeDir('/home/sandbox/dir/b/c');
      const deep = await sandbox.files.list('/home/sandbox/dir', { depth: 3 });
      const names = deep.map((e) => e.path).sort();
      assert.ok(
        names.some((p) => p.endsWith('/dir/a/note.txt')),
        names.join(),
      );
      assert.ok(
        names.some((p) => p.endsWith('/dir/b/c')),
        names.join(),
      );
      const shallow = await sandbox.files.list('/home/sandbox/dir');
      assert.deepEqual(shallow.map((e) => e.name).sort(), ['a', 'b']);

      await sandbox.files.rename('/home/sandbox/dir/a/note.txt', '/home/sandbox/dir/moved.txt');
      await assert.rejects(sandbox.files.stat('/home/sandbox/dir/a/note.txt'), NotFoundError);
      assert.equal(await sandbox.files.readText('/home/sandbox/dir/moved.txt'), 'héllo\n');

      await assert.rejects(sandbox.files.remove('/home/sandbox/dir'), ConflictError);
      await sandbox.files.remove('/home/sandbox/dir', { recursive: true });
      await assert.rejects(sandbox.files.read('/home/sandbox/dir/moved.txt'), NotFoundError);
    });
  });
});

describe('network', () => {
  test('rules, merge, replace, events', async () => {
    await withSandbox(
      { policy: { network: { mode: 'proxy', allow: ['example.com:443'] } } },
      async (sandbox) => {
        const initial = await sandbox.network.rules();
        assert.equal(initial.enabled, true);
        assert.deepEqual(initial.rules.allow, ['example.com:443']);
        const merged = await sandbox.network.merge({ allow: ['pypi.org'] });
        assert.deepEqual([...merged.rules.allow].sort(), ['example.com:443', 'pypi.org']);
        assert.deepEqual((await sandbox.network.rules()).rules.allow.sort(), ['example.com:443', 'pypi.org']);
        await assert.rejects(sandbox.network.merge({ allow: ['not a rule ::'] }), ValidationError);
        const replaced = await sandbox.network.replace({ allow: ['pypi.org'] });
        assert.deepEqual(replaced.rules.allow, ['pypi.org']);
        const events = await sandbox.network.events({ since: 0, limit: 10 });
        assert.ok(Array.isArray(events.events));
        assert.equal(typeof events.next, 'number');
      },
    );
    await withSandbox({ policy: { network: { mode: 'none' } } }, async (sandbox) => {
      await assert.rejects(sandbox.network.merge({ allow: ['pypi.org'] }), ConflictError);
    });
  });
});

describe('disposal, listing, errors', () => {
  test('await using kills the sandbox at the end of the block', async () => {
    let id = '';
    {
      await using sandbox = await Sandbox.create(conn);
      id = sandbox.id;
      assert.equal((await sandbox.commands.run('echo in')).stdout, 'in\n');
    }
    assert.equal(server.manager.get(id)?.state ?? 'stopped', 'stopped');
    await assert.rejects(Sandbox.connect(id, conn), NotFoundError);
  });

  test('listAll walks every page', async () => {
    const tag = randomBytes(4).toString('hex');
    const made = await Promise.all([1, 2, 3].map(() => Sandbox.create({ ...conn, metadata: { tag } })));
    try {
      const seen: string[] = [];
      for await (const info of Sandbox.listAll({ ...conn, metadata: { tag }, limit: 2 })) seen.push(info.id);
      assert.deepEqual(seen.sort(), made.map((s) => s.id).sort());
      const first = await Sandbox.list({ ...conn, metadata: { tag }, limit: 2 });
      assert.equal(first.items.length, 2);
      assert.notEqual(first.next, null);
    } finally {
      await Promise.all(made.map((s) => s.kill()));
    }
  });

  test('typed errors: bad key, unknown id, invalid input, forbidden, unreachable server', async () => {
    const bad = await assertRejectsWith(Sandbox.create({ ...conn, apiKey: 'ic_wrong' }), AuthenticationError);
    assert.equal(bad.status, 401);
    assert.ok(bad.message.length > 10);
    assert.ok(bad.requestId !== null && bad.requestId.length > 0);

    const missing = await assertRejectsWith(Sandbox.connect('0123456789abcdef', conn), NotFoundError);
    assert.equal(missing.status, 404);

    const invalid = await assertRejectsWith(Sandbox.create({ ...conn, timeoutMs: -5 }), ValidationError);
    assert.equal(invalid.status, 400);
    assert.match(invalid.message, /timeoutMs/);
    assert.ok(invalid instanceof IroncageError);

    const tenant = await server.newKey(['sandbox']);
    const asTenant = new IroncageClient({ apiUrl: server.url, apiKey: tenant.key });
    const forbidden = await assertRejectsWith(asTenant.secrets.list(), ForbiddenError);
    assert.equal(forbidden.status, 403);

    const down = await assertRejectsWith(
      Sandbox.list({ apiUrl: 'http://127.0.0.1:1', apiKey: 'x' }),
      ConnectionError,
    );
    assert.match(down.message, /127\.0\.0\.1:1/);
    assert.equal(down.status, null);

    assert.throws(() => new IroncageClient({ apiUrl: server.url, apiKey: '' }), /API key/);
  });

  test('IroncageClient: secrets and keys', async () => {
    const client = new IroncageClient(conn);
    assert.equal((await client.ready()).status, 'ready');
    const secret = await client.secrets.create({
      name: 'SDK_TOKEN',
      value: 's3cret-value',
      hosts: ['api.example.com'],
    });
    assert.equal(secret.name, 'SDK_TOKEN');
    assert.equal(JSON.stringify(secret).includes('s3cret-value'), false);
    assert.ok((await client.secrets.list()).some((s) => s.name === 'SDK_TOKEN'));
    await client.secrets.delete('SDK_TOKEN');
    assert.ok(!(await client.secrets.list()).some((s) => s.name === 'SDK_TOKEN'));
    await assert.rejects(client.secrets.delete('SDK_TOKEN'), NotFoundError);

    const key = await client.keys.create({
      name: 'sdk tenant',
      scopes: ['sandbox'],
      limits: { maxSandboxes: 1 },
    });
    assert.ok(key.key.length > 20);
    assert.ok((await client.keys.list()).some((k) => k.id === key.id));
    // The new key works (its sandboxes are its own) until revoked.
    const mine = await Sandbox.create({ apiUrl: server.url, apiKey: key.key });
    try {
      assert.equal((await mine.info()).owner, key.id);
      const revoked = await client.keys.revoke(key.id);
      assert.notEqual(revoked.revokedAt, null);
      await assert.rejects(mine.info(), AuthenticationError);
    } finally {
      // The revoked key cannot kill it any more; the admin connection can.
      assert.equal(await (await Sandbox.connect(mine.id, conn)).kill(), true);
    }
  });
});

async function assertRejectsWith<E extends Error>(
  promise: Promise<unknown>,
  type: new (...args: never[]) => E,
): Promise<E> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `expected ${type.name}, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${type.name}, but it resolved`);
}

async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function createHashHex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
