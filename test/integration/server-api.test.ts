/**
 * `ironcage serve`'s HTTP API end to end: a real server on 127.0.0.1:0, real fetch, real sandboxes (real bwrap
 * and agent) under a real SandboxManager, the real SQLite store and vault in a temporary state directory.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { RateLimiter } from '../../src/server/auth/limits.js';
import { skipNoFreezer } from './sandbox-fixture.js';
import {
  type Json,
  ndjsonLines,
  request,
  serverStateDir,
  startServer,
  streamText,
  type TestServer,
} from './server-fixture.js';

const state = serverStateDir('server-api');
let server: TestServer;
let admin: string;

before(async () => {
  server = await startServer(state.dir, { app: { rateLimiter: new RateLimiter() } });
  admin = server.adminKey;
});

after(async () => {
  await server.close();
  state.cleanup();
});

async function createSandbox(key: string, body: Record<string, unknown> = {}): Promise<string> {
  const res = await request(server, 'POST', '/v1/sandboxes', { key, body });
  assert.equal(res.status, 201, res.text);
  return res.json.id as string;
}

function assertError(res: { status: number; json: Json; text: string }, status: number, code?: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(typeof res.json?.error?.message, 'string', res.text);
  assert.ok(res.json.error.message.length > 10, res.text);
  if (code !== undefined) assert.equal(res.json.error.code, code, res.text);
}

describe('health, readiness, errors', () => {
  test('health and ready are public; other routes need a key', async () => {
    const health = await request(server, 'GET', '/health');
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: 'ok' });
    const ready = await request(server, 'GET', '/ready');
    assert.equal(ready.status, 200);
    assert.equal(ready.json.status, 'ready');
    assert.deepEqual(ready.json.checks, { store: 'ok', manager: 'ok' });
    assertError(await request(server, 'GET', '/openapi.json'), 401, 'UNAUTHENTICATED');
  });

  test('request ids are accepted, echoed, generated, and recorded in audit events', async () => {
    const given = `test-${randomBytes(4).toString('hex')}`;
    const res = await request(server, 'POST', '/v1/sandboxes', {
      key: admin,
      body: { metadata: { purpose: 'request-id' } },
      headers: { 'x-request-id': given },
    });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.headers.get('x-request-id'), given);
    const events = await server.store.listAuditEvents({ sandboxId: res.json.id, type: 'sandbox.create' });
    assert.equal(events.events.length, 1);
    assert.equal(events.events[0]?.requestId, given);
    const generated = await request(server, 'GET', '/health', { headers: { 'x-request-id': 'bad id!' } });
    const id = generated.headers.get('x-request-id') ?? '';
    assert.match(id, /^[0-9a-f-]{36}$/);
    await request(server, 'DELETE', `/v1/sandboxes/${res.json.id}`, { key: admin });
  });

  test('malformed input is a clear 4xx JSON error', async () => {
    assertError(
      await request(server, 'POST', '/v1/sandboxes', {
        key: admin,
        raw: '{"preset":',
        headers: { 'content-type': 'application/json' },
      }),
      400,
      'INVALID_JSON',
    );
    assertError(
      await request(server, 'POST', '/v1/sandboxes', {
        key: admin,
        raw: 'preset=default',
        headers: { 'content-type': 'text/plain' },
      }),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
    );
    const unknownField = await request(server, 'POST', '/v1/sandboxes', {
      key: admin,
      body: { presett: 'x' },
    });
    assertError(unknownField, 400, 'INVALID_INPUT');
    assert.match(unknownField.json.error.message, /presett/);
    const badPolicy = await request(server, 'POST', '/v1/sandboxes', {
      key: admin,
      body: { policy: { limits: { memoryMb: -1 } } },
    });
    assertError(badPolicy, 400);
    assert.match(badPolicy.json.error.message, /memoryMb/);
    assertError(await request(server, 'GET', '/v1/nothing', { key: admin }), 404, 'ROUTE_NOT_FOUND');
    assertError(await request(server, 'GET', '/v1/sandboxes/..%2f..', { key: admin }), 400);
    assertError(await request(server, 'GET', '/v1/sandboxes/nope', { key: admin }), 404, 'NOT_FOUND');
    assertError(
      await request(server, 'GET', '/v1/sandboxes?limit=abc', { key: admin }),
      400,
      'INVALID_INPUT',
    );
    assertError(
      await request(server, 'GET', '/v1/sandboxes?cursor=zzz', { key: admin }),
      400,
      'INVALID_CURSOR',
    );
    assertError(
      await request(server, 'POST', '/v1/sandboxes', { key: admin, body: { preset: 'strict' } }),
      400,
      'POLICY_INVALID',
    );
  });
});

describe('sandbox lifecycle through the API', () => {
  test('create → foreground (JSON, NDJSON) → background + replay → stdin → files → network → kill', async () => {
    const created = await request(server, 'POST', '/v1/sandboxes', {
      key: admin,
      body: {
        env: { GREETING: 'hello' },
        metadata: { suite: 'lifecycle' },
        timeoutMs: 120_000,
        policy: { network: { mode: 'proxy', allow: ['example.com:443'] } },
      },
    });
    assert.equal(created.status, 201, created.text);
    const info = created.json;
    assert.match(info.id, /^[0-9a-f]{16}$/);
    assert.equal(info.state, 'running');
    assert.deepEqual(info.metadata, { suite: 'lifecycle' });
    assert.deepEqual(info.network, { enabled: true });
    assert.ok(Date.parse(info.deadline) > Date.now() + 100_000);
    const base = `/v1/sandboxes/${info.id}`;

    // foreground, one JSON result
    const fg = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: {
        cmd: 'echo "$GREETING $EXTRA"; cat; echo oops >&2; exit 3',
        env: { EXTRA: 'world' },
        stdin: 'in\n',
      },
    });
    assert.equal(fg.status, 200, fg.text);
    assert.equal(fg.json.exitCode, 3);
    assert.equal(fg.json.stdout, 'hello world\nin\n');
    assert.equal(fg.json.stderr, 'oops\n');
    assert.equal(fg.json.timedOut, false);

    // argv without a shell: no expansion
    const argv = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: { argv: ['echo', '$HOME', '*'] },
    });
    assert.equal(argv.json.stdout, '$HOME *\n');

    // foreground, NDJSON stream with binary-safe base64 output
    const nd = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: { cmd: "printf 'a\\377b'; printf 'err' >&2; exit 5" },
      headers: { accept: 'application/x-ndjson' },
    });
    assert.equal(nd.status, 200);
    assert.match(nd.headers.get('content-type') ?? '', /application\/x-ndjson/);
    const lines = ndjsonLines(nd.text);
    assert.equal(lines[0]?.type, 'start');
    const stdout = Buffer.concat(
      lines.filter((l) => l.type === 'stdout').map((l) => Buffer.from(l.data, 'base64')),
    );
    assert.deepEqual([...stdout], [0x61, 0xff, 0x62]);
    assert.equal(streamText(lines, 'stderr'), 'err');
    assert.deepEqual(lines.at(-1), {
      type: 'exit',
      exitCode: 5,
      signal: null,
      timedOut: false,
      truncated: false,
      cpuMs: lines.at(-1)?.cpuMs,
      maxRssKb: lines.at(-1)?.maxRssKb,
    });

    // a foreground timeout kills the command
    const slow = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: { argv: ['sleep', '30'], timeoutMs: 200 },
    });
    assert.equal(slow.json.timedOut, true);
    assert.equal(slow.json.signal, 'SIGKILL');

    // background, then re-attach with replay from offsets
    const bg = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: {
        cmd: 'for i in 1 2 3; do echo line$i; done; read x; echo "got $x"',
        background: true,
        stdin: true,
      },
    });
    assert.equal(bg.status, 201, bg.text);
    const pid = bg.json.id as number;
    assert.equal(typeof bg.json.pid, 'number');
    const procs = await request(server, 'GET', `${base}/processes`, { key: admin });
    assert.ok(procs.json.processes.some((p: { id: number; running: boolean }) => p.id === pid && p.running));
    const stdin = await request(server, 'POST', `${base}/processes/${pid}/stdin?eof=true`, {
      key: admin,
      raw: 'you\n',
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(stdin.status, 200, stdin.text);
    assert.equal(stdin.json.bytes, 4);
    const replay = await request(server, 'GET', `${base}/processes/${pid}/output`, { key: admin });
    const replayLines = ndjsonLines(replay.text);
    assert.equal(streamText(replayLines, 'stdout'), 'line1\nline2\nline3\ngot you\n');
    assert.equal(replayLines.at(-1)?.type, 'exit');
    assert.equal(replayLines.at(-1)?.exitCode, 0);
    const fromOffset = await request(server, 'GET', `${base}/processes/${pid}/output?fromOffset=6`, {
      key: admin,
    });
    assert.equal(streamText(ndjsonLines(fromOffset.text), 'stdout'), 'line2\nline3\ngot you\n');

    // live follow: output produced after attaching arrives, then the exit
    const live = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: { cmd: 'sleep 0.3; echo late', background: true },
    });
    const followed = await request(server, 'GET', `${base}/processes/${live.json.id}/output`, { key: admin });
    const followedLines = ndjsonLines(followed.text);
    assert.equal(streamText(followedLines, 'stdout'), 'late\n');
    assert.equal(followedLines.at(-1)?.type, 'exit');

    // kill a background process with a signal
    const sleeper = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: { argv: ['sleep', '60'], background: true },
    });
    const killed = await request(server, 'POST', `${base}/processes/${sleeper.json.id}/kill`, {
      key: admin,
      body: { signal: 'SIGTERM' },
    });
    assert.equal(killed.status, 200, killed.text);
    const afterKill = ndjsonLines(
      (await request(server, 'GET', `${base}/processes/${sleeper.json.id}/output`, { key: admin })).text,
    );
    assert.equal(afterKill.at(-1)?.signal, 'SIGTERM');
    assertError(await request(server, 'POST', `${base}/processes/999999/kill`, { key: admin }), 404);

    // files: 1 MiB up and down, byte for byte
    const blob = randomBytes(1024 * 1024 + 17);
    const up = await request(server, 'PUT', `${base}/files?path=${encodeURIComponent('data/blob.bin')}`, {
      key: admin,
      raw: blob,
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(up.status, 201, up.text);
    assert.equal(up.json.bytes, blob.length);
    const down = await fetch(`${server.url}${base}/files?path=data/blob.bin`, {
      headers: { authorization: `Bearer ${admin}` },
    });
    assert.equal(down.status, 200);
    assert.equal(down.headers.get('content-type'), 'application/octet-stream');
    assert.ok(Buffer.from(await down.arrayBuffer()).equals(blob));
    const sum = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: { argv: ['wc', '-c', 'data/blob.bin'] },
    });
    assert.equal(sum.json.stdout.trim(), `${blob.length} data/blob.bin`);
    const stat = await request(server, 'GET', `${base}/files/stat?path=data/blob.bin`, { key: admin });
    assert.equal(stat.json.type, 'file');
    assert.equal(stat.json.size, blob.length);
    assert.equal(
      (await request(server, 'POST', `${base}/files/mkdir`, { key: admin, body: { path: 'a/b/c' } })).status,
      201,
    );
    const renamed = await request(server, 'POST', `${base}/files/rename`, {
      key: admin,
      body: { from: 'data/blob.bin', to: 'a/b/c/moved.bin' },
    });
    assert.equal(renamed.status, 200, renamed.text);
    const listing = await request(server, 'GET', `${base}/files/list?path=a&depth=3`, { key: admin });
    assert.ok(
      listing.json.entries.some((e: { name: string }) => e.name === 'moved.bin'),
      listing.text,
    );
    assertError(
      await request(server, 'GET', `${base}/files?path=data/blob.bin`, { key: admin }),
      404,
      'FILE_NOT_FOUND',
    );
    assertError(
      await request(server, 'DELETE', `${base}/files?path=a`, { key: admin }),
      409,
      'DIRECTORY_NOT_EMPTY',
    );
    assert.equal(
      (await request(server, 'DELETE', `${base}/files?path=a&recursive=true`, { key: admin })).status,
      200,
    );
    assertError(await request(server, 'GET', `${base}/files/stat?path=a`, { key: admin }), 404);
    const empty = await request(server, 'PUT', `${base}/files?path=empty.txt`, { key: admin });
    assert.equal(empty.json.bytes, 0);

    // network: get, merge (both media types), replace, invalid rule keeps the old rules, events
    const net = await request(server, 'GET', `${base}/network`, { key: admin });
    assert.equal(net.json.enabled, true);
    assert.deepEqual(net.json.rules.allow, ['example.com:443']);
    const merged = await request(server, 'PATCH', `${base}/network`, {
      key: admin,
      raw: JSON.stringify({ allow: ['pypi.org:443'], deny: ['evil.example'] }),
      headers: { 'content-type': 'application/merge-patch+json' },
    });
    assert.equal(merged.status, 200, merged.text);
    assert.deepEqual(merged.json.rules.allow, ['example.com:443', 'pypi.org:443']);
    assert.deepEqual(merged.json.rules.deny, ['evil.example']);
    const bad = await request(server, 'PATCH', `${base}/network`, {
      key: admin,
      body: { allow: ['http://x y'] },
    });
    assertError(bad, 400);
    assert.deepEqual((await request(server, 'GET', `${base}/network`, { key: admin })).json.rules.allow, [
      'example.com:443',
      'pypi.org:443',
    ]);
    const replaced = await request(server, 'PUT', `${base}/network`, {
      key: admin,
      body: { allow: ['pypi.org'] },
    });
    assert.deepEqual(replaced.json.rules.allow, ['pypi.org']);
    assert.deepEqual(replaced.json.rules.deny, []);
    const curl = await request(server, 'POST', `${base}/commands`, {
      key: admin,
      body: {
        argv: [
          'python3',
          '-c',
          'import urllib.request\ntry:\n urllib.request.urlopen("http://denied.example/", timeout=5)\nexcept Exception as e:\n print(e)',
        ],
      },
    });
    assert.equal(curl.status, 200, curl.text);
    const events = await request(server, 'GET', `${base}/network/events?since=0&limit=10`, { key: admin });
    assert.equal(events.status, 200, events.text);
    assert.ok(Array.isArray(events.json.events));
    assert.ok(
      events.json.events.some((e: { seq: number }) => e.seq >= 1) && events.text.includes('denied.example'),
      events.text,
    );

    // TTL
    const ttl = await request(server, 'POST', `${base}/timeout`, {
      key: admin,
      body: { timeoutMs: 600_000 },
    });
    assert.ok(Date.parse(ttl.json.deadline) > Date.now() + 500_000);
    assertError(
      await request(server, 'POST', `${base}/timeout`, { key: admin, body: { timeoutMs: -5 } }),
      400,
    );

    // kill: gone from the API, the manager and the store
    const del = await request(server, 'DELETE', base, { key: admin });
    assert.equal(del.status, 200, del.text);
    assertError(await request(server, 'GET', base, { key: admin }), 404);
    assert.equal(server.manager.get(info.id), undefined);
    assert.equal(await server.store.getSandbox(info.id), null);
    assertError(await request(server, 'DELETE', base, { key: admin }), 404);
  });

  test('a network-less sandbox refuses network updates with a hint', async () => {
    const id = await createSandbox(admin);
    const res = await request(server, 'PATCH', `/v1/sandboxes/${id}/network`, {
      key: admin,
      body: { allow: ['a.com'] },
    });
    assertError(res, 409, 'SANDBOX_NETWORK_DISABLED');
    assert.match(res.json.error.message, /mode: 'proxy'/);
    await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: admin });
  });

  test('expiry removes the ownership row', async () => {
    const id = await createSandbox(admin, { timeoutMs: 300 });
    assert.notEqual(await server.store.getSandbox(id), null);
    for (let i = 0; i < 100 && (await server.store.getSandbox(id)) !== null; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await server.store.getSandbox(id), null);
    assertError(await request(server, 'GET', `/v1/sandboxes/${id}`, { key: admin }), 404);
    const stopped = await server.store.listAuditEvents({ sandboxId: id, type: 'sandbox.stopped' });
    assert.deepEqual(stopped.events[0]?.payload, { reason: 'timeout' });
  });

  test('pause, resume, snapshots and restore', { skip: skipNoFreezer }, async () => {
    const id = await createSandbox(admin);
    const base = `/v1/sandboxes/${id}`;
    await request(server, 'PUT', `${base}/files?path=f.txt`, { key: admin, raw: 'v1' });
    const snap = await request(server, 'POST', `${base}/snapshots`, { key: admin, body: { name: 'clean' } });
    assert.equal(snap.status, 201, snap.text);
    assertError(
      await request(server, 'POST', `${base}/snapshots`, { key: admin, body: { name: 'clean' } }),
      409,
    );
    await request(server, 'PUT', `${base}/files?path=f.txt`, { key: admin, raw: 'v2' });
    const list = await request(server, 'GET', `${base}/snapshots`, { key: admin });
    assert.deepEqual(
      list.json.snapshots.map((s: { name: string }) => s.name),
      ['clean'],
    );
    const restored = await request(server, 'POST', `${base}/snapshots/clean/restore`, { key: admin });
    assert.equal(restored.status, 200, restored.text);
    assert.equal((await request(server, 'GET', `${base}/files?path=f.txt`, { key: admin })).text, 'v1');
    assertError(await request(server, 'POST', `${base}/snapshots/nope/restore`, { key: admin }), 404);
    const paused = await request(server, 'POST', `${base}/pause`, { key: admin });
    assert.equal(paused.json.state, 'paused');
    assertError(
      await request(server, 'POST', `${base}/commands`, { key: admin, body: { argv: ['true'] } }),
      409,
      'SANDBOX_PAUSED',
    );
    const resumed = await request(server, 'POST', `${base}/resume`, {
      key: admin,
      body: { timeoutMs: 60_000 },
    });
    assert.equal(resumed.json.state, 'running');
    assert.equal((await request(server, 'DELETE', `${base}/snapshots/clean`, { key: admin })).status, 200);
    await request(server, 'DELETE', base, { key: admin });
  });

  test('pause without a freezer is a 409 that says why', { skip: !skipNoFreezer }, async () => {
    const id = await createSandbox(admin);
    const res = await request(server, 'POST', `/v1/sandboxes/${id}/pause`, { key: admin });
    assertError(res, 409, 'PAUSE_UNSUPPORTED');
    await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: admin });
  });
});

describe('auth and tenancy', () => {
  test('missing, malformed, unknown and revoked keys are 401 with how to pass a key', async () => {
    const none = await request(server, 'GET', '/v1/sandboxes');
    assertError(none, 401, 'UNAUTHENTICATED');
    assert.match(none.json.error.message, /Authorization: Bearer/);
    assertError(await request(server, 'GET', '/v1/sandboxes', { key: 'short' }), 401);
    assertError(await request(server, 'GET', '/v1/sandboxes', { key: `ick_${'A'.repeat(43)}` }), 401);
    const viaHeader = await request(server, 'GET', '/v1/sandboxes', { headers: { 'x-api-key': admin } });
    assert.equal(viaHeader.status, 200);
    const basic = await request(server, 'GET', '/v1/sandboxes', { headers: { authorization: 'Basic abc' } });
    assertError(basic, 401);
    const { key, id } = await server.newKey(['sandbox']);
    assert.equal((await request(server, 'GET', '/v1/sandboxes', { key })).status, 200);
    assert.equal((await request(server, 'DELETE', `/v1/keys/${id}`, { key: admin })).status, 200);
    const revoked = await request(server, 'GET', '/v1/sandboxes', { key });
    assertError(revoked, 401);
    assert.match(revoked.json.error.message, /revoked/);
  });

  test('a sandbox key cannot manage keys, secrets or metrics (403 naming the scope)', async () => {
    const { key } = await server.newKey(['sandbox']);
    for (const [method, path, body] of [
      ['GET', '/v1/keys', undefined],
      ['POST', '/v1/keys', { name: 'x', scopes: ['admin'] }],
      ['GET', '/v1/secrets', undefined],
      ['DELETE', '/v1/secrets/X', undefined],
      ['GET', '/metrics', undefined],
    ] as const) {
      const res = await request(server, method, path, { key, body });
      assertError(res, 403, 'FORBIDDEN');
      assert.match(res.json.error.message, /scope "admin"/);
    }
  });

  test('tenants see only their own sandboxes: 404 for others, admin sees all, filters and pages', async () => {
    const a = await server.newKey(['sandbox']);
    const b = await server.newKey(['sandbox']);
    const tag = randomBytes(4).toString('hex');
    const a1 = await createSandbox(a.key, { metadata: { tag, n: '1' } });
    const a2 = await createSandbox(a.key, { metadata: { tag, n: '2' } });
    const b1 = await createSandbox(b.key, { metadata: { tag, n: '1' } });

    for (const [method, path, body] of [
      ['GET', `/v1/sandboxes/${a1}`, undefined],
      ['DELETE', `/v1/sandboxes/${a1}`, undefined],
      ['POST', `/v1/sandboxes/${a1}/commands`, { argv: ['true'] }],
      ['GET', `/v1/sandboxes/${a1}/files?path=/etc/hostname`, undefined],
      ['GET', `/v1/sandboxes/${a1}/network`, undefined],
      ['POST', `/v1/sandboxes/${a1}/timeout`, { timeoutMs: 1000 }],
    ] as const) {
      const res = await request(server, method, path, { key: b.key, body });
      assertError(res, 404, 'NOT_FOUND');
      // Indistinguishable from an id that never existed.
      const never = await request(server, method, path.replace(a1, 'ffffffffffffffff'), { key: b.key, body });
      assert.equal(never.json.error.message, res.json.error.message.replace(a1, 'ffffffffffffffff'));
    }
    assert.equal((await request(server, 'GET', `/v1/sandboxes/${a1}`, { key: a.key })).status, 200);

    const ids = (res: { json: Json }) => res.json.items.map((i: { id: string }) => i.id).sort();
    assert.deepEqual(ids(await request(server, 'GET', '/v1/sandboxes', { key: a.key })), [a1, a2].sort());
    assert.deepEqual(ids(await request(server, 'GET', '/v1/sandboxes', { key: b.key })), [b1]);
    const all = await request(server, 'GET', `/v1/sandboxes?metadata.tag=${tag}`, { key: admin });
    assert.deepEqual(ids(all), [a1, a2, b1].sort());
    const filtered = await request(server, 'GET', `/v1/sandboxes?metadata.tag=${tag}&metadata.n=1`, {
      key: admin,
    });
    assert.deepEqual(ids(filtered), [a1, b1].sort());
    const page1 = await request(server, 'GET', `/v1/sandboxes?metadata.tag=${tag}&limit=2`, { key: admin });
    assert.equal(page1.json.items.length, 2);
    assert.equal(typeof page1.json.next, 'string');
    const page2 = await request(
      server,
      'GET',
      `/v1/sandboxes?metadata.tag=${tag}&limit=2&cursor=${page1.json.next}`,
      { key: admin },
    );
    assert.deepEqual([...ids(page1), ...ids(page2)].sort(), [a1, a2, b1].sort());
    assertError(await request(server, 'GET', '/v1/sandboxes?owner=x', { key: admin }), 400);

    // admin acts on any tenant's sandbox
    const run = await request(server, 'POST', `/v1/sandboxes/${b1}/commands`, {
      key: admin,
      body: { argv: ['true'] },
    });
    assert.equal(run.json.exitCode, 0);
    for (const id of [a1, a2, b1])
      assert.equal((await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: admin })).status, 200);
  });

  test('tenants may not bind host paths, copy host env, reach private addresses or use vault secrets', async () => {
    const t = await server.newKey(['sandbox']);
    for (const policy of [
      { filesystem: { readOnly: ['/etc'] } },
      { filesystem: { writable: ['/tmp'] } },
      { filesystem: { reveal: ['~/.ssh'] } },
      { env: { pass: ['PATH'] } },
      { network: { mode: 'proxy', allowPrivate: ['127.0.0.1'] } },
      { network: { mode: 'proxy', secrets: ['TOKEN'] } },
    ]) {
      const res = await request(server, 'POST', '/v1/sandboxes', { key: t.key, body: { policy } });
      assertError(res, 403, 'POLICY_FORBIDDEN');
    }
    const id = await createSandbox(t.key, { policy: { network: { mode: 'proxy', allow: ['a.example'] } } });
    const widen = await request(server, 'PATCH', `/v1/sandboxes/${id}/network`, {
      key: t.key,
      body: { allowPrivate: ['10.0.0.0/8'] },
    });
    assertError(widen, 403, 'POLICY_FORBIDDEN');
    await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: t.key });
  });

  test('per-key rate limit: 429 with Retry-After', async () => {
    const limited = await server.newKey(['sandbox'], { requestsPerMinute: 3 });
    for (let i = 0; i < 3; i++)
      assert.equal((await request(server, 'GET', '/v1/sandboxes', { key: limited.key })).status, 200);
    const res = await request(server, 'GET', '/v1/sandboxes', { key: limited.key });
    assertError(res, 429, 'RATE_LIMITED');
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    // other keys are unaffected
    assert.equal((await request(server, 'GET', '/v1/sandboxes', { key: admin })).status, 200);
  });

  test('sandbox quota: 429 at the limit, room again after a kill', async () => {
    const q = await server.newKey(['sandbox'], { maxSandboxes: 1 });
    const first = await createSandbox(q.key);
    const second = await request(server, 'POST', '/v1/sandboxes', { key: q.key, body: {} });
    assertError(second, 429, 'QUOTA_EXCEEDED');
    assert.match(second.json.error.message, /kill one/);
    await request(server, 'DELETE', `/v1/sandboxes/${first}`, { key: q.key });
    const third = await createSandbox(q.key);
    await request(server, 'DELETE', `/v1/sandboxes/${third}`, { key: q.key });
  });
});

describe('secrets and keys', () => {
  test('secret values never appear in any response, error or audit event', async () => {
    const value = `s3cr3t-${randomBytes(12).toString('hex')}`;
    const bodies: string[] = [];
    const keep = async (p: Promise<{ text: string; status: number }>) => {
      const res = await p;
      bodies.push(res.text);
      return res;
    };
    const created = await keep(
      request(server, 'POST', '/v1/secrets', {
        key: admin,
        body: { name: 'API_TOKEN', value, hosts: ['api.example.com'], headers: ['authorization'] },
      }),
    );
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(JSON.parse(created.text).hosts, ['api.example.com']);
    await keep(request(server, 'GET', '/v1/secrets', { key: admin }));
    // error paths that see the value: malformed JSON around it, invalid bindings, wrong types, tenants
    await keep(
      request(server, 'POST', '/v1/secrets', {
        key: admin,
        raw: `{"name":"X","value":"${value}", oops}`,
        headers: { 'content-type': 'application/json' },
      }),
    );
    await keep(request(server, 'POST', '/v1/secrets', { key: admin, body: { name: 'X', value, hosts: [] } }));
    await keep(
      request(server, 'POST', '/v1/secrets', {
        key: admin,
        body: { name: 'X', value, hosts: ['http://a b'] },
      }),
    );
    await keep(
      request(server, 'POST', '/v1/secrets', { key: admin, body: { name: '1bad', value, hosts: ['a.com'] } }),
    );
    await keep(
      request(server, 'POST', '/v1/secrets', {
        key: admin,
        body: { name: 'X', value, hosts: ['a.com'], extra: value },
      }),
    );
    await keep(
      request(server, 'POST', '/v1/secrets', { key: admin, body: { name: value, value, hosts: ['a.com'] } }),
    );
    const tenant = await server.newKey(['sandbox']);
    await keep(
      request(server, 'POST', '/v1/secrets', {
        key: tenant.key,
        body: { name: 'X', value, hosts: ['a.com'] },
      }),
    );
    const list = await keep(request(server, 'GET', '/v1/secrets', { key: admin }));
    assert.deepEqual(
      JSON.parse(list.text).secrets.map((s: { name: string }) => s.name),
      ['API_TOKEN'],
    );
    for (const text of bodies) assert.ok(!text.includes(value), `value leaked in ${text}`);
    for (const text of bodies) assert.ok(!text.includes(value.slice(7)), `value part leaked in ${text}`);
    const audit = await server.store.listAuditEvents({ limit: 1000 });
    assert.ok(!JSON.stringify(audit).includes(value));
    assert.equal((await request(server, 'DELETE', '/v1/secrets/API_TOKEN', { key: admin })).status, 200);
    assertError(await request(server, 'DELETE', '/v1/secrets/API_TOKEN', { key: admin }), 404);
  });

  test('keys: plaintext once, listed without it, revocable, the last admin key is protected', async () => {
    const created = await request(server, 'POST', '/v1/keys', {
      key: admin,
      body: { name: 'ci', scopes: ['sandbox'], limits: { maxSandboxes: 2 } },
    });
    assert.equal(created.status, 201, created.text);
    assert.match(created.json.key, /^ick_[0-9A-Za-z]{43}$/);
    assert.equal(created.json.limits.maxSandboxes, 2);
    const list = await request(server, 'GET', '/v1/keys', { key: admin });
    assert.ok(!list.text.includes(created.json.key));
    assert.ok(list.json.keys.some((k: { id: string }) => k.id === created.json.id));
    assert.equal((await request(server, 'GET', '/v1/sandboxes', { key: created.json.key })).status, 200);
    assertError(
      await request(server, 'POST', '/v1/keys', { key: admin, body: { name: 'x', scopes: ['root'] } }),
      400,
      'INVALID_INPUT',
    );
    const adminId = list.json.keys.find((k: { scopes: string[] }) => k.scopes.includes('admin')).id;
    assertError(
      await request(server, 'DELETE', `/v1/keys/${adminId}`, { key: admin }),
      409,
      'LAST_ADMIN_KEY',
    );
    assertError(await request(server, 'DELETE', '/v1/keys/key_nope', { key: admin }), 404);
    assert.equal(
      (await request(server, 'DELETE', `/v1/keys/${created.json.id}`, { key: admin })).status,
      200,
    );
    const withRevoked = await request(server, 'GET', '/v1/keys?includeRevoked=true', { key: admin });
    assert.ok(withRevoked.json.keys.find((k: { id: string }) => k.id === created.json.id).revokedAt);
  });
});

describe('openapi and metrics', () => {
  /** The API's contract: every route the server must serve. */
  const EXPECTED = [
    'get /health',
    'get /ready',
    'get /openapi.json',
    'get /metrics',
    'post /v1/sandboxes',
    'get /v1/sandboxes',
    'get /v1/sandboxes/{id}',
    'delete /v1/sandboxes/{id}',
    'post /v1/sandboxes/{id}/timeout',
    'post /v1/sandboxes/{id}/pause',
    'post /v1/sandboxes/{id}/resume',
    'post /v1/sandboxes/{id}/snapshots',
    'get /v1/sandboxes/{id}/snapshots',
    'post /v1/sandboxes/{id}/snapshots/{name}/restore',
    'delete /v1/sandboxes/{id}/snapshots/{name}',
    'post /v1/sandboxes/{id}/commands',
    'get /v1/sandboxes/{id}/processes',
    'post /v1/sandboxes/{id}/processes/{processId}/kill',
    'post /v1/sandboxes/{id}/processes/{processId}/stdin',
    'get /v1/sandboxes/{id}/processes/{processId}/output',
    'get /v1/sandboxes/{id}/files',
    'put /v1/sandboxes/{id}/files',
    'delete /v1/sandboxes/{id}/files',
    'get /v1/sandboxes/{id}/files/list',
    'get /v1/sandboxes/{id}/files/stat',
    'post /v1/sandboxes/{id}/files/mkdir',
    'post /v1/sandboxes/{id}/files/rename',
    'get /v1/sandboxes/{id}/files/watch',
    'get /v1/sandboxes/{id}/pty',
    'get /v1/sandboxes/{id}/network',
    'patch /v1/sandboxes/{id}/network',
    'put /v1/sandboxes/{id}/network',
    'get /v1/sandboxes/{id}/network/events',
    'post /v1/secrets',
    'get /v1/secrets',
    'delete /v1/secrets/{name}',
    'put /v1/templates/{name}',
    'get /v1/templates',
    'get /v1/templates/{name}',
    'delete /v1/templates/{name}',
    'post /v1/keys',
    'get /v1/keys',
    'delete /v1/keys/{keyId}',
  ];

  test('the OpenAPI document lists every route, with schemas generated from the zod ones', async () => {
    const res = await request(server, 'GET', '/openapi.json', { key: admin });
    assert.equal(res.status, 200);
    const doc = res.json;
    assert.equal(doc.openapi, '3.0.3');
    const documented: string[] = [];
    for (const [path, methods] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      for (const method of Object.keys(methods)) documented.push(`${method} ${path}`);
    }
    assert.deepEqual(documented.sort(), [...EXPECTED].sort());
    // every documented route is served (none answers "no route")
    for (const entry of documented) {
      const [method, path] = entry.split(' ') as [string, string];
      const url = path
        .replace('{id}', 'ffffffffffffffff')
        .replace('{processId}', '1')
        .replace(/\{\w+\}/g, 'x');
      const served = await request(server, method.toUpperCase(), url);
      assert.notEqual(served.json?.error?.code, 'ROUTE_NOT_FOUND', entry);
    }
    const create = doc.paths['/v1/sandboxes'].post;
    const schema = create.requestBody.content['application/json'].schema;
    assert.ok(schema.properties.policy.properties.network, 'policy schema comes from the library');
    assert.deepEqual(schema.properties.preset.enum, ['default', 'strict']);
    const ndjson = doc.paths['/v1/sandboxes/{id}/commands'].post.responses['200'].content;
    assert.ok(ndjson['application/x-ndjson']);
    assert.equal(
      doc.paths['/v1/sandboxes/{id}/files'].put.requestBody.content['application/octet-stream'].schema.format,
      'binary',
    );
  });

  test('metrics: Prometheus text with sandboxes, requests and execs', async () => {
    const id = await createSandbox(admin);
    await request(server, 'POST', `/v1/sandboxes/${id}/commands`, { key: admin, body: { argv: ['true'] } });
    const res = await request(server, 'GET', '/metrics', { key: admin });
    assert.equal(res.status, 200);
    assert.match(res.text, /^ironcage_sandboxes\{state="running"\} [1-9]/m);
    assert.match(res.text, /^ironcage_execs_total [1-9]/m);
    assert.match(
      res.text,
      /^ironcage_http_requests_total\{method="POST",route="\/v1\/sandboxes\/:id\/commands",status="200"\} [1-9]/m,
    );
    await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: admin });
  });
});
