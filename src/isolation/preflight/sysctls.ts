/**
 * Host hardening sysctls. None is required (the sandbox's own namespaces, seccomp filter and dropped
 * capabilities come first), but each is a second wall if a kernel bug gets past the first: report them and
 * warn where the host is weak.
 */
import { type FixContext, sysctlFix } from './fixes.js';
import { parseSysctlInt } from './parse.js';
import type { Check, HostSnapshot } from './types.js';

export interface SysctlRule {
  name: string;
  /** What a weak value allows. */
  meaning: string;
  /** Value at or beyond which the host is fine. */
  recommended: number;
  isWeak: (value: number) => boolean;
  /** How to read the sysctl's absence. */
  absent: { status: 'ok' | 'warn'; detail: string };
}

export const HARDENING_SYSCTLS: readonly SysctlRule[] = [
  {
    name: 'kernel.unprivileged_bpf_disabled',
    meaning: 'unprivileged users may load eBPF programs, a large kernel attack surface (verifier bugs)',
    recommended: 2,
    isWeak: (v) => v === 0,
    absent: { status: 'ok', detail: 'absent: kernel without bpf(2)' },
  },
  {
    name: 'kernel.perf_event_paranoid',
    meaning: 'unprivileged users may profile the kernel, which leaks addresses and side channels',
    recommended: 2,
    isWeak: (v) => v < 2,
    absent: { status: 'ok', detail: 'absent: kernel without perf events' },
  },
  {
    name: 'kernel.dmesg_restrict',
    meaning: 'unprivileged users may read the kernel log, which reveals addresses and hardware details',
    recommended: 1,
    isWeak: (v) => v === 0,
    absent: { status: 'warn', detail: 'absent: the kernel log cannot be restricted' },
  },
  {
    name: 'kernel.kptr_restrict',
    meaning: 'kernel pointers may appear in /proc files, which helps defeat KASLR',
    recommended: 1,
    isWeak: (v) => v === 0,
    absent: { status: 'warn', detail: 'absent: kernel pointers cannot be hidden' },
  },
  {
    name: 'kernel.yama.ptrace_scope',
    meaning: 'any process may ptrace every other process of the same user',
    recommended: 1,
    isWeak: (v) => v === 0,
    absent: {
      status: 'ok',
      detail: 'absent: no Yama LSM; sandboxed processes still cannot see host processes (PID namespace)',
    },
  },
  {
    name: 'fs.protected_symlinks',
    meaning:
      'symlinks in sticky world-writable directories (/tmp) are followed for anyone, enabling TOCTOU attacks',
    recommended: 1,
    isWeak: (v) => v === 0,
    absent: { status: 'warn', detail: 'absent: no symlink protection in sticky directories' },
  },
  {
    name: 'fs.protected_hardlinks',
    meaning: 'users may hardlink files they cannot write (a privilege-escalation primitive)',
    recommended: 1,
    isWeak: (v) => v === 0,
    absent: { status: 'warn', detail: 'absent: no hardlink protection' },
  },
  {
    name: 'vm.unprivileged_userfaultfd',
    meaning:
      'unprivileged code may stall kernel page faults with userfaultfd, widening race windows for exploits',
    recommended: 0,
    isWeak: (v) => v !== 0,
    absent: { status: 'ok', detail: 'absent: kernel without userfaultfd, or older than 5.2' },
  },
  {
    name: 'kernel.io_uring_disabled',
    meaning:
      'io_uring, a frequent source of kernel privilege escalations, is open to all users (1: only io_uring_group, 2: nobody)',
    recommended: 2,
    isWeak: (v) => v === 0,
    absent: {
      status: 'ok',
      detail: 'absent: kernel older than 6.6 or without io_uring; it cannot be switched off',
    },
  },
];

export function evaluateSysctl(rule: SysctlRule, raw: string | null, ctx: FixContext): Check {
  const base = { id: `sysctl.${rule.name}`, title: rule.name, required: false };
  if (raw === null) {
    const { status, detail } = rule.absent;
    return status === 'ok'
      ? { ...base, status, detail }
      : { ...base, status, detail, fix: 'use a distribution kernel (Debian/Ubuntu/Fedora kernels have it)' };
  }
  const value = parseSysctlInt(raw);
  if (value === null) {
    return {
      ...base,
      status: 'warn',
      detail: `unreadable value '${raw.trim()}'`,
      fix: sysctlFix(ctx, rule.name, rule.recommended),
    };
  }
  if (rule.isWeak(value)) {
    return {
      ...base,
      status: 'warn',
      detail: `${value}: ${rule.meaning}`,
      fix: sysctlFix(ctx, rule.name, rule.recommended),
    };
  }
  return { ...base, status: 'ok', detail: `${value}` };
}

export function evaluateSysctls(snap: HostSnapshot, ctx: FixContext): Check[] {
  return HARDENING_SYSCTLS.map((rule) => evaluateSysctl(rule, snap.sysctls[rule.name] ?? null, ctx));
}
