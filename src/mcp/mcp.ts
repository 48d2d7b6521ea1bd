/**
 * `ironcage mcp`: the MCP server on stdio, over an in-process SandboxManager. stdout carries only the protocol;
 * every log line goes to stderr. When stdin closes (the client went away) or on SIGTERM/SIGINT, the sandboxes
 * this process created are killed and it exits.
 */
import { posix } from 'node:path';
import { parseArgs } from 'node:util';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { defaultStateDir } from '../egress/services.js';
import { type PresetName, presetNames } from '../policy/presets.js';
import { SandboxManager } from '../sandbox/manager.js';
import { createSandboxMcpServer, DEFAULT_MCP_LIMITS } from './server.js';

const HELP = `usage: ironcage mcp [options]

Serves sandbox tools to an MCP client (Claude Desktop, Cursor, ...) over stdio. Sandboxes live as long as
the client's session: they are killed when stdin closes or on SIGTERM.

options:
  --state-dir DIR      where sandboxes keep their state (default: $IRONCAGE_STATE_DIR or the per-user state
                       directory, plus /mcp)
  --max-sandboxes N    sandboxes that may exist at once (default ${DEFAULT_MCP_LIMITS.maxSandboxes})
  --preset P           preset of sandbox_create when the client names none: default | strict
  --allow RULE         let clients ask for network access to destinations within RULE (repeatable:
                       example.com, *.example.com, example.com:443, 10.0.0.0/8). Without it, sandboxes
                       never have network.
`;

export class McpUsageError extends Error {
  readonly code = 'MCP_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'McpUsageError';
  }
}

function log(line: string): void {
  process.stderr.write(`ironcage mcp: ${line}\n`);
}

export async function mcpCommand(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parse>;
  try {
    values = parse(argv);
  } catch (err) {
    log(`${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (values.help) {
    // Help is asked for by a person at a terminal, not by an MCP client.
    process.stderr.write(HELP);
    return 0;
  }
  // A stray console.log anywhere would corrupt the protocol stream.
  console.log = console.error;
  console.info = console.error;
  console.debug = console.error;

  const stateDir = values.stateDir ?? posix.join(defaultStateDir(), 'mcp');
  const manager = new SandboxManager({ stateDir, onStartup: 'reap' });
  try {
    const report = await manager.start();
    if (report.reaped.length + report.cleaned.length > 0)
      log(`removed ${report.reaped.length + report.cleaned.length} sandbox(es) left by an earlier session`);
  } catch (err) {
    log(`cannot start: ${(err as Error).message} (choose another directory with --state-dir)`);
    return 125;
  }
  let mcp: ReturnType<typeof createSandboxMcpServer>;
  try {
    mcp = createSandboxMcpServer(
      manager,
      {
        ...(values.maxSandboxes === undefined ? {} : { maxSandboxes: values.maxSandboxes }),
        ...(values.preset === undefined ? {} : { defaultPreset: values.preset }),
        allow: values.allow,
      },
      { log },
    );
  } catch (err) {
    await manager.close();
    log((err as Error).message);
    return 2;
  }

  const transport = new StdioServerTransport();
  let finish: (reason: string) => void = () => {};
  const done = new Promise<string>((resolve) => {
    finish = resolve;
  });
  const onSignal = (signal: NodeJS.Signals) => finish(signal);
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  process.stdin.once('end', () => finish('stdin closed'));
  process.stdin.once('close', () => finish('stdin closed'));
  transport.onerror = (err) => log(`transport: ${err.message}`);
  await mcp.server.connect(transport);
  log(
    `serving on stdio (state ${manager.stateDir}, at most ${values.maxSandboxes ?? DEFAULT_MCP_LIMITS.maxSandboxes} ` +
      `sandboxes, network ${values.allow.length === 0 ? 'off' : values.allow.join(',')})`,
  );

  const reason = await done;
  log(`${reason}: killing ${mcp.sandboxIds().length} sandbox(es) and exiting`);
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  await mcp.close();
  await manager.close();
  await mcp.server.close().catch(() => {});
  process.stdin.destroy();
  return 0;
}

function parse(argv: string[]): {
  help: boolean;
  stateDir?: string;
  maxSandboxes?: number;
  preset?: PresetName;
  allow: string[];
} {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      'state-dir': { type: 'string' },
      'max-sandboxes': { type: 'string' },
      preset: { type: 'string' },
      allow: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new McpUsageError(`unexpected argument '${positionals[0]}'`);
  let maxSandboxes: number | undefined;
  if (values['max-sandboxes'] !== undefined) {
    maxSandboxes = Number(values['max-sandboxes']);
    if (!Number.isInteger(maxSandboxes) || maxSandboxes < 1)
      throw new McpUsageError(`--max-sandboxes takes a positive integer, got '${values['max-sandboxes']}'`);
  }
  const preset = values.preset;
  if (preset !== undefined && !presetNames.includes(preset as PresetName))
    throw new McpUsageError(`--preset takes one of ${presetNames.join(', ')}, got '${preset}'`);
  return {
    help: values.help === true,
    ...(values['state-dir'] === undefined ? {} : { stateDir: values['state-dir'] }),
    ...(maxSandboxes === undefined ? {} : { maxSandboxes }),
    ...(preset === undefined ? {} : { preset: preset as PresetName }),
    allow: values.allow ?? [],
  };
}
