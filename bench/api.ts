/**
 * Control-plane benchmark: create→ready and exec of `true` through the SDK over loopback HTTP against
 * `ironcage serve` (its own process, as deployed), with the in-process library as the baseline measured in the
 * same run; then requests per second with 16 concurrent clients.
 *   node dist/bench/api.js
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SandboxManager } from '../src/sandbox/manager.js';
import type { Sandbox as LibrarySandbox } from '../src/sandbox/sandbox.js';
import { Sandbox } from '../src/sdk/index.js';
import { quantile, table } from './lib.js';

const CREATES = 30;
const EXECS = 300;
const CLIENTS = 16;
const SECONDS = 5;
const ms = (t0: number) => performance.now() - t0;

function stateDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `ironcage-bench-${name}-`));
  chmodSync(dir, 0o711); // sandboxes' bwrap (host uid 65534 as root) must traverse it
  return dir;
}

/** `ironcage serve` from the bundled CLI on a free port; resolves with its URL once it listens. */
function startServer(dir: string): Promise<{ proc: ChildProcess; url: string }> {
  const cli = fileURLToPath(new URL('../bin/main.js', import.meta.url));
  const proc = spawn(
    process.execPath,
    [cli, 'serve', '--port', '0', '--state-dir', dir, '--log-level', 'warn'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const url = /listening on (http:\/\/\S+)/.exec(out)?.[1];
      if (url) resolve({ proc, url });
    });
    proc.once('exit', (code) => reject(new Error(`ironcage serve exited with ${code}`)));
  });
}

/** A table row: p50 and p99 of both paths, and what the SDK adds at the median. */
function row(operation: string, ms: { library: number[]; sdk: number[] }): (string | number)[] {
  const p50 = { library: quantile(ms.library, 0.5), sdk: quantile(ms.sdk, 0.5) };
  return [
    operation,
    p50.library,
    quantile(ms.library, 0.99),
    p50.sdk,
    quantile(ms.sdk, 0.99),
    p50.sdk - p50.library,
  ];
}

async function concurrentRate(run: () => Promise<void>): Promise<number> {
  let done = 0;
  const until = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (performance.now() < until) {
        await run();
        done++;
      }
    }),
  );
  return done / SECONDS;
}

const serverDir = stateDir('api');
const libraryDir = stateDir('lib');
const server = await startServer(serverDir);
const connection = { apiUrl: server.url, apiKey: readFileSync(join(serverDir, 'admin-key'), 'utf8').trim() };
const manager = new SandboxManager({ stateDir: join(libraryDir, 'sandboxes'), onStartup: 'reap' });
await manager.start();
try {
  const created = { library: [] as number[], sdk: [] as number[] };
  for (let i = 0; i < CREATES; i++) {
    let t0 = performance.now();
    const local: LibrarySandbox = await manager.create({ timeoutMs: null });
    created.library.push(ms(t0));
    await local.kill();
    t0 = performance.now();
    const remote = await Sandbox.create({ ...connection, timeoutMs: null });
    created.sdk.push(ms(t0));
    await remote.kill();
  }
  const local = await manager.create({ timeoutMs: null });
  const remote = await Sandbox.create({ ...connection, timeoutMs: null });
  const execs = { library: [] as number[], sdk: [] as number[] };
  for (let i = 0; i < 20; i++) {
    await local.commands.run(['true']);
    await remote.commands.run(['true']);
  }
  for (let i = 0; i < EXECS; i++) {
    let t0 = performance.now();
    await local.commands.run(['true']);
    execs.library.push(ms(t0));
    t0 = performance.now();
    await remote.commands.run(['true']);
    execs.sdk.push(ms(t0));
  }
  table(
    `Control plane: SDK over loopback HTTP (ironcage serve in its own process) vs the in-process library (${CREATES} creates, ${EXECS} execs)`,
    ['operation', 'library p50 ms', 'library p99 ms', 'SDK p50 ms', 'SDK p99 ms', 'added p50 ms'],
    [row('create → ready', created), row('exec `true`', execs)],
  );
  const libraryRate = await concurrentRate(async () => {
    await local.commands.run(['true']);
  });
  const sdkRate = await concurrentRate(async () => {
    await remote.commands.run(['true']);
  });
  table(
    `exec \`true\` in one sandbox, ${CLIENTS} concurrent clients for ${SECONDS} s`,
    ['path', 'execs/s', '% of library'],
    [
      ['in-process library', libraryRate.toFixed(0), '100 %'],
      ['SDK → ironcage serve', sdkRate.toFixed(0), `${((sdkRate / libraryRate) * 100).toFixed(0)} %`],
    ],
  );
  await local.kill();
  await remote.kill();
} finally {
  await manager.close();
  server.proc.kill('SIGTERM');
  await new Promise((r) => server.proc.once('exit', r));
  rmSync(serverDir, { recursive: true, force: true });
  rmSync(libraryDir, { recursive: true, force: true });
}
