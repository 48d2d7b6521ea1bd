export { decodeCursor, encodeCursor } from './cursor.js';
export { StoreError, type StoreErrorCode } from './errors.js';
export { type Migration, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS } from './migrations.js';
export {
  DATABASE_URL_ENV,
  describeDatabase,
  type OpenStoreOptions,
  openStore,
  SQLITE_FILE,
} from './open.js';
export { openPostgresStore, type PostgresStoreOptions, redactDatabaseUrl } from './postgres.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite.js';
export {
  type ApiKeyRecord,
  type AuditEvent,
  type AuditPage,
  type AuditQuery,
  type KeyLimits,
  type NewApiKey,
  type NewAuditEvent,
  type NewSandbox,
  type Page,
  type RecordSandboxOptions,
  type SandboxMetadata,
  type SandboxQuery,
  type SandboxRecord,
  SCOPES,
  type Scope,
  type Store,
  type StoredApiKey,
  type TemplateRecord,
} from './types.js';
