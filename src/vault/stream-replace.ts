/**
 * Streaming multi-needle search and replace over bytes. Matching is leftmost-longest: at the earliest position
 * where any needle occurs, the longest needle there wins (equal needles: the lowest index), and scanning resumes
 * after it. Output is byte-identical to a one-shot replacement of the whole stream, however it is chunked.
 *
 * Only bytes that could still start a match are held back, so at most (longest needle - 1) bytes are pending
 * between chunks. Candidate positions come from Buffer#indexOf (native memmem), so clean data costs one
 * native scan per needle per chunk.
 *
 * The needles live in private fields: a replacer may be searching for secret values, and a stream that ends
 * up in a log line (util.inspect, JSON) must not print them.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** Called once per match with the needle's index in the constructor's list; returns the replacement, or throws. */
export type MatchCallback = (needleIndex: number) => Buffer;

export class InvalidNeedleError extends Error {
  readonly code = 'INVALID_NEEDLE';
  constructor(readonly index: number) {
    super(`needle ${index} is empty; every needle must be at least one byte`);
    this.name = 'InvalidNeedleError';
  }
}

interface Needle {
  readonly bytes: Buffer;
  readonly index: number;
}

/** The synchronous core: feed chunks, get output; the Transform below and `replaceAll` both use it. */
export class MultiReplacer {
  // Sorted by length, longest first (then by index), so the first needle found at a position is the winner.
  readonly #needles: readonly Needle[];
  readonly #maxLength: number;
  readonly #onMatch: MatchCallback;
  #pending: Buffer = Buffer.alloc(0);
  #matches = 0;

  constructor(needles: readonly Buffer[], onMatch: MatchCallback) {
    needles.forEach((n, i) => {
      if (n.length === 0) throw new InvalidNeedleError(i);
    });
    this.#needles = needles
      .map((n, index) => ({ bytes: Buffer.from(n), index }))
      .sort((a, b) => b.bytes.length - a.bytes.length || a.index - b.index);
    this.#maxLength = this.#needles[0]?.bytes.length ?? 0;
    this.#onMatch = onMatch;
  }

  /** Matches replaced so far. */
  get matches(): number {
    return this.#matches;
  }

  /** Bytes held back because they may be the start of a match; never more than the longest needle - 1. */
  get pendingBytes(): number {
    return this.#pending.length;
  }

  /**
   * Process one chunk; returns the output that is final. If the callback throws, nothing of this chunk is
   * returned (a needle the callback refuses never reaches the output) and the replacer must not be used again.
   */
  write(chunk: Buffer): Buffer {
    if (this.#needles.length === 0) return chunk;
    const buf = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const { out, rest } = this.#scan(buf, false);
    this.#pending = rest;
    return out;
  }

  /** End of input: the held-back bytes, with any matches among them replaced. */
  end(): Buffer {
    const { out } = this.#scan(this.#pending, true);
    this.#pending = Buffer.alloc(0);
    return out;
  }

  #scan(buf: Buffer, final: boolean): { out: Buffer; rest: Buffer } {
    const len = buf.length;
    const partials = final ? [] : this.#partialPositions(buf);
    const next = new Array<number>(this.#needles.length).fill(-2);
    const parts: Buffer[] = [];
    let pos = 0;
    let partialAt = 0;
    for (;;) {
      // The earliest position ≥ pos where a needle may continue past the end: undecided until more data arrives.
      while (partialAt < partials.length && (partials[partialAt] as number) < pos) partialAt++;
      const hold = partials[partialAt] ?? len;
      let best = -1;
      let winner: Needle | undefined;
      for (let i = 0; i < this.#needles.length; i++) {
        const needle = this.#needles[i] as Needle;
        let at = next[i] as number;
        // -1 means "no occurrence after an earlier pos", which stays true for any later pos.
        if (at !== -1 && at < pos) {
          at = buf.indexOf(needle.bytes, pos);
          next[i] = at;
        }
        if (at >= 0 && (best < 0 || at < best)) {
          best = at;
          winner = needle;
        }
      }
      if (winner === undefined || best >= hold) {
        parts.push(buf.subarray(pos, hold));
        return { out: concat(parts), rest: Buffer.from(buf.subarray(hold)) };
      }
      parts.push(buf.subarray(pos, best));
      parts.push(this.#onMatch(winner.index));
      this.#matches++;
      pos = best + winner.bytes.length;
    }
  }

  /** Positions in the last (longest - 1) bytes from which the rest of the buffer is a proper prefix of a needle. */
  #partialPositions(buf: Buffer): number[] {
    const len = buf.length;
    const found: number[] = [];
    for (let p = Math.max(0, len - this.#maxLength + 1); p < len; p++) {
      const tail = len - p;
      const first = buf[p];
      for (const { bytes } of this.#needles) {
        if (bytes.length <= tail) break; // sorted longest first: no later needle can be longer
        if (bytes[0] === first && buf.compare(bytes, 0, tail, p, len) === 0) {
          found.push(p);
          break;
        }
      }
    }
    return found;
  }
}

function concat(parts: Buffer[]): Buffer {
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/** One-shot replacement with the same semantics as the stream. */
export function replaceAll(input: Buffer, needles: readonly Buffer[], onMatch: MatchCallback): Buffer {
  const replacer = new MultiReplacer(needles, onMatch);
  const head = replacer.write(input);
  const tail = replacer.end();
  return tail.length === 0 ? head : Buffer.concat([head, tail]);
}

/** The replacer as a byte stream; an error thrown by the callback destroys the stream with that error. */
export class StreamReplacer extends Transform {
  readonly #replacer: MultiReplacer;

  constructor(needles: readonly Buffer[], onMatch: MatchCallback) {
    super();
    this.#replacer = new MultiReplacer(needles, onMatch);
  }

  get matches(): number {
    return this.#replacer.matches;
  }

  get pendingBytes(): number {
    return this.#replacer.pendingBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let out: Buffer;
    try {
      out = this.#replacer.write(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (out.length > 0) this.push(out);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    let out: Buffer;
    try {
      out = this.#replacer.end();
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (out.length > 0) this.push(out);
    callback();
  }
}
