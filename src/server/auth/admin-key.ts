/**
 * The installation's first admin key. Either the operator supplies it (IRONCAGE_ADMIN_KEY: only its hash is
 * stored) or the first start creates one, writes it to `<stateDir>/admin-key` (0600) and hands it back once
 * for printing. Later starts find an admin key in the store and return `created: false`: the key is never
 * printed again, and the file is never rewritten.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fsyncSync,
  mkdirSync,
  openSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { StoreError } from '../store/errors.js';
import type { Store } from '../store/types.js';
import { displayPrefix, generateApiKey, hashApiKey, newKeyId, PRESENTED_KEY_PATTERN } from './api-keys.js';
import { AdminKeyError } from './errors.js';

export const ADMIN_KEY_ENV = 'IRONCAGE_ADMIN_KEY';
export const ADMIN_KEY_FILE = 'admin-key';

export type EnsureAdminKeyResult =
  /** First start: print `key` once (it is also in `path`, mode 0600). */
  | {
      readonly created: true;
      readonly source: 'file';
      readonly keyId: string;
      readonly key: string;
      readonly path: string;
    }
  /** The environment's key was registered (its plaintext is the operator's; nothing to print). */
  | { readonly created: true; readonly source: 'env'; readonly keyId: string }
  | { readonly created: false; readonly source: 'env' | 'store'; readonly keyId: string };

export async function ensureAdminKey(
  store: Store,
  stateDir: string,
  env: Readonly<Record<string, string | undefined>>,
): Promise<EnsureAdminKeyResult> {
  const fromEnv = env[ADMIN_KEY_ENV];
  if (fromEnv !== undefined) return ensureEnvKey(store, fromEnv);

  const existing = (await store.listApiKeys()).find((k) => k.scopes.includes('admin'));
  if (existing) return { created: false, source: 'store', keyId: existing.id };

  const key = generateApiKey();
  const path = join(stateDir, ADMIN_KEY_FILE);
  writeKeyFileOnce(stateDir, path, key);
  try {
    const record = await store.insertApiKey({
      id: newKeyId(),
      name: 'admin (first run)',
      prefix: displayPrefix(key),
      hash: hashApiKey(key),
      scopes: ['admin'],
    });
    return { created: true, source: 'file', keyId: record.id, key, path };
  } catch (error) {
    // The file must not outlive a key the store never accepted: the next start would refuse to proceed.
    unlinkSync(path);
    throw error;
  }
}

async function ensureEnvKey(store: Store, key: string): Promise<EnsureAdminKeyResult> {
  if (!PRESENTED_KEY_PATTERN.test(key)) {
    // Never echo the value: it is a secret even when malformed.
    throw new AdminKeyError(
      'ENV_KEY_INVALID',
      `${ADMIN_KEY_ENV} must be 32 to 256 characters of A-Z a-z 0-9 . _ ~ + / = - ` +
        '(e.g. the output of `openssl rand -base64 32`); unset it to have a key generated',
    );
  }
  const hash = hashApiKey(key);
  for (let attempt = 0; ; attempt++) {
    const found = await store.findApiKeyByHash(hash);
    if (found) {
      if (found.revokedAt !== null) {
        throw new AdminKeyError(
          'ENV_KEY_REVOKED',
          `the key in ${ADMIN_KEY_ENV} (${found.prefix}…, id ${found.id}) was revoked; set a new value`,
        );
      }
      if (!found.scopes.includes('admin')) {
        throw new AdminKeyError(
          'ENV_KEY_NOT_ADMIN',
          `the key in ${ADMIN_KEY_ENV} (${found.prefix}…, id ${found.id}) exists without scope "admin"; ` +
            'choose another value',
        );
      }
      return { created: false, source: 'env', keyId: found.id };
    }
    try {
      const record = await store.insertApiKey({
        id: newKeyId(),
        name: `admin (${ADMIN_KEY_ENV})`,
        prefix: displayPrefix(key),
        hash,
        scopes: ['admin'],
      });
      return { created: true, source: 'env', keyId: record.id };
    } catch (error) {
      // Another process registered the same key between our lookup and insert: look again, once.
      if (!(error instanceof StoreError && error.code === 'CONFLICT') || attempt > 0) throw error;
    }
  }
}

/** O_CREAT|O_EXCL: atomic, never overwrites, never follows a planted symlink. */
function writeKeyFileOnce(stateDir: string, path: string, key: string): void {
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new AdminKeyError(
      'STATE_DIR_UNUSABLE',
      `cannot create state directory ${stateDir}: ${String(error)}`,
      {
        cause: error,
      },
    );
  }
  let fd: number;
  try {
    fd = openSync(
      path,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new AdminKeyError(
        'ADMIN_KEY_FILE_EXISTS',
        `${path} exists, but the database has no active admin key (was the database replaced, or the key ` +
          `revoked?). Refusing to overwrite it: move it away to generate a new admin key, or set ${ADMIN_KEY_ENV}`,
      );
    }
    throw new AdminKeyError('STATE_DIR_UNUSABLE', `cannot create ${path}: ${String(error)}`, {
      cause: error,
    });
  }
  try {
    // The umask may have narrowed the mode further; make it exactly 0600.
    fchmodSync(fd, 0o600);
    writeSync(fd, `${key}\n`);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(path);
    throw new AdminKeyError('STATE_DIR_UNUSABLE', `cannot write ${path}: ${String(error)}`, { cause: error });
  }
  closeSync(fd);
}
