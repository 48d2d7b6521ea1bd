/**
 * Crash recovery: a child Node process creates sandboxes and is SIGKILLed; a new manager on the same state
 * directory then re-adopts them (their processes still answer, with their memory state) or reaps them (no
 * process, cgroup or directory left). Sandboxes whose agent died meanwhile are cleaned either way.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { processIdentity } from '../../src/sandbox/proc.js';
import {
  cgroupDirsOf,
  PYTHON,
  processesWithMarker,
  skipNoRoot,
  sleep,
  tempStateDir,
  waitForMarked,
} from './sandbox-fixture.js';

const managerUrl = pathToFileURL(join(import.meta.dirname, '../../src/sandbox/manager.js')).href;

interface ChildReport {
  ids: string[];
  counterId: number;
  initPids: Record<string, number>;
}

/**
 * Runs a manager in a child process that creates three sandboxes (a counter that received three ticks in
 * `crash-a`, marked sleepers in all), reports, and is then killed with SIGKILL.
 */
async function crashAManager(stateDir: string, marker: string): Promise<ChildReport> {
  const script = `
    const { SandboxManager } = await import(${JSON.stringify(managerUrl)});
    const m = new SandboxManager({ stateDir: ${JSON.stringify(stateDir)}, onStartup: 'reap' });
    await m.start();
    const ids = ['crash-a', 'crash-b', 'crash-c'];
    const sandboxes = await Promise.all(ids.map((id) => m.create({ id, timeoutMs: null })));
    let out = '';
    const counter = await sandboxes[0].commands.run(
      [${JSON.stringify(PYTHON ?? 'python3')}, '-u', '-c', 'import sys\\nn = 0\\nfor line in sys.stdin:\\n    n += 1\\n    print(n, flush=True)\\n', ${JSON.stringify(marker)}],
      { background: true, stdin: true, onStdout: (d) => { out += d; } },
    );
    for (let i = 0; i < 3; i++) await counter.sendStdin('tick\\n');
    while (!out.includes('3\\n')) await new Promise((r) => setTimeout(r, 5));
    for (const sb of sandboxes) await sb.commands.run(['bash', '-c', 'exec -a ${marker} sleep 600'], { background: true });
    const initPids = Object.fromEntries(sandboxes.map((sb) => [sb.id, sb.initPid]));
    process.stdout.write(JSON.stringify({ ids, counterId: counter.id, initPids }) + '\\n');
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const report = await new Promise<ChildReport>((resolve, reject) => {
    let text = '';
    child.stdout.on('data', (c: Buffer) => {
      text += c.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(text.slice(0, nl)) as ChildReport);
    });
    child.on('exit', (code) => reject(new Error(`the child manager exited early (code ${code})`)));
  });
  child.removeAllListeners('exit');
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  return report;
}

describe('crash recovery after kill -9 of the manager', {
  skip: skipNoRoot || (!PYTHON && 'needs python3'),
}, () => {
  test('adopt: live sandboxes come back with their processes and memory; dead ones are cleaned', async () => {
    const state = tempStateDir('adopt');
    after(() => state.cleanup());
    const marker = `ironcage-adopt-${process.pid}-${Date.now()}`;
    const crashed = await crashAManager(state.dir, marker);
    // 3 sleepers + the counter (its argv carries the marker too).
    assert.equal(await waitForMarked(marker, 4), 4, 'the sandboxes outlived their manager');
    // One sandbox dies while no manager runs: the next start must clean it, not adopt it.
    process.kill(crashed.initPids['crash-c'] ?? -1, 'SIGKILL');

    const manager = new SandboxManager({ stateDir: state.dir, onStartup: 'adopt' });
    try {
      const report = await manager.start();
      assert.deepEqual(report.adopted.sort(), ['crash-a', 'crash-b']);
      assert.deepEqual(report.cleaned, ['crash-c']);
      assert.deepEqual(report.failed, []);
      assert.deepEqual(cgroupDirsOf(['crash-c']), []);

      const a = manager.get('crash-a');
      assert.ok(a !== undefined && a.state === 'running');
      const counter = await a.commands.connect(crashed.counterId);
      const output: Buffer[] = [];
      const attachment = await counter.attach({ fromOffset: 0, onStdout: (d) => output.push(d) });
      assert.equal(Buffer.concat(output).toString(), '1\n2\n3\n', 'output from before the crash is replayed');
      await counter.sendStdin('tick\n');
      for (let i = 0; i < 200 && !Buffer.concat(output).toString().endsWith('4\n'); i++) await sleep(10);
      assert.equal(Buffer.concat(output).toString(), '1\n2\n3\n4\n', 'the counter kept its state');
      attachment.detach();
      const b = manager.get('crash-b');
      assert.equal((await b?.commands.run(['echo', 'alive']))?.stdout, 'alive\n');
    } finally {
      await manager.close();
    }
    assert.equal(await waitForMarked(marker, 0), 0);
    assert.deepEqual(cgroupDirsOf(crashed.ids), []);
    assert.deepEqual(readdirSync(join(state.dir, 'sandboxes')), []);
    state.cleanup();
  });

  test('reap: nothing is left — no process, cgroup or state entry', async () => {
    const state = tempStateDir('reap');
    after(() => state.cleanup());
    const marker = `ironcage-reap-${process.pid}-${Date.now()}`;
    const crashed = await crashAManager(state.dir, marker);
    assert.equal(await waitForMarked(marker, 4), 4);
    assert.ok(cgroupDirsOf(crashed.ids).length > 0);

    const manager = new SandboxManager({ stateDir: state.dir, onStartup: 'reap' });
    const report = await manager.start();
    assert.deepEqual(report.reaped.sort(), crashed.ids);
    assert.equal(manager.list().length, 0);
    assert.deepEqual(processesWithMarker(marker), []);
    for (const pid of Object.values(crashed.initPids)) {
      assert.equal(processIdentity(pid), null, 'the sandbox init is gone (or an unreaped zombie)');
    }
    assert.deepEqual(cgroupDirsOf(crashed.ids), []);
    assert.deepEqual(readdirSync(join(state.dir, 'sandboxes')), []);
    await manager.close();
    state.cleanup();
  });

  test('adopt: a sandbox paused when its manager went away comes back on resume, after its orphan timeout', async () => {
    const state = tempStateDir('paused');
    after(() => state.cleanup());
    const first = new SandboxManager({ stateDir: state.dir, onStartup: 'reap', orphanTimeoutS: 1 });
    await first.start();
    const sandbox = await first.create({ id: 'paused-a', timeoutMs: null });
    await sandbox.commands.run(['sh', '-c', 'echo kept > /tmp/state'], {});
    await sandbox.pause();
    await first.close({ keep: true });
    await sleep(2500); // longer than the orphan timeout: frozen time must not count against the sandbox

    const second = new SandboxManager({ stateDir: state.dir, onStartup: 'adopt', orphanTimeoutS: 1 });
    try {
      const report = await second.start();
      assert.deepEqual(report.adopted, ['paused-a']);
      const adopted = second.get('paused-a');
      assert.equal(adopted?.state, 'paused');
      await adopted?.resume();
      await sleep(1500); // past the orphan timeout again: the new connection must be what keeps it alive
      assert.equal((await adopted?.commands.run(['cat', '/tmp/state']))?.stdout, 'kept\n');
    } finally {
      await second.close();
    }
    state.cleanup();
  });
});
