/**
 * The sandbox policy: the single declarative source of every isolation knob (nsjail's config.proto, as zod).
 * Every field has a safe default; presets (./presets.ts) fill in what real tools need.
 */
import { z } from 'zod';
import { type EgressRulesInput, egressRulesSchema } from '../egress/rules.js';

const absolutePath = z
  .string()
  .min(1)
  .refine((p) => p.startsWith('/'), { message: 'must be an absolute path' })
  .refine((p) => !p.split('/').includes('..'), { message: 'must not contain ".." components' })
  .refine((p) => !p.includes('\0'), { message: 'must not contain NUL bytes' });

/** A host path made visible inside the sandbox, at the same path unless `sandbox` says otherwise. */
export const bindSchema = z.union([
  absolutePath.transform((host) => ({ host, sandbox: host })),
  z
    .object({ host: absolutePath, sandbox: absolutePath.optional() })
    .strict()
    .transform((b) => ({ host: b.host, sandbox: b.sandbox ?? b.host })),
]);
export type Bind = z.output<typeof bindSchema>;

export const scratchSchema = z
  .object({
    path: absolutePath,
    /** tmpfs size cap; the memory it uses also counts against the memory limit where a cgroup enforces it. */
    sizeMb: z
      .number()
      .int()
      .positive()
      .max(1 << 20),
  })
  .strict();
export type Scratch = z.infer<typeof scratchSchema>;

export const filesystemSchema = z
  .object({
    /** Host paths bound read-only. A missing path is an error unless listed in `optional`. */
    readOnly: z.array(bindSchema).default([]),
    /** Host paths bound read-write. */
    writable: z.array(bindSchema).default([]),
    /** Read-only binds that are skipped silently when absent on the host (system paths differ by distro). */
    optional: z.array(bindSchema).default([]),
    /**
     * Paths never visible inside, even below a bound directory (deny wins). A leading `~/` means every home
     * directory of the host (/root and /home/*). Hidden directories become empty, hidden files cannot be opened.
     */
    hidden: z.array(z.string().min(1)).default([]),
    /** Entries removed from `hidden` (exact match): the explicit way to let a sandbox see a secret path. */
    reveal: z.array(z.string().min(1)).default([]),
    /** Private size-limited tmpfs mounts, gone when the sandbox ends. */
    scratch: z.array(scratchSchema).default([]),
    /** Working directory inside the sandbox; must be a bound path or a scratch mount (or below one). */
    workdir: absolutePath.default('/tmp'),
  })
  .strict();
export type FilesystemPolicy = z.infer<typeof filesystemSchema>;

/** Rule strings, kept as written (so a policy stays plain data) but checked by the egress rules' own schema. */
const egressRuleLists = {
  allow: z.array(z.string()).default([]),
  deny: z.array(z.string()).default([]),
  allowPrivate: z.array(z.string()).default([]),
  /** Method/path rules, e.g. `{ action: 'allow', host: 'api.github.com', methods: ['GET'], paths: ['/repos/**'] }`. */
  requests: z
    .array(
      z
        .object({
          action: z.enum(['allow', 'deny']),
          host: z.string(),
          methods: z.array(z.string()).optional(),
          paths: z.array(z.string()).optional(),
        })
        .strict(),
    )
    .default([]),
  /** https:// hosts to TLS-intercept for auditing even without request rules or secrets. */
  intercept: z.array(z.string()).default([]),
  /** Destinations no rule decides: `deny`, or `ask` the manager's approval hook (refused when there is none). */
  onUndecided: z.enum(['deny', 'ask']).default('deny'),
};

/** Per-sandbox proxy budgets (docs/egress-policy.md); absent fields keep the proxy's defaults. */
const egressLimitsSchema = z
  .object({
    requestsPerSecond: z.number().positive().max(100_000).optional(),
    maxConnections: z.number().int().positive().max(10_000).optional(),
    /** Bytes in both directions over the sandbox's life; then new requests get 429. */
    maxTotalBytes: z.number().int().positive().optional(),
    /** Largest request body; larger gets 413. */
    maxBodyBytes: z.number().int().positive().optional(),
    connectTimeoutMs: z.number().int().positive().max(600_000).optional(),
    idleTimeoutMs: z.number().int().positive().max(86_400_000).optional(),
  })
  .strict();

export const networkSchema = z
  .discriminatedUnion('mode', [
    /** `none`: a private network namespace with only loopback. */
    z.object({ mode: z.literal('none') }).strict(),
    /**
     * `proxy`: still only loopback, but a per-run egress proxy (src/egress/proxy.ts) is relayed to 127.0.0.1:port
     * inside, and the usual proxy variables point there. It is the only way out; rules default to deny.
     */
    z
      .object({
        mode: z.literal('proxy'),
        ...egressRuleLists,
        port: z.number().int().min(1).max(65_535).default(3128),
        /** Vault secrets this sandbox may use: it sees a placeholder per name, the proxy substitutes the value. */
        secrets: z
          .array(
            z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'a secret name is a shell-style identifier'),
          )
          .default([]),
        limits: egressLimitsSchema.default({}),
      })
      .strict(),
  ])
  .superRefine((network, ctx) => {
    if (network.mode !== 'proxy') return;
    const checked = egressRulesSchema.safeParse(egressRulesOf(network));
    if (!checked.success) for (const issue of checked.error.issues) ctx.addIssue(issue);
  });
export type NetworkPolicy = z.output<typeof networkSchema>;

type ProxyRuleFields = 'allow' | 'deny' | 'allowPrivate' | 'requests' | 'intercept' | 'onUndecided';

/** The egress rules of a proxy-mode network policy, as written: what its proxy starts with. */
export function egressRulesOf(
  network: Pick<Extract<NetworkPolicy, { mode: 'proxy' }>, ProxyRuleFields>,
): EgressRulesInput {
  const { allow, deny, allowPrivate, requests, intercept, onUndecided } = network;
  return { allow, deny, allowPrivate, requests, intercept, onUndecided };
}

export const limitsSchema = z
  .object({
    /** Wall-clock limit; on expiry the whole process tree is killed. */
    wallTimeMs: z.number().int().positive().default(60_000),
    /** CPU time of each process (RLIMIT_CPU), rounded up to whole seconds. */
    cpuTimeMs: z.number().int().positive().default(60_000),
    /** Memory of the whole sandbox (cgroup), or address space per process (RLIMIT_AS) where no cgroup exists. */
    memoryMb: z.number().int().positive().default(512),
    /** Processes/threads of the whole sandbox (cgroup pids), or per sandbox user (RLIMIT_NPROC) otherwise. */
    processes: z.number().int().positive().default(128),
    /** Open file descriptors per process (RLIMIT_NOFILE). */
    openFiles: z
      .number()
      .int()
      .positive()
      .max(1 << 20)
      .default(1024),
    /** Largest file a process may write (RLIMIT_FSIZE). */
    fileSizeMb: z.number().int().positive().default(256),
    /** stdout + stderr bytes kept; more ends the run with outcome `output-limit`. */
    outputBytes: z
      .number()
      .int()
      .positive()
      .default(16 * 1024 * 1024),
  })
  .strict();
export type Limits = z.infer<typeof limitsSchema>;

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a valid environment variable name');

export const envSchema = z
  .object({
    /** Host variables copied in by name. Nothing is copied by default. */
    pass: z.array(envName).default([]),
    /** Variables set to fixed values (after `pass`, so `set` wins). */
    set: z
      .record(
        envName,
        z.string().refine((v) => !v.includes('\0'), 'must not contain NUL'),
      )
      .default({}),
  })
  .strict();

export const userSchema = z
  .object({
    uid: z.number().int().min(1).max(65_533).default(1000),
    gid: z.number().int().min(1).max(65_533).default(1000),
    name: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]*$/)
      .default('sandbox'),
  })
  .strict();

export const seccompProfileNames = ['strict', 'default'] as const;
export type SeccompProfileName = (typeof seccompProfileNames)[number];

export const sandboxPolicySchema = z
  .object({
    filesystem: filesystemSchema.default(filesystemSchema.parse({})),
    network: networkSchema.default({ mode: 'none' }),
    limits: limitsSchema.default(limitsSchema.parse({})),
    env: envSchema.default({ pass: [], set: {} }),
    /** Unprivileged identity inside the sandbox (root inside is not offered). */
    user: userSchema.default(userSchema.parse({})),
    hostname: z
      .string()
      .regex(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})$/)
      .default('sandbox'),
    seccomp: z.enum(seccompProfileNames).default('default'),
  })
  .strict();

/** A validated, fully defaulted policy. */
export type SandboxPolicy = z.output<typeof sandboxPolicySchema>;
/** What a user may write: every field optional. */
export type SandboxPolicyInput = z.input<typeof sandboxPolicySchema>;
