/** Pure parts of the control plane's auth: key format, header parsing, authorization rules, rate limiting. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { toBase62 } from '../../src/server/auth/api-keys.js';
import {
  API_KEY_PATTERN,
  type AuthorizedKey,
  authorize,
  displayPrefix,
  ForbiddenError,
  generateApiKey,
  hashApiKey,
  ownerFilterFor,
  PRESENTED_KEY_PATTERN,
  presentedKeyFromHeaders,
  RateLimitError,
  RateLimiter,
  UnauthenticatedError,
} from '../../src/server/auth/index.js';
import { decodeCursor, encodeCursor, StoreError } from '../../src/server/store/index.js';

describe('API key format', () => {
  test('keys are ick_ + 43 base62 digits, distinct, and the prefix reveals 8 of them', () => {
    const keys = new Set(Array.from({ length: 200 }, generateApiKey));
    assert.equal(keys.size, 200);
    for (const key of keys) {
      assert.match(key, API_KEY_PATTERN);
      assert.match(key, PRESENTED_KEY_PATTERN);
      assert.equal(displayPrefix(key), key.slice(0, 12));
    }
  });

  test('base62 is a bijection on 32-byte values with a fixed width', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        const text = toBase62(bytes, 43);
        assert.equal(text.length, 43);
        let n = 0n;
        for (const ch of text) {
          n = n * 62n + BigInt('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'.indexOf(ch));
        }
        assert.equal(n, BigInt(`0x${Buffer.from(bytes).toString('hex')}`));
      }),
    );
    assert.equal(toBase62(new Uint8Array(32).fill(0xff), 43).length, 43);
  });

  test('hash is SHA-256 hex of the key', () => {
    const key = generateApiKey();
    assert.equal(hashApiKey(key), createHash('sha256').update(key).digest('hex'));
  });
});

describe('presentedKeyFromHeaders', () => {
  const key = generateApiKey();
  test('Bearer and X-API-Key both work; absent is undefined', () => {
    assert.equal(presentedKeyFromHeaders({ authorization: `Bearer ${key}` }), key);
    assert.equal(presentedKeyFromHeaders({ authorization: `bearer   ${key} ` }), key);
    assert.equal(presentedKeyFromHeaders({ 'x-api-key': key }), key);
    assert.equal(presentedKeyFromHeaders({ authorization: `Bearer ${key}`, 'x-api-key': key }), key);
    assert.equal(presentedKeyFromHeaders({}), undefined);
    assert.equal(presentedKeyFromHeaders({ 'x-api-key': '' }), undefined);
  });

  test('ambiguity and other schemes are refused with a message saying how to pass the key', () => {
    for (const headers of [
      { authorization: `Basic ${key}` },
      { authorization: 'Bearer' },
      { authorization: `Bearer ${key}`, 'x-api-key': generateApiKey() },
      { 'x-api-key': [key, key] },
    ]) {
      assert.throws(
        () => presentedKeyFromHeaders(headers),
        (error: unknown) =>
          error instanceof UnauthenticatedError &&
          error.code === 'UNAUTHENTICATED' &&
          error.message.includes('Authorization: Bearer') &&
          error.message.includes('X-API-Key'),
      );
    }
  });

  test('arbitrary header values never throw anything but UnauthenticatedError', () => {
    fc.assert(
      fc.property(fc.option(fc.string()), fc.option(fc.string()), (authorization, apiKey) => {
        const headers: Record<string, string> = {};
        if (authorization !== null) headers.authorization = authorization;
        if (apiKey !== null) headers['x-api-key'] = apiKey;
        try {
          const result = presentedKeyFromHeaders(headers);
          assert.ok(result === undefined || typeof result === 'string');
        } catch (error) {
          assert.ok(error instanceof UnauthenticatedError, String(error));
        }
      }),
    );
  });
});

describe('authorize', () => {
  const admin: AuthorizedKey = { id: 'key_admin', scopes: ['admin'], revokedAt: null };
  const alice: AuthorizedKey = { id: 'key_alice', scopes: ['sandbox'], revokedAt: null };

  test('admin may do everything, on any owner', () => {
    for (const action of [
      'sandbox:read',
      'sandbox:kill',
      'key:manage',
      'audit:read',
      'template:write',
    ] as const) {
      authorize(admin, action, 'key_someone_else');
    }
    assert.equal(ownerFilterFor(admin), undefined);
  });

  test('a sandbox key uses its own sandboxes only, and the error names the missing scope', () => {
    authorize(alice, 'sandbox:create');
    authorize(alice, 'sandbox:list');
    authorize(alice, 'sandbox:write', 'key_alice');
    authorize(alice, 'template:read');
    assert.equal(ownerFilterFor(alice), 'key_alice');
    for (const owner of ['key_bob', null, undefined]) {
      assert.throws(
        () => authorize(alice, 'sandbox:kill', owner),
        (error: unknown) =>
          error instanceof ForbiddenError &&
          error.code === 'FORBIDDEN' &&
          error.reason === 'not-owner' &&
          error.missingScope === 'admin' &&
          error.message.includes('"admin"'),
      );
    }
    for (const action of ['key:manage', 'audit:read', 'template:write', 'secret:manage'] as const) {
      assert.throws(
        () => authorize(alice, action),
        (error: unknown) =>
          error instanceof ForbiddenError &&
          error.reason === 'scope' &&
          error.message.includes('lacks scope "admin"'),
      );
    }
  });

  test('revoked keys and unknown actions are refused (fail closed)', () => {
    assert.throws(
      () => authorize({ ...admin, revokedAt: '2024-01-01T00:00:00.000Z' }, 'sandbox:list'),
      ForbiddenError,
    );
    assert.throws(
      () => authorize(admin, 'constructor' as 'sandbox:list'),
      (error: unknown) => error instanceof ForbiddenError && error.reason === 'unknown-action',
    );
  });
});

describe('RateLimiter (injected clock)', () => {
  test('allows the burst, refuses the next with a retry time, refills at rate/60 per second', () => {
    let now = 1_000_000;
    const limiter = new RateLimiter({ now: () => now });
    const key = { id: 'k1', limits: { maxSandboxes: null, requestsPerMinute: 60 } };
    for (let i = 0; i < 60; i++) assert.equal(limiter.take(key).allowed, true, `request ${i}`);
    const refused = limiter.take(key);
    assert.deepEqual(refused, { allowed: false, retryAfterMs: 1000 });
    assert.throws(
      () => limiter.enforce(key),
      (error: unknown) =>
        error instanceof RateLimitError && error.code === 'RATE_LIMITED' && error.retryAfterMs === 1000,
    );
    now += 999;
    assert.equal(limiter.take(key).allowed, false);
    now += 1;
    assert.equal(limiter.take(key).allowed, true);
    assert.equal(limiter.take(key).allowed, false);
    // A long idle period refills to the burst size, not beyond.
    now += 3_600_000;
    let allowed = 0;
    while (limiter.take(key).allowed) allowed++;
    assert.equal(allowed, 60);
  });

  test('keys have separate buckets; no limit means always allowed; a clock stepping back refills nothing', () => {
    let now = 0;
    const limiter = new RateLimiter({ now: () => now });
    const a = { id: 'a', limits: { maxSandboxes: null, requestsPerMinute: 2 } };
    const b = { id: 'b', limits: { maxSandboxes: null, requestsPerMinute: 2 } };
    const free = { id: 'free', limits: { maxSandboxes: null, requestsPerMinute: null } };
    assert.equal(limiter.take(a).allowed, true);
    assert.equal(limiter.take(a).allowed, true);
    assert.equal(limiter.take(a).allowed, false);
    assert.equal(limiter.take(b).allowed, true);
    for (let i = 0; i < 1000; i++) assert.equal(limiter.take(free).allowed, true);
    now = -100_000;
    assert.equal(limiter.take(a).allowed, false);
  });

  test('property: over any request schedule, allowed requests never exceed burst + rate x time', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 600 }),
        fc.array(fc.integer({ min: 0, max: 5000 }), { minLength: 1, maxLength: 300 }),
        (perMinute, gaps) => {
          let now = 0;
          const limiter = new RateLimiter({ now: () => now });
          const key = { id: 'k', limits: { maxSandboxes: null, requestsPerMinute: perMinute } };
          let allowed = 0;
          for (const gap of gaps) {
            now += gap;
            if (limiter.take(key).allowed) allowed++;
          }
          assert.ok(allowed <= perMinute + Math.floor((now * perMinute) / 60_000) + 1e-9);
        },
      ),
    );
  });

  test('bucket count stays bounded', () => {
    const limiter = new RateLimiter({ now: () => 0, maxBuckets: 10 });
    for (let i = 0; i < 100; i++) {
      assert.equal(
        limiter.take({ id: `k${i}`, limits: { maxSandboxes: null, requestsPerMinute: 5 } }).allowed,
        true,
      );
      assert.ok(limiter.size <= 10, `size ${limiter.size}`);
    }
  });
});

describe('page cursors', () => {
  test('round trip, and anything else is INVALID_CURSOR', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (seq) => {
        assert.equal(decodeCursor(encodeCursor(seq)), seq);
      }),
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (junk) => {
        try {
          const seq = decodeCursor(junk);
          assert.equal(encodeCursor(seq), junk);
        } catch (error) {
          assert.ok(error instanceof StoreError && error.code === 'INVALID_CURSOR', String(error));
        }
      }),
    );
  });
});
