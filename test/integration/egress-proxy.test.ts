/**
 * The egress proxy over real sockets: clients on its Unix socket, upstream servers on 127.0.0.1 only.
 * Names are resolved by a fake resolver (named so below) that answers loopback addresses only, so nothing
 * here can leave the machine.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { EgressEvent, EgressProxy, EgressProxyOptions } from '../../src/egress/proxy.js';
import { startEgressProxy } from '../../src/egress/proxy.js';

const dir = mkdtempSync(join(tmpdir(), 'ironcage-egress-'));
let socketCounter = 0;
const proxies: EgressProxy[] = [];

/** A fake resolver: answers from a table of loopback addresses and counts how often it was asked. */
function fakeResolver(table: Record<string, string[] | (() => string[])>): {
  resolve: (host: string) => Promise<string[]>;
  calls: string[];
} {
  const calls: string[] = [];
  return {
    calls,
    resolve: async (host) => {
      calls.push(host);
      const entry = table[host];
      const answer = typeof entry === 'function' ? entry() : entry;
      if (answer === undefined)
        throw Object.assign(new Error(`fake resolver: ${host} unknown`), { code: 'ENOTFOUND' });
      for (const a of answer)
        assert.ok(a === '127.0.0.1' || a === '::1', 'the fake resolver answers loopback only');
      return answer;
    },
  };
}

async function proxyWith(
  options: Omit<EgressProxyOptions, 'socketPath'>,
): Promise<{ proxy: EgressProxy; events: EgressEvent[] }> {
  const events: EgressEvent[] = [];
  const proxy = await startEgressProxy({
    socketPath: join(dir, `p${socketCounter++}.sock`),
    onEvent: (e) => events.push(e),
    ...options,
  });
  proxies.push(proxy);
  return { proxy, events };
}

// Upstreams: an HTTP server that reports what it received, and a TCP echo server.
let httpPort = 0;
let echoPort = 0;
const upstreamPeers: string[] = [];
const upstream = http.createServer((req, res) => {
  upstreamPeers.push(req.socket.remoteAddress ?? '');
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.stringify({
      method: req.method,
      url: req.url,
      headers: req.headers,
      body: Buffer.concat(chunks).toString(),
    });
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes' });
    res.end(body);
  });
});
const echo = net.createServer((s) => {
  s.on('error', () => {});
  s.pipe(s);
});

before(async () => {
  await new Promise<void>((ok) => upstream.listen(0, '127.0.0.1', ok));
  await new Promise<void>((ok) => echo.listen(0, '127.0.0.1', ok));
  httpPort = (upstream.address() as net.AddressInfo).port;
  echoPort = (echo.address() as net.AddressInfo).port;
});

after(async () => {
  for (const p of proxies) await p.close();
  upstream.closeAllConnections();
  await new Promise<void>((ok) => upstream.close(() => ok()));
  await new Promise<void>((ok) => echo.close(() => ok()));
  rmSync(dir, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A forward-proxy request as curl/requests send it: absolute-form target over the proxy's socket. */
function viaProxy(
  proxy: EgressProxy,
  url: string,
  init: { method?: string; body?: string } = {},
): Promise<Reply> {
  return new Promise((ok, fail) => {
    const req = http.request(
      {
        socketPath: proxy.socketPath,
        path: url,
        method: init.method ?? 'GET',
        headers: { host: new URL(url).host, connection: 'close', 'proxy-authorization': 'Basic c2VjcmV0' },
        agent: false,
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

/** Open a raw connection to the proxy socket and collect what comes back until it closes or `until` holds. */
function rawExchange(
  proxy: EgressProxy,
  send: Buffer | string,
  until: (got: Buffer) => boolean = () => false,
): Promise<{ got: Buffer; socket: net.Socket; closed: boolean }> {
  return new Promise((ok, fail) => {
    const socket = net.connect(proxy.socketPath);
    let got = Buffer.alloc(0);
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      ok({ got, socket, closed });
    };
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (until(got)) finish(false);
    });
    socket.on('close', () => finish(true));
    socket.on('error', (e) => (done ? undefined : fail(e)));
    socket.write(send);
  });
}

function readMore(socket: net.Socket, bytes: number): Promise<Buffer> {
  return new Promise((ok, fail) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length >= bytes) {
        socket.off('data', onData);
        ok(got);
      }
    };
    socket.on('data', onData);
    socket.once('close', () => fail(new Error(`closed after ${got.length} of ${bytes} bytes`)));
  });
}

function socksConnectDomain(name: string, port: number): Buffer {
  const n = Buffer.from(name);
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  // greeting (no auth) and CONNECT request in one write, as many clients pipeline them
  return Buffer.concat([Buffer.from([5, 1, 0]), Buffer.from([5, 1, 0, 3, n.length]), n, p]);
}

describe('egress proxy: HTTP forward proxy', () => {
  test('an allowed domain is forwarded to the real server, hop-by-hop headers stripped', async () => {
    const dns = fakeResolver({ 'api.allowed.test': ['127.0.0.1'] });
    const { proxy, events } = await proxyWith({
      rules: { allow: ['api.allowed.test'], allowPrivate: ['127.0.0.1/32'] },
      resolve: dns.resolve,
      sandboxId: 'sb-1',
    });
    const r = await viaProxy(proxy, `http://API.Allowed.test:${httpPort}/hello?x=1`, {
      method: 'POST',
      body: 'ping',
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upstream'], 'yes');
    const seen = JSON.parse(r.body) as {
      method: string;
      url: string;
      headers: Record<string, string>;
      body: string;
    };
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/hello?x=1');
    assert.equal(seen.body, 'ping');
    assert.equal(seen.headers.host, `api.allowed.test:${httpPort}`);
    assert.equal(
      seen.headers['proxy-authorization'],
      undefined,
      'proxy credentials never reach the upstream',
    );
    assert.deepEqual(dns.calls, ['api.allowed.test']);
    const ev = events.find((e) => e.type === 'request');
    assert.ok(ev, 'a request event is emitted');
    assert.equal(ev.sandboxId, 'sb-1');
    assert.equal(ev.destination, `api.allowed.test:${httpPort}`);
    assert.equal(ev.resolvedIp, '127.0.0.1');
    assert.equal(ev.decision, 'allow');
    assert.equal(ev.rule, 'api.allowed.test');
    assert.equal(ev.status, 200);
    assert.equal(ev.bytesUp, 4);
    assert.equal(ev.bytesDown, Buffer.byteLength(r.body));
  });

  test('a denied domain gets 403 with rule and reason headers, and is never resolved', async () => {
    const dns = fakeResolver({ 'evil.test': ['127.0.0.1'] });
    const { proxy, events } = await proxyWith({
      rules: { allow: ['api.allowed.test'], allowPrivate: ['127.0.0.1/32'] },
      resolve: dns.resolve,
    });
    const r = await viaProxy(proxy, `http://evil.test:${httpPort}/`);
    assert.equal(r.status, 403);
    assert.equal(r.headers['x-ironcage-denied-rule'], 'default-deny');
    assert.match(String(r.headers['x-ironcage-reason']), /evil\.test.*egress\.allow/);
    assert.match(r.body, /refused by the sandbox egress policy/);
    assert.deepEqual(dns.calls, [], 'a name refused by rule is not sent to DNS');
    assert.equal(events.length, 1);
    assert.equal(events[0]?.type, 'denied');
    assert.equal(events[0]?.rule, 'default-deny');
  });

  test('an explicit deny rule wins and is named in the header', async () => {
    const dns = fakeResolver({ 'gist.allowed.test': ['127.0.0.1'] });
    const { proxy } = await proxyWith({
      rules: { allow: ['*.allowed.test'], deny: ['gist.allowed.test'], allowPrivate: ['127.0.0.1/32'] },
      resolve: dns.resolve,
    });
    const r = await viaProxy(proxy, `http://gist.allowed.test:${httpPort}/`);
    assert.equal(r.status, 403);
    assert.equal(r.headers['x-ironcage-denied-rule'], 'gist.allowed.test');
  });
});

describe('egress proxy: CONNECT', () => {
  test('a tunnel to an allowed echo server carries bytes both ways', async () => {
    const dns = fakeResolver({ 'echo.allowed.test': ['127.0.0.1'] });
    const { proxy, events } = await proxyWith({
      rules: { allow: ['echo.allowed.test'], allowPrivate: ['127.0.0.1/32'] },
      resolve: dns.resolve,
    });
    const { got, socket } = await rawExchange(
      proxy,
      `CONNECT echo.allowed.test:${echoPort} HTTP/1.1\r\nHost: echo.allowed.test:${echoPort}\r\n\r\n`,
      (b) => b.includes('\r\n\r\n'),
    );
    assert.match(got.toString(), /^HTTP\/1\.1 200 /);
    const reading = readMore(socket, 11);
    socket.write('hello world');
    assert.equal((await reading).toString(), 'hello world');
    const closed = new Promise((ok) => socket.once('close', ok));
    socket.end();
    await closed;
    await waitFor(() => events.some((e) => e.type === 'connection'));
    const ev = events.find((e) => e.type === 'connection');
    assert.equal(ev?.bytesUp, 11);
    assert.equal(ev?.bytesDown, 11);
    assert.equal(ev?.resolvedIp, '127.0.0.1');
  });

  test('a denied CONNECT gets 403 with the headers and the connection closes', async () => {
    const { proxy } = await proxyWith({
      rules: { allow: ['echo.allowed.test'] },
      resolve: fakeResolver({}).resolve,
    });
    const { got, closed } = await rawExchange(proxy, `CONNECT other.test:${echoPort} HTTP/1.1\r\n\r\n`);
    const text = got.toString();
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.match(text, /X-Ironcage-Denied-Rule: default-deny\r\n/);
    assert.match(text, /X-Ironcage-Reason: other\.test/);
    assert.equal(closed, true);
  });
});

describe('egress proxy: SOCKS5', () => {
  test('CONNECT to an allowed name succeeds (reply 0x00) and carries bytes', async () => {
    const dns = fakeResolver({ 'echo.allowed.test': ['127.0.0.1'] });
    const { proxy } = await proxyWith({
      rules: { allow: ['echo.allowed.test'], allowPrivate: ['127.0.0.1/32'] },
      resolve: dns.resolve,
    });
    const { got, socket } = await rawExchange(
      proxy,
      socksConnectDomain('echo.allowed.test', echoPort),
      (b) => b.length >= 12,
    );
    assert.deepEqual([...got.subarray(0, 2)], [5, 0], 'no-auth selected');
    assert.equal(got[2], 5);
    assert.equal(got[3], 0x00, 'reply succeeded');
    const reading = readMore(socket, 4);
    socket.write('abcd');
    assert.equal((await reading).toString(), 'abcd');
    socket.destroy();
  });

  test('CONNECT to a denied name gets reply 0x02 (not allowed by ruleset)', async () => {
    const { proxy, events } = await proxyWith({ rules: { allow: ['echo.allowed.test'] } });
    const { got, closed } = await rawExchange(proxy, socksConnectDomain('blocked.test', echoPort));
    assert.equal(got[3], 0x02);
    assert.equal(closed, true);
    assert.equal(events[0]?.type, 'denied');
    assert.equal(events[0]?.protocol, 'socks5');
  });

  test('a raw IPv4 loopback address without allowPrivate gets 0x02', async () => {
    const { proxy } = await proxyWith({ rules: { allow: ['127.0.0.1'] } });
    const p = Buffer.alloc(2);
    p.writeUInt16BE(echoPort);
    const req = Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1]), p]);
    const { got } = await rawExchange(proxy, req);
    assert.equal(got[3], 0x02);
  });
});

describe('egress proxy: DNS pinning', () => {
  test('a name resolving to loopback is refused by its class without allowPrivate', async () => {
    const dns = fakeResolver({ 'rebind.test': ['127.0.0.1'] });
    const { proxy } = await proxyWith({ rules: { allow: ['rebind.test'] }, resolve: dns.resolve });
    const r = await viaProxy(proxy, `http://rebind.test:${httpPort}/`);
    assert.equal(r.status, 403);
    assert.equal(r.headers['x-ironcage-denied-rule'], 'class:loopback');
    assert.deepEqual(dns.calls, ['rebind.test']);
  });

  test('with allowPrivate the vetted address is dialled; a second answer would differ but is never asked', async () => {
    let n = 0;
    // First answer 127.0.0.1 (where the server listens); any later answer is ::1, where nothing listens.
    const dns = fakeResolver({ 'rebind.test': () => (n++ === 0 ? ['127.0.0.1'] : ['::1']) });
    const { proxy } = await proxyWith({
      rules: { allow: ['rebind.test'], allowPrivate: ['127.0.0.1/32'] },
      resolve: dns.resolve,
    });
    const before = upstreamPeers.length;
    const r = await viaProxy(proxy, `http://rebind.test:${httpPort}/`);
    assert.equal(r.status, 200);
    assert.equal(dns.calls.length, 1, 'exactly one lookup per request');
    assert.deepEqual(upstreamPeers.slice(before), ['127.0.0.1']);

    // The next request resolves afresh (once) and now gets ::1, which allowPrivate does not cover.
    const second = await viaProxy(proxy, `http://rebind.test:${httpPort}/`);
    assert.equal(second.status, 403);
    assert.equal(second.headers['x-ironcage-denied-rule'], 'class:loopback');
    assert.equal(dns.calls.length, 2);
  });
});

describe('egress proxy: dialling', () => {
  test('a tunnel falls back to the next vetted address when the first refuses', async () => {
    // ::1 answers first, but the echo server listens on 127.0.0.1 only.
    const dns = fakeResolver({ 'dual.test': ['::1', '127.0.0.1'] });
    const { proxy, events } = await proxyWith({
      rules: { allow: ['dual.test'], allowPrivate: ['127.0.0.1/32', '::1/128'] },
      resolve: dns.resolve,
    });
    const { got, socket } = await rawExchange(
      proxy,
      `CONNECT dual.test:${echoPort} HTTP/1.1\r\nHost: dual.test\r\n\r\n`,
      (b) => b.includes('\r\n\r\n'),
    );
    assert.match(got.toString(), /^HTTP\/1\.1 200/);
    socket.write('ping');
    assert.equal((await readMore(socket, 4)).toString(), 'ping');
    socket.destroy();
    await waitFor(() => events.some((e) => e.type === 'connection'));
    assert.equal(events.find((e) => e.type === 'connection')?.resolvedIp, '127.0.0.1');
    assert.deepEqual(dns.calls, ['dual.test'], 'no second lookup for the fallback');
  });
});

describe('egress proxy: live rules, ask, limits, close', () => {
  test('mergeRules and setRules change the verdict of the next request', async () => {
    const dns = fakeResolver({ 'later.test': ['127.0.0.1'] });
    const { proxy } = await proxyWith({ rules: { allowPrivate: ['127.0.0.1/32'] }, resolve: dns.resolve });
    assert.equal((await viaProxy(proxy, `http://later.test:${httpPort}/`)).status, 403);
    proxy.mergeRules({ allow: ['later.test'] });
    assert.equal((await viaProxy(proxy, `http://later.test:${httpPort}/`)).status, 200);
    proxy.setRules({ allow: [], allowPrivate: ['127.0.0.1/32'] });
    assert.equal((await viaProxy(proxy, `http://later.test:${httpPort}/`)).status, 403);
    assert.throws(() => proxy.mergeRules({ allow: ['bad host/x'] }));
    assert.deepEqual(
      proxy.rules.allow.map((r) => r.text),
      [],
      'an invalid update leaves the rules as they were',
    );
  });

  test('ask verdicts go to the hook; without a hook they are denied', async () => {
    const dns = fakeResolver({ 'maybe.test': ['127.0.0.1'] });
    const asked: string[] = [];
    const { proxy } = await proxyWith({
      rules: { allowPrivate: ['127.0.0.1/32'], onUndecided: 'ask' },
      resolve: dns.resolve,
      ask: async (req) => {
        asked.push(req.destination);
        return asked.length === 1;
      },
    });
    assert.equal((await viaProxy(proxy, `http://maybe.test:${httpPort}/`)).status, 200);
    const refused = await viaProxy(proxy, `http://maybe.test:${httpPort}/`);
    assert.equal(refused.status, 403);
    assert.equal(refused.headers['x-ironcage-denied-rule'], 'ask:refused');
    assert.deepEqual(asked, [`maybe.test:${httpPort}`, `maybe.test:${httpPort}`]);

    const { proxy: noHook } = await proxyWith({
      rules: { allowPrivate: ['127.0.0.1/32'], onUndecided: 'ask' },
      resolve: dns.resolve,
    });
    assert.equal((await viaProxy(noHook, `http://maybe.test:${httpPort}/`)).status, 403);
  });

  test('an oversized request head gets 431 and the connection is closed', async () => {
    const { proxy } = await proxyWith({ rules: { allow: ['x.test'] }, limits: { maxHeaderBytes: 1024 } });
    const head = `GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`;
    const { got, closed } = await rawExchange(proxy, head);
    assert.match(got.toString(), /^HTTP\/1\.1 431 /);
    assert.equal(closed, true);
  });

  test('a SOCKS client that stalls after the greeting is closed by the handshake timeout', async () => {
    const { proxy } = await proxyWith({ rules: { allow: ['x.test'] }, limits: { handshakeTimeoutMs: 300 } });
    // Greeting only, then silence: the handshake timeout closes it.
    const { got, closed } = await rawExchange(proxy, Buffer.from([5, 1, 0]));
    assert.deepEqual([...got], [5, 0]);
    assert.equal(closed, true);
  });

  test('a connection over maxConnections gets 429 naming the limit; SOCKS is closed', async () => {
    const { proxy, events } = await proxyWith({
      rules: { allow: ['x.test'] },
      limits: { maxConnections: 1 },
    });
    const first = net.connect(proxy.socketPath);
    await new Promise((ok) => first.once('connect', ok));
    await waitFor(() => proxy.openSockets() === 1);
    const second = net.connect(proxy.socketPath);
    second.write('GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\n\r\n');
    let got = '';
    second.on('data', (d: Buffer) => {
      got += d.toString();
    });
    second.on('error', () => {});
    await new Promise((ok) => second.once('close', ok));
    assert.match(got, /^HTTP\/1\.1 429 /);
    assert.match(got, /X-Ironcage-Denied-Rule: limit:connections/);
    assert.ok(events.some((e) => e.rule === 'limit:connections'));
    const third = net.connect(proxy.socketPath);
    third.write(Buffer.from([5, 1, 0]));
    let socksBytes = 0;
    third.on('data', (d: Buffer) => {
      socksBytes += d.length;
    });
    third.on('error', () => {});
    await new Promise((ok) => third.once('close', ok));
    assert.equal(socksBytes, 0);
    await waitFor(() => proxy.openSockets() === 1);
    first.destroy();
  });

  test('the socket is mode 0600, and close() removes it and every open socket', async () => {
    const dns = fakeResolver({ 'echo.allowed.test': ['127.0.0.1'] });
    const { proxy } = await proxyWith({
      rules: { allow: ['echo.allowed.test'], allowPrivate: ['127.0.0.1/32'] },
      resolve: dns.resolve,
    });
    assert.equal(statSync(proxy.socketPath).mode & 0o777, 0o600);
    const baseline = countHandles();
    // An open tunnel and an idle client, both alive when close() is called.
    const { socket } = await rawExchange(
      proxy,
      `CONNECT echo.allowed.test:${echoPort} HTTP/1.1\r\n\r\n`,
      (b) => b.includes('\r\n\r\n'),
    );
    const idle = net.connect(proxy.socketPath);
    await new Promise((ok) => idle.once('connect', ok));
    await waitFor(() => proxy.openSockets() === 3);
    const clientClosed = Promise.all([
      new Promise((ok) => socket.once('close', ok)),
      new Promise((ok) => idle.once('close', ok)),
    ]);
    await proxy.close();
    await clientClosed;
    assert.equal(existsSync(proxy.socketPath), false);
    assert.equal(proxy.openSockets(), 0);
    // The listener is gone too: nothing more than before the tunnel (the echo server's side may lag a tick).
    await waitFor(() => countHandles().pipes < baseline.pipes && countHandles().tcp <= baseline.tcp);
  });
});

function countHandles(): { pipes: number; tcp: number } {
  const info = process.getActiveResourcesInfo();
  return {
    pipes: info.filter((r) => r === 'PipeServerWrap' || r === 'PipeWrap').length,
    tcp: info.filter((r) => r === 'TCPWrap').length,
  };
}

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((ok) => setTimeout(ok, 10));
  }
}
