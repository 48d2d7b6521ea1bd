/** Auth over the real SQLite store: keys, tenancy, quotas, rate limits and the first-run admin key. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import {
  ADMIN_KEY_ENV,
  AdminKeyError,
  API_KEY_PATTERN,
  authenticate,
  authorize,
  checkSandboxQuota,
  createApiKey,
  ensureAdminKey,
  ForbiddenError,
  hashApiKey,
  ownerFilterFor,
  presentedKeyFromHeaders,
  QuotaExceededError,
  RateLimitError,
  RateLimiter,
  reserveSandbox,
  UnauthenticatedError,
} from '../../src/server/auth/index.js';
import { openSqliteStore, type Store, StoreError } from '../../src/server/store/index.js';

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'ironcage-auth-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function open(t: TestContext): { store: Store; dir: string; path: string } {
  const dir = tempDir(t);
  const path = join(dir, 'ironcage.db');
  const store = openSqliteStore(path);
  t.after(() => store.close());
  return { store, dir, path };
}

function unauthenticated(pattern: RegExp) {
  return (error: unknown) =>
    error instanceof UnauthenticatedError &&
    error.code === 'UNAUTHENTICATED' &&
    pattern.test(error.message) &&
    error.message.includes('Authorization: Bearer') &&
    error.message.includes('X-API-Key');
}

/** Every byte SQLite keeps for this database: the main file, its WAL and shared-memory index. */
function databaseBytes(path: string): Buffer {
  return Buffer.concat(
    [path, `${path}-wal`, `${path}-shm`].filter((p) => existsSync(p)).map((p) => readFileSync(p)),
  );
}

describe('API keys', () => {
  test('create returns the key once; authenticate finds it; revoke refuses it', async (t) => {
    const { store } = open(t);
    const { key, record } = await createApiKey(store, {
      name: 'ci',
      scopes: ['sandbox'],
      limits: { maxSandboxes: 5 },
    });
    assert.match(key, API_KEY_PATTERN);
    assert.equal(record.prefix, key.slice(0, 12));
    assert.deepEqual(record.limits, { maxSandboxes: 5, requestsPerMinute: null });
    const authed = await authenticate(store, presentedKeyFromHeaders({ authorization: `Bearer ${key}` }));
    assert.deepEqual(authed, record);
    assert.ok(!('hash' in authed));
    assert.deepEqual(await authenticate(store, presentedKeyFromHeaders({ 'x-api-key': key })), record);

    await store.revokeApiKey(record.id);
    await assert.rejects(authenticate(store, key), unauthenticated(/revoked/));
  });

  test('missing, malformed and unknown keys are UNAUTHENTICATED, saying how to pass a key', async (t) => {
    const { store } = open(t);
    const { key } = await createApiKey(store, { name: 'a', scopes: ['admin'] });
    await assert.rejects(authenticate(store, undefined), unauthenticated(/no API key/));
    await assert.rejects(authenticate(store, ''), unauthenticated(/no API key/));
    await assert.rejects(authenticate(store, 'ick_short'), unauthenticated(/malformed/));
    await assert.rejects(authenticate(store, `${key} `), unauthenticated(/malformed/));
    // Same length and alphabet, one character different.
    const flipped = key.slice(0, -1) + (key.endsWith('a') ? 'b' : 'a');
    await assert.rejects(authenticate(store, flipped), unauthenticated(/unknown API key/));
  });

  test('property: arbitrary presented values never authenticate and never crash', async (t) => {
    const { store } = open(t);
    await createApiKey(store, { name: 'a', scopes: ['admin'] });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.anything(), fc.string(), fc.stringMatching(/^ick_[0-9A-Za-z]{43}$/)),
        async (x) => {
          await assert.rejects(
            authenticate(store, x),
            (error: unknown) => error instanceof UnauthenticatedError,
          );
        },
      ),
      { numRuns: 500 },
    );
  });

  test('invalid create input is a typed StoreError', async (t) => {
    const { store } = open(t);
    await assert.rejects(
      createApiKey(store, { name: '', scopes: ['sandbox'] }),
      (e: unknown) => e instanceof StoreError,
    );
    await assert.rejects(
      createApiKey(store, { name: 'x', scopes: [] }),
      (e: unknown) => e instanceof StoreError,
    );
    await assert.rejects(
      createApiKey(store, { name: 'x', scopes: ['sandbox'], limits: { maxSandboxes: -1 } }),
      (e: unknown) => e instanceof StoreError && e.code === 'INVALID_INPUT',
    );
    await assert.rejects(createApiKey(store, null as never), (e: unknown) => e instanceof StoreError);
  });

  test('the plaintext of a key is never written to the database files', async (t) => {
    const { store, path, dir } = open(t);
    const created = [];
    for (let i = 0; i < 5; i++)
      created.push(await createApiKey(store, { name: `k${i}`, scopes: ['sandbox'] }));
    const envKey = randomBytes(32).toString('base64');
    await ensureAdminKey(store, dir, { [ADMIN_KEY_ENV]: envKey });
    for (const { record } of created) {
      await store.appendAuditEvent({
        type: 'key.create',
        keyId: record.id,
        payload: { prefix: record.prefix },
      });
    }
    const secrets = [...created.map((c) => c.key), envKey];
    const scan = (bytes: Buffer, when: string) => {
      for (const secret of secrets) {
        // The random part alone, too: the stored prefix legitimately holds `ick_` and 8 digits of it.
        const tail = secret.slice(12);
        assert.equal(bytes.indexOf(secret), -1, `${when}: a plaintext key is in the database`);
        assert.equal(bytes.indexOf(tail), -1, `${when}: the secret part of a key is in the database`);
        // The scan sees what the store wrote: each key's hash is there.
        assert.notEqual(bytes.indexOf(hashApiKey(secret)), -1, `${when}: the hash should be stored`);
      }
    };
    scan(databaseBytes(path), 'while open');
    await store.close();
    scan(databaseBytes(path), 'after close');
  });
});

describe('tenancy', () => {
  test('a sandbox key sees and touches only its own sandboxes; admin sees and touches all', async (t) => {
    const { store } = open(t);
    const admin = (await createApiKey(store, { name: 'admin', scopes: ['admin'] })).record;
    const alice = (await createApiKey(store, { name: 'alice', scopes: ['sandbox'] })).record;
    const bob = (await createApiKey(store, { name: 'bob', scopes: ['sandbox'] })).record;
    await reserveSandbox(store, alice, { sandboxId: 'alice-1', metadata: { app: 'x' } });
    await reserveSandbox(store, alice, { sandboxId: 'alice-2' });
    await reserveSandbox(store, bob, { sandboxId: 'bob-1', metadata: { app: 'x' } });

    const list = async (key: typeof alice, metadata?: Record<string, string>) =>
      (await store.listSandboxes({ ownerKeyId: ownerFilterFor(key), metadata })).items.map(
        (s) => s.sandboxId,
      );
    assert.deepEqual(await list(alice), ['alice-1', 'alice-2']);
    assert.deepEqual(await list(bob), ['bob-1']);
    assert.deepEqual(await list(admin), ['alice-1', 'alice-2', 'bob-1']);
    assert.deepEqual(await list(alice, { app: 'x' }), ['alice-1']);

    const bobs = await store.getSandbox('bob-1');
    assert.ok(bobs);
    for (const action of ['sandbox:read', 'sandbox:write', 'sandbox:kill'] as const) {
      assert.throws(
        () => authorize(alice, action, bobs.ownerKeyId),
        (error: unknown) => error instanceof ForbiddenError && error.reason === 'not-owner',
      );
      authorize(bob, action, bobs.ownerKeyId);
      authorize(admin, action, bobs.ownerKeyId);
    }
    // A revoked tenant's key no longer authenticates, and its sandboxes stay its own.
    await store.revokeApiKey(bob.id);
    assert.deepEqual(await list(alice), ['alice-1', 'alice-2']);
  });
});

describe('quotas and rate limits', () => {
  test('reserveSandbox enforces maxSandboxes atomically; deleting frees a slot', async (t) => {
    const { store } = open(t);
    const { record: key } = await createApiKey(store, {
      name: 'q',
      scopes: ['sandbox'],
      limits: { maxSandboxes: 3 },
    });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => reserveSandbox(store, key, { sandboxId: `q${i}` })),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
    for (const r of results) {
      if (r.status === 'rejected') {
        assert.ok(r.reason instanceof QuotaExceededError);
        assert.equal(r.reason.code, 'QUOTA_EXCEEDED');
        assert.equal(r.reason.used, 3);
        assert.equal(r.reason.limit, 3);
      }
    }
    await assert.rejects(checkSandboxQuota(store, key), QuotaExceededError);
    await store.deleteSandbox('q0');
    assert.deepEqual(await checkSandboxQuota(store, key), { used: 2, limit: 3 });
    await reserveSandbox(store, key, { sandboxId: 'q-new' });
    const unlimited = (await createApiKey(store, { name: 'u', scopes: ['sandbox'] })).record;
    for (let i = 0; i < 20; i++) await reserveSandbox(store, unlimited, { sandboxId: `u${i}` });
    // Other errors pass through unchanged.
    await assert.rejects(
      reserveSandbox(store, unlimited, { sandboxId: 'u0' }),
      (e: unknown) => e instanceof StoreError && e.code === 'CONFLICT',
    );
    assert.deepEqual(await checkSandboxQuota(store, unlimited), { used: 20, limit: null });
  });

  test('the rate limit from a stored key applies per key (injected clock)', async (t) => {
    const { store } = open(t);
    let now = 0;
    const limiter = new RateLimiter({ now: () => now });
    const { key } = await createApiKey(store, {
      name: 'r',
      scopes: ['sandbox'],
      limits: { requestsPerMinute: 3 },
    });
    const other = await createApiKey(store, {
      name: 'o',
      scopes: ['sandbox'],
      limits: { requestsPerMinute: 3 },
    });
    const request = async (presented: string) => limiter.enforce(await authenticate(store, presented));
    for (let i = 0; i < 3; i++) await request(key);
    await assert.rejects(
      request(key),
      (error: unknown) => error instanceof RateLimitError && error.retryAfterMs === 20_000,
    );
    await request(other.key);
    now += 20_000;
    await request(key);
  });
});

describe('ensureAdminKey', () => {
  test('first run writes a 0600 file atomically and returns the key; later runs never return it again', async (t) => {
    const { store, dir, path } = open(t);
    const stateDir = join(dir, 'state');
    const oldUmask = process.umask(0);
    let first: Awaited<ReturnType<typeof ensureAdminKey>>;
    try {
      first = await ensureAdminKey(store, stateDir, {});
    } finally {
      process.umask(oldUmask);
    }
    assert.equal(first.created, true);
    assert.ok(first.created && first.source === 'file');
    const file = join(stateDir, 'admin-key');
    assert.equal(first.path, file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8'), `${first.key}\n`);
    assert.deepEqual((await authenticate(store, first.key)).scopes, ['admin']);
    const mtime = statSync(file).mtimeMs;

    const second = await ensureAdminKey(store, stateDir, {});
    assert.deepEqual(second, { created: false, source: 'store', keyId: first.keyId });
    await store.close();
    const reopened = openSqliteStore(path);
    t.after(() => reopened.close());
    const third = await ensureAdminKey(reopened, stateDir, {});
    assert.deepEqual(third, { created: false, source: 'store', keyId: first.keyId });
    assert.ok(!('key' in third));
    assert.equal(statSync(file).mtimeMs, mtime);
    assert.equal((await reopened.listApiKeys()).length, 1);
  });

  test('an existing file is never overwritten (a fresh database, or a planted symlink)', async (t) => {
    const { store, dir } = open(t);
    const file = join(dir, 'admin-key');
    writeFileSync(file, 'operator notes\n', { mode: 0o600 });
    await assert.rejects(
      ensureAdminKey(store, dir, {}),
      (error: unknown) =>
        error instanceof AdminKeyError &&
        error.code === 'ADMIN_KEY_FILE_EXISTS' &&
        error.message.includes(file),
    );
    assert.equal(readFileSync(file, 'utf8'), 'operator notes\n');
    assert.deepEqual(await store.listApiKeys(), []);

    const other = tempDir(t);
    const target = join(other, 'target');
    symlinkSync(target, join(other, 'admin-key'));
    await assert.rejects(ensureAdminKey(store, other, {}), (e: unknown) => e instanceof AdminKeyError);
    assert.equal(existsSync(target), false, 'nothing written through the symlink');
  });

  test('a store that refuses the key leaves no file behind', async (t) => {
    const { store, dir, path } = open(t);
    const stateDir = join(dir, 'state');
    // A real refusal from the database: a trigger (added through a second connection) aborts key inserts.
    const raw = new Database(path);
    raw.exec(
      "CREATE TRIGGER refuse_keys BEFORE INSERT ON api_keys BEGIN SELECT RAISE(ABORT, 'refused'); END",
    );
    raw.close();
    await assert.rejects(ensureAdminKey(store, stateDir, {}), /refused/);
    assert.deepEqual(readdirSync(stateDir), []);
  });

  test('IRONCAGE_ADMIN_KEY is registered by hash only, once, with no file', async (t) => {
    const { store, dir } = open(t);
    const envKey = randomBytes(32).toString('base64');
    const env = { [ADMIN_KEY_ENV]: envKey };
    const first = await ensureAdminKey(store, dir, env);
    assert.equal(first.created, true);
    assert.equal(first.source, 'env');
    assert.ok(!('key' in first));
    assert.equal(existsSync(join(dir, 'admin-key')), false);
    const authed = await authenticate(store, envKey);
    assert.deepEqual(authed.scopes, ['admin']);
    assert.equal(authed.prefix, envKey.slice(0, 4));
    assert.deepEqual(await ensureAdminKey(store, dir, env), {
      created: false,
      source: 'env',
      keyId: first.keyId,
    });
    // Without the variable, the registered env key counts as the installation's admin key.
    assert.deepEqual(await ensureAdminKey(store, dir, {}), {
      created: false,
      source: 'store',
      keyId: first.keyId,
    });
  });

  test('unusable IRONCAGE_ADMIN_KEY values are refused without echoing them', async (t) => {
    const { store, dir } = open(t);
    for (const value of ['', 'short-secret-value', `${'x'.repeat(40)} with spaces`]) {
      await assert.rejects(
        ensureAdminKey(store, dir, { [ADMIN_KEY_ENV]: value }),
        (error: unknown) =>
          error instanceof AdminKeyError &&
          error.code === 'ENV_KEY_INVALID' &&
          (value === '' || !error.message.includes(value)),
      );
    }
    const revokedKey = randomBytes(32).toString('base64url');
    const registered = await ensureAdminKey(store, dir, { [ADMIN_KEY_ENV]: revokedKey });
    await store.revokeApiKey(registered.keyId);
    await assert.rejects(
      ensureAdminKey(store, dir, { [ADMIN_KEY_ENV]: revokedKey }),
      (error: unknown) => error instanceof AdminKeyError && error.code === 'ENV_KEY_REVOKED',
    );
    const { key: userKey } = await createApiKey(store, { name: 'user', scopes: ['sandbox'] });
    await assert.rejects(
      ensureAdminKey(store, dir, { [ADMIN_KEY_ENV]: userKey }),
      (error: unknown) => error instanceof AdminKeyError && error.code === 'ENV_KEY_NOT_ADMIN',
    );
  });
});
