/** The agent wire protocol (src/agent/protocol.ts): exact layout, round trips, and total decoding of garbage. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  decodeFrame,
  encodeFrame,
  FRAME_TYPES,
  type Frame,
  FrameDecoder,
  HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  ProtocolError,
} from '../../src/agent/protocol.js';

const str = fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !s.includes('\0'));
const strs = fc.array(str, { maxLength: 6 });
const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u64 = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const i64 = fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER });
const bytes = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a));
const stream = fc.constantFrom('stdout' as const, 'stderr' as const);
const flag = fc.boolean();

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    type: fc.constant('hello' as const),
    id: u32,
    version: u32,
    token: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a)),
  }),
  fc.record({
    type: fc.constant('spawn' as const),
    id: u32,
    pty: fc.option(fc.record({ rows: u16, cols: u16 }), { nil: null }),
    stdin: flag,
    cwd: str,
    tag: str,
    argv: strs,
    env: strs,
    rlimits: strs,
    landlock: strs,
    auditExec: flag,
  }),
  fc.record({ type: fc.constant('stdin' as const), id: u32, procId: u32, data: bytes }),
  fc.record({ type: fc.constant('stdinClose' as const), id: u32, procId: u32 }),
  fc.record({ type: fc.constant('signal' as const), id: u32, procId: u32, signal: u32 }),
  fc.record({ type: fc.constant('resize' as const), id: u32, procId: u32, rows: u16, cols: u16 }),
  fc.record({ type: fc.constantFrom('listProcs' as const, 'shutdown' as const, 'ok' as const), id: u32 }),
  fc.record({ type: fc.constant('replay' as const), id: u32, procId: u32, stream, fromOffset: u64 }),
  fc.record({ type: fc.constant('readFile' as const), id: u32, offset: u64, length: u64, path: str }),
  fc.record({
    type: fc.constant('writeFile' as const),
    id: u32,
    append: flag,
    mode: fc.option(u32, { nil: null }),
    path: str,
    data: bytes,
  }),
  fc.record({ type: fc.constant('listDir' as const), id: u32, depth: u32, path: str }),
  fc.record({ type: fc.constant('stat' as const), id: u32, path: str }),
  fc.record({ type: fc.constant('mkdir' as const), id: u32, parents: flag, mode: u32, path: str }),
  fc.record({ type: fc.constant('rename' as const), id: u32, from: str, to: str }),
  fc.record({
    type: fc.constantFrom('remove' as const, 'watch' as const),
    id: u32,
    recursive: flag,
    path: str,
  }),
  fc.record({ type: fc.constant('unwatch' as const), id: u32, watchId: u32 }),
  fc.record({ type: fc.constant('helloOk' as const), id: u32, version: u32, pid: u32, features: u32 }),
  fc.record({ type: fc.constant('error' as const), id: u32, code: str, errno: str, message: str }),
  fc.record({ type: fc.constant('spawned' as const), id: u32, procId: u32, pid: u32 }),
  fc.record({
    type: fc.constant('procList' as const),
    id: u32,
    procs: fc.array(
      fc.record({
        procId: u32,
        pid: u32,
        state: fc.constantFrom('running' as const, 'exit' as const, 'signal' as const),
        value: u32,
        cpuUs: u64,
        maxRssKb: u64,
        stdoutBytes: u64,
        stderrBytes: u64,
        tag: str,
        argv: strs,
      }),
      { maxLength: 4 },
    ),
  }),
  fc.record({ type: fc.constant('replayData' as const), id: u32, offset: u64, lost: u64, data: bytes }),
  fc.record({ type: fc.constant('fileData' as const), id: u32, data: bytes }),
  fc.record({
    type: fc.constant('dirEntries' as const),
    id: u32,
    entries: fc.array(
      fc.record({
        type: fc.constantFrom('file' as const, 'dir' as const, 'symlink' as const, 'other' as const),
        mode: u32,
        size: u64,
        mtimeMs: i64,
        path: str,
      }),
      { maxLength: 5 },
    ),
  }),
  fc.record({ type: fc.constant('watchOk' as const), id: u32, watchId: u32 }),
  fc.record({ type: fc.constant('output' as const), id: u32, procId: u32, stream, offset: u64, data: bytes }),
  fc.record({
    type: fc.constant('exit' as const),
    id: u32,
    procId: u32,
    kind: fc.constantFrom('exit' as const, 'signal' as const),
    value: u32,
    cpuUs: u64,
    maxRssKb: u64,
  }),
  fc.record({
    type: fc.constant('fsEvent' as const),
    id: u32,
    watchId: u32,
    kind: fc.constantFrom(
      'create' as const,
      'write' as const,
      'remove' as const,
      'rename' as const,
      'chmod' as const,
    ),
    path: str,
  }),
  fc.record({
    type: fc.constant('execEvent' as const),
    id: u32,
    procId: u32,
    pid: u32,
    path: str,
    argv: strs,
    unreadable: flag,
    truncated: flag,
  }),
) as fc.Arbitrary<Frame>;

/** fast-check builds null-prototype records; compare structure, not prototypes. */
const plain = (v: unknown): unknown => structuredClone(v);

/** decode must return null (need more), a frame, or throw ProtocolError; nothing else. */
function decodeTotal(buf: Buffer): void {
  try {
    decodeFrame(buf);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
  }
}

describe('agent protocol', () => {
  test('every frame type round-trips: decode(encode(x)) equals x', () => {
    fc.assert(
      fc.property(frameArb, (frame) => {
        const bytes = encodeFrame(frame);
        const decoded = decodeFrame(bytes);
        assert.ok(decoded !== null);
        assert.equal(decoded.bytes, bytes.length);
        assert.deepEqual(plain(decoded.frame), plain(frame));
      }),
      { numRuns: 2000 },
    );
  });

  test('the arbitrary covers every frame type', () => {
    const seen = new Set(fc.sample(frameArb, 3000).map((f) => f.type));
    assert.deepEqual([...seen].sort(), Object.keys(FRAME_TYPES).sort());
  });

  test('the header layout is u32 LE length, u8 type, u32 LE id, and strings end in NUL', () => {
    const bytes = encodeFrame({ type: 'stat', id: 0x01020304, path: 'a/b' });
    assert.deepEqual([...bytes], [4, 0, 0, 0, 0x13, 4, 3, 2, 1, 0x61, 0x2f, 0x62, 0]);
    const out = encodeFrame({
      type: 'output',
      id: 0,
      procId: 7,
      stream: 'stderr',
      offset: 2 ** 40,
      data: Buffer.from('hi'),
    });
    assert.equal(out.toString('hex'), `${'0f000000'}50${'00000000'}${'07000000'}02${'0000000000010000'}6869`);
  });

  test('exec audit: the spawn flag is bit 4 and EXEC_EVENT is u32 proc, u32 pid, u8 flags, str path, strs argv', () => {
    const spawn = encodeFrame({
      type: 'spawn',
      id: 1,
      pty: null,
      stdin: false,
      cwd: '',
      tag: '',
      argv: ['sh'],
      env: [],
      rlimits: [],
      landlock: [],
      auditExec: true,
    });
    assert.equal(spawn.readUInt32LE(HEADER_BYTES), 4);
    const event = encodeFrame({
      type: 'execEvent',
      id: 0,
      procId: 3,
      pid: 0x0102,
      path: '/bin/ls',
      argv: ['ls', '/'],
      unreadable: false,
      truncated: true,
    });
    assert.equal(
      event.toString('hex'),
      `${'1a000000'}53${'00000000'}${'03000000'}${'02010000'}02` +
        `${Buffer.from('/bin/ls\0').toString('hex')}${'02000000'}${Buffer.from('ls\0/\0').toString('hex')}`,
    );
    const flagsAt = HEADER_BYTES + 8;
    const unknownFlag = Buffer.from(event);
    unknownFlag[flagsAt] = 4;
    assert.throws(() => decodeFrame(unknownFlag), ProtocolError);
    const unreadable = Buffer.from(event);
    unreadable[flagsAt] = 1;
    assert.deepEqual(plain(decodeFrame(unreadable)?.frame), {
      type: 'execEvent',
      id: 0,
      procId: 3,
      pid: 0x0102,
      path: '/bin/ls',
      argv: ['ls', '/'],
      unreadable: true,
      truncated: false,
    });
  });

  test('a stream of frames split at every byte boundary decodes to the same frames', () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 64 }),
        (frames, step) => {
          const all = Buffer.concat(frames.map(encodeFrame));
          const decoder = new FrameDecoder();
          const got: Frame[] = [];
          for (let at = 0; at < all.length; at += step)
            got.push(...decoder.push(all.subarray(at, at + step)));
          assert.deepEqual(plain(got), plain(frames));
          assert.equal(decoder.buffered, 0);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('garbage never throws anything but ProtocolError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (a) => decodeTotal(Buffer.from(a))),
      { numRuns: 5000 },
    );
    // Plausible headers (known type, length matching) with random payloads reach the field decoders.
    const types = Object.values(FRAME_TYPES);
    fc.assert(
      fc.property(fc.constantFrom(...types), u32, fc.uint8Array({ maxLength: 120 }), (type, id, payload) => {
        const h = Buffer.alloc(HEADER_BYTES);
        h.writeUInt32LE(payload.length, 0);
        h.writeUInt8(type, 4);
        h.writeUInt32LE(id, 5);
        decodeTotal(Buffer.concat([h, payload]));
      }),
      { numRuns: 10000 },
    );
    // Valid frames with one byte flipped or truncated.
    fc.assert(
      fc.property(frameArb, fc.nat(), u8, (frame, at, value) => {
        const bytes = encodeFrame(frame);
        const flipped = Buffer.from(bytes);
        flipped[at % bytes.length] = value;
        decodeTotal(flipped);
        decodeTotal(bytes.subarray(0, at % bytes.length));
      }),
      { numRuns: 5000 },
    );
  });

  test('malformed frames are refused with ProtocolError', () => {
    const h = (len: number, type: number) => {
      const b = Buffer.alloc(HEADER_BYTES);
      b.writeUInt32LE(len, 0);
      b.writeUInt8(type, 4);
      return b;
    };
    const cases: Record<string, Buffer> = {
      'oversized length': h(MAX_PAYLOAD_BYTES + 1, FRAME_TYPES.ok),
      'unknown type': h(0, 0x7f),
      'trailing bytes': Buffer.concat([h(1, FRAME_TYPES.ok), Buffer.from([0])]),
      'unterminated string': Buffer.concat([h(2, FRAME_TYPES.stat), Buffer.from('ab')]),
      'short token': Buffer.concat([h(8, FRAME_TYPES.hello), Buffer.alloc(8)]),
      'bad stream': Buffer.concat([
        h(17, FRAME_TYPES.output),
        Buffer.from([1, 0, 0, 0, 3]),
        Buffer.alloc(12),
      ]),
      'u64 above 2^53': Buffer.concat([
        h(12, FRAME_TYPES.replayData),
        Buffer.alloc(8, 0xff),
        Buffer.alloc(4),
      ]),
      'write with both append and truncate': Buffer.concat([
        h(10, FRAME_TYPES.writeFile),
        Buffer.from([3, 0, 0, 0, 0, 0, 0, 0, 0x61, 0]),
      ]),
      'string count beyond payload': Buffer.concat([
        h(15, FRAME_TYPES.spawn),
        Buffer.alloc(8),
        Buffer.from([0, 0]),
        Buffer.from([0xff, 0xff, 0xff, 0x7f, 0]),
      ]),
      'flag not 0/1': Buffer.concat([h(6, FRAME_TYPES.remove), Buffer.from([2, 0, 0, 0, 0x61, 0])]),
    };
    for (const [name, buf] of Object.entries(cases)) {
      assert.throws(() => new FrameDecoder().push(buf), ProtocolError, name);
    }
    assert.equal(decodeFrame(h(10, FRAME_TYPES.stat)), null); // incomplete, not wrong
  });

  test('values the wire cannot carry are refused when encoding', () => {
    assert.throws(() => encodeFrame({ type: 'stat', id: 1, path: 'a\0b' }), ProtocolError);
    assert.throws(() => encodeFrame({ type: 'signal', id: 1, procId: -1, signal: 9 }), ProtocolError);
    assert.throws(() => encodeFrame({ type: 'signal', id: 2 ** 32, procId: 1, signal: 9 }), ProtocolError);
    assert.throws(
      () => encodeFrame({ type: 'hello', id: 1, version: 1, token: Buffer.alloc(31) }),
      ProtocolError,
    );
    assert.throws(
      () => encodeFrame({ type: 'fileData', id: 1, data: Buffer.alloc(MAX_PAYLOAD_BYTES + 1) }),
      ProtocolError,
    );
  });
});
