import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import {
  chmod,
  chown,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import { CaError, CertificateAuthority, type IssuedCertificate } from '../../src/egress/tls/ca.js';
import { buildTrustBundle, SYSTEM_CA_BUNDLE, trustEnv } from '../../src/egress/tls/trust.js';
import { createTestPki } from '../integration/tls-fixture.js';

const DAY_MS = 86_400_000;
const isRoot = process.getuid?.() === 0;

let root: string;
let caseNumber = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ironcage-ca-test-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});
/** A CA directory path that does not exist yet. */
const freshDir = (): string => join(root, `case-${++caseNumber}`, 'ca');

async function rejectsWith(
  promise: Promise<unknown>,
  code: CaError['code'],
  message?: RegExp,
): Promise<CaError> {
  let caught: unknown;
  await promise.then(
    () => assert.fail(`expected ${code}`),
    (err: unknown) => {
      caught = err;
    },
  );
  assert.ok(caught instanceof CaError, `expected a CaError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (message !== undefined) assert.match(caught.message, message);
  return caught;
}

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

describe('CertificateAuthority.loadOrCreate', () => {
  test('creates the directory 0700, the key 0600 and the certificate 0644, with no temp files left', async () => {
    const dir = freshDir();
    const ca = await CertificateAuthority.loadOrCreate(dir);
    assert.equal(await mode(dir), 0o700);
    assert.equal(await mode(join(dir, 'ca-key.pem')), 0o600);
    assert.equal(await mode(join(dir, 'ca-cert.pem')), 0o644);
    assert.deepEqual((await readdir(dir)).sort(), ['ca-cert.pem', 'ca-key.pem']);
    assert.equal(await readFile(join(dir, 'ca-cert.pem'), 'utf8'), ca.certPem);
    assert.match(await readFile(join(dir, 'ca-key.pem'), 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
  });

  test('the certificate keeps mode 0644 under a restrictive umask', async () => {
    const previous = process.umask(0o077);
    try {
      const dir = freshDir();
      await CertificateAuthority.loadOrCreate(dir);
      assert.equal(await mode(join(dir, 'ca-cert.pem')), 0o644);
    } finally {
      process.umask(previous);
    }
  });

  test('is a P-256 CA: CA:true pathlen 0 critical, keyCertSign+cRLSign critical, SKI, default name', async () => {
    const ca = await CertificateAuthority.loadOrCreate(freshDir());
    const cert = new x509.X509Certificate(ca.certPem);
    const constraints = cert.getExtension(x509.BasicConstraintsExtension);
    assert.equal(constraints?.ca, true);
    assert.equal(constraints?.pathLength, 0);
    assert.equal(constraints?.critical, true);
    const usage = cert.getExtension(x509.KeyUsagesExtension);
    assert.equal(usage?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    assert.equal(usage?.critical, true);
    assert.match(cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? '', /^[0-9a-f]{40}$/);
    assert.equal(cert.subject, `CN=ironcage egress CA (${hostname()})`);

    const node = new X509Certificate(ca.certPem);
    assert.equal(node.ca, true);
    assert.equal(node.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(node.checkIssued(node) && node.verify(node.publicKey), 'self-signed');
    const lifetime = Date.parse(node.validTo) - Date.now();
    assert.ok(
      Math.abs(lifetime - 3650 * DAY_MS) < DAY_MS,
      `default validity ~3650 days, got ${lifetime / DAY_MS}`,
    );
    assert.equal(ca.fingerprintSha256, node.fingerprint256.replaceAll(':', '').toLowerCase());
    assert.match(ca.fingerprintSha256, /^[0-9a-f]{64}$/);
  });

  test('honours commonName and validityDays', async () => {
    const ca = await CertificateAuthority.loadOrCreate(freshDir(), {
      commonName: 'Test CA',
      validityDays: 7,
    });
    const node = new X509Certificate(ca.certPem);
    assert.equal(node.subject, 'CN=Test CA');
    assert.ok(Math.abs(Date.parse(node.validTo) - Date.now() - 7 * DAY_MS) < DAY_MS);
  });

  test('a second load returns the same CA', async () => {
    const dir = freshDir();
    const first = await CertificateAuthority.loadOrCreate(dir);
    const second = await CertificateAuthority.loadOrCreate(dir, { commonName: 'ignored on load' });
    assert.equal(second.fingerprintSha256, first.fingerprintSha256);
    assert.equal(second.certPem, first.certPem);
    // And the reloaded key signs leaves that chain to the stored certificate.
    const leaf = await second.issue('reload.example');
    assert.ok(new X509Certificate(leaf.certPem).verify(new X509Certificate(first.certPem).publicKey));
  });

  test('concurrent creation in one process ends with one CA', async () => {
    const dir = freshDir();
    const cas = await Promise.all(Array.from({ length: 8 }, () => CertificateAuthority.loadOrCreate(dir)));
    assert.equal(new Set(cas.map((ca) => ca.fingerprintSha256)).size, 1);
    assert.deepEqual((await readdir(dir)).sort(), ['ca-cert.pem', 'ca-key.pem']);
  });

  test('concurrent creation by separate processes ends with one consistent pair', async () => {
    const dir = freshDir();
    const moduleUrl = new URL('../../src/egress/tls/ca.js', import.meta.url).href;
    const script = `const { CertificateAuthority } = await import(${JSON.stringify(moduleUrl)});
      const ca = await CertificateAuthority.loadOrCreate(process.argv[1]);
      process.stdout.write(ca.fingerprintSha256);`;
    const run = promisify(execFile);
    const outputs = await Promise.all(
      Array.from({ length: 4 }, () => run(process.execPath, ['--input-type=module', '-e', script, dir])),
    );
    const fingerprints = new Set(outputs.map((o) => o.stdout));
    assert.equal(fingerprints.size, 1, `processes disagree: ${[...fingerprints].join(', ')}`);
    const reloaded = await CertificateAuthority.loadOrCreate(dir);
    assert.equal(reloaded.fingerprintSha256, [...fingerprints][0]);
  });

  test('a key with a certificate missing (crash between the two) gets a new certificate for the same key', async () => {
    const dir = freshDir();
    const first = await CertificateAuthority.loadOrCreate(dir);
    await unlink(join(dir, 'ca-cert.pem'));
    const second = await CertificateAuthority.loadOrCreate(dir);
    assert.notEqual(second.fingerprintSha256, first.fingerprintSha256);
    const firstKey = new X509Certificate(first.certPem).publicKey.export({ type: 'spki', format: 'der' });
    const secondKey = new X509Certificate(second.certPem).publicKey.export({ type: 'spki', format: 'der' });
    assert.deepEqual(secondKey, firstKey);
  });
});

describe('CertificateAuthority.loadOrCreate refuses unsafe or broken files', () => {
  for (const badMode of [0o640, 0o604, 0o620, 0o660, 0o644]) {
    test(`key mode ${badMode.toString(8)} → CA_KEY_PERMISSIONS naming the chmod`, async () => {
      const dir = freshDir();
      await CertificateAuthority.loadOrCreate(dir);
      const keyPath = join(dir, 'ca-key.pem');
      await chmod(keyPath, badMode);
      const err = await rejectsWith(
        CertificateAuthority.loadOrCreate(dir),
        'CA_KEY_PERMISSIONS',
        /chmod 600 /,
      );
      assert.ok(err.message.includes(keyPath));
      const keyBody = (await readFile(keyPath, 'utf8')).split('\n')[1] ?? '';
      assert.ok(keyBody.length > 20 && !err.message.includes(keyBody), 'no key bytes in the message');
    });
  }

  test('a key owned by another uid → CA_KEY_PERMISSIONS naming the chown', {
    skip: isRoot ? false : 'needs root to chown',
  }, async () => {
    const dir = freshDir();
    await CertificateAuthority.loadOrCreate(dir);
    await chown(join(dir, 'ca-key.pem'), 12_345, 12_345);
    await rejectsWith(CertificateAuthority.loadOrCreate(dir), 'CA_KEY_PERMISSIONS', /chown 0 /);
  });

  test('a symbolic link as the key → CA_KEY_PERMISSIONS', async () => {
    const dir = freshDir();
    await CertificateAuthority.loadOrCreate(dir);
    const other = freshDir();
    await CertificateAuthority.loadOrCreate(other);
    await unlink(join(other, 'ca-key.pem'));
    await symlink(join(dir, 'ca-key.pem'), join(other, 'ca-key.pem'));
    await rejectsWith(CertificateAuthority.loadOrCreate(other), 'CA_KEY_PERMISSIONS', /symbolic link/);
  });

  test('a garbage key → CA_CORRUPT without echoing the file', async () => {
    const dir = freshDir();
    await CertificateAuthority.loadOrCreate(dir);
    const secretish = 'NOT-A-KEY-but-pretend-secret-material';
    await writeFile(
      join(dir, 'ca-key.pem'),
      `-----BEGIN PRIVATE KEY-----\n${secretish}\n-----END PRIVATE KEY-----\n`,
    );
    const err = await rejectsWith(CertificateAuthority.loadOrCreate(dir), 'CA_CORRUPT', /ca-key\.pem/);
    assert.ok(!err.message.includes(secretish));
  });

  test('a non-P-256 key → CA_CORRUPT', async () => {
    const dir = freshDir();
    await CertificateAuthority.loadOrCreate(dir);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    await writeFile(join(dir, 'ca-key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await rejectsWith(CertificateAuthority.loadOrCreate(dir), 'CA_CORRUPT');
  });

  test('a garbage certificate → CA_CORRUPT', async () => {
    const dir = freshDir();
    await CertificateAuthority.loadOrCreate(dir);
    await writeFile(join(dir, 'ca-cert.pem'), 'hello\n');
    await rejectsWith(CertificateAuthority.loadOrCreate(dir), 'CA_CORRUPT', /ca-cert\.pem/);
  });

  test('a truncated certificate → CA_CORRUPT', async () => {
    const dir = freshDir();
    const ca = await CertificateAuthority.loadOrCreate(dir);
    await writeFile(join(dir, 'ca-cert.pem'), `${ca.certPem.slice(0, 200)}\n-----END CERTIFICATE-----\n`);
    await rejectsWith(CertificateAuthority.loadOrCreate(dir), 'CA_CORRUPT');
  });

  test("another CA's certificate next to the key → CA_CORRUPT (key and certificate mismatch)", async () => {
    const dir = freshDir();
    await CertificateAuthority.loadOrCreate(dir);
    const other = await CertificateAuthority.loadOrCreate(freshDir());
    await writeFile(join(dir, 'ca-cert.pem'), other.certPem);
    await rejectsWith(CertificateAuthority.loadOrCreate(dir), 'CA_CORRUPT', /does not belong/);
  });

  test('a certificate without its key → CA_CORRUPT (no silent new key)', async () => {
    const dir = freshDir();
    await CertificateAuthority.loadOrCreate(dir);
    await unlink(join(dir, 'ca-key.pem'));
    await rejectsWith(CertificateAuthority.loadOrCreate(dir), 'CA_CORRUPT', /missing/);
    assert.deepEqual(await readdir(dir), ['ca-cert.pem']);
  });
});

/** A real TLS handshake: server with `leaf`, client trusting `caPem`. Resolves on success, rejects otherwise. */
async function handshake(
  leaf: IssuedCertificate,
  caPem: string,
  client: { servername?: string; expectIdentity?: string },
): Promise<void> {
  const server = tls.createServer({ key: leaf.keyPem, cert: leaf.certPem }, (socket) => socket.end());
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  try {
    await new Promise<void>((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        ca: caPem,
        ...(client.servername === undefined ? {} : { servername: client.servername }),
        // For IP identities Node's own check is applied to the IP (a servername cannot be an IP address).
        ...(client.expectIdentity === undefined
          ? {}
          : {
              checkServerIdentity: (_host: string, cert: tls.PeerCertificate) =>
                tls.checkServerIdentity(client.expectIdentity as string, cert),
            }),
      });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', reject);
    });
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

describe('CertificateAuthority.issue', () => {
  let ca: CertificateAuthority;
  let otherCa: CertificateAuthority;
  before(async () => {
    ca = await CertificateAuthority.loadOrCreate(freshDir());
    otherCa = await CertificateAuthority.loadOrCreate(freshDir());
  });

  test('a DNS leaf verifies in a real Node TLS handshake', async () => {
    const leaf = await ca.issue('a.example');
    await handshake(leaf, ca.certPem, { servername: 'a.example' });
  });

  test('the DNS leaf fails against a different CA and for a different name', async () => {
    const leaf = await ca.issue('a.example');
    await assert.rejects(
      handshake(leaf, otherCa.certPem, { servername: 'a.example' }),
      (err: NodeJS.ErrnoException) =>
        /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/.test(String(err.code)),
    );
    await assert.rejects(handshake(leaf, ca.certPem, { servername: 'b.example' }), {
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });

  test('an IPv4 leaf verifies for 127.0.0.1 (the host Node checks without a servername)', async () => {
    const leaf = await ca.issue('127.0.0.1');
    await handshake(leaf, ca.certPem, {});
    await assert.rejects(handshake(leaf, otherCa.certPem, {}));
    const cert = new X509Certificate(leaf.certPem);
    assert.equal(cert.subjectAltName, 'IP Address:127.0.0.1');
    assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
  });

  test('an IPv6 leaf verifies and its SAN is an IP address, not a DNS name', async () => {
    const leaf = await ca.issue('2001:db8::1');
    await handshake(leaf, ca.certPem, { expectIdentity: '2001:db8::1' });
    await assert.rejects(handshake(leaf, ca.certPem, { expectIdentity: '2001:db8::2' }), {
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
    const cert = new X509Certificate(leaf.certPem);
    assert.equal(cert.checkIP('2001:db8::1'), '2001:db8::1');
    assert.match(cert.subjectAltName ?? '', /^IP Address:2001:DB8:0:0:0:0:0:1\n?$/);
    assert.equal(cert.checkHost('2001:db8::1', { subject: 'never' }), undefined);
    assert.equal(cert.subject, 'CN=2001:db8::1');
  });

  test('leaf fields: SAN, CN, issuer, EKU serverAuth, not a CA, AKI = CA SKI, validity', async () => {
    const before = Date.now();
    const leaf = await ca.issue('api.example.com');
    const cert = new X509Certificate(leaf.certPem);
    const caCert = new X509Certificate(ca.certPem);
    assert.equal(cert.subjectAltName, 'DNS:api.example.com');
    assert.equal(cert.subject, 'CN=api.example.com');
    assert.equal(cert.issuer, caCert.subject);
    assert.ok(cert.checkIssued(caCert) && cert.verify(caCert.publicKey));
    assert.equal(cert.ca, false);
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
    assert.match(cert.serialNumber, /^[0-9A-F]{32}$/);
    const validFrom = Date.parse(cert.validFrom);
    const validTo = Date.parse(cert.validTo);
    assert.ok(Math.abs(validFrom - (before - 3_600_000)) < 5_000, 'valid from one hour ago');
    assert.ok(Math.abs(validTo - (before + 30 * DAY_MS)) < 5_000, 'valid for 30 days');

    const parsed = new x509.X509Certificate(leaf.certPem);
    const caParsed = new x509.X509Certificate(ca.certPem);
    assert.equal(parsed.getExtension(x509.BasicConstraintsExtension)?.critical, true);
    assert.equal(parsed.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.digitalSignature);
    assert.equal(
      parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId,
      caParsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    assert.ok(parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
    assert.equal(new X509Certificate(leaf.certPem).publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  });

  test('leaf validity never outlasts the CA', async () => {
    const shortCa = await CertificateAuthority.loadOrCreate(freshDir(), { validityDays: 2 });
    const leaf = await shortCa.issue('short.example');
    assert.equal(new X509Certificate(leaf.certPem).validTo, new X509Certificate(shortCa.certPem).validTo);
  });

  test('leaves of one CA share its leaf key but get distinct serials', async () => {
    const [a, b] = await Promise.all([ca.issue('one.example'), ca.issue('two.example')]);
    assert.ok(a && b);
    assert.equal(a.keyPem, b.keyPem);
    assert.match(a.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.notEqual(new X509Certificate(a.certPem).serialNumber, new X509Certificate(b.certPem).serialNumber);
    const other = await otherCa.issue('one.example');
    assert.notEqual(other.keyPem, a.keyPem, 'each CA has its own leaf key');
  });

  test('100 concurrent issues for one host sign once; later calls hit the cache', async () => {
    const fresh = await CertificateAuthority.loadOrCreate(freshDir());
    const results = await Promise.all(Array.from({ length: 100 }, () => fresh.issue('burst.example')));
    assert.equal(new Set(results).size, 1, 'one IssuedCertificate object');
    assert.equal(new Set(results.map((r) => r.certPem)).size, 1, 'one signing (one serial)');
    assert.equal(await fresh.issue('burst.example'), results[0]);
  });

  test('the cache is LRU with 1000 entries', async () => {
    const fresh = await CertificateAuthority.loadOrCreate(freshDir());
    const first = await fresh.issue('h0.example');
    const second = await fresh.issue('h1.example');
    for (let i = 2; i < 1000; i++) await fresh.issue(`h${i}.example`);
    assert.equal(await fresh.issue('h0.example'), first, 'touching h0 makes it most recently used');
    await fresh.issue('h1000.example'); // the 1001st host evicts the least recently used, h1
    assert.equal(await fresh.issue('h0.example'), first);
    const again = await fresh.issue('h1.example');
    assert.notEqual(again, second);
    assert.notEqual(again.certPem, second.certPem, 'h1 was signed again');
  });

  const invalid = [
    '',
    'A.example',
    'a.example.',
    '*.example',
    '*',
    'a b.example',
    ' a.example',
    'a..example',
    `${'a'.repeat(64)}.example`,
    `${'abcdefghi.'.repeat(26)}com`,
    '127.1',
    '0x7f.0.0.1',
    '::FFFF:7f00:1',
    '::ffff:127.0.0.1',
    '[::1]',
    '2001:DB8::1',
    '2001:db8:0::1',
    'fe80::1%eth0',
    'a.example:443',
    'a/b',
  ];
  for (const host of invalid) {
    test(`refuses ${JSON.stringify(host.length > 40 ? `${host.slice(0, 40)}…` : host)} with CA_INVALID_HOST`, async () => {
      await rejectsWith(ca.issue(host), 'CA_INVALID_HOST');
    });
  }

  test('issueForHosts: one leaf for several names and addresses', async () => {
    const leaf = await ca.issueForHosts(['upstream.test', '127.0.0.1', '::1']);
    const cert = new X509Certificate(leaf.certPem);
    assert.equal(cert.subject, 'CN=upstream.test');
    assert.equal(cert.checkHost('upstream.test'), 'upstream.test');
    assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(cert.checkIP('::1'), '::1');
    await rejectsWith(ca.issueForHosts([]), 'CA_INVALID_HOST');
    await rejectsWith(ca.issueForHosts(['ok.example', 'Bad.example']), 'CA_INVALID_HOST');
  });
});

describe('createTestPki (integration fixture)', () => {
  test('an upstream cert for a name and an address, trusted only through its own CA', async () => {
    const pki = await createTestPki(['upstream.test', '127.0.0.1']);
    const leaf = { keyPem: pki.keyPem, certPem: pki.certPem };
    await handshake(leaf, pki.caPem, { servername: 'upstream.test' });
    await handshake(leaf, pki.caPem, {});
    const ironcage = await CertificateAuthority.loadOrCreate(freshDir());
    await assert.rejects(handshake(leaf, ironcage.certPem, { servername: 'upstream.test' }));
  });
});

describe('trust bundle and environment', () => {
  test('the bundle is the system bundle followed by the CA', async () => {
    const ca = await CertificateAuthority.loadOrCreate(freshDir());
    const systemPath = join(root, 'system-bundle.crt');
    const systemPem = (await CertificateAuthority.loadOrCreate(freshDir())).certPem.trimEnd(); // no final newline
    await writeFile(systemPath, systemPem);
    const bundle = buildTrustBundle(ca.certPem, systemPath);
    assert.ok(bundle.startsWith(`${systemPem}\n`));
    assert.ok(bundle.endsWith(ca.certPem.trim().concat('\n')));
    // Node parses every certificate in the bundle, ours last.
    const certs = bundle.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    assert.equal(certs.length, 2);
    assert.equal(
      new X509Certificate(certs[1] as string).fingerprint256,
      new X509Certificate(ca.certPem).fingerprint256,
    );
    // A leaf of the CA verifies against the bundle as a whole.
    await handshake(await ca.issue('bundle.example'), bundle, { servername: 'bundle.example' });
  });

  test('without a readable system bundle the bundle is the CA alone', async () => {
    const ca = await CertificateAuthority.loadOrCreate(freshDir());
    const bundle = buildTrustBundle(ca.certPem, join(root, 'does-not-exist.crt'));
    assert.equal(bundle, `# ironcage egress CA\n${ca.certPem.trim()}\n`);
  });

  test('the default system bundle path is used when present', async () => {
    const ca = await CertificateAuthority.loadOrCreate(freshDir());
    const system = await readFile(SYSTEM_CA_BUNDLE, 'utf8').catch(() => '');
    const bundle = buildTrustBundle(ca.certPem);
    assert.ok(bundle.startsWith(system));
    assert.ok(bundle.length > system.length);
  });

  test('trustEnv points every tool at the bundle', () => {
    const env = trustEnv('/etc/ironcage/ca.crt');
    assert.deepEqual(Object.keys(env).sort(), [
      'AWS_CA_BUNDLE',
      'CARGO_HTTP_CAINFO',
      'CURL_CA_BUNDLE',
      'DENO_CERT',
      'GIT_SSL_CAINFO',
      'NODE_EXTRA_CA_CERTS',
      'PIP_CERT',
      'REQUESTS_CA_BUNDLE',
      'SSL_CERT_FILE',
    ]);
    assert.ok(Object.values(env).every((v) => v === '/etc/ironcage/ca.crt'));
  });
});
