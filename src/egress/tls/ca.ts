/**
 * ironcage's own certificate authority for TLS interception in the egress proxy: a long-lived CA (ECDSA P-256)
 * kept in a directory on the host, and short-lived leaf certificates minted per destination host on demand.
 *
 * On-disk protocol. The key is published first, the certificate second, each with link(2) from a fully written
 * and fsynced temp file: link fails with EEXIST instead of overwriting, so when two processes create at once
 * exactly one key wins, and whichever certificate wins is for that key (the loser reloads what is on disk).
 * A crash can leave a key without a certificate, never half a file; the next load then self-signs a new
 * certificate for the existing key (no sandbox can trust a certificate that was never published).
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { canonicalizeHost, DestinationError, destinationText } from '../destination.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto);

export interface IssuedCertificate {
  /** PKCS#8 PEM of the leaf's private key. */
  readonly keyPem: string;
  /** PEM of the leaf certificate alone (clients already trust the CA; no chain is appended). */
  readonly certPem: string;
}

export type CaErrorCode = 'CA_KEY_PERMISSIONS' | 'CA_CORRUPT' | 'CA_INVALID_HOST';

/** A CA directory that cannot be used safely, or a host a leaf cannot be issued for. Never carries key bytes. */
export class CaError extends Error {
  constructor(
    readonly code: CaErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'CaError';
  }
}

const KEY_FILE = 'ca-key.pem';
const CERT_FILE = 'ca-cert.pem';
const DEFAULT_VALIDITY_DAYS = 3650;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
// Backdated so a client whose clock runs a little behind still accepts a certificate minted a moment ago.
const BACKDATE_MS = HOUR_MS;
const LEAF_LIFETIME_MS = 30 * DAY_MS;
// A cached leaf this close to expiry is minted again rather than served to a long-running proxy's clients.
const LEAF_RENEW_BEFORE_MS = DAY_MS;
const LEAF_CACHE_SIZE = 1000;
const MAX_CREATE_ATTEMPTS = 5;

const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

interface CacheEntry {
  readonly issued: Promise<IssuedCertificate>;
  /** Epoch ms when the leaf stops being valid; Infinity while the signing is still in flight. */
  notAfter: number;
}

interface LeafKey {
  readonly keys: CryptoKeyPair;
  readonly keyPem: string;
  readonly subjectKeyId: x509.SubjectKeyIdentifierExtension;
}

export class CertificateAuthority {
  readonly certPem: string;
  readonly fingerprintSha256: string;
  readonly #signingKey: CryptoKey;
  readonly #certificate: x509.X509Certificate;
  readonly #authorityKeyId: x509.AuthorityKeyIdentifierExtension;
  readonly #leaves = new Map<string, CacheEntry>();
  #leafKey: Promise<LeafKey> | undefined;

  private constructor(certificate: x509.X509Certificate, signingKey: CryptoKey, subjectKeyId: string) {
    this.#certificate = certificate;
    this.#signingKey = signingKey;
    this.#authorityKeyId = new x509.AuthorityKeyIdentifierExtension(subjectKeyId);
    this.certPem = certificate.toString('pem');
    this.fingerprintSha256 = createHash('sha256').update(Buffer.from(certificate.rawData)).digest('hex');
  }

  /**
   * Loads <dir>/ca-key.pem + <dir>/ca-cert.pem, or creates them on first use (dir 0700 if missing, key 0600,
   * cert 0644, each published atomically). Refuses a key file that another uid owns or that group/others may
   * read or write.
   */
  static async loadOrCreate(
    dir: string,
    options: { commonName?: string; validityDays?: number } = {},
  ): Promise<CertificateAuthority> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const keyPath = join(dir, KEY_FILE);
    const certPath = join(dir, CERT_FILE);
    for (let attempt = 0; attempt < MAX_CREATE_ATTEMPTS; attempt++) {
      const keyPem = await readKeyFile(keyPath);
      const certPem = await readOptionalFile(certPath);
      if (keyPem === undefined) {
        if (certPem !== undefined) {
          throw new CaError(
            'CA_CORRUPT',
            `${certPath} exists but ${keyPath} is missing; move ${certPath} away to create a new CA`,
          );
        }
        const keys = await webcrypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']);
        const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
        await publishExclusive(keyPath, x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), 0o600);
        continue; // Reload: if another process won the race, its key is the one on disk.
      }
      const keys = await importCaKey(keyPem, keyPath);
      if (certPem === undefined) {
        const certificate = await selfSign(keys, options);
        await publishExclusive(certPath, certificate.toString('pem'), 0o644);
        continue;
      }
      return await CertificateAuthority.#fromPem(keys, certPem, certPath);
    }
    throw new CaError('CA_CORRUPT', `${dir}: the CA files kept changing while being created; try again`);
  }

  static async #fromPem(
    keys: CryptoKeyPair,
    certPem: string,
    certPath: string,
  ): Promise<CertificateAuthority> {
    let certificate: x509.X509Certificate;
    try {
      certificate = new x509.X509Certificate(certPem);
    } catch {
      throw new CaError('CA_CORRUPT', `${certPath} is not a PEM X.509 certificate`);
    }
    const keySpki = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey));
    if (!keySpki.equals(Buffer.from(certificate.publicKey.rawData))) {
      throw new CaError('CA_CORRUPT', `${certPath} does not belong to the CA key next to it`);
    }
    const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
    if (constraints?.ca !== true) {
      throw new CaError(
        'CA_CORRUPT',
        `${certPath} is not a CA certificate (basicConstraints CA:true missing)`,
      );
    }
    if (certificate.notAfter.getTime() <= Date.now()) {
      throw new CaError(
        'CA_CORRUPT',
        `${certPath} expired on ${certificate.notAfter.toISOString()}; move the CA directory away to create a new CA`,
      );
    }
    const ski =
      certificate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ??
      (await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)).keyId;
    return new CertificateAuthority(certificate, keys.privateKey, ski);
  }

  /**
   * A leaf for a canonical DNS name or IP address, valid from 1 h ago to min(now + 30 days, CA expiry).
   * Cached (LRU) and deduplicated while in flight, so a burst of connections to one host signs once.
   */
  issue(host: string): Promise<IssuedCertificate> {
    let san: x509.JsonGeneralName;
    try {
      san = leafSubjectAltName(host);
    } catch (err) {
      return Promise.reject(err); // Always a rejected promise, never a synchronous throw, for `.catch` callers.
    }
    const cached = this.#leaves.get(host);
    if (cached !== undefined && cached.notAfter - Date.now() > LEAF_RENEW_BEFORE_MS) {
      // Re-insert to mark it most recently used (Map iterates in insertion order).
      this.#leaves.delete(host);
      this.#leaves.set(host, cached);
      return cached.issued;
    }
    const entry: CacheEntry = { issued: this.#sign(host, [san]), notAfter: Number.POSITIVE_INFINITY };
    this.#leaves.delete(host);
    this.#leaves.set(host, entry);
    while (this.#leaves.size > LEAF_CACHE_SIZE) {
      const oldest = this.#leaves.keys().next().value as string;
      this.#leaves.delete(oldest);
    }
    entry.issued.then(
      (issued) => {
        entry.notAfter = new x509.X509Certificate(issued.certPem).notAfter.getTime();
      },
      () => {
        // A failed signing must not stick in the cache; the next call tries again.
        if (this.#leaves.get(host) === entry) this.#leaves.delete(host);
      },
    );
    return entry.issued;
  }

  /**
   * One uncached leaf naming several canonical hosts (CN = the first). For test PKIs and tools; the proxy mints
   * one leaf per host through issue().
   */
  issueForHosts(hosts: readonly string[]): Promise<IssuedCertificate> {
    let sans: x509.JsonGeneralName[];
    try {
      if (hosts.length === 0) throw new CaError('CA_INVALID_HOST', 'a certificate needs at least one host');
      sans = hosts.map(leafSubjectAltName);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#sign(hosts[0] as string, sans);
  }

  async #sign(commonName: string, sans: x509.JsonGeneralName[]): Promise<IssuedCertificate> {
    const leafKey = await this.#sharedLeafKey();
    const now = Date.now();
    const notAfter = Math.min(now + LEAF_LIFETIME_MS, this.#certificate.notAfter.getTime());
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: [{ CN: [commonName] }],
      issuer: this.#certificate.subjectName,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(notAfter),
      publicKey: leafKey.keys.publicKey,
      signingKey: this.#signingKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(sans),
        leafKey.subjectKeyId,
        this.#authorityKeyId,
      ],
    });
    return { keyPem: leafKey.keyPem, certPem: certificate.toString('pem') };
  }

  /**
   * Every leaf of this CA shares one key pair, generated once per process. Key generation, not signing, is the
   * slow part of minting a certificate, and a per-host key buys nothing here: the proxy holds all of them in the
   * same process memory anyway, and each certificate still names exactly one host. (mitmproxy does the same.)
   */
  #sharedLeafKey(): Promise<LeafKey> {
    if (this.#leafKey === undefined) {
      const pending = (async () => {
        const keys = await webcrypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']);
        const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
        const subjectKeyId = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey);
        return { keys, keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), subjectKeyId };
      })();
      this.#leafKey = pending;
      pending.catch(() => {
        if (this.#leafKey === pending) this.#leafKey = undefined; // Let the next issue() try again.
      });
    }
    return this.#leafKey;
  }
}

/** The SAN entry for a host, or CA_INVALID_HOST unless the host is already in canonical form. */
function leafSubjectAltName(host: string): x509.JsonGeneralName {
  let canonical: ReturnType<typeof canonicalizeHost>;
  try {
    canonical = canonicalizeHost(host);
  } catch (err) {
    if (!(err instanceof DestinationError)) throw err;
    throw new CaError(
      'CA_INVALID_HOST',
      `cannot issue a certificate for ${JSON.stringify(host)}: ${err.message}`,
    );
  }
  // Only the canonical spelling is accepted: the cache is keyed by it, and the certificate must name exactly
  // the host the policy matched (not `EXAMPLE.com.` or `127.1` standing in for it).
  if (destinationText(canonical) !== host) {
    throw new CaError(
      'CA_INVALID_HOST',
      `cannot issue a certificate for ${JSON.stringify(host)}: not canonical (expected ${JSON.stringify(destinationText(canonical))})`,
    );
  }
  return canonical.kind === 'ip' ? { type: 'ip', value: host } : { type: 'dns', value: host };
}

/** 16 random bytes, top bit clear (a positive INTEGER) and first byte non-zero (DER keeps all 16 bytes). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

async function selfSign(
  keys: CryptoKeyPair,
  options: { commonName?: string; validityDays?: number },
): Promise<x509.X509Certificate> {
  const validityDays = options.validityDays ?? DEFAULT_VALIDITY_DAYS;
  if (!Number.isInteger(validityDays) || validityDays < 1) {
    throw new RangeError(`validityDays must be a positive integer, got ${validityDays}`);
  }
  const now = Date.now();
  const name = [{ CN: [options.commonName ?? `ironcage egress CA (${hostname()})`] }];
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name,
    keys,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + validityDays * DAY_MS),
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
}

/** Parses the CA key PEM into WebCrypto keys. Errors name the file only: key bytes never reach a message. */
async function importCaKey(keyPem: string, keyPath: string): Promise<CryptoKeyPair> {
  let pkcs8: Buffer;
  let spki: Buffer;
  try {
    const privateKey = createPrivateKey({ key: keyPem, format: 'pem' });
    if (
      privateKey.asymmetricKeyType !== 'ec' ||
      privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1'
    ) {
      throw new Error('not P-256');
    }
    pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  } catch {
    throw new CaError('CA_CORRUPT', `${keyPath} is not a PEM ECDSA P-256 private key`);
  }
  // Not extractable: once loaded, the CA key can only sign.
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, EC_ALGORITHM, false, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('spki', spki, EC_ALGORITHM, true, ['verify']);
  return { privateKey, publicKey };
}

/**
 * Reads the CA key after checking, on the opened descriptor itself (no race with a swap of the path), that it is
 * a regular file of this uid that nobody else can read or write. undefined when it does not exist.
 */
async function readKeyFile(keyPath: string): Promise<string | undefined> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(keyPath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    if (errorCode(err) === 'ELOOP') {
      throw new CaError(
        'CA_KEY_PERMISSIONS',
        `${keyPath} is a symbolic link; the CA key must be a regular file`,
      );
    }
    throw err;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      throw new CaError('CA_KEY_PERMISSIONS', `${keyPath} is not a regular file`);
    }
    const uid = process.getuid?.();
    if (uid !== undefined && stat.uid !== uid) {
      throw new CaError(
        'CA_KEY_PERMISSIONS',
        `${keyPath} is owned by uid ${stat.uid}, not by this user (uid ${uid}); run: chown ${uid} ${keyPath}`,
      );
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new CaError(
        'CA_KEY_PERMISSIONS',
        `${keyPath} is accessible to group or others (mode ${(stat.mode & 0o777).toString(8)}); run: chmod 600 ${keyPath}`,
      );
    }
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

async function readOptionalFile(path: string): Promise<string | undefined> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, fsConstants.O_RDONLY);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Writes `content` to a fresh temp file beside `path` (exact mode, fsynced), then link(2)s it into place.
 * link never overwrites: if `path` appeared meanwhile (another process won), ours is simply dropped.
 */
async function publishExclusive(path: string, content: string, mode: number): Promise<void> {
  const temp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    try {
      await handle.chmod(mode); // The umask may have narrowed the mode; the cert must stay world-readable.
      await handle.writeFile(content, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await link(temp, path);
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw err;
    }
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}
