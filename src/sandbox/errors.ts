/** Errors of the warm-sandbox lifecycle; each has a stable `code` a caller (or the HTTP layer) can branch on. */
/** The sandbox is not in a state that allows the operation. */
export class SandboxStateError extends Error {
  constructor(
    readonly code: 'SANDBOX_PAUSED' | 'SANDBOX_STOPPED' | 'SANDBOX_NOT_PAUSED' | 'SANDBOX_DISCONNECTED',
    readonly sandboxId: string,
    operation: string,
  ) {
    const why = {
      SANDBOX_PAUSED: 'is paused; resume() it first',
      SANDBOX_STOPPED: 'is stopped; create a new sandbox',
      SANDBOX_NOT_PAUSED: 'is not paused',
      SANDBOX_DISCONNECTED: 'has lost its agent connection and is reconnecting; retry shortly',
    }[code];
    super(`cannot ${operation}: sandbox ${sandboxId} ${why}`);
    this.name = 'SandboxStateError';
  }
}

/** pause() (and snapshots, which need a paused sandbox) on a host without a usable cgroup freezer. */
export class PauseUnsupportedError extends Error {
  readonly code = 'PAUSE_UNSUPPORTED';
  constructor(sandboxId: string, why: string) {
    super(
      `cannot pause sandbox ${sandboxId}: ${why}. Pausing needs the cgroup freezer (cgroup v2 cgroup.freeze, ` +
        'or the v1 freezer hierarchy) writable by ironcage; `ironcage doctor` shows what this host has',
    );
    this.name = 'PauseUnsupportedError';
  }
}

export class SnapshotError extends Error {
  constructor(
    readonly code: 'SNAPSHOT_NOT_FOUND' | 'SNAPSHOT_EXISTS' | 'SNAPSHOT_INVALID_NAME' | 'SNAPSHOT_FAILED',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'SnapshotError';
  }
}

/** The sandbox could not be created or did not become ready (its agent never answered). */
export class SandboxStartError extends Error {
  readonly code = 'SANDBOX_START_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxStartError';
  }
}

/** A write through the files API would exceed (or the workspace already exceeds) its disk quota. */
export class WorkspaceQuotaError extends Error {
  readonly code = 'WORKSPACE_QUOTA_EXCEEDED';
  constructor(sandboxId: string, usedBytes: number, quotaBytes: number) {
    super(
      `sandbox ${sandboxId}: workspace uses ${usedBytes} bytes, over its quota of ${quotaBytes} bytes ` +
        '(create option workspaceQuotaMb); remove files or create the sandbox with a larger quota',
    );
    this.name = 'WorkspaceQuotaError';
  }
}

/** Bad arguments to the manager (unknown id, malformed id, manager closed). */
export class SandboxManagerError extends Error {
  constructor(
    readonly code:
      | 'SANDBOX_NOT_FOUND'
      | 'INVALID_ID'
      | 'ID_IN_USE'
      | 'MANAGER_CLOSED'
      | 'MANAGER_NOT_STARTED'
      | 'STATE_DIR_UNUSABLE',
    message: string,
  ) {
    super(message);
    this.name = 'SandboxManagerError';
  }
}
