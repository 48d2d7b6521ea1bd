import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
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
import { after, describe, test } from 'node:test';
import { inspect } from 'node:util';
import { Vault, VaultError } from '../../src/vault/index.js';

const roots: string[] = [];
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ironcage-vault-'));
  roots.push(d);
  return d;
}
const KEY = randomBytes(32);
const isVaultError = (code: string) => (e: unknown) => e instanceof VaultError && e.code === code;

/** Run with IRONCAGE_VAULT_KEY set or unset, restoring it afterwards. */
function withEnvKey<T>(value: string | undefined, fn: () => T): T {
  const saved = process.env.IRONCAGE_VAULT_KEY;
  if (value === undefined) delete process.env.IRONCAGE_VAULT_KEY;
  else process.env.IRONCAGE_VAULT_KEY = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.IRONCAGE_VAULT_KEY;
    else process.env.IRONCAGE_VAULT_KEY = saved;
  }
}

type StoredFile = { secrets: { name: string; hosts: string[]; data: string; nonce: string }[] };
const readStored = (dir: string): StoredFile => JSON.parse(readFileSync(join(dir, 'vault.json'), 'utf8'));
const writeStored = (dir: string, f: StoredFile) => writeFileSync(join(dir, 'vault.json'), JSON.stringify(f));

describe('Vault store', () => {
  test('round trip: set, get, list, replace, delete, reopen', () => {
    const dir = tempDir();
    const v = Vault.open(dir, { key: KEY });
    assert.deepEqual(v.list(), []);
    const a = v.set('GITHUB_TOKEN', 'ghp_value_one', {
      hosts: ['API.GitHub.com.', '*.githubusercontent.com:443'],
      headers: ['Authorization'],
    });
    assert.deepEqual(a.hosts, ['api.github.com', '*.githubusercontent.com:443']);
    assert.deepEqual(a.headers, ['authorization']);
    assert.equal('value' in a, false);
    v.set('ANTHROPIC_KEY', 'sk-ant-xyz', { hosts: ['api.anthropic.com'], paths: ['/v1/'], body: true });
    assert.deepEqual(
      v.list().map((s) => s.name),
      ['ANTHROPIC_KEY', 'GITHUB_TOKEN'],
    );
    const replaced = v.set('GITHUB_TOKEN', 'ghp_value_two', { hosts: ['api.github.com'] });
    assert.equal(replaced.createdAt, a.createdAt);
    assert.ok(replaced.updatedAt >= a.updatedAt);
    assert.equal(replaced.headers, undefined);

    const reopened = Vault.open(dir, { key: KEY });
    assert.deepEqual(reopened.get('GITHUB_TOKEN'), replaced);
    assert.deepEqual(reopened.get('ANTHROPIC_KEY')?.paths, ['/v1/']);
    assert.equal(reopened.get('ANTHROPIC_KEY')?.body, true);
    const s = reopened.session(['GITHUB_TOKEN']);
    const check = s.checkRequest('api.github.com', 443, '/', {
      authorization: `token ${s.env.GITHUB_TOKEN}`,
    });
    assert.ok(check.ok);
    assert.equal(check.headers.authorization, 'token ghp_value_two');

    assert.equal(reopened.delete('GITHUB_TOKEN'), true);
    assert.equal(reopened.delete('GITHUB_TOKEN'), false);
    assert.equal(Vault.open(dir, { key: KEY }).get('GITHUB_TOKEN'), undefined);
    // The file holds no plaintext.
    const raw = readFileSync(join(dir, 'vault.json'), 'utf8');
    assert.equal(raw.includes('sk-ant-xyz'), false);
    assert.equal(raw.includes('ghp_value'), false);
  });

  test('a second instance sees writes made by another one', () => {
    const dir = tempDir();
    const a = Vault.open(dir, { key: KEY });
    const b = Vault.open(dir, { key: KEY });
    a.set('ONE', 'v1', { hosts: ['a.example'] });
    b.set('TWO', 'v2', { hosts: ['b.example'] });
    assert.deepEqual(
      a.list().map((s) => s.name),
      ['ONE', 'TWO'],
    );
  });

  test('file modes: vault.json and a generated vault.key are 0600, written without temp leftovers', () => {
    const dir = join(tempDir(), 'nested');
    const v = withEnvKey(undefined, () => Vault.open(dir));
    v.set('A', 'x', { hosts: ['example.com'] });
    assert.equal(statSync(join(dir, 'vault.json')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'vault.key')).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    const key = Buffer.from(readFileSync(join(dir, 'vault.key'), 'utf8').trim(), 'base64');
    assert.equal(key.length, 32);
    // The file key opens it, as option or env, and keeps working from the file.
    assert.equal(Vault.open(dir, { key }).get('A')?.name, 'A');
    assert.equal(withEnvKey(key.toString('base64'), () => Vault.open(join(tempDir()))).list().length, 0);
    assert.equal(withEnvKey(undefined, () => Vault.open(dir)).get('A')?.name, 'A');
    assert.deepEqual(readdirSync(dir).sort(), ['vault.json', 'vault.key']);
  });

  test('key from env: used, and a different env key is WRONG_KEY', () => {
    const dir = tempDir();
    const envKey = randomBytes(32).toString('base64');
    withEnvKey(envKey, () => Vault.open(dir).set('A', 'x', { hosts: ['example.com'] }));
    assert.equal(withEnvKey(envKey, () => Vault.open(dir)).get('A')?.name, 'A');
    assert.throws(
      () => withEnvKey(randomBytes(32).toString('base64'), () => Vault.open(dir)),
      isVaultError('WRONG_KEY'),
    );
    assert.throws(() => withEnvKey('c2hvcnQ=', () => Vault.open(dir)), isVaultError('WRONG_KEY'));
    // The option wins over env.
    assert.equal(
      withEnvKey('not even base64', () => Vault.open(dir, { key: Buffer.from(envKey, 'base64') })).list()
        .length,
      1,
    );
  });

  test('WRONG_KEY with another key, also for an empty vault; refused key lengths', () => {
    const dir = tempDir();
    Vault.open(dir, { key: KEY }).set('A', 'x', { hosts: ['example.com'] });
    assert.throws(() => Vault.open(dir, { key: randomBytes(32) }), isVaultError('WRONG_KEY'));
    const empty = tempDir();
    const v = Vault.open(empty, { key: KEY });
    v.set('A', 'x', { hosts: ['example.com'] });
    v.delete('A');
    assert.throws(() => Vault.open(empty, { key: randomBytes(32) }), isVaultError('WRONG_KEY'));
    assert.throws(() => Vault.open(tempDir(), { key: randomBytes(16) }), isVaultError('WRONG_KEY'));
  });

  test('a vault.json without any key is WRONG_KEY, not silently a new key', () => {
    const dir = tempDir();
    Vault.open(dir, { key: KEY }).set('A', 'x', { hosts: ['example.com'] });
    assert.throws(() => withEnvKey(undefined, () => Vault.open(dir)), isVaultError('WRONG_KEY'));
  });

  test('key file permissions: group/other readable, foreign owner, symlink are refused with the fix', () => {
    const dir = tempDir();
    const keyPath = join(dir, 'vault.key');
    writeFileSync(keyPath, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    chmodSync(keyPath, 0o640);
    assert.throws(
      () => withEnvKey(undefined, () => Vault.open(dir)),
      (e: unknown) =>
        e instanceof VaultError && e.code === 'KEY_PERMISSIONS' && e.message.includes(`chmod 600 ${keyPath}`),
    );
    chmodSync(keyPath, 0o600);
    assert.equal(withEnvKey(undefined, () => Vault.open(dir)).list().length, 0);
    if (process.getuid?.() === 0) {
      chownSync(keyPath, 4242, 4242);
      assert.throws(
        () => withEnvKey(undefined, () => Vault.open(dir)),
        (e: unknown) => e instanceof VaultError && e.code === 'KEY_PERMISSIONS' && /uid 4242/.test(e.message),
      );
    }
    const linked = tempDir();
    symlinkSync(keyPath, join(linked, 'vault.key'));
    assert.throws(() => withEnvKey(undefined, () => Vault.open(linked)), isVaultError('KEY_PERMISSIONS'));
  });

  test('a damaged key file is CORRUPT', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'vault.key'), 'garbage', { mode: 0o600 });
    assert.throws(() => withEnvKey(undefined, () => Vault.open(dir)), isVaultError('CORRUPT'));
  });

  test('CORRUPT on a damaged file', () => {
    const dir = tempDir();
    Vault.open(dir, { key: KEY }).set('A', 'x', { hosts: ['example.com'] });
    const good = readFileSync(join(dir, 'vault.json'), 'utf8');
    for (const bad of [
      good.slice(0, good.length / 2),
      '',
      'null',
      '{"format":2}',
      good.replace('"nonce"', '"n"'),
    ]) {
      writeFileSync(join(dir, 'vault.json'), bad);
      assert.throws(() => Vault.open(dir, { key: KEY }), isVaultError('CORRUPT'), bad.slice(0, 40));
    }
  });

  test('tampered ciphertext fails authentication', () => {
    const dir = tempDir();
    Vault.open(dir, { key: KEY }).set('A', 'some-secret-value', { hosts: ['example.com'] });
    const f = readStored(dir);
    const entry = f.secrets[0] as StoredFile['secrets'][number];
    const data = Buffer.from(entry.data, 'base64');
    data[0] = (data[0] as number) ^ 1;
    entry.data = data.toString('base64');
    writeStored(dir, f);
    assert.throws(() => Vault.open(dir, { key: KEY }), isVaultError('CORRUPT'));
  });

  test('AAD: a ciphertext moved to another name, or a widened binding, fails to decrypt', () => {
    const dir = tempDir();
    const v = Vault.open(dir, { key: KEY });
    v.set('A', 'value-a', { hosts: ['example.com'] });
    v.set('B', 'value-b', { hosts: ['example.com'] });
    const f = readStored(dir);
    const [a, b] = f.secrets as [StoredFile['secrets'][number], StoredFile['secrets'][number]];
    [a.data, a.nonce, b.data, b.nonce] = [b.data, b.nonce, a.data, a.nonce];
    writeStored(dir, f);
    assert.throws(() => Vault.open(dir, { key: KEY }), isVaultError('CORRUPT'));

    const dir2 = tempDir();
    Vault.open(dir2, { key: KEY }).set('A', 'value-a', { hosts: ['example.com'] });
    const g = readStored(dir2);
    (g.secrets[0] as StoredFile['secrets'][number]).hosts = ['attacker.example'];
    writeStored(dir2, g);
    assert.throws(() => Vault.open(dir2, { key: KEY }), isVaultError('CORRUPT'));
  });

  test('name validation', () => {
    const v = Vault.open(tempDir(), { key: KEY });
    for (const ok of ['A', '_x', 'GITHUB_TOKEN', `a${'b'.repeat(63)}`])
      v.set(ok, 'v', { hosts: ['example.com'] });
    for (const bad of ['', '1ABC', 'has-dash', 'sp ace', 'dot.ted', `a${'b'.repeat(64)}`, 'ümlaut']) {
      assert.throws(() => v.set(bad, 'v', { hosts: ['example.com'] }), isVaultError('INVALID_NAME'), bad);
    }
  });

  test('value validation', () => {
    const v = Vault.open(tempDir(), { key: KEY });
    v.set('OK', 'x'.repeat(16_384), { hosts: ['example.com'] });
    v.set('UNICODE', 'pässwörd\twith tab', { hosts: ['example.com'] });
    for (const bad of [
      '',
      'x'.repeat(16_385),
      'ä'.repeat(8193),
      'a\0b',
      'line\n',
      'a\rb',
      'bell\x07',
      '\ud800',
    ]) {
      assert.throws(() => v.set('BAD', bad, { hosts: ['example.com'] }), isVaultError('INVALID_VALUE'));
    }
  });

  test('binding validation: domain rules only, with the reason for refusing CIDRs', () => {
    const v = Vault.open(tempDir(), { key: KEY });
    const bad: unknown[] = [
      { hosts: [] },
      { hosts: ['a..b'] },
      { hosts: ['*'] },
      { hosts: ['example.com:0'] },
      { hosts: ['example.com'], headers: ['bad header'] },
      { hosts: ['example.com'], paths: [] },
      { hosts: ['example.com'], paths: ['v1/'] },
      { hosts: ['example.com'], paths: ['/v1/../admin'] },
      { hosts: ['example.com'], body: 'yes' },
      { hosts: ['example.com'], extra: 1 },
    ];
    for (const b of bad) {
      assert.throws(() => v.set('S', 'v', b as never), isVaultError('INVALID_BINDING'), JSON.stringify(b));
    }
    for (const ip of ['10.0.0.0/8', '93.184.216.34', '[2001:db8::1]:443']) {
      assert.throws(
        () => v.set('S', 'v', { hosts: [ip] }),
        (e: unknown) =>
          e instanceof VaultError && e.code === 'INVALID_BINDING' && /domain names only/.test(e.message),
      );
    }
    assert.equal(v.list().length, 0);
  });

  test('session: NOT_FOUND for a missing name', () => {
    const v = Vault.open(tempDir(), { key: KEY });
    v.set('A', 'x', { hosts: ['example.com'] });
    assert.throws(() => v.session(['A', 'MISSING']), isVaultError('NOT_FOUND'));
    assert.deepEqual(v.session(['A', 'A']).names, ['A']);
  });

  test('never leaks: values absent from errors, inspect, JSON and toString of vault, session, errors', async () => {
    const dir = tempDir();
    const value = 'tok_NEVER_LEAK_7f3a9c2e1b';
    const v = Vault.open(dir, { key: KEY });
    v.set('SECRET', value, { hosts: ['api.example.com'], headers: ['authorization'], paths: ['/v1/'] });
    const seen: string[] = [];
    const record = (x: unknown) => {
      seen.push(
        String(x),
        inspect(x, { showHidden: true, depth: 20, getters: true }),
        JSON.stringify(x) ?? '',
      );
      if (x instanceof Error) seen.push(x.message, x.stack ?? '');
    };
    const provoke = (fn: () => unknown) => {
      try {
        fn();
        assert.fail('expected an error');
      } catch (e) {
        record(e);
      }
    };
    // Every vault error code, with the value nearby wherever it could be echoed.
    provoke(() => v.set(`bad-${value}`, value, { hosts: ['example.com'] }));
    provoke(() => v.set('X', `${value}\n`, { hosts: ['example.com'] }));
    provoke(() => v.set('X', `${value}\0`, { hosts: ['example.com'] }));
    provoke(() => v.set('X', value.repeat(2000), { hosts: ['example.com'] }));
    provoke(() => v.set('X', value, { hosts: ['10.0.0.1'] }));
    provoke(() => v.session(['SECRET', 'NOPE']));
    provoke(() => Vault.open(dir, { key: randomBytes(32) }));
    const damaged = readStored(dir);
    (damaged.secrets[0] as StoredFile['secrets'][number]).hosts = ['evil.example'];
    const copy = tempDir();
    writeStored(copy, damaged);
    provoke(() => Vault.open(copy, { key: KEY }));
    writeFileSync(join(copy, 'vault.key'), 'x', { mode: 0o644 });
    provoke(() => withEnvKey(undefined, () => Vault.open(copy)));

    const session = v.session(['SECRET']);
    const ph = session.env.SECRET as string;
    record(v);
    record(session);
    const blocked = session.checkRequest('evil.example', 443, '/', { authorization: ph });
    assert.equal(blocked.ok, false);
    record(blocked);
    const body = session.requestBody('api.example.com', 443, '/v1/x');
    assert.ok(body);
    const err = await new Promise<unknown>((resolve) => {
      body.on('error', resolve);
      body.on('data', () => {});
      body.end(Buffer.from(`{"k":"${ph}"}`));
    });
    record(err);
    record(body);
    const redactor = session.responseRedactor();
    assert.ok(redactor);
    record(redactor);
    record(session.redactHeaders({ 'x-echo': value }));

    assert.ok(seen.length > 30);
    for (const text of seen) assert.equal(text.includes(value), false, text.slice(0, 300));
  });
});
