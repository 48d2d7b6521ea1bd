/**
 * Small synchronous helpers for cgroupfs control files. Sync on purpose: each call is a few µs against
 * kernfs, and creating a sandbox cgroup must cost well under a millisecond.
 */
import { closeSync, constants, openSync, readFileSync, writeSync } from 'node:fs';
import { errnoOf } from './errors.js';

/**
 * Writes a control file. O_WRONLY without O_CREAT: a missing kernel file is an error (ENOENT) instead of a
 * regular file silently created where the kernel should have answered; and write-only files such as
 * cgroup.kill cannot be opened read-write.
 */
export function writeControl(path: string, value: string): void {
  const fd = openSync(path, constants.O_WRONLY);
  try {
    writeSync(fd, value);
  } finally {
    closeSync(fd);
  }
}

/** Reads a control file; null when it does not exist (older kernel, removed cgroup). */
export function readControl(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENODEV') return null;
    throw err;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
