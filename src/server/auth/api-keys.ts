/**
 * API keys: `ick_` followed by 43 base62 characters encoding 32 random bytes. The plaintext exists only in
 * the createApiKey result (shown once); the store keeps its SHA-256 and a short display prefix.
 *
 * Why SHA-256 and not bcrypt/scrypt/argon2: slow password hashes make guessing low-entropy human passwords
 * expensive after a database leak. These keys carry 256 random bits, so recovering one from its hash is
 * infeasible at any hash speed; a slow hash would only add latency to every request (and a CPU lever for
 * denial of service). An unsalted, deterministic hash is also what lets a key be found by an index lookup.
 *
 * Why the comparison must be constant-time: an early-exit `===` between a presented secret and a stored one
 * finishes sooner the earlier the first differing byte is, so response times reveal how much of a guess is
 * right and a key can be recovered byte by byte. Here the secret is never compared: the database looks up
 * the SHA-256 of the guess (whose bytes an attacker cannot steer towards the real hash), and the final check
 * of the found hash uses timingSafeEqual, so it stays constant-time whatever the backend's lookup does.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { StoreError } from '../store/errors.js';
import type { ApiKeyRecord, KeyLimits, Scope, Store } from '../store/types.js';
import { UnauthenticatedError } from './errors.js';

export const API_KEY_PREFIX = 'ick_';
const RANDOM_BYTES = 32;
/** ceil(256 / log2(62)): enough base62 digits for any 32-byte value, so every key has the same length. */
const BASE62_DIGITS = 43;
/**
 * Characters of the random part kept for display: 8 base62 digits reveal about 48 of the 256 bits, leaving
 * over 200 unknown, and are enough for a human to tell keys apart.
 */
const DISPLAY_DIGITS = 8;
export const API_KEY_PATTERN = /^ick_[0-9A-Za-z]{43}$/;
/**
 * What a presented key may look like: generated keys, and operator-chosen IRONCAGE_ADMIN_KEY values (e.g.
 * `openssl rand -base64 32`). Anything else is refused before hashing, so garbage never reaches the store.
 */
export const PRESENTED_KEY_PATTERN = /^[A-Za-z0-9._~+/=-]{32,256}$/;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export function toBase62(bytes: Uint8Array, digits: number): string {
  let n = bytes.length === 0 ? 0n : BigInt(`0x${Buffer.from(bytes).toString('hex')}`);
  let out = '';
  while (n > 0n) {
    out = BASE62[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out.padStart(digits, '0');
}

/** A new random key in the `ick_` format. */
export function generateApiKey(): string {
  return API_KEY_PREFIX + toBase62(randomBytes(RANDOM_BYTES), BASE62_DIGITS);
}

/** SHA-256 of the key, lowercase hex: what the store keeps and looks up. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** The non-secret part shown in listings: `ick_` and the first 8 digits (operator keys: their first 4). */
export function displayPrefix(key: string): string {
  return API_KEY_PATTERN.test(key) ? key.slice(0, API_KEY_PREFIX.length + DISPLAY_DIGITS) : key.slice(0, 4);
}

export function newKeyId(): string {
  return `key_${toBase62(randomBytes(12), 17)}`;
}

export interface CreateApiKeyInput {
  name: string;
  scopes: readonly Scope[];
  limits?: Partial<KeyLimits>;
}

export interface CreatedApiKey {
  /** The plaintext key: show it to the user now; it cannot be recovered later. */
  readonly key: string;
  readonly record: ApiKeyRecord;
}

/** Creates a key; invalid input rejects with StoreError INVALID_INPUT. */
export async function createApiKey(store: Store, input: CreateApiKeyInput): Promise<CreatedApiKey> {
  if (typeof input !== 'object' || input === null) {
    throw new StoreError('INVALID_INPUT', 'invalid API key: expected { name, scopes, limits }');
  }
  const key = generateApiKey();
  const record = await store.insertApiKey({
    id: newKeyId(),
    name: input.name,
    prefix: displayPrefix(key),
    hash: hashApiKey(key),
    scopes: input.scopes as Scope[],
    limits: input.limits ?? {},
  });
  return { key, record };
}

/** Resolves the presented key to its (live) record, or rejects with UnauthenticatedError. */
export async function authenticate(store: Store, presented: unknown): Promise<ApiKeyRecord> {
  if (presented === undefined || presented === null || presented === '') {
    throw new UnauthenticatedError('no API key');
  }
  if (typeof presented !== 'string' || !PRESENTED_KEY_PATTERN.test(presented)) {
    throw new UnauthenticatedError('malformed API key (expected ick_ and 43 letters or digits)');
  }
  const hash = hashApiKey(presented);
  const found = await store.findApiKeyByHash(hash);
  if (!found || !timingSafeEqual(Buffer.from(found.hash, 'hex'), Buffer.from(hash, 'hex'))) {
    throw new UnauthenticatedError('unknown API key');
  }
  if (found.revokedAt !== null) {
    throw new UnauthenticatedError(`API key ${found.prefix}… was revoked at ${found.revokedAt}`);
  }
  const { hash: _hash, ...record } = found;
  return record;
}

export type HeaderBag = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * The key a request presents, from `Authorization: Bearer <key>` or `X-API-Key: <key>` (Node's lowercased
 * header names); undefined when neither is there. Ambiguity (both headers with different keys, a repeated
 * header, another Authorization scheme) is refused rather than guessed at.
 */
export function presentedKeyFromHeaders(headers: HeaderBag): string | undefined {
  const single = (name: string): string | undefined => {
    const value = headers[name];
    if (Array.isArray(value)) throw new UnauthenticatedError(`header ${name} given more than once`);
    return typeof value === 'string' ? value : undefined;
  };
  const authorization = single('authorization');
  const apiKey = single('x-api-key')?.trim();
  let bearer: string | undefined;
  if (authorization !== undefined) {
    const match = /^\s*bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!match) throw new UnauthenticatedError('unsupported Authorization header (only the Bearer scheme)');
    bearer = match[1];
  }
  if (bearer !== undefined && apiKey !== undefined && bearer !== apiKey) {
    throw new UnauthenticatedError('Authorization and X-API-Key carry different keys');
  }
  return bearer ?? (apiKey === '' ? undefined : apiKey);
}
