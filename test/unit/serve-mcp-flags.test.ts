/** `ironcage serve`'s /mcp flags: parsed into buildApp's mcp option, invalid values refused with exit 2. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseArgs } from 'node:util';
import { MCP_SERVE_OPTIONS, mcpOptionsFromFlags, ServeUsageError } from '../../src/server/mcp-flags.js';
import { serveCommand } from '../../src/server/serve.js';

function flags(argv: string[]) {
  return mcpOptionsFromFlags(parseArgs({ args: argv, options: MCP_SERVE_OPTIONS, strict: true }).values);
}

/** Runs serveCommand with stdout and stderr captured (only for argv that return before starting anything). */
async function serve(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  process.stdout.write = ((chunk: string) => {
    stdout += chunk;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => {
    stderr += chunk;
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await serveCommand(argv), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

describe('mcpOptionsFromFlags', () => {
  test('no flags: the defaults (an empty options object)', () => {
    assert.deepEqual(flags([]), {});
  });

  test('each flag lands in its option, seconds become the units the server takes', () => {
    assert.deepEqual(
      flags([
        '--mcp-max-sessions',
        '10',
        '--mcp-max-sessions-per-key',
        '2',
        '--mcp-session-idle',
        '90',
        '--mcp-max-sandboxes',
        '3',
        '--mcp-sandbox-timeout',
        '600',
        '--mcp-max-sandbox-timeout',
        '3600',
        '--mcp-command-timeout',
        '30',
        '--mcp-max-command-timeout',
        '120',
        '--mcp-preset',
        'strict',
        '--mcp-allow',
        'example.com',
        '--mcp-allow',
        '*.example.org:443',
      ]),
      {
        maxSessions: 10,
        maxSessionsPerKey: 2,
        sessionIdleMs: 90_000,
        limits: {
          maxSandboxes: 3,
          defaultSandboxTimeoutS: 600,
          maxSandboxTimeoutS: 3600,
          defaultCommandTimeoutS: 30,
          maxCommandTimeoutS: 120,
          defaultPreset: 'strict',
          allow: ['example.com', '*.example.org:443'],
        },
      },
    );
  });

  test('--no-mcp disables the endpoint, and refuses other --mcp-* flags beside it', () => {
    assert.equal(flags(['--no-mcp']), false);
    assert.throws(() => flags(['--no-mcp', '--mcp-max-sessions', '3']), /--no-mcp .* --mcp-max-sessions/);
  });

  test('invalid values are refused with a message naming the flag', () => {
    const cases: [string[], RegExp][] = [
      [['--mcp-max-sessions', '0'], /--mcp-max-sessions takes a whole number from 1/],
      [['--mcp-max-sessions=-1'], /--mcp-max-sessions takes a whole number/],
      [['--mcp-max-sessions', '2.5'], /--mcp-max-sessions takes a whole number/],
      [['--mcp-max-sessions', 'many'], /--mcp-max-sessions takes a whole number/],
      [['--mcp-max-sandboxes', ''], /--mcp-max-sandboxes takes a whole number/],
      [['--mcp-session-idle', '1e3'], /--mcp-session-idle takes a whole number/],
      [['--mcp-sandbox-timeout', '99999999'], /--mcp-sandbox-timeout takes a whole number from 1 to 2592000/],
      [['--mcp-preset', 'loose'], /--mcp-preset takes one of .*default/],
      [['--mcp-allow', 'http://example.com/path'], /--mcp-allow "http:\/\/example.com\/path"/],
      [['--mcp-sandbox-timeout', '7200', '--mcp-max-sandbox-timeout', '3600'], /above its maximum/],
      [['--mcp-command-timeout', '700'], /MCP command timeout \(700 s\) is above its maximum \(600 s\)/],
      [['--mcp-max-sessions', '2', '--mcp-max-sessions-per-key', '3'], /per-key \(3\) is above/],
    ];
    for (const [argv, message] of cases) {
      assert.throws(
        () => flags(argv),
        (err: unknown) =>
          err instanceof ServeUsageError && err.code === 'SERVE_USAGE' && message.test(err.message),
        `${argv.join(' ')} should be refused with ${message}`,
      );
    }
  });

  test('a small --mcp-max-sessions alone is fine (it caps the per-key default)', () => {
    assert.deepEqual(flags(['--mcp-max-sessions', '2']), { maxSessions: 2 });
  });
});

describe('serveCommand with /mcp flags', () => {
  test('invalid values exit 2 with a clear message before anything starts', async () => {
    for (const [argv, message] of [
      [['--mcp-max-sessions', '0'], /ironcage serve: --mcp-max-sessions takes a whole number/],
      [['--mcp-sandbox-timeout', 'soon'], /ironcage serve: --mcp-sandbox-timeout takes a whole number/],
      [['--no-mcp', '--mcp-allow', 'example.com'], /ironcage serve: --no-mcp disables \/mcp/],
      [['--mcp-max-sessions'], /ironcage serve: .*--mcp-max-sessions/],
      [['--mcp-bogus', '1'], /ironcage serve: .*--mcp-bogus/],
    ] as [string[], RegExp][]) {
      const result = await serve([...argv, '--state-dir', '/nonexistent/never-created']);
      assert.equal(result.code, 2, `${argv.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
    }
  });

  test('--help lists the /mcp flags', async () => {
    const result = await serve(['--help']);
    assert.equal(result.code, 0);
    for (const flag of ['--no-mcp', '--mcp-max-sessions', '--mcp-sandbox-timeout', '--mcp-allow']) {
      assert.ok(result.stdout.includes(flag), `USAGE lacks ${flag}`);
    }
  });
});
