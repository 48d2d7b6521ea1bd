/**
 * ironcage TypeScript SDK (`ironcage/sdk`): a client of `ironcage serve`'s HTTP API. It depends on Node's global
 * fetch and, for terminals, the `ws` package (or a global WebSocket), never on the server's code, so it can be
 * bundled into any agent.
 */
export { type CreateKeyOptions, type CreateSecretOptions, IroncageClient } from './client.js';
export {
  CommandHandle,
  Commands,
  type OutputOptions,
  type ProcessResult,
  type RunOptions,
} from './commands.js';
export {
  AuthenticationError,
  ConflictError,
  ConnectionError,
  ForbiddenError,
  IroncageError,
  type IroncageErrorInit,
  NotFoundError,
  RateLimitError,
  ValidationError,
} from './errors.js';
export { Files, type WatchDirOptions, WatchHandle } from './files.js';
export { type ConnectionOptions, DEFAULT_API_URL } from './http.js';
export { Network } from './network.js';
export {
  Pty,
  PtyClosedError,
  type PtyCreateOptions,
  type PtyExit,
  PtyHandle,
  type PtyTarget,
} from './pty.js';
export { Sandbox, type SandboxCreateOptions, type SandboxListOptions } from './sandbox.js';
export type * from './types.js';
