/**
 * Runs a seccomp program against one struct seccomp_data the way the kernel does (32-bit A and X, 16 scratch
 * words, unsigned compares, little-endian loads), so tests can check every rule without a kernel.
 */
import { BPF, BPF_MEMWORDS, decodeProgram, type SockFilter } from './bpf.js';
import {
  MAX_ERRNO,
  SECCOMP_DATA,
  SECCOMP_RET,
  SECCOMP_RET_ACTION_FULL,
  SECCOMP_RET_DATA,
} from './constants.js';
import { verifySeccompProgram } from './verify.js';

/** What the kernel hands a filter: the syscall, the arch it was made under, and six raw 64-bit arguments. */
export interface SeccompData {
  nr: number;
  arch: number;
  instructionPointer?: bigint;
  args?: readonly bigint[];
}

export type SeccompVerdict =
  | { action: 'allow' }
  | { action: 'errno'; errno: number }
  | { action: 'kill_process' }
  | { action: 'kill_thread' }
  | { action: 'trap'; data: number }
  | { action: 'log' }
  | { action: 'trace'; data: number }
  | { action: 'user_notif' };

export interface Execution {
  verdict: SeccompVerdict;
  /** The raw 32-bit value the program returned. */
  returned: number;
  /** Instructions executed (a cost measure for tests). */
  steps: number;
  /** Whether the program read any syscall argument or the instruction pointer (defeats the kernel's cache). */
  readArguments: boolean;
}

const U64 = (1n << 64n) - 1n;

/** Serialises seccomp_data exactly as the kernel lays it out on a little-endian machine. */
export function encodeSeccompData(data: SeccompData): Buffer {
  const buf = Buffer.alloc(SECCOMP_DATA.size);
  buf.writeInt32LE(data.nr | 0, SECCOMP_DATA.nr);
  buf.writeUInt32LE(data.arch >>> 0, SECCOMP_DATA.arch);
  buf.writeBigUInt64LE((data.instructionPointer ?? 0n) & U64, SECCOMP_DATA.instructionPointer);
  const args = data.args ?? [];
  if (args.length > 6) throw new RangeError('a syscall has at most six arguments');
  for (let i = 0; i < 6; i++) buf.writeBigUInt64LE((args[i] ?? 0n) & U64, SECCOMP_DATA.args + 8 * i);
  return buf;
}

/** Maps a filter return value to the action the kernel takes. */
export function decodeAction(ret: number): SeccompVerdict {
  const action = (ret & SECCOMP_RET_ACTION_FULL) >>> 0;
  const data = ret & SECCOMP_RET_DATA;
  switch (action) {
    case SECCOMP_RET.ALLOW:
      return { action: 'allow' };
    case SECCOMP_RET.ERRNO:
      return { action: 'errno', errno: Math.min(data, MAX_ERRNO) };
    case SECCOMP_RET.KILL_THREAD:
      return { action: 'kill_thread' };
    case SECCOMP_RET.TRAP:
      return { action: 'trap', data };
    case SECCOMP_RET.LOG:
      return { action: 'log' };
    case SECCOMP_RET.TRACE:
      return { action: 'trace', data };
    case SECCOMP_RET.USER_NOTIF:
      return { action: 'user_notif' };
    default:
      // KILL_PROCESS, and any action value the kernel does not know, end the whole process.
      return { action: 'kill_process' };
  }
}

/**
 * Executes `program` (encoded bytes or decoded instructions) on `data`. The program is first verified like
 * the kernel's loader does, so an invalid program throws instead of producing a verdict.
 */
export function runSeccomp(program: Uint8Array | readonly SockFilter[], data: SeccompData): Execution {
  const insns = program instanceof Uint8Array ? decodeProgram(program) : program;
  verifySeccompProgram(insns);
  return execute(insns, encodeSeccompData(data));
}

/** Shorthand for runSeccomp(...).verdict. */
export function evaluateSeccomp(
  program: Uint8Array | readonly SockFilter[],
  data: SeccompData,
): SeccompVerdict {
  return runSeccomp(program, data).verdict;
}

function execute(insns: readonly SockFilter[], input: Buffer): Execution {
  let a = 0;
  let x = 0;
  const mem = new Uint32Array(BPF_MEMWORDS);
  let readArguments = false;
  let steps = 0;
  let pc = 0;
  for (;;) {
    const insn = insns[pc];
    if (insn === undefined) throw new Error(`seccomp interpreter fell off the program at ${pc}`); // verified: unreachable
    steps += 1;
    pc += 1;
    const { code, k } = insn;
    const cls = code & 0x07;
    switch (cls) {
      case BPF.LD:
      case BPF.LDX: {
        const mode = code & 0xe0;
        let value: number;
        if (mode === BPF.ABS) {
          if (k >= SECCOMP_DATA.instructionPointer) readArguments = true;
          value = input.readUInt32LE(k);
        } else if (mode === BPF.LEN) value = SECCOMP_DATA.size;
        else if (mode === BPF.IMM) value = k;
        else value = mem[k] as number; // MEM
        if (cls === BPF.LD) a = value >>> 0;
        else x = value >>> 0;
        break;
      }
      case BPF.ST:
        mem[k] = a;
        break;
      case BPF.STX:
        mem[k] = x;
        break;
      case BPF.ALU: {
        const operand = (code & BPF.X) !== 0 ? x : k;
        a = alu(code & 0xf0, a, operand);
        if (a < 0) return done(0, steps, readArguments); // division by zero register: the kernel returns 0
        break;
      }
      case BPF.JMP: {
        const jop = code & 0xf0;
        if (jop === BPF.JA) {
          pc += k;
          break;
        }
        const operand = ((code & BPF.X) !== 0 ? x : k) >>> 0;
        let taken: boolean;
        if (jop === BPF.JEQ) taken = a === operand;
        else if (jop === BPF.JGT) taken = a > operand;
        else if (jop === BPF.JGE) taken = a >= operand;
        else taken = (a & operand) !== 0; // JSET
        pc += taken ? insn.jt : insn.jf;
        break;
      }
      case BPF.RET:
        return done((code & BPF.A) !== 0 ? a : k, steps, readArguments);
      case BPF.MISC:
        if ((code & 0xf8) === BPF.TXA) a = x;
        else x = a;
        break;
    }
  }
}

function done(ret: number, steps: number, readArguments: boolean): Execution {
  const returned = ret >>> 0;
  return { verdict: decodeAction(returned), returned, steps, readArguments };
}

/** 32-bit unsigned ALU; returns -1 for a division by zero (which aborts the program with 0). */
function alu(operation: number, a: number, b: number): number {
  switch (operation) {
    case BPF.ADD:
      return (a + b) >>> 0;
    case BPF.SUB:
      return (a - b) >>> 0;
    case BPF.MUL:
      return Math.imul(a, b) >>> 0;
    case BPF.DIV:
      return b === 0 ? -1 : Math.floor(a / b) >>> 0;
    case BPF.AND:
      return (a & b) >>> 0;
    case BPF.OR:
      return (a | b) >>> 0;
    case BPF.XOR:
      return (a ^ b) >>> 0;
    // Shift counts are taken modulo 32, as the kernel's ALU32 shifts by register do.
    case BPF.LSH:
      return (a << (b & 31)) >>> 0;
    case BPF.RSH:
      return a >>> (b & 31);
    case BPF.NEG:
      return -a >>> 0;
    default:
      throw new Error(`unverified ALU operation 0x${operation.toString(16)}`);
  }
}
