/**
 * Profile → OCI runtime-spec `linux.seccomp` (runc, gVisor runsc) and the Kubernetes Localhost profile file
 * (the same JSON, read by the container runtime from the kubelet's seccomp directory).
 *
 * libseccomp rules are an unordered set: how it resolves two matching rules with different actions is not
 * specified, and it allows one comparison per argument per rule. So the ordered cases of a profile rule are
 * rewritten into DISJOINT rules, each a conjunction of `(arg & mask) == value` tests (SCMP_CMP_MASKED_EQ):
 * at most one rule ever matches a call, whatever the runtime's precedence rules are. Negations ("cmd is not
 * TIOCSTI") become a few prefix patterns; a merge pass keeps their number small.
 */

import type { SeccompProfileName } from '../../policy/schema.js';
import { archFromNode, type SeccompArch, SYSCALL_TABLES } from './arch.js';
import type { SeccompData, SeccompVerdict } from './interpreter.js';
import {
  type ArgMatch,
  PROFILES,
  type RuleAction,
  type SeccompProfile,
  type SyscallRule,
} from './profiles.js';

export type OciAction = 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO';
export type OciOperator =
  | 'SCMP_CMP_NE'
  | 'SCMP_CMP_LT'
  | 'SCMP_CMP_LE'
  | 'SCMP_CMP_EQ'
  | 'SCMP_CMP_GE'
  | 'SCMP_CMP_GT'
  | 'SCMP_CMP_MASKED_EQ';

export interface OciSeccompArg {
  index: number;
  /** For SCMP_CMP_MASKED_EQ: the mask. uint64, hence bigint. */
  value: bigint;
  /** For SCMP_CMP_MASKED_EQ: the value the masked argument must equal. */
  valueTwo?: bigint;
  op: OciOperator;
}

export interface OciSyscallRule {
  names: string[];
  action: OciAction;
  errnoRet?: number;
  args?: OciSeccompArg[];
}

/** The `linux.seccomp` object of an OCI runtime config (config.json). */
export interface OciSeccomp {
  defaultAction: OciAction;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: OciSyscallRule[];
}

export class OciAmbiguityError extends Error {
  readonly code = 'SECCOMP_OCI_AMBIGUOUS';
  constructor(message: string) {
    super(message);
    this.name = 'OciAmbiguityError';
  }
}

export const SCMP_ARCH: Readonly<Record<SeccompArch, string>> = {
  x86_64: 'SCMP_ARCH_X86_64',
  aarch64: 'SCMP_ARCH_AARCH64',
};

const U64 = (1n << 64n) - 1n;

/** A conjunction of `(arg & mask) == value`, at most one entry per argument. Empty = always true. */
type Cube = ReadonlyMap<number, { mask: bigint; value: bigint }>;

const TOP: Cube = new Map();

function intersect(a: Cube, b: Cube): Cube | null {
  const out = new Map(a);
  for (const [arg, t] of b) {
    const s = out.get(arg);
    if (s === undefined) {
      out.set(arg, t);
      continue;
    }
    const overlap = s.mask & t.mask;
    if ((s.value & overlap) !== (t.value & overlap)) return null;
    out.set(arg, { mask: s.mask | t.mask, value: s.value | t.value });
  }
  return out;
}

function cubeOf(matches: readonly ArgMatch[]): Cube | null {
  let cube: Cube | null = TOP;
  for (const m of matches) {
    if (cube === null) return null;
    cube = intersect(cube, new Map([[m.arg, { mask: m.mask, value: m.value }]]));
  }
  return cube;
}

/** Disjoint cubes covering exactly the calls that `cube` does not match. */
function negate(cube: Cube): Cube[] {
  const out: Cube[] = [];
  // ¬(e1 ∧ e2 ∧ …) = ¬e1 ∨ (e1 ∧ ¬e2) ∨ …, and ¬((x & m) == v) splits on the first differing mask bit
  // (highest first): every result agrees with v above that bit and differs at it. Both splits are disjoint.
  let agreed: Cube = TOP;
  for (const [arg, { mask, value }] of cube) {
    let prefix = 0n;
    for (let bit = 63n; bit >= 0n; bit--) {
      const b = 1n << bit;
      if ((mask & b) === 0n) continue;
      const differs = intersect(
        agreed,
        new Map([[arg, { mask: prefix | b, value: (value & prefix) | (~value & b) }]]),
      );
      if (differs !== null) out.push(differs);
      prefix |= b;
    }
    agreed = intersect(agreed, new Map([[arg, { mask, value }]])) ?? agreed;
  }
  return out;
}

/** Merges pairs of cubes that differ in exactly one constrained bit of one argument, until none do. */
function merge(cubes: Cube[]): Cube[] {
  let list = cubes.map((c) => new Map(c));
  for (let changed = true; changed; ) {
    changed = false;
    outer: for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const merged = mergePair(
          list[i] as Map<number, { mask: bigint; value: bigint }>,
          list[j] as Map<number, { mask: bigint; value: bigint }>,
        );
        if (merged === null) continue;
        list = [...list.slice(0, i), merged, ...list.slice(i + 1, j), ...list.slice(j + 1)];
        changed = true;
        break outer;
      }
    }
  }
  return list;
}

function mergePair(
  a: Map<number, { mask: bigint; value: bigint }>,
  b: Map<number, { mask: bigint; value: bigint }>,
): Map<number, { mask: bigint; value: bigint }> | null {
  if (a.size !== b.size) return null;
  let differing: { arg: number; bit: bigint } | null = null;
  for (const [arg, s] of a) {
    const t = b.get(arg);
    if (t === undefined || t.mask !== s.mask) return null;
    const diff = s.value ^ t.value;
    if (diff === 0n) continue;
    if (differing !== null || (diff & (diff - 1n)) !== 0n) return null;
    differing = { arg, bit: diff };
  }
  if (differing === null) return new Map(a); // identical
  const out = new Map(a);
  const s = a.get(differing.arg) as { mask: bigint; value: bigint };
  const mask = s.mask & ~differing.bit;
  if (mask === 0n) out.delete(differing.arg);
  else out.set(differing.arg, { mask, value: s.value & mask });
  return out;
}

/** The rule's ordered cases as disjoint (cube, action) pairs covering every call. */
export function disjointRegions(rule: SyscallRule): { cube: Cube; action: RuleAction }[] {
  const regions: { cube: Cube; action: RuleAction }[] = [];
  let remaining: Cube[] = [TOP];
  for (const c of rule.cases) {
    const caseCube = cubeOf(c.when);
    if (caseCube === null) continue; // can never match
    const negations = negate(caseCube);
    const taken: Cube[] = [];
    const left: Cube[] = [];
    for (const r of remaining) {
      const hit = intersect(r, caseCube);
      if (hit !== null) taken.push(hit);
      for (const n of negations) {
        const miss = intersect(r, n);
        if (miss !== null) left.push(miss);
      }
    }
    for (const cube of merge(taken)) regions.push({ cube, action: c.action });
    remaining = merge(left);
  }
  for (const cube of remaining) regions.push({ cube, action: rule.otherwise });
  return regions;
}

const sameAction = (a: RuleAction, b: RuleAction) =>
  a.kind === b.kind && (a.kind === 'allow' || (b.kind === 'errno' && a.errno === b.errno));

function ociAction(action: RuleAction): Pick<OciSyscallRule, 'action' | 'errnoRet'> {
  return action.kind === 'allow'
    ? { action: 'SCMP_ACT_ALLOW' }
    : { action: 'SCMP_ACT_ERRNO', errnoRet: action.errno };
}

function ociArgs(cube: Cube): OciSeccompArg[] {
  return [...cube]
    .sort(([a], [b]) => a - b)
    .map(([index, { mask, value }]) =>
      mask === U64
        ? { index, value, op: 'SCMP_CMP_EQ' as const }
        : { index, value: mask, valueTwo: value, op: 'SCMP_CMP_MASKED_EQ' as const },
    );
}

/**
 * The profile as OCI `linux.seccomp`, for one or more architectures (default: this host).
 * The allowed set is exactly the BPF's. Differences in refusals: argument-dependent refusals with their own
 * errno (socket families: EAFNOSUPPORT) return the default EPERM; numbers unknown to libseccomp get the
 * runtime's handling (runc answers ENOSYS for syscalls newer than the profile); x32 / foreign-arch calls get
 * its bad-arch action.
 */
export function toOciSeccomp(
  profileName: SeccompProfileName,
  arches: SeccompArch | readonly SeccompArch[] = archFromNode(),
): OciSeccomp {
  const profile: SeccompProfile = PROFILES[profileName];
  const archList = typeof arches === 'string' ? [arches] : [...arches];
  const exists = (syscall: string) => archList.some((a) => syscall in SYSCALL_TABLES[a]);
  if (profile.defaultAction.kind !== 'errno') throw new Error('OCI export expects an errno default action');

  const unconditional = new Map<string, { action: RuleAction; names: string[] }>();
  const conditional: OciSyscallRule[] = [];
  for (const [syscall, rule] of Object.entries(profile.rules).sort(([a], [b]) => a.localeCompare(b))) {
    if (!exists(syscall)) continue;
    for (const { cube, action } of disjointRegions(rule)) {
      // The default action needs no rule (libseccomp refuses rules that repeat it anyway).
      if (sameAction(action, profile.defaultAction)) continue;
      // A conditional refusal with its own errno (socket: EAFNOSUPPORT) would need the complement of the
      // allowed values as dozens of masked rules; it falls back to the default errno instead. The allowed set
      // is unchanged, only the errno of those refusals differs (EPERM instead of EAFNOSUPPORT).
      if (cube.size > 0 && action.kind === 'errno') continue;
      if (cube.size === 0) {
        const key = action.kind === 'allow' ? 'allow' : `errno:${action.errno}`;
        const group = unconditional.get(key) ?? { action, names: [] };
        group.names.push(syscall);
        unconditional.set(key, group);
      } else {
        conditional.push({ names: [syscall], ...ociAction(action), args: ociArgs(cube) });
      }
    }
  }
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: profile.defaultAction.errno,
    architectures: archList.map((a) => SCMP_ARCH[a]),
    syscalls: [
      ...[...unconditional.values()].map((g) => ({ names: g.names, ...ociAction(g.action) })),
      ...conditional,
    ],
  };
}

/** JSON text with uint64 values written exactly (JSON.stringify cannot write bigint). */
export function ociSeccompJson(seccomp: OciSeccomp, indent = 2): string {
  const marker = '\u0000bigint:';
  const text = JSON.stringify(
    seccomp,
    (_key, v) => (typeof v === 'bigint' ? `${marker}${v.toString()}` : v),
    indent,
  );
  return text.replace(/"\\u0000bigint:(\d+)"/g, '$1');
}

/**
 * The Kubernetes `Localhost` seccomp profile for a profile: write `content` to
 * `<kubelet root>/seccomp/<localhostProfile>` on every node and reference it from the pod with
 * `securityContext.seccompProfile: { type: Localhost, localhostProfile: <localhostProfile> }`.
 * Both architectures are listed by default so one file serves mixed node pools.
 */
export function kubernetesLocalhostProfile(
  profileName: SeccompProfileName,
  arches: readonly SeccompArch[] = ['x86_64', 'aarch64'],
): { localhostProfile: string; content: string } {
  return {
    localhostProfile: `profiles/ironcage-${profileName}.json`,
    content: `${ociSeccompJson(toOciSeccomp(profileName, arches))}\n`,
  };
}

/**
 * What a libseccomp-based runtime decides for one call under `seccomp`, assuming rules never overlap with
 * different actions (toOciSeccomp guarantees it; overlap throws). For equivalence tests against the BPF.
 */
export function evaluateOci(seccomp: OciSeccomp, arch: SeccompArch, data: SeccompData): SeccompVerdict {
  if (!seccomp.architectures.includes(SCMP_ARCH[arch])) return { action: 'kill_process' };
  const name = Object.entries(SYSCALL_TABLES[arch]).find(([, nr]) => nr === data.nr)?.[0];
  const args = Array.from({ length: 6 }, (_, i) => (data.args?.[i] ?? 0n) & U64);
  const verdicts = new Map<string, SeccompVerdict>();
  for (const rule of seccomp.syscalls) {
    if (name === undefined || !rule.names.includes(name)) continue;
    if (!(rule.args ?? []).every((a) => compare(a, args[a.index] as bigint))) continue;
    const verdict: SeccompVerdict =
      rule.action === 'SCMP_ACT_ALLOW' ? { action: 'allow' } : { action: 'errno', errno: rule.errnoRet ?? 1 };
    verdicts.set(JSON.stringify(verdict), verdict);
  }
  if (verdicts.size > 1) {
    throw new OciAmbiguityError(`${name}: rules with different actions match the same call`);
  }
  const [only] = verdicts.values();
  if (only !== undefined) return only;
  return seccomp.defaultAction === 'SCMP_ACT_ALLOW'
    ? { action: 'allow' }
    : { action: 'errno', errno: seccomp.defaultErrnoRet ?? 1 };
}

function compare(a: OciSeccompArg, arg: bigint): boolean {
  switch (a.op) {
    case 'SCMP_CMP_MASKED_EQ':
      return (arg & a.value) === (a.valueTwo ?? 0n);
    case 'SCMP_CMP_EQ':
      return arg === a.value;
    case 'SCMP_CMP_NE':
      return arg !== a.value;
    case 'SCMP_CMP_LT':
      return arg < a.value;
    case 'SCMP_CMP_LE':
      return arg <= a.value;
    case 'SCMP_CMP_GT':
      return arg > a.value;
    case 'SCMP_CMP_GE':
      return arg >= a.value;
  }
}
