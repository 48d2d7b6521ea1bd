/**
 * The HTTP API's request and response shapes, as zod: the routes validate with these and the OpenAPI document
 * is generated from the same objects, so the document cannot drift from what the server accepts.
 */
import { z } from 'zod';
import { presetNames } from '../policy/presets.js';
import { sandboxPolicySchema } from '../policy/schema.js';
import { SCOPES } from './store/types.js';

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const noNul = (s: string) => !s.includes('\0');
/** Query values arrive as text; a repeated parameter arrives as an array and is refused by z.string(). */
const intParam = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,16}$/, 'must be a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
const boolParam = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

// ------------------------------------------------------------------------------------------ shared

export const errorSchema = z
  .object({
    error: z.object({
      code: z.string().describe('Stable machine-readable code, e.g. SANDBOX_PAUSED'),
      message: z.string().describe('What went wrong and what to do about it'),
    }),
  })
  .describe('Every error response');

export const sandboxIdParams = z
  .object({ id: z.string().regex(ID, 'a sandbox id matches [A-Za-z0-9][A-Za-z0-9_.-]{0,63}') })
  .strict();

const envName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,255}$/, 'must be a valid environment variable name');
const envValue = z.string().max(131_072).refine(noNul, 'must not contain NUL');
export const envSchema = z
  .record(envName, envValue)
  .refine((e) => Object.keys(e).length <= 256, 'at most 256 variables');

export const metadataSchema = z
  .record(z.string().min(1).max(256), z.string().max(2048))
  .refine((m) => Object.keys(m).length <= 64, 'at most 64 metadata entries');

/** TTL: up to 30 days; null means none. */
const ttlMs = z
  .number()
  .int()
  .min(1)
  .max(30 * 86_400_000);

// --------------------------------------------------------------------------------------- sandboxes

/** What a create request configures; a template stores exactly these fields. */
const sandboxRequestFields = {
  preset: z.enum(presetNames as [string, ...string[]]).optional(),
  policy: sandboxPolicySchema.optional().describe('Layered on the preset (SandboxPolicyInput)'),
  timeoutMs: ttlMs.nullable().optional().describe('TTL (default 5 minutes); null for none'),
  env: envSchema.optional(),
  metadata: metadataSchema.optional(),
};

const TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const templateName = z
  .string()
  .regex(TEMPLATE_NAME, "a template name is lowercase letters, digits, '.', '_', '-' (at most 63)");

export const createSandboxBody = z
  .object({
    ...sandboxRequestFields,
    template: templateName
      .optional()
      .describe("A template's fields are the base; this request's fields are layered on top"),
  })
  .strict();

// --------------------------------------------------------------------------------------- templates

/** A named, reusable create request (everything POST /v1/sandboxes takes except `template`). */
export const templateBody = z.object(sandboxRequestFields).strict();
export const templateParams = z.object({ name: templateName }).strict();
export const templateInfoSchema = z.object({
  name: z.string(),
  template: templateBody.describe('The stored create request, as it was sent'),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export const templateListSchema = z.object({ templates: z.array(templateInfoSchema) });

export const sandboxInfoSchema = z.object({
  id: z.string(),
  state: z.enum(['running', 'paused', 'stopped']),
  createdAt: z.string().describe('ISO 8601'),
  deadline: z.string().nullable().describe('When the TTL expires (ISO 8601), or null'),
  metadata: z.record(z.string()),
  owner: z.string().describe('Id of the API key that owns the sandbox'),
  canPause: z.boolean().describe('Pause and snapshots are possible on this host'),
  network: z.object({ enabled: z.boolean() }),
});

export const listSandboxesQuery = z
  .object({
    limit: intParam(1, 1000).optional(),
    cursor: z.string().max(200).optional(),
  })
  .catchall(z.string())
  .superRefine((q, ctx) => {
    for (const key of Object.keys(q)) {
      if (key === 'limit' || key === 'cursor') continue;
      if (!key.startsWith('metadata.') || key.length === 'metadata.'.length || key.length > 265) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: 'unknown query parameter (filters are metadata.<key>=<value>, limit and cursor)',
        });
      }
    }
  });

export const sandboxPageSchema = z.object({
  items: z.array(sandboxInfoSchema),
  next: z.string().nullable().describe('Pass as cursor for the next page; null on the last one'),
});

export const setTimeoutBody = z.object({ timeoutMs: ttlMs.nullable() }).strict();
export const resumeBody = z.object({ timeoutMs: ttlMs.optional() }).strict();

const snapshotName = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/,
    "letters, digits, '_', '.', '-' (starting with a letter or digit)",
  );
export const snapshotBody = z.object({ name: snapshotName }).strict();
export const snapshotParams = sandboxIdParams.extend({ name: snapshotName }).strict();
export const snapshotInfoSchema = z.object({
  name: z.string(),
  createdAt: z.number().describe('Epoch ms'),
  files: z.number(),
  dirs: z.number(),
  symlinks: z.number(),
  bytes: z.number(),
  skipped: z.array(z.string()),
});
export const snapshotListSchema = z.object({ snapshots: z.array(snapshotInfoSchema) });

// ---------------------------------------------------------------------------------------- commands

const arg = z.string().max(131_072).refine(noNul, 'must not contain NUL');
const signalSchema = z.union([
  z.string().regex(/^(SIG)?[A-Z0-9]{2,10}$/, 'a signal name such as SIGTERM'),
  z.number().int().min(1).max(64),
]);

export const runCommandBody = z
  .object({
    argv: z.array(arg).min(1).max(4096).optional().describe('Run without a shell'),
    cmd: z
      .string()
      .min(1)
      .max(131_072)
      .refine(noNul, 'must not contain NUL')
      .optional()
      .describe('Run with /bin/sh -c'),
    env: envSchema.optional(),
    cwd: z.string().min(1).max(4096).refine(noNul, 'must not contain NUL').optional(),
    timeoutMs: z
      .number()
      .int()
      .min(1)
      .max(7 * 86_400_000)
      .optional()
      .describe('Foreground default: the policy limits.wallTimeMs; background: none'),
    background: z.boolean().optional(),
    stdin: z
      .union([z.string().max(1_048_576), z.boolean()])
      .optional()
      .describe('Text for stdin (then closed), or true to keep it open (background only)'),
    tag: z.string().max(256).optional(),
  })
  .strict()
  .superRefine((b, ctx) => {
    if ((b.argv === undefined) === (b.cmd === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of argv (no shell) or cmd (shell)' });
    }
    if (b.stdin === true && b.background !== true) {
      ctx.addIssue({
        code: 'custom',
        path: ['stdin'],
        message: 'stdin: true keeps stdin open and needs background: true (send it with .../stdin)',
      });
    }
  });

export const commandResultSchema = z.object({
  id: z.number().describe('Process id for .../processes/:processId'),
  pid: z.number().describe('Pid inside the sandbox'),
  exitCode: z.number().nullable(),
  signal: z.string().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  timedOut: z.boolean(),
  truncated: z.boolean(),
  cpuMs: z.number().nullable(),
  maxRssKb: z.number().nullable(),
});

export const backgroundProcessSchema = z.object({
  id: z.number().describe('Process id for .../processes/:processId (stable for the sandbox life)'),
  pid: z.number().describe('Pid inside the sandbox'),
  argv: z.array(z.string()),
});

export const processInfoSchema = z.object({
  id: z.number(),
  pid: z.number(),
  argv: z.array(z.string()),
  tag: z.string(),
  running: z.boolean(),
  exitCode: z.number().nullable(),
  signal: z.string().nullable(),
  outputBytes: z.object({ stdout: z.number(), stderr: z.number() }),
});

export const processListSchema = z.object({ processes: z.array(processInfoSchema) });
export const stdinResultSchema = z.object({ ok: z.literal(true), bytes: z.number() });

export const processParams = sandboxIdParams
  .extend({
    processId: z
      .string()
      .regex(/^\d{1,9}$/, 'a process id is a number')
      .transform(Number),
  })
  .strict();
export const killProcessBody = z.object({ signal: signalSchema.optional() }).strict();
export const stdinQuery = z.object({ eof: boolParam.optional() }).strict();
export const outputQuery = z.object({ fromOffset: intParam(0, Number.MAX_SAFE_INTEGER).optional() }).strict();

export const ndjsonLineSchema = z
  .discriminatedUnion('type', [
    z.object({ type: z.literal('start'), id: z.number(), pid: z.number() }),
    z.object({ type: z.literal('stdout'), data: z.string().describe('base64') }),
    z.object({ type: z.literal('stderr'), data: z.string().describe('base64') }),
    z.object({ type: z.literal('lost'), stdout: z.number(), stderr: z.number() }),
    z.object({
      type: z.literal('exit'),
      exitCode: z.number().nullable(),
      signal: z.string().nullable(),
      timedOut: z.boolean().optional(),
      truncated: z.boolean().optional(),
      cpuMs: z.number().nullable().optional(),
      maxRssKb: z.number().nullable().optional(),
    }),
    z.object({ type: z.literal('error'), code: z.string(), message: z.string() }),
    z.object({ type: z.literal('heartbeat') }).describe('Sent after 15 s of silence; readers skip it'),
  ])
  .describe('One line of an application/x-ndjson stream');

// ------------------------------------------------------------------------------------- terminals

/** A query parameter holding JSON (argv, env): parsed, then checked by `schema`. */
const jsonParam = <S extends z.ZodTypeAny>(schema: S) =>
  z
    .string()
    .max(65_536)
    .transform((text, ctx) => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be JSON' });
        return z.NEVER;
      }
    })
    .pipe(schema);

const terminalRows = z.number().int().min(1).max(1000);
const terminalCols = z.number().int().min(1).max(1000);

export const ptyQuery = z
  .object({
    rows: intParam(1, 1000).optional().describe('Terminal rows (default 24)'),
    cols: intParam(1, 1000).optional().describe('Terminal columns (default 80)'),
    cmd: jsonParam(z.array(arg).min(1).max(4096))
      .optional()
      .describe('argv as a JSON array (default: a login shell, /bin/bash if present, else /bin/sh)'),
    cwd: z.string().min(1).max(4096).refine(noNul, 'must not contain NUL').optional(),
    env: jsonParam(envSchema)
      .optional()
      .describe('JSON object of variables (TERM defaults to xterm-256color)'),
  })
  .strict();

/** Text frames a terminal client sends (binary frames are keyboard input). */
export const ptyClientMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('resize'), rows: terminalRows, cols: terminalCols }).strict(),
  z
    .object({
      type: z.literal('kill'),
      signal: z.enum(['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGKILL']).optional().describe('Default SIGKILL'),
    })
    .strict(),
]);

// ------------------------------------------------------------------------------------------- files

const filePath = z
  .string()
  .min(1)
  .max(4096)
  .refine(noNul, 'must not contain NUL')
  .describe('Absolute, or relative to the workdir');
export const filePathQuery = z.object({ path: filePath }).strict();
export const removeFileQuery = z.object({ path: filePath, recursive: boolParam.optional() }).strict();
export const listFilesQuery = z.object({ path: filePath, depth: intParam(1, 16).optional() }).strict();
export const watchFilesQuery = z.object({ path: filePath, recursive: boolParam.optional() }).strict();
export const watchLineSchema = z
  .discriminatedUnion('type', [
    z.object({ type: z.literal('start'), path: z.string().describe('The watched directory, absolute') }),
    z.object({
      type: z.literal('event'),
      kind: z.enum(['create', 'write', 'remove', 'rename', 'chmod']),
      name: z.string().describe('Relative to the watched directory ("" for the directory itself)'),
      path: z.string().describe('Absolute, inside the sandbox'),
    }),
    z.object({ type: z.literal('heartbeat') }).describe('Sent when the stream is quiet; skip it'),
    z.object({ type: z.literal('error'), code: z.string(), message: z.string() }),
  ])
  .describe('One line of the file-watch application/x-ndjson stream');
export const mkdirBody = z.object({ path: filePath, parents: z.boolean().optional() }).strict();
export const renameBody = z.object({ from: filePath, to: filePath }).strict();
export const fileEntrySchema = z.object({
  path: z.string(),
  name: z.string(),
  type: z.enum(['file', 'dir', 'symlink', 'other']),
  size: z.number(),
  mode: z.number(),
  mtimeMs: z.number(),
});
export const fileListSchema = z.object({ entries: z.array(fileEntrySchema) });
export const writeResultSchema = z.object({ path: z.string(), bytes: z.number() });

// ----------------------------------------------------------------------------------------- network

const ruleList = z.array(z.string().max(512)).max(1024);
const requestRule = z
  .object({
    action: z.enum(['allow', 'deny']),
    host: z.string().max(512),
    methods: z.array(z.string().max(32)).max(32).optional(),
    paths: z.array(z.string().max(1024)).max(256).optional(),
  })
  .strict();
/** The egress rules as text; each rule is checked by the egress rules' own parser when applied. */
export const egressRulesBody = z
  .object({
    allow: ruleList.optional(),
    deny: ruleList.optional(),
    allowPrivate: ruleList.optional(),
    onUndecided: z.enum(['deny', 'ask']).optional(),
    requests: z.array(requestRule).max(1024).optional(),
    intercept: ruleList.optional(),
  })
  .strict();
export const networkSchema = z.object({
  enabled: z.boolean().describe('False for network mode none (no egress proxy)'),
  rules: z.object({
    allow: z.array(z.string()),
    deny: z.array(z.string()),
    allowPrivate: z.array(z.string()),
    onUndecided: z.enum(['deny', 'ask']),
    requests: z.array(z.unknown()),
    intercept: z.array(z.string()),
  }),
});
export const networkEventsQuery = z
  .object({ since: intParam(0, Number.MAX_SAFE_INTEGER).optional(), limit: intParam(1, 1000).optional() })
  .strict();
export const networkEventsSchema = z.object({
  events: z
    .array(z.record(z.unknown()))
    .describe('Egress audit records, oldest first, each with seq and time'),
  next: z.number().describe('Pass as since for the next page'),
});

// ----------------------------------------------------------------------------------------- secrets

const secretName = z
  .string()
  .regex(
    /^[A-Za-z_][A-Za-z0-9_]{0,63}$/,
    'a secret name is a shell-style identifier (at most 64 characters)',
  );
export const createSecretBody = z
  .object({
    name: secretName,
    value: z.string().min(1).max(16_384).describe('Write-only: never returned'),
    hosts: z.array(z.string().max(512)).min(1).max(256),
    headers: z.array(z.string().max(256)).max(64).optional(),
    paths: z.array(z.string().max(1024)).min(1).max(64).optional(),
    body: z.boolean().optional(),
  })
  .strict();
export const secretParams = z.object({ name: secretName }).strict();
export const secretInfoSchema = z.object({
  name: z.string(),
  hosts: z.array(z.string()),
  headers: z.array(z.string()).optional(),
  paths: z.array(z.string()).optional(),
  body: z.boolean().optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
});

// -------------------------------------------------------------------------------------------- keys

export const keyLimitsBody = z
  .object({
    maxSandboxes: z.number().int().min(0).max(1_000_000).nullable().optional(),
    requestsPerMinute: z.number().int().min(1).max(1_000_000).nullable().optional(),
  })
  .strict();
export const createKeyBody = z
  .object({
    name: z.string().min(1).max(200),
    scopes: z
      .array(z.enum(SCOPES))
      .min(1)
      .max(SCOPES.length)
      .refine((s) => new Set(s).size === s.length, 'scopes must not repeat'),
    limits: keyLimitsBody.optional(),
  })
  .strict();
export const keyParams = z
  .object({ keyId: z.string().regex(ID, 'a key id matches [A-Za-z0-9][A-Za-z0-9_.-]{0,63}') })
  .strict();
export const listKeysQuery = z.object({ includeRevoked: boolParam.optional() }).strict();
export const keyInfoSchema = z.object({
  id: z.string(),
  name: z.string(),
  prefix: z.string().describe('Not enough to authenticate; tells keys apart'),
  scopes: z.array(z.enum(SCOPES)),
  limits: z.object({ maxSandboxes: z.number().nullable(), requestsPerMinute: z.number().nullable() }),
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
});
export const createdKeySchema = keyInfoSchema.extend({
  key: z.string().describe('The plaintext key: shown once, store it now'),
});

// ------------------------------------------------------------------------------------------ health

export const healthSchema = z.object({ status: z.literal('ok') });
export const readySchema = z.object({
  status: z.enum(['ready', 'not-ready']),
  checks: z.record(z.string()),
});
export const emptyBody = z.object({}).strict();
export const okSchema = z.object({ ok: z.literal(true) });
