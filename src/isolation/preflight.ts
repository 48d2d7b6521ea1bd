/**
 * Preflight ("ironcage doctor"): which isolation features this host offers, each as a typed check with the
 * exact fix, plus the facts the engine needs. The engine never falls back to weaker isolation silently:
 * assertIsolationAvailable() is how it refuses.
 *
 * Shape: gatherHost() (effects, all concurrent) → HostSnapshot → evaluatePreflight() (pure) → report.
 * One file per check group lives in ./preflight/.
 */
import { evaluateBwrap } from './preflight/bwrap.js';
import { evaluateCgroups } from './preflight/cgroups.js';
import { distroFamily, type FixContext } from './preflight/fixes.js';
import { type GatherOptions, gatherHost } from './preflight/gather.js';
import { evaluateArch, evaluateKernel, evaluatePrivileges } from './preflight/host.js';
import { evaluateLandlock } from './preflight/landlock.js';
import { formatVersion, normalizeArch, parseOsRelease } from './preflight/parse.js';
import { evaluateSeccomp } from './preflight/seccomp.js';
import { evaluateSysctls } from './preflight/sysctls.js';
import type { Check, HostSnapshot, PreflightReport } from './preflight/types.js';
import { evaluateUserns } from './preflight/userns.js';

export type {
  CgroupLayout,
  Check,
  CheckStatus,
  ExecOutcome,
  HostSnapshot,
  PreflightFacts,
  PreflightReport,
} from './preflight/types.js';
export type PreflightOptions = GatherOptions;

/** Checks whose failure means sandboxes cannot run at the strength ironcage promises. */
export const REQUIRED_CHECK_IDS = [
  'host.arch',
  'bwrap.present',
  'bwrap.version',
  'bwrap.probe',
  'userns',
  'seccomp',
] as const;

/** Pure: turns a snapshot of a host into checks and facts. */
export function evaluatePreflight(snap: HostSnapshot): Omit<PreflightReport, 'durationMs'> {
  const os = snap.osRelease === null ? null : parseOsRelease(snap.osRelease);
  const ctx: FixContext = { family: distroFamily(os), isRoot: snap.isRoot };

  const bwrap = evaluateBwrap(snap, ctx);
  const userns = evaluateUserns(snap, ctx, bwrap);
  const seccomp = evaluateSeccomp(snap, ctx, bwrap);
  const cgroups = evaluateCgroups(snap, ctx);
  const landlock = evaluateLandlock(snap, ctx);

  const evaluated: Check[] = [
    evaluateArch(snap),
    evaluateKernel(snap, ctx),
    evaluatePrivileges(snap),
    ...bwrap.checks,
    userns,
    seccomp.check,
    cgroups.check,
    landlock.check,
    ...evaluateSysctls(snap, ctx),
  ];
  // One key order in the JSON for every check, whichever evaluator built it.
  const checks = evaluated.map(({ id, title, status, detail, fix, required }) =>
    fix === undefined
      ? { id, title, status, detail, required }
      : { id, title, status, detail, fix, required },
  );
  return {
    ok: !checks.some((c) => c.required && c.status === 'fail'),
    checks,
    facts: {
      bwrapPath: bwrap.path,
      bwrapVersion: bwrap.version === null ? null : formatVersion(bwrap.version),
      bwrapSetuid: snap.bwrap.setuid,
      userns: userns.status === 'ok',
      seccomp: seccomp.supported,
      cgroupMode: cgroups.host?.mode ?? 'none',
      cgroupHost: cgroups.host,
      cgroupLayout: cgroups.layout,
      landlockAbi: landlock.abi,
      isRoot: snap.isRoot,
      arch: normalizeArch(snap.machine),
      kernelRelease: snap.kernelRelease,
      distro: os?.id ?? null,
    },
  };
}

/** Probes this host (all probes concurrently; typically 10-30 ms) and evaluates it. */
export async function runPreflight(options: PreflightOptions = {}): Promise<PreflightReport> {
  const started = performance.now();
  const snapshot = await gatherHost(options);
  const report = evaluatePreflight(snapshot);
  return { ...report, durationMs: Math.round((performance.now() - started) * 10) / 10 };
}

export class IsolationUnavailableError extends Error {
  override readonly name = 'IsolationUnavailableError';
  readonly code = 'ISOLATION_UNAVAILABLE';
  /** The failing required checks, each with its fix. */
  readonly failures: readonly Check[];

  constructor(failures: readonly Check[]) {
    const lines = failures.map((c) => `- ${c.title}: ${c.detail}${c.fix ? `\n  fix: ${c.fix}` : ''}`);
    super(
      `ironcage refuses to run sandboxes on this host: ${failures.length} required isolation check(s) failed ` +
        `(it never falls back to weaker isolation)\n${lines.join('\n')}`,
    );
    this.failures = failures;
  }
}

/** Throws IsolationUnavailableError when any required check failed. */
export function assertIsolationAvailable(report: Pick<PreflightReport, 'checks'>): void {
  const failures = report.checks.filter((c) => c.required && c.status === 'fail');
  if (failures.length > 0) throw new IsolationUnavailableError(failures);
}
