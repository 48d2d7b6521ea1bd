/** Warm sandboxes: the lifecycle manager and what it hands out (docs/warm-sandboxes.md). */
export type { Attachment, AttachOptions, CommandResult, RunOptions } from './commands.js';
export { Commands, ProcessHandle } from './commands.js';
export {
  PauseUnsupportedError,
  SandboxManagerError,
  SandboxStartError,
  SandboxStateError,
  SnapshotError,
  WorkspaceQuotaError,
} from './errors.js';
export type { FileEntry, FileEvent } from './files.js';
export { Files } from './files.js';
export type { CreateOptions, SandboxManagerOptions, StartReport } from './manager.js';
export { SandboxManager } from './manager.js';
export type { SandboxMeta, SandboxState } from './meta.js';
export type { SandboxEvents, StopReason } from './sandbox.js';
export { Sandbox } from './sandbox.js';
export type { SnapshotInfo } from './snapshots.js';
