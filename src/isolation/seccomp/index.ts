/**
 * The seccomp compiler: profiles (data) → classic BPF for bwrap `--seccomp FD`, OCI JSON for runc/gVisor and
 * Kubernetes Localhost profiles, plus an interpreter that runs the BPF the way the kernel does, for tests.
 */
import type { SeccompProfileName } from '../../policy/schema.js';
import { archFromNode, type SeccompArch } from './arch.js';
import { encodeProgram } from './bpf.js';
import { compileProfile } from './compile.js';
import { PROFILES } from './profiles.js';

export {
  AUDIT_ARCH,
  archFromNode,
  type SeccompArch,
  SYSCALL_TABLES,
  seccompArches,
  UnsupportedArchError,
} from './arch.js';
export {
  BPF,
  BPF_MAXINSNS,
  BpfAssembler,
  BpfAssemblyError,
  BpfProgramTooLongError,
  decodeProgram,
  encodeProgram,
  type SockFilter,
} from './bpf.js';
export { type CompiledProgram, compileProfile } from './compile.js';
export {
  decodeAction,
  type Execution,
  evaluateSeccomp,
  runSeccomp,
  type SeccompData,
  type SeccompVerdict,
} from './interpreter.js';
export {
  evaluateOci,
  kubernetesLocalhostProfile,
  OciAmbiguityError,
  type OciSeccomp,
  type OciSeccompArg,
  type OciSyscallRule,
  ociSeccompJson,
  SCMP_ARCH,
  toOciSeccomp,
} from './oci.js';
export {
  type ArgCase,
  type ArgMatch,
  allowedSyscallCount,
  listProfile,
  PROFILES,
  type ProfileListing,
  type RuleAction,
  type SeccompProfile,
  type SyscallRule,
} from './profiles.js';
export class UnknownProfileError extends Error {
  readonly code = 'SECCOMP_UNKNOWN_PROFILE';
  constructor(readonly profile: string) {
    super(`unknown seccomp profile '${profile}'; use one of: ${Object.keys(PROFILES).join(', ')}`);
    this.name = 'UnknownProfileError';
  }
}

export { InvalidSeccompProgramError, verifySeccompProgram } from './verify.js';

const cache = new Map<string, Buffer>();

/**
 * The BPF filter of `profile` for `arch` (default: this host), as bytes for bwrap `--seccomp FD`.
 * Compiled once per (profile, arch); each call returns its own copy, so callers may not corrupt the cache.
 */
export function compileSeccomp(profile: SeccompProfileName, arch: SeccompArch = archFromNode()): Buffer {
  const key = `${profile}/${arch}`;
  let bytes = cache.get(key);
  if (bytes === undefined) {
    const definition = PROFILES[profile];
    if (definition === undefined) throw new UnknownProfileError(String(profile));
    bytes = encodeProgram(compileProfile(definition, arch).instructions);
    cache.set(key, bytes);
  }
  return Buffer.from(bytes);
}
