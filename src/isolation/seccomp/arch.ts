/** Architectures the compiler targets, their audit identifiers and syscall tables. */
import { AARCH64_SYSCALLS } from './tables/aarch64.js';
import { X86_64_SYSCALLS } from './tables/x86_64.js';

export const seccompArches = ['x86_64', 'aarch64'] as const;
export type SeccompArch = (typeof seccompArches)[number];

/** AUDIT_ARCH_* from linux/audit.h: ELF machine | 64-bit | little-endian. */
export const AUDIT_ARCH: Readonly<Record<SeccompArch, number>> = {
  x86_64: 0xc000_003e,
  aarch64: 0xc000_00b7,
};

export const SYSCALL_TABLES: Readonly<Record<SeccompArch, Readonly<Record<string, number>>>> = {
  x86_64: X86_64_SYSCALLS,
  aarch64: AARCH64_SYSCALLS,
};

export class UnsupportedArchError extends Error {
  readonly code = 'SECCOMP_UNSUPPORTED_ARCH';
  constructor(readonly nodeArch: string) {
    super(
      `seccomp filters are generated for x86_64 and aarch64 only, but this host is '${nodeArch}'; ` +
        'run ironcage on one of those, or pass the arch explicitly to compile for another machine',
    );
    this.name = 'UnsupportedArchError';
  }
}

/** The seccomp arch of a Node `process.arch` value. */
export function archFromNode(nodeArch: string = process.arch): SeccompArch {
  if (nodeArch === 'x64') return 'x86_64';
  if (nodeArch === 'arm64') return 'aarch64';
  throw new UnsupportedArchError(nodeArch);
}

/** Number → name for one arch, for messages and listings. */
export function syscallNames(arch: SeccompArch): ReadonlyMap<number, string> {
  return new Map(Object.entries(SYSCALL_TABLES[arch]).map(([name, nr]) => [nr, name]));
}
