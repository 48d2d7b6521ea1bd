/**
 * The schema as an ordered list of steps. A step, once released, never changes: new needs get a new step at
 * the end. Each applied step is recorded in schema_migrations (version, name, time), so an open knows what is
 * there, applies the rest in one transaction, and refuses a database that a newer ironcage migrated further.
 *
 * Each backend keeps its own list (SQLite's and PostgreSQL's dialects differ) with the same versions and names,
 * so a version number means the same schema on either.
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

/**
 * PostgreSQL's schema, step for step the same as SQLITE_MIGRATIONS. Choices that keep both backends answering
 * identically:
 * - Text columns that are compared or ordered are COLLATE "C" (bytewise, as SQLite compares TEXT), so ids,
 *   names and times sort the same whatever locale the database was created with.
 * - Times are the normalized ISO-8601 text the store writes, not timestamptz: values round-trip exactly and
 *   the accepted range is the same (timestamptz has no year 0); text order is time order for that form.
 * - Audit payloads and template bodies are `json` (kept as written: key order, \u0000 escapes); metadata is
 *   jsonb because it is queried (containment, GIN-indexed).
 * - GENERATED ALWAYS identities never reuse a value, like SQLite's AUTOINCREMENT.
 */
export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
      CREATE TABLE api_keys (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT COLLATE "C" NOT NULL UNIQUE,
        scopes TEXT[] NOT NULL,
        limits JSONB NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        revoked_at TEXT COLLATE "C"
      );

      CREATE TABLE sandboxes (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sandbox_id TEXT COLLATE "C" NOT NULL UNIQUE,
        owner_key_id TEXT COLLATE "C" NOT NULL REFERENCES api_keys(id),
        created_at TEXT COLLATE "C" NOT NULL,
        template TEXT COLLATE "C",
        metadata JSONB NOT NULL
      );
      CREATE INDEX sandboxes_owner ON sandboxes (owner_key_id, seq);
      CREATE INDEX sandboxes_metadata ON sandboxes USING GIN (metadata jsonb_path_ops);

      CREATE TABLE audit_events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time TEXT COLLATE "C" NOT NULL,
        request_id TEXT,
        key_id TEXT COLLATE "C",
        sandbox_id TEXT COLLATE "C",
        type TEXT COLLATE "C" NOT NULL,
        payload JSON NOT NULL
      );
      CREATE INDEX audit_events_key ON audit_events (key_id, id);
      CREATE INDEX audit_events_sandbox ON audit_events (sandbox_id, id);
      CREATE INDEX audit_events_time ON audit_events (time);

      CREATE TABLE templates (
        name TEXT COLLATE "C" PRIMARY KEY,
        template JSON NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
      );
    `,
  },
];
