/**
 * Canonical form of an outbound destination. Every policy check compares canonical forms only, so `127.1`,
 * `0x7f000001`, `[::ffff:7f00:1]` and `LOCALHOST.` cannot slip past a rule written another way.
 *
 * Node's WHATWG URL host parser (`node:url` domainToASCII, `new URL`) does the heavy lifting: IDN → punycode
 * (UTS #46), every inet_aton IPv4 spelling, and IPv6 compression. Only two things are written by hand, because
 * neither node:url nor node:net offers them: unwrapping IPv4-mapped IPv6 into its IPv4 address, and refusing
 * input characters that the URL parser would silently treat as the end of the host (`a/b` → `a`).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

export type Destination =
  | { readonly kind: 'domain'; readonly name: string }
  | { readonly kind: 'ip'; readonly version: 4 | 6; readonly address: string };

export type DestinationErrorCode =
  | 'EMPTY_HOST'
  | 'INVALID_CHARACTER'
  | 'INVALID_DOMAIN'
  | 'INVALID_IPV6'
  | 'IPV6_ZONE_ID'
  | 'INVALID_PORT';

/** A destination (host or port) that cannot be canonicalised; `input` is the offending text, as given. */
export class DestinationError extends Error {
  constructor(
    readonly code: DestinationErrorCode,
    readonly input: string,
    detail: string,
  ) {
    super(`invalid destination ${JSON.stringify(input)}: ${detail}`);
    this.name = 'DestinationError';
  }
}

const MAX_DOMAIN_LENGTH = 253;
// After UTS #46 processing a label is ASCII; `_` is kept because real DNS names use it (e.g. `_acme-challenge`).
const LABEL = /^[a-z0-9_-]{1,63}$/;
// The URL host parser stops at these (path, query, fragment, userinfo, port, backslash) or decodes them (%),
// so `evil.com/x.example.com` would otherwise canonicalise to `evil.com` without complaint.
const FORBIDDEN_PUNCTUATION = /[ /\\?#@%:[\]*]/;
// Control characters are tested by code so the intent is explicit (and no raw control escapes sit in a regex).
const hasForbidden = (s: string): boolean =>
  FORBIDDEN_PUNCTUATION.test(s) || [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);

/** Canonicalise a host: lowercase, one trailing dot removed, IDN → punycode, IPv4/IPv6 in canonical text. */
export function canonicalizeHost(input: string): Destination {
  if (input.length === 0) throw new DestinationError('EMPTY_HOST', input, 'the host is empty');
  if (input.startsWith('[') || input.includes(':')) return canonicalizeIPv6(input);
  if (hasForbidden(input)) {
    throw new DestinationError(
      'INVALID_CHARACTER',
      input,
      'hosts may not contain spaces, / \\ ? # @ % : [ ] or *',
    );
  }
  const stripped = input.endsWith('.') ? input.slice(0, -1) : input;
  if (stripped.length === 0) throw new DestinationError('EMPTY_HOST', input, 'the host is empty');
  // domainToASCII applies the WHATWG host parser: an all-numeric last label makes it an IPv4 address in any
  // inet_aton spelling (hex, octal, 1-4 parts); it returns '' for anything it rejects.
  const ascii = domainToASCII(stripped);
  if (ascii === '') {
    throw new DestinationError('INVALID_DOMAIN', input, 'not a valid domain name or IPv4 address');
  }
  if (isIPv4(ascii)) return { kind: 'ip', version: 4, address: ascii };
  if (ascii.length > MAX_DOMAIN_LENGTH || !ascii.split('.').every((label) => LABEL.test(label))) {
    throw new DestinationError(
      'INVALID_DOMAIN',
      input,
      'labels must be 1-63 characters of letters, digits, - or _, and the name at most 253 characters',
    );
  }
  return { kind: 'domain', name: ascii };
}

function canonicalizeIPv6(input: string): Destination {
  let inner = input;
  if (input.startsWith('[')) {
    if (!input.endsWith(']')) throw new DestinationError('INVALID_IPV6', input, 'missing closing bracket');
    inner = input.slice(1, -1);
  }
  // A zone id names an interface of the host; it has no meaning for a sandbox and would bypass matching.
  if (inner.includes('%')) {
    throw new DestinationError('IPV6_ZONE_ID', input, 'IPv6 zone ids (%iface) are not accepted');
  }
  if (!isIPv6(inner)) {
    const hint = input.split(':').length === 2 ? ' (give the port separately, not as host:port)' : '';
    throw new DestinationError('INVALID_IPV6', input, `not a valid IPv6 address${hint}`);
  }
  // The URL parser prints the RFC 5952 form (lowercase, longest zero run compressed, embedded IPv4 as hex).
  const canonical = new URL(`http://[${inner}]/`).hostname.slice(1, -1);
  const mapped = ipv4FromMapped(canonical);
  if (mapped !== undefined) return { kind: 'ip', version: 4, address: mapped };
  return { kind: 'ip', version: 6, address: canonical };
}

/**
 * `::ffff:a.b.c.d` (printed by the URL parser as `::ffff:hhhh:hhhh`) reaches the IPv4 address on a dual-stack
 * socket, so it is policed as that address. Hand-written: neither node:net nor node:url exposes the mapping.
 */
function ipv4FromMapped(canonical: string): string | undefined {
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (m === null) return undefined;
  const hi = Number.parseInt(m[1] as string, 16);
  const lo = Number.parseInt(m[2] as string, 16);
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/** A TCP port: an integer 1-65535, given as a number or decimal digits. */
export function parsePort(input: number | string): number {
  const text = String(input);
  const port = typeof input === 'number' ? input : /^[0-9]{1,5}$/.test(input) ? Number(input) : Number.NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new DestinationError('INVALID_PORT', text, 'the port must be an integer from 1 to 65535');
  }
  return port;
}

/** Canonical text of a destination: the domain name or the address (IPv6 without brackets). */
export function destinationText(d: Destination): string {
  return d.kind === 'domain' ? d.name : d.address;
}

/** The canonical text of a host as a peer wrote it (a TLS server name, say), or undefined if it is not a host. */
export function canonicalText(host: string): string | undefined {
  try {
    return destinationText(canonicalizeHost(host));
  } catch {
    return undefined;
  }
}

/** A destination as it goes before `:port` in messages and audit events (IPv6 in brackets). */
export function displayHost(d: Destination | undefined): string {
  if (d === undefined) return '';
  return d.kind === 'ip' && d.version === 6 ? `[${d.address}]` : destinationText(d);
}
