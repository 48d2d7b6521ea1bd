/**
 * TLS interception of one admitted CONNECT tunnel: the proxy answers the sandbox's TLS handshake itself with a
 * certificate for the CONNECT host issued by this installation's CA (which the sandbox trusts and nothing else
 * does), reads each HTTP/1.1 or HTTP/2 request (ALPN), and forwards it (forward.ts) over a fresh TLS connection
 * to the vetted address, verifying the real server's certificate for the same name.
 *
 * Only hosts that need it are intercepted (request rules, bound secrets, or an explicit `intercept` rule); all
 * other tunnels stay opaque. The CA's private key never leaves the host.
 */
import type http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { canonicalText, destinationText } from './destination.js';
import type { ForwardTarget } from './forward.js';
import type { CertificateAuthority } from './tls/ca.js';

export interface Interceptor {
  /** Closes the pooled upstream connections. */
  close(): void;
  /**
   * Terminate TLS on `client` (the 200 reply already sent) and serve its requests with `forward`. `done` runs
   * once when the tunnel is over, with the bytes it carried, or with a refusal (SNI naming another host).
   */
  intercept(
    client: net.Socket,
    target: Omit<ForwardTarget, 'agent' | 'scheme'>,
    forward: (
      target: ForwardTarget,
      req: http.IncomingMessage | http2.Http2ServerRequest,
      res: http.ServerResponse | http2.Http2ServerResponse,
      path: string,
    ) => void,
    done: (outcome: {
      bytesUp: number;
      bytesDown: number;
      refused?: { rule: string; reason: string };
    }) => void,
    /** An HTTP/1.1 `Upgrade` (WebSocket) inside the tunnel. */
    upgrade: (
      target: ForwardTarget,
      req: http.IncomingMessage,
      socket: Duplex,
      head: Buffer,
      path: string,
    ) => void,
  ): Promise<void>;
}

export interface InterceptorOptions {
  readonly ca: CertificateAuthority;
  /** Roots for upstream certificates; undefined: Node's defaults. */
  readonly upstreamCa?: readonly string[];
  readonly handshakeTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

const MAX_CONTEXTS = 1000;

export function createInterceptor(options: InterceptorOptions): Interceptor {
  // Upstream TLS connections are pooled per proxy (keyed by address, port and server name), so a sandbox that
  // opens a tunnel per request does not pay a second handshake for each: the dominant cost of interception.
  const agent = new https.Agent({
    keepAlive: true,
    maxSockets: 32,
    maxFreeSockets: 8,
    timeout: options.idleTimeoutMs,
    ...(options.upstreamCa ? { ca: [...options.upstreamCa] } : {}),
  });
  // Parsing PEM into a SecureContext costs more than the TLS handshake's own work on a warm cache: keep them.
  const contexts = new Map<string, tls.SecureContext>();
  async function contextFor(host: string): Promise<tls.SecureContext> {
    const cached = contexts.get(host);
    if (cached) return cached;
    const leaf = await options.ca.issue(host);
    const context = tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
    if (contexts.size >= MAX_CONTEXTS) contexts.clear();
    contexts.set(host, context);
    return context;
  }

  return {
    close: () => agent.destroy(),
    async intercept(client, target, forward, done, upgrade) {
      const host = destinationText(target.destination);
      let secureContext: tls.SecureContext;
      try {
        secureContext = await contextFor(host);
      } catch {
        client.destroy();
        done({ bytesUp: 0, bytesDown: 0 });
        return;
      }
      const full: ForwardTarget = { ...target, scheme: 'https', agent };
      // One TLS server per tunnel, so every request it parses belongs to this tunnel's admitted target. Built
      // without a certificate of its own (cheap) and handed the cached context for the CONNECT host; an IP
      // destination gets no SNI from its client, so it needs the certificate as the default.
      const leaf = target.destination.kind === 'ip' ? await options.ca.issue(host) : undefined;
      const server = http2.createSecureServer({
        allowHTTP1: true,
        ...(leaf ? { key: leaf.keyPem, cert: leaf.certPem } : {}),
        SNICallback: (servername, cb) => {
          if (canonicalText(servername) === host) cb(null, secureContext);
          else {
            refused = {
              rule: 'tls:sni-mismatch',
              reason: `the TLS server name ${JSON.stringify(servername.slice(0, 200))} is not the CONNECT host ${host}; open a tunnel to the host you talk to`,
            };
            cb(new Error('SNI mismatch'));
          }
        },
      });
      server.setTimeout(options.idleTimeoutMs);
      server.on(
        'request',
        (
          req: http.IncomingMessage | http2.Http2ServerRequest,
          res: http.ServerResponse | http2.Http2ServerResponse,
        ) => forward(full, req, res, originForm(req.url ?? '/')),
      );
      server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) =>
        upgrade(full, req, socket, head, originForm(req.url ?? '/')),
      );
      let refused: { rule: string; reason: string } | undefined;
      let tlsSocket: tls.TLSSocket | undefined;
      server.on('secureConnection', (s: tls.TLSSocket) => {
        tlsSocket = s;
        client.setTimeout(0);
      });
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        client.destroy();
        done({
          bytesUp: tlsSocket?.bytesRead ?? 0,
          bytesDown: tlsSocket?.bytesWritten ?? 0,
          ...(refused ? { refused } : {}),
        });
      };
      server.on('tlsClientError', () => finish());
      client.once('close', finish);
      client.setTimeout(options.handshakeTimeoutMs, () => {
        if (tlsSocket === undefined) finish();
      });
      server.emit('connection', client);
      client.resume();
    },
  };
}

/** The path and query of a request target; an absolute-form target inside a tunnel keeps only those. */
function originForm(target: string): string {
  if (target.startsWith('/')) return target;
  try {
    const url = new URL(target);
    return `${url.pathname}${url.search}`;
  } catch {
    return '/';
  }
}
