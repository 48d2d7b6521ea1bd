/** Errors of the control plane's store; each has a stable `code` the HTTP layer maps to a status. */
export type StoreErrorCode =
  /** Input failed validation (HTTP 400). */
  | 'INVALID_INPUT'
  /** A pagination cursor that this store did not produce, or that was tampered with (HTTP 400). */
  | 'INVALID_CURSOR'
  /** The row to change does not exist (HTTP 404). */
  | 'NOT_FOUND'
  /** A row with that id or name already exists (HTTP 409). */
  | 'CONFLICT'
  /** An owner already holds as many rows as the caller allowed (see recordSandbox's ownerLimit). */
  | 'LIMIT_REACHED'
  /** The database was written by a newer ironcage; opening it could corrupt it. */
  | 'SCHEMA_TOO_NEW'
  /** The database's recorded migrations differ from this code's (a fork or a hand-edited database). */
  | 'SCHEMA_MISMATCH'
  /** The file could not be opened as a database. */
  | 'OPEN_FAILED'
  /** A stored row no longer parses (hand-edited or corrupted database). */
  | 'CORRUPT_ROW'
  | 'STORE_CLOSED';

export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StoreError';
  }
}
