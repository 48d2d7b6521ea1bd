/**
 * The unmodified `e2b` SDK (npm package, dev dependency) against a real `ironcage serve` app on 127.0.0.1:0:
 * real SandboxManager, bwrap sandboxes, SQLite store and API keys. Nothing is faked.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CommandExitError, Sandbox } from 'e2b';
import { E2B_ENVD_VERSION } from '../../src/server/e2b/api.js';
import { e2bConnection, serverStateDir, startServer, type TestServer } from './server-fixture.js';

describe('e2b SDK against ironcage serve', { timeout: 180_000 }, () => {
  let server: TestServer;
  let state: { dir: string; cleanup(): void };
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string; requestTimeoutMs: number };

  before(async () => {
    state = serverStateDir('e2b-compat');
    server = await startServer(state.dir);
    opts = e2bConnection(server);
  });

  after(async () => {
    await server?.close();
    state?.cleanup();
  });

  test('create, run with onStdout, write and read a file, info, list, timeout, kill', async () => {
    const sandbox = await Sandbox.create({ ...opts, metadata: { suite: 'e2b-compat' } });
    try {
      assert.match(sandbox.sandboxId, /^[0-9a-f]{16}$/);
      assert.ok(server.manager.get(sandbox.sandboxId), 'the SDK sandbox is a real ironcage sandbox');

      const chunks: string[] = [];
      const result = await sandbox.commands.run('echo hi; echo oops >&2', {
        onStdout: (data) => {
          chunks.push(data);
        },
      });
      assert.equal(result.exitCode, 0);
      assert.equal(result.stdout, 'hi\n');
      assert.equal(result.stderr, 'oops\n');
      assert.equal(chunks.join(''), 'hi\n');

      await assert.rejects(sandbox.commands.run('exit 3'), (err: unknown) => {
        assert.ok(err instanceof CommandExitError);
        assert.equal(err.exitCode, 3);
        return true;
      });

      await sandbox.files.write('/tmp/e2b/note.txt', 'written by the e2b SDK\n');
      assert.equal(await sandbox.files.read('/tmp/e2b/note.txt'), 'written by the e2b SDK\n');
      const cat = await sandbox.commands.run('cat /tmp/e2b/note.txt');
      assert.equal(cat.stdout, 'written by the e2b SDK\n', 'the file is inside the sandbox');

      const info = await sandbox.getInfo();
      assert.equal(info.sandboxId, sandbox.sandboxId);
      assert.equal(info.state, 'running');
      assert.equal(info.envdVersion, E2B_ENVD_VERSION);
      assert.deepEqual(info.metadata, { suite: 'e2b-compat' });

      const page = await Sandbox.list({ ...opts, query: { metadata: { suite: 'e2b-compat' } } }).nextItems();
      assert.deepEqual(
        page.map((s) => s.sandboxId),
        [sandbox.sandboxId],
      );
      const none = await Sandbox.list({ ...opts, query: { metadata: { suite: 'other' } } }).nextItems();
      assert.deepEqual(none, []);

      const before = server.manager.get(sandbox.sandboxId)?.deadline ?? 0;
      await sandbox.setTimeout(600_000);
      const deadline = server.manager.get(sandbox.sandboxId)?.deadline ?? 0;
      assert.ok(deadline > before, 'setTimeout moved the deadline');
      assert.ok(Math.abs(deadline - (Date.now() + 600_000)) < 10_000);
      assert.equal(await sandbox.isRunning(), true);
    } finally {
      await sandbox.kill();
    }
    assert.equal(server.manager.get(sandbox.sandboxId), undefined, 'kill removed the sandbox');
    assert.equal(await Sandbox.kill(sandbox.sandboxId, opts), false, 'a second kill finds nothing');
  });

  test('background commands, stdin, kill, and the filesystem calls', async () => {
    const sandbox = await Sandbox.create(opts);
    try {
      const handle = await sandbox.commands.run('read line; echo "got $line"', {
        background: true,
        stdin: true,
      });
      assert.ok(handle.pid > 0);
      const listed = await sandbox.commands.list();
      assert.ok(listed.some((p) => p.pid === handle.pid));
      await sandbox.commands.sendStdin(handle.pid, 'abc\n');
      const done = await handle.wait();
      assert.equal(done.stdout, 'got abc\n');

      const sleeper = await sandbox.commands.run('sleep 60', { background: true });
      assert.equal(await sandbox.commands.kill(sleeper.pid), true);
      await assert.rejects(sleeper.wait(), CommandExitError);

      assert.equal(await sandbox.files.exists('/tmp/d1'), false);
      assert.equal(await sandbox.files.makeDir('/tmp/d1/d2'), true);
      assert.equal(await sandbox.files.makeDir('/tmp/d1/d2'), false, 'an existing directory');
      await sandbox.files.write('/tmp/d1/a.txt', 'A');
      const entries = await sandbox.files.list('/tmp/d1');
      assert.deepEqual(entries.map((e) => `${e.name}:${e.type}`).sort(), ['a.txt:file', 'd2:dir']);
      await sandbox.files.rename('/tmp/d1/a.txt', '/tmp/d1/b.txt');
      assert.equal(await sandbox.files.read('/tmp/d1/b.txt'), 'A');
      await sandbox.files.remove('/tmp/d1');
      assert.equal(await sandbox.files.exists('/tmp/d1'), false);
      await assert.rejects(sandbox.files.read('/tmp/d1/b.txt'), /not found|no such/i);
    } finally {
      await sandbox.kill();
    }
  });

  test('keys: a wrong key is refused, another tenant cannot reach the sandbox', async () => {
    await assert.rejects(Sandbox.create({ ...opts, apiKey: `ick_${'x'.repeat(43)}` }), /401|Unauthorized/);
    const tenant = await server.newKey(['sandbox']);
    const other = await server.newKey(['sandbox']);
    const sandbox = await Sandbox.create({ ...opts, apiKey: tenant.key });
    try {
      await assert.rejects(Sandbox.getInfo(sandbox.sandboxId, { ...opts, apiKey: other.key }), /not found/i);
      assert.equal(await Sandbox.kill(sandbox.sandboxId, { ...opts, apiKey: other.key }), false);
      const otherList = await Sandbox.list({ ...opts, apiKey: other.key }).nextItems();
      assert.ok(!otherList.some((s) => s.sandboxId === sandbox.sandboxId));
      // A daemon call with a forged access token is refused even with the right sandbox id.
      const res = await fetch(`${opts.sandboxUrl}/process.Process/List`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'e2b-sandbox-id': sandbox.sandboxId,
          'x-access-token': 'forged',
        },
        body: '{}',
      });
      assert.equal(res.status, 401);
      const connected = await Sandbox.connect(sandbox.sandboxId, { ...opts, apiKey: tenant.key });
      assert.equal((await connected.commands.run('echo again')).stdout, 'again\n');
    } finally {
      await sandbox.kill();
    }
  });

  test('network: allowOut becomes the egress allowlist; all-destinations is refused', async () => {
    await assert.rejects(Sandbox.create({ ...opts, allowInternetAccess: true }), /400.*allowlist/);
    await assert.rejects(
      Sandbox.create({ ...opts, network: { allowOut: ['0.0.0.0/0'] } }),
      /400.*all destinations/,
    );
    const sandbox = await Sandbox.create({ ...opts, network: { allowOut: ['example.com'] } });
    try {
      const policy = server.manager.get(sandbox.sandboxId)?.policy.network;
      assert.equal(policy?.mode, 'proxy');
      assert.deepEqual(policy?.mode === 'proxy' ? policy.allow : [], ['example.com']);
      const info = await sandbox.getInfo();
      assert.equal(info.allowInternetAccess, false);
      assert.deepEqual(info.network?.allowOut, ['example.com']);
      // A destination off the list is refused by the egress proxy inside the sandbox.
      const probe = await sandbox.commands.run(
        'printf "GET http://example.org/ HTTP/1.0\\r\\nHost: example.org\\r\\n\\r\\n" | ' +
          '(exec 3<>/dev/tcp/127.0.0.1/3128; cat >&3; head -1 <&3)',
      );
      assert.match(probe.stdout, /^HTTP\/1\.[01] 403/);
    } finally {
      await sandbox.kill();
    }
  });

  test('configured only through E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY', async () => {
    const saved = { ...process.env };
    process.env.E2B_API_URL = opts.apiUrl;
    process.env.E2B_SANDBOX_URL = opts.sandboxUrl;
    process.env.E2B_API_KEY = opts.apiKey;
    try {
      const sandbox = await Sandbox.create();
      try {
        assert.equal((await sandbox.commands.run('echo env')).stdout, 'env\n');
      } finally {
        await sandbox.kill();
      }
      // Left running with its stream open: closing the server must end the stream, not wait for the command.
      const lingering = await Sandbox.create();
      const background = await lingering.commands.run('sleep 600', { background: true });
      assert.ok(background.pid > 0);
    } finally {
      for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    }
  });
});
