/**
 * Picks the store for `ironcage serve`: SQLite in the state directory unless a PostgreSQL URL is given
 * (`--database` or $IRONCAGE_DATABASE_URL). Anything else is refused rather than guessed at.
 */
import { join } from 'node:path';
import { StoreError } from './errors.js';
import { openPostgresStore, redactDatabaseUrl } from './postgres.js';
import { openSqliteStore } from './sqlite.js';
import type { Store } from './types.js';

export const DATABASE_URL_ENV = 'IRONCAGE_DATABASE_URL';
/** The SQLite file's name inside the state directory. */
export const SQLITE_FILE = 'ironcage.db';

export interface OpenStoreOptions {
  /** A postgres:// or postgresql:// URL; unset or empty: SQLite at <stateDir>/ironcage.db. */
  database?: string | undefined;
  stateDir: string;
  /** Clock for stored times (tests inject one). */
  now?: () => Date;
  /** PostgreSQL only: most pooled connections (default 10). */
  maxConnections?: number;
}

/** Which backend `database` selects, without opening anything (for messages and logs). */
export function describeDatabase(options: Pick<OpenStoreOptions, 'database' | 'stateDir'>): string {
  const database = options.database ?? '';
  return database === ''
    ? `sqlite ${join(options.stateDir, SQLITE_FILE)}`
    : redactDatabaseUrl(checkedUrl(database));
}

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const now = options.now ? { now: options.now } : {};
  const database = options.database ?? '';
  if (database === '') return openSqliteStore(join(options.stateDir, SQLITE_FILE), now);
  return openPostgresStore(checkedUrl(database), {
    ...now,
    ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }),
  });
}

function checkedUrl(database: string): string {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(database)?.[1]?.toLowerCase();
  if (scheme === 'postgres' || scheme === 'postgresql') return database;
  // Only the scheme is echoed: the rest may hold a password.
  throw new StoreError(
    'INVALID_INPUT',
    `unsupported database ${scheme === undefined ? '(no URL scheme)' : `scheme "${scheme}:"`}: ` +
      'give a postgres://user:password@host:port/database URL, or leave it unset for SQLite in the state directory',
  );
}
