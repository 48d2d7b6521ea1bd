/**
 * A warm sandbox's network: its egress proxy (started by the manager at create and again at re-adoption), the
 * live rules (`sandbox.network.merge/replace`, persisted in meta.json by the sandbox), and the egress audit log
 * (`<sandbox dir>/egress.jsonl`, read back by `sandbox.network.events()`).
 *
 * The log is written with one synchronous write(2) per event on an O_APPEND descriptor: once the proxy's event
 * callback returns, the line is in the kernel's page cache, so a `kill -9` of the manager loses only events the
 * proxy had not emitted yet. A write stream would hold lines in user space, where a crash loses them. The log is
 * capped: the current file is rotated to `egress.jsonl.<first seq>` when it would pass `segmentBytes`, and the
 * oldest rotated segments are deleted while all of them together pass `maxBytes`.
 */
import {
  closeSync,
  fstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { EgressEvent, EgressProxyOptions } from '../egress/proxy.js';
import { type EgressRules, type EgressRulesInput, replaceRules } from '../egress/rules.js';
import { type SandboxEgress, startSandboxEgress } from '../egress/sandbox-egress.js';
import type { EgressServices } from '../egress/services.js';
import type { NetworkPolicy } from '../policy/schema.js';

export type EgressLogRecord = EgressEvent & { readonly seq: number; readonly time: string };

export interface EgressLogLimits {
  /** Size at which the current file is rotated (a line longer than this still gets a segment of its own). */
  segmentBytes: number;
  /** Rotated segments kept, in bytes together (the current file comes on top); the oldest go first. */
  maxBytes: number;
}

export const defaultEgressLogLimits: EgressLogLimits = {
  segmentBytes: 4 * 1024 * 1024,
  maxBytes: 28 * 1024 * 1024,
};

const MAX_PAGE = 1000;
const DEFAULT_PAGE = 100;
/** How far from either end of a segment a first or last line is looked for. */
const PROBE_BYTES = 64 * 1024;

/** Network API calls on a sandbox created without the egress proxy (`network.mode: 'none'`). */
export class SandboxNetworkDisabledError extends Error {
  readonly code = 'SANDBOX_NETWORK_DISABLED';
  constructor(
    readonly sandboxId: string,
    operation: string,
  ) {
    super(
      `cannot ${operation}: sandbox ${sandboxId} was created with network mode "none", so it has no egress proxy ` +
        `and no way out; create the sandbox with policy { network: { mode: 'proxy', allow: [...] } } ` +
        '(rules can then be changed while it runs)',
    );
    this.name = 'SandboxNetworkDisabledError';
  }
}

interface Segment {
  path: string;
  /** First seq in it (rotated segments: from the name). */
  first: number;
}

function rotatedSegments(path: string): Segment[] {
  const prefix = `${basename(path)}.`;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return [];
  }
  return names
    .filter((n) => n.startsWith(prefix) && /^\d+$/.test(n.slice(prefix.length)))
    .map((n) => ({ path: join(dirname(path), n), first: Number(n.slice(prefix.length)) }))
    .sort((a, b) => a.first - b.first);
}

function parseRecord(line: string): EgressLogRecord | null {
  try {
    const value = JSON.parse(line) as EgressLogRecord;
    return typeof value === 'object' && value !== null && Number.isSafeInteger(value.seq) ? value : null;
  } catch {
    return null; // a line torn by a crash mid-write
  }
}

/** The first or last complete record within PROBE_BYTES of that end of the file, or null. */
function probeRecord(path: string, end: 'first' | 'last'): EgressLogRecord | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, PROBE_BYTES);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, end === 'first' ? 0 : size - length);
    const lines = buf.toString('utf8').split('\n');
    if (end === 'last') lines.reverse();
    for (const line of lines) {
      const record = line === '' ? null : parseRecord(line);
      if (record !== null) return record;
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

/** Events with seq >= since, oldest first, from the current file at `path` and its rotated segments. */
export function readEgressLog(
  path: string,
  options: { since?: number; limit?: number } = {},
): { events: EgressLogRecord[]; next: number } {
  const since = Math.max(0, Math.floor(options.since ?? 0));
  const limit = Math.min(MAX_PAGE, Math.max(1, Math.floor(options.limit ?? DEFAULT_PAGE)));
  const segments = [...rotatedSegments(path), { path, first: Number.POSITIVE_INFINITY }];
  const events: EgressLogRecord[] = [];
  for (let i = 0; i < segments.length && events.length < limit; i++) {
    const next = segments[i + 1];
    if (next !== undefined && next.first !== Number.POSITIVE_INFINITY && next.first <= since) continue;
    let text: string;
    try {
      text = readFileSync(segments[i]?.path ?? path, 'utf8');
    } catch {
      continue; // dropped by rotation meanwhile, or no event yet
    }
    for (const line of text.split('\n')) {
      const record = line === '' ? null : parseRecord(line);
      if (record === null || record.seq < since) continue;
      events.push(record);
      if (events.length >= limit) break;
    }
  }
  const last = events[events.length - 1];
  return { events, next: last === undefined ? since : last.seq + 1 };
}

/** The append side of the log; one per running proxy. */
export class EgressLog {
  readonly path: string;
  readonly #limits: EgressLogLimits;
  #fd: number | null;
  #size: number;
  #first: number;
  #last: number;
  /** Events that could not be written (disk full...); they still reach the `egress` listeners. */
  writeErrors = 0;

  /** Opens (or continues) the log at `path`: the seq goes on from the last record found. */
  constructor(path: string, limits: Partial<EgressLogLimits> = {}) {
    this.path = path;
    this.#limits = { ...defaultEgressLogLimits, ...limits };
    this.#fd = openSync(path, 'a', 0o600);
    this.#size = fstatSync(this.#fd).size;
    const newestRotated = rotatedSegments(path).at(-1);
    const last =
      probeRecord(path, 'last') ?? (newestRotated ? probeRecord(newestRotated.path, 'last') : null);
    this.#last = last?.seq ?? (newestRotated ? newestRotated.first - 1 : 0);
    this.#first = probeRecord(path, 'first')?.seq ?? this.#last + 1;
    // A line torn by a crash mid-write stays on a line of its own (readers skip it).
    if (this.#size > 0 && !this.#endsWithNewline()) this.#write('\n');
  }

  /** The seq the next event gets. */
  get nextSeq(): number {
    return this.#last + 1;
  }

  #endsWithNewline(): boolean {
    const buf = Buffer.alloc(1);
    const fd = openSync(this.path, 'r');
    try {
      readSync(fd, buf, 0, 1, this.#size - 1);
    } finally {
      closeSync(fd);
    }
    return buf[0] === 0x0a;
  }

  #write(text: string): void {
    if (this.#fd === null) return;
    try {
      this.#size += writeSync(this.#fd, text);
    } catch {
      this.writeErrors++;
    }
  }

  append(event: EgressEvent): EgressLogRecord {
    const record: EgressLogRecord = { seq: ++this.#last, time: new Date().toISOString(), ...event };
    const line = `${JSON.stringify(record)}\n`;
    if (this.#size > 0 && this.#size + Buffer.byteLength(line) > this.#limits.segmentBytes) this.#rotate();
    if (this.#size === 0) this.#first = record.seq;
    this.#write(line);
    return record;
  }

  #rotate(): void {
    if (this.#fd === null) return;
    try {
      closeSync(this.#fd);
      this.#fd = null;
      renameSync(this.path, `${this.path}.${String(this.#first).padStart(12, '0')}`);
      this.#fd = openSync(this.path, 'a', 0o600);
      this.#size = 0;
      const rotated = rotatedSegments(this.path).map((s) => ({ ...s, bytes: sizeOf(s.path) }));
      let total = rotated.reduce((sum, s) => sum + s.bytes, 0);
      for (const s of rotated) {
        if (total <= this.#limits.maxBytes) break;
        unlinkSync(s.path);
        total -= s.bytes;
      }
    } catch {
      this.writeErrors++;
      this.#fd ??= openOrNull(this.path);
      if (this.#fd !== null) this.#size = fstatSync(this.#fd).size;
    }
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function openOrNull(path: string): number | null {
  try {
    return openSync(path, 'a', 0o600);
  } catch {
    return null;
  }
}

/** A warm sandbox's running proxy and the log its events go to. */
export interface WarmEgress {
  readonly egress: SandboxEgress;
  readonly log: EgressLog;
  /** Receives every logged event (the sandbox re-emits it as `egress`). */
  listener: ((record: EgressLogRecord) => void) | null;
  /** Stops the proxy (its socket is removed) and closes the log. Idempotent. */
  close(): Promise<void>;
}

export interface WarmEgressOptions {
  sandboxId: string;
  network: Extract<NetworkPolicy, { mode: 'proxy' }>;
  /** The rules to start with (the sandbox's persisted live rules; default the policy's). */
  rules?: EgressRulesInput;
  /** Existing directory the socket goes in (its modes are the caller's). */
  dir: string;
  logPath: string;
  hostId: { uid: number; gid: number } | null;
  logLimits?: Partial<EgressLogLimits>;
  ask?: EgressProxyOptions['ask'];
  /** The installation's CA and vault (TLS interception, `network.secrets`). */
  services?: EgressServices;
  /** Secret placeholders the sandbox already holds (re-adoption). */
  placeholders?: Readonly<Record<string, string>>;
}

export async function startWarmEgress(options: WarmEgressOptions): Promise<WarmEgress> {
  const log = new EgressLog(options.logPath, options.logLimits);
  let closing: Promise<void> | null = null;
  const runtime: { listener: WarmEgress['listener'] } = { listener: null };
  let egress: SandboxEgress;
  try {
    egress = await startSandboxEgress({
      network: options.network,
      hostId: options.hostId,
      dir: options.dir,
      sandboxId: options.sandboxId,
      ...(options.rules === undefined ? {} : { rules: options.rules }),
      ...(options.ask === undefined ? {} : { ask: options.ask }),
      ...(options.services === undefined ? {} : { services: options.services }),
      ...(options.placeholders === undefined ? {} : { placeholders: options.placeholders }),
      onEvent: (event) => {
        const record = log.append(event);
        runtime.listener?.(record);
      },
    });
  } catch (err) {
    log.close();
    throw err;
  }
  return Object.assign(runtime, {
    egress,
    log,
    close(): Promise<void> {
      closing ??= egress.close().finally(() => log.close());
      return closing;
    },
  });
}

/** `sandbox.network`. */
export interface SandboxNetwork {
  /** False for network mode `none`: no proxy, no way out. */
  readonly enabled: boolean;
  /** The rules in force now (mode `none`: empty, everything refused). */
  rules(): EgressRules;
  /** Adds rules live (union, deduplicated) and persists them. Invalid input throws and keeps the old rules. */
  merge(patch: Partial<EgressRulesInput>): EgressRules;
  /** Replaces every rule live (the way to remove one) and persists them. Invalid input keeps the old rules. */
  replace(next: EgressRulesInput): EgressRules;
  /**
   * The audit log, oldest first: events with seq >= `since` (default 0), at most `limit` (default 100, at
   * most 1000). Pass `next` as `since` to get the following page. Events dropped by the log's cap are skipped.
   */
  events(options?: { since?: number; limit?: number }): {
    events: EgressLogRecord[];
    next: number;
  };
}

export interface SandboxNetworkDeps {
  sandboxId: string;
  /** Null for network mode `none`. */
  egress: () => WarmEgress | null;
  enabled: boolean;
  logPath: string;
  /** Throws when the sandbox cannot take the operation (stopped). */
  check(operation: string): void;
  /** Persists the rules after a live update. */
  onRulesChanged(rules: EgressRules): void;
}

export function createSandboxNetwork(deps: SandboxNetworkDeps): SandboxNetwork {
  const none = replaceRules({});
  const update = (operation: string, apply: (egress: WarmEgress) => void): EgressRules => {
    if (!deps.enabled) throw new SandboxNetworkDisabledError(deps.sandboxId, operation);
    deps.check(operation);
    const egress = deps.egress();
    if (egress === null) throw new SandboxNetworkDisabledError(deps.sandboxId, operation);
    apply(egress);
    const rules = egress.egress.proxy.rules;
    deps.onRulesChanged(rules);
    return rules;
  };
  return {
    enabled: deps.enabled,
    rules: () => deps.egress()?.egress.proxy.rules ?? none,
    merge: (patch) => update('merge egress rules', (e) => e.egress.proxy.mergeRules(patch)),
    replace: (next) => update('replace egress rules', (e) => e.egress.proxy.setRules(next)),
    events: (options) => readEgressLog(deps.logPath, options),
  };
}
