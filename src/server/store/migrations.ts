/**
 * The schema as an ordered list of steps. A step, once released, never changes: new needs get a new step at
 * the end. Each applied step is recorded in schema_migrations (version, name, time), so an open knows what is
 * there, applies the rest in one transaction, and refuses a database that a newer ironcage migrated further.
 *
 * The SQL is SQLite's; a PostgreSQL store keeps its own list with the same versions and names.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
      CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        limits TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
      ) STRICT;

      -- seq orders pages; AUTOINCREMENT so a deleted row's seq is never reused (a cursor pointing at it
      -- would otherwise skip the newcomer).
      CREATE TABLE sandboxes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sandbox_id TEXT NOT NULL UNIQUE,
        owner_key_id TEXT NOT NULL REFERENCES api_keys(id),
        created_at TEXT NOT NULL,
        template TEXT,
        metadata TEXT NOT NULL
      ) STRICT;
      CREATE INDEX sandboxes_owner ON sandboxes(owner_key_id, seq);

      CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        request_id TEXT,
        key_id TEXT,
        sandbox_id TEXT,
        type TEXT NOT NULL,
        payload TEXT NOT NULL
      ) STRICT;
      CREATE INDEX audit_events_key ON audit_events(key_id, id);
      CREATE INDEX audit_events_sandbox ON audit_events(sandbox_id, id);
      CREATE INDEX audit_events_time ON audit_events(time);

      CREATE TABLE templates (
        name TEXT PRIMARY KEY,
        template TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
    `,
  },
];
