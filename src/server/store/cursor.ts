/**
 * Opaque page cursors. A cursor names the last row's sequence number (never reused), so pages stay exact when
 * rows are inserted or deleted between requests. Opaque (base64url) so clients do not build them by hand and
 * the encoding can change; anything this module did not produce is refused with INVALID_CURSOR.
 */
import { StoreError } from './errors.js';

const PREFIX = 'c1:';

export function encodeCursor(seq: number): string {
  return Buffer.from(`${PREFIX}${seq}`).toString('base64url');
}

export function decodeCursor(cursor: string): number {
  const text = /^[A-Za-z0-9_-]{1,200}$/.test(cursor)
    ? Buffer.from(cursor, 'base64url').toString('latin1')
    : '';
  const match = /^c1:(0|[1-9][0-9]{0,15})$/.exec(text);
  const seq = match ? Number(match[1]) : Number.NaN;
  // Only the canonical spelling: base64url decoding tolerates variants, and a cursor has exactly one form.
  if (!Number.isSafeInteger(seq) || encodeCursor(seq) !== cursor) {
    throw new StoreError(
      'INVALID_CURSOR',
      'invalid cursor: pass the `next` value of a previous page unchanged',
    );
  }
  return seq;
}
