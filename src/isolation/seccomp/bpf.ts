/**
 * A classic-BPF assembler for seccomp: symbolic labels, forward conditional jumps of any distance (the
 * 8-bit jt/jf offsets are widened with `ja` trampolines), and encoding to the `struct sock_filter` array
 * the kernel (and bwrap's `--seccomp FD`) reads.
 */

/** One `struct sock_filter`: u16 code, u8 jt, u8 jf, u32 k. */
export interface SockFilter {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** Opcode fields from linux/filter.h (classic BPF). */
export const BPF = {
  // instruction classes
  LD: 0x00,
  LDX: 0x01,
  ST: 0x02,
  STX: 0x03,
  ALU: 0x04,
  JMP: 0x05,
  RET: 0x06,
  MISC: 0x07,
  // sizes
  W: 0x00,
  H: 0x08,
  B: 0x10,
  // addressing modes
  IMM: 0x00,
  ABS: 0x20,
  IND: 0x40,
  MEM: 0x60,
  LEN: 0x80,
  MSH: 0xa0,
  // ALU operations
  ADD: 0x00,
  SUB: 0x10,
  MUL: 0x20,
  DIV: 0x30,
  OR: 0x40,
  AND: 0x50,
  LSH: 0x60,
  RSH: 0x70,
  NEG: 0x80,
  MOD: 0x90,
  XOR: 0xa0,
  // jumps
  JA: 0x00,
  JEQ: 0x10,
  JGT: 0x20,
  JGE: 0x30,
  JSET: 0x40,
  // operand source
  K: 0x00,
  X: 0x08,
  A: 0x10,
  // misc
  TAX: 0x00,
  TXA: 0x80,
} as const;

/** BPF_MAXINSNS: the kernel refuses longer classic programs. */
export const BPF_MAXINSNS = 4096;
/** Bytes per encoded instruction. */
export const SOCK_FILTER_SIZE = 8;
/** Scratch memory words (BPF_MEMWORDS). */
export const BPF_MEMWORDS = 16;

export class BpfAssemblyError extends Error {
  readonly code = 'SECCOMP_BPF_ASSEMBLY';
  constructor(message: string) {
    super(message);
    this.name = 'BpfAssemblyError';
  }
}

export class BpfProgramTooLongError extends Error {
  readonly code = 'SECCOMP_PROGRAM_TOO_LONG';
  constructor(readonly length: number) {
    super(
      `the seccomp program has ${length} instructions but the kernel accepts at most ${BPF_MAXINSNS}; ` +
        'allow fewer syscalls with argument rules, or merge rules',
    );
    this.name = 'BpfProgramTooLongError';
  }
}

export type CondJump = 'jeq' | 'jgt' | 'jge' | 'jset';
const CONDITION_CODE: Readonly<Record<CondJump, number>> = {
  jeq: BPF.JEQ,
  jgt: BPF.JGT,
  jge: BPF.JGE,
  jset: BPF.JSET,
};

type Item =
  | { kind: 'insn'; code: number; k: number }
  | { kind: 'cond'; code: number; k: number; jt: string; jf: string }
  | { kind: 'ja'; target: string }
  | { kind: 'label'; name: string };

/** Largest offset a conditional jump can encode. */
const MAX_COND_OFFSET = 0xff;

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new BpfAssemblyError(`${what} must be an unsigned 32-bit integer, got ${value}`);
  }
  return value;
}

/**
 * Builds a program from instructions and labels. Jumps are forward only (classic BPF has no backward
 * jumps); a conditional branch left out means "the next instruction".
 */
export class BpfAssembler {
  readonly #items: Item[] = [];
  readonly #labels = new Set<string>();
  #anonymous = 0;

  /** A fresh label name, unique within this program. */
  newLabel(hint = 'L'): string {
    this.#anonymous += 1;
    return `.${hint}#${this.#anonymous}`;
  }

  /** Places `name` at the next instruction. */
  label(name: string): this {
    if (this.#labels.has(name)) throw new BpfAssemblyError(`label '${name}' is defined twice`);
    this.#labels.add(name);
    this.#items.push({ kind: 'label', name });
    return this;
  }

  /** Any non-jump instruction. */
  stmt(code: number, k = 0): this {
    if ((code & 0x07) === BPF.JMP) throw new BpfAssemblyError('use jump() or ja() for jump instructions');
    this.#items.push({ kind: 'insn', code, k: u32(k, 'k') });
    return this;
  }

  /** A = 32-bit word at byte `offset` of the input (struct seccomp_data). */
  loadWord(offset: number): this {
    return this.stmt(BPF.LD | BPF.W | BPF.ABS, offset);
  }

  /** A &= k. */
  and(k: number): this {
    return this.stmt(BPF.ALU | BPF.AND | BPF.K, k);
  }

  /** Return `k` (the seccomp action). */
  ret(k: number): this {
    return this.stmt(BPF.RET | BPF.K, k);
  }

  /** Conditional jump comparing A with the constant k; an omitted target is the next instruction. */
  jump(op: CondJump, k: number, jt?: string, jf?: string): this {
    const next = jt === undefined || jf === undefined ? this.newLabel('next') : undefined;
    this.#items.push({
      kind: 'cond',
      code: BPF.JMP | CONDITION_CODE[op] | BPF.K,
      k: u32(k, 'k'),
      jt: jt ?? (next as string),
      jf: jf ?? (next as string),
    });
    if (next !== undefined) this.label(next);
    return this;
  }

  /** Unconditional jump (32-bit offset). */
  ja(target: string): this {
    this.#items.push({ kind: 'ja', target });
    return this;
  }

  /** Resolves labels, inserts trampolines for far conditional targets, and checks the length limit. */
  assemble(): SockFilter[] {
    const items = this.#items.slice();
    for (const item of items) {
      for (const target of targetsOf(item)) {
        if (!this.#labels.has(target)) throw new BpfAssemblyError(`jump to undefined label '${target}'`);
      }
    }
    let trampolines = 0;
    for (;;) {
      const at = layout(items);
      let changed = false;
      for (let i = 0; i < items.length; i++) {
        const item = items[i] as Item;
        if (item.kind !== 'cond') continue;
        const pc = at.positions[i] as number;
        for (const branch of ['jt', 'jf'] as const) {
          const offset = labelPosition(at, item[branch]) - pc - 1;
          if (offset < 0)
            throw new BpfAssemblyError(`backward jump to '${item[branch]}' (classic BPF jumps forward only)`);
          if (offset <= MAX_COND_OFFSET) continue;
          // Too far for 8 bits: branch to a `ja` placed right after this jump, which carries 32 bits.
          trampolines += 1;
          const hop = `.trampoline#${trampolines}`;
          items.splice(i + 1, 0, { kind: 'label', name: hop }, { kind: 'ja', target: item[branch] });
          items[i] = { ...item, [branch]: hop };
          changed = true;
          break; // positions moved; recompute before looking at anything else
        }
        if (changed) break;
      }
      if (!changed) break;
    }
    const final = layout(items);
    if (final.length > BPF_MAXINSNS) throw new BpfProgramTooLongError(final.length);
    const out: SockFilter[] = [];
    for (let i = 0; i < items.length; i++) {
      const item = items[i] as Item;
      const pc = final.positions[i] as number;
      if (item.kind === 'label') continue;
      if (item.kind === 'insn') out.push({ code: item.code, jt: 0, jf: 0, k: item.k });
      else if (item.kind === 'ja') {
        const offset = labelPosition(final, item.target) - pc - 1;
        if (offset < 0) throw new BpfAssemblyError(`backward jump to '${item.target}'`);
        out.push({ code: BPF.JMP | BPF.JA, jt: 0, jf: 0, k: offset });
      } else {
        out.push({
          code: item.code,
          jt: labelPosition(final, item.jt) - pc - 1,
          jf: labelPosition(final, item.jf) - pc - 1,
          k: item.k,
        });
      }
    }
    return out;
  }
}

function targetsOf(item: Item): string[] {
  if (item.kind === 'cond') return [item.jt, item.jf];
  if (item.kind === 'ja') return [item.target];
  return [];
}

/** Instruction index of every item (labels get the index of the instruction that follows them). */
interface Layout {
  positions: number[];
  labels: Map<string, number>;
  length: number;
}

function layout(items: readonly Item[]): Layout {
  const positions: number[] = [];
  const labels = new Map<string, number>();
  let pc = 0;
  for (const item of items) {
    positions.push(pc);
    if (item.kind === 'label') labels.set(item.name, pc);
    else pc += 1;
  }
  return { positions, labels, length: pc };
}

function labelPosition(at: Layout, name: string): number {
  const pc = at.labels.get(name);
  if (pc === undefined) throw new BpfAssemblyError(`jump to undefined label '${name}'`);
  return pc;
}

/** Encodes instructions as the kernel's struct sock_filter array (little-endian, as on x86_64/aarch64). */
export function encodeProgram(program: readonly SockFilter[]): Buffer {
  if (program.length > BPF_MAXINSNS) throw new BpfProgramTooLongError(program.length);
  const buf = Buffer.alloc(program.length * SOCK_FILTER_SIZE);
  program.forEach((insn, i) => {
    const at = i * SOCK_FILTER_SIZE;
    buf.writeUInt16LE(insn.code, at);
    buf.writeUInt8(insn.jt, at + 2);
    buf.writeUInt8(insn.jf, at + 3);
    buf.writeUInt32LE(insn.k, at + 4);
  });
  return buf;
}

/** The inverse of encodeProgram. */
export function decodeProgram(buf: Uint8Array): SockFilter[] {
  if (buf.length % SOCK_FILTER_SIZE !== 0) {
    throw new BpfAssemblyError(
      `a seccomp program is a multiple of ${SOCK_FILTER_SIZE} bytes, got ${buf.length}`,
    );
  }
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const out: SockFilter[] = [];
  for (let at = 0; at < view.length; at += SOCK_FILTER_SIZE) {
    out.push({
      code: view.readUInt16LE(at),
      jt: view.readUInt8(at + 2),
      jf: view.readUInt8(at + 3),
      k: view.readUInt32LE(at + 4),
    });
  }
  return out;
}
