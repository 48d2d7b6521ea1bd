/**
 * application/x-ndjson responses: one JSON object per line, written as events happen. Once the first line is
 * out the status is fixed, so a failure after that point is reported as a final `{ type: 'error' }` line.
 */
import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { toApiError } from '../errors.js';

export const NDJSON = 'application/x-ndjson';

export interface NdjsonWriter {
  write(line: Record<string, unknown>): void;
  /** Ends the stream with an error line (mapped like any API error). */
  fail(err: unknown): void;
  end(): void;
  /** True once the client went away. */
  readonly closed: boolean;
  /** Called once when the client disconnects before end(). */
  onAbort(listener: () => void): void;
}

export function wantsNdjson(accept: string | string[] | undefined): boolean {
  const value = Array.isArray(accept) ? accept.join(',') : (accept ?? '');
  return value.toLowerCase().includes(NDJSON);
}

export function startNdjson(reply: FastifyReply, status = 200): NdjsonWriter {
  const out = new PassThrough();
  let ended = false;
  let aborted = false;
  const listeners: (() => void)[] = [];
  reply.raw.once('close', () => {
    if (ended) return;
    aborted = true;
    for (const listener of listeners.splice(0)) listener();
  });
  reply.status(status).header('content-type', NDJSON).header('cache-control', 'no-store').send(out);
  return {
    write(line) {
      if (!ended) out.write(`${JSON.stringify(line)}\n`);
    },
    fail(err) {
      const api = toApiError(err);
      this.write({ type: 'error', code: api.code, message: api.message });
      this.end();
    },
    end() {
      if (ended) return;
      ended = true;
      out.end();
    },
    get closed() {
      return aborted;
    },
    onAbort(listener) {
      if (aborted) listener();
      else listeners.push(listener);
    },
  };
}
