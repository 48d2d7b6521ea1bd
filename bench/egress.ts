/**
 * Egress proxy benchmark (loopback only): added latency and throughput of a sandbox's proxy against a direct
 * connection to the same local server, measured in the same run, for plain HTTP and for HTTPS (opaque tunnel
 * and TLS interception), plus the host memory one idle proxy costs.
 *   node dist/bench/egress.js
 * The upstream servers and the proxy each run in a process of their own (as in production, where the proxy
 * lives in the ironcage process and the client in the sandbox), so the client's event loop is not the
 * proxy's. A fake resolver maps the benchmark's name to 127.0.0.1 (no DNS in the numbers). Every request
 * uses a fresh connection (and for HTTPS a full handshake): the worst case for a proxy.
 */

import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type RequestOptions } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { type EgressProxy, startEgressProxy } from '../src/egress/proxy.js';
import { CertificateAuthority } from '../src/egress/tls/ca.js';
import { quantile, table } from './lib.js';

const RUNS = 300;
const BODY = Buffer.alloc(1024, 'x');
const NAME = 'bench.test';

type Role =
  | { role: 'upstream'; dir: string }
  | { role: 'proxy'; dir: string; socketPath: string; upstreamCa: string }
  | { role: 'memory'; dir: string; count: number };

/** Child process roles: report `{ ready, ... }` to the parent once listening. */
async function child(role: Role): Promise<void> {
  if (role.role === 'memory') {
    const proxies: EgressProxy[] = [];
    for (let i = 0; i < role.count; i++) {
      proxies.push(
        await startEgressProxy({
          socketPath: join(role.dir, `m${i}.sock`),
          rules: { allow: [NAME] },
          resolve: async () => [],
        }),
      );
    }
    global.gc?.();
    await new Promise((r) => setTimeout(r, 200));
    process.send?.({ ready: true, rss: process.memoryUsage().rss, proxies: proxies.length });
    return;
  }
  if (role.role === 'upstream') {
    const pki = await CertificateAuthority.loadOrCreate(join(role.dir, 'upstream-ca'));
    const leaf = await pki.issueForHosts([NAME]);
    const plain = createServer((_req, res) => res.end(BODY));
    const tls = createHttpsServer({ key: leaf.keyPem, cert: leaf.certPem }, (_req, res) => res.end(BODY));
    await new Promise<void>((ok) => plain.listen(0, '127.0.0.1', ok));
    await new Promise<void>((ok) => tls.listen(0, '127.0.0.1', ok));
    process.send?.({
      ready: true,
      httpPort: (plain.address() as { port: number }).port,
      httpsPort: (tls.address() as { port: number }).port,
      caPem: pki.certPem,
    });
    return;
  }
  const ca = await CertificateAuthority.loadOrCreate(join(role.dir, 'ironcage-ca'));
  const common = {
    resolve: async () => ['127.0.0.1'], // a fake resolver: loopback only
    tls: { ca, upstreamCa: [role.upstreamCa] },
  };
  await startEgressProxy({
    ...common,
    socketPath: role.socketPath,
    rules: { allow: [NAME], allowPrivate: ['127.0.0.1'] },
  });
  await startEgressProxy({
    ...common,
    socketPath: `${role.socketPath}.intercept`,
    rules: { allow: [NAME], allowPrivate: ['127.0.0.1'], intercept: [NAME] },
  });
  process.send?.({ ready: true, caPem: ca.certPem });
}

function start(role: Role): Promise<{ proc: ChildProcess; info: Record<string, unknown> }> {
  const proc = fork(fileURLToPath(import.meta.url), [JSON.stringify(role)], {
    stdio: 'inherit',
    execArgv: ['--expose-gc'],
  });
  return new Promise((ok, fail) => {
    proc.once('message', (info) => ok({ proc, info: info as Record<string, unknown> }));
    proc.once('exit', (code) => fail(new Error(`${role.role} exited with ${code}`)));
  });
}

/** One request on a fresh connection; resolves when the whole response body has arrived. */
function get(options: RequestOptions, secure = false): Promise<void> {
  return new Promise((resolve, reject) => {
    // createConnection only counts without an agent; a fresh connection per request either way.
    const opts = options.createConnection ? options : { ...options, agent: false };
    const req = (secure ? httpsRequest : httpRequest)(opts, (res) => {
      res.resume();
      res.on('end', () =>
        res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`)),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/** CONNECT through a proxy socket, TLS inside (trusting `ca`), then one HTTPS request. */
function getThroughTunnel(socketPath: string, port: number, ca: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const raw = connect(socketPath);
    raw.on('error', reject);
    raw.write(`CONNECT ${NAME}:${port} HTTP/1.1\r\nHost: ${NAME}:${port}\r\n\r\n`);
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      raw.off('data', onData);
      if (!head.startsWith('HTTP/1.1 200')) {
        reject(new Error(head.split('\r\n')[0]));
        return;
      }
      const socket = tlsConnect({ socket: raw, servername: NAME, ca, ALPNProtocols: ['http/1.1'] });
      socket.on('error', reject);
      get({ createConnection: () => socket, host: NAME, path: '/', headers: { connection: 'close' } }, true)
        .then(resolve, reject)
        .finally(() => socket.destroy());
    };
    raw.on('data', onData);
  });
}

async function throughput(run: () => Promise<void>, inFlight: number, ms: number): Promise<number> {
  let done = 0;
  const until = performance.now() + ms;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < until) {
        await run();
        done++;
      }
    }),
  );
  return done / (ms / 1000);
}

/** Host memory of one idle proxy: RSS of a process holding `count` proxies minus one holding none. */
async function memoryPerProxy(dir: string, count: number): Promise<number> {
  const rss = async (n: number): Promise<number> => {
    const { proc, info } = await start({ role: 'memory', dir, count: n });
    proc.kill();
    return Number(info.rss);
  };
  const empty = await rss(0);
  return (await rss(count)) - empty;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ironcage-bench-egress-'));
  const socketPath = join(dir, 'egress.sock');
  const children: ChildProcess[] = [];
  try {
    const upstream = await start({ role: 'upstream', dir });
    children.push(upstream.proc);
    const { httpPort, httpsPort } = upstream.info as { httpPort: number; httpsPort: number };
    const upstreamCa = String(upstream.info.caPem);
    const proxy = await start({ role: 'proxy', dir, socketPath, upstreamCa });
    children.push(proxy.proc);
    const ironcageCa = String(proxy.info.caPem);
    const direct = { host: '127.0.0.1', servername: NAME, ca: upstreamCa };
    const groups: { title: string; variants: [string, () => Promise<void>][] }[] = [
      {
        title: 'HTTPS (new TLS connection per request)',
        variants: [
          ['direct', () => get({ ...direct, port: httpsPort, path: '/' }, true)],
          ['opaque CONNECT tunnel (SNI checked)', () => getThroughTunnel(socketPath, httpsPort, upstreamCa)],
          [
            'intercepted (TLS terminated, re-encrypted)',
            () => getThroughTunnel(`${socketPath}.intercept`, httpsPort, ironcageCa),
          ],
        ],
      },
      {
        title: 'plain HTTP (new TCP connection per request)',
        variants: [
          ['direct', () => get({ host: '127.0.0.1', port: httpPort, path: '/' })],
          ['HTTP forward proxy', () => get({ socketPath, path: `http://${NAME}:${httpPort}/` })],
        ],
      },
    ];
    for (const group of groups) {
      const samples = group.variants.map(() => [] as number[]);
      for (const [, run] of group.variants) for (let i = 0; i < 20; i++) await run(); // warm up (leaf cache too)
      for (let i = 0; i < RUNS; i++) {
        for (const [k, [, run]] of group.variants.entries()) {
          const t0 = performance.now();
          await run();
          samples[k]?.push(performance.now() - t0);
        }
      }
      const rates: number[] = [];
      for (const [, run] of group.variants) rates.push(await throughput(run, 16, 3000));
      const base = quantile(samples[0] ?? [], 0.5);
      table(
        `Egress proxy, ${group.title}, 1 KiB body, ${RUNS} runs; req/s with 16 in flight; 2 cores`,
        ['path', 'p50 ms', 'p99 ms', 'added p50 ms', 'added p99 ms', 'req/s', '% of direct'],
        group.variants.map(([name], k) => {
          const xs = samples[k] ?? [];
          return [
            name,
            quantile(xs, 0.5),
            quantile(xs, 0.99),
            quantile(xs, 0.5) - base,
            quantile(xs, 0.99) - quantile(samples[0] ?? [], 0.99),
            (rates[k] ?? 0).toFixed(0),
            `${(((rates[k] ?? 0) / (rates[0] ?? 1)) * 100).toFixed(0)} %`,
          ];
        }),
      );
    }
    const count = 500;
    const grown = await memoryPerProxy(dir, count);
    table(
      `Host memory per idle sandbox proxy (${count} proxies in one process vs none)`,
      ['measure', 'value'],
      [
        ['RSS growth, total', `${(grown / 1024 / 1024).toFixed(1)} MiB`],
        ['per proxy', `${(grown / 1024 / count).toFixed(1)} KiB`],
      ],
    );
  } finally {
    for (const c of children) c.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

const arg = process.argv[2];
if (arg?.startsWith('{')) await child(JSON.parse(arg) as Role);
else await main();
