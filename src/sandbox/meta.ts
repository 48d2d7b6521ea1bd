/**
 * meta.json: the on-disk record of one warm sandbox, everything a later manager needs to re-adopt or reap it
 * after a crash. Written atomically (temporary file + rename), so a reader sees the old or the new record,
 * never half of one.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { type EgressRulesInput, egressRulesSchema } from '../egress/rules.js';
import { sandboxPolicySchema } from '../policy/schema.js';

export type SandboxState = 'running' | 'paused' | 'stopped';

const identitySchema = z.object({
  pid: z.number().int().positive(),
  startTime: z.number().int().nonnegative(),
});

export const sandboxMetaSchema = z.object({
  version: z.literal(1),
  id: z.string(),
  createdAt: z.string(),
  preset: z.string(),
  policy: sandboxPolicySchema,
  /** Create-time environment added to every command's. */
  env: z.record(z.string()),
  /** Host uid/gid the sandbox runs as when the manager is root; null otherwise. */
  hostId: z.object({ uid: z.number().int(), gid: z.number().int() }).nullable(),
  /** Outer bubblewrap process and the agent (the sandbox's PID 1), each with its kernel start time. */
  bwrap: identitySchema,
  init: identitySchema,
  /** Cgroup directory name (`<bwrapPid>-<id>`) in every hierarchy; null when limits are rlimits only. */
  cgroup: z.string().nullable(),
  cpuWeight: z.number().int().positive(),
  workspaceQuotaBytes: z.number().int().positive(),
  /** Epoch ms when the TTL expires (null: no TTL) and what happens then. */
  deadline: z.number().nullable(),
  /** The last TTL set (ms), re-armed on resume() when the deadline passed while paused. */
  timeoutMs: z.number().int().positive().nullable(),
  onTimeout: z.enum(['kill', 'pause']),
  state: z.enum(['running', 'paused', 'stopped']),
  /**
   * Network mode `proxy`: the egress rules in force, as text (the policy's at create, then every live update),
   * so a re-adopting manager restarts the proxy with what was last set. Absent for mode `none`.
   */
  egressRules: z
    .custom<EgressRulesInput>((v) => egressRulesSchema.safeParse(v).success, 'invalid egress rules')
    .optional(),
  /** Secret name → the placeholder the sandbox holds in its environment (not a secret; the values never are here). */
  secretPlaceholders: z.record(z.string()).optional(),
});
export type SandboxMeta = z.infer<typeof sandboxMetaSchema>;

export class MetaError extends Error {
  readonly code = 'SANDBOX_META_INVALID';
  constructor(path: string, why: string, options?: { cause?: unknown }) {
    super(`unreadable sandbox record ${path}: ${why}`, options);
    this.name = 'MetaError';
  }
}

export function writeMeta(path: string, meta: SandboxMeta): void {
  const tmp = `${path}.${process.pid}.tmp`;
  // No fsync: the record must survive the manager's death (the page cache does), not a power cut, after which
  // no sandbox process survives either.
  writeFileSync(tmp, `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

export function readMeta(path: string): SandboxMeta {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new MetaError(path, (err as Error).message, { cause: err });
  }
  const parsed = sandboxMetaSchema.safeParse(value);
  if (!parsed.success)
    throw new MetaError(path, parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  return parsed.data;
}
