/**
 * The effects of the preflight: read /proc and /etc, run bwrap and the agent. Everything starts at once;
 * the slowest part is the two probe sandboxes (a few ms each).
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { machine, release } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import type { CgroupHost } from '../cgroups/detect.js';
import { AGENT_BUILD_PATH, packageFile } from '../package-files.js';
import { allowAllFilter, probeArgs, SECCOMP_PROBE_FD } from './bwrap.js';
import { succeeded } from './outcome.js';
import { HARDENING_SYSCTLS } from './sysctls.js';
import type { ExecOutcome, HostSnapshot } from './types.js';
import { USERNS_SYSCTLS } from './userns.js';

export interface GatherOptions {
  /** bubblewrap to check (default: IRONCAGE_BWRAP, else `bwrap` on PATH). */
  bwrapPath?: string;
  /** ironcage-agent to ask for the Landlock ABI (default: this package's build; null: do not probe). */
  agentPath?: string | null;
  /** Environment for PATH and IRONCAGE_BWRAP (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** Cgroup detection; injectable so callers can reuse a cached result. */
  detectCgroups?: () => CgroupHost;
  /** Per helper process (default 5000 ms). */
  timeoutMs?: number;
}

const OUTPUT_CAP = 16 * 1024;

/** Runs a helper to completion; never rejects. `fd3` is written to a pipe at descriptor 3 and closed. */
export function runHelper(
  file: string,
  args: readonly string[],
  timeoutMs: number,
  fd3?: Buffer,
): Promise<ExecOutcome> {
  return new Promise((done) => {
    let stdout = '';
    let stderr = '';
    let error: string | undefined;
    const stdio: ('ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
    if (fd3) stdio.push('pipe');
    const child = spawn(file, args, { stdio });
    const timer = setTimeout(() => {
      error = `${file}: no answer within ${timeoutMs} ms`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      if (stdout.length < OUTPUT_CAP) stdout += s;
    });
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < OUTPUT_CAP) stderr += s;
    });
    const extra = child.stdio[SECCOMP_PROBE_FD];
    if (fd3 && extra && 'end' in extra) {
      // bwrap may exit before reading (e.g. an unknown option): EPIPE is then expected, not an error.
      extra.on('error', () => {});
      (extra as Writable).end(fd3);
    }
    child.on('error', (err: NodeJS.ErrnoException) => {
      error ??= `${file}: ${err.code ?? err.message}`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ exitCode: code, signal, stdout, stderr, ...(error !== undefined ? { error } : {}) });
    });
  });
}

async function readOrNull(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

async function isExecutableFile(path: string): Promise<string | null> {
  try {
    const st = await stat(path);
    if (!st.isFile()) return 'not a regular file';
    await access(path, constants.X_OK);
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** Like execvp: a name with a slash is used as is, otherwise each PATH entry is tried. */
export async function resolveExecutable(
  requested: string,
  pathVar: string | undefined,
): Promise<{ path: string } | { error: string }> {
  if (requested.includes('/')) {
    const path = isAbsolute(requested) ? requested : resolve(requested);
    const problem = await isExecutableFile(path);
    return problem === null ? { path } : { error: problem };
  }
  for (const dir of (pathVar ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, requested);
    if ((await isExecutableFile(candidate)) === null) return { path: candidate };
  }
  return { error: `not found in PATH=${pathVar ?? ''}` };
}

async function gatherBwrap(options: GatherOptions, env: NodeJS.ProcessEnv, timeoutMs: number) {
  const fromEnv = env.IRONCAGE_BWRAP;
  const source: HostSnapshot['bwrap']['source'] =
    options.bwrapPath !== undefined
      ? 'option'
      : fromEnv !== undefined && fromEnv !== ''
        ? 'IRONCAGE_BWRAP'
        : 'PATH';
  const requested = options.bwrapPath ?? (source === 'IRONCAGE_BWRAP' ? (fromEnv as string) : 'bwrap');
  const found = await resolveExecutable(requested, env.PATH);
  if ('error' in found) {
    return { requested, source, path: null, lookupError: found.error, setuid: false };
  }
  const path = found.path;
  // One sandbox with a seccomp filter proves both; only when it fails does a second one without the filter
  // tell which part broke. (Concurrent namespace setups slow each other down on small machines.)
  const [st, version, seccompProbe] = await Promise.all([
    stat(path),
    runHelper(path, ['--version'], timeoutMs),
    runHelper(path, probeArgs(true), timeoutMs, allowAllFilter()),
  ]);
  const probe = succeeded(seccompProbe) ? seccompProbe : await runHelper(path, probeArgs(false), timeoutMs);
  const setuid = (st.mode & 0o4000) !== 0 && st.uid === 0;
  return { requested, source, path, setuid, version, probe, seccompProbe };
}

function sysctlPath(name: string): string {
  return `/proc/sys/${name.replaceAll('.', '/')}`;
}

async function gatherSysctls(): Promise<Record<string, string | null>> {
  const names = [...USERNS_SYSCTLS, ...HARDENING_SYSCTLS.map((r) => r.name)];
  const values = await Promise.all(names.map((n) => readOrNull(sysctlPath(n))));
  return Object.fromEntries(names.map((n, i) => [n, values[i] ?? null]));
}

async function gatherAgent(options: GatherOptions, timeoutMs: number): Promise<HostSnapshot['agent']> {
  const path = options.agentPath === undefined ? packageFile(AGENT_BUILD_PATH) : options.agentPath;
  if (path === null) return { path: null };
  const problem = await isExecutableFile(path);
  if (problem !== null) {
    return {
      path,
      probe: { exitCode: null, signal: null, stdout: '', stderr: '', error: `${path}: ${problem}` },
    };
  }
  return { path, probe: await runHelper(path, ['probe'], timeoutMs) };
}

async function detect(options: GatherOptions, isRoot: boolean): Promise<HostSnapshot['cgroups']['host']> {
  try {
    if (options.detectCgroups) return options.detectCgroups();
    // Loaded on demand: the module does a few dozen synchronous reads we only want when asked.
    const { detectCgroups } = await import('../cgroups/detect.js');
    return detectCgroups({ isRoot });
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

export async function gatherHost(options: GatherOptions = {}): Promise<HostSnapshot> {
  const env = options.env ?? process.env;
  const timeoutMs = options.timeoutMs ?? 5000;
  const isRoot = process.geteuid?.() === 0;
  const [osRelease, bwrap, procStatus, seccompActionsAvail, sysctls, mountInfo, agent, cgroupHost] =
    await Promise.all([
      readOrNull('/etc/os-release').then((t) => t ?? readOrNull('/usr/lib/os-release')),
      gatherBwrap(options, env, timeoutMs),
      readOrNull('/proc/self/status'),
      readOrNull('/proc/sys/kernel/seccomp/actions_avail'),
      gatherSysctls(),
      readOrNull('/proc/self/mountinfo'),
      gatherAgent(options, timeoutMs),
      detect(options, isRoot),
    ]);
  return {
    isRoot,
    machine: machine(),
    kernelRelease: release(),
    osRelease,
    bwrap,
    procStatus,
    seccompActionsAvail,
    sysctls,
    cgroups: { host: cgroupHost, mountInfo },
    agent,
  };
}
