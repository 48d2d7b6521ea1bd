/**
 * The checks the kernel runs when a seccomp filter is loaded (bpf_check_classic + seccomp_check_filter),
 * so a program that would be refused with EINVAL fails here, with a reason, before it reaches bwrap.
 */
import { BPF, BPF_MAXINSNS, BPF_MEMWORDS, type SockFilter } from './bpf.js';
import { SECCOMP_DATA } from './constants.js';

export class InvalidSeccompProgramError extends Error {
  readonly code = 'SECCOMP_PROGRAM_INVALID';
  constructor(
    readonly pc: number,
    reason: string,
  ) {
    super(
      pc >= 0
        ? `invalid seccomp program at instruction ${pc}: ${reason}`
        : `invalid seccomp program: ${reason}`,
    );
    this.name = 'InvalidSeccompProgramError';
  }
}

const op = (...parts: number[]) => parts.reduce((a, b) => a | b, 0);

/** Opcodes seccomp accepts; everything else (packet loads, MOD, MSH, ...) is refused at load time. */
const SECCOMP_OPCODES = new Set<number>([
  op(BPF.LD, BPF.W, BPF.ABS),
  op(BPF.LD, BPF.W, BPF.LEN),
  op(BPF.LDX, BPF.W, BPF.LEN),
  op(BPF.RET, BPF.K),
  op(BPF.RET, BPF.A),
  ...[BPF.ADD, BPF.SUB, BPF.MUL, BPF.DIV, BPF.AND, BPF.OR, BPF.XOR, BPF.LSH, BPF.RSH].flatMap((a) => [
    op(BPF.ALU, a, BPF.K),
    op(BPF.ALU, a, BPF.X),
  ]),
  op(BPF.ALU, BPF.NEG),
  op(BPF.LD, BPF.IMM),
  op(BPF.LDX, BPF.IMM),
  op(BPF.MISC, BPF.TAX),
  op(BPF.MISC, BPF.TXA),
  op(BPF.LD, BPF.MEM),
  op(BPF.LDX, BPF.MEM),
  op(BPF.ST),
  op(BPF.STX),
  op(BPF.JMP, BPF.JA),
  ...[BPF.JEQ, BPF.JGE, BPF.JGT, BPF.JSET].flatMap((j) => [op(BPF.JMP, j, BPF.K), op(BPF.JMP, j, BPF.X)]),
]);

/** Throws InvalidSeccompProgramError unless the kernel would accept `program` as a seccomp filter. */
export function verifySeccompProgram(program: readonly SockFilter[]): void {
  const len = program.length;
  if (len === 0 || len > BPF_MAXINSNS) {
    throw new InvalidSeccompProgramError(-1, `length ${len} is outside 1..${BPF_MAXINSNS}`);
  }
  program.forEach((insn, pc) => {
    const { code, k } = insn;
    if (!SECCOMP_OPCODES.has(code)) {
      throw new InvalidSeccompProgramError(
        pc,
        `opcode 0x${code.toString(16)} is not allowed in seccomp filters`,
      );
    }
    const cls = code & 0x07;
    if (code === op(BPF.LD, BPF.W, BPF.ABS) && (k % 4 !== 0 || k >= SECCOMP_DATA.size)) {
      throw new InvalidSeccompProgramError(
        pc,
        `load offset ${k} is not an aligned word of struct seccomp_data`,
      );
    }
    if (cls === BPF.ALU && (code & 0xf0) === BPF.DIV && (code & BPF.X) === 0 && k === 0) {
      throw new InvalidSeccompProgramError(pc, 'division by constant zero');
    }
    if (cls === BPF.ALU && ((code & 0xf0) === BPF.LSH || (code & 0xf0) === BPF.RSH) && (code & BPF.X) === 0) {
      if (k >= 32) throw new InvalidSeccompProgramError(pc, `shift by ${k} (must be below 32)`);
    }
    const isMem = (code & 0xe0) === BPF.MEM && (cls === BPF.LD || cls === BPF.LDX);
    if ((isMem || cls === BPF.ST || cls === BPF.STX) && k >= BPF_MEMWORDS) {
      throw new InvalidSeccompProgramError(pc, `scratch memory index ${k} (must be below ${BPF_MEMWORDS})`);
    }
    if (cls === BPF.JMP) {
      if ((code & 0xf0) === BPF.JA) {
        if (k >= len - pc - 1) throw new InvalidSeccompProgramError(pc, 'ja jumps past the end');
      } else if (pc + insn.jt + 1 >= len || pc + insn.jf + 1 >= len) {
        throw new InvalidSeccompProgramError(pc, 'conditional jump past the end');
      }
    }
  });
  const last = program[len - 1] as SockFilter;
  if (last.code !== op(BPF.RET, BPF.K) && last.code !== op(BPF.RET, BPF.A)) {
    throw new InvalidSeccompProgramError(len - 1, 'the program must end with a return');
  }
  checkScratchReads(program);
}

/** Every scratch-memory read must follow a store to that word on all paths (as check_load_and_stores). */
function checkScratchReads(program: readonly SockFilter[]): void {
  const ALL = (1 << BPF_MEMWORDS) - 1;
  // Jumps only go forward, so one pass in order sees every predecessor before its successor.
  const incoming: number[] = new Array(program.length).fill(ALL);
  incoming[0] = 0;
  program.forEach((insn, pc) => {
    let valid = incoming[pc] as number;
    const cls = insn.code & 0x07;
    if (cls === BPF.ST || cls === BPF.STX) valid |= 1 << insn.k;
    if (
      (cls === BPF.LD || cls === BPF.LDX) &&
      (insn.code & 0xe0) === BPF.MEM &&
      (valid & (1 << insn.k)) === 0
    ) {
      throw new InvalidSeccompProgramError(pc, `reads scratch word ${insn.k} before any store to it`);
    }
    const flow = (to: number) => {
      if (to < program.length) incoming[to] = (incoming[to] as number) & valid;
    };
    if (cls === BPF.RET) return;
    if (cls === BPF.JMP) {
      if ((insn.code & 0xf0) === BPF.JA) flow(pc + 1 + insn.k);
      else {
        flow(pc + 1 + insn.jt);
        flow(pc + 1 + insn.jf);
      }
      return;
    }
    flow(pc + 1);
  });
}
