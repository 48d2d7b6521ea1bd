/**
 * The Store on PostgreSQL (`ironcage serve --database postgres://...`), for installations that keep state in a
 * managed database or run several servers against one. Same contract, validation, errors, cursors, ordering
 * and time format as the SQLite store: a client cannot tell the backends apart.
 *
 * Connections come from a bounded pg.Pool. Every error message names the database by its redacted URL (no
 * password, no secret query parameters): messages end up in logs and HTTP 500 bodies.
 */

import type { PoolClient } from 'pg';
import pg from 'pg';
import { decodeCursor, encodeCursor } from './cursor.js';
import { StoreError } from './errors.js';
import { type Migration, POSTGRES_MIGRATIONS } from './migrations.js';
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

export interface PostgresStoreOptions {
  /** Clock for created_at/revoked_at/audit times (tests inject one). Default: the system clock. */
  now?: () => Date;
  /** The schema steps to apply (default POSTGRES_MIGRATIONS; tests pass longer lists to simulate upgrades). */
  migrations?: readonly Migration[];
  /** Most connections the pool holds at once (default 10); further queries queue. */
  maxConnections?: number;
  /** How long a call may wait for a connection (a new one, or a free one of a full pool), ms (default 10000). */
  connectTimeoutMs?: number;
}

/**
 * The transaction-scoped advisory locks the store takes (pg_advisory_xact_lock(class, id); visible in pg_locks
 * as classid/objid): released by COMMIT/ROLLBACK, so a crashed server never leaves one held. The class is
 * "ICAG" in ASCII, to stay clear of other applications' locks.
 */
export const ADVISORY_LOCKS = {
  class: 0x49434147,
  /** Held while migrating: concurrent openers take turns. */
  migrate: 1,
  /** Held by each sandbox insert (ownerLimit, commit order). */
  sandboxInsert: 2,
  /** Held by each audit append (commit order). */
  auditInsert: 3,
} as const;
const LOCK_CLASS = ADVISORY_LOCKS.class;
const LOCK_MIGRATE = ADVISORY_LOCKS.migrate;
const LOCK_SANDBOX_INSERT = ADVISORY_LOCKS.sandboxInsert;
const LOCK_AUDIT_INSERT = ADVISORY_LOCKS.auditInsert;

const SECRET_PARAMS = new Set(['password', 'sslpassword']);
const URL_HINT = 'expected postgres://user:password@host:port/database';

interface ParsedUrl {
  /** For messages: no password, no secret query parameters. */
  readonly redacted: string;
  /** Every spelling of a secret that must never appear in a message. */
  readonly secrets: readonly string[];
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function parsePostgresUrl(url: string): ParsedUrl {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Never echo the text: it may hold a password.
    throw new StoreError('INVALID_INPUT', `invalid PostgreSQL URL (${URL_HINT})`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new StoreError(
      'INVALID_INPUT',
      `not a PostgreSQL URL: scheme ${JSON.stringify(parsed.protocol)} (${URL_HINT})`,
    );
  }
  const secrets = [parsed.password, safeDecode(parsed.password)];
  const kept = new URLSearchParams();
  for (const [name, value] of parsed.searchParams) {
    if (SECRET_PARAMS.has(name.toLowerCase())) secrets.push(value, encodeURIComponent(value));
    else kept.append(name, value);
  }
  const query = kept.toString() === '' ? '' : `?${kept.toString()}`;
  const user = parsed.username === '' ? '' : `${parsed.username}@`;
  return {
    redacted: `${parsed.protocol}//${user}${parsed.host}${parsed.pathname}${query}`,
    secrets: secrets.filter((s) => s !== ''),
  };
}

/** The URL as it may be shown: user, host, port, database; the password and secret parameters removed. */
export function redactDatabaseUrl(url: string): string {
  return parsePostgresUrl(url).redacted;
}

function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) out = out.replaceAll(secret, '***');
  return out;
}

/** A connect error's reason; Node's dual-stack connect reports an AggregateError with an empty message. */
function reasonOf(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) {
    return [...new Set(error.errors.map((e) => reasonOf(e)))].join('; ');
  }
  const { message, code } = (error ?? {}) as { message?: unknown; code?: unknown };
  if (typeof message === 'string' && message !== '') return message;
  return typeof code === 'string' ? code : String(error);
}

function pgCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

const NUL_REFUSED =
  'text must not contain NUL (U+0000) characters: PostgreSQL cannot store them (neither in text nor in jsonb)';

/** 22021: NUL byte in text; 22P05: \u0000 in jsonb. Both are the caller's input, like a schema violation. */
function isNulError(error: unknown): boolean {
  const code = pgCode(error);
  return code === '22021' || code === '22P05';
}

function hasNul(...values: (string | undefined)[]): boolean {
  return values.some((v) => v?.includes('\u0000') === true);
}

/** Opens a pool on `url`, checks it can connect, and brings the schema up to date. */
export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<Store> {
  if (typeof url !== 'string' || url.length === 0) {
    throw new StoreError('INVALID_INPUT', `database URL must be a non-empty string (${URL_HINT})`);
  }
  const target = parsePostgresUrl(url);
  const now = options.now ?? (() => new Date());
  const pool = new pg.Pool({
    connectionString: url,
    max: Math.max(1, Math.trunc(options.maxConnections ?? 10)),
    connectionTimeoutMillis: Math.max(1, Math.trunc(options.connectTimeoutMs ?? 10_000)),
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    application_name: 'ironcage',
  });
  // An idle connection the server drops (restart, failover) is discarded by the pool and the next query
  // opens a new one; without a listener, the 'error' event would crash the process.
  pool.on('error', () => {});
  try {
    await migrate(pool, target, options.migrations ?? POSTGRES_MIGRATIONS, now);
  } catch (error) {
    await pool.end().catch(() => {});
    throw error;
  }
  return new PostgresStore(pool, target, now);
}

/**
 * Applies the missing steps in one transaction. The advisory lock makes concurrent openers (two servers
 * starting against a fresh database) take turns: the second finds the steps recorded and applies nothing,
 * instead of failing halfway through a CREATE TABLE race.
 */
async function migrate(
  pool: pg.Pool,
  target: ParsedUrl,
  migrations: readonly Migration[],
  now: () => Date,
): Promise<void> {
  let client: PoolClient;
  try {
    client = await pool.connect();
  } catch (error) {
    throw new StoreError(
      'OPEN_FAILED',
      `cannot connect to ${target.redacted}: ${scrub(reasonOf(error), target.secrets)}`,
    );
  }
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCK_MIGRATE]);
    await client.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
    );
    const applied = (await client.query('SELECT version, name FROM schema_migrations ORDER BY version'))
      .rows as { version: number; name: string }[];
    checkApplied(applied, migrations, target.redacted);
    const newest = applied.at(-1)?.version ?? 0;
    for (const step of migrations) {
      if (step.version <= newest) continue;
      await client.query(step.sql);
      await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
        step.version,
        step.name,
        now().toISOString(),
      ]);
    }
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch((e: Error) => {
      broken = e;
    });
    if (error instanceof StoreError) throw error;
    throw new StoreError(
      'OPEN_FAILED',
      `cannot migrate database ${target.redacted}: ${scrub(reasonOf(error), target.secrets)}`,
    );
  } finally {
    client.release(broken);
  }
}

function checkApplied(
  applied: readonly { version: number; name: string }[],
  migrations: readonly Migration[],
  where: string,
): void {
  const latest = migrations.at(-1)?.version ?? 0;
  const newest = applied.at(-1)?.version ?? 0;
  if (newest > latest) {
    throw new StoreError(
      'SCHEMA_TOO_NEW',
      `database ${where} has schema version ${newest}, but this ironcage knows versions up to ${latest}: ` +
        'it was used by a newer ironcage. Upgrade ironcage, or point it at another database',
    );
  }
  for (const row of applied) {
    const known = migrations.find((m) => m.version === row.version);
    if (known?.name !== row.name) {
      throw new StoreError(
        'SCHEMA_MISMATCH',
        `database ${where} records migration ${row.version} "${row.name}", which this ironcage does not have ` +
          `(expected ${known ? `"${known.name}"` : 'none'}); it was not created by this ironcage line`,
      );
    }
  }
}

type KeyRow = StoredKeyRow<unknown>;
/** BIGINT columns: pg hands them over as strings. */
type SandboxRow = StoredSandboxRow<unknown, string>;
type AuditRow = StoredAuditRow<unknown, string>;
type TemplateRow = StoredTemplateRow<unknown>;

function bigint(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new StoreError('CORRUPT_ROW', `stored ${what} is not a safe integer`);
  return n;
}

/** pg has already parsed json/jsonb; what remains is checking the shape. */
const { toKey, toSandbox, toAudit, toTemplate } = rowReader<unknown, string>({
  json: (value) => value,
  integer: bigint,
});

/** A pool or one of its connections (inside a transaction). */
type Querier = { query(sql: string, params: unknown[]): Promise<pg.QueryResult> };

class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly #pool: pg.Pool;
  readonly #target: ParsedUrl;
  readonly #now: () => Date;
  #closed = false;

  constructor(pool: pg.Pool, target: ParsedUrl, now: () => Date) {
    this.#pool = pool;
    this.#target = target;
    this.#now = now;
  }

  #time(): string {
    return this.#now().toISOString();
  }

  #open(): void {
    if (this.#closed) throw new StoreError('STORE_CLOSED', 'the store is closed');
  }

  /** Input PostgreSQL refuses (NUL characters) becomes INVALID_INPUT; connection failures name the database. */
  #translate(error: unknown): unknown {
    if (error instanceof StoreError) return error;
    if (isNulError(error)) return new StoreError('INVALID_INPUT', NUL_REFUSED);
    if (!(error instanceof pg.DatabaseError)) {
      // Not the server refusing a statement: the connection failed (refused, reset, timed out).
      return new Error(
        `PostgreSQL ${this.#target.redacted}: ${scrub(reasonOf(error), this.#target.secrets)}`,
        { cause: error },
      );
    }
    return error;
  }

  async #query<R>(sql: string, params: unknown[] = [], on: Querier = this.#pool): Promise<R[]> {
    this.#open();
    try {
      return (await on.query(sql, params)).rows as R[];
    } catch (error) {
      throw this.#translate(error);
    }
  }

  async #count(sql: string, params: unknown[]): Promise<number> {
    this.#open();
    try {
      return (await this.#pool.query(sql, params)).rowCount ?? 0;
    } catch (error) {
      throw this.#translate(error);
    }
  }

  /** Runs `body` in a transaction on one pooled connection (READ COMMITTED: each statement sees all commits). */
  async #transaction<T>(body: (client: PoolClient) => Promise<T>): Promise<T> {
    this.#open();
    let client: PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw this.#translate(error);
    }
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await body(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      // A connection whose ROLLBACK failed is in an unknown state: destroy it rather than reuse it.
      await client.query('ROLLBACK').catch((e: Error) => {
        broken = e;
      });
      throw this.#translate(error);
    } finally {
      client.release(broken);
    }
  }

  async insertApiKey(key: NewApiKey): Promise<ApiKeyRecord> {
    this.#open();
    const input = parseInput(newApiKeySchema, key, 'API key');
    const scopes = [...new Set(input.scopes)].sort();
    try {
      const [row] = await this.#query<KeyRow>(
        'INSERT INTO api_keys (id, name, prefix, hash, scopes, limits, created_at) ' +
          'VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *',
        [input.id, input.name, input.prefix, input.hash, scopes, JSON.stringify(input.limits), this.#time()],
      );
      return withoutHash(toKey(row as KeyRow));
    } catch (error) {
      if (pgCode(error) === '23505') {
        throw new StoreError('CONFLICT', `an API key with id ${input.id} or the same secret already exists`);
      }
      throw error;
    }
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | null> {
    this.#open();
    if (!idSchema.safeParse(id).success) return null;
    const [row] = await this.#query<KeyRow>('SELECT * FROM api_keys WHERE id = $1', [id]);
    return row ? withoutHash(toKey(row)) : null;
  }

  async findApiKeyByHash(hash: string): Promise<StoredApiKey | null> {
    this.#open();
    if (!hashSchema.safeParse(hash).success) return null;
    const [row] = await this.#query<KeyRow>('SELECT * FROM api_keys WHERE hash = $1', [hash]);
    return row ? toKey(row) : null;
  }

  async listApiKeys(options: { includeRevoked?: boolean } = {}): Promise<ApiKeyRecord[]> {
    const rows = await this.#query<KeyRow>(
      options?.includeRevoked === true
        ? 'SELECT * FROM api_keys ORDER BY created_at, id'
        : 'SELECT * FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id',
    );
    return rows.map((row) => withoutHash(toKey(row)));
  }

  async revokeApiKey(id: string): Promise<ApiKeyRecord> {
    this.#open();
    const [row] = idSchema.safeParse(id).success
      ? await this.#query<KeyRow>(
          'UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING *',
          [this.#time(), id],
        )
      : [];
    if (!row) {
      const shown = typeof id === 'string' ? JSON.stringify(id) : `of type ${typeof id}`;
      throw new StoreError('NOT_FOUND', `no API key with id ${shown}`);
    }
    return withoutHash(toKey(row));
  }

  /**
   * Every sandbox insert holds one transaction-scoped advisory lock, for two reasons:
   * - ownerLimit: the count and the insert must be atomic. In READ COMMITTED the count, run after the lock is
   *   granted, sees every earlier insert committed. A row lock on the owner's key row would do that per owner,
   *   and SERIALIZABLE would need a retry loop for the serialization failures it raises under exactly this load.
   * - cursors: identity values are handed out at insert time but become visible at commit; two unserialized
   *   inserts could commit out of order and a reader paging past seq 6 would never see a late-committing seq 5.
   *   Serializing inserts makes seq order commit order, which the owner row lock alone would not (other owners).
   * Sandbox creation is far slower than this lock is held (a few round trips), so it costs no throughput.
   */
  async recordSandbox(sandbox: NewSandbox, options: RecordSandboxOptions = {}): Promise<SandboxRecord> {
    this.#open();
    const input = parseInput(newSandboxSchema, sandbox, 'sandbox record');
    const { ownerLimit } = parseInput(recordSandboxOptionsSchema, options, 'recordSandbox options');
    try {
      const row = await this.#transaction(async (client) => {
        await client.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCK_SANDBOX_INSERT]);
        if (ownerLimit !== undefined && ownerLimit !== null) {
          const [counted] = await this.#query<{ n: number }>(
            'SELECT COUNT(*)::int AS n FROM sandboxes WHERE owner_key_id = $1',
            [input.ownerKeyId],
            client,
          );
          const n = counted?.n ?? 0;
          if (n >= ownerLimit) {
            throw new StoreError(
              'LIMIT_REACHED',
              `key ${input.ownerKeyId} already owns ${n} sandboxes (limit ${ownerLimit})`,
            );
          }
        }
        const [inserted] = await this.#query<SandboxRow>(
          'INSERT INTO sandboxes (sandbox_id, owner_key_id, created_at, template, metadata) ' +
            'VALUES ($1, $2, $3, $4, $5) RETURNING *',
          [input.sandboxId, input.ownerKeyId, this.#time(), input.template, JSON.stringify(input.metadata)],
          client,
        );
        return inserted as SandboxRow;
      });
      return toSandbox(row);
    } catch (error) {
      if (pgCode(error) === '23503') {
        throw new StoreError('INVALID_INPUT', `owner key ${input.ownerKeyId} does not exist`);
      }
      if (pgCode(error) === '23505') {
        throw new StoreError('CONFLICT', `sandbox ${input.sandboxId} is already recorded`);
      }
      throw error;
    }
  }

  async getSandbox(sandboxId: string): Promise<SandboxRecord | null> {
    this.#open();
    if (!idSchema.safeParse(sandboxId).success) return null;
    const [row] = await this.#query<SandboxRow>('SELECT * FROM sandboxes WHERE sandbox_id = $1', [sandboxId]);
    return row ? toSandbox(row) : null;
  }

  async listSandboxes(query: SandboxQuery = {}): Promise<Page<SandboxRecord>> {
    this.#open();
    const q = parseInput(sandboxQuerySchema, query, 'sandbox query');
    const where: string[] = [];
    const params: unknown[] = [];
    const param = (value: unknown) => {
      params.push(value);
      return `$${params.length}`;
    };
    if (q.cursor !== undefined) where.push(`seq > ${param(decodeCursor(q.cursor))}`);
    if (q.ownerKeyId !== undefined) where.push(`owner_key_id = ${param(q.ownerKeyId)}`);
    if (q.template !== undefined) where.push(`template = ${param(q.template)}`);
    const metadata = Object.entries(q.metadata ?? {});
    // Nothing stored holds a NUL (it is refused on write), so such a filter matches nothing.
    if (metadata.some(([key, value]) => hasNul(key, value))) return { items: [], next: null };
    // Containment of a flat object of strings is exact key/value equality for every entry (AND), and any
    // key spelling is just JSON data here, never part of a path expression.
    if (metadata.length > 0) where.push(`metadata @> ${param(JSON.stringify(q.metadata))}::jsonb`);
    const sql =
      `SELECT * FROM sandboxes ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ` +
      `ORDER BY seq LIMIT ${param(q.limit + 1)}`;
    const rows = await this.#query<SandboxRow>(sql, params);
    const more = rows.length > q.limit;
    const page = more ? rows.slice(0, q.limit) : rows;
    const last = page.at(-1);
    return {
      items: page.map(toSandbox),
      next: more && last ? encodeCursor(bigint(last.seq, 'sandbox sequence number')) : null,
    };
  }

  async countSandboxes(ownerKeyId: string): Promise<number> {
    this.#open();
    if (!idSchema.safeParse(ownerKeyId).success) return 0;
    const [row] = await this.#query<{ n: number }>(
      'SELECT COUNT(*)::int AS n FROM sandboxes WHERE owner_key_id = $1',
      [ownerKeyId],
    );
    return row?.n ?? 0;
  }

  async deleteSandbox(sandboxId: string): Promise<boolean> {
    this.#open();
    if (!idSchema.safeParse(sandboxId).success) return false;
    return (await this.#count('DELETE FROM sandboxes WHERE sandbox_id = $1', [sandboxId])) > 0;
  }

  /** Inserts are serialized (advisory lock) so ids become visible in id order; see recordSandbox. */
  async appendAuditEvent(event: NewAuditEvent): Promise<AuditEvent> {
    this.#open();
    const input = parseInput(newAuditEventSchema, event, 'audit event');
    const time = input.time ?? this.#time();
    const row = await this.#transaction(async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCK_AUDIT_INSERT]);
      const [inserted] = await this.#query<AuditRow>(
        'INSERT INTO audit_events (time, request_id, key_id, sandbox_id, type, payload) ' +
          'VALUES ($1, $2, $3, $4, $5, $6::json) RETURNING *',
        [time, input.requestId, input.keyId, input.sandboxId, input.type, JSON.stringify(input.payload)],
        client,
      );
      return inserted as AuditRow;
    });
    return toAudit(row);
  }

  async listAuditEvents(query: AuditQuery = {}): Promise<AuditPage> {
    this.#open();
    const q = parseInput(auditQuerySchema, query, 'audit query');
    if (hasNul(q.keyId, q.sandboxId, q.type)) return { events: [], next: null };
    const where: string[] = [];
    const params: unknown[] = [];
    const param = (value: unknown) => {
      params.push(value);
      return `$${params.length}`;
    };
    if (q.after !== undefined) {
      // Ids are safe integers; a larger `after` (valid input) would not parse as a bigint parameter.
      const after = Math.min(q.after, Number.MAX_SAFE_INTEGER);
      where.push(`id ${q.order === 'asc' ? '>' : '<'} ${param(after)}`);
    }
    for (const [column, value] of [
      ['key_id', q.keyId],
      ['sandbox_id', q.sandboxId],
      ['type', q.type],
    ] as const) {
      if (value !== undefined) where.push(`${column} = ${param(value)}`);
    }
    const sql =
      `SELECT * FROM audit_events ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ` +
      `ORDER BY id ${q.order === 'asc' ? 'ASC' : 'DESC'} LIMIT ${param(q.limit + 1)}`;
    const rows = await this.#query<AuditRow>(sql, params);
    const more = rows.length > q.limit;
    const page = more ? rows.slice(0, q.limit) : rows;
    const events = page.map(toAudit);
    const last = events.at(-1);
    return { events, next: more && last ? last.id : null };
  }

  async deleteAuditEventsBefore(time: string): Promise<number> {
    this.#open();
    const before = parseInput(isoTimeSchema, time, 'time');
    return this.#count('DELETE FROM audit_events WHERE time < $1', [before]);
  }

  async putTemplate(name: string, template: Record<string, unknown>): Promise<TemplateRecord> {
    this.#open();
    const validName = parseInput(templateNameSchema, name, 'template name');
    const body = parseInput(templateBodySchema, template, 'template');
    const now = this.#time();
    const [row] = await this.#query<TemplateRow>(
      'INSERT INTO templates (name, template, created_at, updated_at) VALUES ($1, $2::json, $3, $4) ' +
        'ON CONFLICT (name) DO UPDATE SET template = EXCLUDED.template, updated_at = EXCLUDED.updated_at ' +
        'RETURNING *',
      [validName, JSON.stringify(body), now, now],
    );
    return toTemplate(row as TemplateRow);
  }

  async getTemplate(name: string): Promise<TemplateRecord | null> {
    this.#open();
    if (!templateNameSchema.safeParse(name).success) return null;
    const [row] = await this.#query<TemplateRow>('SELECT * FROM templates WHERE name = $1', [name]);
    return row ? toTemplate(row) : null;
  }

  async listTemplates(): Promise<TemplateRecord[]> {
    return (await this.#query<TemplateRow>('SELECT * FROM templates ORDER BY name')).map(toTemplate);
  }

  async deleteTemplate(name: string): Promise<boolean> {
    this.#open();
    if (!templateNameSchema.safeParse(name).success) return false;
    return (await this.#count('DELETE FROM templates WHERE name = $1', [name])) > 0;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }
}
