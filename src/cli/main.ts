#!/usr/bin/env node
/**
 * `ironcage` entry point. Subcommands are imported lazily so `ironcage run` pays only for what it uses.
 */
const USAGE = `usage: ironcage <command> [options]

commands:
  run [options] -- CMD [ARGS...]   run a command in a fresh sandbox (ironcage run --help)
  demo                             run ordinary and hostile commands in sandboxes and show the result
  doctor [--json]                  check this host's isolation features and how to fix what is missing
  serve [options]                  the HTTP API over warm sandboxes, with an embedded SQLite store (ironcage serve --help)
  mcp [options]                    serve sandbox tools to an MCP client over stdio (ironcage mcp --help)
  sandbox <command> [options]      sandboxes on an ironcage server (ironcage sandbox --help)
  secrets <command> [options]      the server's credential vault (ironcage secrets --help)
  version                          print the version
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return (await import('./run.js')).runCommand(rest);
    case 'demo':
      return (await import('./demo.js')).demoCommand();
    case 'doctor':
      return (await import('./doctor.js')).doctorCommand(rest);
    case 'serve':
      return (await import('../server/serve.js')).serveCommand(rest);
    case 'sandbox':
      return (await import('./sandbox.js')).sandboxCommand(rest);
    case 'secrets':
      return (await import('./secrets.js')).secretsCommand(rest);
    case 'mcp':
      return (await import('../mcp/mcp.js')).mcpCommand(rest);
    case 'version':
    case '--version':
      process.stdout.write(`${(await import('../version.js')).VERSION}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`ironcage: unknown command '${command}'\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ironcage: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 125;
  },
);
