/**
 * `network.mode: 'proxy'` with the real one-shot engine: the sandbox's only way out is its own egress proxy,
 * relayed by the agent to 127.0.0.1:PORT inside. Everything stays on loopback: the test's HTTP server listens on
 * the host's 127.0.0.1, which the sandbox (own network namespace) can reach only through the proxy.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { LocalEngine } from '../../src/isolation/local-engine.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import type { SandboxPolicyInput } from '../../src/policy/schema.js';

const engine = new LocalEngine();
let server: http.Server;
let port = 0;
const body = `hello from the host ${process.pid}`;

before(async () => {
  server = http.createServer((req, res) => {
    if (req.method !== 'POST') return res.end(body);
    // Echo: the relay must carry big bodies both ways through its bounded buffers.
    const hash = createHash('sha256');
    req.on('data', (c: Buffer) => hash.update(c));
    req.on('end', () => res.end(`${hash.digest('hex')}\n${'y'.repeat(3 * 1024 * 1024)}`));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((ok) => server.close(() => ok()));
});

/** Fetches the host server with urllib (which honours HTTP_PROXY); prints the status, a header and the body. */
function fetchScript(): string {
  return [
    'import urllib.request, urllib.error, sys',
    'try:',
    `    r = urllib.request.urlopen("http://127.0.0.1:${port}/", timeout=10)`,
    '    print(r.status); print(r.headers.get("X-Ironcage-Denied-Rule")); print(r.read().decode())',
    'except urllib.error.HTTPError as e:',
    '    print(e.code); print(e.headers.get("X-Ironcage-Denied-Rule")); print(e.read().decode())',
  ].join('\n');
}

/** Connects straight to the host server's port, ignoring every proxy variable. */
function directScript(): string {
  return [
    'import socket',
    'try:',
    `    socket.create_connection(("127.0.0.1", ${port}), timeout=5); print("connected")`,
    'except OSError as e:',
    '    print("refused", e.errno)',
  ].join('\n');
}

async function run(script: string, layer: SandboxPolicyInput) {
  let stdout = '';
  let stderr = '';
  const result = await engine.run({
    policy: resolvePolicy('default', { limits: { wallTimeMs: 20_000 } }, layer),
    argv: ['/usr/bin/python3', '-c', script],
    onStdout: (c) => (stdout += c.toString()),
    onStderr: (c) => (stderr += c.toString()),
  });
  return { ...result, stdout, stderr };
}

function leftoverRunDirs(): string[] {
  return readdirSync(tmpdir()).filter((n) => n.startsWith(`ironcage-egress-${process.pid}-`));
}

describe('sandbox egress through the per-run proxy', { concurrency: 2 }, () => {
  test('an allowed destination is fetched through the proxy', async () => {
    const r = await run(fetchScript(), {
      network: { mode: 'proxy', allow: ['127.0.0.1'], allowPrivate: ['127.0.0.1'] },
    });
    assert.equal(r.outcome, 'exit', r.stderr);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['200', 'None', body]);
  });

  test('large request and response bodies cross the relay intact', async () => {
    const upload = 'x'.repeat(2 * 1024 * 1024);
    const r = await run(
      [
        'import urllib.request',
        `r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:${port}/", data=b"x" * ${upload.length}), timeout=15)`,
        'data = r.read().decode()',
        'head, _, rest = data.partition("\\n")',
        'print(head); print(len(rest), rest.count("y"))',
      ].join('\n'),
      { network: { mode: 'proxy', allow: ['127.0.0.1'], allowPrivate: ['127.0.0.1'] } },
    );
    assert.equal(r.exitCode, 0, r.stderr);
    const size = 3 * 1024 * 1024;
    assert.deepEqual(r.stdout.trim().split('\n'), [
      createHash('sha256').update(upload).digest('hex'),
      `${size} ${size}`,
    ]);
  });

  test('loopback without allowPrivate is refused with a readable 403', async () => {
    const r = await run(fetchScript(), { network: { mode: 'proxy', allow: ['127.0.0.1'] } });
    assert.equal(r.exitCode, 0, r.stderr);
    const [status, rule] = r.stdout.trim().split('\n');
    assert.equal(status, '403');
    assert.ok(rule !== undefined && rule !== 'None' && rule.length > 0, r.stdout);
    assert.ok(!r.stdout.includes(body));
  });

  test('a direct connect to the host bypassing the proxy fails, also in proxy mode', async () => {
    const r = await run(directScript(), {
      network: { mode: 'proxy', allow: ['127.0.0.1'], allowPrivate: ['127.0.0.1'] },
    });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^refused /);
  });

  test("mode 'none' has no proxy: no variables, no relay, no way out", async () => {
    const env = await run('import os; print(os.environ.get("HTTP_PROXY"))', {});
    assert.equal(env.stdout.trim(), 'None');
    const r = await run(fetchScript().replace('timeout=10', 'timeout=5'), { network: { mode: 'none' } });
    assert.notEqual(r.exitCode, 0);
    assert.ok(!r.stdout.includes(body));
    const direct = await run(directScript(), {});
    assert.match(direct.stdout, /^refused /);
  });

  test('proxy mode sets the usual proxy variables, both spellings, and an empty NO_PROXY', async () => {
    const r = await run(
      'import os\nfor n in ["HTTP_PROXY","https_proxy","ALL_PROXY","all_proxy","NO_PROXY"]: print(n, repr(os.environ.get(n)))',
      { network: { mode: 'proxy', port: 4128 } },
    );
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "HTTP_PROXY 'http://127.0.0.1:4128'",
      "https_proxy 'http://127.0.0.1:4128'",
      "ALL_PROXY 'http://127.0.0.1:4128'",
      "all_proxy 'http://127.0.0.1:4128'",
      "NO_PROXY ''",
    ]);
  });
});

test('every run removes its egress directory', async () => {
  // Runs by other test files in this process may still be in flight only if they share the pid; they do not.
  assert.deepEqual(leftoverRunDirs(), []);
});
