// Precompiles every seccomp profile for every architecture into dist/seccomp/, so a one-shot CLI run reads
// a few hundred bytes instead of loading the syscall tables and the compiler. A test checks they match.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { compileSeccomp, seccompArches } = await import(join(root, 'dist/src/isolation/seccomp/index.js'));
const { seccompProfileNames } = await import(join(root, 'dist/src/policy/schema.js'));
const { seccompBuildPath } = await import(join(root, 'dist/src/isolation/package-files.js'));
for (const profile of seccompProfileNames) {
  for (const arch of seccompArches) {
    const out = join(root, seccompBuildPath(profile, arch));
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, compileSeccomp(profile, arch));
  }
}
