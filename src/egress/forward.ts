/**
 * Forwarding one HTTP request the proxy can read: a plain `http://` proxy request, or a request inside an
 * intercepted TLS tunnel (HTTP/1.1 or HTTP/2 from the sandbox; HTTP/1.1 upstream). Here the request rules,
 * the body limit, the rate limit and the credential vault apply, and each request becomes one audit event.
 *
 * The connection was admitted before (proxy.ts): `target.dial` is the vetted address and nothing here resolves
 * a name. For https the upstream certificate is checked against the destination's name, not the address.
 */
import http from 'node:http';
import type http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import { type Duplex, pipeline, type Transform } from 'node:stream';
import zlib from 'node:zlib';
import type { SecretSession } from '../vault/index.js';
import type { EgressBudget } from './budget.js';
import { type Destination, destinationText, displayHost } from './destination.js';
import { decideRequest } from './request-rules.js';
import { type EgressRules, ruleNamesDestination } from './rules.js';

/** What every audited outcome of the proxy looks like (see docs/egress-policy.md). */
export interface EgressEvent {
  /** `request`: one HTTP request; `connection`: one tunnel; `denied`: refused by policy, a limit or the vault. */
  readonly type: 'connection' | 'request' | 'denied';
  readonly sandboxId?: string;
  readonly protocol: EgressProtocol;
  /** Canonical `host:port` when it could be parsed, else the text the client sent. */
  readonly destination: string;
  /** The address dialled (or that would have been dialled); absent when nothing was resolved. */
  readonly resolvedIp?: string;
  /** `error`: allowed by policy, but resolving or connecting failed (see `error`). */
  readonly decision: 'allow' | 'deny' | 'error';
  /** The rule that decided (`EgressDecision.rule`, a request rule, `ask:*`, `limit:*`, `vault:*`, `tls:*`). */
  readonly rule?: string;
  /** HTTP method and path as the sandbox sent them (placeholders, never secret values), for readable requests. */
  readonly method?: string;
  readonly path?: string;
  /** Body bytes from the sandbox (HTTP) or all tunnel bytes sandbox → destination. */
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly durationMs: number;
  /** HTTP status returned to the sandbox (HTTP and CONNECT). */
  readonly status?: number;
  /** An error code such as `ENOTFOUND`, `ECONNREFUSED`, `ETIMEDOUT`. */
  readonly error?: string;
  /** Vault secrets (names only) substituted into this request, or the one whose placeholder was refused. */
  readonly secrets?: readonly string[];
  /** Secret values replaced by their placeholders in the response. */
  readonly redactions?: number;
  /** The tunnel was TLS-intercepted (each request inside it is audited on its own). */
  readonly intercepted?: boolean;
}

export type EgressProtocol = 'http' | 'https' | 'connect' | 'socks5';

/** An admitted destination whose requests are forwarded. */
export interface ForwardTarget {
  readonly scheme: 'http' | 'https';
  readonly destination: Destination;
  readonly port: number;
  /** The vetted address to connect to. */
  readonly dial: string;
  /** The connection rule that admitted it. */
  readonly rule?: string;
  /** https: a keep-alive agent for this tunnel's upstream connections. */
  readonly agent?: https.Agent;
}

export interface ForwardContext {
  rules(): EgressRules;
  readonly budget: EgressBudget;
  readonly maxBodyBytes: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly secrets?: SecretSession;
  /** Roots for upstream certificates (undefined: Node's defaults). */
  readonly upstreamCa?: readonly string[];
  emit(event: Omit<EgressEvent, 'sandboxId'>): void;
  track(socket: net.Socket): void;
}

/** Upstream sockets already tracked and given their idle timeout. */
const prepared = new WeakSet<net.Socket>();

type ClientRequest = http.IncomingMessage | http2.Http2ServerRequest;
type ClientResponse = http.ServerResponse | http2.Http2ServerResponse;

/** Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus the proxy-specific ones). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

export function forwardRequest(
  ctx: ForwardContext,
  target: ForwardTarget,
  req: ClientRequest,
  res: ClientResponse,
  path: string,
): void {
  const started = Date.now();
  const shownHost = displayHost(target.destination);
  const destination = `${shownHost}:${target.port}`;
  const method = (req.method ?? 'GET').toUpperCase();
  const auditedPath = path.slice(0, 500);
  const base = {
    protocol: target.scheme,
    destination,
    resolvedIp: target.dial,
    method,
    path: auditedPath,
  } as const;
  const refuse = (status: number, rule: string, reason: string, secrets?: string[]): void => {
    req.resume(); // drain the body we will not send
    sendText(
      res,
      status,
      refusalBody(`${method} ${destination}${auditedPath}`, rule, reason),
      refusalHeaders(rule, reason),
    );
    ctx.emit({
      type: 'denied',
      ...base,
      decision: 'deny',
      rule,
      bytesUp: 0,
      bytesDown: 0,
      durationMs: Date.now() - started,
      status,
      ...(secrets ? { secrets } : {}),
    });
  };

  const admitted = admitRequest(ctx, target, method, path, req.headers);
  if (!admitted.ok) {
    refuse(admitted.status, admitted.rule, admitted.reason, admitted.secrets);
    return;
  }
  const { headers, substituted } = admitted;
  const upstreamPath = admitted.path;
  const secrets = ctx.secrets;
  const hostName = destinationText(target.destination);
  const bodyRewrite =
    secrets && target.scheme === 'https' ? secrets.requestBody(hostName, target.port, path) : null;
  const redactor = secrets?.responseRedactor() ?? null;
  if (bodyRewrite) delete headers['content-length']; // the body's length changes with substitution
  if (redactor) headers['accept-encoding'] = 'identity'; // ask for a body we can read (decoded below if ignored)

  let bytesUp = 0;
  let bytesDown = 0;
  let finished = false;
  let refusedBy: { status: number; rule: string; reason: string; secret?: string } | undefined;
  const finish = (status: number | undefined, error?: string): void => {
    if (finished) return;
    finished = true;
    const redactions = redactor?.redactions ?? 0;
    ctx.emit({
      type: refusedBy ? 'denied' : 'request',
      ...base,
      decision: refusedBy
        ? 'deny'
        : error && status !== undefined && status >= 500 && bytesDown === 0
          ? 'error'
          : 'allow',
      ...(refusedBy
        ? { rule: refusedBy.rule }
        : admitted.rule || target.rule
          ? { rule: admitted.rule ?? target.rule }
          : {}),
      bytesUp,
      bytesDown,
      durationMs: Date.now() - started,
      ...(status === undefined ? {} : { status }),
      ...(error ? { error } : {}),
      ...(substituted.length > 0 || refusedBy?.secret
        ? { secrets: refusedBy?.secret ? [refusedBy.secret] : [...substituted] }
        : {}),
      ...(redactions > 0 ? { redactions } : {}),
    });
  };

  const options: https.RequestOptions = {
    host: target.dial,
    port: target.port,
    method,
    path: upstreamPath,
    headers,
    setHost: false,
    agent: target.agent ?? false,
  };
  if (target.scheme === 'https') {
    if (target.destination.kind === 'domain') options.servername = target.destination.name;
    if (ctx.upstreamCa && !target.agent) options.ca = [...ctx.upstreamCa];
  }
  const upstreamReq = (target.scheme === 'https' ? https : http).request(options);
  let connected = false;
  const timer = setTimeout(() => {
    if (!connected) upstreamReq.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' }));
  }, ctx.connectTimeoutMs);
  upstreamReq.on('socket', (s: net.Socket) => {
    const ready = (): void => {
      connected = true;
      clearTimeout(timer);
    };
    if (!s.connecting) ready();
    else s.once('connect', ready);
    // A pooled keep-alive socket comes back for many requests: set it up once.
    if (prepared.has(s)) return;
    prepared.add(s);
    ctx.track(s);
    s.setTimeout(ctx.idleTimeoutMs, () => s.destroy());
  });
  const failUpstream = (status: number, rule: string, reason: string, secret?: string): void => {
    refusedBy = { status, rule, reason, ...(secret ? { secret } : {}) };
    upstreamReq.destroy();
    if (!res.headersSent) {
      sendText(
        res,
        status,
        refusalBody(`${method} ${destination}${auditedPath}`, rule, reason),
        refusalHeaders(rule, reason),
      );
    } else res.destroy();
    finish(status);
  };
  upstreamReq.on('error', (err) => {
    clearTimeout(timer);
    if (refusedBy) return;
    const code = errorCode(err);
    if (!res.headersSent) {
      const status = code === 'ETIMEDOUT' ? 504 : 502;
      const reason = `could not reach ${destination} at ${target.dial} (${code})`;
      sendText(res, status, reason, { 'X-Ironcage-Reason': headerSafe(reason) });
      finish(status, code);
    } else {
      res.destroy();
      finish(res.statusCode, code);
    }
  });
  upstreamReq.on('response', (upRes: http.IncomingMessage) => {
    let outHeaders = stripHopByHop(upRes.headers);
    let body: NodeJS.ReadableStream = upRes;
    upRes.on('data', (d: Buffer) => {
      bytesDown += d.length;
      if (!ctx.budget.addBytes(d.length)) upRes.destroy(new Error('byte budget spent'));
    });
    if (secrets) {
      const redacted = secrets.redactHeaders(outHeaders);
      outHeaders = redacted.headers;
      if (redactor) {
        const decoder = decoderFor(firstHeader(outHeaders['content-encoding']));
        if (decoder) delete outHeaders['content-encoding'];
        delete outHeaders['content-length'];
        body = decoder ? pipeline(upRes, decoder, redactor, () => {}) : pipeline(upRes, redactor, () => {});
      }
    }
    res.writeHead(upRes.statusCode ?? 502, outHeaders as http.OutgoingHttpHeaders);
    body.pipe(res as NodeJS.WritableStream);
    body.once('end', () => finish(upRes.statusCode));
    body.once('error', (err: unknown) => {
      res.destroy();
      finish(upRes.statusCode, errorCode(err));
    });
  });

  req.on('data', (d: Buffer) => {
    bytesUp += d.length;
    if (bytesUp > ctx.maxBodyBytes) failUpstream(413, 'limit:body-bytes', bodyLimitReason(ctx.maxBodyBytes));
    else if (!ctx.budget.addBytes(d.length)) {
      const spent = ctx.budget.bytesExhausted();
      if (spent) failUpstream(429, spent.rule, spent.reason);
    }
  });
  if (bodyRewrite) {
    pipeline(req, bodyRewrite, upstreamReq, (err) => {
      const secret = (err as { secret?: unknown } | undefined)?.secret;
      if ((err as { code?: unknown } | undefined)?.code === 'EXFILTRATION' && typeof secret === 'string') {
        failUpstream(403, 'vault:exfiltration', (err as unknown as { reason: string }).reason, secret);
      }
    });
  } else req.pipe(upstreamReq);
  res.once('close', () => {
    if (!res.writableFinished) upstreamReq.destroy();
    finish(res.headersSent ? res.statusCode : undefined, res.writableFinished ? undefined : 'ECLIENTCLOSED');
  });
}

type RequestAdmission =
  | {
      readonly ok: false;
      readonly status: number;
      readonly rule: string;
      readonly reason: string;
      readonly secrets?: string[];
    }
  | {
      readonly ok: true;
      /** Headers to send upstream: hop-by-hop removed, placeholders substituted, Host from the vetted target. */
      readonly headers: Record<string, string | string[]>;
      readonly path: string;
      readonly substituted: readonly string[];
      /** The request rule that allowed it, if one did. */
      readonly rule?: string;
    };

/** Everything decided before a readable request may go upstream: request rules, budgets, the vault. */
function admitRequest(
  ctx: ForwardContext,
  target: ForwardTarget,
  method: string,
  path: string,
  reqHeaders: http.IncomingHttpHeaders,
): RequestAdmission {
  const shownHost = displayHost(target.destination);
  const destination = `${shownHost}:${target.port}`;
  const refused = (status: number, rule: string, reason: string, secrets?: string[]): RequestAdmission => ({
    ok: false,
    status,
    rule,
    reason,
    ...(secrets ? { secrets } : {}),
  });
  const verdict = decideRequest(
    ctx.rules().requests,
    (rule) => ruleNamesDestination(rule, target.destination, target.port),
    { method, target: path },
    shownHost,
  );
  if (verdict.verdict === 'deny') return refused(403, verdict.rule, verdict.reason);
  const overBudget = ctx.budget.takeRequest();
  if (overBudget) return refused(429, overBudget.rule, overBudget.reason);
  const declared = Number(firstHeader(reqHeaders['content-length']) ?? 0);
  if (declared > ctx.maxBodyBytes) return refused(413, 'limit:body-bytes', bodyLimitReason(ctx.maxBodyBytes));

  let headers = forwardableHeaders(reqHeaders);
  let upstreamPath = path;
  let substituted: readonly string[] = [];
  const secrets = ctx.secrets;
  const hostName = destinationText(target.destination);
  if (secrets) {
    if (target.scheme === 'http') {
      // Never put a credential on the wire in clear text: placeholders are only honoured over https.
      const found = secrets.findPlaceholder(`${path}\n${JSON.stringify(reqHeaders)}`);
      if (found !== undefined) {
        return refused(
          403,
          'vault:cleartext',
          `the placeholder of secret ${found} was sent over plain http:// to ${destination}; secrets are only substituted in https:// requests to their bound hosts`,
          [found],
        );
      }
    } else {
      const check = secrets.checkRequest(hostName, target.port, path, headers);
      if (!check.ok) return refused(403, 'vault:exfiltration', check.reason, [check.secret]);
      headers = { ...check.headers };
      upstreamPath = check.path;
      substituted = check.substituted;
    }
  }
  headers.host = target.port === (target.scheme === 'https' ? 443 : 80) ? shownHost : destination;
  return {
    ok: true,
    headers,
    path: upstreamPath,
    substituted,
    ...(verdict.verdict === 'allow' && verdict.rule ? { rule: verdict.rule } : {}),
  };
}

/**
 * An HTTP/1.1 `Upgrade` (WebSocket) through the proxy: admitted like any readable request (request rules,
 * budgets, placeholders in its headers), then the upgraded connection is spliced byte for byte. Its frames are
 * not inspected (a placeholder inside a WebSocket message is neither substituted nor detected).
 */
export function forwardUpgrade(
  ctx: ForwardContext,
  target: ForwardTarget,
  req: http.IncomingMessage,
  client: Duplex,
  head: Buffer,
  path: string,
): void {
  const started = Date.now();
  const method = (req.method ?? 'GET').toUpperCase();
  const base = {
    protocol: target.scheme,
    destination: `${displayHost(target.destination)}:${target.port}`,
    resolvedIp: target.dial,
    method,
    path: path.slice(0, 500),
  } as const;
  client.on('error', () => {});
  const admitted = admitRequest(ctx, target, method, path, req.headers);
  if (!admitted.ok) {
    const body = refusalBody(`${method} ${base.destination}${base.path}`, admitted.rule, admitted.reason);
    const headers = Object.entries(refusalHeaders(admitted.rule, admitted.reason)).map(
      ([k, v]) => `${k}: ${v}\r\n`,
    );
    client.end(
      `HTTP/1.1 ${admitted.status} ${http.STATUS_CODES[admitted.status] ?? ''}\r\n${headers.join('')}` +
        `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    ctx.emit({
      type: 'denied',
      ...base,
      decision: 'deny',
      rule: admitted.rule,
      bytesUp: 0,
      bytesDown: 0,
      durationMs: Date.now() - started,
      status: admitted.status,
      ...(admitted.secrets ? { secrets: admitted.secrets } : {}),
    });
    return;
  }
  const headers = { ...admitted.headers, connection: 'Upgrade', upgrade: String(req.headers.upgrade ?? '') };
  const options: https.RequestOptions = {
    host: target.dial,
    port: target.port,
    method,
    path: admitted.path,
    headers,
    setHost: false,
    agent: false,
  };
  if (target.scheme === 'https') {
    if (target.destination.kind === 'domain') options.servername = target.destination.name;
    if (ctx.upstreamCa) options.ca = [...ctx.upstreamCa];
  }
  const upstreamReq = (target.scheme === 'https' ? https : http).request(options);
  const fail = (status: number, error: string): void => {
    client.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    ctx.emit({
      type: 'request',
      ...base,
      decision: 'error',
      bytesUp: 0,
      bytesDown: 0,
      durationMs: Date.now() - started,
      status,
      error,
    });
  };
  upstreamReq.setTimeout(ctx.connectTimeoutMs, () =>
    upstreamReq.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })),
  );
  upstreamReq.on('error', (err) => fail(errorCode(err) === 'ETIMEDOUT' ? 504 : 502, errorCode(err)));
  // The server declined the upgrade: pass its answer on and close.
  upstreamReq.on('response', (res: http.IncomingMessage) => {
    client.write(rawHead(res, true));
    res.pipe(client);
    res.on('end', () =>
      ctx.emit({
        type: 'request',
        ...base,
        decision: 'allow',
        bytesUp: 0,
        bytesDown: 0,
        durationMs: Date.now() - started,
        ...(res.statusCode ? { status: res.statusCode } : {}),
      }),
    );
  });
  upstreamReq.on('upgrade', (res: http.IncomingMessage, upstream: net.Socket, upstreamHead: Buffer) => {
    upstreamReq.setTimeout(0);
    ctx.track(upstream);
    upstream.setTimeout(ctx.idleTimeoutMs, () => upstream.destroy());
    client.write(rawHead(res, false));
    if (upstreamHead.length > 0) client.write(upstreamHead);
    if (head.length > 0) upstream.write(head);
    let up = head.length;
    let down = upstreamHead.length;
    client.on('data', (d: Buffer) => {
      up += d.length;
      if (!ctx.budget.addBytes(d.length)) client.destroy();
    });
    upstream.on('data', (d: Buffer) => {
      down += d.length;
      if (!ctx.budget.addBytes(d.length)) upstream.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
    let open = 2;
    const closeOne = (): void => {
      client.destroy();
      upstream.destroy();
      if (--open === 0) {
        ctx.emit({
          type: 'request',
          ...base,
          decision: 'allow',
          ...(admitted.rule || target.rule ? { rule: admitted.rule ?? target.rule } : {}),
          bytesUp: up,
          bytesDown: down,
          durationMs: Date.now() - started,
          status: 101,
          ...(admitted.substituted.length > 0 ? { secrets: [...admitted.substituted] } : {}),
        });
      }
    };
    client.once('close', closeOne);
    upstream.once('close', closeOne);
    upstream.on('error', () => {});
  });
  upstreamReq.end();
}

/**
 * A response's status line and headers as received (raw, so repeated headers and their case survive). For a
 * declined upgrade, whose decoded body follows and ends with the connection, the framing headers go.
 */
function rawHead(res: http.IncomingMessage, closeDelimited: boolean): string {
  const framing = new Set(['transfer-encoding', 'content-length', 'connection', 'keep-alive']);
  const lines: string[] = [];
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    const name = res.rawHeaders[i] ?? '';
    if (closeDelimited && framing.has(name.toLowerCase())) continue;
    lines.push(`${name}: ${res.rawHeaders[i + 1]}\r\n`);
  }
  if (closeDelimited) lines.push('Connection: close\r\n');
  return `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n${lines.join('')}\r\n`;
}

/** What a refused request gets to read: what was refused, by which rule, and how to allow it. */
function refusalBody(what: string, rule: string, reason: string): string {
  return `ironcage egress proxy: ${what} refused.\nrule: ${rule}\nreason: ${reason}\n`;
}

function refusalHeaders(rule: string, reason: string): Record<string, string> {
  return { 'X-Ironcage-Denied-Rule': headerSafe(rule), 'X-Ironcage-Reason': headerSafe(reason) };
}

function bodyLimitReason(max: number): string {
  return `the request body is larger than ${max} bytes; raise network.limits.maxBodyBytes to send more`;
}

function decoderFor(encoding: string | undefined): Transform | undefined {
  switch (encoding?.trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return zlib.createGunzip();
    case 'deflate':
      return zlib.createInflate();
    case 'br':
      return zlib.createBrotliDecompress();
    default:
      return undefined;
  }
}

function firstHeader(v: string | string[] | number | undefined): string | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v[0] : String(v);
}

/** Request headers minus hop-by-hop ones and HTTP/2 pseudo-headers (`:path` ...), which are not headers upstream. */
function forwardableHeaders(headers: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(stripHopByHop(headers))) {
    if (!name.startsWith(':') && value !== undefined) out[name] = value as string | string[];
  }
  return out;
}

export function stripHopByHop(headers: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const named = new Set(HOP_BY_HOP);
  const connection = headers.connection;
  for (const token of (Array.isArray(connection) ? connection.join(',') : (connection ?? '')).split(',')) {
    const t = token.trim().toLowerCase();
    if (t) named.add(t);
  }
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !named.has(name)) out[name] = value;
  }
  return out;
}

export function sendText(
  res: ClientResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  const text = body.endsWith('\n') ? body : `${body}\n`;
  res.writeHead(status, {
    ...headers,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** Header values must be printable ASCII; anything else (from a hostile host name) becomes `?`. */
export function headerSafe(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 1000);
}

export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}
