import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { inspect } from 'node:util';
import fc from 'fast-check';
import {
  InvalidNeedleError,
  MultiReplacer,
  replaceAll,
  StreamReplacer,
} from '../../src/vault/stream-replace.js';

/** Reference: the plainest possible leftmost-longest replacement over the whole input, byte by byte. */
function reference(input: Buffer, needles: readonly Buffer[], replacement: (i: number) => Buffer): Buffer {
  const order = needles.map((n, i) => ({ n, i })).sort((a, b) => b.n.length - a.n.length || a.i - b.i);
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < input.length) {
    const hit = order.find(({ n }) => input.subarray(pos, pos + n.length).equals(n));
    if (hit) {
      out.push(replacement(hit.i));
      pos += hit.n.length;
    } else {
      out.push(input.subarray(pos, pos + 1));
      pos++;
    }
  }
  return Buffer.concat(out);
}

const replacementFor = (i: number) => Buffer.from(`<${i}>`);

/** Feed the chunks through the synchronous core, checking the hold-back bound after every chunk. */
function runChunks(chunks: readonly Buffer[], needles: readonly Buffer[]): Buffer {
  const r = new MultiReplacer(needles, replacementFor);
  const longest = Math.max(0, ...needles.map((n) => n.length));
  const out: Buffer[] = [];
  for (const c of chunks) {
    out.push(r.write(c));
    assert.ok(r.pendingBytes <= Math.max(0, longest - 1), `held ${r.pendingBytes} bytes`);
  }
  out.push(r.end());
  assert.equal(r.pendingBytes, 0);
  return Buffer.concat(out);
}

/** Split `input` at the given cut points (sorted, may repeat: repeated cuts give empty chunks). */
function cut(input: Buffer, points: readonly number[]): Buffer[] {
  const sorted = [...points].map((p) => p % (input.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const p of sorted) {
    chunks.push(input.subarray(prev, p));
    prev = p;
  }
  chunks.push(input.subarray(prev));
  return chunks;
}

// A small alphabet so needles occur, overlap and half-occur often.
const smallBytes = (min: number, max: number) =>
  fc.array(fc.constantFrom(0x61, 0x62, 0x63), { minLength: min, maxLength: max }).map((a) => Buffer.from(a));

describe('MultiReplacer', () => {
  test('matches the one-shot reference over random inputs, needles and chunkings', () => {
    fc.assert(
      fc.property(
        fc.array(smallBytes(1, 6), { minLength: 1, maxLength: 4 }),
        smallBytes(0, 80),
        fc.array(fc.nat(), { maxLength: 12 }),
        (needles, input, points) => {
          const expected = reference(input, needles, replacementFor);
          assert.deepEqual(runChunks(cut(input, points), needles), expected);
          assert.deepEqual(replaceAll(input, needles, replacementFor), expected);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('a needle split at every offset is still found', () => {
    const needles = [Buffer.from('ironcage_ph_token_abcdef'), Buffer.from('xyz')];
    const input = Buffer.from('head ironcage_ph_token_abcdef mid xyz tail ironcage_ph_token_abcdef');
    const expected = reference(input, needles, replacementFor);
    for (let a = 0; a <= input.length; a++) {
      for (const b of [a, a + 1, a + 7]) {
        assert.deepEqual(
          runChunks(cut(input, [a, Math.min(b, input.length)]), needles),
          expected,
          `cut ${a},${b}`,
        );
      }
    }
    // One byte at a time, with empty chunks in between.
    const bytes = [...input].flatMap((b) => [Buffer.alloc(0), Buffer.from([b])]);
    assert.deepEqual(runChunks(bytes, needles), expected);
  });

  test('overlapping needles: leftmost wins, then the longest at that position', () => {
    const needles = [Buffer.from('ab'), Buffer.from('abcd'), Buffer.from('bc')];
    assert.equal(replaceAll(Buffer.from('xabcdx'), needles, replacementFor).toString(), 'x<1>x');
    assert.equal(replaceAll(Buffer.from('xabcx'), needles, replacementFor).toString(), 'x<0>cx');
    assert.equal(replaceAll(Buffer.from('xbcd'), needles, replacementFor).toString(), 'x<2>d');
    // "abc" arrives, "d" decides: the short match must not be committed before the longer one is ruled out.
    assert.equal(runChunks([Buffer.from('xabc'), Buffer.from('d')], needles).toString(), 'x<1>');
    assert.equal(runChunks([Buffer.from('xabc'), Buffer.from('e')], needles).toString(), 'x<0>ce');
    // Self-overlapping needle.
    assert.equal(replaceAll(Buffer.from('aaaaa'), [Buffer.from('aa')], replacementFor).toString(), '<0><0>a');
  });

  test('refuses an empty needle; no needles passes data through', () => {
    assert.throws(
      () => new MultiReplacer([Buffer.from('a'), Buffer.alloc(0)], replacementFor),
      InvalidNeedleError,
    );
    assert.equal(replaceAll(Buffer.from('abc'), [], replacementFor).toString(), 'abc');
  });

  test('a callback that throws returns nothing of the chunk holding the match', () => {
    const r = new MultiReplacer([Buffer.from('SECRETPH')], () => {
      throw new Error('refused');
    });
    assert.equal(r.write(Buffer.from('clean ')).toString(), 'clean ');
    assert.equal(r.write(Buffer.from('data SECR')).toString(), 'data ');
    assert.throws(() => r.write(Buffer.from('ETPH more')), /refused/);
  });
});

describe('StreamReplacer', () => {
  async function streamThrough(chunks: readonly Buffer[], s: StreamReplacer): Promise<Buffer> {
    const out: Buffer[] = [];
    s.on('data', (d: Buffer) => out.push(d));
    await pipeline(Readable.from(chunks), s);
    return Buffer.concat(out);
  }

  test('as a stream: same output as the reference over random chunkings', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(smallBytes(1, 5), { minLength: 1, maxLength: 3 }),
        smallBytes(0, 60),
        fc.array(fc.nat(), { maxLength: 8 }),
        async (needles, input, points) => {
          const got = await streamThrough(cut(input, points), new StreamReplacer(needles, replacementFor));
          assert.deepEqual(got, reference(input, needles, replacementFor));
        },
      ),
      { numRuns: 300 },
    );
  });

  test('a throwing callback errors the stream before the needle is passed on', async () => {
    const s = new StreamReplacer([Buffer.from('NEEDLE')], () => {
      throw Object.assign(new Error('no'), { code: 'REFUSED' });
    });
    const out: Buffer[] = [];
    s.on('data', (d: Buffer) => out.push(d));
    await assert.rejects(
      pipeline(Readable.from([Buffer.from('before NEE'), Buffer.from('DLE after')]), s),
      (e: unknown) => (e as { code?: string }).code === 'REFUSED',
    );
    const passed = Buffer.concat(out).toString();
    assert.equal(passed.includes('NEE'), false, passed);
    assert.equal(passed, 'before ');
  });

  test('counts matches and does not show its needles when inspected', async () => {
    const s = new StreamReplacer([Buffer.from('hidden-needle-value')], () => Buffer.from('X'));
    const got = await streamThrough([Buffer.from('a hidden-needle-value b hidden-needle-value')], s);
    assert.equal(got.toString(), 'a X b X');
    assert.equal(s.matches, 2);
    assert.equal(inspect(s, { showHidden: true, depth: 10 }).includes('hidden-needle-value'), false);
  });

  test('throughput (logged, not asserted)', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'The quick brown fox jumps over the lazy dog. ');
    const total = 64 * 1024 * 1024;
    const needles = [
      Buffer.from('ghp_0123456789abcdefghijklmnopqrstuvwxyz'),
      Buffer.from('sk-live-abcdefghijklmnopqrstuvwx'),
      Buffer.from('ironcage_ph_token_abcdefghijklmnopqrstuvwxyz'),
    ];
    const s = new StreamReplacer(needles, () => Buffer.from('[redacted]'));
    let bytes = 0;
    s.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    const started = process.hrtime.bigint();
    await pipeline(
      Readable.from(
        (function* () {
          for (let sent = 0; sent < total; sent += chunk.length) yield chunk;
        })(),
      ),
      s,
    );
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    assert.equal(bytes, total);
    console.log(
      `stream-replace: ${(total / 1024 / 1024 / seconds).toFixed(0)} MB/s with 3 needles, 64 KiB chunks`,
    );
  });
});
