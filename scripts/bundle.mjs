// Bundles the CLI into dist/bin/ (one file per lazily loaded command) so `ironcage run` starts fast:
// Node resolves and parses one small module graph instead of dozens of files.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
rmSync(join(root, 'dist/bin'), { recursive: true, force: true });
await build({
  entryPoints: [join(root, 'dist/src/cli/main.js')],
  outdir: join(root, 'dist/bin'),
  bundle: true,
  splitting: true,
  minify: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
  // A native addon cannot be bundled: the server's store loads it from node_modules at run time.
  // pg-native: pg's optional libpq binding, required only if `pg.native` is used (never); not installed.
  external: ['better-sqlite3', 'pg-native'],
  // CommonJS dependencies (fastify) call require() for Node built-ins; an ES module has none of its own.
  banner: {
    js: "import { createRequire as __ironcageRequire } from 'node:module'; const require = __ironcageRequire(import.meta.url);",
  },
});
