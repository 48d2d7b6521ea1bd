/**
 * TLS through the egress proxy over real sockets: opaque tunnels with the SNI check, interception (HTTP/1.1 and
 * HTTP/2) with request rules, the credential vault and the budgets. Upstreams are real HTTPS servers on
 * 127.0.0.1 with certificates from a test PKI; names are answered by a fake resolver (loopback only).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import type { EgressEvent, EgressProxy, EgressProxyOptions } from '../../src/egress/proxy.js';
import { startEgressProxy } from '../../src/egress/proxy.js';
import { CertificateAuthority } from '../../src/egress/tls/ca.js';
import { Vault } from '../../src/vault/index.js';
import { createTestPki } from './tls-fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'ironcage-intercept-'));
const proxies: EgressProxy[] = [];
let ca: CertificateAuthority;
let pki: { caPem: string; keyPem: string; certPem: string };
let upstreamPort = 0;
const upstreamSeen: { method: string; url: string; headers: http.IncomingHttpHeaders }[] = [];
let upstreamHandshakes = 0;
let upstream: https.Server;
let plainUpstream: http.Server;
let plainPort = 0;

/** A fake resolver: every test name is loopback. */
const resolve = async (host: string): Promise<string[]> => {
  if (!host.endsWith('.test')) throw Object.assign(new Error(`${host} unknown`), { code: 'ENOTFOUND' });
  return ['127.0.0.1'];
};

async function proxyWith(
  options: Partial<Omit<EgressProxyOptions, 'socketPath'>>,
): Promise<{ proxy: EgressProxy; events: EgressEvent[] }> {
  const events: EgressEvent[] = [];
  const proxy = await startEgressProxy({
    socketPath: join(dir, `p${proxies.length}.sock`),
    resolve,
    onEvent: (e) => events.push(e),
    tls: { ca, upstreamCa: [pki.caPem] },
    ...options,
    rules: { allow: ['*.test'], allowPrivate: ['127.0.0.1'], ...options.rules },
  });
  proxies.push(proxy);
  return { proxy, events };
}

before(async () => {
  ca = await CertificateAuthority.loadOrCreate(join(dir, 'ca'));
  pki = await createTestPki(['api.test', 'other.test']);
  upstream = https.createServer({ key: pki.keyPem, cert: pki.certPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      upstreamSeen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      res.writeHead(200, {
        'content-type': 'application/json',
        'x-echo-auth': req.headers.authorization ?? '',
      });
      res.end(
        JSON.stringify({
          method: req.method,
          url: req.url,
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
  });
  upstream.on('secureConnection', () => {
    upstreamHandshakes += 1;
  });
  // An "echo" protocol behind an HTTP/1.1 Upgrade, on the TLS server and on a plain one.
  const echoUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    upstreamSeen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
    socket.on('error', () => {});
  };
  upstream.on('upgrade', echoUpgrade);
  plainUpstream = http.createServer((_req, res) => res.end('plain'));
  plainUpstream.on('upgrade', echoUpgrade);
  await new Promise<void>((ok) => plainUpstream.listen(0, '127.0.0.1', ok));
  plainPort = (plainUpstream.address() as net.AddressInfo).port;
  await new Promise<void>((ok) => upstream.listen(0, '127.0.0.1', ok));
  upstreamPort = (upstream.address() as net.AddressInfo).port;
});

after(async () => {
  for (const p of proxies) await p.close();
  upstream.closeAllConnections();
  await new Promise<void>((ok) => upstream.close(() => ok()));
  plainUpstream.closeAllConnections();
  await new Promise<void>((ok) => plainUpstream.close(() => ok()));
  rmSync(dir, { recursive: true, force: true });
});

/** CONNECT through the proxy, then TLS to `servername` trusting `trust`; resolves once the handshake is done. */
function tunnelTls(
  proxy: EgressProxy,
  host: string,
  options: { servername?: string; trust: string; alpn?: string[] },
): Promise<tls.TLSSocket> {
  return new Promise((ok, fail) => {
    const raw = connect(proxy.socketPath);
    raw.on('error', fail);
    raw.write(`CONNECT ${host}:${upstreamPort} HTTP/1.1\r\nHost: ${host}:${upstreamPort}\r\n\r\n`);
    let head = '';
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      raw.off('data', onData);
      if (!head.startsWith('HTTP/1.1 200')) {
        fail(new Error(`CONNECT refused: ${head.split('\r\n')[0]}`));
        return;
      }
      const socket = tls.connect({
        socket: raw,
        servername: options.servername ?? host,
        ca: options.trust,
        ALPNProtocols: options.alpn ?? ['http/1.1'],
      });
      socket.once('secureConnect', () => ok(socket));
      socket.once('error', fail);
      socket.once('close', () => fail(new Error('closed during the TLS handshake')));
    };
    raw.on('data', onData);
  });
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request inside an established TLS tunnel. */
function requestOver(
  socket: tls.TLSSocket,
  host: string,
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((ok, fail) => {
    const req = https.request(
      {
        createConnection: () => socket,
        host,
        path,
        method: init.method ?? 'GET',
        headers: { host, ...init.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        );
      },
    );
    req.on('error', fail);
    req.end(init.body);
  });
}

async function httpsVia(
  proxy: EgressProxy,
  host: string,
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  const socket = await tunnelTls(proxy, host, { trust: ca.certPem });
  try {
    return await requestOver(socket, host, path, init);
  } finally {
    socket.destroy();
  }
}

async function waitFor(check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('opaque tunnels', () => {
  test('a tunnel without interception reaches the real server (its certificate, not ours)', async () => {
    const { proxy, events } = await proxyWith({});
    const socket = await tunnelTls(proxy, 'api.test', { trust: pki.caPem });
    assert.ok(socket.authorized, 'the real server certificate, trusted through the test PKI alone');
    const reply = await requestOver(socket, 'api.test', '/plain');
    assert.equal(reply.status, 200);
    socket.destroy();
    await waitFor(() => events.some((e) => e.type === 'connection' && e.decision === 'allow'));
    assert.ok(!events.some((e) => e.intercepted));
  });

  test('a ClientHello naming another host than the CONNECT is refused before it reaches the server', async () => {
    const { proxy, events } = await proxyWith({});
    const before = upstreamHandshakes;
    await assert.rejects(tunnelTls(proxy, 'api.test', { servername: 'other.test', trust: pki.caPem }));
    await waitFor(() => events.some((e) => e.rule === 'tls:sni-mismatch'));
    const denied = events.find((e) => e.rule === 'tls:sni-mismatch');
    assert.equal(denied?.decision, 'deny');
    assert.equal(upstreamHandshakes, before, 'the upstream never saw the fronted handshake');
  });
});

describe('interception', () => {
  test('an intercept rule terminates TLS with an ironcage leaf and forwards HTTP/1.1', async () => {
    const { proxy, events } = await proxyWith({ rules: { intercept: ['api.test'] } });
    const socket = await tunnelTls(proxy, 'api.test', { trust: ca.certPem });
    assert.ok(socket.authorized, 'the leaf chains to the installation CA (the only root this client trusts)');
    const reply = await requestOver(socket, 'api.test', '/v1/items?q=1', { headers: { 'x-test': 'a' } });
    socket.destroy();
    assert.equal(reply.status, 200);
    const body = JSON.parse(reply.body) as { url: string; headers: Record<string, string> };
    assert.equal(body.url, '/v1/items?q=1');
    assert.equal(body.headers['x-test'], 'a');
    assert.equal(body.headers.host, `api.test:${upstreamPort}`);
    await waitFor(() => events.some((e) => e.type === 'request' && e.protocol === 'https'));
    const request = events.find((e) => e.type === 'request');
    assert.equal(request?.method, 'GET');
    assert.equal(request?.path, '/v1/items?q=1');
    assert.equal(request?.status, 200);
    assert.equal(request?.resolvedIp, '127.0.0.1');
  });

  test('HTTP/2 is negotiated with ALPN and forwarded', async () => {
    const { proxy } = await proxyWith({ rules: { intercept: ['api.test'] } });
    const socket = await tunnelTls(proxy, 'api.test', { trust: ca.certPem, alpn: ['h2'] });
    assert.equal(socket.alpnProtocol, 'h2');
    const session = http2.connect(`https://api.test:${upstreamPort}`, { createConnection: () => socket });
    const reply = await new Promise<{ status: number; body: string }>((ok, fail) => {
      const stream = session.request({ ':path': '/h2-path', ':method': 'GET' });
      let status = 0;
      let body = '';
      stream.on('response', (h) => {
        status = Number(h[':status']);
      });
      stream.on('data', (d: Buffer) => {
        body += d.toString();
      });
      stream.on('end', () => ok({ status, body }));
      stream.on('error', fail);
      stream.end();
    });
    session.close();
    assert.equal(reply.status, 200);
    assert.equal((JSON.parse(reply.body) as { url: string }).url, '/h2-path');
  });

  test('the upstream certificate is verified: a server with a certificate for another name gets 502', async () => {
    const { proxy } = await proxyWith({ rules: { intercept: ['wrong.test'] } });
    const reply = await httpsVia(proxy, 'wrong.test', '/');
    assert.equal(reply.status, 502);
    assert.match(String(reply.headers['x-ironcage-reason']), /wrong\.test/);
  });
});

describe('request rules', () => {
  const requests = [
    { action: 'allow' as const, host: 'api.test', methods: ['GET'], paths: ['/repos/**'] },
    { action: 'deny' as const, host: 'api.test', paths: ['/repos/*/secrets/**'] },
  ];

  test('allowed method and path pass; others get 403 naming the rule', async () => {
    const { proxy, events } = await proxyWith({ rules: { requests } });
    const seenBefore = upstreamSeen.length;
    assert.equal((await httpsVia(proxy, 'api.test', '/repos/a/issues')).status, 200);
    const post = await httpsVia(proxy, 'api.test', '/repos/a/issues', { method: 'POST', body: 'x' });
    assert.equal(post.status, 403);
    assert.equal(post.headers['x-ironcage-denied-rule'], 'request-default-deny');
    assert.match(post.body, /add an allow rule/);
    const secret = await httpsVia(proxy, 'api.test', '/repos/a/secrets/x');
    assert.equal(secret.status, 403);
    assert.equal(secret.headers['x-ironcage-denied-rule'], 'deny * api.test /repos/*/secrets/**');
    assert.equal(upstreamSeen.length, seenBefore + 1, 'only the allowed request reached the server');
    assert.equal(events.filter((e) => e.type === 'denied').length, 2);
  });

  test('dot segments and percent-encoding cannot sneak past a path rule', async () => {
    const { proxy } = await proxyWith({ rules: { requests } });
    const traversal = await httpsVia(proxy, 'api.test', '/repos/../admin');
    assert.equal(traversal.status, 403);
    const encoded = await httpsVia(proxy, 'api.test', '/repos/a/%73ecrets/x');
    assert.equal(encoded.status, 403, 'an escaped letter is still the same path');
    const slash = await httpsVia(proxy, 'api.test', '/repos/a%2Fsecrets/x');
    assert.equal(slash.headers['x-ironcage-denied-rule'], 'invalid-path');
  });

  test('request rules also apply to plain http:// requests', async () => {
    const { proxy } = await proxyWith({
      rules: { requests: [{ action: 'deny', host: 'api.test', methods: ['DELETE'] }] },
    });
    const reply = await new Promise<number>((ok, fail) => {
      const req = http.request(
        { socketPath: proxy.socketPath, path: 'http://api.test:1/x', method: 'DELETE', agent: false },
        (res) => {
          res.resume();
          ok(res.statusCode ?? 0);
        },
      );
      req.on('error', fail);
      req.end();
    });
    assert.equal(reply, 403);
  });
});

describe('credential vault', () => {
  // Generated per run: no secret lives in the test source.
  const value = `tok-${randomBytes(24).toString('hex')}`;
  let vault: Vault;
  before(() => {
    vault = Vault.open(join(dir, 'vault'), { key: randomBytes(32) });
    vault.set('API_TOKEN', value, { hosts: ['api.test'], headers: ['authorization'] });
  });

  test('the placeholder becomes the real value only for the bound host, and the echo is redacted', async () => {
    const secrets = vault.session(['API_TOKEN']);
    const placeholder = secrets.env.API_TOKEN ?? '';
    assert.ok(!placeholder.includes(value));
    const { proxy, events } = await proxyWith({ secrets });
    const reply = await httpsVia(proxy, 'api.test', '/me', {
      headers: { authorization: `Bearer ${placeholder}` },
    });
    assert.equal(reply.status, 200);
    assert.equal(
      upstreamSeen.at(-1)?.headers.authorization,
      `Bearer ${value}`,
      'the server got the real value',
    );
    assert.ok(!reply.body.includes(value), 'the echoed value is redacted in the body');
    assert.ok(reply.body.includes(placeholder));
    assert.equal(reply.headers['x-echo-auth'], `Bearer ${placeholder}`, 'and in the headers');
    await waitFor(() => events.some((e) => e.type === 'request'));
    const event = events.find((e) => e.type === 'request');
    assert.deepEqual(event?.secrets, ['API_TOKEN']);
    assert.ok((event?.redactions ?? 0) >= 1);
    assert.ok(!JSON.stringify(events).includes(value), 'no audit event holds the value');
  });

  test('the placeholder sent to another intercepted host is blocked as exfiltration', async () => {
    const secrets = vault.session(['API_TOKEN']);
    const placeholder = secrets.env.API_TOKEN ?? '';
    const { proxy, events } = await proxyWith({ secrets, rules: { intercept: ['other.test'] } });
    const seen = upstreamSeen.length;
    const reply = await httpsVia(proxy, 'other.test', `/collect?t=${placeholder}`);
    assert.equal(reply.status, 403);
    assert.equal(reply.headers['x-ironcage-denied-rule'], 'vault:exfiltration');
    assert.equal(upstreamSeen.length, seen);
    const body = await httpsVia(proxy, 'other.test', '/upload', { method: 'POST', body: `k=${placeholder}` });
    assert.equal(body.status, 403, 'also in a body');
    await waitFor(() => events.filter((e) => e.rule === 'vault:exfiltration').length === 2);
    assert.ok(!JSON.stringify(events).includes(value));
  });

  test('a placeholder in a wrong header of the bound host is refused too; plain http never carries one', async () => {
    const secrets = vault.session(['API_TOKEN']);
    const placeholder = secrets.env.API_TOKEN ?? '';
    const { proxy } = await proxyWith({ secrets });
    const wrongHeader = await httpsVia(proxy, 'api.test', '/', { headers: { 'x-other': placeholder } });
    assert.equal(wrongHeader.status, 403);
    const cleartext = await new Promise<{ status: number; rule: string }>((ok, fail) => {
      const req = http.request(
        {
          socketPath: proxy.socketPath,
          path: 'http://api.test:1/x',
          headers: { authorization: `Bearer ${placeholder}` },
          agent: false,
        },
        (res) => {
          res.resume();
          ok({ status: res.statusCode ?? 0, rule: String(res.headers['x-ironcage-denied-rule']) });
        },
      );
      req.on('error', fail);
      req.end();
    });
    assert.deepEqual(cleartext, { status: 403, rule: 'vault:cleartext' });
  });
});

describe('budgets', () => {
  test('requests per second: a burst over the bucket gets 429 naming the limit', async () => {
    const { proxy } = await proxyWith({
      rules: { intercept: ['api.test'] },
      limits: { requestsPerSecond: 1 },
    });
    // Each tunnel and each request inside it takes a token; the bucket holds two.
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      try {
        const reply = await httpsVia(proxy, 'api.test', `/r${i}`);
        outcomes.push(`${reply.status} ${reply.headers['x-ironcage-denied-rule'] ?? ''}`.trim());
      } catch (err) {
        outcomes.push((err as Error).message);
      }
    }
    assert.equal(outcomes[0], '200');
    assert.ok(
      outcomes.slice(1).every((o) => /429/.test(o)),
      `later requests refused with 429: ${JSON.stringify(outcomes)}`,
    );
    assert.ok(outcomes.some((o) => o.includes('limit:requests-per-second') || o.includes('429 Too Many')));
  });

  test('a body over maxBodyBytes gets 413', async () => {
    const { proxy } = await proxyWith({ rules: { intercept: ['api.test'] }, limits: { maxBodyBytes: 16 } });
    const reply = await httpsVia(proxy, 'api.test', '/up', { method: 'POST', body: 'x'.repeat(100) });
    assert.equal(reply.status, 413);
    assert.equal(reply.headers['x-ironcage-denied-rule'], 'limit:body-bytes');
  });
});

describe('upgrades (WebSocket-style)', () => {
  /** Sends an upgrade request on `socket`, expects 101, then echoes "ping". */
  async function upgradeAndEcho(socket: Duplex, requestLine: string, host: string): Promise<string> {
    return new Promise((ok, fail) => {
      let got = '';
      let upgraded = false;
      socket.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        if (!upgraded && got.includes('\r\n\r\n')) {
          if (!got.startsWith('HTTP/1.1 101')) return ok(got.split('\r\n')[0] ?? '');
          upgraded = true;
          got = got.slice(got.indexOf('\r\n\r\n') + 4);
          socket.write('ping');
        }
        if (upgraded && got.includes('ping')) ok('echoed ping');
      });
      socket.on('error', fail);
      socket.write(`${requestLine}\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`);
    });
  }

  test('an upgrade through the plain forward proxy is spliced after the 101', async () => {
    const { proxy, events } = await proxyWith({});
    const socket = connect(proxy.socketPath);
    const outcome = await upgradeAndEcho(
      socket,
      `GET http://api.test:${plainPort}/ws HTTP/1.1`,
      `api.test:${plainPort}`,
    );
    socket.destroy();
    assert.equal(outcome, 'echoed ping');
    await waitFor(() => events.some((e) => e.status === 101));
    assert.equal(upstreamSeen.at(-1)?.headers.host, `api.test:${plainPort}`);
  });

  test('inside an intercepted tunnel, request rules apply to the upgrade request', async () => {
    const { proxy } = await proxyWith({
      rules: { requests: [{ action: 'allow', host: 'api.test', paths: ['/ws'] }] },
    });
    const allowed = await tunnelTls(proxy, 'api.test', { trust: ca.certPem });
    assert.equal(await upgradeAndEcho(allowed, 'GET /ws HTTP/1.1', 'api.test'), 'echoed ping');
    allowed.destroy();
    const refused = await tunnelTls(proxy, 'api.test', { trust: ca.certPem });
    assert.match(await upgradeAndEcho(refused, 'GET /admin HTTP/1.1', 'api.test'), /^HTTP\/1\.1 403/);
    refused.destroy();
  });
});
