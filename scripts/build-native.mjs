// Builds the in-sandbox agent (src/agent/agent.c) with the system C compiler. Static, so it runs in any
// sandbox view without a dynamic loader or libc bound in.
import { spawnSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'src/agent/agent.c');
const output = join(root, 'native/build/ironcage-agent');
const compiler = process.env.CC ?? 'cc';

try {
  if (statSync(output).mtimeMs >= statSync(source).mtimeMs) process.exit(0);
} catch {
  // not built yet
}
mkdirSync(dirname(output), { recursive: true });
const args = ['-static', '-Os', '-s', '-std=c11', '-Wall', '-Wextra', '-Werror', '-o', output, source];
const result = spawnSync(compiler, args, { stdio: 'inherit' });
if (result.error || result.status !== 0) {
  const why = result.error ? result.error.message : `exit code ${result.status}`;
  console.error(
    `ironcage: building the in-sandbox agent failed (${why}).\n` +
      'It needs a C compiler and static libc: on Debian/Ubuntu run `sudo apt-get install gcc libc6-dev`.',
  );
  process.exit(1);
}
