/**
 * The escape battery's harness: every probe is one table entry (see ./probes/), run in a fresh sandbox of the
 * real local engine (real bwrap, real seccomp filter, real kernel) and judged by its own `check`.
 *
 * Most probes are python3 snippets. A shared prelude (PYTHON_PRELUDE) gives them `attempt(label, fn)`, which
 * records whether an operation succeeded or which errno stopped it, `fact(key, value)` for observations, and
 * `syscall(name, ...)` for raw syscalls by name (x86_64 and aarch64 numbers). At exit the snippet prints one
 * line `PROBE {"attempts": [...], "facts": {...}}` that the checks read. A probe whose snippet never reports
 * (crashed, killed, sandbox not started) fails: silence is never taken as "blocked".
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LocalEngine } from '../../src/isolation/local-engine.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import type { SandboxPolicy, SandboxPolicyInput } from '../../src/policy/schema.js';
import type { RunResult } from '../../src/sandbox/engine.js';

export type Category =
  | 'filesystem'
  | 'privilege'
  | 'kernel'
  | 'info-leak'
  | 'network'
  | 'resources'
  | 'cleanup';

export const CATEGORIES: readonly Category[] = [
  'filesystem',
  'privilege',
  'kernel',
  'info-leak',
  'network',
  'resources',
  'cleanup',
];

/** Conditions a probe needs; when one is not met the probe is skipped with the reason. */
export type Requirement = 'root-cgroups' | 'x86_64';

/** Host-side things the probes aim at, created once per test process (see setupFixtures). */
export interface HostFixtures {
  /** A TCP service on the HOST's 127.0.0.1 that a sandbox must not reach. */
  tcpPort: number;
  /** Connections the host TCP service accepted so far. */
  tcpAccepted(): number;
  /** A Linux abstract Unix socket on the host (no file: only the network namespace separates it). */
  abstractName: string;
  abstractAccepted(): number;
  /** A file in the host's /tmp that a sandbox must not see. */
  hostTmpFile: string;
  /** A token unique to this test process, used in markers and file names. */
  token: string;
  /** The host's home directories (/root and /home/*). */
  hostHomes: string[];
  hostName: string;
  /** A variable set in this test process's environment (the sandbox must never see its name or value). */
  canaryName: string;
}

export interface ProbeAttempt {
  label: string;
  ok: boolean;
  /** errno name (EPERM, ...) or a Python exception name when the operation failed. */
  errno?: string;
  detail?: string;
}

export interface ProbeReport {
  attempts: ProbeAttempt[];
  facts: Record<string, unknown>;
}

export interface SandboxRun {
  result: RunResult;
  stdout: string;
  stderr: string;
  /** Bytes delivered to onStdout/onStderr (to check output accounting). */
  deliveredBytes: number;
  /** The PROBE line of a python probe; null when the snippet never reported. */
  report: ProbeReport | null;
  policy: SandboxPolicy;
}

export interface Probe {
  /** Stable id, `<category prefix>-<slug>`, listed in docs/escape-battery.md. */
  id: string;
  category: Category;
  /** What the probe tries (one sentence). */
  tries: string;
  /** What passing proves about the sandbox, and why the same check would fail without the sandbox. */
  proves: string;
  /** The result the probe insists on. */
  expected: string;
  requires?: readonly Requirement[];
  /** A python3 snippet run after PYTHON_PRELUDE (or a function of the host fixtures returning one). */
  python?: string | ((fx: HostFixtures) => string);
  /** A plain command instead of python. */
  argv?: readonly string[];
  stdin?: string;
  /** Policy layer merged onto the default preset (after the battery's short wall-time limit). */
  policy?: SandboxPolicyInput | ((fx: HostFixtures) => SandboxPolicyInput);
  /** Host-side preparation right before the run (e.g. create something the sandbox must not see). */
  prepare?: (fx: HostFixtures) => void | Promise<void>;
  /** Called with each stdout chunk while the sandbox runs (to look at the host while it is alive). */
  whileRunning?: (chunk: string, fx: HostFixtures) => void;
  check?: (run: SandboxRun, fx: HostFixtures) => void | Promise<void>;
  /** For probes that drive something other than one engine run (e.g. the CLI); replaces python/argv/check. */
  custom?: (fx: HostFixtures) => Promise<void>;
  /** Test timeout (default 30 s). */
  timeoutMs?: number;
}

/** Wall-time limit of every probe unless its policy says otherwise: short, so a hung probe costs little. */
export const PROBE_WALL_MS = 8_000;

const ARCH_NR = `
# (x86_64, aarch64) syscall numbers; None where the architecture has no such syscall.
_NR = {
  'getpid': (39, 172), 'clone': (56, 220), 'clone3': (435, 435), 'unshare': (272, 97), 'setns': (308, 268),
  'mount': (165, 40), 'umount2': (166, 39), 'pivot_root': (155, 41), 'chroot': (161, 51),
  'open_tree': (428, 428), 'move_mount': (429, 429), 'fsopen': (430, 430), 'fsconfig': (431, 431),
  'fsmount': (432, 432), 'fspick': (433, 433), 'mount_setattr': (442, 442),
  'io_uring_setup': (425, 425), 'userfaultfd': (323, 282), 'bpf': (321, 280), 'perf_event_open': (298, 241),
  'keyctl': (250, 219), 'add_key': (248, 217), 'request_key': (249, 218),
  'kexec_load': (246, 104), 'kexec_file_load': (320, 294), 'init_module': (175, 105),
  'finit_module': (313, 273), 'delete_module': (176, 106),
  'process_vm_readv': (310, 270), 'process_vm_writev': (311, 271), 'ptrace': (101, 117),
  'personality': (135, 92), 'name_to_handle_at': (303, 264), 'open_by_handle_at': (304, 265),
  'syslog': (103, 116), 'fanotify_init': (300, 262), 'reboot': (169, 142), 'swapon': (167, 224),
  'acct': (163, 89), 'iopl': (172, None), 'ioperm': (173, None), 'capset': (126, 91),
  'pidfd_open': (434, 434), 'pidfd_getfd': (438, 438), 'setuid': (105, 146), 'socket': (41, 198),
  'ioctl': (16, 29), 'sethostname': (170, 161),
}
`;

/**
 * Helpers every python probe starts with. `attempt` records success or the errno name; the report is printed
 * by an atexit hook of the original process only (forked children leave with os._exit or are killed).
 */
export const PYTHON_PRELUDE = `
import atexit, ctypes, errno, json, os, platform, socket, struct, sys, time
ARCH = platform.machine()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
${ARCH_NR}
_attempts = []
_facts = {}
_pid = os.getpid()

class NoSuchSyscall(Exception):
    pass

def nr(name):
    pair = _NR[name]
    n = pair[0] if ARCH == 'x86_64' else pair[1] if ARCH == 'aarch64' else None
    if n is None:
        raise NoSuchSyscall(name + ' on ' + ARCH)
    return n

def _arg(a):
    if a is None:
        return ctypes.c_void_p(0)
    if isinstance(a, int):
        return ctypes.c_ulong(a & 0xffffffffffffffff)
    if isinstance(a, str):
        return ctypes.c_char_p(a.encode())
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    return a

def syscall(name, *args):
    n = nr(name) if isinstance(name, str) else name
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(n), *[_arg(a) for a in args])
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r

def ename(e):
    return errno.errorcode.get(e, 'E' + str(e))

def attempt(label, fn):
    try:
        value = fn()
    except socket.gaierror as e:
        _attempts.append({'label': label, 'ok': False, 'errno': 'gaierror', 'detail': str(e)[:300]})
        return None
    except OSError as e:
        name = ename(e.errno) if e.errno else type(e).__name__
        _attempts.append({'label': label, 'ok': False, 'errno': name, 'detail': str(e)[:300]})
        return None
    except Exception as e:
        _attempts.append({'label': label, 'ok': False, 'errno': type(e).__name__, 'detail': str(e)[:300]})
        return None
    _attempts.append({'label': label, 'ok': True, 'detail': repr(value)[:300]})
    return value

def fact(key, value):
    _facts[key] = value

def _report():
    if os.getpid() == _pid:
        sys.stdout.write('PROBE ' + json.dumps({'attempts': _attempts, 'facts': _facts}) + '\\n')
        sys.stdout.flush()

atexit.register(_report)
`;

/** The full python program of a probe snippet. */
export function pythonProgram(snippet: string): string {
  return `${PYTHON_PRELUDE}\n# ---- probe ----\n${snippet}\n`;
}

// ---------------------------------------------------------------------------------------------------------
// Fixtures

let fixtures: HostFixtures | null = null;
const closers: (() => Promise<void> | void)[] = [];

function listen(server: Server, options: { host?: string; port?: number; path?: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => resolve());
  });
}

function hostHomes(): string[] {
  const homes = ['/root'];
  try {
    for (const name of readdirSync('/home')) homes.push(join('/home', name));
  } catch {
    // no /home on this host
  }
  return homes;
}

export async function setupFixtures(): Promise<HostFixtures> {
  if (fixtures !== null) return fixtures;
  const token = `${process.pid}-${randomBytes(5).toString('hex')}`;
  let tcp = 0;
  const tcpServer = createServer((s) => {
    tcp++;
    s.end('host-secret-service\n');
  });
  await listen(tcpServer, { host: '127.0.0.1', port: 0 });
  const address = tcpServer.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  let abstract = 0;
  const abstractName = `ironcage-escape-${token}`;
  const abstractServer = createServer((s) => {
    abstract++;
    s.end('host-secret-service\n');
  });
  await listen(abstractServer, { path: `\0${abstractName}` });
  const dir = mkdtempSync(join(tmpdir(), 'ironcage-escape-'));
  const hostTmpFile = join(dir, 'host-secret.txt');
  writeFileSync(hostTmpFile, `host secret ${token}\n`, { mode: 0o644 });
  closers.push(
    () => new Promise<void>((r) => tcpServer.close(() => r())),
    () => new Promise<void>((r) => abstractServer.close(() => r())),
    () => rmSync(dir, { recursive: true, force: true }),
  );
  // A host secret in this process's environment, which bubblewrap inherits from us.
  const canaryName = `IRONCAGE_ESCAPE_CANARY_${token.replace('-', '_')}`;
  process.env[canaryName] = `canary-${randomBytes(8).toString('hex')}`;
  closers.push(() => {
    delete process.env[canaryName];
  });
  fixtures = {
    canaryName,
    tcpPort: address.port,
    tcpAccepted: () => tcp,
    abstractName,
    abstractAccepted: () => abstract,
    hostTmpFile,
    token,
    hostHomes: hostHomes(),
    hostName: hostname(),
  };
  return fixtures;
}

export async function teardownFixtures(): Promise<void> {
  for (const close of closers.splice(0)) await close();
  fixtures = null;
}

/** Runs `fn` when the battery ends (host-side cleanup of something a probe created). */
export function onTeardown(fn: () => void | Promise<void>): void {
  closers.push(fn);
}

/** A host directory removed when the battery ends. */
export function scratchHostDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  // As root, sandboxes run as host uid 65534: scratch directories are shared with it (probes bind them rw).
  chmodSync(dir, 0o777);
  closers.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------------------------------------------------
// Running

let sharedEngine: LocalEngine | null = null;

/** One engine for the battery: engines hold no global state, so concurrent runs are what users do too. */
export function engine(): LocalEngine {
  sharedEngine ??= new LocalEngine();
  return sharedEngine;
}

export function probePolicy(...layers: SandboxPolicyInput[]): SandboxPolicy {
  return resolvePolicy('default', { limits: { wallTimeMs: PROBE_WALL_MS } }, ...layers);
}

function parseReport(stdout: string): ProbeReport | null {
  const line = stdout
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('PROBE '));
  if (line === undefined) return null;
  try {
    return JSON.parse(line.slice('PROBE '.length)) as ProbeReport;
  } catch {
    return null;
  }
}

export async function runInSandbox(
  argv: readonly string[],
  options: {
    policy?: SandboxPolicyInput;
    stdin?: string;
    engine?: LocalEngine;
    onStdout?: (chunk: string) => void;
  } = {},
): Promise<SandboxRun> {
  const policy = probePolicy(options.policy ?? {});
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let delivered = 0;
  const result = await (options.engine ?? engine()).run({
    policy,
    argv,
    ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
    onStdout: (b) => {
      delivered += b.length;
      if (out.length < 4096) out.push(b);
      options.onStdout?.(b.toString('utf8'));
    },
    onStderr: (b) => {
      delivered += b.length;
      if (err.length < 4096) err.push(b);
    },
  });
  const stdout = Buffer.concat(out).toString('utf8');
  return {
    result,
    stdout,
    stderr: Buffer.concat(err).toString('utf8'),
    deliveredBytes: delivered,
    report: parseReport(stdout),
    policy,
  };
}

export async function runProbe(probe: Probe, fx: HostFixtures): Promise<SandboxRun> {
  const code = typeof probe.python === 'function' ? probe.python(fx) : probe.python;
  const argv = code !== undefined ? ['python3', '-c', pythonProgram(code)] : probe.argv;
  if (argv === undefined) throw new Error(`probe ${probe.id} has neither python nor argv`);
  const layer = typeof probe.policy === 'function' ? probe.policy(fx) : probe.policy;
  return runInSandbox(argv, {
    ...(layer !== undefined ? { policy: layer } : {}),
    ...(probe.stdin !== undefined ? { stdin: probe.stdin } : {}),
    ...(probe.whileRunning !== undefined ? { onStdout: (c: string) => probe.whileRunning?.(c, fx) } : {}),
  });
}

// ---------------------------------------------------------------------------------------------------------
// Judging

function clip(text: string, max = 1500): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length - max} more chars)` : text;
}

/** Everything a human needs to see when the sandbox did not hold. */
export function evidence(run: SandboxRun): string {
  const { result } = run;
  return [
    `outcome=${result.outcome} exitCode=${result.exitCode} signal=${result.signal} wallMs=${Math.round(result.wallMs)}`,
    result.message ? `message: ${result.message}` : '',
    `report: ${run.report === null ? '(none)' : clip(JSON.stringify(run.report, null, 1), 3000)}`,
    `stdout: ${clip(run.stdout)}`,
    `stderr: ${clip(run.stderr)}`,
  ]
    .filter(Boolean)
    .join('\n');
}

export function fail(run: SandboxRun, why: string): never {
  assert.fail(`SANDBOX DID NOT HOLD (or the probe could not run): ${why}\n${evidence(run)}`);
}

/** The probe ran to completion and reported (a missing report is a failure, never a pass). */
export function reportOf(run: SandboxRun): ProbeReport {
  if (run.report === null) fail(run, 'the probe printed no PROBE report');
  return run.report;
}

export type Expectation = 'ok' | string | readonly string[];

/**
 * Every listed attempt happened with the expected result ('ok' = it must succeed, else the errno name(s) that
 * must have stopped it), and no attempt was made that the expectation does not list.
 */
export function expectAttempts(run: SandboxRun, expected: Record<string, Expectation>): void {
  const report = reportOf(run);
  const seen = new Set<string>();
  for (const a of report.attempts) {
    seen.add(a.label);
    const want = expected[a.label];
    if (want === undefined) fail(run, `attempt "${a.label}" is not covered by the probe's expectation`);
    if (want === 'ok') {
      if (!a.ok) fail(run, `"${a.label}" should have worked inside the sandbox but failed with ${a.errno}`);
      continue;
    }
    const allowed = typeof want === 'string' ? [want] : want;
    if (a.ok && allowed.includes('ok')) continue;
    if (a.ok) fail(run, `"${a.label}" SUCCEEDED (${a.detail}); expected ${allowed.join(' or ')}`);
    if (!allowed.includes(a.errno ?? '')) {
      fail(run, `"${a.label}" failed with ${a.errno} (${a.detail}), expected ${allowed.join(' or ')}`);
    }
  }
  for (const label of Object.keys(expected)) {
    if (!seen.has(label)) fail(run, `expected attempt "${label}" was never made`);
  }
}

/** Every attempt of the probe failed with one of `errnos` (and at least one attempt was made). */
export function expectAllBlocked(run: SandboxRun, errnos: string | readonly string[]): void {
  const report = reportOf(run);
  if (report.attempts.length === 0) fail(run, 'the probe made no attempt');
  expectAttempts(run, Object.fromEntries(report.attempts.map((a) => [a.label, errnos])));
}

export function factOf<T = unknown>(run: SandboxRun, key: string): T {
  const facts = reportOf(run).facts;
  if (!(key in facts)) fail(run, `the probe reported no fact "${key}"`);
  return facts[key] as T;
}

/** The sandboxed command ran and exited normally (so its report is complete). */
export function expectExited(run: SandboxRun, code = 0): void {
  if (run.result.outcome !== 'exit' || run.result.exitCode !== code) {
    fail(run, `expected the probe to exit with ${code}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host facts and registration

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The cgroup hierarchy the engine will use, or null (rlimits only). */
export function engineUsesCgroups(): boolean {
  return engine().cgroupHost() !== null;
}

function unmet(requirement: Requirement): string | null {
  if (requirement === 'x86_64' && process.arch !== 'x64') return 'x86_64 only';
  if (requirement === 'root-cgroups' && !(isRoot() && engineUsesCgroups())) {
    return 'needs root with a writable cgroup hierarchy';
  }
  return null;
}

/** Pids on the host whose command line contains `marker`. */
export function hostPidsWithMarker(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'latin1');
      if (cmdline.includes(marker)) found.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

export function testName(probe: Probe): string {
  return `${probe.id}: ${probe.proves}`;
}

/** One node:test test per probe, `concurrency` probes at a time (the battery must stay fast on 2 cores). */
export function registerCategory(
  category: Category,
  probes: readonly Probe[],
  options: { concurrency: number } = { concurrency: 4 },
): void {
  describe(`escape battery: ${category}`, { concurrency: options.concurrency }, () => {
    let fx: HostFixtures;
    before(async () => {
      fx = await setupFixtures();
    });
    for (const probe of probes) {
      const reasons = (probe.requires ?? []).map(unmet).filter((r): r is string => r !== null);
      test(testName(probe), {
        timeout: probe.timeoutMs ?? 30_000,
        skip: reasons.join('; ') || false,
      }, async () => {
        if (probe.custom !== undefined) {
          await probe.custom(fx);
          return;
        }
        await probe.prepare?.(fx);
        const run = await runProbe(probe, fx);
        if (probe.check === undefined) throw new Error(`probe ${probe.id} has no check`);
        await probe.check(run, fx);
      });
    }
  });
}

/** Registers the after-hook that closes the host fixtures (call once per test file). */
export function registerTeardown(): void {
  after(teardownFixtures);
}
