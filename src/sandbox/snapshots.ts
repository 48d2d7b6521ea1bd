/**
 * Named workspace checkpoints: host-side copies of `<id>/workspace` under `<id>/snapshots/<name>`, plus a
 * small `<name>.json` record beside each. The caller (Sandbox) freezes the sandbox around every call here, so
 * the copy is consistent and no process inside can race the host's file operations (see ./tree.ts).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SnapshotError } from './errors.js';
import { SNAPSHOT_NAME_PATTERN } from './layout.js';
import { clearDirectory, copyTreeContents } from './tree.js';

export interface SnapshotInfo {
  name: string;
  /** Epoch ms. */
  createdAt: number;
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  /** Entries that were neither file, directory nor symlink (FIFOs, sockets): not part of the snapshot. */
  skipped: string[];
}

function checkName(name: string): void {
  if (!SNAPSHOT_NAME_PATTERN.test(name)) {
    throw new SnapshotError(
      'SNAPSHOT_INVALID_NAME',
      `invalid snapshot name ${JSON.stringify(name)}: use letters, digits, '_', '.', '-' (must start with a letter or digit)`,
    );
  }
}

export function takeSnapshot(workspace: string, snapshotsDir: string, name: string): SnapshotInfo {
  checkName(name);
  const target = join(snapshotsDir, name);
  if (existsSync(target)) {
    throw new SnapshotError(
      'SNAPSHOT_EXISTS',
      `snapshot ${name} already exists; delete it first or pick another name`,
    );
  }
  mkdirSync(snapshotsDir, { recursive: true, mode: 0o700 });
  // Copy into a temporary name and rename: a crash mid-copy never leaves a half snapshot under the real name.
  const partial = join(snapshotsDir, `.partial-${name}-${process.pid}`);
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { mode: 0o700 });
  try {
    const report = copyTreeContents(workspace, partial);
    const info: SnapshotInfo = { name, createdAt: Date.now(), ...report };
    writeFileSync(join(snapshotsDir, `${name}.json`), `${JSON.stringify(info)}\n`, { mode: 0o600 });
    renameSync(partial, target);
    return info;
  } catch (err) {
    rmSync(partial, { recursive: true, force: true });
    throw new SnapshotError('SNAPSHOT_FAILED', `snapshot ${name} failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Replaces the workspace's contents with the snapshot's (the workspace directory itself stays: it is bound). */
export function restoreSnapshot(workspace: string, snapshotsDir: string, name: string): void {
  checkName(name);
  const source = join(snapshotsDir, name);
  if (!existsSync(source)) throw new SnapshotError('SNAPSHOT_NOT_FOUND', `no snapshot named ${name}`);
  try {
    clearDirectory(workspace);
    copyTreeContents(source, workspace);
  } catch (err) {
    throw new SnapshotError('SNAPSHOT_FAILED', `restore of ${name} failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

export function deleteSnapshot(snapshotsDir: string, name: string): void {
  checkName(name);
  const target = join(snapshotsDir, name);
  if (!existsSync(target)) throw new SnapshotError('SNAPSHOT_NOT_FOUND', `no snapshot named ${name}`);
  rmSync(join(snapshotsDir, `${name}.json`), { force: true });
  rmSync(target, { recursive: true, force: true });
}

export function listSnapshots(snapshotsDir: string): SnapshotInfo[] {
  let names: string[];
  try {
    names = readdirSync(snapshotsDir);
  } catch {
    return [];
  }
  const out: SnapshotInfo[] = [];
  for (const file of names) {
    if (!file.endsWith('.json') || file.startsWith('.')) continue;
    const name = file.slice(0, -'.json'.length);
    if (!existsSync(join(snapshotsDir, name))) continue;
    try {
      out.push(JSON.parse(readFileSync(join(snapshotsDir, file), 'utf8')) as SnapshotInfo);
    } catch {
      // a torn record: the snapshot still exists but is listed without numbers
      out.push({ name, createdAt: 0, files: 0, dirs: 0, symlinks: 0, bytes: 0, skipped: [] });
    }
  }
  return out.sort((a, b) => a.createdAt - b.createdAt);
}
