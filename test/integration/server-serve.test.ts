/**
 * `serveCommand` as a process: first-run admin key printed once, listening, SIGTERM shuts down with exit 0
 * keeping the sandboxes, and a second start adopts them (and prints no key).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  killServeProcesses,
  request,
  serverStateDir,
  spawnServe,
  startServe,
  startServer,
} from './server-fixture.js';

const state = serverStateDir('server-serve');

after(() => {
  killServeProcesses();
  state.cleanup();
});

const serve = (...args: string[]) => startServe(state.dir, args);

test('serve: first-run key, SIGTERM keeps sandboxes, restart adopts them; --on-shutdown kill kills them', async () => {
  const first = await serve();
  const key = /\n {2}(ick_[0-9A-Za-z]{43})\n/.exec(first.stdout())?.[1];
  assert.ok(key, first.stdout());
  const keyFile = join(state.dir, 'admin-key');
  assert.ok(existsSync(keyFile));
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);
  const created = await request(first, 'POST', '/v1/sandboxes', { key, body: { timeoutMs: 120_000 } });
  assert.equal(created.status, 201, created.text);
  first.child.kill('SIGTERM');
  assert.equal(await first.exit, 0);

  const second = await serve();
  assert.ok(!second.stdout().includes('ick_'), 'the admin key is printed only on the first run');
  const got = await request(second, 'GET', `/v1/sandboxes/${created.json.id}`, { key });
  assert.equal(got.status, 200, got.text);
  assert.equal(got.json.state, 'running');
  assert.equal((await request(second, 'DELETE', `/v1/sandboxes/${created.json.id}`, { key })).status, 200);
  second.child.kill('SIGINT');
  assert.equal(await second.exit, 0);

  // --on-shutdown kill: the sandbox dies with the server; the next start finds neither it nor its row.
  const third = await serve('--on-shutdown', 'kill');
  const doomed = await request(third, 'POST', '/v1/sandboxes', { key, body: { timeoutMs: 120_000 } });
  assert.equal(doomed.status, 201, doomed.text);
  third.child.kill('SIGTERM');
  assert.equal(await third.exit, 0);
  const fourth = await serve();
  assert.equal((await request(fourth, 'GET', `/v1/sandboxes/${doomed.json.id}`, { key })).status, 404);
  const listed = await request(fourth, 'GET', '/v1/sandboxes', { key });
  assert.deepEqual(listed.json.items, []);
  fourth.child.kill('SIGTERM');
  assert.equal(await fourth.exit, 0);
});

test('serve: bad arguments exit 2 naming the flag', async () => {
  const refused = async (args: string[], pattern: RegExp) => {
    const serve = spawnServe(state.dir, args);
    const code = await serve.exit;
    assert.equal(code, 2, serve.stderr());
    assert.match(serve.stderr(), pattern);
  };
  await refused(['--port', 'x'], /invalid port/);
  await refused(['--max-terminals-per-key', '0'], /invalid --max-terminals-per-key "0"/);
  await refused(['--on-shutdown', 'maybe'], /invalid --on-shutdown "maybe" \(keep or kill\)/);
});

test('closing the app does not wait for a connection a client opened and never used', async () => {
  // fetch (undici) keeps such a spare connection after a client aborts a stream; Node does not count it idle.
  const own = serverStateDir('close-unused');
  const server = await startServer(own.dir);
  const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
  await once(socket, 'connect');
  socket.on('error', () => {});
  const closing = server.close();
  const waited = await Promise.race([
    closing.then(() => false),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 3_000)),
  ]);
  if (waited) server.app.server.closeAllConnections(); // so a failure does not hang the suite
  await closing;
  socket.destroy();
  own.cleanup();
  assert.equal(waited, false, 'closing waited for a connection that never sent a byte');
});
