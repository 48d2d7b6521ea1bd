/**
 * The data model of `ironcage doctor`: what the host looks like (HostSnapshot, gathered by effects), what we
 * concluded (Check), and the facts the engine consumes (PreflightFacts). Kept free of I/O so the evaluators
 * can be unit-tested with snapshots of hosts this machine is not.
 */
import type { CgroupHost } from '../cgroups/detect.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface Check {
  /** Stable dotted id, e.g. `bwrap.version`, `sysctl.kernel.dmesg_restrict`. */
  id: string;
  title: string;
  status: CheckStatus;
  /** One line saying what was found and why it matters. */
  detail: string;
  /** Exact command(s) or sysctl to run; present on every non-ok result. */
  fix?: string;
  /** A failing required check makes ironcage refuse to run sandboxes (see assertIsolationAvailable). */
  required: boolean;
}

export type CgroupLayout = 'unified' | 'hybrid' | 'legacy' | 'none';

export interface PreflightFacts {
  /** Absolute path of the bwrap that was probed, null when none was found. */
  bwrapPath: string | null;
  /** e.g. `0.8.0`; null when unknown. */
  bwrapVersion: string | null;
  bwrapSetuid: boolean;
  /** bwrap started a sandbox with --unshare-user --disable-userns. */
  userns: boolean;
  /** The kernel supports seccomp filters (and bwrap installed one, when it could be probed). */
  seccomp: boolean;
  /** Which cgroup mode ironcage can use for limits; `none` means rlimits only. */
  cgroupMode: CgroupHost['mode'];
  /** The detected cgroup host, ready to hand to the engine; null when detection failed. */
  cgroupHost: CgroupHost | null;
  /** How cgroup filesystems are mounted on this host. */
  cgroupLayout: CgroupLayout;
  /** Landlock ABI version (>= 1), or null when unavailable or not probed. */
  landlockAbi: number | null;
  isRoot: boolean;
  /** Kernel machine name (`uname -m`), e.g. x86_64. */
  arch: string;
  kernelRelease: string;
  /** `ID` from /etc/os-release, e.g. debian, ubuntu, fedora; null when unknown. */
  distro: string | null;
}

export interface PreflightReport {
  /** True when every required check passed: sandboxes can run at full strength. */
  ok: boolean;
  checks: Check[];
  facts: PreflightFacts;
  /** Wall-clock time the probes took, ms. */
  durationMs: number;
}

/** Result of running one helper process (bwrap --version, the probes, the agent). */
export interface ExecOutcome {
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Set when the process could not be started (ENOENT, EACCES, ...) or was killed after the timeout. */
  error?: string;
}

/** Everything the evaluators look at; gathered concurrently by gather.ts, or built by hand in tests. */
export interface HostSnapshot {
  isRoot: boolean;
  machine: string;
  kernelRelease: string;
  /** Text of /etc/os-release (or /usr/lib/os-release), null when absent. */
  osRelease: string | null;
  bwrap: {
    /** What was asked for: an option, IRONCAGE_BWRAP, or `bwrap` (PATH lookup). */
    requested: string;
    /** Where it came from, for messages. */
    source: 'option' | 'IRONCAGE_BWRAP' | 'PATH';
    /** Resolved executable, null when not found / not executable. */
    path: string | null;
    /** Why `path` is null (ENOENT, EACCES, not on PATH ...). */
    lookupError?: string;
    setuid: boolean;
    /** Absent when bwrap was not found. */
    version?: ExecOutcome;
    /** The minimal sandbox: user/pid/net namespaces, --disable-userns, --cap-drop ALL (the seccomp probe's
     * outcome when that one succeeded, since it proves the same and more). */
    probe?: ExecOutcome;
    /** The same sandbox with an allow-all seccomp filter passed via --seccomp. */
    seccompProbe?: ExecOutcome;
  };
  /** Text of /proc/self/status. */
  procStatus: string | null;
  /** Text of /proc/sys/kernel/seccomp/actions_avail, null when absent. */
  seccompActionsAvail: string | null;
  /** Raw value by sysctl name; null when the file does not exist. */
  sysctls: Record<string, string | null>;
  cgroups: {
    /** Result of detectCgroups(), or the message of the error it threw. */
    host: CgroupHost | { error: string };
    mountInfo: string | null;
  };
  agent: {
    /** Path of ironcage-agent, null when not built / not given. */
    path: string | null;
    probe?: ExecOutcome;
  };
}
