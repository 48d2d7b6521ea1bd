/**
 * The unmodified `e2b` SDK's terminals (sandbox.pty) against a real `ironcage serve` app: create with a size
 * and onData, sendInput, resize, kill, and the exit code of a terminal whose shell exits. Nothing is faked.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CommandExitError, Sandbox } from 'e2b';
import { e2bConnection, serverStateDir, startServer, type TestServer } from './server-fixture.js';

describe('e2b SDK terminals against ironcage serve', { timeout: 120_000 }, () => {
  let server: TestServer;
  let state: { dir: string; cleanup(): void };
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string; requestTimeoutMs: number };

  before(async () => {
    state = serverStateDir('e2b-pty');
    server = await startServer(state.dir);
    opts = e2bConnection(server);
  });

  after(async () => {
    await server?.close();
    state?.cleanup();
  });

  /** Terminal output as text, and a wait for a pattern in it. */
  function screen() {
    const decoder = new TextDecoder();
    const s = {
      text: '',
      onData: (data: Uint8Array) => {
        s.text += decoder.decode(data, { stream: true });
      },
      async until(pattern: RegExp): Promise<void> {
        const deadline = Date.now() + 15_000;
        while (!pattern.test(s.text)) {
          if (Date.now() > deadline) assert.fail(`no ${pattern} in ${JSON.stringify(s.text.slice(-1000))}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      },
    };
    return s;
  }

  test('create, sendInput, resize, kill', async () => {
    const sandbox = await Sandbox.create(opts);
    try {
      const out = screen();
      const terminal = await sandbox.pty.create({ cols: 90, rows: 25, onData: out.onData });
      assert.ok(terminal.pid > 0);
      const input = (text: string) => sandbox.pty.sendInput(terminal.pid, new TextEncoder().encode(text));

      await input('tty; stty size; echo "[$TERM]"\n');
      await out.until(/\/dev\/pts\/\d+/);
      await out.until(/[\r\n]25 90\r\n/);
      await out.until(/\[xterm-256color\]/);

      await sandbox.pty.resize(terminal.pid, { cols: 132, rows: 43 });
      await input('stty size\n');
      await out.until(/[\r\n]43 132\r\n/);

      const running = await sandbox.commands.list();
      assert.ok(running.some((p) => p.pid === terminal.pid));
      assert.equal(await sandbox.pty.kill(terminal.pid), true);
      await assert.rejects(terminal.wait(), CommandExitError);
      const after = await sandbox.commands.list();
      assert.ok(!after.some((p) => p.pid === terminal.pid), 'the killed terminal is gone');
    } finally {
      await sandbox.kill();
    }
  });

  test('the shell exit code ends the terminal', async () => {
    const sandbox = await Sandbox.create(opts);
    try {
      const out = screen();
      const terminal = await sandbox.pty.create({ cols: 80, rows: 24, onData: out.onData });
      await sandbox.pty.sendInput(terminal.pid, new TextEncoder().encode('echo "done-$((40+2))"; exit 3\n'));
      await assert.rejects(terminal.wait(), (err: unknown) => {
        assert.ok(err instanceof CommandExitError);
        assert.equal(err.exitCode, 3);
        return true;
      });
      assert.match(out.text, /done-42/);
    } finally {
      await sandbox.kill();
    }
  });
});
