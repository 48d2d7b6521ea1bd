import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, describe, test } from 'node:test';
import { ExfiltrationError, type SecretSession, Vault } from '../../src/vault/index.js';

const dir = mkdtempSync(join(tmpdir(), 'ironcage-vault-session-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const vault = Vault.open(dir, { key: randomBytes(32) });
const GH = 'ghp_realGithubValue0123456789';
const API = 'sk-real-api-value-abcdef';
const WILD = 'wild-real-value';
const PORTED = 'ported-real-value';
const BODY = 'body-real-value';
vault.set('GH_TOKEN', GH, { hosts: ['api.github.com'], headers: ['authorization'] });
vault.set('API_KEY', API, { hosts: ['api.example.com'], paths: ['/v1/'] });
vault.set('WILD', WILD, { hosts: ['*.wild.example'] });
vault.set('PORTED', PORTED, { hosts: ['svc.example:8443'] });
vault.set('BODY_KEY', BODY, { hosts: ['api.body.example'], body: true, paths: ['/upload/'] });
const ALL = ['GH_TOKEN', 'API_KEY', 'WILD', 'PORTED', 'BODY_KEY'];

function newSession(): SecretSession & { env: Record<string, string> } {
  return vault.session(ALL) as SecretSession & { env: Record<string, string> };
}

async function run(transform: Transform, chunks: readonly (string | Buffer)[]): Promise<Buffer> {
  const out: Buffer[] = [];
  transform.on('data', (d: Buffer) => out.push(d));
  await pipeline(Readable.from(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c) : c))), transform);
  return Buffer.concat(out);
}

describe('placeholders', () => {
  test('format, and unique per session and per secret', () => {
    const a = newSession();
    const b = newSession();
    assert.deepEqual(Object.keys(a.env).sort(), [...ALL].sort());
    assert.deepEqual([...a.names].sort(), [...ALL].sort());
    for (const name of ALL) {
      assert.match(a.env[name] as string, new RegExp(`^ironcage_ph_${name.toLowerCase()}_[a-z2-7]{26}$`));
      assert.notEqual(a.env[name], b.env[name]);
    }
    assert.equal(new Set(Object.values(a.env)).size, ALL.length);
    // The values never appear in what the sandbox gets.
    for (const v of [GH, API, WILD, PORTED, BODY]) assert.equal(JSON.stringify(a.env).includes(v), false);
  });
  test('a session without secrets has nothing to look for', () => {
    const s = vault.session([]);
    assert.equal(s.requestBody('api.github.com', 443, '/'), null);
    assert.equal(s.responseRedactor(), null);
    assert.deepEqual(s.checkRequest('x.example', 443, '/', { a: 'b' }), {
      ok: true,
      headers: { a: 'b' },
      path: '/',
      substituted: [],
    });
  });
});

describe('checkRequest', () => {
  test('substitutes for the bound host only (exact)', () => {
    const s = newSession();
    const headers = {
      authorization: `Bearer ${s.env.GH_TOKEN}`,
      accept: 'application/json',
      skip: undefined,
    };
    const ok = s.checkRequest('api.github.com', 443, '/user', headers);
    assert.ok(ok.ok);
    assert.deepEqual(ok.headers, { authorization: `Bearer ${GH}`, accept: 'application/json' });
    assert.deepEqual(ok.substituted, ['GH_TOKEN']);
    for (const host of ['github.com', 'evil.api.github.com', 'api.github.com.evil.example']) {
      const r = s.checkRequest(host, 443, '/user', headers);
      assert.equal(r.ok, false, host);
      if (!r.ok) {
        assert.equal(r.secret, 'GH_TOKEN');
        assert.equal(r.where, 'header authorization');
        assert.match(r.reason, /GH_TOKEN/);
        assert.match(r.reason, /"api\.github\.com"/);
        assert.match(r.reason, new RegExp(`add "${host.replace(/\./g, '\\.')}" to the hosts of GH_TOKEN`));
        assert.equal(r.reason.includes(GH), false);
      }
    }
  });

  test('wildcard binding: subdomains only; port binding: that port only', () => {
    const s = newSession();
    const w = { 'x-key': s.env.WILD as string };
    const sub = s.checkRequest('a.b.wild.example', 443, '/', w);
    assert.ok(sub.ok);
    assert.equal(sub.headers['x-key'], WILD);
    assert.equal(s.checkRequest('wild.example', 443, '/', w).ok, false);
    assert.equal(s.checkRequest('notwild.example', 443, '/', w).ok, false);

    const p = { 'x-key': s.env.PORTED as string };
    assert.equal(s.checkRequest('svc.example', 8443, '/', p).ok, true);
    assert.equal(s.checkRequest('svc.example', 443, '/', p).ok, false);
    // An IP literal never matches a name binding, and the reason says to use the name.
    const ip = s.checkRequest('93.184.216.34', 8443, '/', p);
    assert.equal(ip.ok, false);
    if (!ip.ok) assert.match(ip.reason, /domain names/);
    assert.equal(s.bindsHost('svc.example', 8443), true);
    assert.equal(s.bindsHost('svc.example', 443), false);
    assert.equal(s.bindsHost('x.wild.example', 443), true);
    assert.equal(s.bindsHost('93.184.216.34', 443), false);
  });

  test('headers restriction: only the listed headers (case-insensitive)', () => {
    const s = newSession();
    const ok = s.checkRequest('api.github.com', 443, '/', { authorization: s.env.GH_TOKEN });
    assert.ok(ok.ok);
    const r = s.checkRequest('api.github.com', 443, '/', { 'x-other': s.env.GH_TOKEN });
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.equal(r.where, 'header x-other');
      assert.match(r.reason, /add "x-other" to the headers of GH_TOKEN/);
    }
    // Not in the URL either? The headers list restricts headers only; the URL stays allowed for the bound host.
    assert.equal(s.checkRequest('api.github.com', 443, `/?t=${s.env.GH_TOKEN}`, {}).ok, true);
  });

  test('paths restriction: prefix on the raw and the normalised path', () => {
    const s = newSession();
    const h = { 'x-api-key': s.env.API_KEY as string };
    const ok = s.checkRequest('api.example.com', 443, '/v1/messages?beta=1', h);
    assert.ok(ok.ok);
    assert.equal(ok.headers['x-api-key'], API);
    for (const path of ['/v2/messages', '/v1/../admin', '/v1/%2e%2e/admin', '/v1/..%2fadmin', '/v1', '*']) {
      const r = s.checkRequest('api.example.com', 443, path, h);
      assert.equal(r.ok, false, path);
      if (!r.ok) assert.match(r.reason, /paths of API_KEY/);
    }
  });

  test('substitution in the URL and in multi-value headers', () => {
    const s = newSession();
    const r = s.checkRequest('x.wild.example', 443, `/q?key=${s.env.WILD}&again=${s.env.WILD}`, {
      cookie: ['a=1', `k=${s.env.WILD}`],
    });
    assert.ok(r.ok);
    assert.equal(r.path, `/q?key=${WILD}&again=${WILD}`);
    assert.deepEqual(r.headers.cookie, ['a=1', `k=${WILD}`]);
  });

  test('exfiltration in a header, the URL, or a header name to an unbound host', () => {
    const s = newSession();
    const inHeader = s.checkRequest('evil.example', 443, '/', { 'x-leak': `v=${s.env.API_KEY}` });
    assert.deepEqual(inHeader.ok ? undefined : [inHeader.secret, inHeader.where], [
      'API_KEY',
      'header x-leak',
    ]);
    const inUrl = s.checkRequest('evil.example', 443, `/collect?d=${s.env.GH_TOKEN}`, {});
    assert.deepEqual(inUrl.ok ? undefined : [inUrl.secret, inUrl.where], ['GH_TOKEN', 'url']);
    const inName = s.checkRequest('api.github.com', 443, '/', { [`x-${s.env.GH_TOKEN}`]: '1' });
    assert.deepEqual(inName.ok ? undefined : [inName.secret, inName.where], ['GH_TOKEN', 'header name']);
    // Placeholders of two secrets: the allowed one must not make the refused one pass.
    const mixed = s.checkRequest('api.github.com', 443, '/', {
      authorization: s.env.GH_TOKEN,
      'x-also': s.env.API_KEY,
    });
    assert.deepEqual(mixed.ok ? undefined : mixed.secret, 'API_KEY');
  });

  test('findPlaceholder on text and buffers', () => {
    const s = newSession();
    assert.equal(s.findPlaceholder('nothing here ironcage_ph_gh_token_'), undefined);
    assert.equal(s.findPlaceholder(`x ${s.env.WILD} y ${s.env.GH_TOKEN}`), 'WILD');
    assert.equal(s.findPlaceholder(Buffer.from(`GET /?k=${s.env.PORTED}`)), 'PORTED');
    // Another session's placeholder is not ours.
    assert.equal(s.findPlaceholder(newSession().env.WILD as string), undefined);
  });
});

describe('request bodies', () => {
  test('body:true substitutes on the bound host and path, across chunk boundaries', async () => {
    const s = newSession();
    const ph = s.env.BODY_KEY as string;
    const t = s.requestBody('api.body.example', 443, '/upload/file');
    assert.ok(t);
    const payload = `{"key":"${ph}","again":"${ph}"}`;
    const cut = payload.indexOf(ph) + 7;
    const out = await run(t, [payload.slice(0, cut), payload.slice(cut)]);
    assert.equal(out.toString(), `{"key":"${BODY}","again":"${BODY}"}`);
  });

  test('body:false, wrong path or unbound host: the stream errors before the placeholder is passed on', async () => {
    const s = newSession();
    const cases: [string, string, string][] = [
      ['api.github.com', '/', 'GH_TOKEN'], // bound host, but body not allowed
      ['evil.example', '/upload/x', 'BODY_KEY'], // unbound host
      ['api.body.example', '/other', 'BODY_KEY'], // path not allowed
    ];
    for (const [host, path, name] of cases) {
      const t = s.requestBody(host, 443, path);
      assert.ok(t);
      const ph = s.env[name] as string;
      const out: Buffer[] = [];
      t.on('data', (d: Buffer) => out.push(d));
      await assert.rejects(
        pipeline(
          Readable.from([Buffer.from(`data=${ph.slice(0, 10)}`), Buffer.from(`${ph.slice(10)}&x=1`)]),
          t,
        ),
        (e: unknown) =>
          e instanceof ExfiltrationError &&
          e.code === 'EXFILTRATION' &&
          e.secret === name &&
          /body/.test(e.reason),
      );
      const passed = Buffer.concat(out).toString();
      assert.equal(passed.includes('ironcage_ph_'), false, passed);
    }
  });

  test('a clean body passes unchanged', async () => {
    const s = newSession();
    const t = s.requestBody('evil.example', 443, '/');
    assert.ok(t);
    const body = randomBytes(100_000);
    assert.deepEqual(await run(t, [body.subarray(0, 3), body.subarray(3)]), body);
  });
});

describe('responses', () => {
  test('real values become placeholders, also when split across chunks, and are counted', async () => {
    const s = newSession();
    const r = s.responseRedactor();
    assert.ok(r);
    const text = `echo ${GH} and ${API} and ${GH}!`;
    const chunks: string[] = [];
    for (let i = 0; i < text.length; i += 3) chunks.push(text.slice(i, i + 3));
    const out = (await run(r, chunks)).toString();
    assert.equal(out, `echo ${s.env.GH_TOKEN} and ${s.env.API_KEY} and ${s.env.GH_TOKEN}!`);
    assert.equal(r.redactions, 3);
  });

  test('value split at every offset between two chunks', async () => {
    const s = newSession();
    const text = `a${API}b`;
    for (let i = 0; i <= text.length; i++) {
      const r = s.responseRedactor();
      assert.ok(r);
      const out = (await run(r, [text.slice(0, i), text.slice(i)])).toString();
      assert.equal(out, `a${s.env.API_KEY}b`, `split at ${i}`);
    }
  });

  test('redactHeaders redacts values (and names), counts, and drops undefined', () => {
    const s = newSession();
    const { headers, redactions } = s.redactHeaders({
      'x-echo': `Bearer ${GH}`,
      'set-cookie': [`a=${WILD}`, 'b=2', `c=${WILD}${WILD}`],
      [`x-${API}`]: 'v',
      plain: 'nothing',
      gone: undefined,
    });
    assert.deepEqual(headers, {
      'x-echo': `Bearer ${s.env.GH_TOKEN}`,
      'set-cookie': [`a=${s.env.WILD}`, 'b=2', `c=${s.env.WILD}${s.env.WILD}`],
      [`x-${s.env.API_KEY}`]: 'v',
      plain: 'nothing',
    });
    assert.equal(redactions, 5);
  });

  test('non-ASCII values: substituted as UTF-8 bytes in header form, and redacted in that form', () => {
    const v = Vault.open(mkdtempSync(join(dir, 'u-')), { key: randomBytes(32) });
    v.set('UNI', 'pässwörd', { hosts: ['u.example'] });
    const s = v.session(['UNI']);
    const r = s.checkRequest('u.example', 443, '/', { 'x-k': s.env.UNI });
    assert.ok(r.ok);
    assert.equal(Buffer.from(r.headers['x-k'] as string, 'latin1').toString('utf8'), 'pässwörd');
    const wire = Buffer.from('pässwörd').toString('latin1');
    assert.equal(s.redactHeaders({ 'x-echo': wire }).headers['x-echo'], s.env.UNI);
    assert.equal(s.redactHeaders({ 'x-echo': 'pässwörd' }).headers['x-echo'], s.env.UNI);
  });
});
