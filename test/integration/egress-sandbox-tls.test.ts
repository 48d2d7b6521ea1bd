/**
 * HTTPS from inside real sandboxes through their egress proxy: curl, python and git trust the installation CA
 * (mounted over the system bundle), request rules and the credential vault apply to intercepted requests, and
 * opaque tunnels still reach the real server. The upstream is an HTTPS server on the host's loopback with a
 * certificate from a test PKI for `localhost`; the sandbox reaches it only through the proxy.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { EgressEvent } from '../../src/egress/proxy.js';
import { type EgressServices, openEgressServices } from '../../src/egress/services.js';
import { LocalEngine } from '../../src/isolation/local-engine.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import type { SandboxPolicyInput } from '../../src/policy/schema.js';
import { SandboxManager } from '../../src/sandbox/index.js';
import { createTestPki } from './tls-fixture.js';

const state = mkdtempSync(join(tmpdir(), 'ironcage-tls-state-'));
chmodSync(state, 0o711);
const repoRoot = mkdtempSync(join(tmpdir(), 'ironcage-tls-repo-'));
let services: EgressServices;
let engine: LocalEngine;
let server: https.Server;
let port = 0;
const seen: { method: string; url: string; auth: string }[] = [];
// Generated per run: no secret lives in the test source.
const tokenValue = `tok-${randomBytes(20).toString('hex')}`;

before(async () => {
  const pki = await createTestPki(['localhost']);
  services = await openEgressServices(state, { upstreamCa: [pki.caPem], vaultKey: randomBytes(32) });
  services.vault.set('API_TOKEN', tokenValue, { hosts: ['localhost'], headers: ['authorization'] });
  engine = new LocalEngine({ egress: services });
  // A bare repository served the "dumb" way (static files), enough for git clone over HTTPS.
  const work = join(repoRoot, 'work');
  mkdirSync(work);
  const git = (...args: string[]) =>
    execFileSync('git', args, { cwd: work, env: { PATH: process.env.PATH ?? '', HOME: repoRoot } });
  git('init', '-q', '-b', 'main');
  writeFileSync(join(work, 'README'), 'cloned through the egress proxy\n');
  git('add', 'README');
  git('-c', 'user.name=t', '-c', 'user.email=t@example.invalid', 'commit', '-q', '-m', 'first');
  git('clone', '-q', '--bare', work, join(repoRoot, 'repo.git'));
  execFileSync('git', ['update-server-info'], { cwd: join(repoRoot, 'repo.git') });
  server = https.createServer({ key: pki.keyPem, cert: pki.certPem }, (req, res) => {
    seen.push({
      method: req.method ?? '',
      url: req.url ?? '',
      auth: String(req.headers.authorization ?? ''),
    });
    const url = new URL(req.url ?? '/', 'https://localhost');
    if (url.pathname.startsWith('/repo.git/')) {
      const file = normalize(join(repoRoot, url.pathname));
      if (!file.startsWith(join(repoRoot, 'repo.git'))) return res.writeHead(403).end();
      try {
        if (!statSync(file).isFile()) throw new Error('not a file');
        return res.end(readFileSync(file));
      } catch {
        return res.writeHead(404).end();
      }
    }
    res.setHeader('content-type', 'text/plain');
    res.end(`you sent authorization: ${req.headers.authorization ?? '(none)'}\n`);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((ok) => server.close(() => ok()));
  rmSync(state, { recursive: true, force: true });
  rmSync(repoRoot, { recursive: true, force: true });
});

function network(extra: Record<string, unknown> = {}): SandboxPolicyInput {
  return {
    network: {
      mode: 'proxy',
      allow: ['localhost'],
      allowPrivate: ['127.0.0.1', '::1'],
      ...extra,
    },
  } as SandboxPolicyInput;
}

async function run(argv: string[], layer: SandboxPolicyInput) {
  let stdout = '';
  let stderr = '';
  const result = await engine.run({
    policy: resolvePolicy('default', { limits: { wallTimeMs: 30_000 } }, layer),
    argv,
    onStdout: (c) => (stdout += c.toString()),
    onStderr: (c) => (stderr += c.toString()),
  });
  return { ...result, stdout, stderr };
}

describe('HTTPS from a one-shot sandbox', () => {
  test('opaque tunnel: curl verifies the real server through the bundle (our CA added, system roots kept)', async () => {
    const r = await run(['curl', '-sS', `https://localhost:${port}/hello`], network());
    // The test PKI is not in the sandbox's bundle: only an intercepted connection could be trusted.
    assert.notEqual(
      r.exitCode,
      0,
      'an opaque tunnel shows the real (test-PKI) certificate, which the sandbox does not trust',
    );
    assert.match(r.stderr, /certificate/i);
  });

  test('intercepted: curl and python trust the installation CA; request rules refuse with a readable 403', async () => {
    const rules = network({
      requests: [{ action: 'allow', host: 'localhost', methods: ['GET'], paths: ['/hello', '/repo.git/**'] }],
    });
    const ok = await run(['curl', '-sS', '-w', '%{http_code}', `https://localhost:${port}/hello`], rules);
    assert.equal(ok.exitCode, 0, ok.stderr);
    assert.match(ok.stdout, /you sent authorization: \(none\)\n200$/);
    const post = await run(
      [
        'curl',
        '-sS',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '-X',
        'POST',
        `https://localhost:${port}/hello`,
      ],
      rules,
    );
    assert.equal(post.stdout, '403');
    const py = await run(
      [
        'python3',
        '-c',
        [
          'import urllib.request, urllib.error',
          'try:',
          `    urllib.request.urlopen("https://localhost:${port}/other", timeout=10)`,
          'except urllib.error.HTTPError as e:',
          '    print(e.code, e.headers.get("X-Ironcage-Denied-Rule"))',
        ].join('\n'),
      ],
      rules,
    );
    assert.equal(py.stdout.trim(), '403 request-default-deny', py.stderr);
  });

  test('git clones over HTTPS through the proxy', async () => {
    const rules = network({ intercept: ['localhost'] });
    const r = await run(
      ['sh', '-c', `git clone -q https://localhost:${port}/repo.git /tmp/c && cat /tmp/c/README`],
      rules,
    );
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'cloned through the egress proxy\n');
  });

  test('the sandbox holds a placeholder; the server gets the value; the echo comes back redacted', async () => {
    const before = seen.length;
    const r = await run(
      [
        'sh',
        '-c',
        `echo "env:$API_TOKEN"; curl -sS -H "Authorization: Bearer $API_TOKEN" https://localhost:${port}/me`,
      ],
      network({ secrets: ['API_TOKEN'] }),
    );
    assert.equal(r.exitCode, 0, r.stderr);
    const placeholder = /^env:(\S+)$/m.exec(r.stdout)?.[1] ?? '';
    assert.match(placeholder, /^ironcage_ph_api_token_/);
    assert.ok(!r.stdout.includes(tokenValue), 'the value never enters the sandbox');
    assert.match(r.stdout, new RegExp(`you sent authorization: Bearer ${placeholder}`));
    assert.equal(seen.at(-1)?.auth, `Bearer ${tokenValue}`, 'the server received the real value');
    assert.equal(seen.length, before + 1);
  });
});

describe('HTTPS from a warm sandbox', () => {
  test('interception, the vault and the audit log work for warm sandboxes too', async () => {
    const managerState = mkdtempSync(join(tmpdir(), 'ironcage-tls-warm-'));
    chmodSync(managerState, 0o711);
    const manager = new SandboxManager({ stateDir: managerState, onStartup: 'reap', egress: services });
    try {
      await manager.start();
      const sandbox = await manager.create({
        policy: network({ secrets: ['API_TOKEN'], intercept: ['localhost'] }),
      });
      const events: EgressEvent[] = [];
      sandbox.on('egress', (e: EgressEvent) => events.push(e));
      const r = await sandbox.commands.run([
        'sh',
        '-c',
        `curl -sS -H "Authorization: Bearer $API_TOKEN" https://localhost:${port}/warm`,
      ]);
      assert.equal(r.exitCode, 0, `${r.stderr}${r.stdout}`);
      assert.ok(!r.stdout.includes(tokenValue));
      assert.equal(seen.at(-1)?.auth, `Bearer ${tokenValue}`);
      const logged = sandbox.network.events().events;
      const request = logged.find((e) => e.type === 'request' && e.path === '/warm');
      assert.equal(request?.protocol, 'https');
      assert.deepEqual(request?.secrets, ['API_TOKEN']);
      assert.ok(!JSON.stringify(logged).includes(tokenValue));
      await sandbox.kill();
    } finally {
      await manager.close();
      rmSync(managerState, { recursive: true, force: true });
    }
  });
});
