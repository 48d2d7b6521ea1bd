/** Files the build puts beside the code: the in-sandbox agent and the precompiled seccomp programs. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The package root, seen from dist/src/isolation (tsc output) or dist/bin (the CLI bundle). */
const roots = [join(here, '../../..'), join(here, '../..')];

/** Absolute path of a build output relative to the package root, or null when it was not built. */
export function packageFile(relative: string): string | null {
  for (const root of roots) {
    const candidate = join(root, relative);
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

export const AGENT_BUILD_PATH = 'native/build/ironcage-agent';
export const seccompBuildPath = (profile: string, arch: string) => `dist/seccomp/${profile}-${arch}.bpf`;
