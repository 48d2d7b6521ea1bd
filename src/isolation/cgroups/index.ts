/**
 * Resource control for sandboxes with Linux cgroups (v2, or v1 on hybrid hosts). See ./limits.ts for what is
 * enforced how, ./detect.ts for where sandbox cgroups go, ./sweep.ts for crash cleanup.
 */
export type {
  CgroupDirFacts,
  CgroupFacts,
  CgroupHost,
  CgroupLocations,
  DetectOptions,
  V1Hierarchies,
} from './detect.js';
export { decideCgroupHost, detectCgroups, locateCgroups, probeCgroups } from './detect.js';
export type { CgroupErrorCode } from './errors.js';
export { CgroupError } from './errors.js';
export type { CgroupLimits, ControlWrite } from './limits.js';
export { cpuWeightToShares, planV1Writes, planV2Writes } from './limits.js';
export type { MountEntry, ProcCgroupEntry } from './parse.js';
export { parseMountInfo, parseProcSelfCgroup } from './parse.js';
export type { CgroupEnforcement, CgroupStats, SandboxCgroupOptions } from './sandbox-cgroup.js';
export { createSandboxCgroup, openSandboxCgroup, SandboxCgroup } from './sandbox-cgroup.js';
export type { SweepResult } from './sweep.js';
export { sweepStaleCgroups } from './sweep.js';
