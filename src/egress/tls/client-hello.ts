/**
 * Reads the server name (SNI) and ALPN protocols out of the first bytes a client sends on a TLS connection.
 *
 * Hand-written rather than a library: the proxy needs only these two fields, from bytes it already holds and
 * before it decides whether to splice the connection or terminate TLS itself; a TLS library would want to own
 * the socket and the handshake. The parser is fed untrusted bytes, so every length is checked against both the
 * enclosing structure and the bytes present: malformed input yields 'not-tls' with a reason, never an exception.
 *
 * Wire format (RFC 8446 §5.1, §4.1.2; RFC 6066 §3; RFC 7301 §3.1): TLS records [type 22, version, length,
 * fragment] carry the handshake stream; a ClientHello may be split across several records, so fragments are
 * concatenated before the handshake message [type 1, uint24 length, body] is read.
 */

export type ClientHelloParse =
  | { readonly state: 'incomplete' }
  | { readonly state: 'not-tls'; readonly reason: string }
  | { readonly state: 'complete'; readonly serverName?: string; readonly alpn: readonly string[] };

/** Bytes buffered before giving up on a ClientHello; real ones are well under 4 KiB (PQ key shares included). */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024;

const RECORD_HEADER_BYTES = 5;
const CONTENT_TYPE_HANDSHAKE = 22;
const HANDSHAKE_HEADER_BYTES = 4;
const HANDSHAKE_CLIENT_HELLO = 1;
// RFC 8446 §5.1: a TLSPlaintext fragment MUST NOT exceed 2^14 bytes.
const MAX_RECORD_FRAGMENT = 16_384;
const EXTENSION_SERVER_NAME = 0;
const EXTENSION_ALPN = 16;
const SERVER_NAME_HOST_NAME = 0;

/** The input is not (or can no longer become) a valid ClientHello. */
class Malformed extends Error {}
/** The bytes so far are a valid prefix; more are needed. */
class NeedMore extends Error {}

const INCOMPLETE: ClientHelloParse = { state: 'incomplete' };

export function parseClientHello(buf: Buffer): ClientHelloParse {
  let result: ClientHelloParse;
  try {
    result = parseRecords(buf);
  } catch (err) {
    if (err instanceof Malformed) return { state: 'not-tls', reason: err.message };
    if (!(err instanceof NeedMore)) throw err; // A bug in this parser, not bad input: let tests see it.
    result = INCOMPLETE;
  }
  if (result.state === 'incomplete' && buf.length >= MAX_CLIENT_HELLO_BYTES) {
    return { state: 'not-tls', reason: `no complete ClientHello within ${MAX_CLIENT_HELLO_BYTES} bytes` };
  }
  return result;
}

/** Walks the records, collecting handshake bytes, until the ClientHello is whole (or the bytes run out). */
function parseRecords(buf: Buffer): ClientHelloParse {
  const fragments: Buffer[] = [];
  let handshakeBytes = 0;
  let needed: number | undefined; // Header plus body length, once the handshake header has arrived.
  let offset = 0;
  while (offset < buf.length) {
    checkRecordHeaderPrefix(buf, offset);
    if (offset + RECORD_HEADER_BYTES > buf.length) break;
    const length = buf.readUInt16BE(offset + 3);
    if (length === 0) throw new Malformed('empty handshake record');
    if (length > MAX_RECORD_FRAGMENT) throw new Malformed(`record length ${length} exceeds 2^14`);
    const start = offset + RECORD_HEADER_BYTES;
    const end = Math.min(start + length, buf.length);
    fragments.push(buf.subarray(start, end));
    handshakeBytes += end - start;
    offset = start + length;
    // Stop at the first record that completes the hello: later records are not ours to judge.
    if (needed === undefined && handshakeBytes >= HANDSHAKE_HEADER_BYTES) {
      needed = HANDSHAKE_HEADER_BYTES + Buffer.concat(fragments).readUIntBE(1, 3);
    }
    if (needed !== undefined && handshakeBytes >= needed) break;
  }
  return parseHandshake(Buffer.concat(fragments, handshakeBytes));
}

/** Checks as much of a record header as is present, so garbage is rejected from its first bytes. */
function checkRecordHeaderPrefix(buf: Buffer, offset: number): void {
  const type = buf[offset];
  if (type !== CONTENT_TYPE_HANDSHAKE) {
    throw new Malformed(
      offset === 0
        ? `first byte 0x${hex(type)} is not a TLS handshake record (0x16)`
        : `record type ${type} before the ClientHello was complete`,
    );
  }
  const major = buf[offset + 1];
  if (major !== undefined && major !== 0x03) throw new Malformed(`record version major byte 0x${hex(major)}`);
  const minor = buf[offset + 2];
  if (minor !== undefined && (minor < 0x01 || minor > 0x04)) {
    throw new Malformed(`record version 0x03${hex(minor)} is not TLS 1.0-1.3`);
  }
}

function parseHandshake(handshake: Buffer): ClientHelloParse {
  if (handshake.length === 0) return INCOMPLETE;
  if (handshake[0] !== HANDSHAKE_CLIENT_HELLO) {
    throw new Malformed(`handshake message type ${handshake[0]} is not ClientHello (1)`);
  }
  if (handshake.length < HANDSHAKE_HEADER_BYTES) return INCOMPLETE;
  const bodyLength = handshake.readUIntBE(1, 3);
  if (HANDSHAKE_HEADER_BYTES + bodyLength + RECORD_HEADER_BYTES > MAX_CLIENT_HELLO_BYTES) {
    throw new Malformed(`ClientHello length ${bodyLength} exceeds the ${MAX_CLIENT_HELLO_BYTES}-byte bound`);
  }
  const body = handshake.subarray(HANDSHAKE_HEADER_BYTES, HANDSHAKE_HEADER_BYTES + bodyLength);
  return parseClientHelloBody(new Reader(body, bodyLength, 'ClientHello'));
}

function parseClientHelloBody(r: Reader): ClientHelloParse {
  const legacyVersion = r.u16();
  if (legacyVersion >> 8 !== 0x03 || (legacyVersion & 0xff) === 0) {
    throw new Malformed(`ClientHello version 0x${legacyVersion.toString(16).padStart(4, '0')}`);
  }
  r.skip(32, 'random');
  const sessionIdLength = r.u8();
  if (sessionIdLength > 32) throw new Malformed(`session id length ${sessionIdLength} exceeds 32`);
  r.skip(sessionIdLength, 'session id');
  const cipherSuitesLength = r.u16();
  if (cipherSuitesLength === 0 || cipherSuitesLength % 2 !== 0) {
    throw new Malformed(`cipher suites length ${cipherSuitesLength} is not a positive even number`);
  }
  r.skip(cipherSuitesLength, 'cipher suites');
  const compressionLength = r.u8();
  if (compressionLength === 0) throw new Malformed('no compression methods');
  r.skip(compressionLength, 'compression methods');
  // Extensions are optional (pre-TLS 1.2 clients may send none); if present they fill the body exactly.
  if (r.remainingDeclared === 0) return { state: 'complete', alpn: [] };
  const extensions = r.sub(r.u16(), 'extensions');
  if (r.remainingDeclared !== 0) throw new Malformed('bytes after the extensions block');
  return parseExtensions(extensions);
}

function parseExtensions(r: Reader): ClientHelloParse {
  const seen = new Set<number>();
  let serverName: string | undefined;
  let alpn: string[] = [];
  while (r.remainingDeclared > 0) {
    const type = r.u16();
    const data = r.sub(r.u16(), `extension ${type}`);
    // RFC 8446 §4.2: at most one of each type; two SNIs could name different hosts to the proxy and upstream.
    if (seen.has(type)) throw new Malformed(`extension ${type} appears twice`);
    seen.add(type);
    if (type === EXTENSION_SERVER_NAME) serverName = parseServerName(data);
    else if (type === EXTENSION_ALPN) alpn = parseAlpn(data);
    else data.skip(data.remainingDeclared, `extension ${type}`);
  }
  return serverName === undefined ? { state: 'complete', alpn } : { state: 'complete', serverName, alpn };
}

/** The first host_name entry, lowercased, one trailing dot removed; undefined if the list has none. */
function parseServerName(ext: Reader): string | undefined {
  const list = ext.sub(ext.u16(), 'server_name list');
  if (ext.remainingDeclared !== 0) throw new Malformed('bytes after the server_name list');
  if (list.remainingDeclared === 0) throw new Malformed('empty server_name list');
  let first: string | undefined;
  while (list.remainingDeclared > 0) {
    const nameType = list.u8();
    const name = list.bytes(list.u16(), 'server name');
    if (nameType !== SERVER_NAME_HOST_NAME || first !== undefined) continue;
    first = decodeHostName(name);
  }
  return first;
}

function decodeHostName(name: Buffer): string {
  if (name.length === 0) throw new Malformed('empty host_name');
  // RFC 6066: host_name is ASCII (IDNs travel as A-labels). Anything else is refused, not guessed at.
  for (const byte of name) {
    if (byte <= 0x20 || byte >= 0x7f) throw new Malformed(`host_name contains byte 0x${hex(byte)}`);
  }
  const text = name.toString('ascii').toLowerCase();
  const host = text.endsWith('.') ? text.slice(0, -1) : text;
  if (host.length === 0) throw new Malformed('host_name is only a dot');
  return host;
}

function parseAlpn(ext: Reader): string[] {
  const list = ext.sub(ext.u16(), 'ALPN list');
  if (ext.remainingDeclared !== 0) throw new Malformed('bytes after the ALPN list');
  if (list.remainingDeclared === 0) throw new Malformed('empty ALPN list');
  const protocols: string[] = [];
  while (list.remainingDeclared > 0) {
    const length = list.u8();
    if (length === 0) throw new Malformed('empty ALPN protocol name');
    // latin1 maps each byte to one code unit, so no protocol name is merged or lost by decoding.
    protocols.push(list.bytes(length, 'ALPN protocol').toString('latin1'));
  }
  return protocols;
}

/**
 * A cursor over a structure whose declared length is `limit`, of which only `data.length` bytes may have
 * arrived yet. Reading past `limit` is malformed input; reading past the bytes present means "need more".
 */
class Reader {
  #pos = 0;
  constructor(
    private readonly data: Buffer,
    private readonly limit: number,
    private readonly what: string,
  ) {}

  get remainingDeclared(): number {
    return this.limit - this.#pos;
  }

  u8(): number {
    return this.#take(1, 'length byte').readUInt8(0);
  }

  u16(): number {
    return this.#take(2, 'length field').readUInt16BE(0);
  }

  skip(n: number, field: string): void {
    this.#take(n, field);
  }

  bytes(n: number, field: string): Buffer {
    return this.#take(n, field);
  }

  /** A reader for the next `n` bytes, declared complete even if they have not all arrived. */
  sub(n: number, field: string): Reader {
    if (n > this.remainingDeclared) this.#overrun(n, field);
    const start = this.#pos;
    this.#pos += n;
    return new Reader(this.data.subarray(start, Math.min(start + n, this.data.length)), n, field);
  }

  #take(n: number, field: string): Buffer {
    if (n > this.remainingDeclared) this.#overrun(n, field);
    if (this.#pos + n > this.data.length) throw new NeedMore();
    const slice = this.data.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return slice;
  }

  #overrun(n: number, field: string): never {
    throw new Malformed(`${field} (${n} bytes) overruns ${this.what} (${this.remainingDeclared} bytes left)`);
  }
}

function hex(byte: number | undefined): string {
  return (byte ?? 0).toString(16).padStart(2, '0');
}
