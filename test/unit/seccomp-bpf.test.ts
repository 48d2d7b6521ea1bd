import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  BPF,
  BPF_MAXINSNS,
  BpfAssembler,
  BpfAssemblyError,
  BpfProgramTooLongError,
  decodeProgram,
  encodeProgram,
  type SockFilter,
} from '../../src/isolation/seccomp/bpf.js';
import { SECCOMP_RET } from '../../src/isolation/seccomp/constants.js';
import { decodeAction, evaluateSeccomp, runSeccomp } from '../../src/isolation/seccomp/interpreter.js';
import { InvalidSeccompProgramError, verifySeccompProgram } from '../../src/isolation/seccomp/verify.js';

const ARCH = 0xc000_003e;
const errnoRet = (n: number) => (SECCOMP_RET.ERRNO | n) >>> 0;
const ld = (k: number): SockFilter => ({ code: BPF.LD | BPF.W | BPF.ABS, jt: 0, jf: 0, k });
const ret = (k: number): SockFilter => ({ code: BPF.RET | BPF.K, jt: 0, jf: 0, k });

describe('BpfAssembler', () => {
  test('resolves labels and fall-through branches', () => {
    const asm = new BpfAssembler();
    asm.loadWord(0).jump('jeq', 7, 'seven').ret(errnoRet(1)).label('seven').ret(SECCOMP_RET.ALLOW);
    const program = asm.assemble();
    assert.deepEqual(program[1], { code: BPF.JMP | BPF.JEQ | BPF.K, jt: 1, jf: 0, k: 7 });
    assert.deepEqual(evaluateSeccomp(program, { nr: 7, arch: ARCH }), { action: 'allow' });
    assert.deepEqual(evaluateSeccomp(program, { nr: 8, arch: ARCH }), { action: 'errno', errno: 1 });
  });

  test('conditional jumps farther than 255 instructions get ja trampolines, and still go to the right place', () => {
    for (const padding of [254, 255, 256, 300, 1000, 2040]) {
      const asm = new BpfAssembler();
      asm.loadWord(0);
      asm.jump('jeq', 1, 'far_true', 'far_false');
      for (let i = 0; i < padding; i++) asm.ret(errnoRet(99));
      asm.label('far_true').ret(SECCOMP_RET.ALLOW);
      for (let i = 0; i < padding; i++) asm.ret(errnoRet(98));
      asm.label('far_false').ret(errnoRet(5));
      const program = asm.assemble();
      for (const insn of program) assert.ok(insn.jt <= 255 && insn.jf <= 255);
      assert.deepEqual(
        evaluateSeccomp(program, { nr: 1, arch: ARCH }),
        { action: 'allow' },
        `padding ${padding}`,
      );
      assert.deepEqual(evaluateSeccomp(program, { nr: 2, arch: ARCH }), { action: 'errno', errno: 5 });
      const trampolines = program.filter((i) => i.code === (BPF.JMP | BPF.JA)).length;
      assert.equal(trampolines, padding > 254 ? 2 : padding === 254 ? 1 : 0, `padding ${padding}`);
    }
  });

  test('a near branch pushed out of range by another trampoline is widened too', () => {
    // jt is far; jf is exactly 255 away, so the trampoline inserted for jt pushes jf to 256.
    const asm = new BpfAssembler();
    asm.loadWord(0).jump('jeq', 3, 'far', 'edge');
    for (let i = 0; i < 255; i++) asm.ret(errnoRet(90));
    asm.label('edge').ret(errnoRet(4));
    for (let i = 0; i < 400; i++) asm.ret(errnoRet(91));
    asm.label('far').ret(SECCOMP_RET.ALLOW);
    const program = asm.assemble();
    assert.deepEqual(evaluateSeccomp(program, { nr: 3, arch: ARCH }), { action: 'allow' });
    assert.deepEqual(evaluateSeccomp(program, { nr: 4, arch: ARCH }), { action: 'errno', errno: 4 });
  });

  test('random layouts: every target is reached whatever the distances', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 600 }), { minLength: 1, maxLength: 6 }), (gaps) => {
        // A chain of compares nr == i → return errno i+1, with `gaps[i]` filler instructions before each target.
        const asm = new BpfAssembler();
        asm.loadWord(0);
        gaps.forEach((_, i) => {
          asm.jump('jeq', i, `t${i}`);
        });
        asm.ret(errnoRet(4000));
        gaps.forEach((gap, i) => {
          for (let j = 0; j < gap; j++) asm.ret(errnoRet(3000));
          asm.label(`t${i}`).ret(errnoRet(i + 1));
        });
        const program = asm.assemble();
        gaps.forEach((_, i) => {
          assert.deepEqual(evaluateSeccomp(program, { nr: i, arch: ARCH }), {
            action: 'errno',
            errno: i + 1,
          });
        });
        assert.deepEqual(evaluateSeccomp(program, { nr: gaps.length, arch: ARCH }), {
          action: 'errno',
          errno: 4000,
        });
      }),
      { numRuns: 60 },
    );
  });

  test('refuses programs over 4096 instructions with a clear error', () => {
    const asm = new BpfAssembler();
    for (let i = 0; i < BPF_MAXINSNS; i++) asm.ret(SECCOMP_RET.ALLOW);
    assert.equal(asm.assemble().length, BPF_MAXINSNS);
    asm.ret(SECCOMP_RET.ALLOW);
    assert.throws(
      () => asm.assemble(),
      (err: unknown) =>
        err instanceof BpfProgramTooLongError &&
        err.code === 'SECCOMP_PROGRAM_TOO_LONG' &&
        /4097 instructions.*at most 4096/.test(err.message),
    );
  });

  test('refuses undefined labels, duplicate labels, backward jumps and jump opcodes in stmt()', () => {
    assert.throws(() => new BpfAssembler().ja('nowhere').assemble(), BpfAssemblyError);
    assert.throws(() => new BpfAssembler().label('a').label('a'), BpfAssemblyError);
    const back = new BpfAssembler().label('top').loadWord(0).jump('jeq', 1, 'top').ret(0);
    assert.throws(() => back.assemble(), /backward jump/);
    assert.throws(() => new BpfAssembler().stmt(BPF.JMP | BPF.JA, 0), BpfAssemblyError);
    assert.throws(() => new BpfAssembler().ret(2 ** 32), BpfAssemblyError);
  });

  test('encodes struct sock_filter little-endian and decodes back', () => {
    const program: SockFilter[] = [ld(4), { code: 0x15, jt: 1, jf: 2, k: 0xc000_003e }, ret(0x7fff_0000)];
    const bytes = encodeProgram(program);
    assert.equal(bytes.length, 24);
    assert.deepEqual([...bytes.subarray(8, 16)], [0x15, 0x00, 0x01, 0x02, 0x3e, 0x00, 0x00, 0xc0]);
    assert.deepEqual(decodeProgram(bytes), program);
    assert.throws(() => decodeProgram(Buffer.alloc(7)), BpfAssemblyError);
  });
});

describe('verifySeccompProgram (the kernel load-time checks)', () => {
  const bad: [string, SockFilter[], RegExp][] = [
    ['empty', [], /length 0/],
    ['no final return', [ld(0)], /must end with a return/],
    ['unaligned load', [ld(2), ret(0)], /aligned word/],
    ['load past seccomp_data', [ld(64), ret(0)], /aligned word/],
    ['packet byte load', [{ code: BPF.LD | BPF.B | BPF.ABS, jt: 0, jf: 0, k: 0 }, ret(0)], /not allowed/],
    ['MOD is not seccomp', [{ code: BPF.ALU | BPF.MOD | BPF.K, jt: 0, jf: 0, k: 3 }, ret(0)], /not allowed/],
    [
      'division by constant zero',
      [{ code: BPF.ALU | BPF.DIV | BPF.K, jt: 0, jf: 0, k: 0 }, ret(0)],
      /division/,
    ],
    ['jump past the end', [{ code: BPF.JMP | BPF.JEQ | BPF.K, jt: 5, jf: 0, k: 0 }, ret(0)], /past the end/],
    ['ja past the end', [{ code: BPF.JMP | BPF.JA, jt: 0, jf: 0, k: 1 }, ret(0)], /past the end/],
    ['scratch index 16', [{ code: BPF.ST, jt: 0, jf: 0, k: 16 }, ret(0)], /scratch memory index/],
    ['read before store', [{ code: BPF.LD | BPF.MEM, jt: 0, jf: 0, k: 3 }, ret(0)], /before any store/],
    [
      'store on one path only',
      [
        ld(0),
        { code: BPF.JMP | BPF.JEQ | BPF.K, jt: 0, jf: 1, k: 1 },
        { code: BPF.ST, jt: 0, jf: 0, k: 2 },
        { code: BPF.LD | BPF.MEM, jt: 0, jf: 0, k: 2 },
        ret(0),
      ],
      /before any store/,
    ],
  ];
  for (const [name, program, message] of bad) {
    test(`refuses: ${name}`, () => {
      assert.throws(
        () => verifySeccompProgram(program),
        (err: unknown) => err instanceof InvalidSeccompProgramError && message.test(err.message),
      );
    });
  }

  test('refuses programs longer than BPF_MAXINSNS', () => {
    assert.throws(() => verifySeccompProgram(new Array(BPF_MAXINSNS + 1).fill(ret(0))), /length 4097/);
  });
});

describe('interpreter semantics', () => {
  const insn = (code: number, k = 0, jt = 0, jf = 0): SockFilter => ({ code, jt, jf, k });

  test('32-bit ALU wraps like the kernel: add, sub, mul, div, or, xor, shifts, neg', () => {
    const cases: [number, number, number, number][] = [
      [BPF.ADD, 0xffff_ffff, 2, 1],
      [BPF.SUB, 1, 2, 0xffff_ffff],
      [BPF.MUL, 0x1_0001, 0x1_0001, 0x0002_0001],
      [BPF.DIV, 0xffff_ffff, 16, 0x0fff_ffff],
      [BPF.OR, 0xf0, 0x0f, 0xff],
      [BPF.XOR, 0xff, 0x0f, 0xf0],
      [BPF.AND, 0xff, 0x0f, 0x0f],
      [BPF.LSH, 0x8000_0001, 1, 2],
      [BPF.RSH, 0x8000_0000, 31, 1],
    ];
    for (const [operation, a, k, expected] of cases) {
      // A = a (LD IMM), A op= k, then RET A: the verdict's raw value is A.
      const program = [
        insn(BPF.LD | BPF.IMM, a),
        insn(BPF.ALU | operation | BPF.K, k),
        insn(BPF.RET | BPF.A),
      ];
      assert.equal(
        runSeccomp(program, { nr: 0, arch: 0 }).returned,
        expected,
        `op 0x${operation.toString(16)}`,
      );
      // Same through X.
      const viaX = [
        insn(BPF.LDX | BPF.IMM, k),
        insn(BPF.LD | BPF.IMM, a),
        insn(BPF.ALU | operation | BPF.X),
        insn(BPF.RET | BPF.A),
      ];
      assert.equal(runSeccomp(viaX, { nr: 0, arch: 0 }).returned, expected);
    }
    const neg = [insn(BPF.LD | BPF.IMM, 1), insn(BPF.ALU | BPF.NEG), insn(BPF.RET | BPF.A)];
    assert.equal(runSeccomp(neg, { nr: 0, arch: 0 }).returned, 0xffff_ffff);
  });

  test('division by a zero X register ends the program with 0 (SECCOMP_RET_KILL_THREAD)', () => {
    const program = [
      insn(BPF.LDX | BPF.IMM, 0),
      insn(BPF.LD | BPF.IMM, 5),
      insn(BPF.ALU | BPF.DIV | BPF.X),
      ret(1),
    ];
    assert.deepEqual(evaluateSeccomp(program, { nr: 0, arch: 0 }), { action: 'kill_thread' });
  });

  test('scratch memory, TAX/TXA, LEN loads and X-operand jumps', () => {
    const program = [
      insn(BPF.LD | BPF.W | BPF.LEN), // A = 64
      insn(BPF.ST, 0, 0, 0), // M[0] = 64
      insn(BPF.MISC | BPF.TAX), // X = 64
      insn(BPF.LD | BPF.IMM, 1),
      insn(BPF.MISC | BPF.TXA), // A = 64
      insn(BPF.LDX | BPF.MEM, 0), // X = 64
      insn(BPF.JMP | BPF.JEQ | BPF.X, 0, 0, 1),
      ret(SECCOMP_RET.ALLOW),
      ret(0),
    ];
    assert.deepEqual(evaluateSeccomp(program, { nr: 0, arch: 0 }), { action: 'allow' });
  });

  test('jumps compare unsigned: JGT/JGE/JSET', () => {
    const check = (code: number, a: number, k: number) => {
      const program = [insn(BPF.LD | BPF.IMM, a), insn(BPF.JMP | code | BPF.K, k, 0, 1), ret(1), ret(2)];
      return runSeccomp(program, { nr: 0, arch: 0 }).returned === 1;
    };
    assert.equal(check(BPF.JGT, 0x8000_0000, 1), true); // would be false if signed
    assert.equal(check(BPF.JGE, 5, 5), true);
    assert.equal(check(BPF.JGT, 5, 5), false);
    assert.equal(check(BPF.JSET, 0b1010, 0b0100), false);
    assert.equal(check(BPF.JSET, 0b1010, 0b0010), true);
  });

  test('loads read struct seccomp_data little-endian: nr, arch, instruction pointer, both argument words', () => {
    const read = (offset: number) =>
      runSeccomp([ld(offset), insn(BPF.RET | BPF.A)], {
        nr: -1,
        arch: 0xc000_003e,
        instructionPointer: 0x1111_2222_3333_4444n,
        args: [0xaaaa_bbbb_cccc_ddddn, 0n, 0n, 0n, 0n, 0x5555_6666_7777_8888n],
      });
    assert.equal(read(0).returned, 0xffff_ffff);
    assert.equal(read(4).returned, 0xc000_003e);
    assert.equal(read(8).returned, 0x3333_4444);
    assert.equal(read(12).returned, 0x1111_2222);
    assert.equal(read(16).returned, 0xcccc_dddd);
    assert.equal(read(20).returned, 0xaaaa_bbbb);
    assert.equal(read(56).returned, 0x7777_8888);
    assert.equal(read(60).returned, 0x5555_6666);
    assert.equal(read(0).readArguments, false);
    assert.equal(read(16).readArguments, true);
  });

  test('decodes every seccomp action, clamps errno and kills on unknown actions', () => {
    assert.deepEqual(decodeAction(SECCOMP_RET.ALLOW), { action: 'allow' });
    assert.deepEqual(decodeAction(SECCOMP_RET.ERRNO | 13), { action: 'errno', errno: 13 });
    assert.deepEqual(decodeAction(SECCOMP_RET.ERRNO | 0xffff), { action: 'errno', errno: 4095 });
    assert.deepEqual(decodeAction(SECCOMP_RET.KILL_PROCESS), { action: 'kill_process' });
    assert.deepEqual(decodeAction(SECCOMP_RET.KILL_THREAD), { action: 'kill_thread' });
    assert.deepEqual(decodeAction(SECCOMP_RET.TRAP | 7), { action: 'trap', data: 7 });
    assert.deepEqual(decodeAction(SECCOMP_RET.TRACE | 9), { action: 'trace', data: 9 });
    assert.deepEqual(decodeAction(SECCOMP_RET.LOG), { action: 'log' });
    assert.deepEqual(decodeAction(SECCOMP_RET.USER_NOTIF), { action: 'user_notif' });
    assert.deepEqual(decodeAction(0x1234_0000), { action: 'kill_process' });
  });

  test('refuses to run a program the kernel would refuse', () => {
    assert.throws(() => evaluateSeccomp([ld(3), ret(0)], { nr: 0, arch: 0 }), InvalidSeccompProgramError);
  });
});
