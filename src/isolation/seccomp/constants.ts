/**
 * Kernel ABI numbers the seccomp compiler needs. Values are the same on x86_64 and aarch64 (both use the
 * asm-generic errno, socket and tty ioctl numbering), which the profile tests rely on.
 */

/** seccomp filter return values (include/uapi/linux/seccomp.h); the low 16 bits carry data. */
export const SECCOMP_RET = {
  KILL_PROCESS: 0x8000_0000,
  KILL_THREAD: 0x0000_0000,
  TRAP: 0x0003_0000,
  ERRNO: 0x0005_0000,
  USER_NOTIF: 0x7fc0_0000,
  TRACE: 0x7ff0_0000,
  LOG: 0x7ffc_0000,
  ALLOW: 0x7fff_0000,
} as const;
export const SECCOMP_RET_ACTION_FULL = 0xffff_0000;
export const SECCOMP_RET_DATA = 0x0000_ffff;
/** The kernel clamps ERRNO data to this (include/linux/err.h). */
export const MAX_ERRNO = 4095;

/** struct seccomp_data layout: int nr; u32 arch; u64 instruction_pointer; u64 args[6]. */
export const SECCOMP_DATA = {
  nr: 0,
  arch: 4,
  instructionPointer: 8,
  args: 16,
  size: 64,
} as const;

export const ERRNO = {
  EPERM: 1,
  EINVAL: 22,
  ENOSYS: 38,
  EAFNOSUPPORT: 97,
} as const;

/** The x32 ABI marks its syscall numbers with this bit while reporting AUDIT_ARCH_X86_64. */
export const X32_SYSCALL_BIT = 0x4000_0000;

export const CLONE = {
  NEWTIME: 0x0000_0080, // unshare/clone3 only: in clone() these bits are the exit signal
  VM: 0x0000_0100,
  FS: 0x0000_0200,
  FILES: 0x0000_0400,
  SIGHAND: 0x0000_0800,
  THREAD: 0x0001_0000,
  NEWNS: 0x0002_0000,
  SYSVSEM: 0x0004_0000,
  NEWCGROUP: 0x0200_0000,
  NEWUTS: 0x0400_0000,
  NEWIPC: 0x0800_0000,
  NEWUSER: 0x1000_0000,
  NEWPID: 0x2000_0000,
  NEWNET: 0x4000_0000,
} as const;

/** Every namespace-creating flag valid in clone() (CLONE_NEWTIME is not: that bit is part of CSIGNAL there). */
export const CLONE_NEW_NAMESPACE_FLAGS =
  CLONE.NEWNS | CLONE.NEWCGROUP | CLONE.NEWUTS | CLONE.NEWIPC | CLONE.NEWUSER | CLONE.NEWPID | CLONE.NEWNET;

export const AF = {
  UNIX: 1,
  INET: 2,
  INET6: 10,
  NETLINK: 16,
  PACKET: 17,
  ALG: 38,
  VSOCK: 40,
} as const;
export const NETLINK_ROUTE = 0;

/** tty ioctls (asm-generic/ioctls.h; x86_64 and arm64 share them). */
export const TTY_IOCTL = {
  TIOCSTI: 0x5412,
  TIOCLINUX: 0x541c,
  TIOCCONS: 0x541d,
  TIOCSETD: 0x5423,
} as const;

export const PERSONALITY = {
  PER_LINUX: 0,
  QUERY: 0xffff_ffff,
} as const;
