/**
 * application/x-ndjson responses: one JSON object per line, written as events happen. Once the first line is
 * out the status is fixed, so a failure after that point is reported as a final `{ type: 'error' }` line.
 *
 * A stream that stays silent (a quiet command) gets a `{ type: 'heartbeat' }` line after `heartbeatMs`:
 * HTTP clients and proxies cut a body that sends nothing for long (Node's fetch after 300 s), and a heartbeat
 * also lets the server notice a client that went away. Readers skip heartbeat lines.
 */
import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { toApiError } from '../errors.js';

export const NDJSON = 'application/x-ndjson';

/** Default silence before a heartbeat line, ms: well under common proxy idle timeouts (30-60 s). */
export const DEFAULT_HEARTBEAT_MS = 15_000;

export const HEARTBEAT_LINE = { type: 'heartbeat' } as const;

export interface NdjsonOptions {
  /** Response status (default 200). */
  status?: number;
  /** Silence after which a heartbeat line is written, ms (default DEFAULT_HEARTBEAT_MS; 0 disables). */
  heartbeatMs?: number;
}

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

export function startNdjson(reply: FastifyReply, options: NdjsonOptions = {}): NdjsonWriter {
  const out = new PassThrough();
  let ended = false;
  let aborted = false;
  const listeners: (() => void)[] = [];
  const heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  let lastWrite = Date.now();
  const writeLine = (line: Record<string, unknown>) => {
    lastWrite = Date.now();
    out.write(`${JSON.stringify(line)}\n`);
  };
  // Checked at a quarter of the interval, so silence is answered within 1.25 × heartbeatMs.
  const heartbeat =
    heartbeatMs > 0
      ? setInterval(
          () => {
            if (!ended && Date.now() - lastWrite >= heartbeatMs) writeLine(HEARTBEAT_LINE);
          },
          Math.max(10, Math.floor(heartbeatMs / 4)),
        )
      : null;
  heartbeat?.unref();
  const stopHeartbeat = () => {
    if (heartbeat !== null) clearInterval(heartbeat);
  };
  reply.raw.once('close', () => {
    stopHeartbeat();
    if (ended) return;
    aborted = true;
    for (const listener of listeners.splice(0)) listener();
  });
  reply
    .status(options.status ?? 200)
    .header('content-type', NDJSON)
    .header('cache-control', 'no-store')
    .send(out);
  return {
    write(line) {
      if (!ended) writeLine(line);
    },
    fail(err) {
      const api = toApiError(err);
      this.write({ type: 'error', code: api.code, message: api.message });
      this.end();
    },
    end() {
      if (ended) return;
      ended = true;
      stopHeartbeat();
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
