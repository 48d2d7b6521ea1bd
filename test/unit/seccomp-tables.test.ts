import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AARCH64_SYSCALLS } from '../../src/isolation/seccomp/tables/aarch64.js';
import { X86_64_SYSCALLS } from '../../src/isolation/seccomp/tables/x86_64.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

describe('syscall tables', () => {
  test('well-known x86_64 numbers', () => {
    const expected = {
      read: 0,
      write: 1,
      open: 2,
      mmap: 9,
      ioctl: 16,
      clone: 56,
      fork: 57,
      execve: 59,
      ptrace: 101,
    };
    for (const [name, nr] of Object.entries(expected)) assert.equal(X86_64_SYSCALLS[name], nr, name);
    assert.equal(X86_64_SYSCALLS.arch_prctl, 158);
    assert.equal(X86_64_SYSCALLS.io_uring_setup, 425);
    assert.equal(X86_64_SYSCALLS.clone3, 435);
  });

  test('aarch64 follows asm-generic with the arm64 switches', () => {
    const expected = {
      io_setup: 0,
      renameat: 38, // __ARCH_WANT_RENAMEAT
      openat: 56,
      newfstatat: 79, // __ARCH_WANT_NEW_STAT
      fstat: 80,
      sync_file_range: 84, // not the SYNC_FILE_RANGE2 variant
      getrlimit: 163, // __ARCH_WANT_SET_GET_RLIMIT
      setrlimit: 164,
      clone: 220,
      execve: 221,
      mmap: 222,
      clone3: 435, // __ARCH_WANT_SYS_CLONE3
      memfd_secret: 447, // __ARCH_WANT_MEMFD_SECRET
    };
    for (const [name, nr] of Object.entries(expected)) assert.equal(AARCH64_SYSCALLS[name], nr, name);
    for (const absent of [
      'open',
      'stat',
      'fork',
      'arch_prctl',
      'fcntl64',
      'mmap2',
      'sync_file_range2',
      'arch_specific_syscall',
      'syscalls',
    ]) {
      assert.equal(AARCH64_SYSCALLS[absent], undefined, absent);
    }
  });

  test('post-6.1 syscalls share numbers on both architectures', () => {
    for (const [name, nr] of Object.entries({
      cachestat: 451,
      fchmodat2: 452,
      futex_wait: 455,
      mseal: 462,
      file_setattr: 469,
    })) {
      assert.equal(X86_64_SYSCALLS[name], nr, name);
      assert.equal(AARCH64_SYSCALLS[name], nr, name);
    }
  });

  test('numbers are unique per table', () => {
    for (const table of [X86_64_SYSCALLS, AARCH64_SYSCALLS]) {
      const numbers = Object.values(table);
      assert.equal(new Set(numbers).size, numbers.length);
      for (const n of numbers) assert.ok(Number.isInteger(n) && n >= 0 && n < 1024);
    }
  });

  test("the committed tables are what the generator produces from this host's headers", (t) => {
    if (
      !existsSync('/usr/include/asm-generic/unistd.h') ||
      !existsSync('/usr/include/x86_64-linux-gnu/asm/unistd_64.h')
    ) {
      t.skip('Linux UAPI headers (linux-libc-dev) are not installed');
      return;
    }
    // --check exits 1 when a generated file differs; execFileSync throws then.
    execFileSync(process.execPath, [join(root, 'scripts/gen-syscall-tables.mjs'), '--check'], {
      stdio: 'pipe',
    });
  });
});
