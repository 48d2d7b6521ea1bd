/**
 * Exec audit in the warm-sandbox agent for real (bwrap, the kernel's seccomp user notification): every program
 * an audited process tree starts is reported with its path, argv and pid; unaudited processes report nothing.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { AgentClient, AgentExecEvent, AgentExit, AgentSpawnRequest } from '../../src/agent/client.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { type TestSandbox, useConnectedSandbox } from './agent-harness.js';
import { tempStateDir } from './sandbox-fixture.js';

/** Runs one process to its end and collects every exec event of its id (events before EXIT, by the protocol). */
async function run(client: AgentClient, argv: string[], extra: Partial<AgentSpawnRequest> = {}) {
  let procId = -1;
  const early: { procId: number; event: AgentExecEvent }[] = [];
  const allExecs: { procId: number; event: AgentExecEvent }[] = [];
  let stdout = '';
  let resolveExit: (e: AgentExit) => void = () => {};
  const exit = new Promise<AgentExit>((r) => {
    resolveExit = r;
  });
  const onExec = (id: number, event: AgentExecEvent) => {
    (procId < 0 ? early : allExecs).push({ procId: id, event });
  };
  const onOutput = (id: number, stream: string, data: Buffer) => {
    if (id === procId && stream === 'stdout') stdout += data.toString();
  };
  const onExit = (id: number, e: AgentExit) => {
    if (id === procId) resolveExit(e);
  };
  client.on('exec', onExec);
  client.on('output', onOutput);
  client.on('exit', onExit);
  try {
    const started = performance.now();
    const spawned = await client.spawn({ argv, env: {}, cwd: '', ...extra });
    procId = spawned.id;
    const end = await exit;
    const ms = performance.now() - started;
    const execs = [...early, ...allExecs].filter((e) => e.procId === procId).map((e) => e.event);
    return { ...spawned, exit: end, execs, all: [...early, ...allExecs], stdout, ms };
  } finally {
    client.off('exec', onExec);
    client.off('output', onOutput);
    client.off('exit', onExit);
  }
}

/** Whether `want` appears in `events` in order (other events may come between, e.g. failed PATH attempts). */
function inOrder(events: AgentExecEvent[], want: { base: string; argv: string[] }[]): boolean {
  let at = 0;
  for (const e of events) {
    const w = want[at];
    if (w === undefined) break;
    if (e.path.split('/').pop() === w.base && JSON.stringify(e.argv) === JSON.stringify(w.argv)) at++;
  }
  return at === want.length;
}

async function until<T>(what: string, fn: () => T | undefined, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('agent exec audit', () => {
  let sb: TestSandbox;
  let client: AgentClient;
  let fdsBefore: number | null = null;
  /** The agent's open descriptors seen from the host; only root may look (the agent is non-dumpable). */
  const agentFds = (): number | null => {
    try {
      return readdirSync(`/proc/${sb.agentHostPid}/fd`).length;
    } catch {
      return null;
    }
  };
  useConnectedSandbox((s, c) => {
    sb = s;
    client = c;
    fdsBefore = agentFds();
  });

  test('an audited tree reports every program it starts, with argv, in order', async () => {
    // /bin/true, not true: dash runs `true` as a builtin, which starts no program.
    const script = `ls / >/dev/null; python3 -c "import os; os.system('/bin/true')"`;
    const r = await run(client, ['sh', '-c', script], { auditExec: true });
    assert.deepEqual(r.exit, { ...r.exit, kind: 'exit', code: 0 });
    const first = r.execs[0];
    assert.ok(first !== undefined, 'the root exec is reported');
    assert.equal(first.pid, r.pid);
    assert.deepEqual(first.argv, ['sh', '-c', script]);
    assert.match(first.path, /\/sh$/);
    const want = [
      { base: 'sh', argv: ['sh', '-c', script] },
      { base: 'ls', argv: ['ls', '/'] },
      { base: 'python3', argv: ['python3', '-c', "import os; os.system('/bin/true')"] },
      { base: 'sh', argv: ['sh', '-c', '/bin/true'] },
      { base: 'true', argv: ['/bin/true'] },
    ];
    assert.ok(inOrder(r.execs, want), JSON.stringify(r.execs, null, 1));
    for (const e of r.execs) {
      assert.ok(e.pid > 1, 'pids are the callers inside the sandbox');
      assert.equal(e.unreadable, undefined, JSON.stringify(e));
    }
  });

  test('an unaudited process reports nothing', async () => {
    const r = await run(client, ['sh', '-c', 'ls / >/dev/null; true']);
    assert.deepEqual(r.exit, { ...r.exit, kind: 'exit', code: 0 });
    assert.deepEqual(r.all, []);
  });

  test('50 execs in a loop are all reported and the process finishes promptly', async () => {
    const loop = 'i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done; echo done';
    const r = await run(client, ['sh', '-c', loop], { auditExec: true });
    assert.equal(r.stdout, 'done\n');
    assert.equal(r.execs.filter((e) => e.path === '/bin/true').length, 50);
    assert.ok(r.ms < 5000, `took ${r.ms} ms`);
  });

  test('the tree stays audited after its root exits; long argv is bounded and marked truncated', async () => {
    const seen: AgentExecEvent[] = [];
    let procId = -1;
    const onExec = (id: number, e: AgentExecEvent) => {
      if (id === procId) seen.push(e);
    };
    client.on('exec', onExec);
    try {
      // The root exits at once; its background child execs later, under the same audit.
      const r = await run(client, ['sh', '-c', '(sleep 0.3; /bin/echo late >/dev/null) &'], {
        auditExec: true,
      });
      procId = r.id;
      await until('the late exec', () =>
        seen.some((e) => e.path === '/bin/echo' && e.argv[1] === 'late') ? true : undefined,
      );
      const many = Array.from({ length: 100 }, (_, i) => `arg${i}`);
      const big = await run(client, ['/bin/sh', '-c', '/bin/true "$@"', 'x', ...many], { auditExec: true });
      const inner = big.execs.find((e) => e.path === '/bin/true');
      assert.ok(inner !== undefined);
      assert.equal(inner.truncated, true);
      assert.equal(inner.argv.length, 64);
      assert.deepEqual(inner.argv.slice(0, 3), ['/bin/true', 'arg0', 'arg1']);
      const root = big.execs[0];
      assert.equal(root?.truncated, true);
      assert.equal(root?.argv.length, 64);
    } finally {
      client.off('exec', onExec);
    }
  });

  test('a caller whose memory cannot be read is still allowed and reported as unreadable', async () => {
    // PR_SET_DUMPABLE (4) = 0 closes /proc/PID/mem to the agent; the exec must still run.
    const code =
      "import ctypes, os; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); os.execv('/bin/echo', ['/bin/echo', 'ran'])";
    const r = await run(client, ['python3', '-c', code], { auditExec: true });
    assert.equal(r.stdout, 'ran\n');
    const hidden = r.execs.at(-1);
    assert.deepEqual(hidden, { pid: hidden?.pid, path: '', argv: [], unreadable: true });
  });

  test('a failed first exec is a spawn error, and the agent stays healthy with no listener left open', async () => {
    await assert.rejects(
      client.spawn({ argv: ['no-such-command-here'], env: {}, cwd: '', auditExec: true }),
      { code: 'SPAWN_FAILED' },
    );
    await assert.rejects(client.spawn({ argv: ['/etc/passwd'], env: {}, cwd: '', auditExec: true }), {
      code: 'SPAWN_FAILED',
    });
    const r = await run(client, ['sh', '-c', 'echo ok'], { auditExec: true });
    assert.equal(r.stdout, 'ok\n');
    // Every audited tree has ended: each listener was closed on its hang-up (same descriptor count as before).
    if (fdsBefore !== null)
      await until('listeners closed', () => (agentFds() === fdsBefore ? true : undefined));
    const procs = await client.list();
    assert.ok(procs.length >= 4);
  });
});

describe('sandbox.commands.run with auditExec', () => {
  const state = tempStateDir('audit');
  const manager = new SandboxManager({ stateDir: state.dir, onStartup: 'reap', quotaCheckMs: 0 });
  before(async () => {
    await manager.start();
  });
  after(async () => {
    await manager.close();
    state.cleanup();
  });

  test('onExec receives the command and the programs it starts; without auditExec nothing', async () => {
    const sandbox = await manager.create({});
    try {
      const seen: AgentExecEvent[] = [];
      const result = await sandbox.commands.run('/bin/echo hi; /bin/true', {
        auditExec: true,
        onExec: (e) => seen.push(e),
      });
      assert.equal(result.stdout, 'hi\n');
      assert.deepEqual(
        seen.map((e) => e.argv),
        [['/bin/sh', '-c', '/bin/echo hi; /bin/true'], ['/bin/echo', 'hi'], ['/bin/true']],
      );
      const none: AgentExecEvent[] = [];
      await sandbox.commands.run('/bin/true', { onExec: (e) => none.push(e) });
      assert.deepEqual(none, []);
    } finally {
      await sandbox.kill();
    }
  });
});
