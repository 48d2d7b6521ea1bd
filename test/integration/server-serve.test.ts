/**
 * `serveCommand` as a process: first-run admin key printed once, listening, SIGTERM shuts down with exit 0
 * keeping the sandboxes, and a second start adopts them (and prints no key).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { request, serverStateDir } from './server-fixture.js';

const state = serverStateDir('server-serve');
// The bundled CLI, exactly what `ironcage serve` runs once installed.
const cli = fileURLToPath(new URL('../../bin/main.js', import.meta.url));
const children: ChildProcess[] = [];

after(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  state.cleanup();
});

interface Running {
  child: ChildProcess;
  url: string;
  stdout: () => string;
  exit: Promise<number | null>;
}

function withoutAdminKey(): NodeJS.ProcessEnv {
  const { IRONCAGE_ADMIN_KEY: _ignored, ...env } = process.env;
  return env;
}

async function serve(...args: string[]): Promise<Running> {
  const child = spawn(
    process.execPath,
    [cli, 'serve', '--port', '0', '--state-dir', state.dir, '--log-level', 'warn', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: withoutAdminKey() },
  );
  children.push(child);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (let i = 0; i < 200; i++) {
    const match = /listening on (http:\/\/\S+)/.exec(out);
    if (match) return { child, url: match[1] as string, stdout: () => out, exit };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`serve did not start: ${out} ${err}`);
}

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
    const child = spawn(process.execPath, [cli, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 2, err);
    assert.match(err, pattern);
  };
  await refused(['--port', 'x'], /invalid port/);
  await refused(['--max-terminals-per-key', '0'], /invalid --max-terminals-per-key "0"/);
  await refused(['--on-shutdown', 'maybe'], /invalid --on-shutdown "maybe" \(keep or kill\)/);
});
