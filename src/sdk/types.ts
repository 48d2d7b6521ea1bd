/**
 * The API's response shapes, written out by hand: the SDK must not import the server (or zod), so these mirror
 * src/server/schemas.ts. Only fields the server documents are listed.
 */

export type SandboxState = 'running' | 'paused' | 'stopped';

export interface SandboxInfo {
  id: string;
  state: SandboxState;
  /** ISO 8601. */
  createdAt: string;
  /** When the TTL expires (ISO 8601), or null for none. */
  deadline: string | null;
  metadata: Record<string, string>;
  /** Id of the API key that owns the sandbox. */
  owner: string;
  /** Pause and snapshots are possible on this host. */
  canPause: boolean;
  network: { enabled: boolean };
}

export interface SandboxPage {
  items: SandboxInfo[];
  /** Pass as `cursor` for the next page; null on the last one. */
  next: string | null;
}

export interface SnapshotInfo {
  name: string;
  /** Epoch ms. */
  createdAt: number;
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  skipped: string[];
}

export interface CommandResult {
  /** Process id for commands.connect / the processes routes. */
  id: number;
  /** Pid inside the sandbox. */
  pid: number;
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  truncated: boolean;
  cpuMs: number | null;
  maxRssKb: number | null;
}

export interface ProcessInfo {
  id: number;
  pid: number;
  argv: string[];
  tag: string;
  running: boolean;
  exitCode: number | null;
  signal: string | null;
  outputBytes: { stdout: number; stderr: number };
}

export interface FileEntry {
  path: string;
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
}

/** One change below a watched directory (files.watchDir). */
export interface FileWatchEvent {
  /** A rename arrives as the old name's `rename` and the new name's `create`. */
  kind: 'create' | 'write' | 'remove' | 'rename' | 'chmod';
  /** Relative to the watched directory ('' for the directory itself). */
  name: string;
  /** Absolute, inside the sandbox. */
  path: string;
}

export interface RequestRule {
  action: 'allow' | 'deny';
  host: string;
  methods?: string[];
  paths?: string[];
}

/** Egress rules as text, e.g. allow: ['pypi.org', '*.github.com:443']. */
export interface EgressRules {
  allow?: string[];
  deny?: string[];
  allowPrivate?: string[];
  onUndecided?: 'deny' | 'ask';
  requests?: RequestRule[];
  intercept?: string[];
}

export interface NetworkView {
  /** False for network mode none (no egress proxy; rule changes are refused with ConflictError). */
  enabled: boolean;
  rules: Required<Omit<EgressRules, 'requests'>> & { requests: unknown[] };
}

export interface NetworkEvents {
  /** Egress audit records, oldest first, each with seq and time. */
  events: Record<string, unknown>[];
  /** Pass as `since` for the next page. */
  next: number;
}

export interface SecretInfo {
  name: string;
  hosts: string[];
  headers?: string[];
  paths?: string[];
  body?: boolean;
  createdAt: string;
  updatedAt: string;
}

/** `admin`: everything, every tenant. `sandbox`: create sandboxes and use only its own. */
export type Scope = 'admin' | 'sandbox';

export interface KeyLimits {
  maxSandboxes: number | null;
  requestsPerMinute: number | null;
}

export interface KeyInfo {
  id: string;
  name: string;
  /** Not enough to authenticate; tells keys apart. */
  prefix: string;
  scopes: Scope[];
  limits: KeyLimits;
  createdAt: string;
  revokedAt: string | null;
}

export interface CreatedKey extends KeyInfo {
  /** The plaintext key: shown once, store it now. */
  key: string;
}
