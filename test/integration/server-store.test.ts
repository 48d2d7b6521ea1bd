/**
 * The Store contract on both backends: every behaviour test runs against SQLite (real files in temp dirs) and
 * against a real PostgreSQL 15 started by this file (one schema per test). SQLite-only checks (its migration
 * table, WAL, file errors) follow; PostgreSQL-only ones are in server-postgres.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import {
  type Migration,
  openPostgresStore,
  openSqliteStore,
  type SandboxRecord,
  SQLITE_MIGRATIONS,
  type SqliteStoreOptions,
  type Store,
  StoreError,
} from '../../src/server/store/index.js';
import { type PostgresServer, postgresSkip, startPostgres } from './postgres-fixture.js';

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'ironcage-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openSqlite(t: TestContext, options?: SqliteStoreOptions): { store: Store; path: string } {
  const path = join(tempDir(t), 'ironcage.db');
  const store = openSqliteStore(path, options);
  t.after(() => store.close());
  return { store, path };
}

function randomHash(): string {
  return createHash('sha256').update(randomBytes(32)).digest('hex');
}

async function addKey(store: Store, id: string, scopes: ('admin' | 'sandbox')[] = ['sandbox']) {
  return store.insertApiKey({ id, name: id, prefix: `ick_${id.slice(0, 8)}`, hash: randomHash(), scopes });
}

function isStoreError(code: string) {
  return (error: unknown) => error instanceof StoreError && error.code === code;
}

/** A clock that advances one second per call, for distinct, predictable times. */
function steppingClock(start = Date.UTC(2025, 0, 1)): () => Date {
  let t = start;
  return () => {
    t += 1000;
    return new Date(t);
  };
}

/** One backend of the contract suite. */
interface Backend {
  readonly name: 'sqlite' | 'postgres';
  readonly skip: string | false;
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
  /** A new, empty place for a store: a file path (SQLite) or a URL of a fresh schema (PostgreSQL). */
  fresh(t: TestContext): Promise<string>;
  open(location: string, options?: { now?: () => Date }): Promise<Store>;
}

const sqliteBackend: Backend = {
  name: 'sqlite',
  skip: false,
  async fresh(t) {
    return join(tempDir(t), 'ironcage.db');
  },
  async open(location, options) {
    return openSqliteStore(location, options);
  },
};

let postgres: PostgresServer | undefined;
const PG_DATABASE = 'store_contract';
const postgresBackend: Backend = {
  name: 'postgres',
  skip: postgresSkip(),
  async setup() {
    postgres = await startPostgres();
    await postgres.createDatabase(PG_DATABASE);
  },
  async teardown() {
    await postgres?.stop();
  },
  async fresh() {
    assert.ok(postgres, 'PostgreSQL was started');
    return (await postgres.freshSchema(PG_DATABASE)).url;
  },
  async open(location, options) {
    return openPostgresStore(location, options);
  },
};

for (const backend of [sqliteBackend, postgresBackend]) {
  describe(`store contract on ${backend.name}`, { skip: backend.skip }, () => {
    if (backend.setup) before(() => backend.setup?.());
    if (backend.teardown) after(() => backend.teardown?.());
    contract(backend);
  });
}

function contract(backend: Backend): void {
  /** A fresh store, closed after the test. */
  async function open(t: TestContext, options?: { now?: () => Date }) {
    const location = await backend.fresh(t);
    const store = await backend.open(location, options);
    t.after(() => store.close());
    return { store, location };
  }

  describe('persistence', () => {
    test('reopening keeps keys, sandboxes, audit events and templates', async (t) => {
      const location = await backend.fresh(t);
      const first = await backend.open(location);
      await addKey(first, 'key_a');
      await first.revokeApiKey('key_a');
      await addKey(first, 'key_b', ['admin', 'sandbox']);
      await first.recordSandbox({
        sandboxId: 'sb-1',
        ownerKeyId: 'key_b',
        template: 'py',
        metadata: { team: 'x' },
      });
      await first.appendAuditEvent({
        type: 'sandbox.create',
        keyId: 'key_b',
        sandboxId: 'sb-1',
        payload: { n: 1 },
      });
      await first.putTemplate('py', { preset: 'default', nested: { list: [1, 'two', null] } });
      const before = {
        keys: await first.listApiKeys({ includeRevoked: true }),
        sandboxes: await first.listSandboxes(),
        audit: await first.listAuditEvents(),
        templates: await first.listTemplates(),
      };
      await first.close();
      const second = await backend.open(location);
      t.after(() => second.close());
      assert.deepEqual(
        {
          keys: await second.listApiKeys({ includeRevoked: true }),
          sandboxes: await second.listSandboxes(),
          audit: await second.listAuditEvents(),
          templates: await second.listTemplates(),
        },
        before,
      );
      assert.equal(before.keys.length, 2);
      assert.deepEqual(before.keys[1]?.scopes, ['admin', 'sandbox']);
      assert.equal(before.sandboxes.items.length, 1);
      assert.equal(before.audit.events.length, 1);
    });

    test('two stores on one database see each other (the CLI reading while the server writes)', async (t) => {
      const { store, location } = await open(t);
      const other = await backend.open(location);
      t.after(() => other.close());
      await addKey(store, 'key_a');
      assert.equal((await other.getApiKey('key_a'))?.id, 'key_a');
    });

    test('an unknown owner key is INVALID_INPUT naming it', async (t) => {
      const { store } = await open(t);
      await assert.rejects(
        store.recordSandbox({ sandboxId: 'sb1', ownerKeyId: 'key_nobody' }),
        (error: unknown) =>
          isStoreError('INVALID_INPUT')(error) && /owner key key_nobody/.test(String(error)),
      );
    });
  });

  describe('api keys', () => {
    test('insert, get, find by hash, list, revoke (idempotent)', async (t) => {
      const { store } = await open(t, { now: steppingClock() });
      const hash = randomHash();
      const record = await store.insertApiKey({
        id: 'key_1',
        name: 'ci',
        prefix: 'ick_abcdefgh',
        hash,
        scopes: ['sandbox', 'sandbox'],
        limits: { maxSandboxes: 3 },
      });
      assert.deepEqual(record, {
        id: 'key_1',
        name: 'ci',
        prefix: 'ick_abcdefgh',
        scopes: ['sandbox'],
        limits: { maxSandboxes: 3, requestsPerMinute: null },
        // The first tick went to the migration record.
        createdAt: '2025-01-01T00:00:02.000Z',
        revokedAt: null,
      });
      assert.ok(!('hash' in record));
      assert.deepEqual(await store.getApiKey('key_1'), record);
      assert.deepEqual(await store.findApiKeyByHash(hash), { ...record, hash });
      assert.equal(await store.findApiKeyByHash(randomHash()), null);
      await assert.rejects(
        store.insertApiKey({ id: 'key_2', name: 'dup', prefix: 'p', hash, scopes: ['admin'] }),
        isStoreError('CONFLICT'),
      );
      await assert.rejects(
        store.insertApiKey({ id: 'key_1', name: 'dup', prefix: 'p', hash: randomHash(), scopes: ['admin'] }),
        isStoreError('CONFLICT'),
      );
      const revoked = await store.revokeApiKey('key_1');
      // Ticks: migration, insert, two refused inserts, revoke.
      assert.equal(revoked.revokedAt, '2025-01-01T00:00:05.000Z');
      assert.equal((await store.revokeApiKey('key_1')).revokedAt, revoked.revokedAt);
      assert.deepEqual(await store.listApiKeys(), []);
      assert.deepEqual(await store.listApiKeys({ includeRevoked: true }), [revoked]);
      await assert.rejects(store.revokeApiKey('key_none'), isStoreError('NOT_FOUND'));
    });
  });

  describe('sandbox ownership and paging', () => {
    test('record, get, filters by owner, template and metadata, delete', async (t) => {
      const { store } = await open(t);
      await addKey(store, 'key_a');
      await addKey(store, 'key_b');
      const odd = { 'a."b': "it's", 'x.y': '1', '$[0]': '' };
      await store.recordSandbox({ sandboxId: 'a1', ownerKeyId: 'key_a', metadata: { env: 'prod', ...odd } });
      await store.recordSandbox({
        sandboxId: 'a2',
        ownerKeyId: 'key_a',
        template: 'py',
        metadata: { env: 'dev' },
      });
      await store.recordSandbox({
        sandboxId: 'b1',
        ownerKeyId: 'key_b',
        template: 'py',
        metadata: { env: 'prod' },
      });
      await assert.rejects(
        store.recordSandbox({ sandboxId: 'a1', ownerKeyId: 'key_b' }),
        isStoreError('CONFLICT'),
      );

      const ids = async (query: Parameters<Store['listSandboxes']>[0]) =>
        (await store.listSandboxes(query)).items.map((s) => s.sandboxId);
      assert.deepEqual(await ids({}), ['a1', 'a2', 'b1']);
      assert.deepEqual(await ids({ ownerKeyId: 'key_a' }), ['a1', 'a2']);
      assert.deepEqual(await ids({ template: 'py' }), ['a2', 'b1']);
      assert.deepEqual(await ids({ metadata: { env: 'prod' } }), ['a1', 'b1']);
      assert.deepEqual(await ids({ metadata: { env: 'prod' }, ownerKeyId: 'key_b' }), ['b1']);
      assert.deepEqual(await ids({ metadata: odd }), ['a1']);
      assert.deepEqual(await ids({ metadata: { 'a."b': 'it' } }), []);
      assert.deepEqual(await ids({ metadata: { env: 'prod', 'x.y': '1' } }), ['a1']);
      assert.deepEqual(await ids({ ownerKeyId: 'key_c' }), []);

      const a1 = (await store.getSandbox('a1')) as SandboxRecord;
      assert.deepEqual(a1.metadata, { env: 'prod', ...odd });
      assert.equal(a1.template, null);
      assert.equal(await store.countSandboxes('key_a'), 2);
      assert.equal(await store.deleteSandbox('a1'), true);
      assert.equal(await store.deleteSandbox('a1'), false);
      assert.equal(await store.getSandbox('a1'), null);
      assert.equal(await store.countSandboxes('key_a'), 1);
    });

    test('ownerLimit is checked in the insert transaction', async (t) => {
      const { store } = await open(t);
      await addKey(store, 'key_a');
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) =>
          store.recordSandbox({ sandboxId: `s${i}`, ownerKeyId: 'key_a' }, { ownerLimit: 3 }),
        ),
      );
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
      for (const r of results.filter((r) => r.status === 'rejected')) {
        assert.ok(isStoreError('LIMIT_REACHED')((r as PromiseRejectedResult).reason));
      }
      assert.equal(await store.countSandboxes('key_a'), 3);
    });

    test('cursors: pages in insertion order, stable across inserts and deletes', async (t) => {
      const { store } = await open(t);
      await addKey(store, 'key_a');
      for (let i = 0; i < 25; i++)
        await store.recordSandbox({ sandboxId: `s${String(i).padStart(2, '0')}`, ownerKeyId: 'key_a' });
      const first = await store.listSandboxes({ limit: 10 });
      assert.equal(first.items.length, 10);
      assert.ok(first.next);
      // The last row of the page is deleted and new rows arrive before the next page is read.
      await store.deleteSandbox('s09');
      await store.recordSandbox({ sandboxId: 'late1', ownerKeyId: 'key_a' });
      const second = await store.listSandboxes({ limit: 10, cursor: first.next });
      await store.recordSandbox({ sandboxId: 'late2', ownerKeyId: 'key_a' });
      const third = await store.listSandboxes({ limit: 10, cursor: second.next as string });
      assert.equal(third.next, null);
      const seen = [...first.items, ...second.items, ...third.items].map((s) => s.sandboxId);
      const expected = [
        ...Array.from({ length: 25 }, (_, i) => `s${String(i).padStart(2, '0')}`),
        'late1',
        'late2',
      ];
      assert.deepEqual(seen, expected);
      // A deleted id's sequence number is never reused: a row inserted now sorts last.
      await store.deleteSandbox('late2');
      await store.recordSandbox({ sandboxId: 'late3', ownerKeyId: 'key_a' });
      const after = await store.listSandboxes({ limit: 1000, cursor: second.next as string });
      assert.deepEqual(
        after.items.map((s) => s.sandboxId),
        ['s20', 's21', 's22', 's23', 's24', 'late1', 'late3'],
      );
    });

    test('a row inserted after the cursor row and everything after it were deleted is still found', async (t) => {
      const { store } = await open(t);
      await addKey(store, 'key_a');
      await store.recordSandbox({ sandboxId: 'first', ownerKeyId: 'key_a' });
      await store.recordSandbox({ sandboxId: 'second', ownerKeyId: 'key_a' });
      const page = await store.listSandboxes({ limit: 1 });
      assert.deepEqual(
        page.items.map((s) => s.sandboxId),
        ['first'],
      );
      await store.deleteSandbox('first');
      await store.deleteSandbox('second');
      await store.recordSandbox({ sandboxId: 'third', ownerKeyId: 'key_a' });
      const next = await store.listSandboxes({ limit: 1, cursor: page.next as string });
      assert.deepEqual(
        next.items.map((s) => s.sandboxId),
        ['third'],
      );
    });

    test('property: paging returns every row present throughout exactly once, in order, under concurrent changes', async (t) => {
      // One store for every run (opening one per run is slow on PostgreSQL): each run starts with no sandbox
      // rows, and ids keep increasing across runs, as sequence numbers do.
      const { store } = await open(t);
      await addKey(store, 'key_a');
      await addKey(store, 'key_b');
      let n = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 40 }),
          fc.integer({ min: 1, max: 7 }),
          fc.array(fc.tuple(fc.boolean(), fc.nat()), { maxLength: 30 }),
          fc.option(fc.constantFrom('key_a', 'key_b'), { nil: undefined }),
          async (initial, limit, changes, owner) => {
            try {
              const live: { id: string; owner: string }[] = [];
              const insert = async () => {
                const id = `s${n++}`;
                const ownerKeyId = n % 3 === 0 ? 'key_b' : 'key_a';
                await store.recordSandbox({ sandboxId: id, ownerKeyId });
                live.push({ id, owner: ownerKeyId });
              };
              for (let i = 0; i < initial; i++) await insert();
              const stable = new Set(live.filter((s) => !owner || s.owner === owner).map((s) => s.id));
              const seen: string[] = [];
              let cursor: string | undefined;
              let step = 0;
              for (;;) {
                const page = await store.listSandboxes({ limit, cursor, ownerKeyId: owner });
                assert.ok(page.items.length <= limit);
                seen.push(...page.items.map((s) => s.sandboxId));
                // Between pages: inserts, and deletes of rows not yet seen (they then leave the stable set).
                const change = changes[step++];
                if (change) {
                  if (change[0]) await insert();
                  else if (live.length > 0) {
                    const [victim] = live.splice(change[1] % live.length, 1);
                    if (victim && !seen.includes(victim.id)) stable.delete(victim.id);
                    if (victim) await store.deleteSandbox(victim.id);
                  }
                }
                if (page.next === null) break;
                cursor = page.next;
              }
              assert.equal(new Set(seen).size, seen.length, 'no row twice');
              for (const id of stable) assert.ok(seen.includes(id), `row ${id} missing`);
              const order = seen.map((id) => Number(id.slice(1)));
              assert.deepEqual(
                order,
                [...order].sort((a, b) => a - b),
              );
            } finally {
              for (const left of (await store.listSandboxes({ limit: 1000 })).items) {
                await store.deleteSandbox(left.sandboxId);
              }
            }
          },
        ),
        { numRuns: 60 },
      );
    });
  });

  describe('audit events', () => {
    test('append and page forwards and backwards by id, with filters and retention', async (t) => {
      const { store } = await open(t, { now: steppingClock() });
      for (let i = 1; i <= 30; i++) {
        await store.appendAuditEvent({
          type: i % 2 === 0 ? 'sandbox.exec' : 'sandbox.create',
          requestId: `req-${i}`,
          keyId: i % 3 === 0 ? 'key_b' : 'key_a',
          sandboxId: `sb-${i % 5}`,
          payload: { i, argv: ['echo', 'hi'], nested: { ok: true } },
        });
      }
      const forward: number[] = [];
      let after: number | undefined;
      for (;;) {
        const page = await store.listAuditEvents({ limit: 7, after });
        forward.push(...page.events.map((e) => e.id));
        if (page.next === null) break;
        after = page.next;
      }
      assert.deepEqual(
        forward,
        Array.from({ length: 30 }, (_, i) => i + 1),
      );
      const backward: number[] = [];
      after = undefined;
      for (;;) {
        const page = await store.listAuditEvents({ limit: 8, after, order: 'desc' });
        backward.push(...page.events.map((e) => e.id));
        if (page.next === null) break;
        after = page.next;
      }
      assert.deepEqual(backward, [...forward].reverse());

      const e3 = (await store.listAuditEvents({ after: 2, limit: 1 })).events[0];
      assert.deepEqual(e3, {
        id: 3,
        time: '2025-01-01T00:00:04.000Z',
        requestId: 'req-3',
        keyId: 'key_b',
        sandboxId: 'sb-3',
        type: 'sandbox.create',
        payload: { i: 3, argv: ['echo', 'hi'], nested: { ok: true } },
      });
      const byKey = await store.listAuditEvents({ keyId: 'key_b', limit: 1000 });
      assert.deepEqual(
        byKey.events.map((e) => e.id),
        [3, 6, 9, 12, 15, 18, 21, 24, 27, 30],
      );
      const bySandboxAndType = await store.listAuditEvents({ sandboxId: 'sb-0', type: 'sandbox.exec' });
      assert.deepEqual(
        bySandboxAndType.events.map((e) => e.id),
        [10, 20, 30],
      );
      // Times given by the caller are normalized, so text comparison orders them correctly.
      const explicit = await store.appendAuditEvent({ type: 'x', time: '2024-06-01T12:00:00.5Z' });
      assert.equal(explicit.time, '2024-06-01T12:00:00.500Z');
      // Events 1-9 (times 00:00:02-00:00:10) and the 2024 one.
      assert.equal(await store.deleteAuditEventsBefore('2025-01-01T00:00:11.000Z'), 10);
      assert.equal((await store.listAuditEvents({ limit: 1 })).events[0]?.id, 10);
    });
  });

  describe('templates', () => {
    test('put (create and replace), get, list, delete', async (t) => {
      const { store } = await open(t, { now: steppingClock() });
      const created = await store.putTemplate('python', { preset: 'default', env: { A: '1' } });
      assert.equal(created.createdAt, created.updatedAt);
      const replaced = await store.putTemplate('python', { preset: 'strict' });
      assert.equal(replaced.createdAt, created.createdAt);
      assert.notEqual(replaced.updatedAt, created.updatedAt);
      assert.deepEqual(replaced.template, { preset: 'strict' });
      await store.putTemplate('alpha', {});
      assert.deepEqual(
        (await store.listTemplates()).map((x) => x.name),
        ['alpha', 'python'],
      );
      assert.deepEqual(await store.getTemplate('python'), replaced);
      assert.equal(await store.deleteTemplate('python'), true);
      assert.equal(await store.deleteTemplate('python'), false);
      assert.equal(await store.getTemplate('python'), null);
    });
  });

  describe('malformed input', () => {
    test('NUL (U+0000) in a text field is INVALID_INPUT on write and read; JSON payloads keep it', async (t) => {
      const { store } = await open(t);
      await addKey(store, 'key_a');
      const nul = (error: unknown) =>
        isStoreError('INVALID_INPUT')(error) && /NUL/.test((error as Error).message);
      await assert.rejects(
        store.insertApiKey({
          id: 'k2',
          name: 'a\u0000b',
          prefix: 'p',
          hash: randomHash(),
          scopes: ['admin'],
        }),
        nul,
      );
      await assert.rejects(
        store.recordSandbox({ sandboxId: 's1', ownerKeyId: 'key_a', metadata: { k: '\u0000' } }),
        nul,
      );
      await assert.rejects(store.listSandboxes({ metadata: { k: '\u0000' } }), nul);
      await assert.rejects(store.listAuditEvents({ keyId: '\u0000' }), nul);
      const event = await store.appendAuditEvent({ type: 'x', payload: { text: 'a\u0000b' } });
      assert.deepEqual(event.payload, { text: 'a\u0000b' });
      assert.deepEqual((await store.listAuditEvents()).events, [event]);
    });

    test('typed errors with the offending field named', async (t) => {
      const { store } = await open(t);
      await assert.rejects(
        store.insertApiKey({ id: 'k', name: '', prefix: 'p', hash: 'nothex', scopes: [] }),
        (error: unknown) =>
          isStoreError('INVALID_INPUT')(error) &&
          /name/.test((error as Error).message) &&
          /hash/.test((error as Error).message) &&
          /scopes/.test((error as Error).message),
      );
      await assert.rejects(
        store.insertApiKey({
          id: 'k',
          name: 'n',
          prefix: 'p',
          hash: randomHash(),
          scopes: ['root' as 'admin'],
        }),
        isStoreError('INVALID_INPUT'),
      );
      await assert.rejects(store.listSandboxes({ cursor: 'bogus' }), isStoreError('INVALID_CURSOR'));
      await assert.rejects(store.listSandboxes({ limit: 0 }), isStoreError('INVALID_INPUT'));
      await assert.rejects(
        store.recordSandbox({ sandboxId: '../etc', ownerKeyId: 'k' }),
        isStoreError('INVALID_INPUT'),
      );
      await assert.rejects(store.putTemplate('bad name', {}), isStoreError('INVALID_INPUT'));
      await assert.rejects(
        store.putTemplate('big', { x: 'y'.repeat(1_100_000) }),
        isStoreError('INVALID_INPUT'),
      );
      await assert.rejects(
        store.putTemplate('n', { x: 1n } as Record<string, unknown>),
        isStoreError('INVALID_INPUT'),
      );
      await assert.rejects(store.appendAuditEvent({ type: 'Not A Type' }), isStoreError('INVALID_INPUT'));
      await assert.rejects(store.deleteAuditEventsBefore('yesterday'), isStoreError('INVALID_INPUT'));
      await assert.rejects(store.listAuditEvents({ after: -1 }), isStoreError('INVALID_INPUT'));
      assert.equal(await store.getApiKey('../../x'), null);
      assert.equal(await store.getSandbox(''), null);
    });

    test('property: arbitrary values to every method resolve or reject with StoreError, never crash', async (t) => {
      const { store } = await open(t);
      await addKey(store, 'key_a');
      const calls: ((x: unknown) => Promise<unknown>)[] = [
        (x) => store.insertApiKey(x as never),
        (x) => store.getApiKey(x as never),
        (x) => store.findApiKeyByHash(x as never),
        (x) => store.listApiKeys(x as never),
        (x) => store.revokeApiKey(x as never),
        (x) => store.recordSandbox(x as never),
        (x) => store.recordSandbox({ sandboxId: 'sbx', ownerKeyId: 'key_a' }, x as never),
        (x) => store.getSandbox(x as never),
        (x) => store.listSandboxes(x as never),
        (x) => store.listSandboxes({ cursor: x as never }),
        (x) => store.listSandboxes({ metadata: x as never }),
        (x) => store.countSandboxes(x as never),
        (x) => store.deleteSandbox(x as never),
        (x) => store.appendAuditEvent(x as never),
        (x) => store.appendAuditEvent({ type: 't', payload: x }),
        (x) => store.listAuditEvents(x as never),
        (x) => store.deleteAuditEventsBefore(x as never),
        (x) => store.putTemplate(x as never, {}),
        (x) => store.putTemplate('t', x as never),
        (x) => store.getTemplate(x as never),
        (x) => store.deleteTemplate(x as never),
      ];
      await fc.assert(
        fc.asyncProperty(
          fc.nat({ max: calls.length - 1 }),
          fc.anything({ withBigInt: true, withMap: true }),
          async (i, x) => {
            try {
              await (calls[i] as (x: unknown) => Promise<unknown>)(x);
            } catch (error) {
              assert.ok(error instanceof StoreError, `call ${i} threw ${String(error)}`);
            }
          },
        ),
        { numRuns: 1500 },
      );
    });

    test('a closed store rejects with STORE_CLOSED', async (t) => {
      const { store } = await open(t);
      await store.close();
      await assert.rejects(store.listTemplates(), isStoreError('STORE_CLOSED'));
      await store.close();
    });
  });
}

describe('sqlite: schema and migrations', () => {
  test('migrations apply once at open and are recorded; reopening applies nothing', async (t) => {
    const path = join(tempDir(t), 'ironcage.db');
    await openSqliteStore(path, { now: () => new Date('2025-01-01T00:00:00Z') }).close();
    await openSqliteStore(path, { now: () => new Date('2030-01-01T00:00:00Z') }).close();
    const raw = new Database(path, { readonly: true });
    try {
      const rows = raw.prepare('SELECT version, name, applied_at FROM schema_migrations').all();
      assert.deepEqual(
        rows,
        SQLITE_MIGRATIONS.map((m) => ({
          version: m.version,
          name: m.name,
          applied_at: '2025-01-01T00:00:00.000Z',
        })),
      );
      const tables = raw
        .prepare(
          "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .pluck()
        .all();
      assert.deepEqual(tables, ['api_keys', 'audit_events', 'sandboxes', 'schema_migrations', 'templates']);
    } finally {
      raw.close();
    }
  });

  test('WAL journal, foreign keys enforced, busy timeout set', async (t) => {
    const { store, path } = openSqlite(t);
    await addKey(store, 'key_a');
    assert.ok(existsSync(`${path}-wal`), 'a WAL file exists while the store is open');
    const raw = new Database(path, { readonly: true });
    try {
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      raw.close();
    }
    await assert.rejects(
      store.recordSandbox({ sandboxId: 'sb1', ownerKeyId: 'key_nobody' }),
      (error: unknown) => isStoreError('INVALID_INPUT')(error) && /owner key key_nobody/.test(String(error)),
    );
  });

  test('a later migration is applied to an existing database, keeping its data', async (t) => {
    const path = join(tempDir(t), 'ironcage.db');
    const v1 = openSqliteStore(path);
    await addKey(v1, 'key_a');
    await v1.close();
    const migrations: Migration[] = [
      ...SQLITE_MIGRATIONS,
      { version: 2, name: 'test-extra', sql: 'ALTER TABLE api_keys ADD COLUMN note TEXT' },
    ];
    const v2 = openSqliteStore(path, { migrations });
    assert.equal((await v2.getApiKey('key_a'))?.name, 'key_a');
    await v2.close();
    const raw = new Database(path, { readonly: true });
    try {
      assert.deepEqual(
        raw.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all(),
        [1, 2],
      );
      assert.ok(
        raw.prepare("SELECT COUNT(*) FROM pragma_table_info('api_keys') WHERE name = 'note'").pluck().get(),
      );
    } finally {
      raw.close();
    }
  });

  test('a failing migration rolls back entirely', async (t) => {
    const path = join(tempDir(t), 'ironcage.db');
    await openSqliteStore(path).close();
    const migrations: Migration[] = [
      ...SQLITE_MIGRATIONS,
      { version: 2, name: 'broken', sql: 'CREATE TABLE half_done (a TEXT); SELECT * FROM no_such_table;' },
    ];
    assert.throws(() => openSqliteStore(path, { migrations }), isStoreError('OPEN_FAILED'));
    const raw = new Database(path, { readonly: true });
    try {
      assert.deepEqual(raw.prepare('SELECT version FROM schema_migrations').pluck().all(), [1]);
      assert.equal(
        raw.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'").pluck().get(),
        0,
      );
    } finally {
      raw.close();
    }
  });

  test('a database migrated by a newer ironcage is refused, untouched', async (t) => {
    const path = join(tempDir(t), 'ironcage.db');
    await openSqliteStore(path).close();
    const raw = new Database(path);
    raw
      .prepare("INSERT INTO schema_migrations VALUES (99, 'from-the-future', '2031-01-01T00:00:00.000Z')")
      .run();
    raw.close();
    assert.throws(
      () => openSqliteStore(path),
      (error: unknown) =>
        isStoreError('SCHEMA_TOO_NEW')(error) &&
        /schema version 99/.test((error as Error).message) &&
        /up to 1/.test((error as Error).message) &&
        /Upgrade ironcage/.test((error as Error).message),
    );
    const check = new Database(path, { readonly: true });
    try {
      assert.deepEqual(check.prepare('SELECT version FROM schema_migrations').pluck().all(), [1, 99]);
    } finally {
      check.close();
    }
  });

  test('a database whose recorded migrations differ is refused', async (t) => {
    const path = join(tempDir(t), 'ironcage.db');
    await openSqliteStore(path).close();
    const raw = new Database(path);
    raw.prepare("UPDATE schema_migrations SET name = 'something-else' WHERE version = 1").run();
    raw.close();
    assert.throws(() => openSqliteStore(path), isStoreError('SCHEMA_MISMATCH'));
  });

  test('a file that is not a database, or an unusable path, is OPEN_FAILED', (t) => {
    const dir = tempDir(t);
    const junk = join(dir, 'junk.db');
    writeFileSync(junk, randomBytes(8192));
    assert.throws(() => openSqliteStore(junk), isStoreError('OPEN_FAILED'));
    assert.throws(() => openSqliteStore(join(dir, 'missing', 'dir', 'x.db')), isStoreError('OPEN_FAILED'));
    assert.throws(() => openSqliteStore(''), isStoreError('INVALID_INPUT'));
  });
});
