/**
 * A real PostgreSQL 15 for the store tests (not a test file): a throwaway cluster initdb'd into a fresh temp
 * dir, listening on a unix socket in that dir and on 127.0.0.1 at a free port (password auth over TCP, so the
 * store's URL handling is exercised for real). It never touches a system cluster ("main" of the Debian
 * package): own data dir, own port, own socket dir. Stopped and removed by stop(), and at process exit.
 *
 * As root, initdb and postgres refuse to run, so they run as the `postgres` user (spawn's uid/gid: the server
 * stays our direct child, which stop() can signal without a wrapper process in between).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** Where the PostgreSQL 15 binaries are (override: $IRONCAGE_TEST_PG_BIN). */
export const PG_BIN = process.env.IRONCAGE_TEST_PG_BIN ?? '/usr/lib/postgresql/15/bin';
const USER = 'postgres';

export interface PostgresServer {
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** The unix socket directory (trust auth; the fixture's own admin connections use it). */
  readonly socketDir: string;
  /** A TCP URL with the password, for `database` (which must exist). */
  url(database: string, options?: { password?: string; port?: number; query?: string }): string;
  /** CREATE DATABASE; returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** A new empty schema in `database`, and a URL whose connections use it (search_path): one per test. */
  freshSchema(database: string): Promise<{ url: string; schema: string }>;
  /** Runs SQL as the superuser over the socket. */
  query(database: string, sql: string, params?: unknown[]): Promise<pg.QueryResult>;
  /** Stops the server (fast shutdown) and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

/**
 * The `skip` option for PostgreSQL suites: a reason when the binaries are missing, so a developer without
 * them still runs the rest; false in CI (CI=true), where startPostgres then fails the suite with the reason.
 */
export function postgresSkip(): string | false {
  const missing = missingBinaries();
  if (missing === null || process.env.CI === 'true') return false;
  return missing;
}

function missingBinaries(): string | null {
  for (const tool of ['initdb', 'postgres']) {
    if (!existsSync(join(PG_BIN, tool))) {
      return `PostgreSQL 15 is not installed (${join(PG_BIN, tool)} missing): apt-get install postgresql-15, or set IRONCAGE_TEST_PG_BIN`;
    }
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function idOf(flag: '-u' | '-g'): number {
  return Number(execFileSync('id', [flag, USER], { encoding: 'utf8' }).trim());
}

let sequence = 0;

export async function startPostgres(): Promise<PostgresServer> {
  const missing = missingBinaries();
  if (missing !== null) throw new Error(missing);
  const version = execFileSync(join(PG_BIN, 'postgres'), ['--version'], { encoding: 'utf8' });
  if (!/\b15\.\d+/.test(version)) throw new Error(`expected PostgreSQL 15 at ${PG_BIN}, found: ${version}`);

  const dir = mkdtempSync(join(tmpdir(), 'ironcage-pg-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  const owner = asRoot ? { uid: idOf('-u'), gid: idOf('-g') } : {};
  let child: ChildProcess | null = null;
  let stopped = false;

  const removeNow = () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      // Immediate shutdown: the process is exiting and cannot wait for a clean one.
      child.kill('SIGQUIT');
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', removeNow);
  // A test run cancelled by a signal skips 'exit' handlers: clean up, then die of the signal as before.
  const onSignal = (signal: NodeJS.Signals) => {
    removeNow();
    process.kill(process.pid, signal);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, onSignal);
  const forget = () => {
    process.removeListener('exit', removeNow);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeListener(signal, onSignal);
  };

  const password = `p@ss/${randomBytes(12).toString('hex')}`;
  const port = await freePort();
  let log = '';
  try {
    if (asRoot) chownSync(dir, owner.uid as number, owner.gid as number);
    chmodSync(dir, 0o700);
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (asRoot) chownSync(pwfile, owner.uid as number, owner.gid as number);
    execFileSync(
      join(PG_BIN, 'initdb'),
      [
        '-D',
        data,
        '-U',
        USER,
        `--pwfile=${pwfile}`,
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C.UTF-8',
        '--no-sync',
        '--no-instructions',
      ],
      { ...owner, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    rmSync(pwfile);
    child = spawn(
      join(PG_BIN, 'postgres'),
      [
        '-D',
        data,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${dir}`,
        // Durability is irrelevant for a throwaway cluster; these make it start and commit fast.
        '-c',
        'fsync=off',
        '-c',
        'synchronous_commit=off',
        '-c',
        'full_page_writes=off',
        '-c',
        'max_connections=100',
        '-c',
        'shared_buffers=32MB',
      ],
      { ...owner, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const keep = (chunk: Buffer) => {
      log = `${log}${chunk.toString()}`.slice(-8000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    await waitReady(child, dir, port, () => log);
  } catch (error) {
    removeNow();
    forget();
    const detail = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`could not start PostgreSQL: ${(error as Error).message}\n${detail}${log}`);
  }
  const running = child;

  // One superuser connection per database, kept: a new PostgreSQL connection costs tens of ms here.
  const admins = new Map<string, Promise<pg.Client>>();
  const admin = (database: string) => {
    let client = admins.get(database);
    if (!client) {
      const created = new pg.Client({ host: dir, port, user: USER, database });
      created.on('error', () => {});
      client = created.connect().then(() => created);
      admins.set(database, client);
    }
    return client;
  };
  const query = async (database: string, sql: string, params: unknown[] = []) =>
    (await admin(database)).query(sql, params);
  const url: PostgresServer['url'] = (database, options = {}) =>
    `postgres://${USER}:${encodeURIComponent(options.password ?? password)}@127.0.0.1:${options.port ?? port}/${database}` +
    (options.query ? `?${options.query}` : '');

  return {
    port,
    user: USER,
    password,
    socketDir: dir,
    url,
    query,
    async createDatabase(name) {
      await query('postgres', `CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      return url(name);
    },
    async freshSchema(database) {
      const schema = `t${process.pid}_${sequence++}`;
      await query(database, `CREATE SCHEMA ${pg.escapeIdentifier(schema)}`);
      return {
        url: url(database, { query: `options=${encodeURIComponent(`-c search_path=${schema}`)}` }),
        schema,
      };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all([...admins.values()].map((c) => c.then((client) => client.end()).catch(() => {})));
      if (running.exitCode === null && running.signalCode === null) {
        const exited = new Promise((resolve) => running.once('exit', resolve));
        // Fast shutdown: ends client sessions instead of waiting for them to disconnect.
        running.kill('SIGINT');
        const timer = setTimeout(() => running.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
      forget();
    },
  };
}

async function waitReady(child: ChildProcess, dir: string, port: number, log: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`postgres exited (${child.exitCode ?? child.signalCode})`);
    }
    const client = new pg.Client({ host: dir, port, user: USER, database: 'postgres' });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (error) {
      await client.end().catch(() => {});
      if (Date.now() > deadline) {
        throw new Error(`postgres not ready after 30 s: ${(error as Error).message}\n${log()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
