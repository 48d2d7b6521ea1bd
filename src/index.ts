/** ironcage as a library: policies, the local engine, and the pieces a caller may want to inspect. */
export { LocalEngine, type LocalEngineOptions, SandboxSetupError } from './isolation/local-engine.js';
export { type HostView, MountPlanError, type PlanContext, planBwrapArgs } from './isolation/mounts.js';
export { mergePolicyInputs, PolicyError, parsePolicyLayer, resolvePolicy } from './policy/merge.js';
export { type PresetName, presetNames, presets, SECRET_PATHS } from './policy/presets.js';
export { type SandboxPolicy, type SandboxPolicyInput, sandboxPolicySchema } from './policy/schema.js';
export type { Enforcement, Engine, Outcome, RunRequest, RunResult } from './sandbox/engine.js';
export * from './sandbox/index.js';
