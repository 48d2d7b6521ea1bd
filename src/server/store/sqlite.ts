/**
 * The embedded default Store: one SQLite file (better-sqlite3) in the state directory.
 *
 * WAL lets readers run while a writer commits, and busy_timeout makes a second process (a CLI reading the
 * audit log while the server runs) wait instead of failing with SQLITE_BUSY. synchronous=NORMAL in WAL mode
 * fsyncs at checkpoints, not at every commit: a crashed process loses nothing, a power cut may lose the last
 * few commits, and an audited request does not pay an fsync.
 */
import Database from 'better-sqlite3';
import { decodeCursor, encodeCursor } from './cursor.js';
import { StoreError } from './errors.js';
import { type Migration, SQLITE_MIGRATIONS } from './migrations.js';
import {
  rowReader,
  type AuditRow as StoredAuditRow,
  type KeyRow as StoredKeyRow,
  type SandboxRow as StoredSandboxRow,
  type TemplateRow as StoredTemplateRow,
  withoutHash,
} from './rows.js';
import {
  type ApiKeyRecord,
  type AuditEvent,
  type AuditPage,
  type AuditQuery,
  auditQuerySchema,
  hashSchema,
  idSchema,
  isoTimeSchema,
  type NewApiKey,
  type NewAuditEvent,
  type NewSandbox,
  newApiKeySchema,
  newAuditEventSchema,
  newSandboxSchema,
  type Page,
  parseInput,
  type RecordSandboxOptions,
  recordSandboxOptionsSchema,
  type SandboxQuery,
  type SandboxRecord,
  type Store,
  type StoredApiKey,
  sandboxQuerySchema,
  type TemplateRecord,
  templateBodySchema,
  templateNameSchema,
} from './types.js';

export interface SqliteStoreOptions {
  /** Clock for created_at/revoked_at/audit times (tests inject one). Default: the system clock. */
  now?: () => Date;
  /** How long a statement waits for another connection's lock, ms (default 5000). */
  busyTimeoutMs?: number;
  /** The schema steps to apply (default SQLITE_MIGRATIONS; tests pass longer lists to simulate upgrades). */
  migrations?: readonly Migration[];
}

type KeyRow = StoredKeyRow<string>;
type SandboxRow = StoredSandboxRow<string, number>;
type AuditRow = StoredAuditRow<string, number>;
type TemplateRow = StoredTemplateRow<string>;

/** better-sqlite3 returns JSON columns as text and INTEGER as number. */
const { toKey, toSandbox, toAudit, toTemplate } = rowReader<string, number>({
  json(text, what) {
    try {
      return JSON.parse(text);
    } catch {
      throw new StoreError('CORRUPT_ROW', `stored ${what} is not valid JSON`);
    }
  },
  integer: (n) => n,
});

/** Opens (creating if needed) the database at `path` and brings its schema up to date. */
export function openSqliteStore(path: string, options: SqliteStoreOptions = {}): Store {
  if (typeof path !== 'string' || path.length === 0) {
    throw new StoreError('INVALID_INPUT', 'database path must be a non-empty string');
  }
  let db: Database.Database;
  try {
    db = new Database(path);
  } catch (error) {
    throw new StoreError('OPEN_FAILED', `cannot open database ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  try {
    configure(db, path, options.busyTimeoutMs ?? 5000);
    migrate(db, path, options.migrations ?? SQLITE_MIGRATIONS, options.now ?? (() => new Date()));
  } catch (error) {
    db.close();
    throw error;
  }
  return new SqliteStore(db, options.now ?? (() => new Date()));
}

function configure(db: Database.Database, path: string, busyTimeoutMs: number): void {
  try {
    // busy_timeout first, so the switch to WAL also waits for a concurrent opener.
    db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(busyTimeoutMs))}`);
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') {
      throw new StoreError(
        'OPEN_FAILED',
        `database ${path} could not switch to WAL mode (got ${String(mode)}); it needs a local filesystem`,
      );
    }
    db.pragma('foreign_keys = ON');
    db.pragma('synchronous = NORMAL');
  } catch (error) {
    if (error instanceof StoreError) throw error;
    // SQLITE_NOTADB and friends surface on the first statement, not in the constructor.
    throw new StoreError('OPEN_FAILED', `cannot use ${path} as a database: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function migrate(
  db: Database.Database,
  path: string,
  migrations: readonly Migration[],
  now: () => Date,
): void {
  const latest = migrations.at(-1)?.version ?? 0;
  const run = db.transaction(() => {
    db.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT',
    );
    const applied = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all() as {
      version: number;
      name: string;
    }[];
    const newest = applied.at(-1)?.version ?? 0;
    if (newest > latest) {
      throw new StoreError(
        'SCHEMA_TOO_NEW',
        `database ${path} has schema version ${newest}, but this ironcage knows versions up to ${latest}: ` +
          'it was used by a newer ironcage. Upgrade ironcage, or point it at another state directory',
      );
    }
    for (const row of applied) {
      const known = migrations.find((m) => m.version === row.version);
      if (known?.name !== row.name) {
        throw new StoreError(
          'SCHEMA_MISMATCH',
          `database ${path} records migration ${row.version} "${row.name}", which this ironcage does not have ` +
            `(expected ${known ? `"${known.name}"` : 'none'}); it was not created by this ironcage line`,
        );
      }
    }
    const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
    for (const step of migrations) {
      if (step.version <= newest) continue;
      db.exec(step.sql);
      record.run(step.version, step.name, now().toISOString());
    }
  });
  try {
    // IMMEDIATE takes the write lock up front: two processes opening a fresh file cannot both migrate it.
    run.immediate();
  } catch (error) {
    if (error instanceof StoreError) throw error;
    throw new StoreError('OPEN_FAILED', `cannot migrate database ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function sqliteCode(error: unknown): string {
  return error instanceof Database.SqliteError ? error.code : '';
}

function isUniqueViolation(error: unknown): boolean {
  const code = sqliteCode(error);
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  readonly #db: Database.Database;
  readonly #now: () => Date;
  #closed = false;
  readonly #stmt: ReturnType<typeof prepareStatements>;

  constructor(db: Database.Database, now: () => Date) {
    this.#db = db;
    this.#now = now;
    this.#stmt = prepareStatements(db);
  }

  #time(): string {
    return this.#now().toISOString();
  }

  /** Runs a synchronous body as the async contract; errors become rejections, never synchronous throws. */
  async #run<T>(body: () => T): Promise<T> {
    if (this.#closed) throw new StoreError('STORE_CLOSED', 'the store is closed');
    return body();
  }

  insertApiKey(key: NewApiKey): Promise<ApiKeyRecord> {
    return this.#run(() => {
      const input = parseInput(newApiKeySchema, key, 'API key');
      const scopes = [...new Set(input.scopes)].sort();
      try {
        const row = this.#stmt.insertKey.get(
          input.id,
          input.name,
          input.prefix,
          input.hash,
          JSON.stringify(scopes),
          JSON.stringify(input.limits),
          this.#time(),
        ) as KeyRow;
        return withoutHash(toKey(row));
      } catch (error) {
        if (isUniqueViolation(error)) {
          throw new StoreError(
            'CONFLICT',
            `an API key with id ${input.id} or the same secret already exists`,
          );
        }
        throw error;
      }
    });
  }

  getApiKey(id: string): Promise<ApiKeyRecord | null> {
    return this.#run(() => {
      if (!idSchema.safeParse(id).success) return null;
      const row = this.#stmt.getKey.get(id) as KeyRow | undefined;
      return row ? withoutHash(toKey(row)) : null;
    });
  }

  findApiKeyByHash(hash: string): Promise<StoredApiKey | null> {
    return this.#run(() => {
      if (!hashSchema.safeParse(hash).success) return null;
      const row = this.#stmt.getKeyByHash.get(hash) as KeyRow | undefined;
      return row ? toKey(row) : null;
    });
  }

  listApiKeys(options: { includeRevoked?: boolean } = {}): Promise<ApiKeyRecord[]> {
    return this.#run(() => {
      const rows = (
        options?.includeRevoked === true ? this.#stmt.listAllKeys.all() : this.#stmt.listLiveKeys.all()
      ) as KeyRow[];
      return rows.map((row) => withoutHash(toKey(row)));
    });
  }

  revokeApiKey(id: string): Promise<ApiKeyRecord> {
    return this.#run(() => {
      const row = idSchema.safeParse(id).success
        ? (this.#stmt.revokeKey.get(this.#time(), id) as KeyRow | undefined)
        : undefined;
      if (!row) {
        const shown = typeof id === 'string' ? JSON.stringify(id) : `of type ${typeof id}`;
        throw new StoreError('NOT_FOUND', `no API key with id ${shown}`);
      }
      return withoutHash(toKey(row));
    });
  }

  recordSandbox(sandbox: NewSandbox, options: RecordSandboxOptions = {}): Promise<SandboxRecord> {
    return this.#run(() => {
      const input = parseInput(newSandboxSchema, sandbox, 'sandbox record');
      const { ownerLimit } = parseInput(recordSandboxOptionsSchema, options, 'recordSandbox options');
      const insert = this.#db.transaction(() => {
        if (ownerLimit !== undefined && ownerLimit !== null) {
          const { n } = this.#stmt.countSandboxes.get(input.ownerKeyId) as { n: number };
          if (n >= ownerLimit) {
            throw new StoreError(
              'LIMIT_REACHED',
              `key ${input.ownerKeyId} already owns ${n} sandboxes (limit ${ownerLimit})`,
            );
          }
        }
        return this.#stmt.insertSandbox.get(
          input.sandboxId,
          input.ownerKeyId,
          this.#time(),
          input.template,
          JSON.stringify(input.metadata),
        ) as SandboxRow;
      });
      try {
        return toSandbox(insert.immediate());
      } catch (error) {
        const code = sqliteCode(error);
        if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') {
          throw new StoreError('INVALID_INPUT', `owner key ${input.ownerKeyId} does not exist`);
        }
        if (isUniqueViolation(error)) {
          throw new StoreError('CONFLICT', `sandbox ${input.sandboxId} is already recorded`);
        }
        throw error;
      }
    });
  }

  getSandbox(sandboxId: string): Promise<SandboxRecord | null> {
    return this.#run(() => {
      if (!idSchema.safeParse(sandboxId).success) return null;
      const row = this.#stmt.getSandbox.get(sandboxId) as SandboxRow | undefined;
      return row ? toSandbox(row) : null;
    });
  }

  listSandboxes(query: SandboxQuery = {}): Promise<Page<SandboxRecord>> {
    return this.#run(() => {
      const q = parseInput(sandboxQuerySchema, query, 'sandbox query');
      const where: string[] = [];
      const params: (string | number)[] = [];
      if (q.cursor !== undefined) {
        where.push('seq > ?');
        params.push(decodeCursor(q.cursor));
      }
      if (q.ownerKeyId !== undefined) {
        where.push('owner_key_id = ?');
        params.push(q.ownerKeyId);
      }
      if (q.template !== undefined) {
        where.push('template = ?');
        params.push(q.template);
      }
      // json_each matches any key spelling exactly; a JSON path would need the key quoted and escaped.
      for (const [key, value] of Object.entries(q.metadata ?? {})) {
        where.push(
          "EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) AS m WHERE m.key = ? AND m.type = 'text' AND m.value = ?)",
        );
        params.push(key, value);
      }
      const sql =
        `SELECT * FROM sandboxes ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ` +
        'ORDER BY seq LIMIT ?';
      const rows = this.#db.prepare(sql).all(...params, q.limit + 1) as SandboxRow[];
      const more = rows.length > q.limit;
      const page = more ? rows.slice(0, q.limit) : rows;
      const last = page.at(-1);
      return { items: page.map(toSandbox), next: more && last ? encodeCursor(last.seq) : null };
    });
  }

  countSandboxes(ownerKeyId: string): Promise<number> {
    return this.#run(() => {
      if (!idSchema.safeParse(ownerKeyId).success) return 0;
      return (this.#stmt.countSandboxes.get(ownerKeyId) as { n: number }).n;
    });
  }

  deleteSandbox(sandboxId: string): Promise<boolean> {
    return this.#run(() => {
      if (!idSchema.safeParse(sandboxId).success) return false;
      return this.#stmt.deleteSandbox.run(sandboxId).changes > 0;
    });
  }

  appendAuditEvent(event: NewAuditEvent): Promise<AuditEvent> {
    return this.#run(() => {
      const input = parseInput(newAuditEventSchema, event, 'audit event');
      const row = this.#stmt.insertAudit.get(
        input.time ?? this.#time(),
        input.requestId,
        input.keyId,
        input.sandboxId,
        input.type,
        JSON.stringify(input.payload),
      ) as AuditRow;
      return toAudit(row);
    });
  }

  listAuditEvents(query: AuditQuery = {}): Promise<AuditPage> {
    return this.#run(() => {
      const q = parseInput(auditQuerySchema, query, 'audit query');
      const where: string[] = [];
      const params: (string | number)[] = [];
      if (q.after !== undefined) {
        where.push(q.order === 'asc' ? 'id > ?' : 'id < ?');
        params.push(q.after);
      }
      for (const [column, value] of [
        ['key_id', q.keyId],
        ['sandbox_id', q.sandboxId],
        ['type', q.type],
      ] as const) {
        if (value === undefined) continue;
        where.push(`${column} = ?`);
        params.push(value);
      }
      const sql =
        `SELECT * FROM audit_events ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ` +
        `ORDER BY id ${q.order === 'asc' ? 'ASC' : 'DESC'} LIMIT ?`;
      const rows = this.#db.prepare(sql).all(...params, q.limit + 1) as AuditRow[];
      const more = rows.length > q.limit;
      const page = more ? rows.slice(0, q.limit) : rows;
      const last = page.at(-1);
      return { events: page.map(toAudit), next: more && last ? last.id : null };
    });
  }

  deleteAuditEventsBefore(time: string): Promise<number> {
    return this.#run(() => {
      const before = parseInput(isoTimeSchema, time, 'time');
      return this.#stmt.deleteAuditBefore.run(before).changes;
    });
  }

  putTemplate(name: string, template: Record<string, unknown>): Promise<TemplateRecord> {
    return this.#run(() => {
      const validName = parseInput(templateNameSchema, name, 'template name');
      const body = parseInput(templateBodySchema, template, 'template');
      const now = this.#time();
      const row = this.#stmt.putTemplate.get(validName, JSON.stringify(body), now, now) as TemplateRow;
      return toTemplate(row);
    });
  }

  getTemplate(name: string): Promise<TemplateRecord | null> {
    return this.#run(() => {
      if (!templateNameSchema.safeParse(name).success) return null;
      const row = this.#stmt.getTemplate.get(name) as TemplateRow | undefined;
      return row ? toTemplate(row) : null;
    });
  }

  listTemplates(): Promise<TemplateRecord[]> {
    return this.#run(() => (this.#stmt.listTemplates.all() as TemplateRow[]).map(toTemplate));
  }

  deleteTemplate(name: string): Promise<boolean> {
    return this.#run(() => {
      if (!templateNameSchema.safeParse(name).success) return false;
      return this.#stmt.deleteTemplate.run(name).changes > 0;
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }
}

/** Statements on hot paths (every request authenticates and may audit), prepared once. */
function prepareStatements(db: Database.Database) {
  return {
    insertKey: db.prepare(
      'INSERT INTO api_keys (id, name, prefix, hash, scopes, limits, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *',
    ),
    getKey: db.prepare('SELECT * FROM api_keys WHERE id = ?'),
    getKeyByHash: db.prepare('SELECT * FROM api_keys WHERE hash = ?'),
    listAllKeys: db.prepare('SELECT * FROM api_keys ORDER BY created_at, id'),
    listLiveKeys: db.prepare('SELECT * FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id'),
    revokeKey: db.prepare(
      'UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING *',
    ),
    insertSandbox: db.prepare(
      'INSERT INTO sandboxes (sandbox_id, owner_key_id, created_at, template, metadata) VALUES (?, ?, ?, ?, ?) RETURNING *',
    ),
    getSandbox: db.prepare('SELECT * FROM sandboxes WHERE sandbox_id = ?'),
    countSandboxes: db.prepare('SELECT COUNT(*) AS n FROM sandboxes WHERE owner_key_id = ?'),
    deleteSandbox: db.prepare('DELETE FROM sandboxes WHERE sandbox_id = ?'),
    insertAudit: db.prepare(
      'INSERT INTO audit_events (time, request_id, key_id, sandbox_id, type, payload) VALUES (?, ?, ?, ?, ?, ?) RETURNING *',
    ),
    deleteAuditBefore: db.prepare('DELETE FROM audit_events WHERE time < ?'),
    putTemplate: db.prepare(
      'INSERT INTO templates (name, template, created_at, updated_at) VALUES (?, ?, ?, ?) ' +
        'ON CONFLICT (name) DO UPDATE SET template = excluded.template, updated_at = excluded.updated_at RETURNING *',
    ),
    getTemplate: db.prepare('SELECT * FROM templates WHERE name = ?'),
    listTemplates: db.prepare('SELECT * FROM templates ORDER BY name'),
    deleteTemplate: db.prepare('DELETE FROM templates WHERE name = ?'),
  };
}
