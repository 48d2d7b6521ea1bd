/**
 * What only the PostgreSQL store has to prove, on a real PostgreSQL 15 started here: concurrency (ownerLimit
 * across connections, concurrent migrations), its migration table, URL handling that never shows a password,
 * surviving dropped connections, and `ironcage serve --database` keeping state across a restart. The
 * behaviour both backends share is the contract suite in server-store.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import {
  type Migration,
  openPostgresStore,
  openStore,
  POSTGRES_MIGRATIONS,
  redactDatabaseUrl,
  type Store,
  StoreError,
} from '../../src/server/store/index.js';
import { ADVISORY_LOCKS } from '../../src/server/store/postgres.js';
import { type PostgresServer, postgresSkip, startPostgres } from './postgres-fixture.js';
import { killServeProcesses, request, serverStateDir, spawnServe, startServe } from './server-fixture.js';

const DATABASE = 'pg_specific';
let server: PostgresServer;

function randomHash(): string {
  return createHash('sha256').update(randomBytes(32)).digest('hex');
}

function addKey(store: Store, id: string) {
  return store.insertApiKey({ id, name: id, prefix: 'ick_test', hash: randomHash(), scopes: ['sandbox'] });
}

function storeError(code: string, check: (message: string) => boolean = () => true) {
  return (error: unknown) => error instanceof StoreError && error.code === code && check(error.message);
}

/** A port nothing listens on (bound, then released). */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject()));
    });
  });
}

async function versions(schema: string): Promise<number[]> {
  const rows = (await server.query(DATABASE, `SELECT version FROM ${schema}.schema_migrations ORDER BY 1`))
    .rows as { version: number }[];
  return rows.map((r) => r.version);
}

describe('PostgreSQL store', { skip: postgresSkip() }, () => {
  before(async () => {
    server = await startPostgres();
    // A database whose default collation is not bytewise (ICU en-US sorts "a" before "B"), to prove the
    // store orders like SQLite whatever the database's locale.
    await server.query(
      'postgres',
      `CREATE DATABASE ${DATABASE} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`,
    );
  });
  after(() => server?.stop());

  async function fresh(t: { after(fn: () => unknown): void }, options = {}) {
    const { url, schema } = await server.freshSchema(DATABASE);
    const store = await openPostgresStore(url, options);
    t.after(() => store.close());
    return { store, url, schema };
  }

  describe('concurrency', () => {
    test('ownerLimit holds across connections: 20 parallel inserts per owner, limit 5, exactly 5 each', async (t) => {
      const { store } = await fresh(t, { maxConnections: 20 });
      await addKey(store, 'key_a');
      await addKey(store, 'key_b');
      const attempts = ['key_a', 'key_b'].flatMap((owner) =>
        Array.from({ length: 20 }, (_, i) =>
          store.recordSandbox({ sandboxId: `${owner}-s${i}`, ownerKeyId: owner }, { ownerLimit: 5 }),
        ),
      );
      const results = await Promise.allSettled(attempts);
      const refused = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      assert.equal(results.length - refused.length, 10);
      for (const r of refused) assert.ok(storeError('LIMIT_REACHED')(r.reason), String(r.reason));
      assert.equal(await store.countSandboxes('key_a'), 5);
      assert.equal(await store.countSandboxes('key_b'), 5);
    });

    test('ids become visible in id order: an insert waits while an earlier one is uncommitted', async (t) => {
      const { store, url } = await fresh(t);
      await addKey(store, 'key_a');
      // Another server mid-insert: it holds the insert lock, as the store does, and has its id but no commit.
      const other = new pg.Client({ connectionString: url });
      await other.connect();
      try {
        await other.query('BEGIN');
        for (const lock of [ADVISORY_LOCKS.auditInsert, ADVISORY_LOCKS.sandboxInsert]) {
          await other.query('SELECT pg_advisory_xact_lock($1, $2)', [ADVISORY_LOCKS.class, lock]);
        }
        await other.query(
          "INSERT INTO audit_events (time, type, payload) VALUES ('2025-01-01T00:00:00.000Z', 'x', '{}')",
        );
        await other.query(
          "INSERT INTO sandboxes (sandbox_id, owner_key_id, created_at, metadata) VALUES ('early', 'key_a', '2025-01-01T00:00:00.000Z', '{}')",
        );
        const settled: string[] = [];
        const event = store.appendAuditEvent({ type: 'y' }).finally(() => settled.push('event'));
        const sandbox = store
          .recordSandbox({ sandboxId: 'late', ownerKeyId: 'key_a' })
          .finally(() => settled.push('sandbox'));
        await new Promise((resolve) => setTimeout(resolve, 300));
        // Had the later inserts committed, a reader would page past the earlier ids and never see them.
        assert.deepEqual(settled, []);
        assert.deepEqual((await store.listAuditEvents()).events, []);
        assert.deepEqual((await store.listSandboxes()).items, []);
        await other.query('COMMIT');
        assert.equal((await event).id, 2);
        await sandbox;
        assert.deepEqual(
          (await store.listAuditEvents()).events.map((e) => [e.id, e.type]),
          [
            [1, 'x'],
            [2, 'y'],
          ],
        );
        assert.deepEqual(
          (await store.listSandboxes()).items.map((s) => s.sandboxId),
          ['early', 'late'],
        );
      } finally {
        // Ends the session, releasing its locks even when an assertion failed mid-transaction.
        await other.end();
      }
    });

    test('concurrent opens of a fresh database migrate it once', async () => {
      const { url, schema } = await server.freshSchema(DATABASE);
      const stores = await Promise.all(Array.from({ length: 4 }, () => openPostgresStore(url)));
      try {
        assert.deepEqual(
          await versions(schema),
          POSTGRES_MIGRATIONS.map((m) => m.version),
        );
        await addKey(stores[0] as Store, 'key_a');
        for (const store of stores) assert.equal((await store.getApiKey('key_a'))?.id, 'key_a');
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    });

    test('connections the server drops are replaced: no crash, the next call works', async (t) => {
      const { store } = await fresh(t);
      await addKey(store, 'key_a');
      const killed = await server.query(
        DATABASE,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ironcage' AND pid <> pg_backend_pid()",
      );
      assert.ok(killed.rowCount && killed.rowCount > 0, 'the store had an idle connection to drop');
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal((await store.getApiKey('key_a'))?.id, 'key_a');
    });
  });

  describe('schema', () => {
    test('bytewise order whatever the database collation (ids, names, as SQLite)', async (t) => {
      const { store } = await fresh(t, { now: () => new Date('2025-01-01T00:00:00Z') });
      for (const id of ['key_b', 'key_B', 'key_a', 'key_A']) await addKey(store, id);
      assert.deepEqual(
        (await store.listApiKeys()).map((k) => k.id),
        ['key_A', 'key_B', 'key_a', 'key_b'],
      );
      for (const name of ['beta', 'Zeta', 'alpha']) await store.putTemplate(name, {});
      assert.deepEqual(
        (await store.listTemplates()).map((x) => x.name),
        ['Zeta', 'alpha', 'beta'],
      );
    });

    test('a later migration is applied to an existing database, keeping its data', async () => {
      const { url, schema } = await server.freshSchema(DATABASE);
      const v1 = await openPostgresStore(url);
      await addKey(v1, 'key_a');
      await v1.close();
      const migrations: Migration[] = [
        ...POSTGRES_MIGRATIONS,
        { version: 2, name: 'test-extra', sql: 'ALTER TABLE api_keys ADD COLUMN note TEXT' },
      ];
      const v2 = await openPostgresStore(url, { migrations });
      assert.equal((await v2.getApiKey('key_a'))?.name, 'key_a');
      await v2.close();
      assert.deepEqual(await versions(schema), [1, 2]);
    });

    test('a failing migration rolls back entirely', async () => {
      const { url, schema } = await server.freshSchema(DATABASE);
      await (await openPostgresStore(url)).close();
      const migrations: Migration[] = [
        ...POSTGRES_MIGRATIONS,
        { version: 2, name: 'broken', sql: 'CREATE TABLE half_done (a TEXT); SELECT * FROM no_such_table;' },
      ];
      await assert.rejects(
        openPostgresStore(url, { migrations }),
        storeError('OPEN_FAILED', (m) => /no_such_table/.test(m)),
      );
      assert.deepEqual(await versions(schema), [1]);
      const half = await server.query(
        DATABASE,
        'SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2',
        [schema, 'half_done'],
      );
      assert.equal(half.rowCount, 0);
    });

    test('a database migrated further by a newer ironcage, or differently, is refused untouched', async () => {
      const { url, schema } = await server.freshSchema(DATABASE);
      await (await openPostgresStore(url)).close();
      await server.query(
        DATABASE,
        `INSERT INTO ${schema}.schema_migrations VALUES (99, 'from-the-future', '2031-01-01T00:00:00.000Z')`,
      );
      await assert.rejects(
        openPostgresStore(url),
        storeError(
          'SCHEMA_TOO_NEW',
          (m) => /schema version 99/.test(m) && /up to 1/.test(m) && !m.includes(server.password),
        ),
      );
      assert.deepEqual(await versions(schema), [1, 99]);
      await server.query(DATABASE, `DELETE FROM ${schema}.schema_migrations WHERE version = 99`);
      await server.query(DATABASE, `UPDATE ${schema}.schema_migrations SET name = 'something-else'`);
      await assert.rejects(openPostgresStore(url), storeError('SCHEMA_MISMATCH'));
    });

    test('ids beyond any stored one page like SQLite: nothing after them, everything before', async (t) => {
      const { store } = await fresh(t);
      const event = await store.appendAuditEvent({ type: 'x' });
      assert.deepEqual((await store.listAuditEvents({ after: 1e300 })).events, []);
      assert.deepEqual((await store.listAuditEvents({ after: 1e300, order: 'desc' })).events, [event]);
    });
  });

  describe('URLs and connection errors never show the password', () => {
    test('a URL that is not PostgreSQL is refused, echoing only its scheme', async () => {
      await assert.rejects(
        openStore({ database: 'mysql://root:hunter2@db/x', stateDir: '/nonexistent' }),
        storeError('INVALID_INPUT', (m) => m.includes('"mysql:"') && !m.includes('hunter2')),
      );
      await assert.rejects(
        openStore({ database: 'hunter2@somewhere', stateDir: '/nonexistent' }),
        storeError('INVALID_INPUT', (m) => /no URL scheme/.test(m) && !m.includes('hunter2')),
      );
      await assert.rejects(
        openPostgresStore('postgres://u:hunter2@[::1/db'),
        storeError('INVALID_INPUT', (m) => !m.includes('hunter2')),
      );
    });

    test('redaction drops the password and secret parameters, keeps the rest', () => {
      assert.equal(
        redactDatabaseUrl('postgresql://app:s3cr%40t@db.internal:6432/ironcage?sslmode=require&password=x2'),
        'postgresql://app@db.internal:6432/ironcage?sslmode=require',
      );
    });

    test('an unreachable server: OPEN_FAILED naming the redacted URL and the reason', async () => {
      const port = await closedPort();
      const url = server.url(DATABASE, { port });
      await assert.rejects(openPostgresStore(url), (error: unknown) => {
        const m = (error as Error).message;
        assert.ok(storeError('OPEN_FAILED')(error), String(error));
        assert.equal(
          m.startsWith(`cannot connect to postgres://postgres@127.0.0.1:${port}/${DATABASE}: `),
          true,
          m,
        );
        assert.match(m, /ECONNREFUSED/);
        assert.ok(!m.includes(server.password) && !m.includes(encodeURIComponent(server.password)), m);
        return true;
      });
    });

    test('a wrong password or a missing database: OPEN_FAILED with the server reason, no password', async () => {
      const wrong = `wrong-${randomBytes(6).toString('hex')}`;
      await assert.rejects(
        openPostgresStore(server.url(DATABASE, { password: wrong })),
        storeError(
          'OPEN_FAILED',
          (m) =>
            /password authentication failed/.test(m) && !m.includes(wrong) && !m.includes(server.password),
        ),
      );
      await assert.rejects(
        openPostgresStore(server.url('no_such_db')),
        storeError(
          'OPEN_FAILED',
          (m) => /no_such_db" does not exist/.test(m) && !m.includes(server.password),
        ),
      );
    });

    test('openStore: SQLite by default, PostgreSQL for postgres:// and postgresql://', async (t) => {
      const state = serverStateDir('pg-open');
      t.after(() => state.cleanup());
      const sqlite = await openStore({ stateDir: state.dir });
      assert.equal(sqlite.kind, 'sqlite');
      await sqlite.close();
      assert.ok(existsSync(`${state.dir}/ironcage.db`));
      const { url } = await server.freshSchema(DATABASE);
      for (const database of [url, url.replace(/^postgres:/, 'postgresql:')]) {
        const store = await openStore({ database, stateDir: state.dir });
        assert.equal(store.kind, 'postgres');
        await store.close();
      }
    });
  });

  describe('ironcage serve --database', () => {
    after(killServeProcesses);

    test('keys and sandbox ownership live in PostgreSQL and survive a restart', async (t) => {
      const state = serverStateDir('pg-serve');
      t.after(() => state.cleanup());
      const { url: database } = await server.freshSchema(DATABASE);

      const first = await startServe(state.dir, ['--database', database]);
      const admin = /\n {2}(ick_[0-9A-Za-z]{43})\n/.exec(first.stdout())?.[1];
      assert.ok(admin, first.stdout());
      const tenant = await request(first, 'POST', '/v1/keys', {
        key: admin,
        body: { name: 'tenant', scopes: ['sandbox'] },
      });
      assert.equal(tenant.status, 201, tenant.text);
      const created = await request(first, 'POST', '/v1/sandboxes', {
        key: tenant.json.key,
        body: { timeoutMs: 120_000 },
      });
      assert.equal(created.status, 201, created.text);
      first.child.kill('SIGTERM');
      assert.equal(await first.exit, 0);
      assert.ok(!existsSync(`${state.dir}/ironcage.db`), 'no SQLite file: the store is PostgreSQL');

      // Second start: the URL from the environment this time.
      const second = await startServe(state.dir, [], { IRONCAGE_DATABASE_URL: database });
      assert.ok(!second.stdout().includes('ick_'), 'the admin key is found in PostgreSQL, not created again');
      const keys = await request(second, 'GET', '/v1/keys', { key: admin });
      assert.equal(keys.status, 200, keys.text);
      assert.deepEqual(
        keys.json.keys.map((k: { name: string }) => k.name),
        ['admin (first run)', 'tenant'],
      );
      // The tenant still owns its sandbox (another key's sandbox would be a 404).
      const got = await request(second, 'GET', `/v1/sandboxes/${created.json.id}`, { key: tenant.json.key });
      assert.equal(got.status, 200, got.text);
      assert.equal(got.json.state, 'running');
      const removed = await request(second, 'DELETE', `/v1/sandboxes/${created.json.id}`, {
        key: tenant.json.key,
      });
      assert.equal(removed.status, 200, removed.text);
      second.child.kill('SIGINT');
      assert.equal(await second.exit, 0);
    });

    test('a bad --database fails the start with a clear message and no password', async (t) => {
      const state = serverStateDir('pg-serve-bad');
      t.after(() => state.cleanup());
      const port = await closedPort();
      const serve = spawnServe(state.dir, ['--database', server.url(DATABASE, { port })]);
      const code = await serve.exit;
      const err = serve.stderr();
      assert.equal(code, 1, err);
      assert.match(
        err,
        /ironcage serve: cannot connect to postgres:\/\/postgres@127\.0\.0\.1:\d+\/pg_specific: /,
      );
      assert.ok(!err.includes(server.password) && !err.includes(encodeURIComponent(server.password)), err);
    });
  });
});
