/**
 * Host-side operations on a workspace tree that never follow a symlink: every entry is lstat'ed, symlinks are
 * copied as links (never dereferenced), regular files are opened with O_NOFOLLOW and checked to be the very
 * inode that was lstat'ed, and special files (FIFOs, sockets, devices) are skipped rather than opened (a FIFO
 * would block the host). The callers run these only while the sandbox is frozen, so nothing inside can swap
 * an entry between the check and the use; the checks here are the second line.
 */

import type { Stats } from 'node:fs';
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  fchownSync,
  fstatSync,
  futimesSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

export interface CopyReport {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  /** Paths (relative to the tree root) of entries that are not files, directories or symlinks. */
  skipped: string[];
}

export class TreeError extends Error {
  readonly code = 'TREE_CHANGED';
  constructor(message: string) {
    super(message);
    this.name = 'TreeError';
  }
}

const CHUNK = 1 << 20;
const asRoot = process.getuid?.() === 0;

function copyFile(src: string, dst: string, st: Stats, buffer: Buffer): number {
  const inFd = openSync(src, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const opened = fstatSync(inFd);
    if (!opened.isFile() || opened.ino !== st.ino || opened.dev !== st.dev) {
      throw new TreeError(`${src} changed while it was being copied`);
    }
    const outFd = openSync(
      dst,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      st.mode & 0o777,
    );
    let total = 0;
    try {
      for (;;) {
        const n = readSync(inFd, buffer, 0, buffer.length, null);
        if (n === 0) break;
        for (let off = 0; off < n; ) off += writeSync(outFd, buffer, off, n - off);
        total += n;
      }
      if (asRoot) fchownSync(outFd, st.uid, st.gid);
      futimesSync(outFd, st.atime, st.mtime);
    } finally {
      closeSync(outFd);
    }
    return total;
  } finally {
    closeSync(inFd);
  }
}

/**
 * Copies the contents of directory `src` into the existing directory `dst` (which must not contain the same
 * names). Ownership is kept when running as root; modes and mtimes always.
 */
export function copyTreeContents(src: string, dst: string): CopyReport {
  const report: CopyReport = { files: 0, dirs: 0, symlinks: 0, bytes: 0, skipped: [] };
  const buffer = Buffer.allocUnsafe(CHUNK);
  const walk = (from: string, to: string, rel: string) => {
    for (const name of readdirSync(from)) {
      const source = join(from, name);
      const target = join(to, name);
      const relPath = rel === '' ? name : `${rel}/${name}`;
      const st = lstatSync(source);
      if (st.isSymbolicLink()) {
        symlinkSync(readlinkSync(source), target);
        if (asRoot) lchownSync(target, st.uid, st.gid);
        lutimesSync(target, st.atime, st.mtime);
        report.symlinks++;
      } else if (st.isDirectory()) {
        mkdirSync(target, { mode: 0o700 });
        walk(source, target, relPath);
        const after = lstatSync(source);
        if (!after.isDirectory() || after.ino !== st.ino)
          throw new TreeError(`${source} changed during the copy`);
        if (asRoot) chownSync(target, st.uid, st.gid);
        chmodSync(target, st.mode & 0o7777);
        utimesSync(target, st.atime, st.mtime);
        report.dirs++;
      } else if (st.isFile()) {
        report.bytes += copyFile(source, target, st, buffer);
        report.files++;
      } else {
        report.skipped.push(relPath);
      }
    }
  };
  const root = lstatSync(src);
  if (!root.isDirectory()) throw new TreeError(`${src} is not a directory`);
  walk(src, dst, '');
  return report;
}

/** Removes every entry inside `dir` (not `dir` itself: it may be a bind-mount source). Symlinks are unlinked. */
export function clearDirectory(dir: string): void {
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new TreeError(`${dir} is not a directory`);
  for (const name of readdirSync(dir)) {
    // rmSync never follows symlinks: a link is unlinked, a directory is recursed into by lstat.
    rmSync(join(dir, name), { recursive: true, force: true, maxRetries: 2 });
  }
}

/**
 * Bytes allocated to the tree (st_blocks), counted with lstat only: no file is opened, no symlink followed, no
 * other filesystem entered, and a directory whose identity changed while it was read is not counted.
 */
export function diskUsage(
  dir: string,
  options: { maxEntries?: number } = {},
): { bytes: number; complete: boolean } {
  const maxEntries = options.maxEntries ?? 200_000;
  let bytes = 0;
  let entries = 0;
  let complete = true;
  const root = lstatSync(dir);
  if (!root.isDirectory()) throw new TreeError(`${dir} is not a directory`);
  const walk = (path: string, st: Stats) => {
    let names: string[];
    try {
      names = readdirSync(path);
      const after = lstatSync(path);
      if (!after.isDirectory() || after.ino !== st.ino || after.dev !== st.dev) {
        complete = false;
        return;
      }
    } catch {
      complete = false; // vanished while we looked
      return;
    }
    for (const name of names) {
      if (++entries > maxEntries) {
        complete = false;
        return;
      }
      const child = join(path, name);
      let cst: Stats;
      try {
        cst = lstatSync(child);
      } catch {
        continue;
      }
      bytes += cst.blocks * 512;
      if (cst.isDirectory() && cst.dev === root.dev) walk(child, cst);
    }
  };
  walk(dir, root);
  return { bytes, complete };
}
