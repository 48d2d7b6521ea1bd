/**
 * The host-side egress proxy of one sandbox: a Unix socket that speaks HTTP/1.1 forward proxying,
 * CONNECT tunnels and SOCKS5 on the same listener. Which sandbox is talking is known from which socket the
 * connection arrived on (one proxy per sandbox), never from anything the client sends.
 *
 * Every request or tunnel is decided by the pure policy (`rules.ts`): canonicalise, resolve the name once,
 * decide with the answers, then dial exactly `decision.dial[0]`. There is no second lookup anywhere on the
 * path, so a DNS answer that changes between check and use (rebinding) cannot redirect the connection.
 */
import { promises as dns } from 'node:dns';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { SecretSession } from '../vault/index.js';
import { EgressBudget } from './budget.js';
import { type Destination, destinationText, displayHost } from './destination.js';
import {
  type EgressEvent,
  type EgressProtocol,
  errorCode,
  type ForwardContext,
  forwardRequest,
  forwardUpgrade,
  headerSafe,
  sendText,
} from './forward.js';
import { createInterceptor, type Interceptor } from './intercept.js';
import {
  decide,
  type EgressDecision,
  type EgressRules,
  type EgressRulesInput,
  mergeRules,
  replaceRules,
  ruleNamesDestination,
} from './rules.js';
import { checkFirstFlight } from './sni-check.js';
import {
  MAX_GREETING_BYTES,
  MAX_REQUEST_BYTES,
  methodSelection,
  parseGreeting,
  parseRequest,
  reply,
  SOCKS_NO_ACCEPTABLE_METHOD,
  SOCKS_NO_AUTH,
  SOCKS_VERSION,
  SocksProtocolError,
  SocksReply,
  type SocksReplyCode,
} from './socks5.js';
import type { CertificateAuthority } from './tls/ca.js';

export type { EgressEvent, EgressProtocol };

export interface EgressProxyLimits {
  /** Largest request head (request line + headers) accepted; larger gets 431 and the connection is closed. */
  readonly maxHeaderBytes: number;
  /** Time to establish the upstream TCP connection. */
  readonly connectTimeoutMs: number;
  /** A connection (client or upstream) with no traffic for this long is closed. */
  readonly idleTimeoutMs: number;
  /** Time a new client has to send its request head or SOCKS handshake. */
  readonly handshakeTimeoutMs: number;
  /** Client connections open at once on this proxy; further ones are refused (HTTP 429, SOCKS 0x01). */
  readonly maxConnections: number;
  /** Largest request body through a readable request (plain http, intercepted https); larger gets 413. */
  readonly maxBodyBytes: number;
  /** Requests and tunnels per second (bursts to twice that); further ones get 429 / SOCKS 0x02. */
  readonly requestsPerSecond: number;
  /** Bytes both ways over the proxy's life; then connections are cut and new ones refused. */
  readonly maxTotalBytes: number;
}

export const defaultEgressProxyLimits: EgressProxyLimits = {
  maxHeaderBytes: 16 * 1024,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 120_000,
  handshakeTimeoutMs: 10_000,
  maxConnections: 256,
  maxBodyBytes: 1024 ** 3,
  requestsPerSecond: Number.POSITIVE_INFINITY,
  maxTotalBytes: Number.POSITIVE_INFINITY,
};

/** What the `ask` hook is shown for an undecided destination. */
export interface EgressAskRequest {
  readonly sandboxId?: string;
  readonly protocol: EgressProtocol;
  /** Canonical `host:port`. */
  readonly destination: string;
  /** The vetted addresses that would be dialled. */
  readonly resolved: readonly string[];
  readonly reason: string;
}

export interface EgressProxyOptions {
  readonly socketPath: string;
  readonly rules: EgressRulesInput;
  readonly sandboxId?: string;
  /** Resolve a canonical name to addresses; called at most once per request or tunnel. */
  readonly resolve?: (host: string) => Promise<string[]>;
  /** This machine's own addresses, refused like loopback. */
  readonly hostAddresses?: readonly string[];
  /** Asked for `ask` verdicts; absent means deny. */
  readonly ask?: (request: EgressAskRequest) => Promise<boolean>;
  readonly onEvent?: (event: EgressEvent) => void;
  readonly limits?: Partial<EgressProxyLimits>;
  /**
   * TLS interception for hosts with request rules, bound secrets or an `intercept` rule: the installation's CA
   * and, optionally, extra roots to trust for upstream servers (Node's defaults otherwise). Without it every
   * https:// tunnel is opaque.
   */
  readonly tls?: { readonly ca: CertificateAuthority; readonly upstreamCa?: readonly string[] };
  /** The sandbox's vault session: placeholders substituted for bound hosts, refused elsewhere, values redacted. */
  readonly secrets?: SecretSession;
}

export interface EgressProxy {
  readonly socketPath: string;
  /** The rules in force; the next request or tunnel uses whatever is current then. */
  readonly rules: EgressRules;
  readonly limits: EgressProxyLimits;
  /** Replace every rule (the only way to remove one). Throws on invalid rules, leaving the old ones. */
  setRules(next: EgressRulesInput): void;
  /** Add rules (union, deduplicated). Throws on invalid rules, leaving the old ones. */
  mergeRules(patch: Partial<EgressRulesInput>): void;
  /** Sockets open now (client and upstream). */
  openSockets(): number;
  /** Stop listening, destroy every socket and remove the socket file. */
  close(): Promise<void>;
}

export class EgressProxyError extends Error {
  constructor(
    readonly code: 'SOCKET_PATH_IN_USE' | 'LISTEN_FAILED',
    message: string,
  ) {
    super(message);
    this.name = 'EgressProxyError';
  }
}

type Admission =
  | { readonly ok: true; readonly decision: EgressDecision; readonly dial: string; readonly rule?: string }
  | {
      readonly ok: false;
      /** `policy`: refused by the rules or the ask hook; `resolve`: the name did not resolve. */
      readonly why: 'policy' | 'resolve';
      readonly destination: string;
      readonly rule: string;
      readonly reason: string;
      readonly resolvedIp?: string;
      readonly error?: string;
    };

/** The audit event for a refused admission (rules or ask: `denied`; no resolution: an errored request). */
function refusalEvent(
  admission: Extract<Admission, { ok: false }>,
  protocol: EgressProtocol,
  started: number,
  status?: number,
): Omit<EgressEvent, 'sandboxId'> {
  const policy = admission.why === 'policy';
  return {
    type: policy ? 'denied' : protocol === 'http' ? 'request' : 'connection',
    protocol,
    destination: admission.destination,
    ...(admission.resolvedIp ? { resolvedIp: admission.resolvedIp } : {}),
    decision: policy ? 'deny' : 'error',
    rule: admission.rule,
    bytesUp: 0,
    bytesDown: 0,
    durationMs: Date.now() - started,
    ...(status === undefined ? {} : { status }),
    ...(admission.error ? { error: admission.error } : {}),
  };
}

export async function startEgressProxy(options: EgressProxyOptions): Promise<EgressProxy> {
  const limits: EgressProxyLimits = { ...defaultEgressProxyLimits, ...options.limits };
  let rules = replaceRules(options.rules);
  const resolve = options.resolve ?? defaultResolve;
  const sockets = new Set<net.Socket>();
  let closed = false;

  const track = (s: net.Socket): void => {
    if (closed) {
      s.destroy();
      return;
    }
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };

  const emit = (event: Omit<EgressEvent, 'sandboxId'>): void => {
    if (!options.onEvent) return;
    try {
      options.onEvent(options.sandboxId === undefined ? event : { ...event, sandboxId: options.sandboxId });
    } catch {
      // An audit sink that throws must not take the data path down with it.
    }
  };

  const budget = new EgressBudget(limits);
  const forwarding: ForwardContext = {
    rules: () => rules,
    budget,
    maxBodyBytes: limits.maxBodyBytes,
    connectTimeoutMs: limits.connectTimeoutMs,
    idleTimeoutMs: limits.idleTimeoutMs,
    ...(options.secrets ? { secrets: options.secrets } : {}),
    ...(options.tls?.upstreamCa ? { upstreamCa: options.tls.upstreamCa } : {}),
    emit,
    track,
  };
  const interceptor: Interceptor | undefined = options.tls
    ? createInterceptor({
        ca: options.tls.ca,
        ...(options.tls.upstreamCa ? { upstreamCa: options.tls.upstreamCa } : {}),
        handshakeTimeoutMs: limits.handshakeTimeoutMs,
        idleTimeoutMs: limits.idleTimeoutMs,
      })
    : undefined;

  /** Must this tunnel's requests be read: request rules or an `intercept` rule name it, or a secret is bound to it. */
  function needsInterception(destination: Destination, port: number): boolean {
    const current = rules;
    if (current.requests.some((r) => ruleNamesDestination(r.host, destination, port))) return true;
    if (current.intercept.some((r) => ruleNamesDestination(r, destination, port))) return true;
    const host = destinationText(destination);
    return options.secrets?.bindsHost(host, port) ?? false;
  }

  async function admit(host: string, port: number | string, protocol: EgressProtocol): Promise<Admission> {
    const current = rules; // one rule set for the whole decision, even if updated meanwhile
    const context = { hostAddresses: options.hostAddresses ?? [] };
    let decision = decide(current, { host, port }, context);
    const shown = (d: EgressDecision): string =>
      d.destination ? `${displayHost(d.destination)}:${port}` : `${host}:${port}`;
    // A name refused by a rule is refused whatever it resolves to: do not even send it to DNS.
    // Class refusals by name (`localhost`) are the exception: allowPrivate may open them once resolved.
    if (decision.verdict === 'deny' && !decision.rule?.startsWith('class:')) {
      return refusal('policy', shown(decision), decision.rule ?? 'default-deny', decision.reason);
    }
    if (decision.destination?.kind === 'domain') {
      let resolved: string[];
      try {
        resolved = await resolve(decision.destination.name);
      } catch (err) {
        const code = errorCode(err);
        return refusal(
          'resolve',
          shown(decision),
          'dns-resolution-failed',
          `${decision.destination.name} could not be resolved (${code}); check the name`,
          undefined,
          code,
        );
      }
      decision = decide(current, { host, port, resolved }, context);
    }
    const first = decision.dial?.[0];
    if (decision.verdict === 'deny' || first === undefined) {
      return refusal('policy', shown(decision), decision.rule ?? 'default-deny', decision.reason);
    }
    if (decision.verdict === 'ask') {
      const request: EgressAskRequest = {
        protocol,
        destination: shown(decision),
        resolved: decision.dial ?? [],
        reason: decision.reason,
        ...(options.sandboxId === undefined ? {} : { sandboxId: options.sandboxId }),
      };
      let approved = false;
      try {
        approved = options.ask ? await options.ask(request) : false;
      } catch {
        approved = false;
      }
      if (!approved) {
        const reason = options.ask
          ? `a human declined ${shown(decision)}. ${decision.reason}`
          : `${decision.reason} No approver is connected, so it is refused.`;
        return refusal('policy', shown(decision), 'ask:refused', reason, first);
      }
      return { ok: true, decision, dial: first, rule: 'ask:approved' };
    }
    return { ok: true, decision, dial: first, ...(decision.rule ? { rule: decision.rule } : {}) };
  }

  /**
   * Connect to the first of the vetted addresses that answers (at most four tried, each with the connect
   * timeout): a name with a dead IPv6 answer still works over IPv4. Only vetted addresses are ever dialled.
   */
  function dial(
    addresses: readonly string[],
    port: number,
    onConnect: (upstream: net.Socket, address: string) => void,
    onFail: (code: string, address: string) => void,
  ): void {
    const candidates = addresses.slice(0, 4);
    const attempt = (index: number): void => {
      const address = candidates[index] ?? '';
      const upstream = net.connect({ host: address, port, allowHalfOpen: true, noDelay: true });
      track(upstream);
      let settled = false;
      const timer = setTimeout(() => fail('ETIMEDOUT'), limits.connectTimeoutMs);
      const fail = (code: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        upstream.destroy();
        if (index + 1 < candidates.length && !closed) attempt(index + 1);
        else onFail(code, address);
      };
      upstream.once('error', (err) => fail(errorCode(err)));
      upstream.once('connect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        upstream.setTimeout(limits.idleTimeoutMs, () => upstream.destroy());
        onConnect(upstream, address);
      });
    };
    attempt(0);
  }

  /**
   * Join two sockets. The destination's bytes flow at once; the client's only after `release` (the caller
   * checks its first flight). `done` runs once, after both have closed, with the byte counts. Bytes count
   * against the budget; when it is spent, both sides are cut.
   */
  function splice(
    client: net.Socket,
    upstream: net.Socket,
    done: (bytesUp: number, bytesDown: number) => void,
  ): { release(first: Buffer): void } {
    let up = 0;
    let down = 0;
    const count = (d: Buffer, add: (n: number) => void): void => {
      add(d.length);
      if (!budget.addBytes(d.length)) {
        client.destroy();
        upstream.destroy();
      }
    };
    upstream.on('data', (d: Buffer) => count(d, (n) => (down += n)));
    upstream.pipe(client);
    let open = 2;
    const closeOne = (): void => {
      open -= 1;
      // One side gone (error, reset, idle timeout): nothing more can flow, so tear the other down too.
      client.destroy();
      upstream.destroy();
      if (open === 0) done(up, down);
    };
    client.once('close', closeOne);
    upstream.once('close', closeOne);
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.setTimeout(limits.idleTimeoutMs, () => client.destroy());
    return {
      release(first) {
        if (first.length > 0) {
          count(first, (n) => (up += n));
          upstream.write(first);
        }
        client.on('data', (d: Buffer) => count(d, (n) => (up += n)));
        client.pipe(upstream);
      },
    };
  }

  // --- HTTP forward proxy -------------------------------------------------------------------------------

  const httpServer = http.createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.handshakeTimeoutMs,
    // Long uploads are bounded by the idle timeout, not by a total request time.
    requestTimeout: 0,
  });
  httpServer.timeout = limits.idleTimeoutMs;
  httpServer.keepAliveTimeout = limits.idleTimeoutMs;

  httpServer.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    if (socket.writable) {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      const text = status === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
      const body = `ironcage egress proxy: ${status === 431 ? `request head larger than ${limits.maxHeaderBytes} bytes` : 'malformed HTTP request'}\n`;
      socket.end(
        `HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy();
  });

  httpServer.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    void forward(req, res);
  });
  httpServer.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    void upgrade(req, socket, head);
  });

  /**
   * Answers a refused admission (403 for policy, 502 when the name did not resolve) and audits it; `send`
   * writes the response the way the connection needs (raw bytes on a socket, or an http.ServerResponse).
   */
  function refuse(
    admission: Refused,
    protocol: 'http' | 'connect',
    started: number,
    send: (status: number, headers: Record<string, string>, body: string) => void,
  ): void {
    const status = admission.why === 'policy' ? 403 : 502;
    send(status, denialHeaders(admission), denialBody(admission));
    emit(refusalEvent(admission, protocol, started, status));
  }

  /** An `Upgrade` (WebSocket) to an http:// URL: admitted like a request, then spliced (forward.ts). */
  async function upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): Promise<void> {
    const started = Date.now();
    socket.on('error', () => {});
    const url = parseAbsoluteHttpUrl(req.url);
    if (url === undefined) {
      socket.end(rawResponse(400, {}, 'an upgrade through this proxy needs an absolute http:// URL\n'));
      return;
    }
    const port = url.port === '' ? 80 : Number(url.port);
    const admission = await admit(url.hostname, port, 'http');
    if (closed || socket.destroyed) return;
    if (!admission.ok) {
      refuse(admission, 'http', started, (...parts) => socket.end(rawResponse(...parts)));
      return;
    }
    const destination = admission.decision.destination;
    if (destination === undefined) return;
    const target = {
      scheme: 'http' as const,
      destination,
      port,
      dial: admission.dial,
      ...(admission.rule ? { rule: admission.rule } : {}),
    };
    forwardUpgrade(forwarding, target, req, socket, head, `${url.pathname}${url.search}`);
  }

  async function forward(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = Date.now();
    const url = parseAbsoluteHttpUrl(req.url);
    if (url === undefined) {
      const reason = req.url?.startsWith('https:')
        ? 'send https:// requests through a CONNECT tunnel (set HTTPS_PROXY), not as a plain proxy request'
        : 'this is a forward proxy: the request target must be an absolute http:// URL';
      sendText(res, 400, reason, { 'X-Ironcage-Reason': headerSafe(reason) });
      return;
    }
    const port = url.port === '' ? 80 : Number(url.port);
    const admission = await admit(url.hostname, port, 'http');
    if (closed || req.socket.destroyed) return;
    if (!admission.ok) {
      refuse(admission, 'http', started, (status, headers, body) => sendText(res, status, body, headers));
      return;
    }
    const destination = admission.decision.destination;
    if (destination === undefined) return;
    forwardRequest(
      forwarding,
      {
        scheme: 'http',
        destination,
        port,
        dial: admission.dial,
        ...(admission.rule ? { rule: admission.rule } : {}),
      },
      req,
      res,
      `${url.pathname}${url.search}`,
    );
  }

  // --- CONNECT tunnels ----------------------------------------------------------------------------------

  httpServer.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    void tunnel(req.url ?? '', client, head);
  });

  async function tunnel(target: string, client: net.Socket, head: Buffer): Promise<void> {
    const started = Date.now();
    client.on('error', () => {});
    const parsed = splitConnectTarget(target);
    const admission: Admission = parsed
      ? await admit(parsed.host, parsed.port, 'connect')
      : {
          ok: false,
          why: 'policy',
          destination: target.slice(0, 300),
          rule: 'invalid-destination',
          reason: 'CONNECT needs host:port (IPv6 as [address]:port)',
        };
    if (closed || client.destroyed) return;
    if (!admission.ok) {
      refuse(admission, 'connect', started, (...parts) => client.end(rawResponse(...parts)));
      return;
    }
    const port = Number(parsed?.port);
    const destination = admission.decision.destination;
    if (destination === undefined) return;
    const overBudget = budget.takeRequest();
    if (overBudget) {
      const refused = refusal(
        'policy',
        `${displayHost(destination)}:${port}`,
        overBudget.rule,
        overBudget.reason,
      );
      client.end(rawResponse(429, denialHeaders(refused), denialBody(refused)));
      emit(refusalEvent(refused, 'connect', started, 429));
      return;
    }
    if (interceptor && needsInterception(destination, port)) {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) client.unshift(head);
      const base = {
        protocol: 'connect' as const,
        destination: `${displayHost(destination)}:${port}`,
        resolvedIp: admission.dial,
        ...(admission.rule ? { rule: admission.rule } : {}),
      };
      await interceptor.intercept(
        client,
        { destination, port, dial: admission.dial, ...(admission.rule ? { rule: admission.rule } : {}) },
        (t, req, res, path) => forwardRequest(forwarding, t, req, res, path),
        ({ bytesUp, bytesDown, refused }) =>
          emit({
            type: refused ? 'denied' : 'connection',
            ...base,
            ...(refused ? { rule: refused.rule } : {}),
            decision: refused ? 'deny' : 'allow',
            bytesUp,
            bytesDown,
            durationMs: Date.now() - started,
            status: 200,
            intercepted: true,
          }),
        (t, req, socket, head, path) => forwardUpgrade(forwarding, t, req, socket, head, path),
      );
      return;
    }
    openTunnel(client, admission, port, head, started, {
      protocol: 'connect',
      established: () => 'HTTP/1.1 200 Connection Established\r\n\r\n',
      failed: (code, destination, address) => {
        const status = code === 'ETIMEDOUT' ? 504 : 502;
        const reason = `could not reach ${destination} at ${address} (${code})`;
        return {
          status,
          bytes: rawResponse(status, { 'X-Ironcage-Reason': headerSafe(reason) }, `${reason}\n`),
        };
      },
      status: 200,
    });
  }

  /**
   * An admitted CONNECT or SOCKS5 tunnel: dial the vetted address, acknowledge, let the server's bytes flow,
   * hold the client's first flight until its TLS server name (if any) is checked against the admitted host,
   * then splice both ways and audit the outcome (or the failure to connect, or the SNI refusal).
   */
  function openTunnel(
    client: net.Socket,
    admission: Extract<Admission, { ok: true }>,
    port: number,
    early: Buffer,
    started: number,
    how: {
      protocol: 'connect' | 'socks5';
      established: () => string | Buffer;
      failed: (
        code: string,
        destination: string,
        address: string,
      ) => { bytes: string | Buffer; status?: number };
      status?: number;
    },
  ): void {
    const admitted = admission.decision.destination;
    const destination = `${displayHost(admitted)}:${port}`;
    const base = {
      protocol: how.protocol,
      destination,
      ...(admission.rule ? { rule: admission.rule } : {}),
      ...(how.status === undefined ? {} : { status: how.status }),
    };
    dial(
      admission.decision.dial ?? [admission.dial],
      port,
      (upstream, address) => {
        client.write(how.established());
        const at = { ...base, resolvedIp: address };
        const joined = splice(client, upstream, (bytesUp, bytesDown) => {
          const outcome = { bytesUp, bytesDown, durationMs: Date.now() - started };
          emit(
            refusedBy
              ? { type: 'denied', ...at, rule: refusedBy, decision: 'deny', ...outcome }
              : { type: 'connection', ...at, decision: 'allow', ...outcome },
          );
        });
        let refusedBy: string | undefined;
        const host = admitted ?? { kind: 'ip' as const, version: 4 as const, address };
        void checkFirstFlight(client, early, host, limits.idleTimeoutMs).then((first) => {
          if (first.ok) {
            joined.release(first.bytes);
            client.resume();
            return;
          }
          if (first.rule !== 'idle') refusedBy = first.rule;
          client.destroy();
        });
      },
      (code, address) => {
        const failure = how.failed(code, destination, address);
        client.end(failure.bytes);
        emit({
          type: 'connection',
          ...base,
          resolvedIp: address,
          decision: 'error',
          bytesUp: 0,
          bytesDown: 0,
          durationMs: Date.now() - started,
          ...(failure.status === undefined ? {} : { status: failure.status }),
          error: code,
        });
      },
    );
  }

  // --- SOCKS5 -------------------------------------------------------------------------------------------

  function socks(client: net.Socket, first: Buffer): void {
    const started = Date.now();
    let buf = first;
    let stage: 'greeting' | 'request' | 'deciding' = 'greeting';
    const fail = (code?: SocksReplyCode): void => {
      if (code !== undefined && stage !== 'greeting') client.end(reply(code));
      else client.destroy();
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      step();
    };
    const step = (): void => {
      try {
        if (stage === 'greeting') {
          const g = parseGreeting(buf);
          if (g.state === 'incomplete') {
            if (buf.length > MAX_GREETING_BYTES) throw new SocksProtocolError('greeting too long');
            return;
          }
          if (!g.methods.includes(SOCKS_NO_AUTH)) {
            client.end(methodSelection(SOCKS_NO_ACCEPTABLE_METHOD));
            return;
          }
          client.write(methodSelection(SOCKS_NO_AUTH));
          stage = 'request';
          buf = g.rest;
        }
        if (stage === 'request') {
          const r = parseRequest(buf);
          if (r.state === 'incomplete') {
            if (buf.length > MAX_REQUEST_BYTES) throw new SocksProtocolError('request too long');
            return;
          }
          stage = 'deciding';
          // The handshake is complete; an ask hook may take a while, and the tunnel sets its own idle timeout.
          client.setTimeout(0);
          client.off('data', onData);
          client.pause();
          void connectSocks(client, r.host, r.port, r.rest, started);
        }
      } catch (err) {
        fail(err instanceof SocksProtocolError ? err.reply : SocksReply.generalFailure);
      }
    };
    client.on('data', onData);
    client.on('error', () => {});
    step();
  }

  async function connectSocks(
    client: net.Socket,
    host: string,
    port: number,
    early: Buffer,
    started: number,
  ): Promise<void> {
    const admission = await admit(host, port, 'socks5');
    if (closed || client.destroyed) return;
    if (!admission.ok) {
      client.end(
        reply(admission.why === 'policy' ? SocksReply.notAllowedByRuleset : SocksReply.hostUnreachable),
      );
      emit(refusalEvent(admission, 'socks5', started));
      return;
    }
    openTunnel(client, admission, port, early, started, {
      protocol: 'socks5',
      established: () => reply(SocksReply.succeeded),
      failed: (code) => ({
        bytes: reply(
          code === 'ECONNREFUSED'
            ? SocksReply.connectionRefused
            : code === 'ETIMEDOUT'
              ? SocksReply.ttlExpired
              : SocksReply.hostUnreachable,
        ),
      }),
    });
  }

  // --- the listener -------------------------------------------------------------------------------------

  let clients = 0;
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    track(client);
    clients += 1;
    client.once('close', () => {
      clients -= 1;
    });
    const over = clients > limits.maxConnections;
    client.on('error', () => {});
    client.setTimeout(limits.handshakeTimeoutMs, () => client.destroy());
    client.once('data', (first: Buffer) => {
      client.pause();
      if (over) {
        // Refused in the client's own protocol, so the agent can read why (SOCKS has no text: a bare close).
        if (first[0] === SOCKS_VERSION) client.destroy();
        else {
          const reason = `this sandbox already has ${limits.maxConnections} proxy connections open; close some or raise network.limits.maxConnections`;
          client.end(
            rawResponse(
              429,
              { 'X-Ironcage-Denied-Rule': 'limit:connections', 'X-Ironcage-Reason': reason },
              `ironcage egress proxy: ${reason}\n`,
            ),
          );
          emit({
            type: 'denied',
            protocol: 'http',
            destination: '',
            decision: 'deny',
            rule: 'limit:connections',
            bytesUp: 0,
            bytesDown: 0,
            durationMs: 0,
            status: 429,
          });
        }
        return;
      }
      if (first[0] === SOCKS_VERSION) {
        socks(client, first);
        client.resume();
        return;
      }
      // Everything else is HTTP: hand the connection, first bytes put back, to node's HTTP parser (which
      // bounds the head with headersTimeout and maxHeaderSize).
      client.setTimeout(0);
      client.unshift(first);
      httpServer.emit('connection', client);
      client.resume();
    });
    client.resume();
  });
  // The hard stop for a flood: far above the readable refusals, so a stuck client cannot pin unbounded sockets.
  server.maxConnections = limits.maxConnections * 2 + 16;

  removeStaleSocket(options.socketPath);
  await new Promise<void>((ok, fail) => {
    server.once('error', (err) =>
      fail(new EgressProxyError('LISTEN_FAILED', `cannot listen on ${options.socketPath}: ${err.message}`)),
    );
    server.listen(options.socketPath, () => ok());
  });
  // Only root (the host side) may connect; the sandbox reaches it through its bind mount as root in its userns.
  chmodSync(options.socketPath, 0o600);

  return {
    socketPath: options.socketPath,
    get rules() {
      return rules;
    },
    limits,
    setRules(next) {
      rules = replaceRules(next);
    },
    mergeRules(patch) {
      rules = mergeRules(rules, patch);
    },
    openSockets: () => sockets.size,
    async close() {
      if (closed) return;
      closed = true;
      const stopped = new Promise<void>((ok) => server.close(() => ok()));
      interceptor?.close();
      for (const s of sockets) s.destroy();
      httpServer.close();
      await stopped;
      try {
        unlinkSync(options.socketPath);
      } catch (err) {
        if (errorCode(err) !== 'ENOENT') throw err;
      }
    },
  };
}

async function defaultResolve(host: string): Promise<string[]> {
  const answers = await dns.lookup(host, { all: true, verbatim: true });
  return answers.map((a) => a.address);
}

/** A leftover socket file from a crashed proxy is removed; any other file at the path is an error. */
function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new EgressProxyError('SOCKET_PATH_IN_USE', `${path} exists and is not a socket`);
  unlinkSync(path);
}

/** The target of a forward-proxy request: an absolute http:// URL, else undefined. */
function parseAbsoluteHttpUrl(target: string | undefined): URL | undefined {
  try {
    const url = new URL(target ?? '');
    return url.protocol === 'http:' ? url : undefined;
  } catch {
    return undefined;
  }
}

/** `host:port` or `[v6]:port`, as in a CONNECT request line; bounded, no further interpretation. */
export function splitConnectTarget(target: string): { host: string; port: string } | undefined {
  if (target.length === 0 || target.length > 300) return undefined;
  let host: string;
  let port: string;
  if (target.startsWith('[')) {
    const close = target.indexOf(']');
    if (close < 0 || target[close + 1] !== ':') return undefined;
    host = target.slice(0, close + 1);
    port = target.slice(close + 2);
  } else {
    const colon = target.lastIndexOf(':');
    if (colon <= 0 || target.indexOf(':') !== colon) return undefined;
    host = target.slice(0, colon);
    port = target.slice(colon + 1);
  }
  if (!/^[0-9]{1,5}$/.test(port)) return undefined;
  return { host, port };
}

type Refused = Extract<Admission, { ok: false }>;

function refusal(
  why: Refused['why'],
  destination: string,
  rule: string,
  reason: string,
  resolvedIp?: string,
  error?: string,
): Refused {
  return {
    ok: false,
    why,
    destination,
    rule,
    reason,
    ...(resolvedIp ? { resolvedIp } : {}),
    ...(error ? { error } : {}),
  };
}

function denialHeaders(a: Refused): Record<string, string> {
  return { 'X-Ironcage-Denied-Rule': headerSafe(a.rule), 'X-Ironcage-Reason': headerSafe(a.reason) };
}

/** Plain text for an agent to read: what was refused, by which rule, and how to get it allowed. */
function denialBody(a: Refused): string {
  const what = a.why === 'policy' ? 'refused by the sandbox egress policy' : 'could not be resolved';
  return `ironcage egress proxy: ${a.destination} ${what}.\nrule: ${a.rule}\nreason: ${a.reason}\n`;
}

function rawResponse(status: number, headers: Record<string, string>, body: string): string {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
  return (
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${lines.join('')}` +
    `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Connection: close\r\n\r\n${body}`
  );
}
