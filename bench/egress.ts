/**
 * Egress proxy benchmark (host side, loopback only): added latency and throughput of the per-sandbox proxy
 * against a direct connection to the same local HTTP server, measured in the same run.
 *   node dist/bench/egress.js
 * Plain HTTP inside the CONNECT tunnel: an opaque tunnel costs the same whatever it carries (TLS interception is
 * not built yet). A fake resolver maps the benchmark's name to 127.0.0.1 (no DNS in the measurement).
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type RequestOptions, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEgressProxy } from '../src/egress/proxy.js';
import { quantile, table } from './lib.js';

const RUNS = 400;
const BODY = Buffer.alloc(1024, 'x');

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

/** One request on a fresh connection; resolves when the whole response body has arrived. */
function get(options: RequestOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ ...options, agent: false }, (res) => {
      res.resume();
      res.on('end', () =>
        res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`)),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/** CONNECT through the proxy's Unix socket, then one HTTP request inside the tunnel. */
function getThroughTunnel(socketPath: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(socketPath);
    let stage: 'connect' | 'response' = 'connect';
    let buffered = '';
    socket.on('error', reject);
    socket.on('connect', () =>
      socket.write(`CONNECT bench.test:${port} HTTP/1.1\r\nHost: bench.test:${port}\r\n\r\n`),
    );
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      if (stage === 'connect' && buffered.includes('\r\n\r\n')) {
        if (!buffered.startsWith('HTTP/1.1 200')) return reject(new Error(buffered.split('\r\n')[0]));
        stage = 'response';
        buffered = '';
        socket.write(`GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n`);
      }
    });
    socket.on('end', () => {
      if (stage === 'response' && buffered.startsWith('HTTP/1.1 200')) resolve();
      else reject(new Error('tunnel closed early'));
      socket.destroy();
    });
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

const server = createServer((_req, res) => res.end(BODY));
const port = await listen(server);
const dir = mkdtempSync(join(tmpdir(), 'ironcage-bench-egress-'));
const socketPath = join(dir, 'egress.sock');
const proxy = await startEgressProxy({
  socketPath,
  rules: { allow: ['bench.test'], allowPrivate: ['127.0.0.1'] },
  resolve: async () => ['127.0.0.1'], // a fake resolver: loopback only, no DNS in the numbers
});
try {
  const variants: [string, () => Promise<void>][] = [
    ['direct (new TCP connection per request)', () => get({ host: '127.0.0.1', port, path: '/' })],
    ['through the proxy: HTTP forward', () => get({ socketPath, path: `http://bench.test:${port}/` })],
    ['through the proxy: CONNECT tunnel', () => getThroughTunnel(socketPath, port)],
  ];
  const samples = new Map(variants.map(([name]) => [name, [] as number[]]));
  for (const [, run] of variants) for (let i = 0; i < 20; i++) await run(); // warm up
  for (let i = 0; i < RUNS; i++) {
    for (const [name, run] of variants) {
      const t0 = performance.now();
      await run();
      samples.get(name)?.push(performance.now() - t0);
    }
  }
  const direct = quantile(samples.get(variants[0]?.[0] ?? '') ?? [], 0.5);
  const rates: number[] = [];
  for (const [, run] of variants) rates.push(await throughput(run, 16, 3000));
  table(
    `Egress proxy on loopback: one 1 KiB HTTP request per fresh connection (${RUNS} runs; 16 in flight for req/s)`,
    ['path', 'p50 ms', 'p99 ms', 'added p50 ms', 'req/s', '% of direct'],
    variants.map(([name], i) => {
      const xs = samples.get(name) ?? [];
      const rate = rates[i] ?? 0;
      return [
        name,
        quantile(xs, 0.5),
        quantile(xs, 0.99),
        quantile(xs, 0.5) - direct,
        rate.toFixed(0),
        `${((rate / (rates[0] ?? 1)) * 100).toFixed(0)} %`,
      ];
    }),
  );
} finally {
  await proxy.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
}
