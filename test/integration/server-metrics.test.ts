/**
 * Observability of `ironcage serve` against a real server (real sandboxes, SQLite store): Prometheus /metrics
 * (histograms whose counts move by exactly what was done, route patterns as labels, admin only), heartbeats on
 * silent NDJSON and MCP event streams (and the SDK reading through them), the /mcp options, and JSON logs
 * that carry the same request id as the audit log.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { HttpClient } from '../../src/sdk/http.js';
import { Sandbox as SdkSandbox } from '../../src/sdk/index.js';
import type { AppOptions } from '../../src/server/app.js';
import {
  type Json,
  ndjsonLines,
  request,
  serverStateDir,
  startServer,
  type TestServer,
} from './server-fixture.js';

type App = TestServer & { admin: string; logs: Record<string, Json>[] };

/** The shared fixture's server with AppOptions of its own (heartbeat, mcp) and its JSON log lines captured. */
async function startApp(stateDir: string, options: AppOptions = {}): Promise<App> {
  const logs: Record<string, Json>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(JSON.parse(line));
      done();
    },
  });
  const server = await startServer(stateDir, {
    app: { logger: { level: 'info', stream: sink }, ...options },
  });
  return Object.assign(server, { admin: server.adminKey, logs });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format → samples (label values unescaped). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const m of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1] as string] = (m[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

/** Sum of the samples named `name` whose labels include `labels` (0 when there is none). */
function sum(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}

async function scrape(server: App): Promise<{ text: string; samples: Sample[] }> {
  const res = await request(server, 'GET', '/metrics', { key: server.admin });
  assert.equal(res.status, 200, res.text);
  return { text: res.text, samples: parseMetrics(res.text) };
}

/**
 * The delta of `read` since `before` once it reaches `expected` (onResponse and process ends are recorded just
 * after the client has its answer), else the last delta seen: the caller's assertion then fails with it.
 */
async function settledDelta(
  server: App,
  before: Sample[],
  read: (samples: Sample[]) => number,
  expected: number,
): Promise<number> {
  let delta = Number.NaN;
  for (let i = 0; i < 40; i++) {
    delta = read((await scrape(server)).samples) - read(before);
    if (delta === expected) return delta;
    await new Promise((r) => setTimeout(r, 50));
  }
  return delta;
}

async function createSandbox(server: App, key: string, body: Record<string, unknown> = {}): Promise<string> {
  const res = await request(server, 'POST', '/v1/sandboxes', { key, body });
  assert.equal(res.status, 201, res.text);
  return res.json.id as string;
}

describe('metrics, heartbeats and logs', () => {
  const state = serverStateDir('server-metrics');
  let server: App;

  before(async () => {
    server = await startApp(state.dir, { heartbeatMs: 100 });
  });
  after(async () => {
    await server?.close();
    state.cleanup();
  });

  test('/metrics is admin only', async () => {
    const tenant = (await server.newKey(['sandbox'])).key;
    const forbidden = await request(server, 'GET', '/metrics', { key: tenant });
    assert.equal(forbidden.status, 403, forbidden.text);
    assert.equal((await request(server, 'GET', '/metrics')).status, 401);
    const res = await request(server, 'GET', '/metrics', { key: server.admin });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    // The process's own resource use is there (collectDefaultMetrics on the app's registry).
    const samples = parseMetrics(res.text);
    assert.ok(sum(samples, 'process_resident_memory_bytes') > 0);
    assert.ok(samples.some((s) => s.name === 'nodejs_eventloop_lag_seconds'));
  });

  test('HTTP latency histogram: labelled by route pattern and status class, counts move exactly', async () => {
    const id = await createSandbox(server, server.admin);
    const { samples: before } = await scrape(server);
    for (let i = 0; i < 3; i++) {
      assert.equal((await request(server, 'GET', `/v1/sandboxes/${id}`, { key: server.admin })).status, 200);
    }
    for (let i = 0; i < 2; i++) {
      const missing = await request(server, 'GET', '/v1/sandboxes/0000000000000000', { key: server.admin });
      assert.equal(missing.status, 404);
    }
    const route = { method: 'GET', route: '/v1/sandboxes/:id' };
    const count = (status_class: string) => (s: Sample[]) =>
      sum(s, 'ironcage_http_request_duration_seconds_count', { ...route, status_class });
    assert.equal(await settledDelta(server, before, count('2xx'), 3), 3);
    assert.equal(await settledDelta(server, before, count('4xx'), 2), 2);
    const { text, samples: after } = await scrape(server);
    // The +Inf bucket is the count, buckets never decrease, and the sum is a plausible number of seconds.
    const buckets = after
      .filter(
        (s) =>
          s.name === 'ironcage_http_request_duration_seconds_bucket' &&
          s.labels.route === route.route &&
          s.labels.method === 'GET' &&
          s.labels.status_class === '2xx',
      )
      .map((s) => s.value);
    assert.ok(buckets.length >= 10, `expected ms-scale buckets, got ${buckets.length}`);
    for (let i = 1; i < buckets.length; i++) assert.ok((buckets[i] as number) >= (buckets[i - 1] as number));
    assert.equal(buckets.at(-1), count('2xx')(after));
    const seconds = sum(after, 'ironcage_http_request_duration_seconds_sum', {
      ...route,
      status_class: '2xx',
    });
    assert.ok(seconds > 0 && seconds < 60, `sum ${seconds}`);
    // The old per-status counter is still there, with the exact status.
    assert.equal(
      sum(after, 'ironcage_http_requests_total', { ...route, status: '404' }) -
        sum(before, 'ironcage_http_requests_total', { ...route, status: '404' }),
      2,
    );
    // Patterns, never URLs: no sandbox id in any label.
    assert.ok(!text.includes(id), 'a sandbox id appears in /metrics');
    assert.ok(!text.includes('0000000000000000'));
    await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: server.admin });
  });

  test('creates, execs by outcome, live sandboxes and stops', async () => {
    const { samples: before } = await scrape(server);
    const id = await createSandbox(server, server.admin);
    const created = (s: Sample[]) =>
      sum(s, 'ironcage_sandbox_create_duration_seconds_count', { outcome: 'ok' });
    assert.equal(await settledDelta(server, before, created, 1), 1);
    const mid = (await scrape(server)).samples;
    assert.equal(
      sum(mid, 'ironcage_sandboxes', { state: 'running' }) -
        sum(before, 'ironcage_sandboxes', { state: 'running' }),
      1,
    );

    const run = async (body: Record<string, unknown>) => {
      const res = await request(server, 'POST', `/v1/sandboxes/${id}/commands`, { key: server.admin, body });
      return res;
    };
    assert.equal((await run({ argv: ['true'] })).json.exitCode, 0);
    assert.equal((await run({ argv: ['true'] })).json.exitCode, 0);
    assert.equal((await run({ cmd: 'exit 3' })).json.exitCode, 3);
    assert.equal((await run({ argv: ['sleep', '5'], timeoutMs: 200 })).json.timedOut, true);
    // A background process counts when it ends.
    const bg = await run({ argv: ['sleep', '0.3'], background: true });
    assert.equal(bg.status, 201, bg.text);

    const execs = (outcome: string) => (s: Sample[]) =>
      sum(s, 'ironcage_exec_duration_seconds_count', { api: 'rest', outcome });
    assert.equal(await settledDelta(server, before, execs('ok'), 3), 3);
    assert.equal(await settledDelta(server, before, execs('nonzero'), 1), 1);
    assert.equal(await settledDelta(server, before, execs('timeout'), 1), 1);
    const after = (await scrape(server)).samples;
    assert.equal(sum(after, 'ironcage_execs_total') - sum(before, 'ironcage_execs_total'), 5);
    assert.equal(execs('error')(after) - execs('error')(before), 0);
    // The timed-out command took at least its 200 ms timeout: its bucket below 0.1 s did not get it.
    const fast = (s: Sample[]) =>
      sum(s, 'ironcage_exec_duration_seconds_bucket', { api: 'rest', outcome: 'timeout', le: '0.1' });
    assert.equal(fast(after) - fast(before), 0);
    assert.ok(sum(after, 'ironcage_exec_cpu_seconds_total', { api: 'rest' }) >= 0);

    assert.equal((await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: server.admin })).status, 200);
    const stopped = (s: Sample[]) => sum(s, 'ironcage_sandboxes_stopped_total', { reason: 'killed' });
    assert.equal(await settledDelta(server, before, stopped, 1), 1);
    const end = (await scrape(server)).samples;
    assert.equal(
      sum(end, 'ironcage_sandboxes', { state: 'running' }),
      sum(before, 'ironcage_sandboxes', { state: 'running' }),
    );
  });

  test('sandbox memory and CPU are summed from their cgroups (nothing without one)', async () => {
    const id = await createSandbox(server, server.admin);
    const measured = server.manager.get(id)?.resourceUsage()?.memoryBytes != null;
    const memory = (s: Sample[]) => sum(s, 'ironcage_sandbox_memory_bytes');
    const cpu = (s: Sample[]) => sum(s, 'ironcage_sandbox_cpu_seconds');
    const before = (await scrape(server)).samples;
    const hog = await request(server, 'POST', `/v1/sandboxes/${id}/commands`, {
      key: server.admin,
      body: {
        argv: [
          'python3',
          '-c',
          'import time; x = bytearray(64 << 20); x[::4096] = b"1" * len(x[::4096]); time.sleep(30)',
        ],
        background: true,
      },
    });
    assert.equal(hog.status, 201, hog.text);
    let grown = 0;
    for (let i = 0; i < 100 && grown < 60 * 2 ** 20; i++) {
      await new Promise((r) => setTimeout(r, 50));
      grown = memory((await scrape(server)).samples) - memory(before);
    }
    const after = (await scrape(server)).samples;
    if (measured) {
      assert.ok(grown >= 60 * 2 ** 20, `sandbox memory grew by ${grown} bytes, expected >= 60 MiB`);
      assert.ok(cpu(after) > 0, 'the sandboxes used some CPU');
    } else {
      assert.equal(memory(after), 0, 'no cgroup: nothing is reported rather than a guess');
    }
    assert.equal((await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: server.admin })).status, 200);
  });

  test('auth failures, rate-limit and quota refusals are counted in every API scope', async () => {
    const { samples: before } = await scrape(server);
    const bogus = { authorization: 'Bearer ick_notarealkeynotarealkeynotarealkey0000000' };
    assert.equal((await request(server, 'GET', '/v1/sandboxes', { headers: bogus })).status, 401);
    // The MCP and E2B scopes authenticate in their own hooks; they are counted too.
    const mcp = await request(server, 'POST', '/mcp', { headers: bogus, body: {} });
    assert.equal(mcp.status, 401, mcp.text);
    const e2b = await request(server, 'GET', '/e2b/v2/sandboxes', { headers: { 'x-api-key': 'nope' } });
    assert.equal(e2b.status, 401, e2b.text);
    // One request a minute: the scope check refuses before the bucket is drawn, the quota refusal draws it.
    const tenant = (await server.newKey(['sandbox'], { requestsPerMinute: 1, maxSandboxes: 0 })).key;
    assert.equal((await request(server, 'GET', '/v1/keys', { key: tenant })).status, 403);
    assert.equal((await request(server, 'POST', '/v1/sandboxes', { key: tenant, body: {} })).status, 429);
    const limited = await request(server, 'GET', '/v1/sandboxes', { key: tenant });
    assert.equal(limited.status, 429);
    assert.equal(limited.json.error.code, 'RATE_LIMITED');

    const unauth = (s: Sample[]) => sum(s, 'ironcage_auth_failures_total', { reason: 'unauthenticated' });
    assert.equal(await settledDelta(server, before, unauth, 3), 3);
    const after = (await scrape(server)).samples;
    const delta = (name: string, labels: Record<string, string> = {}) =>
      sum(after, name, labels) - sum(before, name, labels);
    assert.equal(delta('ironcage_auth_failures_total', { reason: 'forbidden' }), 1);
    assert.equal(delta('ironcage_quota_refusals_total'), 1);
    assert.equal(delta('ironcage_rate_limited_total'), 1);
    // A refused reservation never reached the sandbox start.
    assert.equal(delta('ironcage_sandbox_create_duration_seconds_count'), 0);
  });

  test('egress refusals are counted by rule family, without host names', async () => {
    const { samples: before } = await scrape(server);
    const id = await createSandbox(server, server.admin, {
      policy: { network: { mode: 'proxy', allow: ['example.com:443'] } },
    });
    const script = [
      'import urllib.request, urllib.error',
      'try:',
      '    urllib.request.urlopen("http://refused-host.invalid/", timeout=10)',
      'except urllib.error.HTTPError as e:',
      '    print(e.code)',
    ].join('\n');
    const res = await request(server, 'POST', `/v1/sandboxes/${id}/commands`, {
      key: server.admin,
      body: { argv: ['python3', '-c', script] },
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.stdout.trim(), '403', res.text);
    const denials = (s: Sample[]) => sum(s, 'ironcage_egress_denials_total');
    assert.equal(await settledDelta(server, before, denials, 1), 1);
    const { text, samples } = await scrape(server);
    assert.equal(
      sum(samples, 'ironcage_egress_denials_total', { reason: 'default-deny' }) -
        sum(before, 'ironcage_egress_denials_total', { reason: 'default-deny' }),
      1,
    );
    assert.ok(!text.includes('refused-host'), 'a host name appears in /metrics');
    await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: server.admin });
  });

  test('a silent NDJSON stream carries heartbeats; the SDK result is unaffected', async () => {
    const id = await createSandbox(server, server.admin);
    // Raw: heartbeats (every 100 ms of silence here) sit between start and the output.
    const res = await fetch(`${server.url}/v1/sandboxes/${id}/commands`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${server.admin}`,
        accept: 'application/x-ndjson',
        'content-type': 'application/json',
      },
      body: JSON.stringify({ cmd: 'sleep 0.6; echo done' }),
    });
    const lines = ndjsonLines(await res.text());
    const types = lines.map((l) => l.type as string);
    assert.equal(types[0], 'start');
    assert.equal(types.at(-1), 'exit');
    const beats = lines.filter((l) => l.type === 'heartbeat');
    assert.ok(beats.length >= 2, `expected heartbeats during 600 ms of silence, got ${types.join(',')}`);
    for (const beat of beats) assert.deepEqual(beat, { type: 'heartbeat' });

    // The SDK's line reader never yields them, and its results do not change.
    const http = new HttpClient({ apiUrl: server.url, apiKey: server.admin });
    const seen: string[] = [];
    for await (const line of http.ndjson<{ type: string }>('POST', `/v1/sandboxes/${id}/commands`, {
      json: { cmd: 'sleep 0.4; echo again' },
    })) {
      seen.push(line.type);
    }
    assert.deepEqual(seen, ['start', 'stdout', 'exit']);

    const sandbox = await SdkSandbox.connect(id, { apiUrl: server.url, apiKey: server.admin });
    const chunks: string[] = [];
    const result = await sandbox.commands.run('sleep 0.5; echo quiet; exit 4', {
      onStdout: (d) => chunks.push(d),
    });
    assert.equal(result.exitCode, 4);
    assert.equal(result.stdout, 'quiet\n');
    assert.deepEqual(chunks, ['quiet\n']);
    // Re-attaching to a background process's output is an NDJSON stream too.
    const handle = await sandbox.commands.run(['sh', '-c', 'sleep 0.4; echo late'], { background: true });
    const waited = await handle.wait();
    assert.equal(waited.stdout, 'late\n');
    assert.equal(waited.exitCode, 0);
    await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: server.admin });
  });

  test('MCP event streams carry keep-alive comments at the same interval; the client is unaffected', async () => {
    let raw = '';
    const recording: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if ((res.headers.get('content-type') ?? '').includes('text/event-stream') && res.body !== null) {
        const [mine, theirs] = res.body.tee();
        void (async () => {
          const decoder = new TextDecoder();
          for await (const chunk of mine as unknown as AsyncIterable<Uint8Array>)
            raw += decoder.decode(chunk);
        })().catch(() => {});
        return new Response(theirs, { status: res.status, statusText: res.statusText, headers: res.headers });
      }
      return res;
    };
    const transport = new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${server.admin}` } },
      fetch: recording,
    });
    const client = new Client({ name: 'metrics-test', version: '0' });
    await client.connect(transport);
    const before = (await scrape(server)).samples;
    const mcpExecs = (samples: Sample[]) =>
      sum(samples, 'ironcage_exec_duration_seconds_count', { api: 'mcp', outcome: 'ok' });
    try {
      const created = (await client.callTool({ name: 'sandbox_create', arguments: {} })) as Json;
      const sandboxId = created.structuredContent.sandboxId as string;
      const ran = (await client.callTool({
        name: 'sandbox_run_command',
        arguments: { sandboxId, command: 'sleep 0.6; echo mcp-done' },
      })) as Json;
      assert.notEqual(ran.isError, true, JSON.stringify(ran));
      assert.match(JSON.stringify(ran.structuredContent), /mcp-done/);
      assert.match(raw, /^: keepalive$/m);
      assert.equal(
        await settledDelta(server, before, mcpExecs, 1),
        1,
        'the MCP command is in the exec histogram',
      );
    } finally {
      await transport.terminateSession().catch(() => {});
      await client.close();
    }
  });

  test('JSON logs carry the request id the audit log records', async () => {
    const given = `metrics-${randomBytes(4).toString('hex')}`;
    const res = await request(server, 'POST', '/v1/sandboxes', {
      key: server.admin,
      body: {},
      headers: { 'x-request-id': given },
    });
    assert.equal(res.status, 201, res.text);
    const audit = await server.store.listAuditEvents({ sandboxId: res.json.id, type: 'sandbox.create' });
    assert.equal(audit.events[0]?.requestId, given);
    const mine = server.logs.filter((l) => l.reqId === given);
    assert.ok(mine.some((l) => l.msg === 'incoming request' && l.req?.url === '/v1/sandboxes'));
    assert.ok(mine.some((l) => l.msg === 'request completed' && l.res?.statusCode === 201));
    // Structured: level and time as numbers, never the API key.
    for (const line of mine) {
      assert.equal(typeof line.level, 'number');
      assert.equal(typeof line.time, 'number');
    }
    assert.ok(!JSON.stringify(server.logs).includes(server.admin), 'the admin key was logged');
    await request(server, 'DELETE', `/v1/sandboxes/${res.json.id}`, { key: server.admin });
  });
});

describe('/mcp options', () => {
  test('mcp: false serves no /mcp; session bounds apply', async () => {
    const off = serverStateDir('server-mcp-off');
    const on = serverStateDir('server-mcp-bounded');
    const initialize = {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
    };
    const accept = { accept: 'application/json, text/event-stream' };
    let a: App | undefined;
    let b: App | undefined;
    try {
      a = await startApp(off.dir, { mcp: false });
      const res = await request(a, 'POST', '/mcp', { key: a.admin, body: initialize, headers: accept });
      assert.equal(res.status, 404, res.text);
      assert.equal(res.json.error.code, 'ROUTE_NOT_FOUND');

      b = await startApp(on.dir, { mcp: { maxSessions: 1 } });
      const first = await request(b, 'POST', '/mcp', { key: b.admin, body: initialize, headers: accept });
      assert.equal(first.status, 200, first.text);
      const second = await request(b, 'POST', '/mcp', { key: b.admin, body: initialize, headers: accept });
      assert.equal(second.status, 429, second.text);
      assert.equal(second.json.error.code, 'MCP_SESSION_LIMIT');
      assert.match(second.json.error.message, /at most 1 MCP sessions/);
    } finally {
      await a?.close();
      await b?.close();
      off.cleanup();
      on.cleanup();
    }
  });
});
