/**
 * What the control plane persists, and the Store contract every backend (SQLite now, PostgreSQL later)
 * implements. Inputs are validated here with zod so every backend rejects the same malformed data the same way.
 *
 * The methods are async although better-sqlite3 is synchronous: a PostgreSQL driver can only be async, and one
 * contract lets the server run unchanged on either. The cost for SQLite is one microtask per call.
 */
import { z } from 'zod';
import { StoreError } from './errors.js';

export const SCOPES = ['admin', 'sandbox'] as const;
/** `admin`: everything, every tenant. `sandbox`: create sandboxes and use only the ones it owns. */
export type Scope = (typeof SCOPES)[number];

/** Same shape as sandbox ids (src/sandbox/layout.ts ID_PATTERN), so any id the manager accepts fits here. */
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const TEMPLATE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** SHA-256, lowercase hex. */
const HASH = /^[0-9a-f]{64}$/;
const MAX_PAGE = 1000;
const MAX_JSON_BYTES = 1024 * 1024;

/**
 * Text columns refuse NUL (U+0000): PostgreSQL cannot store it in text, and both backends must accept and
 * refuse the same input. JSON payloads and template bodies keep it (stored as JSON text on both).
 */
const text = (min: number, max: number) =>
  z
    .string()
    .min(min)
    .max(max)
    .refine((s) => !s.includes('\u0000'), 'must not contain NUL (U+0000)');

/** UTC ISO-8601, normalized to toISOString()'s form so stored times compare correctly as text. */
const isoTime = z
  .string()
  .datetime({ offset: false })
  .transform((t) => new Date(t).toISOString());

export const keyLimitsSchema = z
  .object({
    /** Sandboxes the key may own at once; null: no limit. */
    maxSandboxes: z.number().int().min(0).max(1_000_000).nullable().default(null),
    /** Token-bucket rate (and burst) of API requests; null: no limit. */
    requestsPerMinute: z.number().int().min(1).max(1_000_000).nullable().default(null),
  })
  .strict();
export type KeyLimits = z.output<typeof keyLimitsSchema>;

export const newApiKeySchema = z
  .object({
    id: z.string().regex(ID, 'key id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}'),
    name: text(1, 200),
    /** Shown to humans to tell keys apart; never enough to authenticate. */
    prefix: text(1, 32),
    hash: z.string().regex(HASH, 'hash must be 64 lowercase hex digits (SHA-256)'),
    scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length),
    limits: keyLimitsSchema.default({}),
  })
  .strict();
export type NewApiKey = z.input<typeof newApiKeySchema>;

export interface ApiKeyRecord {
  readonly id: string;
  readonly name: string;
  readonly prefix: string;
  readonly scopes: readonly Scope[];
  readonly limits: KeyLimits;
  readonly createdAt: string;
  readonly revokedAt: string | null;
}

/** A key row including its hash: only for authentication, never for output. */
export interface StoredApiKey extends ApiKeyRecord {
  readonly hash: string;
}

const metadataSchema = z
  .record(text(1, 256), text(0, 2048))
  .refine((m) => Object.keys(m).length <= 64, 'at most 64 metadata entries');
export type SandboxMetadata = Record<string, string>;

export const newSandboxSchema = z
  .object({
    sandboxId: z.string().regex(ID, 'sandbox id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}'),
    ownerKeyId: z.string().regex(ID, 'owner key id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}'),
    template: z.string().regex(TEMPLATE_NAME).nullable().default(null),
    metadata: metadataSchema.default({}),
  })
  .strict();
export type NewSandbox = z.input<typeof newSandboxSchema>;

export interface SandboxRecord {
  readonly sandboxId: string;
  readonly ownerKeyId: string;
  readonly createdAt: string;
  readonly template: string | null;
  readonly metadata: SandboxMetadata;
}

export const recordSandboxOptionsSchema = z
  .object({
    /** Refuse (LIMIT_REACHED) when the owner already has this many rows; checked in the insert's transaction. */
    ownerLimit: z.number().int().min(0).nullable().optional(),
  })
  .strict();
export type RecordSandboxOptions = z.input<typeof recordSandboxOptionsSchema>;

export const sandboxQuerySchema = z
  .object({
    ownerKeyId: z.string().regex(ID).optional(),
    /** Every entry must match exactly (AND). */
    metadata: metadataSchema.optional(),
    template: z.string().regex(TEMPLATE_NAME).optional(),
    limit: z.number().int().min(1).max(MAX_PAGE).default(100),
    /** `next` of the previous page. */
    cursor: text(0, 200).optional(),
  })
  .strict();
export type SandboxQuery = z.input<typeof sandboxQuerySchema>;

export interface Page<T> {
  readonly items: T[];
  /** Pass as `cursor` for the following page; null when this was the last one. */
  readonly next: string | null;
}

function checkJson(value: unknown, ctx: z.RefinementCtx): void {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `not serializable as JSON: ${(error as Error).message}` });
    return;
  }
  if (text === undefined) ctx.addIssue({ code: 'custom', message: 'not serializable as JSON' });
  else if (Buffer.byteLength(text) > MAX_JSON_BYTES)
    ctx.addIssue({ code: 'custom', message: `larger than ${MAX_JSON_BYTES} bytes as JSON` });
}
const jsonValue = z.unknown().superRefine(checkJson);

export const newAuditEventSchema = z
  .object({
    /** Default: now. */
    time: isoTime.optional(),
    requestId: text(1, 200).nullable().default(null),
    keyId: text(0, 64).nullable().default(null),
    sandboxId: text(0, 64).nullable().default(null),
    type: z.string().regex(/^[a-z][a-z0-9_.:-]{0,99}$/, 'type must be lowercase, like sandbox.create'),
    payload: jsonValue.default({}),
  })
  .strict();
export type NewAuditEvent = z.input<typeof newAuditEventSchema>;

export interface AuditEvent {
  /** Increasing in insertion order; the paging key. */
  readonly id: number;
  readonly time: string;
  readonly requestId: string | null;
  readonly keyId: string | null;
  readonly sandboxId: string | null;
  readonly type: string;
  readonly payload: unknown;
}

export const auditQuerySchema = z
  .object({
    keyId: text(0, 64).optional(),
    sandboxId: text(0, 64).optional(),
    type: text(0, 100).optional(),
    /** Exclusive: events after (asc) or before (desc) this id; a page's `next`. */
    after: z.number().int().min(0).optional(),
    order: z.enum(['asc', 'desc']).default('asc'),
    limit: z.number().int().min(1).max(MAX_PAGE).default(100),
  })
  .strict();
export type AuditQuery = z.input<typeof auditQuerySchema>;

export interface AuditPage {
  readonly events: AuditEvent[];
  /** Pass as `after` for the following page; null when this was the last one. */
  readonly next: number | null;
}

export const templateNameSchema = z
  .string()
  .regex(TEMPLATE_NAME, 'template name must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}');
/** A template's body is opaque JSON to the store (the server validates it against the policy schema). */
export const templateBodySchema = z.record(z.unknown()).superRefine(checkJson);

export interface TemplateRecord {
  readonly name: string;
  readonly template: Record<string, unknown>;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres';

  /** Inserts a key row (the caller hashed the secret; see auth/api-keys.ts). CONFLICT on a taken id or hash. */
  insertApiKey(key: NewApiKey): Promise<ApiKeyRecord>;
  getApiKey(id: string): Promise<ApiKeyRecord | null>;
  /** Looks a key up by the SHA-256 of the presented secret (revoked keys included; the caller decides). */
  findApiKeyByHash(hash: string): Promise<StoredApiKey | null>;
  /** Oldest first. */
  listApiKeys(options?: { includeRevoked?: boolean }): Promise<ApiKeyRecord[]>;
  /** Marks the key revoked (idempotent: the first revocation time stays). NOT_FOUND for an unknown id. */
  revokeApiKey(id: string): Promise<ApiKeyRecord>;

  /** Records who owns a sandbox. CONFLICT if the id is recorded; INVALID_INPUT if the owner key is unknown. */
  recordSandbox(sandbox: NewSandbox, options?: RecordSandboxOptions): Promise<SandboxRecord>;
  getSandbox(sandboxId: string): Promise<SandboxRecord | null>;
  /** Oldest first; cursors stay valid across inserts and deletes (rows are keyed by a never-reused sequence). */
  listSandboxes(query?: SandboxQuery): Promise<Page<SandboxRecord>>;
  countSandboxes(ownerKeyId: string): Promise<number>;
  /** True when a row was deleted. */
  deleteSandbox(sandboxId: string): Promise<boolean>;

  appendAuditEvent(event: NewAuditEvent): Promise<AuditEvent>;
  listAuditEvents(query?: AuditQuery): Promise<AuditPage>;
  /** Retention: deletes events older than `time`; returns how many. */
  deleteAuditEventsBefore(time: string): Promise<number>;

  /** Creates or replaces. */
  putTemplate(name: string, template: Record<string, unknown>): Promise<TemplateRecord>;
  getTemplate(name: string): Promise<TemplateRecord | null>;
  listTemplates(): Promise<TemplateRecord[]>;
  deleteTemplate(name: string): Promise<boolean>;

  close(): Promise<void>;
}

/** zod parse that throws StoreError INVALID_INPUT naming the offending fields, never a ZodError. */
export function parseInput<S extends z.ZodTypeAny>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues
    .slice(0, 5)
    .map((i) => (i.path.length > 0 ? `${i.path.join('.')}: ${i.message}` : i.message))
    .join('; ');
  throw new StoreError('INVALID_INPUT', `invalid ${what}: ${issues}`);
}

export const idSchema = z.string().regex(ID, 'id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}');
export const hashSchema = z.string().regex(HASH);
export const isoTimeSchema = isoTime;
