/**
 * Egress rules and the pure decision over them. No sockets, no DNS: the caller resolves the canonical name
 * (`canonicalizeHost(host).name`) itself, passes the answers in `resolved`, and dials only `decision.dial`.
 *
 * Order of checks (first match ends it): invalid destination → deny rules → address classes → allow rules →
 * undecided (`deny`, or `ask` when configured). Deny therefore wins over allow whatever the rule order.
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { type AddressClass, addressClassDescriptions, classifyAddress } from './address-classes.js';
import {
  canonicalizeHost,
  type Destination,
  DestinationError,
  displayHost,
  parsePort,
} from './destination.js';
import { type RequestRule, requestRuleSchema, requestRuleToInput } from './request-rules.js';

export type EgressRule =
  | {
      readonly kind: 'domain';
      /** Canonical text, e.g. `*.example.com:443`; equal rules have equal text. */
      readonly text: string;
      readonly name: string;
      /** `*.name`: any subdomain of `name`, never `name` itself. */
      readonly wildcard: boolean;
      readonly port?: number;
    }
  | {
      readonly kind: 'cidr';
      readonly text: string;
      readonly version: 4 | 6;
      readonly address: string;
      readonly prefix: number;
      readonly port?: number;
    };

/** Parse one rule; throws DestinationError (with a code) or RuleSyntaxError. */
export function parseRule(input: string): EgressRule {
  const { host, port } = splitPort(input.trim());
  const slash = host.indexOf('/');
  if (slash >= 0) return cidrRule(host.slice(0, slash), host.slice(slash + 1), port, input);
  const wildcard = host.startsWith('*.');
  const dest = canonicalizeHost(wildcard ? host.slice(2) : host);
  if (dest.kind === 'ip') {
    if (wildcard) throw new RuleSyntaxError(input, 'a wildcard applies to domain names, not IP addresses');
    return cidrRule(dest.address, String(dest.version === 4 ? 32 : 128), port, input);
  }
  const text = `${wildcard ? '*.' : ''}${dest.name}${port === undefined ? '' : `:${port}`}`;
  return port === undefined
    ? { kind: 'domain', text, name: dest.name, wildcard }
    : { kind: 'domain', text, name: dest.name, wildcard, port };
}

export class RuleSyntaxError extends Error {
  readonly code = 'INVALID_RULE';
  constructor(
    readonly input: string,
    detail: string,
  ) {
    super(`invalid egress rule ${JSON.stringify(input)}: ${detail}`);
    this.name = 'RuleSyntaxError';
  }
}

/** `host`, `host:port`, `[v6]`, `[v6]:port`, `[v6/len]:port`; a bare IPv6 (several colons) has no port. */
function splitPort(input: string): { host: string; port?: number } {
  if (input.startsWith('[')) {
    const close = input.indexOf(']');
    if (close < 0) throw new RuleSyntaxError(input, 'missing closing bracket');
    const host = input.slice(1, close);
    const rest = input.slice(close + 1);
    if (rest === '') return { host };
    if (!rest.startsWith(':')) throw new RuleSyntaxError(input, 'only :port may follow a bracketed address');
    return { host, port: parsePort(rest.slice(1)) };
  }
  const colons = input.split(':').length - 1;
  if (colons !== 1) return { host: input };
  const at = input.lastIndexOf(':');
  return { host: input.slice(0, at), port: parsePort(input.slice(at + 1)) };
}

function cidrRule(
  addressText: string,
  prefixText: string,
  port: number | undefined,
  input: string,
): EgressRule {
  // CIDR networks are written out in full; the inet_aton shorthands are for destinations, not for policy.
  const version = isIPv4(addressText) ? 4 : isIPv6(addressText) ? 6 : undefined;
  if (version === undefined)
    throw new RuleSyntaxError(input, `${JSON.stringify(addressText)} is not an IP address`);
  const max = version === 4 ? 32 : 128;
  if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    throw new RuleSyntaxError(input, `the prefix length must be 0-${max}`);
  }
  const dest = canonicalizeHost(addressText);
  if (dest.kind !== 'ip' || dest.version !== version) {
    // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is a spelling we refuse rather than translate.
    throw new RuleSyntaxError(input, 'write IPv4 networks in IPv4 form');
  }
  const prefix = Number(prefixText);
  const text = `${version === 6 && port !== undefined ? `[${dest.address}/${prefix}]` : `${dest.address}/${prefix}`}${port === undefined ? '' : `:${port}`}`;
  return port === undefined
    ? { kind: 'cidr', text, version, address: dest.address, prefix }
    : { kind: 'cidr', text, version, address: dest.address, prefix, port };
}

const ruleSchema = z.string().transform((input, ctx): EgressRule => {
  try {
    return parseRule(input);
  } catch (err) {
    if (err instanceof DestinationError || err instanceof RuleSyntaxError) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: err.message });
      return z.NEVER;
    }
    throw err;
  }
});

/** An `allowPrivate` entry: a CIDR or a single address (taken as /32 or /128), no port. */
const privateRangeSchema = ruleSchema.superRefine((rule, ctx) => {
  if (rule.kind !== 'cidr' || rule.port !== undefined) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: 'allowPrivate takes IP addresses or CIDRs without ports',
    });
  }
});

export const egressRulesSchema = z
  .object({
    allow: z.array(ruleSchema).default([]),
    /** Wins over `allow`, and applies to a domain's resolved addresses as well as to IP destinations. */
    deny: z.array(ruleSchema).default([]),
    /** Addresses reachable despite their class (loopback, private, ...). Metadata needs an exact address. */
    allowPrivate: z.array(privateRangeSchema).default([]),
    /** What a destination no rule decides gets: `deny` (default) or `ask` (the approvals flow). */
    onUndecided: z.enum(['deny', 'ask']).default('deny'),
    /** Method/path limits for hosts whose requests the proxy reads (http://, or intercepted https://). */
    requests: z.array(requestRuleSchema(ruleSchema)).default([]),
    /**
     * https:// hosts whose tunnels are TLS-intercepted even without request rules or bound secrets, so each
     * request is audited. Hosts with request rules or bound secrets are always intercepted.
     */
    intercept: z.array(ruleSchema).default([]),
  })
  .strict();

/** Validated rules, each entry parsed and canonical. */
export type EgressRules = z.output<typeof egressRulesSchema>;
/** What a user writes: strings like `*.example.com:443`, `10.0.0.0/8`. */
export type EgressRulesInput = z.input<typeof egressRulesSchema>;

/** The rules as text again (for storage, display, or a round trip through the schema). */
export function rulesToInput(rules: EgressRules): EgressRulesInput {
  return {
    allow: rules.allow.map((r) => r.text),
    deny: rules.deny.map((r) => r.text),
    allowPrivate: rules.allowPrivate.map((r) => r.text),
    onUndecided: rules.onUndecided,
    requests: rules.requests.map(requestRuleToInput),
    intercept: rules.intercept.map((r) => r.text),
  };
}

/** Live update: union with the current rules, duplicates (same canonical text) dropped, order kept. */
export function mergeRules(current: EgressRules, patch: Partial<EgressRulesInput>): EgressRules {
  const add = egressRulesSchema.parse({
    ...patch,
    onUndecided: patch.onUndecided ?? current.onUndecided,
  });
  return {
    allow: union(current.allow, add.allow),
    deny: union(current.deny, add.deny),
    allowPrivate: union(current.allowPrivate, add.allowPrivate),
    onUndecided: add.onUndecided,
    requests: union(current.requests, add.requests),
    intercept: union(current.intercept, add.intercept),
  };
}

/** Live update that discards the current rules (the explicit way to remove a rule). */
export function replaceRules(next: EgressRulesInput): EgressRules {
  return egressRulesSchema.parse(next);
}

function union<T extends { readonly text: string }>(a: readonly T[], b: readonly T[]): T[] {
  const seen = new Set<string>();
  const out: T[] = [];
  for (const r of [...a, ...b]) {
    if (!seen.has(r.text)) {
      seen.add(r.text);
      out.push(r);
    }
  }
  return out;
}

export interface EgressRequest {
  /** As the sandbox sent it (CONNECT host, Host header, SOCKS name or address). */
  readonly host: string;
  readonly port: number | string;
  /** The addresses the caller's resolver returned for the canonical name. Absent: decide on the name only. */
  readonly resolved?: readonly string[];
}

export interface EgressContext {
  /** This machine's own addresses (any spelling); refused like loopback. */
  readonly hostAddresses?: readonly string[];
}

export interface EgressDecision {
  readonly verdict: 'allow' | 'deny' | 'ask';
  /**
   * The rule text that decided; `class:<name>` when an address class refused; `default-deny`,
   * `invalid-destination` or `invalid-resolution` otherwise. Absent only on `ask`.
   */
  readonly rule?: string;
  /** Why, and for a denial how to allow it, in plain words. */
  readonly reason: string;
  /** The canonical destination, when the host could be parsed. */
  readonly destination?: Destination;
  /**
   * On `allow`/`ask`: the vetted addresses the caller must dial (DNS pinning: never resolve again). Absent for a
   * domain decided without `resolved`; the caller must then resolve and decide again before connecting.
   */
  readonly dial?: readonly string[];
}

// RFC 6761 loopback names and metadata names: refused by name, since a resolver may answer them from
// /etc/hosts or the cloud's DNS with addresses we would otherwise not see until dialing.
function nameClass(name: string): AddressClass | undefined {
  if (name === 'localhost' || name.endsWith('.localhost')) return 'loopback';
  if (name === 'metadata.google.internal' || name === 'metadata.goog' || name === 'metadata')
    return 'metadata';
  return undefined;
}

/** Decide one outbound connection. Pure: same rules and request, same answer. */
export function decide(
  rules: EgressRules,
  request: EgressRequest,
  context: EgressContext = {},
): EgressDecision {
  let dest: Destination;
  let port: number;
  try {
    dest = canonicalizeHost(request.host);
    port = parsePort(request.port);
  } catch (err) {
    if (!(err instanceof DestinationError)) throw err;
    return {
      verdict: 'deny',
      rule: 'invalid-destination',
      reason: `${err.message}. Use a plain host name or IP address and a port 1-65535.`,
    };
  }
  const shown = dest.kind === 'domain' ? `${dest.name}:${port}` : `${displayHost(dest)}:${port}`;

  // The addresses this connection would reach: the literal, or every resolved answer (canonical).
  let addresses: string[] | undefined;
  if (dest.kind === 'ip') addresses = [dest.address];
  else if (request.resolved !== undefined) {
    addresses = [];
    for (const a of request.resolved) {
      let d: Destination;
      try {
        d = canonicalizeHost(a);
      } catch {
        return deny(
          dest,
          `${dest.name} resolved to ${JSON.stringify(a)}, which is not an IP address`,
          'invalid-resolution',
        );
      }
      if (d.kind !== 'ip') {
        return deny(
          dest,
          `${dest.name} resolved to ${JSON.stringify(a)}, which is not an IP address`,
          'invalid-resolution',
        );
      }
      if (!addresses.includes(d.address)) addresses.push(d.address);
    }
    if (addresses.length === 0) {
      return deny(
        dest,
        `${dest.name} did not resolve to any address; nothing to connect to`,
        'invalid-resolution',
      );
    }
  }

  for (const rule of rules.deny) {
    const hit =
      rule.kind === 'domain'
        ? dest.kind === 'domain' && matchesDomain(rule, dest.name, port)
        : (addresses ?? []).some((a) => matchesCidr(rule, a, port));
    if (hit) {
      return deny(
        dest,
        `${shown} is refused by the deny rule "${rule.text}". Deny rules win over allow rules; ` +
          `to reach it, remove "${rule.text}" from egress.deny (replace the rules).`,
        rule.text,
      );
    }
  }

  const special = dest.kind === 'domain' ? nameClass(dest.name) : undefined;
  if (special !== undefined && addresses === undefined) {
    return deny(
      dest,
      `${shown} is ${addressClassDescriptions[special]} by name. To reach it, resolve it and add the ` +
        'exact addresses to egress.allowPrivate.',
      `class:${special}`,
    );
  }
  for (const address of addresses ?? []) {
    const classes = classifyAddress(address, context.hostAddresses);
    if (special !== undefined && !classes.includes(special)) classes.push(special);
    if (classes.length === 0 || privatelyAllowed(rules, address, classes)) continue;
    const cls = classes.includes('metadata') ? 'metadata' : (classes[0] as AddressClass);
    const via = dest.kind === 'domain' ? `${dest.name} resolved to ${address}, ` : `${address} is `;
    const single = `${address}/${address.includes(':') ? 128 : 32}`;
    const how =
      cls === 'metadata'
        ? `Cloud metadata is only reachable with the exact entry "${single}" in egress.allowPrivate.`
        : `To allow it, add "${single}" (or a CIDR covering it) to egress.allowPrivate.`;
    return deny(
      dest,
      `${via}${addressClassDescriptions[cls]}; such addresses are refused so a sandbox cannot reach the host or ` +
        `its networks. ${how}`,
      `class:${cls}`,
    );
  }

  for (const rule of rules.allow) {
    if (ruleNamesDestination(rule, dest, port)) {
      if (addresses === undefined) {
        return {
          verdict: 'allow',
          rule: rule.text,
          destination: dest,
          reason: `${shown} is allowed by "${rule.text}" by name; resolve it and decide again with the addresses before connecting`,
        };
      }
      return {
        verdict: 'allow',
        rule: rule.text,
        destination: dest,
        dial: addresses,
        reason: `${shown} is allowed by "${rule.text}"`,
      };
    }
  }

  const suggestion =
    dest.kind === 'domain'
      ? `add "${dest.name}" (or "${dest.name}:${port}", or a "*.parent" wildcard) to egress.allow`
      : `add "${displayHost(dest)}" (or a CIDR covering it) to egress.allow`;
  if (rules.onUndecided === 'ask') {
    return {
      verdict: 'ask',
      destination: dest,
      ...(addresses === undefined ? {} : { dial: addresses }),
      reason: `${shown} matches no egress rule; a human must approve it. To allow it permanently, ${suggestion}.`,
    };
  }
  return deny(
    dest,
    `${shown} matches no egress rule and egress is deny-by-default. To allow it, ${suggestion}.`,
    'default-deny',
  );
}

function deny(dest: Destination, reason: string, rule: string): EgressDecision {
  return { verdict: 'deny', rule, destination: dest, reason };
}

/** Does a connection rule name this destination (domain rules by name, IP rules by address; port if given)? */
export function ruleNamesDestination(rule: EgressRule, dest: Destination, port: number): boolean {
  if (rule.kind === 'domain') return dest.kind === 'domain' && matchesDomain(rule, dest.name, port);
  return dest.kind === 'ip' && matchesCidr(rule, dest.address, port);
}

export type { RequestRule };

/** Exact name, or for `*.suffix` a name ending in `.suffix` (label boundary: `evilexample.com` never matches). */
export function matchesDomain(rule: EgressRule & { kind: 'domain' }, name: string, port: number): boolean {
  if (rule.port !== undefined && rule.port !== port) return false;
  return rule.wildcard ? name.endsWith(`.${rule.name}`) : name === rule.name;
}

function matchesCidr(rule: EgressRule & { kind: 'cidr' }, address: string, port: number): boolean {
  if (rule.port !== undefined && rule.port !== port) return false;
  return cidrContains(rule, address);
}

function cidrContains(rule: EgressRule & { kind: 'cidr' }, address: string): boolean {
  const family = address.includes(':') ? 'ipv6' : 'ipv4';
  if ((family === 'ipv4') !== (rule.version === 4)) return false;
  const list = new BlockList();
  list.addSubnet(rule.address, rule.prefix, rule.version === 4 ? 'ipv4' : 'ipv6');
  return list.check(address, family);
}

function privatelyAllowed(rules: EgressRules, address: string, classes: readonly AddressClass[]): boolean {
  const full = address.includes(':') ? 128 : 32;
  return rules.allowPrivate.some(
    (r) =>
      r.kind === 'cidr' &&
      cidrContains(r, address) &&
      // A broad range (say 169.254.0.0/16 for a link-local service) must not also open the metadata endpoint.
      (!classes.includes('metadata') || r.prefix === full),
  );
}
