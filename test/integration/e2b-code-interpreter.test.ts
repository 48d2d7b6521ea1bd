/**
 * The unmodified `@e2b/code-interpreter` package (dev dependency) against a real `ironcage serve` app: runCode,
 * contexts, interrupts and tenancy, executed by ironcage's python driver inside real bwrap sandboxes.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type OutputMessage, Sandbox } from '@e2b/code-interpreter';
import { DRIVER_TAG } from '../../src/server/e2b/interpreter-driver.js';
import { e2bConnection, serverStateDir, startServer, type TestServer } from './server-fixture.js';

function parentPid(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces): state, ppid, ...
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

/** Host pids of the interpreter drivers running inside the sandbox whose PID 1 is `initPid`. */
function driverPids(initPid: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmdline.startsWith('python3') || !cmdline.includes(DRIVER_TAG)) continue;
    for (let pid: number | null = Number(name); pid !== null && pid > 1; pid = parentPid(pid)) {
      if (pid === initPid) {
        found.push(Number(name));
        break;
      }
    }
  }
  return found;
}

function isRunning(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(DRIVER_TAG);
  } catch {
    return false;
  }
}

describe('@e2b/code-interpreter against ironcage serve', { timeout: 240_000 }, () => {
  let server: TestServer;
  let state: { dir: string; cleanup(): void };
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string; requestTimeoutMs: number };
  let sandbox: Sandbox;

  before(async () => {
    state = serverStateDir('e2b-ci');
    server = await startServer(state.dir);
    opts = e2bConnection(server, 15_000);
    // The package's own default template (code-interpreter-v1), as a drop-in user would create it.
    sandbox = await Sandbox.create(opts);
  });

  after(async () => {
    await sandbox?.kill().catch(() => {});
    await server?.close();
    state?.cleanup();
  });

  test('state persists between runs; print goes to logs and streams to onStdout', async () => {
    const first = await sandbox.runCode('x = 1 + 1');
    assert.equal(first.error, undefined);
    assert.deepEqual(first.results, []);
    const second = await sandbox.runCode('x * 21');
    assert.equal(second.text, '42');
    assert.equal(second.results.length, 1);
    assert.equal(second.results[0]?.isMainResult, true);
    assert.ok((second.executionCount ?? 0) > (first.executionCount ?? 0), 'executions are counted');

    const streamed: OutputMessage[] = [];
    const errs: string[] = [];
    const printed = await sandbox.runCode(
      'import sys, time\nprint("hello")\ntime.sleep(0.3)\nprint("oops", file=sys.stderr)\nprint("bye")',
      {
        onStdout: (msg) => {
          streamed.push(msg);
        },
        onStderr: (msg) => {
          errs.push(msg.line);
        },
      },
    );
    assert.equal(printed.error, undefined);
    assert.deepEqual(printed.logs.stdout, ['hello\n', 'bye\n']);
    assert.deepEqual(printed.logs.stderr, ['oops\n']);
    assert.deepEqual(
      streamed.map((m) => m.line),
      ['hello\n', 'bye\n'],
    );
    assert.equal(streamed[0]?.error, false);
    assert.deepEqual(errs, ['oops\n']);
    assert.equal(printed.text, undefined, 'no trailing expression, no main result');

    // Output of child processes and the repr of strings, as a notebook shows them.
    const sub = await sandbox.runCode('import subprocess\nsubprocess.run(["echo", "from a child"])\n"s"');
    assert.equal(sub.logs.stdout.join(''), 'from a child\n');
    assert.equal(sub.text, "'s'");
  });

  test('streams output live, before the execution ends', async () => {
    let firstAt = 0;
    const started = Date.now();
    const execution = await sandbox.runCode('import time\nprint("early", flush=True)\ntime.sleep(1.5)\n7', {
      onStdout: () => {
        if (firstAt === 0) firstAt = Date.now();
      },
    });
    assert.equal(execution.text, '7');
    assert.ok(firstAt > 0 && firstAt - started < 1_200, `first chunk after ${firstAt - started} ms`);
  });

  test('large output arrives whole and in order; a partial last line is not lost', async () => {
    const big = await sandbox.runCode('for i in range(20000):\n    print(f"line {i:05d}")');
    const text = big.logs.stdout.join('');
    const expected = Array.from({ length: 20_000 }, (_, i) => `line ${String(i).padStart(5, '0')}\n`).join(
      '',
    );
    assert.equal(text.length, expected.length);
    assert.ok(text === expected, 'every line, in order');
    const partial = await sandbox.runCode(
      'import sys\nsys.stdout.write("no newline")\nsys.stderr.write("e")',
    );
    assert.equal(partial.logs.stdout.join(''), 'no newline');
    assert.equal(partial.logs.stderr.join(''), 'e');
    const unicode = await sandbox.runCode('print("héllo ☃")\n"ü"');
    assert.equal(unicode.logs.stdout.join(''), 'héllo ☃\n');
    assert.equal(unicode.text, "'ü'");
  });

  test('exceptions and syntax errors become execution.error, trimmed to the user code', async () => {
    const failed = await sandbox.runCode('print("before")\ndef f():\n    return 1 / 0\nf()');
    assert.ok(failed.error, 'an error is reported');
    assert.equal(failed.error.name, 'ZeroDivisionError');
    assert.equal(failed.error.value, 'division by zero');
    assert.match(failed.error.traceback, /^Traceback \(most recent call last\):/);
    assert.match(failed.error.traceback, /return 1 \/ 0/, 'the source line is shown');
    assert.doesNotMatch(failed.error.traceback, new RegExp(DRIVER_TAG), 'no driver frames');
    assert.deepEqual(failed.logs.stdout, ['before\n']);
    assert.deepEqual(failed.results, []);

    const syntax = await sandbox.runCode('x = = 1');
    assert.equal(syntax.error?.name, 'SyntaxError');
    assert.doesNotMatch(syntax.error?.traceback ?? '', /ast\.py|Traceback/);

    const exited = await sandbox.runCode('import sys\nsys.exit(3)');
    assert.equal(exited.error?.name, 'SystemExit');
    assert.equal((await sandbox.runCode('x')).text, '2', 'sys.exit() does not end the context');
    assert.equal((await sandbox.runCode('input()')).error?.name, 'EOFError', 'the code has no stdin');
  });

  test('env vars apply to one execution; rich results carry their formats', async () => {
    const withEnv = await sandbox.runCode('import os\nos.environ.get("GREETING")', {
      envs: { GREETING: 'hi there' },
    });
    assert.equal(withEnv.text, "'hi there'");
    const after = await sandbox.runCode('import os\nos.environ.get("GREETING")');
    assert.equal(after.text, undefined, 'None: the variable was only for that execution');

    const rich = await sandbox.runCode(
      'class Table:\n' +
        '    def __repr__(self): return "Table()"\n' +
        '    def _repr_html_(self): return "<table></table>"\n' +
        '    def _repr_json_(self): return {"rows": 0}\n' +
        'Table()',
    );
    assert.equal(rich.text, 'Table()');
    assert.equal(rich.results[0]?.html, '<table></table>');
    assert.deepEqual(rich.results[0]?.json, { rows: 0 });
    assert.deepEqual(rich.results[0]?.formats(), ['html', 'json']);
  });

  test('contexts: separate globals, own cwd, list, restart, remove', async () => {
    await sandbox.runCode('shared = "default"');
    const context = await sandbox.createCodeContext({ cwd: '/tmp' });
    assert.equal(context.language, 'python');
    assert.equal(context.cwd, '/tmp');
    assert.match(context.id, /^[0-9a-f-]{36}$/);

    const missing = await sandbox.runCode('shared', { context });
    assert.equal(missing.error?.name, 'NameError', 'a new context starts empty');
    await sandbox.runCode('shared = "mine"', { context });
    assert.equal((await sandbox.runCode('shared', { context })).text, "'mine'");
    assert.equal((await sandbox.runCode('shared')).text, "'default'", 'the default context is untouched');
    assert.equal((await sandbox.runCode('import os\nos.getcwd()', { context })).text, "'/tmp'");

    const listed = await sandbox.listCodeContexts();
    assert.ok(listed.some((c) => c.id === context.id && c.language === 'python'));

    await sandbox.restartCodeContext(context);
    assert.equal((await sandbox.runCode('shared', { context })).error?.name, 'NameError', 'restart clears');
    await sandbox.runCode('shared = "again"', { context });

    await sandbox.removeCodeContext(context.id);
    assert.ok(!(await sandbox.listCodeContexts()).some((c) => c.id === context.id));
    await assert.rejects(sandbox.runCode('shared', { context }), /not found/);
    await assert.rejects(sandbox.removeCodeContext(context.id), /not found/);

    // A context whose process cannot start says so in execution.error (and tries again next time).
    const broken = await sandbox.createCodeContext({ cwd: '/no/such/dir' });
    const failed = await sandbox.runCode('1', { context: broken });
    assert.equal(failed.error?.name, 'InterpreterUnavailable');
    assert.match(failed.error?.value ?? '', /python3 could not/);
    assert.equal((await sandbox.runCode('1', { context: broken })).error?.name, 'InterpreterUnavailable');
    await sandbox.removeCodeContext(broken);
  });

  test('only python is offered, with a clear error', async () => {
    await assert.rejects(
      sandbox.runCode('print(1)', { language: 'r' }),
      /language 'r' is not supported.*supported: python/,
    );
    await assert.rejects(
      sandbox.createCodeContext({ language: 'javascript' }),
      /language 'javascript' is not supported/,
    );
    assert.equal((await sandbox.runCode('1 + 1', { language: 'python' })).text, '2');
  });

  test('a client that gives up interrupts the run; a run that ignores it gets its context restarted', async () => {
    const context = await sandbox.createCodeContext();
    await sandbox.runCode('kept = 5', { context });
    await assert.rejects(
      sandbox.runCode('import time\ntime.sleep(60)', { context, timeoutMs: 1_000 }),
      /timed out/i,
    );
    // KeyboardInterrupt stopped the sleep; the process and its globals are still there.
    assert.equal((await sandbox.runCode('kept', { context })).text, '5');

    await assert.rejects(
      sandbox.runCode(
        'import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass',
        { context, timeoutMs: 1_000 },
      ),
      /timed out/i,
    );
    // Queued behind the stubborn run until it was killed; a fresh process answers, without the old globals.
    const fresh = await sandbox.runCode('kept', { context, timeoutMs: 20_000 });
    assert.equal(fresh.error?.name, 'NameError');
    await sandbox.removeCodeContext(context);
  });

  test('another tenant cannot reach the interpreter; calls without a token are refused', async () => {
    const tenant = await server.newKey(['sandbox']);
    const other = await server.newKey(['sandbox']);
    const mine = await Sandbox.create({ ...opts, apiKey: tenant.key });
    const theirs = await Sandbox.create({ ...opts, apiKey: other.key });
    try {
      assert.equal((await mine.runCode('secret = 41\nsecret + 1')).text, '42');
      await assert.rejects(Sandbox.connect(mine.sandboxId, { ...opts, apiKey: other.key }), /not found/i);

      const call = (path: string, init: { method: string; token?: string; body?: unknown }) =>
        fetch(`${opts.sandboxUrl}${path}`, {
          method: init.method,
          headers: {
            'content-type': 'application/json',
            'e2b-sandbox-id': mine.sandboxId,
            'e2b-sandbox-port': '49999',
            ...(init.token === undefined ? {} : { 'x-access-token': init.token }),
          },
          ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
        });
      // The other tenant's own (valid) token does not open this sandbox.
      const theirToken = (theirs as unknown as { envdAccessToken?: string }).envdAccessToken ?? '';
      assert.notEqual(theirToken, '');
      const forged = await call('/execute', { method: 'POST', token: theirToken, body: { code: 'secret' } });
      assert.equal(forged.status, 401);
      assert.equal((await call('/execute', { method: 'POST', body: { code: 'secret' } })).status, 401);
      assert.equal((await call('/contexts', { method: 'GET' })).status, 401);
      assert.equal((await call('/contexts', { method: 'POST', token: theirToken, body: {} })).status, 401);
      // The other tenant's contexts are its own.
      assert.equal((await theirs.runCode('secret')).error?.name, 'NameError');
    } finally {
      await mine.kill();
      await theirs.kill();
    }
  });

  test('contexts end with their sandbox', async () => {
    const doomed = await Sandbox.create(opts);
    const live = server.manager.get(doomed.sandboxId);
    assert.ok(live);
    const initPid = live.initPid;
    await doomed.runCode('a = 1');
    const context = await doomed.createCodeContext();
    await doomed.runCode('b = 2', { context });
    const pids = driverPids(initPid);
    assert.equal(pids.length, 2, 'one python3 driver per context, inside the sandbox');
    const listed = await live.commands.list();
    assert.equal(listed.filter((p) => p.running && p.tag === DRIVER_TAG).length, 2);

    await doomed.kill();
    for (let i = 0; i < 50 && pids.some(isRunning); i++) await sleep(100);
    assert.deepEqual(pids.filter(isRunning), [], 'the drivers are gone with the sandbox');
    await assert.rejects(doomed.runCode('a'));
    await assert.rejects(doomed.listCodeContexts());
  });
});
