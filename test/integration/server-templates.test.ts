/**
 * Templates over the real HTTP API: a real server on 127.0.0.1:0 with real sandboxes (bwrap) and the SQLite
 * store. Covers who may write and read templates, creating a sandbox from one with overrides, and that the
 * tenant policy checks apply to the template and the request combined.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RateLimiter } from '../../src/server/auth/limits.js';
import { type Json, request, serverStateDir, startServer, type TestServer } from './server-fixture.js';

const state = serverStateDir('server-templates');
let server: TestServer;
let admin: string;
let tenant: string;
let hostDir: string;

before(async () => {
  server = await startServer(state.dir, { app: { rateLimiter: new RateLimiter() } });
  admin = server.adminKey;
  tenant = (await server.newKey(['sandbox'])).key;
  hostDir = mkdtempSync(join(tmpdir(), 'ironcage-tpl-host-'));
  // Readable by the sandbox's own (unprivileged) user.
  chmodSync(hostDir, 0o755);
  writeFileSync(join(hostDir, 'marker.txt'), 'from the host\n', { mode: 0o644 });
});

after(async () => {
  await server.close();
  rmSync(hostDir, { recursive: true, force: true });
  state.cleanup();
});

function assertError(res: { status: number; json: Json; text: string }, status: number, code?: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(typeof res.json?.error?.message, 'string', res.text);
  if (code !== undefined) assert.equal(res.json.error.code, code, res.text);
}

async function run(key: string, id: string, cmd: string): Promise<Json> {
  const res = await request(server, 'POST', `/v1/sandboxes/${id}/commands`, { key, body: { cmd } });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

async function kill(key: string, id: string): Promise<void> {
  assert.equal((await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key })).status, 200);
}

describe('templates', () => {
  const web = {
    preset: 'default',
    timeoutMs: 600_000,
    env: { GREETING: 'hello', MODE: 'template' },
    metadata: { team: 'web', tier: 'base' },
    policy: { limits: { openFiles: 777 }, env: { set: { FROM_TEMPLATE: 'tpl', SHARED: 'tpl' } } },
  };

  test('an admin creates and replaces a template; a tenant cannot (403)', async () => {
    const created = await request(server, 'PUT', '/v1/templates/web', { key: admin, body: web });
    assert.equal(created.status, 200, created.text);
    assert.equal(created.json.name, 'web');
    assert.deepEqual(created.json.template, web);
    const replaced = await request(server, 'PUT', '/v1/templates/web', { key: admin, body: web });
    assert.equal(replaced.status, 200, replaced.text);
    assert.equal(replaced.json.createdAt, created.json.createdAt);

    assertError(await request(server, 'PUT', '/v1/templates/mine', { key: tenant, body: web }), 403);
    assertError(await request(server, 'DELETE', '/v1/templates/web', { key: tenant }), 403);
    assert.equal(await server.store.getTemplate('mine'), null);
  });

  test('template names and bodies are validated like create requests', async () => {
    assertError(
      await request(server, 'PUT', '/v1/templates/Upper', { key: admin, body: {} }),
      400,
      'INVALID_INPUT',
    );
    assertError(
      await request(server, 'PUT', '/v1/templates/-x', { key: admin, body: {} }),
      400,
      'INVALID_INPUT',
    );
    assertError(
      await request(server, 'PUT', `/v1/templates/${'a'.repeat(64)}`, { key: admin, body: {} }),
      400,
      'INVALID_INPUT',
    );
    assertError(
      await request(server, 'PUT', '/v1/templates/bad', { key: admin, body: { template: 'web' } }),
      400,
      'INVALID_INPUT',
    );
    assertError(
      await request(server, 'PUT', '/v1/templates/bad', { key: admin, body: { preset: 'nope' } }),
      400,
      'INVALID_INPUT',
    );
    assertError(
      await request(server, 'PUT', '/v1/templates/bad', {
        key: admin,
        body: { policy: { limits: { openFiles: -1 } } },
      }),
      400,
    );
    assert.equal(await server.store.getTemplate('bad'), null);
  });

  test('a tenant lists and reads templates', async () => {
    const list = await request(server, 'GET', '/v1/templates', { key: tenant });
    assert.equal(list.status, 200, list.text);
    assert.ok(list.json.templates.some((t: Json) => t.name === 'web'));
    const one = await request(server, 'GET', '/v1/templates/web', { key: tenant });
    assert.equal(one.status, 200, one.text);
    assert.deepEqual(one.json.template, web);
    assertError(await request(server, 'GET', '/v1/templates/none', { key: tenant }), 404, 'NOT_FOUND');
  });

  test('creating from a template layers the request on top (request wins, metadata and env merged)', async () => {
    const res = await request(server, 'POST', '/v1/sandboxes', {
      key: tenant,
      body: {
        template: 'web',
        env: { MODE: 'request' },
        metadata: { tier: 'override', run: '1' },
        policy: { env: { set: { SHARED: 'req', FROM_REQUEST: 'req' } } },
      },
    });
    assert.equal(res.status, 201, res.text);
    const id = res.json.id as string;
    assert.deepEqual(res.json.metadata, { team: 'web', tier: 'override', run: '1' });
    // timeoutMs came from the template: the deadline is about ten minutes away, not the five-minute default
    const left = Date.parse(res.json.deadline) - Date.now();
    assert.ok(left > 500_000 && left <= 600_000, `deadline ${res.json.deadline}`);
    const out = await run(tenant, id, 'echo "$GREETING $MODE"');
    assert.equal(out.stdout, 'hello request\n');
    const record = await server.store.getSandbox(id);
    assert.equal(record?.template, 'web');
    // policies layered: the template's limit kept, env.set objects merged with the request winning
    const policy = await run(tenant, id, 'echo "$(ulimit -n) $FROM_TEMPLATE $SHARED $FROM_REQUEST"');
    assert.equal(policy.stdout, '777 tpl req req\n');
    await kill(tenant, id);

    // without a template the record says so
    const plain = await request(server, 'POST', '/v1/sandboxes', { key: tenant, body: {} });
    assert.equal(plain.status, 201, plain.text);
    assert.equal((await server.store.getSandbox(plain.json.id))?.template, null);
    await kill(tenant, plain.json.id);
  });

  test('an unknown template is a 404 that names it', async () => {
    const res = await request(server, 'POST', '/v1/sandboxes', { key: tenant, body: { template: 'ghost' } });
    assertError(res, 404, 'NOT_FOUND');
    assert.match(res.json.error.message, /template "ghost"/);
    assertError(
      await request(server, 'POST', '/v1/sandboxes', { key: tenant, body: { template: 'Bad Name' } }),
      400,
      'INVALID_INPUT',
    );
  });

  test('a template with host binds is refused for a tenant create but allowed for an admin', async () => {
    const withHost = { policy: { filesystem: { readOnly: [hostDir] } } };
    const put = await request(server, 'PUT', '/v1/templates/host-data', { key: admin, body: withHost });
    assert.equal(put.status, 200, put.text);

    const refused = await request(server, 'POST', '/v1/sandboxes', {
      key: tenant,
      body: { template: 'host-data' },
    });
    assertError(refused, 403, 'POLICY_FORBIDDEN');
    assert.match(refused.json.error.message, /policy\.filesystem\.readOnly/);
    assert.match(refused.json.error.message, /template "host-data"/);
    // the combined policy counts: a harmless template plus a tenant's own host bind is refused too
    assertError(
      await request(server, 'POST', '/v1/sandboxes', {
        key: tenant,
        body: { template: 'web', policy: { filesystem: { readOnly: [hostDir] } } },
      }),
      403,
      'POLICY_FORBIDDEN',
    );

    const allowed = await request(server, 'POST', '/v1/sandboxes', {
      key: admin,
      body: { template: 'host-data' },
    });
    assert.equal(allowed.status, 201, allowed.text);
    const out = await run(admin, allowed.json.id, `cat ${hostDir}/marker.txt`);
    assert.equal(out.stdout, 'from the host\n', out.stderr);
    await kill(admin, allowed.json.id);
  });

  test('an admin deletes a template; creating from it is then a 404', async () => {
    const del = await request(server, 'DELETE', '/v1/templates/host-data', { key: admin });
    assert.equal(del.status, 200, del.text);
    assert.deepEqual(del.json, { name: 'host-data' });
    assertError(await request(server, 'DELETE', '/v1/templates/host-data', { key: admin }), 404, 'NOT_FOUND');
    assertError(await request(server, 'GET', '/v1/templates/host-data', { key: tenant }), 404);
    assertError(
      await request(server, 'POST', '/v1/sandboxes', { key: admin, body: { template: 'host-data' } }),
      404,
      'NOT_FOUND',
    );
    const list = await request(server, 'GET', '/v1/templates', { key: admin });
    assert.deepEqual(
      list.json.templates.map((t: Json) => t.name),
      ['web'],
    );
  });
});
