/**
 * One sandbox's view of the vault: a random placeholder per secret, and the checks the egress proxy runs on
 * every intercepted request and response. The sandbox only ever sees placeholders; the real value is put in
 * on the way out, and only where the secret's binding allows (host, port, header, path, body). A placeholder
 * anywhere else is refused and reported: the real value is never sent there.
 *
 * Header values are node "binary" strings (one char per byte, as node's HTTP parser produces them), so a real
 * value is inserted as its UTF-8 bytes in that form and searched for in that form when redacting.
 */
import { randomBytes } from 'node:crypto';
import type { Transform } from 'node:stream';
import { inspect } from 'node:util';
import { canonicalizeHost } from '../egress/destination.js';
import { type EgressRule, matchesDomain, parseRule } from '../egress/rules.js';
import { replaceAll, StreamReplacer } from './stream-replace.js';
import type { SecretBinding } from './vault.js';

/** A decrypted secret as the vault hands it to a session. */
export interface SessionSecret {
  readonly name: string;
  readonly value: Buffer;
  readonly binding: SecretBinding;
  /** Keep this placeholder instead of drawing a new one (a re-adopted sandbox already holds it). */
  readonly placeholder?: string;
}

/** Is `placeholder` of the form this module draws for secret `name` (so a stored one can be trusted back)? */
export function isPlaceholderFor(name: string, placeholder: string): boolean {
  const prefix = `ironcage_ph_${name.toLowerCase()}_`;
  return placeholder.startsWith(prefix) && /^[a-z2-7]{26}$/.test(placeholder.slice(prefix.length));
}

export type RequestCheck =
  | {
      readonly ok: true;
      readonly headers: Record<string, string | string[]>;
      readonly path: string;
      /** Names of the secrets whose real values were put in. */
      readonly substituted: readonly string[];
    }
  | {
      readonly ok: false;
      /** Name of the secret whose placeholder was found where its binding does not allow it. */
      readonly secret: string;
      /** `header <name>`, `header name`, `url` or `body`. */
      readonly where: string;
      /** Which secret, where it may go, and how a human can allow this; never the value. */
      readonly reason: string;
    };

/** A placeholder sent where its secret may not go; the stream carrying it is destroyed with this. */
export class ExfiltrationError extends Error {
  readonly code = 'EXFILTRATION';
  constructor(
    readonly secret: string,
    readonly reason: string,
  ) {
    super(reason);
    this.name = 'ExfiltrationError';
  }
}

type Where = { readonly kind: 'header'; readonly name: string } | { readonly kind: 'url' | 'body' };

interface Entry {
  readonly name: string;
  readonly placeholder: string;
  readonly value: Buffer;
  /** The value as a node binary string (header form). */
  readonly binary: string;
  readonly binding: SecretBinding;
  readonly rules: readonly (EgressRule & { kind: 'domain' })[];
  readonly headers?: ReadonlySet<string>;
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** 16 random bytes → 26 lowercase base32 characters (no padding): 128 bits, header- and URL-safe. */
function randomToken(): string {
  const bytes = randomBytes(16);
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

export class SecretSession {
  /** NAME → placeholder, for the sandbox environment. */
  readonly env: Readonly<Record<string, string>>;
  readonly names: readonly string[];
  readonly #entries: readonly Entry[];

  constructor(secrets: readonly SessionSecret[]) {
    const entries: Entry[] = [];
    const env: Record<string, string> = Object.create(null);
    for (const s of secrets) {
      if (entries.some((e) => e.name === s.name)) continue;
      const placeholder = s.placeholder ?? `ironcage_ph_${s.name.toLowerCase()}_${randomToken()}`;
      const rules = s.binding.hosts.map((h) => {
        const rule = parseRule(h);
        if (rule.kind !== 'domain')
          throw new TypeError(`secret ${s.name}: host binding must be a domain rule`);
        return rule;
      });
      entries.push({
        name: s.name,
        placeholder,
        value: Buffer.from(s.value),
        binary: s.value.toString('latin1'),
        binding: s.binding,
        rules,
        ...(s.binding.headers === undefined
          ? {}
          : { headers: new Set(s.binding.headers.map((h) => h.toLowerCase())) }),
      });
      env[s.name] = placeholder;
    }
    this.#entries = entries;
    this.env = Object.freeze({ ...env });
    this.names = Object.freeze(entries.map((e) => e.name));
  }

  /**
   * Is any of this session's secrets bound to this host and port (canonical name; an IP never is)? The proxy
   * uses it to decide which tunnels it must intercept.
   */
  bindsHost(host: string, port: number): boolean {
    const target = { host: canonicalName(host), port, path: '/' };
    return this.#entries.some((e) => hostAllowed(e, target));
  }

  checkRequest(
    host: string,
    port: number,
    path: string,
    headers: Readonly<Record<string, string | string[] | undefined>>,
  ): RequestCheck {
    const substituted = new Set<string>();
    const target = { host: canonicalName(host), port, path };
    const blocked = (e: Entry, where: Where): RequestCheck => ({
      ok: false,
      secret: e.name,
      where: whereText(where),
      reason: this.#reason(e, host, port, path, where),
    });

    let outPath = path;
    for (const e of this.#entries) {
      if (!path.includes(e.placeholder)) continue;
      if (!allows(e, target, { kind: 'url' })) return blocked(e, { kind: 'url' });
      outPath = outPath.split(e.placeholder).join(e.binary);
      substituted.add(e.name);
    }

    const outHeaders: Record<string, string | string[]> = {};
    for (const [name, raw] of Object.entries(headers)) {
      if (raw === undefined) continue;
      // A header *name* is never a place for a secret; a placeholder there is an attempt to smuggle it.
      const inName = this.#entries.find((e) => name.includes(e.placeholder));
      if (inName !== undefined) return blocked(inName, { kind: 'header', name: '' });
      const where: Where = { kind: 'header', name: name.toLowerCase() };
      const values = Array.isArray(raw) ? [...raw] : [raw];
      for (const e of this.#entries) {
        if (!values.some((v) => v.includes(e.placeholder))) continue;
        if (!allows(e, target, where)) return blocked(e, where);
        for (let i = 0; i < values.length; i++) {
          values[i] = (values[i] as string).split(e.placeholder).join(e.binary);
        }
        substituted.add(e.name);
      }
      outHeaders[name] = Array.isArray(raw) ? values : (values[0] as string);
    }
    return { ok: true, headers: outHeaders, path: outPath, substituted: [...substituted] };
  }

  requestBody(host: string, port: number, path: string): Transform | null {
    if (this.#entries.length === 0) return null;
    const target = { host: canonicalName(host), port, path };
    const entries = this.#entries;
    return new StreamReplacer(
      entries.map((e) => Buffer.from(e.placeholder, 'latin1')),
      (i) => {
        const e = entries[i] as Entry;
        if (allows(e, target, { kind: 'body' })) return e.value;
        throw new ExfiltrationError(e.name, this.#reason(e, host, port, path, { kind: 'body' }));
      },
    );
  }

  responseRedactor(): (Transform & { readonly redactions: number }) | null {
    if (this.#entries.length === 0) return null;
    const entries = this.#entries;
    return new ResponseRedactor(
      entries.map((e) => e.value),
      (i) => Buffer.from((entries[i] as Entry).placeholder, 'latin1'),
    );
  }

  redactHeaders(headers: Readonly<Record<string, string | string[] | undefined>>): {
    headers: Record<string, string | string[]>;
    redactions: number;
  } {
    let redactions = 0;
    const needles = this.#entries.map((e) => e.value);
    const pass = (text: string, encoding: BufferEncoding): string =>
      replaceAll(Buffer.from(text, encoding), needles, (i) => {
        redactions++;
        return Buffer.from((this.#entries[i] as Entry).placeholder, 'latin1');
      }).toString(encoding);
    const redact = (text: string): string => {
      if (needles.length === 0) return text;
      // Node gives header values as binary strings (the wire bytes), but a caller may pass decoded text: a
      // non-ASCII value is looked for in both forms. Placeholders are ASCII, so the second pass cannot re-match.
      const binary = maxCharCode(text) > 0xff ? text : pass(text, 'latin1');
      return maxCharCode(binary) > 0x7f ? pass(binary, 'utf8') : binary;
    };
    const out: Record<string, string | string[]> = {};
    for (const [name, raw] of Object.entries(headers)) {
      if (raw === undefined) continue;
      out[redact(name)] = Array.isArray(raw) ? raw.map(redact) : redact(raw);
    }
    return { headers: out, redactions };
  }

  findPlaceholder(text: string | Buffer): string | undefined {
    let best: Entry | undefined;
    let bestAt = -1;
    for (const e of this.#entries) {
      const at = text.indexOf(e.placeholder);
      if (at >= 0 && (bestAt < 0 || at < bestAt)) {
        bestAt = at;
        best = e;
      }
    }
    return best?.name;
  }

  #reason(e: Entry, host: string, port: number, path: string, where: Where): string {
    const shownPath = path.split('?')[0] ?? path;
    const destination = `${host}:${port}${shownPath.startsWith('/') ? shownPath : ''}`;
    const wherePhrase =
      where.kind === 'header'
        ? where.name === ''
          ? 'a header name'
          : `the ${where.name} header`
        : where.kind === 'url'
          ? 'the URL'
          : 'the request body';
    return (
      `Blocked: the request to ${destination} carries the placeholder of secret ${e.name} in ${wherePhrase}, ` +
      `and ${e.name} may only be sent ${describeBinding(e.binding)}. The real value was not sent; this ` +
      `attempt is audited. If this destination legitimately needs ${e.name}, a human must ${howToAllow(e, host, port, path, where)}.`
    );
  }

  toJSON(): { names: readonly string[] } {
    return { names: this.names };
  }

  [inspect.custom](): string {
    return `SecretSession { names: ${inspect(this.names)} }`;
  }
}

function maxCharCode(text: string): number {
  let max = 0;
  for (let i = 0; i < text.length; i++) max = Math.max(max, text.charCodeAt(i));
  return max;
}

class ResponseRedactor extends StreamReplacer {
  get redactions(): number {
    return this.matches;
  }
}

interface Target {
  /** Canonical domain name, or undefined for an IP or an unparsable host (secrets are bound to names only). */
  readonly host: string | undefined;
  readonly port: number;
  readonly path: string;
}

function canonicalName(host: string): string | undefined {
  try {
    const d = canonicalizeHost(host);
    return d.kind === 'domain' ? d.name : undefined;
  } catch {
    return undefined;
  }
}

function hostAllowed(e: Entry, t: Target): boolean {
  const name = t.host;
  return name !== undefined && e.rules.some((r) => matchesDomain(r, name, t.port));
}

function allows(e: Entry, t: Target, where: Where): boolean {
  if (!hostAllowed(e, t) || !pathAllowed(e.binding.paths, t.path)) return false;
  if (where.kind === 'body') return e.binding.body === true;
  if (where.kind === 'header')
    return where.name !== '' && (e.headers === undefined || e.headers.has(where.name));
  return true;
}

/**
 * A path prefix must hold both for the path as sent and for its dot-segment-normalised form (what the server
 * will route), so `/v1/../admin` or `/v1/%2e%2e/admin` does not pass as `/v1/`. Encoded slashes and
 * backslashes are refused outright: some servers decode them into separators after routing checks.
 */
function pathAllowed(prefixes: readonly string[] | undefined, path: string): boolean {
  if (prefixes === undefined) return true;
  if (!path.startsWith('/')) return false;
  const rawPath = path.split('?')[0] as string;
  if (/%2f|%5c|\\/i.test(rawPath)) return false;
  let normalized: string;
  try {
    normalized = new URL(rawPath, 'http://ironcage.invalid').pathname;
  } catch {
    return false;
  }
  return prefixes.some((p) => rawPath.startsWith(p) && normalized.startsWith(p));
}

function describeBinding(b: SecretBinding): string {
  const parts = [`to ${b.hosts.map((h) => `"${h}"`).join(', ')}`];
  if (b.headers !== undefined) {
    parts.push(b.headers.length === 0 ? 'in no header' : `in the header(s) ${b.headers.join(', ')}`);
  }
  if (b.paths !== undefined) parts.push(`on paths starting with ${b.paths.map((p) => `"${p}"`).join(', ')}`);
  parts.push(b.body === true ? 'in headers, URL or body' : 'in headers or the URL, not in bodies');
  return parts.join(', ');
}

function howToAllow(e: Entry, host: string, port: number, path: string, where: Where): string {
  const target = { host: canonicalName(host), port, path };
  if (!hostAllowed(e, target)) {
    return target.host === undefined
      ? `address the request by host name (secrets are bound to domain names, never to IP addresses) and add that name to the hosts of ${e.name}`
      : `add "${target.host}" to the hosts of ${e.name} in the vault`;
  }
  if (!pathAllowed(e.binding.paths, path)) return `add a prefix of this path to the paths of ${e.name}`;
  if (where.kind === 'body') return `set body: true in the binding of ${e.name}`;
  if (where.kind === 'header' && where.name === '') return 'not do this: header names never carry secrets';
  if (where.kind === 'header') return `add "${where.name}" to the headers of ${e.name}`;
  return `review the binding of ${e.name}`;
}

function whereText(where: Where): string {
  if (where.kind === 'header') return where.name === '' ? 'header name' : `header ${where.name}`;
  return where.kind;
}
