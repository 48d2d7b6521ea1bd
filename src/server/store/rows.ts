/**
 * Stored rows → the Store's records, for both backends. They differ only in how a column arrives: SQLite
 * hands JSON columns over as text and integers as numbers; pg has parsed json/jsonb already and hands BIGINT
 * over as a string. A backend passes a ColumnCodec for that; the mapping and the shape checks are shared.
 */
import { z } from 'zod';
import { StoreError } from './errors.js';
import {
  type ApiKeyRecord,
  type AuditEvent,
  keyLimitsSchema,
  type SandboxRecord,
  SCOPES,
  type StoredApiKey,
  type TemplateRecord,
} from './types.js';

/** `J`: how a JSON column arrives; `N`: how a BIGINT arrives. */
export interface ColumnCodec<J, N> {
  json(value: J, what: string): unknown;
  integer(value: N, what: string): number;
}

export interface KeyRow<J> {
  id: string;
  name: string;
  prefix: string;
  hash: string;
  scopes: J;
  limits: J;
  created_at: string;
  revoked_at: string | null;
}

export interface SandboxRow<J, N> {
  seq: N;
  sandbox_id: string;
  owner_key_id: string;
  created_at: string;
  template: string | null;
  metadata: J;
}

export interface AuditRow<J, N> {
  id: N;
  time: string;
  request_id: string | null;
  key_id: string | null;
  sandbox_id: string | null;
  type: string;
  payload: J;
}

export interface TemplateRow<J> {
  name: string;
  template: J;
  created_at: string;
  updated_at: string;
}

const scopesColumn = z.array(z.enum(SCOPES)).min(1);
const metadataColumn = z.record(z.string());
const templateColumn = z.record(z.unknown());

/** The public view of a key: the hash stays inside the store and authentication. */
export function withoutHash(key: StoredApiKey): ApiKeyRecord {
  const { hash: _hash, ...rest } = key;
  return rest;
}

export function rowReader<J, N>(codec: ColumnCodec<J, N>) {
  const column = <S extends z.ZodTypeAny>(schema: S, value: J, what: string): z.output<S> => {
    const result = schema.safeParse(codec.json(value, what));
    if (!result.success) throw new StoreError('CORRUPT_ROW', `stored ${what} does not match its schema`);
    return result.data;
  };
  return {
    toKey: (row: KeyRow<J>): StoredApiKey => ({
      id: row.id,
      name: row.name,
      prefix: row.prefix,
      hash: row.hash,
      scopes: column(scopesColumn, row.scopes, `scopes of key ${row.id}`),
      limits: column(keyLimitsSchema, row.limits, `limits of key ${row.id}`),
      createdAt: row.created_at,
      revokedAt: row.revoked_at,
    }),
    toSandbox: (row: SandboxRow<J, N>): SandboxRecord => ({
      sandboxId: row.sandbox_id,
      ownerKeyId: row.owner_key_id,
      createdAt: row.created_at,
      template: row.template,
      metadata: column(metadataColumn, row.metadata, `metadata of sandbox ${row.sandbox_id}`),
    }),
    toAudit: (row: AuditRow<J, N>): AuditEvent => {
      const id = codec.integer(row.id, 'audit event id');
      return {
        id,
        time: row.time,
        requestId: row.request_id,
        keyId: row.key_id,
        sandboxId: row.sandbox_id,
        type: row.type,
        payload: column(z.unknown(), row.payload, `payload of audit event ${id}`),
      };
    },
    toTemplate: (row: TemplateRow<J>): TemplateRecord => ({
      name: row.name,
      template: column(templateColumn, row.template, `template ${row.name}`),
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    }),
  };
}
