/**
 * Shared helpers for the HTTP server tests (not a test file): a real server (real SandboxManager, SQLite store
 * and egress services in a temporary state directory) listening on 127.0.0.1:0, and a small fetch wrapper.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { type EgressServices, openEgressServices } from '../../src/egress/services.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { type AppOptions, buildApp, type ReconcileReport } from '../../src/server/app.js';
import { ensureAdminKey } from '../../src/server/auth/admin-key.js';
import { createApiKey } from '../../src/server/auth/api-keys.js';
import { openSqliteStore } from '../../src/server/store/sqlite.js';
import type { KeyLimits, Scope, Store } from '../../src/server/store/types.js';
import { tempStateDir } from './sandbox-fixture.js';

export interface TestServer {
  url: string;
  app: FastifyInstance;
  store: Store;
  manager: SandboxManager;
  services: EgressServices;
  stateDir: string;
  adminKey: string;
  reconciled: ReconcileReport;
  /** A new key with these scopes (and limits). */
  newKey(scopes: Scope[], limits?: Partial<KeyLimits>): Promise<{ key: string; id: string }>;
  /** Closes the app, the manager (keeping sandboxes when asked) and the store. */
  close(options?: { keep?: boolean }): Promise<void>;
}

/** A state directory for a server (created; root: 0711 so sandboxes' bwrap can traverse it). */
export function serverStateDir(prefix: string): { dir: string; cleanup(): void } {
  const state = tempStateDir(prefix);
  mkdirSync(state.dir, { mode: 0o711 });
  return state;
}

export async function startServer(
  stateDir: string,
  options: { adminKey?: string; app?: AppOptions } = {},
): Promise<TestServer> {
  const store = openSqliteStore(join(stateDir, 'ironcage.db'));
  const services = await openEgressServices(stateDir);
  const manager = new SandboxManager({
    stateDir: join(stateDir, 'sandboxes'),
    onStartup: 'adopt',
    egress: services,
    quotaCheckMs: 0,
  });
  await manager.start();
  let adminKey = options.adminKey;
  if (adminKey === undefined) {
    const admin = await ensureAdminKey(store, stateDir, {});
    if (!admin.created || admin.source !== 'file') throw new Error('expected a fresh admin key');
    adminKey = admin.key;
  }
  const { app, reconciled } = await buildApp({
    manager,
    store,
    services,
    options: options.app ?? {},
  });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  let closed = false;
  return {
    url: address,
    app,
    store,
    manager,
    services,
    stateDir,
    adminKey,
    reconciled,
    async newKey(scopes, limits = {}) {
      const created = await createApiKey(store, { name: `test ${scopes.join('+')}`, scopes, limits });
      return { key: created.key, id: created.record.id };
    },
    async close({ keep = false } = {}) {
      if (closed) return;
      closed = true;
      await app.close();
      await manager.close({ keep });
      await store.close();
    },
  };
}

/** Response JSON as the tests read it: assertions walk arbitrary shapes, and a wrong guess fails the test. */
// biome-ignore lint/suspicious/noExplicitAny: see above
export type Json = any;

export interface ApiResponse {
  status: number;
  headers: Headers;
  text: string;
  /** Parsed body when it is JSON, else undefined. */
  json: Json;
}

export interface RequestOptions {
  key?: string;
  body?: unknown;
  /** Sent as is (no JSON encoding). */
  raw?: string | Uint8Array;
  headers?: Record<string, string>;
}

export async function request(
  server: { url: string },
  method: string,
  path: string,
  options: RequestOptions = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`;
  let body: string | Uint8Array | undefined;
  if (options.raw !== undefined) body = options.raw;
  else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const buf = Buffer.from(await res.arrayBuffer());
  const text = buf.toString('utf8');
  let json: unknown;
  if ((res.headers.get('content-type') ?? '').includes('application/json')) {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** Parses an NDJSON body into its lines. */
export function ndjsonLines(text: string): Record<string, Json>[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, Json>);
}

/** stdout (or stderr) bytes of NDJSON output lines, decoded. */
export function streamText(lines: Record<string, Json>[], type: 'stdout' | 'stderr'): string {
  return Buffer.concat(
    lines.filter((l) => l.type === type).map((l) => Buffer.from(l.data as string, 'base64')),
  ).toString('utf8');
}

/** What the unmodified `e2b` packages need to reach `server` (its E2B planes and admin key). */
export function e2bConnection(server: TestServer, requestTimeoutMs = 30_000) {
  return {
    apiKey: server.adminKey,
    apiUrl: `${server.url}/e2b`,
    sandboxUrl: `${server.url}/e2b/envd`,
    requestTimeoutMs,
  };
}

/**
 * Skip reason for tests that count the agent's inotify watches: its /proc/<pid>/fd is readable only by root (the
 * agent runs in the sandbox's user namespace and is not dumpable).
 */
export const WATCH_COUNT_SKIP: string | false =
  process.getuid?.() === 0 ? false : "counting the agent's inotify watches needs root (/proc/<pid>/fd)";

/** inotify watches (wds) the process holds, read from /proc/<pid>/fdinfo (0 when it has no inotify fd). */
export function inotifyWatches(pid: number): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = '';
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (target !== 'anon_inode:inotify') continue;
    const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    count += info.split('\n').filter((line) => line.startsWith('inotify wd:')).length;
  }
  return count;
}

/** Polls `check` every 20 ms; throws naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The bundled CLI, exactly what `ironcage serve` runs once installed. */
export const BUNDLED_CLI = fileURLToPath(new URL('../../bin/main.js', import.meta.url));

export interface ServeProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exit: Promise<number | null>;
}

const serveProcesses = new Set<ChildProcess>();

/**
 * `ironcage serve --port 0 --state-dir DIR --log-level warn ARGS` from the bundled CLI. The admin key and
 * database variables of this process are never inherited; `env` adds to the rest.
 */
export function spawnServe(stateDir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): ServeProcess {
  const { IRONCAGE_ADMIN_KEY: _key, IRONCAGE_DATABASE_URL: _database, ...inherited } = process.env;
  const child = spawn(
    process.execPath,
    [BUNDLED_CLI, 'serve', '--port', '0', '--state-dir', stateDir, '--log-level', 'warn', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...inherited, ...env } },
  );
  serveProcesses.add(child);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exit };
}

/** spawnServe, resolved once the server listens (with its URL). */
export async function startServe(
  stateDir: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<ServeProcess & { url: string }> {
  const serve = spawnServe(stateDir, args, env);
  for (let i = 0; i < 400; i++) {
    const match = /listening on (http:\/\/\S+)/.exec(serve.stdout());
    if (match) return { ...serve, url: match[1] as string };
    if (serve.child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`serve did not start: ${serve.stdout()} ${serve.stderr()}`);
}

/** SIGKILLs every serve process a test left running (for `after`). */
export function killServeProcesses(): void {
  for (const child of serveProcesses) if (child.exitCode === null) child.kill('SIGKILL');
  serveProcesses.clear();
}
