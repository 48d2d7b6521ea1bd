/** The real HostView for the mount planner: reads the host filesystem, follows nothing it is not asked to. */
import { lstatSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { HostEntry, HostView } from './mounts.js';

function homeDirectories(): string[] {
  const homes = new Set(['/root', homedir()]);
  try {
    for (const name of readdirSync('/home')) homes.add(join('/home', name));
  } catch {
    // no /home on this host
  }
  return [...homes];
}

export function realHostView(): HostView {
  return {
    homes: homeDirectories(),
    lookup(path: string): HostEntry | null {
      try {
        const st = lstatSync(path);
        if (st.isSymbolicLink()) return { kind: 'symlink', target: readlinkSync(path) };
        return { kind: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other' };
      } catch {
        return null;
      }
    },
    realpath(path: string): string | null {
      try {
        return realpathSync.native(path);
      } catch {
        return null;
      }
    },
  };
}
