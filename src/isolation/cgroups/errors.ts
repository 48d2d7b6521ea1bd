/** The one error type of the cgroups module; `code` says which step failed so callers can branch on it. */
export type CgroupErrorCode =
  | 'INVALID_ARGUMENT' // a caller-supplied id, limit or pid is malformed
  | 'UNAVAILABLE' // the host has no usable cgroup mode (detectCgroups returned mode 'none')
  | 'CREATE_FAILED' // a sandbox cgroup directory could not be created (exists already, permission, ...)
  | 'LIMIT_FAILED' // the kernel refused a limit value
  | 'PLACE_FAILED' // a process could not be moved into the sandbox cgroup
  | 'KILL_TIMEOUT' // processes were still inside after the kill deadline
  | 'FREEZE_TIMEOUT' // the freezer did not report the cgroup frozen before the deadline
  | 'DESTROY_FAILED'; // a directory could not be removed before the deadline

export class CgroupError extends Error {
  override readonly name = 'CgroupError';
  readonly code: CgroupErrorCode;

  constructor(code: CgroupErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The errno name (ENOENT, EBUSY, ...) of a failed fs call, if it has one. */
export function errnoOf(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}
