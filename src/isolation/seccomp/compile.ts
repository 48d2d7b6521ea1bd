/**
 * Profile → classic BPF. Layout:
 *
 *   A = arch;  A != AUDIT_ARCH_<arch>  → KILL_PROCESS
 *   A = nr;    (x86_64) nr & X32 bit  → ERRNO(x32Errno)
 *   binary search over ranges of syscall numbers with one outcome each:
 *       allow / errno N / default (known, no rule) / unknown (ENOSYS) → RET inline
 *       argument-checked syscall                                     → its own block below
 *   per argument-checked syscall: its cases in order, then its `otherwise` action
 *
 * Only the per-syscall blocks read arguments, so every other number resolves to a constant action, which
 * the kernel's seccomp action cache records after the first call (no filter run at all for allowed calls).
 */
import { AUDIT_ARCH, type SeccompArch, SYSCALL_TABLES } from './arch.js';
import { BpfAssembler, type SockFilter } from './bpf.js';
import { SECCOMP_DATA, SECCOMP_RET, X32_SYSCALL_BIT } from './constants.js';
import type { ArgMatch, RuleAction, SeccompProfile, SyscallRule } from './profiles.js';
import { verifySeccompProgram } from './verify.js';

/** What one syscall number leads to before arguments are looked at. */
type Outcome = { kind: 'ret'; value: number } | { kind: 'args'; syscall: string };

interface Run {
  /** First number of the run; the run ends where the next begins. */
  start: number;
  outcome: Outcome;
}

export function actionValue(action: RuleAction): number {
  return action.kind === 'allow' ? SECCOMP_RET.ALLOW : (SECCOMP_RET.ERRNO | (action.errno & 0xffff)) >>> 0;
}

const errnoValue = (n: number) => (SECCOMP_RET.ERRNO | n) >>> 0;

function outcomeOf(syscall: string, rule: SyscallRule): Outcome {
  if (rule.cases.length === 0) return { kind: 'ret', value: actionValue(rule.otherwise) };
  return { kind: 'args', syscall };
}

const sameOutcome = (a: Outcome, b: Outcome) =>
  a.kind === 'ret' && b.kind === 'ret'
    ? a.value === b.value
    : a.kind === 'args' && b.kind === 'args' && a.syscall === b.syscall;

/** Partitions 0..2^32-1 into runs of numbers with the same outcome. */
export function planRuns(profile: SeccompProfile, arch: SeccompArch): Run[] {
  const table = SYSCALL_TABLES[arch];
  const byNumber = new Map<number, Outcome>();
  const known = { kind: 'ret', value: actionValue(profile.defaultAction) } as const;
  for (const nr of Object.values(table)) byNumber.set(nr, known);
  for (const [syscall, rule] of Object.entries(profile.rules)) {
    const nr = table[syscall];
    if (nr !== undefined) byNumber.set(nr, outcomeOf(syscall, rule));
  }
  const unknown: Outcome = { kind: 'ret', value: errnoValue(profile.unknownErrno) };
  const max = Math.max(...byNumber.keys());
  const runs: Run[] = [];
  for (let nr = 0; nr <= max + 1; nr++) {
    const outcome = byNumber.get(nr) ?? unknown;
    const last = runs.at(-1);
    if (last === undefined || !sameOutcome(last.outcome, outcome)) runs.push({ start: nr, outcome });
  }
  return runs;
}

export interface CompiledProgram {
  instructions: SockFilter[];
  /** Argument-checked syscalls, in the order of their blocks. */
  argumentChecked: string[];
}

export function compileProfile(profile: SeccompProfile, arch: SeccompArch): CompiledProgram {
  const asm = new BpfAssembler();
  const kill = asm.newLabel('kill');
  const argBlocks = new Map<string, string>();

  asm.loadWord(SECCOMP_DATA.arch);
  asm.jump('jeq', AUDIT_ARCH[arch], undefined, kill);
  asm.loadWord(SECCOMP_DATA.nr);
  if (arch === 'x86_64') {
    const x32 = asm.newLabel('x32');
    asm.jump('jset', X32_SYSCALL_BIT, x32, undefined);
    emitSearch(asm, planRuns(profile, arch), argBlocks);
    asm.label(x32).ret(errnoValue(profile.x32Errno));
  } else {
    emitSearch(asm, planRuns(profile, arch), argBlocks);
  }
  for (const [syscall, label] of argBlocks) {
    asm.label(label);
    emitArgumentBlock(asm, profile.rules[syscall] as SyscallRule);
  }
  asm.label(kill).ret(SECCOMP_RET.KILL_PROCESS);

  const instructions = asm.assemble();
  verifySeccompProgram(instructions);
  return { instructions, argumentChecked: [...argBlocks.keys()] };
}

/**
 * Emits a balanced binary search over `runs` on A (the syscall number): internal nodes are `jge start`,
 * leaves return inline or jump to the syscall's argument block.
 */
function emitSearch(asm: BpfAssembler, runs: readonly Run[], argBlocks: Map<string, string>): void {
  const leafTarget = (run: Run): string | null => {
    if (run.outcome.kind === 'ret') return null;
    const { syscall } = run.outcome;
    let label = argBlocks.get(syscall);
    if (label === undefined) {
      label = asm.newLabel(`args_${syscall}`);
      argBlocks.set(syscall, label);
    }
    return label;
  };
  const emitLeaf = (run: Run) => {
    const target = leafTarget(run);
    if (target === null) asm.ret((run.outcome as { value: number }).value);
    else asm.ja(target);
  };
  const node = (lo: number, hi: number) => {
    if (lo === hi) {
      emitLeaf(runs[lo] as Run);
      return;
    }
    const mid = (lo + hi + 1) >> 1; // runs[mid..hi] start at or above runs[mid].start
    const right = asm.newLabel('ge');
    asm.jump('jge', (runs[mid] as Run).start, right, undefined);
    node(lo, mid - 1);
    asm.label(right);
    node(mid, hi);
  };
  node(0, runs.length - 1);
}

/** Cases in order; each case is a chain of word compares that falls to the next case on the first miss. */
function emitArgumentBlock(asm: BpfAssembler, rule: SyscallRule): void {
  for (const c of rule.cases) {
    const miss = asm.newLabel('miss');
    for (const match of c.when) emitMatch(asm, match, miss);
    asm.ret(actionValue(c.action));
    asm.label(miss);
  }
  asm.ret(actionValue(rule.otherwise));
}

const LOW32 = 0xffff_ffffn;

function emitMatch(asm: BpfAssembler, match: ArgMatch, miss: string): void {
  const base = SECCOMP_DATA.args + 8 * match.arg;
  // struct seccomp_data is in host byte order; both targets are little-endian, so the low word comes first.
  const words: { offset: number; mask: number; value: number }[] = [
    { offset: base, mask: Number(match.mask & LOW32), value: Number(match.value & LOW32) },
  ];
  if (match.width === 64) {
    words.push({
      offset: base + 4,
      mask: Number((match.mask >> 32n) & LOW32),
      value: Number((match.value >> 32n) & LOW32),
    });
  }
  for (const w of words) {
    if (w.mask === 0) continue; // nothing to compare in this word
    asm.loadWord(w.offset);
    if (w.mask !== 0xffff_ffff) asm.and(w.mask);
    asm.jump('jeq', w.value, undefined, miss);
  }
}
