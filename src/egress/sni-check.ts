/**
 * The SNI check of an opaque tunnel: before the first client bytes go upstream, a TLS ClientHello must name the
 * host the tunnel was admitted for. Otherwise a tunnel opened to an allowed front (say a CDN) could carry a TLS
 * session for any other site behind it (domain fronting). Non-TLS tunnels (SSH, a database protocol) pass.
 */
import type net from 'node:net';
import { canonicalText, type Destination, destinationText } from './destination.js';
import { MAX_CLIENT_HELLO_BYTES, parseClientHello } from './tls/client-hello.js';

export type SniVerdict =
  | { readonly ok: true; readonly bytes: Buffer }
  | { readonly ok: false; readonly rule: string; readonly reason: string };

/**
 * Collect the client's first flight (after `early`) until its ClientHello is complete or it is clearly not TLS,
 * then judge it against the admitted destination. The client socket is left paused with those bytes consumed.
 */
export function checkFirstFlight(
  client: net.Socket,
  early: Buffer,
  admitted: Destination,
  timeoutMs: number,
): Promise<SniVerdict> {
  return new Promise((resolve) => {
    let buf = early;
    let settled = false;
    const settle = (v: SniVerdict): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off('data', onData);
      client.off('end', onEnd);
      client.pause();
      resolve(v);
    };
    const judge = (): boolean => {
      const hello = parseClientHello(buf);
      if (hello.state === 'incomplete' && buf.length < MAX_CLIENT_HELLO_BYTES) return false;
      if (hello.state !== 'complete' || hello.serverName === undefined) {
        settle({ ok: true, bytes: buf });
        return true;
      }
      const named = canonicalText(hello.serverName);
      const host = destinationText(admitted);
      if (named === host) settle({ ok: true, bytes: buf });
      else {
        settle({
          ok: false,
          rule: 'tls:sni-mismatch',
          reason:
            `the TLS server name ${JSON.stringify(hello.serverName.slice(0, 200))} is not the tunnel's host ${host}; ` +
            'open the tunnel to the host you talk to (domain fronting is refused)',
        });
      }
      return true;
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      judge();
    };
    // A client that closes before saying anything has nothing to check.
    const onEnd = (): void => settle({ ok: true, bytes: buf });
    // Server-speaks-first protocols (SSH, SMTP) send nothing until the banner arrives, which flows meanwhile, so
    // there is no hurry; a client that starts a ClientHello and stalls is cut off, never let through half-read.
    const timer = setTimeout(
      () =>
        settle({
          ok: false,
          rule: buf.length > 0 ? 'tls:incomplete-hello' : 'idle',
          reason: `no complete first message from the client within ${timeoutMs} ms`,
        }),
      timeoutMs,
    );
    if (buf.length > 0 && judge()) return;
    client.on('data', onData);
    client.once('end', onEnd);
    client.resume();
  });
}
