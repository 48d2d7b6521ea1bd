/**
 * `ironcage serve [--host H] [--port N] [--state-dir DIR] [--database URL]`: the HTTP API over one state
 * directory.
 *
 * <state>/ironcage.db is the store (unless --database / $IRONCAGE_DATABASE_URL names a PostgreSQL database),
 * <state>/sandboxes the sandbox manager's directory (sandboxes a previous server left running are adopted),
 * <state>/ca and <state>/vault the egress services. SIGINT/SIGTERM stop accepting requests, let running ones
 * finish (briefly), and close the manager keeping its sandboxes, so the next `serve` adopts them with their
 * owners (with --on-shutdown kill, every sandbox is killed instead).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultStateDir, openEgressServices } from '../egress/services.js';
import { SandboxManager } from '../sandbox/manager.js';
import { buildApp } from './app.js';
import { ensureAdminKey } from './auth/admin-key.js';
import { MCP_SERVE_OPTIONS, MCP_SERVE_USAGE, type McpFlagValues, mcpOptionsFromFlags } from './mcp-flags.js';
import { DEFAULT_MAX_TERMINALS_PER_KEY } from './routes/pty.js';
import { DATABASE_URL_ENV, describeDatabase, openStore } from './store/open.js';
import type { Store } from './store/types.js';

const USAGE = `usage: ironcage serve [--host H] [--port N] [--state-dir DIR] [--database URL]

  --host H         address to listen on (default 127.0.0.1)
  --port N         TCP port (default $IRONCAGE_PORT or 3000; 0 picks a free one)
  --state-dir DIR  store, sandboxes, CA and vault (default $IRONCAGE_STATE_DIR, /var/lib/ironcage as root,
                   else ~/.local/state/ironcage)
  --database URL   keep keys, ownership, audit and templates in PostgreSQL (postgres://user:pass@host:port/db;
                   default $IRONCAGE_DATABASE_URL, else SQLite in <state-dir>/ironcage.db)
  --log-level L    fatal|error|warn|info|debug|silent (default info); logs are JSON lines on stderr
  --on-shutdown keep|kill
                   on SIGINT/SIGTERM keep the sandboxes for the next start (default) or kill them
  --max-terminals-per-key N
                   terminals (WebSocket PTYs) one API key may have open at once (default ${DEFAULT_MAX_TERMINALS_PER_KEY})
${MCP_SERVE_USAGE}`;

/** How long shutdown waits for running requests (streams included) before cutting them. */
const DRAIN_MS = 10_000;

function parsePort(text: string): number | null {
  if (!/^\d{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port <= 65_535 ? port : null;
}

export async function serveCommand(argv: string[]): Promise<number> {
  let values: {
    host?: string;
    port?: string;
    'state-dir'?: string;
    database?: string;
    'log-level'?: string;
    'max-terminals-per-key'?: string;
    'on-shutdown'?: string;
    help?: boolean;
  } & McpFlagValues;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        'state-dir': { type: 'string' },
        database: { type: 'string' },
        'log-level': { type: 'string' },
        'max-terminals-per-key': { type: 'string' },
        'on-shutdown': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        ...MCP_SERVE_OPTIONS,
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`ironcage serve: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const host = values.host ?? '127.0.0.1';
  const portText = values.port ?? process.env.IRONCAGE_PORT ?? '3000';
  const port = parsePort(portText);
  if (port === null) {
    process.stderr.write(`ironcage serve: invalid port ${JSON.stringify(portText)} (0-65535)\n`);
    return 2;
  }
  const logLevel = values['log-level'] ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    process.stderr.write(`ironcage serve: invalid --log-level ${JSON.stringify(logLevel)}\n`);
    return 2;
  }
  const terminalsText = values['max-terminals-per-key'] ?? String(DEFAULT_MAX_TERMINALS_PER_KEY);
  const maxTerminalsPerKey = /^\d{1,4}$/.test(terminalsText) ? Number(terminalsText) : Number.NaN;
  if (!(maxTerminalsPerKey >= 1)) {
    process.stderr.write(
      `ironcage serve: invalid --max-terminals-per-key ${JSON.stringify(terminalsText)} (1-9999)\n`,
    );
    return 2;
  }
  const onShutdown = values['on-shutdown'] ?? 'keep';
  if (onShutdown !== 'keep' && onShutdown !== 'kill') {
    process.stderr.write(
      `ironcage serve: invalid --on-shutdown ${JSON.stringify(onShutdown)} (keep or kill)\n`,
    );
    return 2;
  }
  let mcp: ReturnType<typeof mcpOptionsFromFlags>;
  try {
    mcp = mcpOptionsFromFlags(values);
  } catch (err) {
    process.stderr.write(`ironcage serve: ${(err as Error).message}\n`);
    return 2;
  }
  const stateDir = values['state-dir'] ?? defaultStateDir();

  try {
    // As root, sandboxes run as another uid whose bwrap must traverse to <state>/sandboxes: o+x, no listing.
    mkdirSync(stateDir, { recursive: true, mode: process.getuid?.() === 0 ? 0o711 : 0o700 });
  } catch (err) {
    process.stderr.write(
      `ironcage serve: cannot create state directory ${stateDir}: ${(err as Error).message}\n`,
    );
    return 1;
  }

  const database = values.database ?? process.env[DATABASE_URL_ENV];
  let store: Store;
  try {
    store = await openStore({ database, stateDir });
  } catch (err) {
    // Store errors name a PostgreSQL database by its redacted URL: no password reaches the terminal.
    process.stderr.write(`ironcage serve: ${(err as Error).message}\n`);
    return 1;
  }
  let manager: SandboxManager | null = null;
  try {
    const admin = await ensureAdminKey(store, stateDir, process.env);
    const services = await openEgressServices(stateDir);
    manager = new SandboxManager({
      stateDir: join(stateDir, 'sandboxes'),
      onStartup: 'adopt',
      egress: services,
    });
    const report = await manager.start();
    const { app, reconciled } = await buildApp({
      manager,
      store,
      services,
      options: { logger: { level: logLevel }, mcp, maxTerminalsPerKey },
    });
    const address = await app.listen({ host, port });
    app.log.info(
      {
        stateDir,
        store: describeDatabase({ database, stateDir }),
        adopted: report.adopted.length,
        reaped: report.reaped.length,
        staleRows: reconciled.staleRows.length,
        unownedKilled: reconciled.unowned.length,
      },
      `ironcage serve listening on ${address}`,
    );
    if (admin.created && admin.source === 'file') {
      // Printed once: later starts find the key in the store (its hash) and never show it again.
      process.stdout.write(
        `\nFirst run: admin API key (shown once; also in ${admin.path}, mode 0600):\n\n  ${admin.key}\n\n` +
          `Use it as \`Authorization: Bearer <key>\`; create tenant keys with POST /v1/keys.\n\n`,
      );
    }
    process.stdout.write(`ironcage serve: listening on ${address} (state ${stateDir})\n`);

    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
    });
    const keep = onShutdown === 'keep';
    process.stderr.write(
      `ironcage serve: ${signal}: shutting down, ${keep ? 'keeping sandboxes for the next start' : 'killing every sandbox'}\n`,
    );
    const drain = setTimeout(() => app.server.closeAllConnections(), DRAIN_MS);
    drain.unref();
    await app.close();
    clearTimeout(drain);
    // Killed sandboxes' ownership rows go at the next start's reconciliation (stale rows are deleted there).
    await manager.close({ keep });
    await store.close();
    return 0;
  } catch (err) {
    process.stderr.write(`ironcage serve: ${(err as Error).message}\n`);
    await manager?.close({ keep: true }).catch(() => {});
    await store.close().catch(() => {});
    return 1;
  }
}
