/**
 * Restart persistence: a server closed keeping its sandboxes, and a new one built on the same state directory,
 * serves the same sandboxes to the same owners (adopted by the manager, ownership from the store). Rows of
 * sandboxes that died meanwhile are dropped, and sandboxes no row owns are killed.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { request, serverStateDir, startServer, type TestServer } from './server-fixture.js';

const state = serverStateDir('server-restart');
const servers: TestServer[] = [];

after(async () => {
  for (const s of servers) await s.close().catch(() => {});
  state.cleanup();
});

test('sandboxes, their ownership, files and processes survive a server restart', async () => {
  const first = await startServer(state.dir);
  servers.push(first);
  const tenant = await first.newKey(['sandbox']);
  const other = await first.newKey(['sandbox']);
  const created = await request(first, 'POST', '/v1/sandboxes', {
    key: tenant.key,
    body: { metadata: { app: 'restart' }, timeoutMs: 120_000 },
  });
  assert.equal(created.status, 201, created.text);
  const id = created.json.id as string;
  const base = `/v1/sandboxes/${id}`;
  assert.equal(
    (await request(first, 'PUT', `${base}/files?path=note.txt`, { key: tenant.key, raw: 'kept' })).status,
    201,
  );
  const bg = await request(first, 'POST', `${base}/commands`, {
    key: tenant.key,
    body: { cmd: 'echo before; read x; echo "after $x"', background: true, stdin: true },
  });
  assert.equal(bg.status, 201, bg.text);
  // A sandbox whose row the store loses meanwhile (no owner) must not linger unreachable.
  const orphan = await request(first, 'POST', '/v1/sandboxes', { key: tenant.key, body: {} });
  await first.store.deleteSandbox(orphan.json.id);
  const adminKey = first.adminKey;
  await first.close({ keep: true });

  const second = await startServer(state.dir, { adminKey });
  servers.push(second);
  assert.deepEqual(second.reconciled.unowned, [orphan.json.id]);
  assert.equal(second.manager.get(orphan.json.id), undefined);

  const got = await request(second, 'GET', base, { key: tenant.key });
  assert.equal(got.status, 200, got.text);
  assert.equal(got.json.owner, tenant.id);
  assert.deepEqual(got.json.metadata, { app: 'restart' });
  assert.equal((await request(second, 'GET', base, { key: other.key })).status, 404);
  const listed = await request(second, 'GET', '/v1/sandboxes', { key: tenant.key });
  assert.deepEqual(
    listed.json.items.map((i: { id: string }) => i.id),
    [id],
  );
  assert.equal(
    (await request(second, 'GET', `${base}/files?path=note.txt`, { key: tenant.key })).text,
    'kept',
  );

  // the background process started before the restart: stdin, then replay from the start
  const pid = bg.json.id as number;
  const stdin = await request(second, 'POST', `${base}/processes/${pid}/stdin?eof=true`, {
    key: tenant.key,
    raw: 'restart\n',
  });
  assert.equal(stdin.status, 200, stdin.text);
  const output = await request(second, 'GET', `${base}/processes/${pid}/output`, { key: tenant.key });
  const lines = output.text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { type: string; data?: string; exitCode?: number });
  const stdout = Buffer.concat(
    lines.filter((l) => l.type === 'stdout').map((l) => Buffer.from(l.data ?? '', 'base64')),
  ).toString();
  assert.equal(stdout, 'before\nafter restart\n');
  assert.equal(lines.at(-1)?.exitCode, 0);

  // killing it after the restart still removes the row (the new server tracks adopted sandboxes)
  assert.equal((await request(second, 'DELETE', base, { key: tenant.key })).status, 200);
  assert.equal(await second.store.getSandbox(id), null);
  await second.close();
});
