/**
 * Terminals over WebSocket (GET /v1/sandboxes/:id/pty) against a real `ironcage serve` app on 127.0.0.1:0:
 * real bwrap sandboxes and their agent's pseudo-terminals, a raw `ws` client, the SDK's sandbox.pty, and the
 * bundled CLI's `sandbox shell`. Nothing is faked.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import {
  AuthenticationError,
  IroncageError,
  NotFoundError,
  Pty,
  PtyClosedError,
  type PtyHandle,
  Sandbox,
  ValidationError,
} from '../../src/sdk/index.js';
import { request, serverStateDir, startServer, type TestServer } from './server-fixture.js';

const state = serverStateDir('pty');
let server: TestServer;
let sandboxId: string;

before(async () => {
  server = await startServer(state.dir);
  const created = await request(server, 'POST', '/v1/sandboxes', { key: server.adminKey, body: {} });
  assert.equal(created.status, 201, created.text);
  sandboxId = created.json.id;
});

after(async () => {
  await server.close();
  state.cleanup();
});

type Control = Record<string, unknown> & { type: string };

/** Terminals a test opened: a failing test must not leave its socket (and process) behind. */
const opened = new Set<RawTerminal>();
afterEach(() => {
  for (const terminal of opened) terminal.ws.terminate();
  opened.clear();
});

/** A raw WebSocket terminal client: everything received, and waits on it. */
class RawTerminal {
  readonly ws: WebSocket;
  output = '';
  readonly controls: Control[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly #waiters: (() => void)[] = [];

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data, isBinary) => {
      if (isBinary) this.output += (data as Buffer).toString('utf8');
      else this.controls.push(JSON.parse(data.toString()) as Control);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        resolve({ code, reason: reason.toString() });
        for (const wake of this.#waiters.splice(0)) wake();
      }),
    );
  }

  /** Resolves once `check` holds (re-checked on every message), or fails after the timeout. */
  async until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        assert.fail(
          `timed out waiting for ${what}; output so far: ${JSON.stringify(this.output.slice(-2000))}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  untilOutput(pattern: RegExp): Promise<void> {
    return this.until(`output ${pattern}`, () => pattern.test(this.output));
  }

  control(type: string): Control | undefined {
    return this.controls.find((c) => c.type === type);
  }

  type(text: string): void {
    this.ws.send(Buffer.from(text), { binary: true });
  }

  sendControl(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message), { binary: false });
  }
}

function startOf(term: RawTerminal): { processId: number; pid: number } {
  const start = term.control('start');
  assert.ok(start, 'the server sent start');
  return { processId: Number(start.processId), pid: Number(start.pid) };
}

function ptyUrl(id: string, query: Record<string, string> = {}, on: TestServer = server): string {
  const url = new URL(`${on.url}/v1/sandboxes/${id}/pty`);
  url.protocol = 'ws:';
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  return url.toString();
}

/** Opens a terminal; resolves with the client once the server reported the process started. */
async function openTerminal(
  query: Record<string, string> = {},
  key = server.adminKey,
  id = sandboxId,
  on: TestServer = server,
): Promise<RawTerminal> {
  const ws = new WebSocket(ptyUrl(id, query, on), { headers: { authorization: `Bearer ${key}` } });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const terminal = new RawTerminal(ws);
  opened.add(terminal);
  await terminal.until('the start message', () => terminal.control('start') !== undefined);
  return terminal;
}

/** The HTTP answer to an upgrade attempt that must be refused (no 101). */
function refusedUpgrade(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => {
      ws.terminate();
      reject(new Error('the upgrade was accepted'));
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      // The server itself must close the connection: a refused upgrade left open would hold a socket (and
      // block the server's shutdown) for as long as the client cares to keep it.
      const timer = setTimeout(() => reject(new Error('the server left the refused connection open')), 5000);
      res.socket.once('close', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    ws.on('error', () => {});
  });
}

async function processRunning(processId: number): Promise<boolean> {
  const sandbox = server.manager.get(sandboxId);
  assert.ok(sandbox);
  const info = (await sandbox.commands.list()).find((p) => p.id === processId);
  return info?.running === true;
}

describe('pty over a raw WebSocket', () => {
  test('a login shell on a terminal: tty, size, resize, echo, exit code', async () => {
    const term = await openTerminal({ rows: '30', cols: '100' });
    const start = startOf(term);
    assert.ok(start.pid > 0);

    term.type('tty; stty size\n');
    await term.untilOutput(/\/dev\/pts\/\d+/);
    await term.untilOutput(/[\r\n]30 100\r\n/);

    term.sendControl({ type: 'resize', rows: 40, cols: 120 });
    term.type('stty size\n');
    await term.untilOutput(/[\r\n]40 120\r\n/);

    // The terminal echoes input back (the line discipline), and the shell sees it as typed.
    term.type('echo "marker-$((6*7))"\n');
    await term.untilOutput(/echo "marker-\$\(\(6\*7\)\)"/);
    await term.untilOutput(/[\r\n]marker-42\r\n/);

    term.type('exit 7\n');
    const closed = await term.closed;
    assert.equal(closed.code, 1000);
    assert.deepEqual(term.control('exit'), { type: 'exit', exitCode: 7, signal: null });
    assert.equal(term.controls.at(-1)?.type, 'exit', 'exit is the last message');
    assert.equal(await processRunning(start.processId), false);
  });

  test('cmd, cwd and env; TERM defaults to xterm-256color', async () => {
    const term = await openTerminal({
      cmd: JSON.stringify(['/bin/sh', '-c', 'echo "[$TERM][$GREETING][$(pwd)]"; exit 5']),
      cwd: '/tmp',
      env: JSON.stringify({ GREETING: 'hi' }),
    });
    const closed = await term.closed;
    assert.match(term.output, /\[xterm-256color\]\[hi\]\[\/tmp\]/);
    assert.equal(closed.code, 1000);
    assert.deepEqual(term.control('exit'), { type: 'exit', exitCode: 5, signal: null });
  });

  test('closing the socket kills the process', async () => {
    const term = await openTerminal({ cmd: JSON.stringify(['sleep', '600']) });
    const { processId } = startOf(term);
    assert.equal(await processRunning(processId), true);
    term.ws.close();
    await term.closed;
    const deadline = Date.now() + 10_000;
    while ((await processRunning(processId)) && Date.now() < deadline) await sleep(50);
    assert.equal(await processRunning(processId), false, 'the process is gone after the client left');
  });

  test('the kill control message ends the process with the signal', async () => {
    const term = await openTerminal({ cmd: JSON.stringify(['sleep', '600']) });
    term.sendControl({ type: 'kill', signal: 'SIGTERM' });
    const closed = await term.closed;
    assert.equal(closed.code, 1000);
    assert.deepEqual(term.control('exit'), { type: 'exit', exitCode: null, signal: 'SIGTERM' });
  });

  test('malformed control messages get an error frame and the session goes on', async () => {
    const term = await openTerminal({ cmd: JSON.stringify(['/bin/sh']) });
    const bad = [
      'not json',
      '[1,2]',
      JSON.stringify({ type: 'resize', rows: 0, cols: 80 }),
      JSON.stringify({ type: 'resize', rows: 10, cols: 10, extra: true }),
      JSON.stringify({ type: 'resize', rows: '10', cols: 10 }),
      JSON.stringify({ type: 'bogus' }),
      JSON.stringify({ type: 'kill', signal: 'SIGSTOP' }),
      JSON.stringify({ type: 'resize', rows: 10, cols: 10, pad: 'x'.repeat(5000) }),
    ];
    for (const message of bad) term.sendControl(message);
    await term.until(
      'an error per bad message',
      () => term.controls.filter((c) => c.type === 'error').length >= bad.length,
    );
    const errors = term.controls.filter((c) => c.type === 'error');
    assert.equal(errors.length, bad.length);
    for (const error of errors) {
      assert.equal(error.code, 'INVALID_MESSAGE');
      assert.equal(typeof error.message, 'string');
    }
    term.type('echo still-$((1+1))\n');
    await term.untilOutput(/still-2/);
    term.type('exit\n');
    assert.equal((await term.closed).code, 1000);
    assert.deepEqual(term.control('exit'), { type: 'exit', exitCode: 0, signal: null });
  });

  test('a slow reader: output pauses, and what the agent no longer holds is reported as lost', async () => {
    // ~24 MiB of output while the client reads nothing: the server must not buffer it all.
    const term = await openTerminal({
      cmd: JSON.stringify([
        '/bin/sh',
        '-c',
        'head -c 18000000 /dev/zero | od -v -An | head -c 24000000; sleep 1',
      ]),
    });
    const { processId } = startOf(term);
    term.ws.pause();
    const sandbox = server.manager.get(sandboxId);
    assert.ok(sandbox);
    // Wait until the process has produced everything (it keeps running, sleeping, while nobody reads).
    const deadline = Date.now() + 60_000;
    let produced = 0;
    while (Date.now() < deadline) {
      const info = (await sandbox.commands.list()).find((p) => p.id === processId);
      produced = info?.outputBytes.stdout ?? 0;
      if (!info?.running || produced >= 24_000_000) break;
      await sleep(100);
    }
    let received = 0;
    term.ws.on('message', (data, isBinary) => {
      if (isBinary) received += (data as Buffer).length;
    });
    term.output = '';
    term.ws.resume();
    await term.closed;
    const lost = term.controls.filter((c) => c.type === 'lost').reduce((sum, c) => sum + Number(c.bytes), 0);
    const info = (await sandbox.commands.list()).find((p) => p.id === processId);
    const total = info?.outputBytes.stdout ?? -1;
    assert.ok(total >= 24_000_000, `the process wrote ${total} bytes`);
    assert.ok(lost > 0, 'output was paused while the client did not read (else nothing is lost)');
    assert.equal(received + lost, total, 'every byte is either delivered or reported lost, none twice');
    assert.deepEqual(term.control('exit'), { type: 'exit', exitCode: 0, signal: null });
  });
});

describe('pty refusals happen before the upgrade', () => {
  test('a bad key is 401, another tenant is 404, an unknown sandbox is 404, bad query is 400', async () => {
    const sandbox = server.manager.get(sandboxId);
    assert.ok(sandbox);
    const terminalsBefore = (await sandbox.commands.list()).filter((p) => p.tag === 'pty').length;
    const badKey = await refusedUpgrade(ptyUrl(sandboxId), { authorization: 'Bearer ick_nope' });
    assert.equal(badKey.status, 401);
    assert.equal(JSON.parse(badKey.body).error.code, 'UNAUTHENTICATED');

    const none = await refusedUpgrade(ptyUrl(sandboxId), {});
    assert.equal(none.status, 401);

    const tenant = await server.newKey(['sandbox']);
    const other = await refusedUpgrade(ptyUrl(sandboxId), { authorization: `Bearer ${tenant.key}` });
    assert.equal(other.status, 404);
    assert.equal(JSON.parse(other.body).error.code, 'NOT_FOUND');

    const unknown = await refusedUpgrade(ptyUrl('0123456789abcdef'), {
      authorization: `Bearer ${server.adminKey}`,
    });
    assert.equal(unknown.status, 404);

    const badQueries: Record<string, string>[] = [
      { rows: '0' },
      { cols: 'x' },
      { cmd: 'not-json' },
      { cmd: '[]' },
      { env: '{"1x":"y"}' },
      { bogus: '1' },
    ];
    for (const query of badQueries) {
      const res = await refusedUpgrade(ptyUrl(sandboxId, query), {
        authorization: `Bearer ${server.adminKey}`,
      });
      assert.equal(res.status, 400, JSON.stringify(query));
      assert.equal(JSON.parse(res.body).error.code, 'INVALID_INPUT');
    }
    // No terminal process was started by any refused attempt.
    assert.equal((await sandbox.commands.list()).filter((p) => p.tag === 'pty').length, terminalsBefore);
  });

  test('a key has at most --max-terminals-per-key terminals open: 429 with how to get one, freed on close', async () => {
    const limited = await startServer(serverStateDir('pty-limit').dir, { app: { maxTerminalsPerKey: 2 } });
    try {
      const created = await request(limited, 'POST', '/v1/sandboxes', { key: limited.adminKey, body: {} });
      assert.equal(created.status, 201, created.text);
      const open = () => openTerminal({ cmd: '["sleep","30"]' }, limited.adminKey, created.json.id, limited);
      const first = await open();
      await open();
      const refused = await refusedUpgrade(ptyUrl(created.json.id, {}, limited), {
        authorization: `Bearer ${limited.adminKey}`,
      });
      assert.equal(refused.status, 429);
      assert.match(refused.body, /TERMINAL_LIMIT/);
      assert.match(refused.body, /--max-terminals-per-key/);
      first.ws.close();
      await first.closed;
      // The count drops when the socket closes; then a new terminal is accepted.
      let again: RawTerminal | undefined;
      for (let i = 0; i < 50 && again === undefined; i++) {
        again = await open().catch(async () => {
          await new Promise((r) => setTimeout(r, 50));
          return undefined;
        });
      }
      assert.ok(again, 'a terminal opens again once one was closed');
      for (const terminal of opened) terminal.ws.terminate();
    } finally {
      await limited.close();
    }
  });

  test('a plain GET (no upgrade) is 426 after the same checks; an upgrade elsewhere is not accepted', async () => {
    const plain = await request(server, 'GET', `/v1/sandboxes/${sandboxId}/pty`, { key: server.adminKey });
    assert.equal(plain.status, 426);
    assert.equal(plain.json.error.code, 'UPGRADE_REQUIRED');
    const unauthenticated = await request(server, 'GET', `/v1/sandboxes/${sandboxId}/pty`);
    assert.equal(unauthenticated.status, 401);

    const elsewhere = new URL(`${server.url}/v1/sandboxes`);
    elsewhere.protocol = 'ws:';
    const ws = new WebSocket(elsewhere, { headers: { authorization: `Bearer ${server.adminKey}` } });
    const outcome = await new Promise<string>((resolve) => {
      ws.on('open', () => ws.on('close', () => resolve('closed after open')));
      ws.on('unexpected-response', (_req, res) => resolve(`http ${res.statusCode}`));
      ws.on('error', () => resolve('error'));
    });
    assert.notEqual(outcome, 'open', outcome);
    assert.ok(ws.readyState !== WebSocket.OPEN);
  });

  test('the route is in the OpenAPI document', async () => {
    const res = await request(server, 'GET', '/openapi.json', { key: server.adminKey });
    const op = res.json.paths['/v1/sandboxes/{id}/pty']?.get;
    assert.ok(op, 'GET /v1/sandboxes/{id}/pty is documented');
    assert.match(op.summary, /WebSocket/);
    assert.deepEqual(op.parameters.map((p: { name: string }) => p.name).sort(), [
      'cmd',
      'cols',
      'cwd',
      'env',
      'id',
      'rows',
    ]);
  });

  test('starting a terminal is audited', async () => {
    const term = await openTerminal({ cmd: JSON.stringify(['true']) });
    await term.closed;
    const { processId } = startOf(term);
    const page = await server.store.listAuditEvents({
      sandboxId,
      type: 'pty.start',
      order: 'desc',
      limit: 100,
    });
    const mine = page.events.find((e) => (e.payload as { processId?: number }).processId === processId);
    assert.ok(mine, 'a pty.start event names the process');
    assert.deepEqual((mine.payload as { argv: string[] }).argv, ['true']);
  });
});

describe('sandbox.pty (SDK)', () => {
  const conn = () => ({ apiUrl: server.url, apiKey: server.adminKey });

  test('create, onData, write, resize, wait', async () => {
    const sandbox = await Sandbox.connect(sandboxId, conn());
    let output = '';
    const decoder = new TextDecoder();
    const pty: PtyHandle = await sandbox.pty.create({
      rows: 20,
      cols: 70,
      onData: (data) => {
        output += decoder.decode(data, { stream: true });
      },
    });
    assert.ok(pty.pid > 0 && pty.processId >= 0);
    const until = async (pattern: RegExp) => {
      const deadline = Date.now() + 15_000;
      while (!pattern.test(output)) {
        if (Date.now() > deadline) assert.fail(`no ${pattern} in ${JSON.stringify(output.slice(-1000))}`);
        await sleep(20);
      }
    };
    pty.write('stty size; tty\n');
    await until(/[\r\n]20 70\r\n/);
    await until(/\/dev\/pts\/\d+/);
    pty.resize(33, 99);
    pty.write(new TextEncoder().encode('stty size\n'));
    await until(/[\r\n]33 99\r\n/);
    pty.write('exit 4\n');
    assert.deepEqual(await pty.wait(), { exitCode: 4, signal: null });
    assert.equal(pty.open, false);
    assert.throws(() => pty.write('late'), { code: 'PTY_CLOSED' });
  });

  test('cmd as a string, kill(), and close() kills the process', async () => {
    const sandbox = await Sandbox.connect(sandboxId, conn());
    const killed = await sandbox.pty.create({ cmd: 'sleep 600' });
    killed.kill();
    assert.deepEqual(await killed.wait(), { exitCode: null, signal: 'SIGKILL' });

    const closed = await sandbox.pty.create({ cmd: ['sleep', '600'] });
    assert.equal(await processRunning(closed.processId), true);
    closed.close();
    await assert.rejects(closed.wait(), PtyClosedError);
    const deadline = Date.now() + 10_000;
    while ((await processRunning(closed.processId)) && Date.now() < deadline) await sleep(50);
    assert.equal(await processRunning(closed.processId), false);
  });

  test('typed errors: bad key, another tenant, bad input, spawn failure', async () => {
    const as = (key: string) =>
      new Pty({ apiUrl: server.url, headers: () => ({ authorization: `Bearer ${key}` }) }, sandboxId);
    await assert.rejects(as('ick_nope').create(), AuthenticationError);
    const tenant = await server.newKey(['sandbox']);
    await assert.rejects(as(tenant.key).create(), NotFoundError);

    const sandbox = await Sandbox.connect(sandboxId, conn());
    await assert.rejects(sandbox.pty.create({ rows: 0 }), ValidationError);
    await assert.rejects(sandbox.pty.create({ env: { 'not a name': 'x' } }), ValidationError);
    // The upgrade succeeded but the process could not start: the error frame becomes the typed error.
    await assert.rejects(sandbox.pty.create({ cmd: ['/no/such/program'] }), (err: unknown) => {
      assert.ok(err instanceof IroncageError, String(err));
      assert.notEqual(err.code, 'PTY_CLOSED');
      return true;
    });
  });
});

describe('ironcage sandbox shell (bundled CLI)', () => {
  const cli = join(dirname(fileURLToPath(import.meta.url)), '../../bin/main.js');

  // util-linux script(1) gives the CLI a real terminal as stdin/stdout, as a user's would be.
  const script = ['/usr/bin/script', '/bin/script'].find((p) => existsSync(p));
  test('on a TTY: raw mode, the window size and its changes (SIGWINCH), the terminal restored, the exit code', {
    skip: !existsSync(cli) || script === undefined,
  }, async () => {
    const marker = join(state.dir, `resize-${process.pid}`);
    const inner = [
      'stty rows 31 cols 101',
      // Changes the window size once the test asks: the kernel sends SIGWINCH to the CLI.
      `(while [ ! -e ${marker} ]; do sleep 0.05; done; stty rows 44 cols 133 < /dev/tty) &`,
      `${process.execPath} ${cli} sandbox shell ${sandboxId}`,
      'code=$?',
      `stty -a | grep -o -e '-icanon' -e ' icanon' | head -1 | sed 's/^/local-mode:/'`,
      'echo "cli-exit=$code"',
    ].join('\n');
    const child = spawn(script as string, ['-qfec', inner, '/dev/null'], {
      env: { ...process.env, IRONCAGE_API_URL: server.url, IRONCAGE_API_KEY: server.adminKey },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    const until = async (pattern: RegExp, poke?: () => void) => {
      const deadline = Date.now() + 15_000;
      while (!pattern.test(out)) {
        if (Date.now() > deadline) assert.fail(`no ${pattern} in ${JSON.stringify(out.slice(-1500))}`);
        poke?.();
        await sleep(300);
      }
    };
    // Raw mode: a CR goes through as typed (the remote terminal turns it into Enter).
    await until(/[\r\n]31 101\r/, () => child.stdin.write('stty size\r'));
    writeFileSync(marker, '');
    await until(/[\r\n]44 133\r/, () => child.stdin.write('stty size\r'));
    child.stdin.write('exit 3\r');
    assert.equal(await closed, 0);
    assert.match(out, /local-mode: icanon/, 'the local terminal is back in canonical (cooked) mode');
    assert.match(out, /cli-exit=3/);
  });

  test('piped stdin runs the lines and exits with the remote exit code', {
    skip: !existsSync(cli),
  }, async () => {
    const child = spawn(process.execPath, [cli, 'sandbox', 'shell', sandboxId], {
      env: { ...process.env, IRONCAGE_API_URL: server.url, IRONCAGE_API_KEY: server.adminKey },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.stdin.end('echo "h""i"; exit 3\n');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 3, stderr);
    assert.match(stdout, /[\r\n]hi\r\n/);
  });

  test('--cmd and end of piped input (sends end-of-file to the terminal)', {
    skip: !existsSync(cli),
  }, async () => {
    const child = spawn(process.execPath, [cli, 'sandbox', 'shell', sandboxId, '--cmd', 'cat; exit 9'], {
      env: { ...process.env, IRONCAGE_API_URL: server.url, IRONCAGE_API_KEY: server.adminKey },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stdin.end('through cat\n');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 9);
    assert.match(stdout, /through cat/);
  });

  test('an unknown sandbox is an API error (exit 1)', { skip: !existsSync(cli) }, async () => {
    const child = spawn(process.execPath, [cli, 'sandbox', 'shell', '0123456789abcdef'], {
      env: { ...process.env, IRONCAGE_API_URL: server.url, IRONCAGE_API_KEY: server.adminKey },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.stdin.end();
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 1);
    assert.match(stderr, /NOT_FOUND/);
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
