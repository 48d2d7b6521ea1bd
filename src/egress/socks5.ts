/**
 * SOCKS5 framing (RFC 1928), the only binary protocol the egress proxy parses by hand. Pure functions over
 * buffers: each parser says `incomplete` until it has a whole message, so the caller can accumulate chunks,
 * and every length is bounded by the protocol itself (at most 257 bytes of greeting, 262 of request).
 */

export const SOCKS_VERSION = 0x05;
export const SOCKS_NO_AUTH = 0x00;
export const SOCKS_NO_ACCEPTABLE_METHOD = 0xff;
export const SOCKS_CMD_CONNECT = 0x01;

/** RFC 1928 §6 reply codes (the subset the proxy sends). */
export const SocksReply = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowedByRuleset: 0x02,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;
export type SocksReplyCode = (typeof SocksReply)[keyof typeof SocksReply];

/** Longest possible greeting (VER, NMETHODS, 255 methods) and request (domain of 255 bytes). */
export const MAX_GREETING_BYTES = 2 + 255;
export const MAX_REQUEST_BYTES = 4 + 1 + 255 + 2;

export class SocksProtocolError extends Error {
  readonly code = 'SOCKS_PROTOCOL';
  /** The reply code to send before closing, when the protocol allows one. */
  constructor(
    message: string,
    readonly reply?: SocksReplyCode,
  ) {
    super(message);
    this.name = 'SocksProtocolError';
  }
}

export type Parsed<T> =
  | { readonly state: 'incomplete' }
  | ({ readonly state: 'done'; readonly rest: Buffer } & T);

/** VER NMETHODS METHODS... */
export function parseGreeting(buf: Buffer): Parsed<{ readonly methods: readonly number[] }> {
  if (buf.length < 2) return { state: 'incomplete' };
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`not SOCKS5 (version byte ${buf[0]})`);
  const n = buf[1] as number;
  if (n === 0) throw new SocksProtocolError('SOCKS5 greeting offers no authentication method');
  if (buf.length < 2 + n) return { state: 'incomplete' };
  return { state: 'done', methods: [...buf.subarray(2, 2 + n)], rest: buf.subarray(2 + n) };
}

export interface SocksConnectRequest {
  /** A domain name as sent (canonicalised later by the policy), or an address in textual form. */
  readonly host: string;
  readonly port: number;
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT; only CONNECT is accepted. */
export function parseRequest(buf: Buffer): Parsed<SocksConnectRequest> {
  if (buf.length < 5) return { state: 'incomplete' };
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`bad SOCKS5 request version ${buf[0]}`);
  const atyp = buf[3];
  let addrLen: number;
  let addrStart = 4;
  if (atyp === 0x01) addrLen = 4;
  else if (atyp === 0x04) addrLen = 16;
  else if (atyp === 0x03) {
    addrLen = buf[4] as number;
    addrStart = 5;
    if (addrLen === 0) throw new SocksProtocolError('empty SOCKS5 domain name', SocksReply.hostUnreachable);
  } else {
    throw new SocksProtocolError(`SOCKS5 address type ${atyp} unknown`, SocksReply.addressTypeNotSupported);
  }
  const end = addrStart + addrLen + 2;
  if (buf.length < end) return { state: 'incomplete' };
  // The command is checked once the whole request is in, so the reply goes out after a complete message.
  if (buf[1] !== SOCKS_CMD_CONNECT) {
    throw new SocksProtocolError(
      `SOCKS5 command ${buf[1]} is not supported (only CONNECT)`,
      SocksReply.commandNotSupported,
    );
  }
  const addr = buf.subarray(addrStart, addrStart + addrLen);
  const host = atyp === 0x01 ? [...addr].join('.') : atyp === 0x04 ? ipv6Text(addr) : addr.toString('latin1');
  const port = buf.readUInt16BE(addrStart + addrLen);
  return { state: 'done', host, port, rest: buf.subarray(end) };
}

function ipv6Text(addr: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(addr.readUInt16BE(i).toString(16));
  // Uncompressed text; the policy's canonicaliser produces the RFC 5952 form.
  return groups.join(':');
}

export function methodSelection(method: number): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

/** A reply with an all-zero IPv4 bound address: clients do not need the proxy's outbound address. */
export function reply(code: SocksReplyCode): Buffer {
  return Buffer.from([SOCKS_VERSION, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
}
