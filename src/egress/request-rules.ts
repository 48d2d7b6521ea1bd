/**
 * HTTP request rules: method and path limits for a host whose traffic the proxy can read (plain http://, or an
 * https:// host it intercepts). Pure, like rules.ts. Hand-written: the path glob is four lines, and what matters
 * is the normalisation in front of it (dot segments, percent-encoding), which no glob library does for us.
 *
 * For one request to a host: deny rules that match refuse it; then, if any allow rule names the host, one of
 * them must match; a host no request rule names is decided by the connection rules alone.
 */
import { z } from 'zod';
import type { EgressRule } from './rules.js';

const METHOD = /^[A-Z][A-Z0-9_-]{0,31}$/;

export interface RequestRule {
  /** Canonical text, e.g. `deny POST api.example.com /admin/**`; equal rules have equal text. */
  readonly text: string;
  readonly action: 'allow' | 'deny';
  /** The connection rule naming the host (domain, `*.suffix`, IP/CIDR; optional port). */
  readonly host: EgressRule;
  /** Upper-case methods; absent: any. */
  readonly methods?: readonly string[];
  /** Path globs: `*` within one segment, `**` as a whole segment for any number of segments. Absent: any. */
  readonly paths?: readonly string[];
}

export interface HttpRequestFacts {
  readonly method: string;
  /** The request target's path and query as sent, e.g. `/a/b?x=1`. */
  readonly target: string;
}

export type RequestVerdict =
  | { readonly verdict: 'allow'; readonly rule?: string }
  | { readonly verdict: 'deny'; readonly rule: string; readonly reason: string };

/** Built by rules.ts with its own host rule parser (this module cannot import it back). */
export function requestRuleSchema(hostRule: z.ZodType<EgressRule, z.ZodTypeDef, string>) {
  return z
    .object({
      action: z.enum(['allow', 'deny']),
      host: hostRule,
      methods: z
        .array(
          z
            .string()
            .transform((m) => m.toUpperCase())
            .refine((m) => METHOD.test(m), 'an HTTP method is a token such as GET or POST'),
        )
        .min(1)
        .optional(),
      paths: z
        .array(
          z
            .string()
            .refine(
              (p) => p.startsWith('/') && !/[?#\s\\]/.test(p) && p.length <= 1024,
              'a path pattern starts with / and has no query, fragment, backslash or space',
            ),
        )
        .min(1)
        .optional(),
    })
    .strict()
    .transform((r): RequestRule => {
      const methods = r.methods ? [...new Set(r.methods)] : undefined;
      const text = `${r.action} ${methods?.join(',') ?? '*'} ${r.host.text} ${r.paths?.join(',') ?? '/**'}`;
      return {
        text,
        action: r.action,
        host: r.host,
        ...(methods ? { methods } : {}),
        ...(r.paths ? { paths: r.paths } : {}),
      };
    });
}

/** Input form again (rule strings), for storage and display. */
export function requestRuleToInput(rule: RequestRule): {
  action: 'allow' | 'deny';
  host: string;
  methods?: string[];
  paths?: string[];
} {
  return {
    action: rule.action,
    host: rule.host.text,
    ...(rule.methods ? { methods: [...rule.methods] } : {}),
    ...(rule.paths ? { paths: [...rule.paths] } : {}),
  };
}

/**
 * The path as a server will see it, split into decoded segments: dot segments resolved (also `%2e%2e`), percent
 * escapes decoded. Undefined for a target that could mean two things to two parsers (an encoded `/` or `\`, a
 * backslash, NUL, invalid escapes): refused rather than guessed.
 */
export function normalizePath(target: string): string[] | undefined {
  const raw = target.split(/[?#]/, 1)[0] ?? '';
  if (!raw.startsWith('/') || /[\\\0]|%(2f|5c|00)/i.test(raw)) return undefined;
  let pathname: string;
  try {
    pathname = new URL(raw, 'http://h').pathname;
  } catch {
    return undefined;
  }
  const segments: string[] = [];
  for (const s of pathname.split('/').slice(1)) {
    try {
      segments.push(decodeURIComponent(s));
    } catch {
      return undefined;
    }
  }
  return segments;
}

function globMatches(pattern: readonly string[], path: readonly string[]): boolean {
  if (pattern.length === 0) return path.length === 0;
  const [head, ...rest] = pattern;
  if (head === '**') return path.some((_, i) => globMatches(rest, path.slice(i))) || globMatches(rest, []);
  if (path.length === 0) return false;
  const re = new RegExp(`^${(head ?? '').split('*').map(escapeRegExp).join('[^/]*')}$`, 's');
  return re.test(path[0] ?? '') && globMatches(rest, path.slice(1));
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function ruleMatches(rule: RequestRule, method: string, segments: readonly string[]): boolean {
  if (rule.methods && !rule.methods.includes(method)) return false;
  if (!rule.paths) return true;
  return rule.paths.some((p) => globMatches(p.split('/').slice(1), segments));
}

/**
 * Decide one request among the rules that name its host (`forHost`: the caller's host matcher, so domain,
 * wildcard, CIDR and port matching stay in one place).
 */
export function decideRequest(
  rules: readonly RequestRule[],
  forHost: (rule: EgressRule) => boolean,
  request: HttpRequestFacts,
  shownHost: string,
): RequestVerdict {
  const applicable = rules.filter((r) => forHost(r.host));
  if (applicable.length === 0) return { verdict: 'allow' };
  const method = request.method.toUpperCase();
  const segments = normalizePath(request.target);
  if (segments === undefined) {
    return {
      verdict: 'deny',
      rule: 'invalid-path',
      reason:
        `${shownHost} has request rules, and the path ${JSON.stringify(request.target.slice(0, 200))} is ambiguous ` +
        '(encoded slash or backslash, NUL, or a bad escape); send it with plain slashes.',
    };
  }
  const shown = `${method} ${shownHost}/${segments.join('/')}`;
  for (const rule of applicable) {
    if (rule.action === 'deny' && ruleMatches(rule, method, segments)) {
      return {
        verdict: 'deny',
        rule: rule.text,
        reason: `${shown} is refused by the request rule "${rule.text}"; to allow it, remove that rule from egress.requests (replace the rules).`,
      };
    }
  }
  const allows = applicable.filter((r) => r.action === 'allow');
  if (allows.length === 0) return { verdict: 'allow' };
  const hit = allows.find((r) => ruleMatches(r, method, segments));
  if (hit) return { verdict: 'allow', rule: hit.text };
  return {
    verdict: 'deny',
    rule: 'request-default-deny',
    reason:
      `${shown} matches none of the allow request rules for this host (${allows.map((r) => `"${r.text}"`).join(', ')}); ` +
      'to allow it, add an allow rule with this method and path to egress.requests.',
  };
}
