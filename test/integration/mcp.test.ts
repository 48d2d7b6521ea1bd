/**
 * `ironcage mcp` end to end: the SDK's real MCP client spawns the built server over stdio, and every tool call
 * runs in real sandboxes (bwrap, agent, egress proxy). Ends with the shutdown paths (stdin close, SIGTERM)
 * leaving no sandbox process or state behind.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { sleep, tempStateDir } from './sandbox-fixture.js';

// The bundled CLI, exactly what an MCP client configured with `ironcage mcp` starts.
const CLI = fileURLToPath(new URL('../../bin/main.js', import.meta.url));

interface Session {
  client: Client;
  transport: StdioClientTransport;
  stateDir: string;
  stderr: () => string;
  cleanup(): Promise<void>;
}

async function startServer(name: string, args: string[] = []): Promise<Session> {
  const state = tempStateDir(`mcp-${name}`);
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CLI, 'mcp', '--state-dir', state.dir, ...args],
    stderr: 'pipe',
  });
  let log = '';
  transport.stderr?.on('data', (d: Buffer) => {
    log += d.toString();
  });
  const client = new Client({ name: 'ironcage-test', version: '0' });
  await client.connect(transport);
  return {
    client,
    transport,
    stateDir: state.dir,
    stderr: () => log,
    cleanup: async () => {
      await client.close().catch(() => {});
      state.cleanup();
    },
  };
}

async function call(session: Session, name: string, args: Record<string, unknown>): Promise<CallToolResult> {
  return (await session.client.callTool({ name, arguments: args })) as CallToolResult;
}

function text(result: CallToolResult): string {
  return result.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');
}

/** The structured result of a call that must have succeeded. */
async function ok(
  session: Session,
  name: string,
  args: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const result = await call(session, name, args);
  assert.notEqual(result.isError, true, `${name} failed: ${text(result)}`);
  assert.ok(result.structuredContent, `${name} returned no structured content`);
  return result.structuredContent as Record<string, unknown>;
}

async function refused(session: Session, name: string, args: Record<string, unknown>, pattern: RegExp) {
  const result = await call(session, name, args);
  assert.equal(result.isError, true, `${name} should have failed, got ${text(result)}`);
  assert.match(text(result), pattern);
  return result;
}

/** Host pids of a sandbox (bwrap and its agent) from its record in the state directory. */
function sandboxPids(stateDir: string, id: string): number[] {
  const meta = JSON.parse(readFileSync(join(stateDir, 'sandboxes', id, 'meta.json'), 'utf8')) as {
    bwrap: { pid: number };
    init: { pid: number };
  };
  return [meta.bwrap.pid, meta.init.pid];
}

function alive(pid: number): boolean {
  return existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
}

async function waitExit(session: Session, pid: number, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(50)) {
    if (!alive(pid)) return;
  }
  assert.fail(`the server (pid ${pid}) did not exit; log:\n${session.stderr()}`);
}

const TOOLS = [
  'sandbox_create',
  'sandbox_kill',
  'sandbox_list',
  'sandbox_list_files',
  'sandbox_read_file',
  'sandbox_run_code',
  'sandbox_run_command',
  'sandbox_write_file',
];

describe('ironcage mcp over stdio', () => {
  let s: Session;
  before(async () => {
    s = await startServer('main', ['--max-sandboxes', '2', '--allow', '*.example.com']);
  });
  after(async () => {
    await s.cleanup();
  });

  test('lists every tool with a description and an input schema', async () => {
    const { tools } = await s.client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), TOOLS);
    for (const t of tools) {
      assert.ok((t.description ?? '').length > 30, `${t.name} has no useful description`);
      assert.equal(t.inputSchema.type, 'object');
    }
    const run = tools.find((t) => t.name === 'sandbox_run_command');
    assert.deepEqual(Object.keys(run?.inputSchema.properties ?? {}).sort(), [
      'argv',
      'background',
      'command',
      'cwd',
      'sandboxId',
      'timeoutSeconds',
    ]);
    assert.deepEqual(run?.inputSchema.required, ['sandboxId']);
    const code = tools.find((t) => t.name === 'sandbox_run_code');
    const language = (code?.inputSchema.properties ?? {}) as Record<string, { enum?: string[] }>;
    assert.deepEqual(language.language?.enum, ['python', 'node', 'bash']);
  });

  test('create, commands, code, files, limit, kill', async () => {
    const created = await ok(s, 'sandbox_create', {});
    const id = created.sandboxId as string;
    assert.match(id, /^[0-9a-f]{16}$/);
    assert.equal(created.network, 'none');
    assert.equal(created.workdir, '/home/sandbox');

    const shell = await ok(s, 'sandbox_run_command', {
      sandboxId: id,
      command: 'echo hi; echo oops >&2; exit 3',
    });
    assert.equal(shell.exitCode, 3);
    assert.equal(shell.stdout, 'hi\n');
    assert.equal(shell.stderr, 'oops\n');
    assert.equal(typeof shell.durationMs, 'number');
    const uid = await ok(s, 'sandbox_run_command', { sandboxId: id, argv: ['id', '-u'], cwd: '/tmp' });
    assert.equal(uid.exitCode, 0);
    assert.equal(uid.stdout, '1000\n');

    const py = await ok(s, 'sandbox_run_code', {
      sandboxId: id,
      language: 'python',
      code: 'import sys\nprint(6 * 7)\nsys.exit(4)',
    });
    assert.deepEqual([py.exitCode, py.stdout], [4, '42\n']);
    const sh = await ok(s, 'sandbox_run_code', {
      sandboxId: id,
      language: 'bash',
      code: 'echo $((2 + 3)) "$0"',
    });
    assert.equal(sh.exitCode, 0);
    assert.match(sh.stdout as string, /^5 \/tmp\/ironcage-code-[0-9a-f]+\.sh\n$/);
    const js = await ok(s, 'sandbox_run_code', {
      sandboxId: id,
      language: 'node',
      code: 'console.log([1,2].map(x=>x*10).join())',
    });
    assert.equal(js.stdout, '10,20\n');
    // The temporary files are gone again.
    const tmp = await ok(s, 'sandbox_run_command', {
      sandboxId: id,
      command: 'ls /tmp | grep -c ironcage-code || true',
    });
    assert.equal(tmp.stdout, '0\n');

    const wrote = await ok(s, 'sandbox_write_file', {
      sandboxId: id,
      path: 'src/hello.txt',
      content: 'héllo\n',
    });
    assert.deepEqual(wrote, { path: '/home/sandbox/src/hello.txt', bytes: 7 });
    const read = await ok(s, 'sandbox_read_file', { sandboxId: id, path: '/home/sandbox/src/hello.txt' });
    assert.deepEqual(read, {
      path: '/home/sandbox/src/hello.txt',
      size: 7,
      encoding: 'utf8',
      content: 'héllo\n',
    });
    const seen = await ok(s, 'sandbox_run_command', { sandboxId: id, command: 'cat src/hello.txt' });
    assert.equal(seen.stdout, 'héllo\n');
    await ok(s, 'sandbox_write_file', {
      sandboxId: id,
      path: 'blob.bin',
      content: Buffer.from([0, 1, 2, 255]).toString('base64'),
      encoding: 'base64',
    });
    const blob = await ok(s, 'sandbox_read_file', { sandboxId: id, path: 'blob.bin' });
    assert.equal(blob.encoding, 'base64');
    assert.equal(blob.content, 'AAEC/w==');
    const listed = await ok(s, 'sandbox_list_files', { sandboxId: id, depth: 2 });
    const paths = (listed.entries as { path: string; type: string }[])
      .map((e) => `${e.type} ${e.path}`)
      .sort();
    assert.deepEqual(paths, [
      'dir /home/sandbox/src',
      'file /home/sandbox/blob.bin',
      'file /home/sandbox/src/hello.txt',
    ]);

    // Output beyond the server's cap is cut with a marker saying how much is missing.
    const big = await ok(s, 'sandbox_run_command', {
      sandboxId: id,
      command: 'head -c 200000 /dev/zero | tr "\\0" a',
    });
    assert.match(big.stdout as string, /\[ironcage: output truncated, \d+ of 200000 bytes not shown/);
    assert.ok((big.stdout as string).length < 70_000);

    const bg = await ok(s, 'sandbox_run_command', {
      sandboxId: id,
      command: 'sleep 0.3; echo done > bg.txt',
      background: true,
    });
    assert.equal(typeof bg.pid, 'number');
    await sleep(800);
    assert.equal((await ok(s, 'sandbox_read_file', { sandboxId: id, path: 'bg.txt' })).content, 'done\n');

    const second = (await ok(s, 'sandbox_create', { preset: 'strict' })).sandboxId as string;
    const strict = await ok(s, 'sandbox_run_code', {
      sandboxId: second,
      language: 'python',
      code: 'import os; print(os.getcwd())',
    });
    assert.equal(strict.stdout, '/tmp\n');
    await refused(s, 'sandbox_create', {}, /limit reached: this server allows 2 sandboxes.*sandbox_kill/s);
    const list = await ok(s, 'sandbox_list', {});
    assert.deepEqual(
      (list.sandboxes as { sandboxId: string }[]).map((x) => x.sandboxId).sort(),
      [id, second].sort(),
    );

    const pids = sandboxPids(s.stateDir, id);
    assert.deepEqual(await ok(s, 'sandbox_kill', { sandboxId: id }), { sandboxId: id, killed: true });
    assert.deepEqual(pids.filter(alive), []);
    assert.equal(existsSync(join(s.stateDir, 'sandboxes', id)), false);
    await refused(
      s,
      'sandbox_run_command',
      { sandboxId: id, command: 'true' },
      /no sandbox with id .*sandbox_create/,
    );
    // The slot is free again.
    const third = (await ok(s, 'sandbox_create', {})).sandboxId as string;
    await ok(s, 'sandbox_kill', { sandboxId: third });
    await ok(s, 'sandbox_kill', { sandboxId: second });
  });

  test('errors are tool results and the server survives them', async () => {
    await refused(
      s,
      'sandbox_read_file',
      { sandboxId: 'nope', path: 'x' },
      /no sandbox with id "nope".*sandbox_list/,
    );
    await refused(s, 'sandbox_kill', { sandboxId: 'nope' }, /no sandbox with id/);
    // Schema violations: missing and mistyped arguments, an unknown language.
    await refused(s, 'sandbox_run_command', { command: 'true' }, /sandboxId/);
    await refused(s, 'sandbox_run_code', { sandboxId: 'x', language: 'ruby', code: 'p 1' }, /language/);
    await refused(s, 'sandbox_list_files', { sandboxId: 5 }, /sandboxId/);
    await refused(s, 'sandbox_create', { preset: 'none' }, /preset/);
    await refused(s, 'sandbox_create', { timeoutSeconds: 10 ** 9 }, /maximum/);
    await refused(
      s,
      'sandbox_create',
      { allowDomains: ['evil.org'] },
      /refused: evil\.org is not within .*\*\.example\.com/,
    );
    await refused(s, 'sandbox_create', { allowDomains: ['example.com'] }, /not within/);

    const id = (await ok(s, 'sandbox_create', { timeoutSeconds: 120 })).sandboxId as string;
    await refused(s, 'sandbox_run_command', { sandboxId: id }, /exactly one of "command".*"argv"/);
    await refused(s, 'sandbox_run_command', { sandboxId: id, command: 'x', argv: ['y'] }, /exactly one/);
    await refused(s, 'sandbox_read_file', { sandboxId: id, path: 'missing.txt' }, /no such file/);
    await refused(s, 'sandbox_read_file', { sandboxId: id, path: '.' }, /is a directory; list it/);
    await ok(s, 'sandbox_run_command', {
      sandboxId: id,
      command: 'head -c 1100000 /dev/zero > big.bin && ln -s big.bin link.bin',
    });
    // A symlink's own size is small: the limit applies to what is read through it.
    await refused(s, 'sandbox_read_file', { sandboxId: id, path: 'link.bin' }, /1100000 bytes, over the/);
    await refused(
      s,
      'sandbox_read_file',
      { sandboxId: id, path: 'big.bin' },
      /1100000 bytes, over the 1048576-byte read limit/,
    );
    const slow = await refused(
      s,
      'sandbox_run_command',
      { sandboxId: id, command: 'echo started; sleep 30', timeoutSeconds: 1 },
      /TIMEOUT: the command ran longer than 1 s and was killed/,
    );
    assert.equal((slow.structuredContent as { stdout: string }).stdout, 'started\n');
    // Still serving, and the sandbox still works after all of that.
    const after = await ok(s, 'sandbox_run_command', { sandboxId: id, command: 'echo alive' });
    assert.equal(after.stdout, 'alive\n');
    assert.equal((await s.client.listTools()).tools.length, TOOLS.length);
    await ok(s, 'sandbox_kill', { sandboxId: id });
  });

  test('hostile commands: host secrets are not there, denied destinations are refused', async () => {
    const id = (await ok(s, 'sandbox_create', { allowDomains: ['api.example.com:443'] })).sandboxId as string;
    await refused(s, 'sandbox_read_file', { sandboxId: id, path: '/etc/shadow' }, /no such file/);
    const shadow = await ok(s, 'sandbox_run_command', { sandboxId: id, command: 'cat /etc/shadow' });
    assert.notEqual(shadow.exitCode, 0);
    assert.equal(shadow.stdout, '');
    assert.match(shadow.stderr as string, /No such file or directory/);

    const curl = await call(s, 'sandbox_run_command', {
      sandboxId: id,
      command: 'curl -sS -o /dev/null -w "%{http_code}" --max-time 10 https://denied.example.org/',
      timeoutSeconds: 20,
    });
    const result = curl.structuredContent as { exitCode: number; egressDenied?: { destination: string }[] };
    assert.notEqual(result.exitCode, 0);
    assert.deepEqual(
      result.egressDenied?.map((d) => d.destination),
      ['denied.example.org:443'],
    );
    assert.match(text(curl), /egress proxy refused denied\.example\.org:443.*allowed: api\.example\.com:443/);

    const offline = (await ok(s, 'sandbox_create', {})).sandboxId as string;
    const noNet = await ok(s, 'sandbox_run_command', {
      sandboxId: offline,
      command: 'curl -sS --max-time 5 http://1.1.1.1/ || echo unreachable',
    });
    assert.match(noNet.stdout as string, /unreachable/);
    await ok(s, 'sandbox_kill', { sandboxId: id });
    await ok(s, 'sandbox_kill', { sandboxId: offline });
  });
});

describe('shutdown kills the sandboxes', () => {
  for (const how of ['stdin close', 'SIGTERM'] as const) {
    test(`on ${how}`, async () => {
      const session = await startServer(how === 'SIGTERM' ? 'term' : 'stdin');
      try {
        const ids = [
          (await ok(session, 'sandbox_create', {})).sandboxId as string,
          (await ok(session, 'sandbox_create', { allowDomains: [] })).sandboxId as string,
        ];
        const bg = ids[0] as string;
        await ok(session, 'sandbox_run_command', { sandboxId: bg, command: 'sleep 600', background: true });
        const pids = ids.flatMap((id) => sandboxPids(session.stateDir, id));
        assert.equal(pids.filter(alive).length, 4);
        const server = session.transport.pid as number;
        if (how === 'SIGTERM') process.kill(server, 'SIGTERM');
        // Closing stdin is what the SDK client does first; it signals only after 2 s, and the log tells.
        else void session.client.close();
        await waitExit(session, server);
        assert.match(
          session.stderr(),
          new RegExp(`${how === 'SIGTERM' ? 'SIGTERM' : 'stdin closed'}: killing 2 sandbox`),
        );
        assert.deepEqual(pids.filter(alive), []);
        assert.deepEqual(readdirSync(join(session.stateDir, 'sandboxes')), []);
        assert.equal(existsSync(join(session.stateDir, 'manager.lock')), false);
      } finally {
        await session.cleanup();
      }
    });
  }
});
