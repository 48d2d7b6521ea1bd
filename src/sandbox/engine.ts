/**
 * The Engine interface: what every sandbox backend (local bubblewrap today; warm sandboxes, OCI/gVisor and
 * Kubernetes later) offers. Engines hold no process-global state: many runs with different policies may be
 * in flight at once on one engine.
 */
import type { EgressEvent } from '../egress/forward.js';
import type { SandboxPolicy } from '../policy/schema.js';

/** How a run ended. `setup-error` means the sandbox never started the command. */
export type Outcome =
  | 'exit' // the command exited by itself (see exitCode)
  | 'signal' // killed by a signal it did not get from ironcage (see signal)
  | 'timeout' // wall-clock limit reached; the whole tree was killed
  | 'oom' // the memory limit was hit and the kernel killed a process
  | 'cpu-limit' // RLIMIT_CPU reached (SIGXCPU/SIGKILL)
  | 'file-size-limit' // RLIMIT_FSIZE reached (SIGXFSZ)
  | 'output-limit' // stdout+stderr exceeded limits.outputBytes; the tree was killed
  | 'aborted' // the caller aborted the run
  | 'setup-error'; // the sandbox could not be set up (see error)

/** Which mechanism enforced a limit on this run; `none` is never chosen silently (see preflight). */
export type Enforcement = 'cgroup-v2' | 'cgroup-v1' | 'rlimit';

export interface RunResult {
  outcome: Outcome;
  /** Exit code of the command when outcome is `exit`, else null. */
  exitCode: number | null;
  /** Signal name (e.g. SIGKILL) that ended the command, when one did. */
  signal: string | null;
  /** Wall-clock time from spawn to the end of the tree, ms. */
  wallMs: number;
  /** User + system CPU time of the sandbox, ms (cgroup accounting when present, else the command's rusage). */
  cpuMs: number | null;
  /** Peak memory of the sandbox in bytes (cgroup peak when present, else the command's max RSS). */
  peakMemoryBytes: number | null;
  stdoutBytes: number;
  stderrBytes: number;
  /** How memory and process limits were enforced. */
  enforcement: { memory: Enforcement; processes: Enforcement };
  /** Human-readable explanation when outcome is not `exit`. */
  message?: string;
}

export interface RunRequest {
  policy: SandboxPolicy;
  /** argv of the command; argv[0] is looked up in the sandbox's PATH when it has no slash. */
  argv: readonly string[];
  /** stdin: bytes to feed, `inherit` the caller's stdin, or `ignore` (default: empty). */
  stdin?: 'inherit' | 'ignore' | Uint8Array | string;
  /** Called with each chunk of output as it arrives (after output-limit accounting). */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Aborting kills the whole tree; the result's outcome is `aborted`. */
  signal?: AbortSignal;
  /** Network mode `proxy`: every audited egress event (connections, requests, refusals) of this run. */
  onEgress?: (event: EgressEvent) => void;
}

export interface Engine {
  readonly name: string;
  /** Run one command in a fresh sandbox and tear it down. Never resolves before every process is gone. */
  run(request: RunRequest): Promise<RunResult>;
}
