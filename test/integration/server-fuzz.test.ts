/**
 * Property-based fuzzing of every route of the real server (fast-check): random methods, paths, params,
 * query strings, headers and bodies (random JSON, mutations of valid bodies, garbage bytes) with real keys and
 * real sandboxes. Whatever comes in: never a 5xx, every error is `{ error: { code, message } }` JSON, and
 * every response carries x-request-id.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { RateLimiter } from '../../src/server/auth/limits.js';
import { serverStateDir, startServer, type TestServer } from './server-fixture.js';

const state = serverStateDir('server-fuzz');
let server: TestServer;
let tenant: { key: string; id: string };
const sandboxes: string[] = [];

before(async () => {
  server = await startServer(state.dir, { app: { rateLimiter: new RateLimiter() } });
  tenant = await server.newKey(['sandbox']);
  await ensureSandboxes();
});

after(async () => {
  await server.close();
  state.cleanup();
});

/** Keeps two live sandboxes (one per tenant) to aim at; fuzzed DELETEs and TTLs may kill them. */
async function ensureSandboxes(): Promise<void> {
  for (const [i, key] of [server.adminKey, tenant.key].entries()) {
    const id = sandboxes[i];
    if (id !== undefined && server.manager.get(id) !== undefined) continue;
    const res = await fetch(`${server.url}/v1/sandboxes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        policy: { network: { mode: 'proxy', allow: ['example.com'] } },
        timeoutMs: 300_000,
      }),
    });
    const text = await res.text();
    assert.equal(res.status, 201, text);
    sandboxes[i] = (JSON.parse(text) as { id: string }).id;
  }
}

/** [method, path template, a valid body (mutated by the fuzzer), valid query] for every route. */
const ROUTES: [string, string, unknown, Record<string, string>][] = [
  ['GET', '/health', undefined, {}],
  ['GET', '/ready', undefined, {}],
  ['GET', '/openapi.json', undefined, {}],
  ['GET', '/metrics', undefined, {}],
  ['POST', '/v1/sandboxes', { preset: 'default', timeoutMs: 20_000, metadata: { k: 'v' } }, {}],
  ['GET', '/v1/sandboxes', undefined, { limit: '2', 'metadata.k': 'v' }],
  ['GET', '/v1/sandboxes/:id', undefined, {}],
  ['DELETE', '/v1/sandboxes/:id', undefined, {}],
  ['POST', '/v1/sandboxes/:id/timeout', { timeoutMs: 60_000 }, {}],
  ['POST', '/v1/sandboxes/:id/pause', {}, {}],
  ['POST', '/v1/sandboxes/:id/resume', { timeoutMs: 60_000 }, {}],
  ['POST', '/v1/sandboxes/:id/snapshots', { name: 'snap' }, {}],
  ['GET', '/v1/sandboxes/:id/snapshots', undefined, {}],
  ['POST', '/v1/sandboxes/:id/snapshots/:name/restore', {}, {}],
  ['DELETE', '/v1/sandboxes/:id/snapshots/:name', undefined, {}],
  ['POST', '/v1/sandboxes/:id/commands', { argv: ['echo', 'hi'], timeoutMs: 2000 }, {}],
  ['POST', '/v1/sandboxes/:id/commands', { cmd: 'echo hi', timeoutMs: 2000, stdin: 'x' }, {}],
  ['POST', '/v1/sandboxes/:id/commands', { argv: ['sleep', '1'], background: true, timeoutMs: 3000 }, {}],
  ['GET', '/v1/sandboxes/:id/processes', undefined, {}],
  ['POST', '/v1/sandboxes/:id/processes/:processId/kill', { signal: 'SIGTERM' }, {}],
  ['POST', '/v1/sandboxes/:id/processes/:processId/stdin', 'data', { eof: 'true' }],
  ['GET', '/v1/sandboxes/:id/processes/:processId/output', undefined, { fromOffset: '0' }],
  ['GET', '/v1/sandboxes/:id/files', undefined, { path: 'f.txt' }],
  ['PUT', '/v1/sandboxes/:id/files', 'content', { path: 'f.txt' }],
  ['DELETE', '/v1/sandboxes/:id/files', undefined, { path: 'f.txt', recursive: 'false' }],
  ['GET', '/v1/sandboxes/:id/files/list', undefined, { path: '.', depth: '2' }],
  ['GET', '/v1/sandboxes/:id/files/stat', undefined, { path: 'f.txt' }],
  ['POST', '/v1/sandboxes/:id/files/mkdir', { path: 'd/e' }, {}],
  ['POST', '/v1/sandboxes/:id/files/rename', { from: 'f.txt', to: 'g.txt' }, {}],
  ['GET', '/v1/sandboxes/:id/network', undefined, {}],
  ['PATCH', '/v1/sandboxes/:id/network', { allow: ['pypi.org:443'] }, {}],
  ['PUT', '/v1/sandboxes/:id/network', { allow: ['example.com'], deny: [] }, {}],
  ['GET', '/v1/sandboxes/:id/network/events', undefined, { since: '0', limit: '5' }],
  ['POST', '/v1/secrets', { name: 'FUZZ', value: 'v', hosts: ['a.example'] }, {}],
  ['GET', '/v1/secrets', undefined, {}],
  ['DELETE', '/v1/secrets/:name', undefined, {}],
  ['POST', '/v1/keys', { name: 'fuzz', scopes: ['sandbox'] }, {}],
  ['GET', '/v1/keys', undefined, { includeRevoked: 'true' }],
  ['DELETE', '/v1/keys/:keyId', undefined, {}],
];

const junk = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.constantFrom(
    '',
    '..',
    '../..',
    '%2e%2e',
    '%00',
    '%ff',
    'ffffffffffffffff',
    '0',
    '-1',
    '1e9',
    'a'.repeat(200),
  ),
);

const bodyArb = (valid: unknown) =>
  fc.oneof(
    fc.constant(valid),
    fc.anything({ maxDepth: 3 }),
    fc.jsonValue({ maxDepth: 3 }),
    // one field of the valid body replaced by anything
    typeof valid === 'object' && valid !== null && Object.keys(valid).length > 0
      ? fc
          .tuple(fc.constantFrom(...Object.keys(valid)), fc.anything({ maxDepth: 2 }))
          .map(([k, v]) => ({ ...(valid as object), [k]: v }))
      : fc.constant(valid),
    fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
  );

const requestArb = fc
  .record({
    route: fc.constantFrom(...ROUTES),
    // Mostly the route's own method, key and ids: past routing and auth into the handlers.
    method: fc.oneof(
      { weight: 6, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD') },
    ),
    sandbox: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 1) }, { weight: 1, arbitrary: junk }),
    processId: fc.oneof({ weight: 3, arbitrary: fc.nat(20).map(String) }, { weight: 1, arbitrary: junk }),
    name: fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom('snap', 'FUZZ', 'key_x') },
      { weight: 1, arbitrary: junk },
    ),
    key: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom('admin', 'tenant') },
      { weight: 1, arbitrary: fc.constantFrom('none', 'garbage', 'both') },
    ),
    body: fc.constant(null),
    bodyMode: fc.constantFrom('valid', 'json', 'raw', 'none', 'merge'),
    rawBody: fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b)),
    ),
    query: fc.oneof(
      fc.constant(null),
      fc.dictionary(
        fc.oneof(
          fc.constantFrom(
            'path',
            'depth',
            'limit',
            'cursor',
            'metadata.k',
            'fromOffset',
            'since',
            'eof',
            'recursive',
          ),
          fc.string({ maxLength: 8 }),
        ),
        junk,
        { maxKeys: 3 },
      ),
    ),
    contentType: fc.constantFrom(
      'application/json',
      'application/json; charset=utf-8',
      'application/merge-patch+json',
      'application/octet-stream',
      'text/plain',
      'multipart/form-data; boundary=x',
      '',
      'garbage',
    ),
    accept: fc.constantFrom(undefined, 'application/x-ndjson', '*/*', 'text/html'),
    requestId: fc.option(fc.string({ maxLength: 140 })),
    seed: fc.nat(),
  })
  .chain((r) => bodyArb(r.route[2]).map((body) => ({ ...r, body })));

function fill(template: string, r: { sandbox: number | string; processId: string; name: string }): string {
  const sandbox = typeof r.sandbox === 'number' ? (sandboxes[r.sandbox] ?? 'x') : r.sandbox;
  const enc = (v: string) => (/%/.test(v) ? v : encodeURIComponent(v));
  return template
    .replace(':id', enc(sandbox))
    .replace(':processId', enc(r.processId))
    .replace(':name', enc(r.name))
    .replace(':keyId', enc(r.name));
}

test('fuzzing every route never yields a 5xx, and every error is JSON with a code and message', async () => {
  let count = 0;
  const statuses = new Map<number, number>();
  await fc.assert(
    fc.asyncProperty(requestArb, async (r) => {
      if (++count % 25 === 0) await ensureSandboxes();
      const [routeMethod, template, , validQuery] = r.route;
      const method = r.method ?? routeMethod;
      const query = new URLSearchParams(r.query ?? validQuery).toString();
      const url = `${server.url}${fill(template, r)}${query ? `?${query}` : ''}`;
      const headers: Record<string, string> = {};
      if (r.key === 'admin') headers.authorization = `Bearer ${server.adminKey}`;
      if (r.key === 'tenant') headers['x-api-key'] = tenant.key;
      if (r.key === 'garbage') headers.authorization = `Bearer ick_${'x'.repeat(r.seed % 60)}`;
      if (r.key === 'both') {
        headers.authorization = `Bearer ${server.adminKey}`;
        headers['x-api-key'] = tenant.key;
      }
      if (r.accept !== undefined) headers.accept = r.accept;
      if (r.requestId !== null) headers['x-request-id'] = r.requestId.replace(/[^\x20-\x7e]/g, '');
      let body: string | Buffer | undefined;
      if (method !== 'GET' && method !== 'HEAD') {
        if (r.bodyMode === 'valid' || r.bodyMode === 'json' || r.bodyMode === 'merge') {
          const value = r.bodyMode === 'valid' ? r.route[2] : r.body;
          const text = typeof value === 'string' ? value : JSON.stringify(value);
          if (text !== undefined) {
            body = text;
            headers['content-type'] =
              r.bodyMode === 'merge' ? 'application/merge-patch+json' : 'application/json';
          }
        } else if (r.bodyMode === 'raw') {
          body = typeof r.rawBody === 'string' ? r.rawBody : Buffer.from(r.rawBody);
          if (r.contentType !== '') headers['content-type'] = r.contentType;
        }
      }
      const res = await fetch(url, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        signal: AbortSignal.timeout(15_000),
      });
      const text = Buffer.from(await res.arrayBuffer()).toString('utf8');
      const where = `${method} ${url} ${r.bodyMode} ${JSON.stringify(body)?.slice(0, 200)} → ${res.status} ${text.slice(0, 300)}`;
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      assert.ok(res.status < 500, where);
      assert.ok(res.headers.get('x-request-id'), `no x-request-id: ${where}`);
      if (res.status >= 400 && method !== 'HEAD') {
        assert.match(res.headers.get('content-type') ?? '', /application\/json/, where);
        const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
        assert.equal(typeof parsed.error?.code, 'string', where);
        assert.equal(typeof parsed.error?.message, 'string', where);
      }
    }),
    { numRuns: Number(process.env.IRONCAGE_FUZZ_RUNS ?? 600) },
  );
  // The fuzzer must get past authentication and validation into the handlers, not only bounce off them.
  const of = (...codes: number[]) => codes.reduce((n, c) => n + (statuses.get(c) ?? 0), 0);
  const summary = JSON.stringify(Object.fromEntries(statuses));
  assert.ok(of(200, 201) >= 20, `too few successes: ${summary}`);
  assert.ok(of(400) >= 20 && of(401) >= 10 && of(404) >= 10, `status mix: ${summary}`);
  process.stderr.write(`server fuzz statuses: ${summary}\n`);
});

test('raw HTTP oddities: bad percent-encoding, huge params, duplicate auth headers', async () => {
  const cases: [string, string, Record<string, string>][] = [
    ['GET', '/v1/sandboxes/%E0%A4%A', { authorization: `Bearer ${server.adminKey}` }],
    ['GET', `/v1/sandboxes/${'a'.repeat(500)}`, { authorization: `Bearer ${server.adminKey}` }],
    ['GET', '/v1/sandboxes?limit=1&limit=2', { authorization: `Bearer ${server.adminKey}` }],
    ['GET', '/v1/sandboxes', { authorization: `Bearer ${server.adminKey}`, 'x-api-key': tenant.key }],
    ['GET', '/v1/sandboxes', { authorization: 'Bearer' }],
    [
      'POST',
      '/v1/sandboxes',
      { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' },
    ],
  ];
  for (const [method, path, headers] of cases) {
    const res = await fetch(`${server.url}${path}`, { method, headers });
    const text = await res.text();
    assert.ok(res.status >= 400 && res.status < 500, `${method} ${path}: ${res.status} ${text}`);
    const parsed = JSON.parse(text) as { error: { code: string; message: string } };
    assert.equal(typeof parsed.error.code, 'string');
  }
});
