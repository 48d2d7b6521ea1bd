/**
 * The Connect protocol (connectrpc.com), JSON codec only: what E2B's SDK speaks to a sandbox's daemon. Unary
 * calls are a plain JSON body answered with JSON; server-streaming calls frame each message as a 5-byte
 * envelope (flags, big-endian length) and end with an end-of-stream envelope (flag 0x02) that carries the error
 * if any. Written from the protocol specification; no generated code, no protobuf runtime: the messages are
 * JSON objects with proto3 JSON field names (lowerCamelCase, bytes as base64, enums by name).
 */
import type { FastifyReply } from 'fastify';
import { parseUntrustedJson } from '../untrusted-json.js';

export type ConnectCode =
  | 'canceled'
  | 'unknown'
  | 'invalid_argument'
  | 'deadline_exceeded'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'resource_exhausted'
  | 'failed_precondition'
  | 'aborted'
  | 'out_of_range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data_loss'
  | 'unauthenticated';

/** HTTP status of a unary error, per the Connect specification's mapping. */
const CODE_STATUS: Readonly<Record<ConnectCode, number>> = {
  canceled: 499,
  unknown: 500,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  out_of_range: 400,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  data_loss: 500,
  unauthenticated: 401,
};

/** An error a Connect handler reports to the client with its code. */
export class ConnectRpcError extends Error {
  constructor(
    readonly code: ConnectCode,
    message: string,
  ) {
    super(message);
    this.name = 'ConnectRpcError';
  }
}

/** The Connect code for an HTTP status (for errors that were decided as HTTP statuses elsewhere). */
export function connectCodeForStatus(status: number): ConnectCode {
  switch (status) {
    case 400:
      return 'invalid_argument';
    case 401:
      return 'unauthenticated';
    case 403:
      return 'permission_denied';
    case 404:
      return 'not_found';
    case 409:
      return 'already_exists';
    case 413:
    case 429:
    case 507:
      return 'resource_exhausted';
    case 501:
      return 'unimplemented';
    case 503:
      return 'unavailable';
    default:
      return status >= 500 ? 'internal' : 'failed_precondition';
  }
}

const END_STREAM = 0x02;
const COMPRESSED = 0x01;

/** One enveloped message. */
export function envelope(message: unknown, flags = 0): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** The single request message of a server-streaming call. */
export function parseStreamRequest(body: Buffer): unknown {
  if (body.length < 5) throw new ConnectRpcError('invalid_argument', 'request is not an enveloped message');
  const flags = body.readUInt8(0);
  if ((flags & COMPRESSED) !== 0) {
    throw new ConnectRpcError('unimplemented', 'compressed request messages are not supported');
  }
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) throw new ConnectRpcError('invalid_argument', 'truncated request message');
  return parseJsonMessage(body.subarray(5, 5 + length));
}

/** JSON without prototype keys (the body comes from the network). */
export function parseJsonMessage(bytes: Buffer): unknown {
  const text = bytes.toString('utf8');
  if (text.trim() === '') return {};
  try {
    return parseUntrustedJson(text);
  } catch {
    throw new ConnectRpcError('invalid_argument', 'request message is not valid JSON');
  }
}

export function sendUnaryError(reply: FastifyReply, err: ConnectRpcError): void {
  void reply
    .status(CODE_STATUS[err.code])
    .type('application/json')
    .send({ code: err.code, message: err.message });
}

/**
 * A server-streaming response in progress: write() messages, then end() once (with an error or not). Writes
 * after the client went away are dropped; `closed` tells the producer to stop.
 */
/** Keepalive interval on quiet streams: below the SDK's 50 s Keepalive-Ping-Interval, so idle ones stay open. */
const KEEPALIVE_MS = 25_000;

export class ConnectStream {
  readonly #reply: FastifyReply;
  #ended = false;
  #keepalive: NodeJS.Timeout | undefined;

  constructor(reply: FastifyReply) {
    this.#reply = reply;
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'application/connect+json',
      // A proxy must not hold output back: the SDK's callbacks are live.
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    reply.raw.flushHeaders();
    this.gone = new Promise((resolve) => reply.raw.once('close', () => resolve()));
    void this.gone.then(() => clearInterval(this.#keepalive));
  }

  /** Sends `message` every 25 s until the stream ends (each RPC has its own keepalive shape). */
  keepAlive(message: unknown): void {
    clearInterval(this.#keepalive);
    this.#keepalive = setInterval(() => this.write(message), KEEPALIVE_MS);
    this.#keepalive.unref();
  }

  /** Resolves when the client goes away (or the response ends). */
  readonly gone: Promise<void>;

  get closed(): boolean {
    return this.#ended || this.#reply.raw.destroyed || this.#reply.raw.writableEnded;
  }

  write(message: unknown): void {
    if (!this.closed) this.#reply.raw.write(envelope(message));
  }

  end(error?: ConnectRpcError): void {
    if (this.#ended) return;
    this.#ended = true;
    clearInterval(this.#keepalive);
    if (this.#reply.raw.destroyed || this.#reply.raw.writableEnded) return;
    const trailer = error === undefined ? {} : { error: { code: error.code, message: error.message } };
    this.#reply.raw.end(envelope(trailer, END_STREAM));
  }
}
