import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { before, describe, test } from 'node:test';
import tls from 'node:tls';
import fc from 'fast-check';
import {
  type ClientHelloParse,
  MAX_CLIENT_HELLO_BYTES,
  parseClientHello,
} from '../../src/egress/tls/client-hello.js';

// ---- Capturing real ClientHellos --------------------------------------------------------------------------

/**
 * Listens on 127.0.0.1, lets `connect` open a TLS client to it, and returns the bytes the client sent before
 * the first quiet period (a client sends its whole hello at once and then waits for the server).
 */
async function captureFirstFlight(connect: (port: number) => () => void): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  let stopClient: () => void = () => undefined;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timeout = setTimeout(() => reject(new Error('no ClientHello within 10 s')), 10_000);
      server.once('connection', (socket) => {
        const chunks: Buffer[] = [];
        let quiet: NodeJS.Timeout | undefined;
        socket.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          clearTimeout(quiet);
          quiet = setTimeout(() => {
            clearTimeout(timeout);
            socket.destroy();
            resolve(Buffer.concat(chunks));
          }, 100);
        });
        socket.on('error', () => undefined);
      });
      stopClient = connect(port);
    });
  } finally {
    stopClient();
    await new Promise((resolve) => server.close(resolve));
  }
}

function captureNodeHello(options: { servername?: string; ALPNProtocols?: string[] }): Promise<Buffer> {
  return captureFirstFlight((port) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    socket.on('error', () => undefined);
    return () => socket.destroy();
  });
}

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

function captureOpensslHello(servername: string, alpn: string): Promise<Buffer> {
  return captureFirstFlight((port) => {
    const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', servername, '-alpn', alpn];
    const child = spawn('openssl', args, { stdio: ['pipe', 'ignore', 'ignore'] });
    return () => child.kill();
  });
}

// ---- Building ClientHellos by hand (independently of the parser) ------------------------------------------

const u8 = (n: number): Buffer => Buffer.from([n]);
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);
const vec8 = (...parts: Buffer[]): Buffer => Buffer.concat([u8(Buffer.concat(parts).length), ...parts]);
const vec16 = (...parts: Buffer[]): Buffer => Buffer.concat([u16(Buffer.concat(parts).length), ...parts]);
const extension = (type: number, data: Buffer): Buffer => Buffer.concat([u16(type), vec16(data)]);

const sniExtension = (...entries: Array<[number, string | Buffer]>): Buffer =>
  extension(0, vec16(...entries.map(([type, name]) => Buffer.concat([u8(type), vec16(Buffer.from(name))]))));
const alpnExtension = (...protocols: string[]): Buffer =>
  extension(16, vec16(...protocols.map((p) => vec8(Buffer.from(p, 'latin1')))));
const paddingExtension = (n: number): Buffer => extension(21, Buffer.alloc(n));

function helloBody(extensions: Buffer[] | undefined): Buffer {
  return Buffer.concat([
    u16(0x0303),
    Buffer.alloc(32, 7), // random
    vec8(Buffer.alloc(32, 9)), // legacy session id
    vec16(Buffer.from([0x13, 0x01, 0xc0, 0x2f])), // cipher suites
    vec8(Buffer.from([0])), // compression: null
    ...(extensions === undefined ? [] : [vec16(...extensions)]),
  ]);
}

const handshakeMessage = (body: Buffer, type = 1): Buffer =>
  Buffer.concat([u8(type), u24(body.length), body]);

/** Frames handshake bytes into handshake records of at most `size` bytes each (or at the given cut points). */
function records(handshake: Buffer, cuts: number | number[] = 16_384, version = 0x0301): Buffer {
  const points = typeof cuts === 'number' ? [] : [...cuts];
  if (typeof cuts === 'number') for (let at = cuts; at < handshake.length; at += cuts) points.push(at);
  const bounds = [0, ...points, handshake.length];
  const out: Buffer[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const fragment = handshake.subarray(bounds[i], bounds[i + 1]);
    out.push(Buffer.concat([u8(22), u16(version), u16(fragment.length), fragment]));
  }
  return Buffer.concat(out);
}

const hello = (extensions?: Buffer[]): Buffer => records(handshakeMessage(helloBody(extensions)));

/** The handshake bytes of a captured hello (all record fragments, concatenated). */
function handshakeOf(flight: Buffer): Buffer {
  const fragments: Buffer[] = [];
  for (let at = 0; at + 5 <= flight.length; ) {
    const length = flight.readUInt16BE(at + 3);
    fragments.push(flight.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return Buffer.concat(fragments);
}

function assertNotTls(result: ClientHelloParse, reason?: RegExp): void {
  assert.equal(result.state, 'not-tls', JSON.stringify(result));
  if (reason !== undefined && result.state === 'not-tls') assert.match(result.reason, reason);
}

// ---- Tests ---------------------------------------------------------------------------------------------------

describe('parseClientHello: real hellos from Node', () => {
  let withSni: Buffer;
  before(async () => {
    withSni = await captureNodeHello({ servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
  });

  test('reads SNI and ALPN from tls.connect', () => {
    assert.deepEqual(parseClientHello(withSni), {
      state: 'complete',
      serverName: 'api.example.com',
      alpn: ['h2', 'http/1.1'],
    });
  });

  test('every proper prefix is incomplete', () => {
    for (let n = 0; n < withSni.length; n++) {
      assert.deepEqual(
        parseClientHello(withSni.subarray(0, n)),
        { state: 'incomplete' },
        `prefix of ${n} bytes`,
      );
    }
  });

  test('bytes after the hello (the next flight) do not change the result', () => {
    const extra = Buffer.concat([withSni, Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0xff, 0xff])]);
    assert.equal(parseClientHello(extra).state, 'complete');
  });

  test('the same hello re-framed into two records, split at every point, parses the same', () => {
    const handshake = handshakeOf(withSni);
    const expected = parseClientHello(withSni);
    for (let cut = 1; cut < handshake.length; cut++) {
      const twoRecords = records(handshake, [cut]);
      assert.deepEqual(parseClientHello(twoRecords), expected, `cut at ${cut}`);
      assert.deepEqual(parseClientHello(twoRecords.subarray(0, twoRecords.length - 1)), {
        state: 'incomplete',
      });
    }
  });

  test('one byte per record still reassembles', () => {
    const tiny = records(handshakeOf(withSni), 1);
    assert.deepEqual(parseClientHello(tiny), parseClientHello(withSni));
  });

  test('no SNI when connecting to an IP address; no ALPN when none is offered', async () => {
    const bare = await captureNodeHello({});
    assert.deepEqual(parseClientHello(bare), { state: 'complete', alpn: [] });
  });

  test('the server name as given by the client is lowercased', async () => {
    const mixed = await captureNodeHello({ servername: 'Mixed.Example.COM', ALPNProtocols: ['http/1.1'] });
    assert.deepEqual(parseClientHello(mixed), {
      state: 'complete',
      serverName: 'mixed.example.com',
      alpn: ['http/1.1'],
    });
  });

  test('openssl s_client', { skip: hasOpenssl ? false : 'openssl is not installed' }, async () => {
    const flight = await captureOpensslHello('openssl.example', 'h2,http/1.1');
    assert.deepEqual(parseClientHello(flight), {
      state: 'complete',
      serverName: 'openssl.example',
      alpn: ['h2', 'http/1.1'],
    });
  });
});

describe('parseClientHello: constructed hellos', () => {
  test('a hello without extensions (pre-TLS 1.2 style)', () => {
    assert.deepEqual(parseClientHello(hello()), { state: 'complete', alpn: [] });
  });

  test('record versions 0x0301-0x0304 are accepted', () => {
    const handshake = handshakeMessage(helloBody([sniExtension([0, 'v.example'])]));
    for (const version of [0x0301, 0x0302, 0x0303, 0x0304]) {
      assert.equal(parseClientHello(records(handshake, 16_384, version)).state, 'complete');
    }
    for (const version of [0x0300, 0x0305, 0x0203, 0x0000]) {
      assertNotTls(parseClientHello(records(handshake, 16_384, version)), /version/);
      // Rejected as soon as the version bytes arrive.
      assertNotTls(parseClientHello(records(handshake, 16_384, version).subarray(0, 3)));
    }
  });

  test('a handshake message longer than one record', () => {
    const big = hello([sniExtension([0, 'big.example']), paddingExtension(20_000), alpnExtension('h2')]);
    assert.ok(big.length > 20_000 && big[3] === 0x40 && big[4] === 0x00, 'first record is full (2^14)');
    assert.deepEqual(parseClientHello(big), { state: 'complete', serverName: 'big.example', alpn: ['h2'] });
    assert.deepEqual(parseClientHello(big.subarray(0, 16_389)), { state: 'incomplete' });
  });

  test('the first host_name wins, other name types are skipped, one trailing dot is removed', () => {
    const parse = (...entries: Array<[number, string]>) =>
      parseClientHello(hello([sniExtension(...entries)]));
    assert.equal((parse([0, 'WWW.Example.ORG.']) as { serverName?: string }).serverName, 'www.example.org');
    assert.equal(
      (parse([7, 'other-type'], [0, 'second.example']) as { serverName?: string }).serverName,
      'second.example',
    );
    assert.equal(
      (parse([0, 'first.example'], [0, 'later.example']) as { serverName?: string }).serverName,
      'first.example',
    );
    assert.deepEqual(parse([7, 'only-other-type']), { state: 'complete', alpn: [] });
    assert.equal(
      (parse([0, 'dots..']) as { serverName?: string }).serverName,
      'dots.',
      'only one dot removed',
    );
  });

  test('malformed server names are refused', () => {
    assertNotTls(parseClientHello(hello([sniExtension([0, '.'])])), /dot/);
    assertNotTls(parseClientHello(hello([sniExtension([0, ''])])), /empty host_name/);
    assertNotTls(parseClientHello(hello([sniExtension([0, 'a b.example'])])), /0x20/);
    assertNotTls(parseClientHello(hello([sniExtension([0, Buffer.from('bücher.de')])])), /0xc3/);
    assertNotTls(parseClientHello(hello([extension(0, vec16())])), /empty server_name list/);
    assertNotTls(
      parseClientHello(hello([extension(0, Buffer.concat([vec16(u8(0), vec16(Buffer.from('a'))), u8(1)]))])),
    );
  });

  test('ALPN protocols are returned in order; malformed lists are refused', () => {
    const result = parseClientHello(hello([alpnExtension('h2', 'http/1.1', 'spdy/3\u00ff')]));
    assert.deepEqual(result, { state: 'complete', alpn: ['h2', 'http/1.1', 'spdy/3\u00ff'] });
    assertNotTls(parseClientHello(hello([extension(16, vec16())])), /empty ALPN list/);
    assertNotTls(parseClientHello(hello([extension(16, vec16(u8(0)))])), /empty ALPN protocol/);
    assertNotTls(parseClientHello(hello([extension(16, vec16(u8(5), Buffer.from('h2')))])), /overruns/);
  });

  test('a repeated extension is refused (two SNIs could name different hosts)', () => {
    const twice = hello([sniExtension([0, 'allowed.example']), sniExtension([0, 'evil.example'])]);
    assertNotTls(parseClientHello(twice), /twice/);
  });

  test('length fields that overrun their container are refused, not read past', () => {
    const good = hello([sniExtension([0, 'x.example']), alpnExtension('h2')]);
    // Offsets into `good`: record header 5, handshake header 4, then the body.
    const body = 9;
    const sessionId = body + 2 + 32;
    const cipherSuites = sessionId + 1 + 32;
    const compression = cipherSuites + 2 + 4;
    const extensionsLength = compression + 2;
    const mutate = (offset: number, bytes: number[]): Buffer => {
      const copy = Buffer.from(good);
      copy.set(bytes, offset);
      return copy;
    };
    assertNotTls(parseClientHello(mutate(sessionId, [33])), /session id length 33/);
    assertNotTls(parseClientHello(mutate(cipherSuites, [0xff, 0xfe])), /overruns/);
    assertNotTls(parseClientHello(mutate(cipherSuites, [0, 3])), /even/);
    assertNotTls(parseClientHello(mutate(compression, [0])), /compression/);
    assertNotTls(parseClientHello(mutate(extensionsLength, [0xff, 0xff])), /overruns/);
    assertNotTls(parseClientHello(mutate(extensionsLength, [0, 1])), /after the extensions/);
    assertNotTls(parseClientHello(mutate(extensionsLength + 4, [0xff, 0xff])), /overruns/); // SNI ext length
    assertNotTls(parseClientHello(mutate(extensionsLength + 6, [0xff, 0xff])), /overruns/); // SNI list length
  });

  test('garbage and other protocols are not TLS', () => {
    assertNotTls(parseClientHello(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), /first byte 0x47/);
    assertNotTls(parseClientHello(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n')));
    assertNotTls(parseClientHello(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])), /0x80/); // SSLv2-style hello
    assertNotTls(parseClientHello(Buffer.from([0x17, 0x03, 0x03, 0x00, 0x10])), /0x17/); // application data
    assertNotTls(parseClientHello(Buffer.from([0])), /first byte 0x00/);
    assert.deepEqual(parseClientHello(Buffer.from([0x16])), { state: 'incomplete' });
  });

  test('record and handshake framing errors', () => {
    assertNotTls(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])), /empty handshake record/);
    assertNotTls(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01])), /exceeds 2\^14/);
    const serverHello = records(handshakeMessage(helloBody(undefined), 2));
    assertNotTls(parseClientHello(serverHello), /message type 2/);
    assertNotTls(parseClientHello(serverHello.subarray(0, 6)), /message type 2/);
    // A non-handshake record before the hello is complete.
    const handshake = handshakeMessage(helloBody(undefined));
    const split = records(handshake, [10]);
    const alert = Buffer.from(split);
    alert[5 + 10] = 21;
    assertNotTls(parseClientHello(alert), /record type 21/);
    // A hello declared longer than the buffering bound can never complete.
    assertNotTls(
      parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00])),
      /bound/,
    );
  });

  test('a hello still incomplete at MAX_CLIENT_HELLO_BYTES is given up', () => {
    // One handshake byte per record: 6 wire bytes per byte of a 20000-byte hello never fits in 64 KiB.
    const slow = records(handshakeMessage(helloBody([paddingExtension(20_000)])), 1);
    assert.ok(slow.length > MAX_CLIENT_HELLO_BYTES);
    assert.deepEqual(parseClientHello(slow.subarray(0, MAX_CLIENT_HELLO_BYTES - 1)), { state: 'incomplete' });
    assertNotTls(parseClientHello(slow.subarray(0, MAX_CLIENT_HELLO_BYTES)), /within/);
  });
});

describe('parseClientHello: properties', () => {
  let real: Buffer;
  before(async () => {
    real = await captureNodeHello({ servername: 'fuzz.example', ALPNProtocols: ['h2'] });
  });

  const states = new Set(['incomplete', 'not-tls', 'complete']);

  test('arbitrary bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, asHandshake) => {
        const buf = Buffer.from(bytes);
        if (asHandshake && buf.length > 0) buf[0] = 0x16; // get past the first-byte check more often
        assert.ok(states.has(parseClientHello(buf).state));
      }),
      { numRuns: 2000 },
    );
  });

  test('mutations of a real hello never throw', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        (edits, cut) => {
          const buf = Buffer.from(real);
          for (const [at, value] of edits) buf[at % buf.length] = value;
          assert.ok(states.has(parseClientHello(buf).state));
          assert.ok(states.has(parseClientHello(buf.subarray(0, cut % (buf.length + 1))).state));
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('constructed hellos round-trip SNI and ALPN under any record split', () => {
    const label = fc.stringMatching(/^[a-z0-9-]{1,20}$/);
    fc.assert(
      fc.property(
        fc.option(fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join('.'))),
        fc.array(fc.stringMatching(/^[\x21-\x7e]{1,16}$/), { maxLength: 4 }),
        fc.integer({ min: 1, max: 300 }),
        (serverName, alpn, recordSize) => {
          const extensions = [paddingExtension(3)];
          if (serverName !== null) extensions.push(sniExtension([0, serverName]));
          if (alpn.length > 0) extensions.push(alpnExtension(...alpn));
          const wire = records(handshakeMessage(helloBody(extensions)), recordSize);
          const expected =
            serverName === null ? { state: 'complete', alpn } : { state: 'complete', serverName, alpn };
          assert.deepEqual(parseClientHello(wire), expected);
          assert.deepEqual(parseClientHello(wire.subarray(0, wire.length - 1)), { state: 'incomplete' });
        },
      ),
      { numRuns: 500 },
    );
  });
});
