/**
 * Many sandboxes at once, and noisy neighbours: 50 concurrent creates that each run a command; a fork bomb and
 * a memory hog in one sandbox while another keeps answering. Timings are printed as diagnostics, not asserted
 * (benchmarks live in bench/), except a generous bound for "keeps answering".
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { cgroupDirsOf, PYTHON, percentile, skipNoRoot, sleep, tempStateDir } from './sandbox-fixture.js';

const state = tempStateDir('scale');
const manager = new SandboxManager({ stateDir: state.dir, onStartup: 'reap', quotaCheckMs: 0 });

before(async () => {
  await manager.start();
});
after(async () => {
  await manager.close();
  state.cleanup();
});

describe('scale', () => {
  test('50 sandboxes created concurrently each run a command; all are cleaned up', async () => {
    const started = performance.now();
    const sandboxes = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const sb = await manager.create({ id: `many-${i}` });
        const result = await sb.commands.run(['sh', '-c', `echo sandbox-${i} $(hostname)`]);
        assert.equal(result.stdout, `sandbox-${i} sandbox\n`);
        return sb;
      }),
    );
    const totalMs = performance.now() - started;
    assert.equal(new Set(sandboxes.map((s) => s.initPid)).size, 50, 'each sandbox has its own PID 1');
    // Each has its own PID namespace: its agent is PID 1 and sees only its own processes.
    const ps = await sandboxes[0]?.commands.run(['sh', '-c', 'ls /proc | grep -c "^[0-9]"']);
    assert.ok(Number(ps?.stdout.trim()) <= 4, `sandbox 0 sees ${ps?.stdout.trim()} processes`);
    console.log(`# 50 concurrent create+run: ${totalMs.toFixed(0)} ms total`);
    await Promise.all(sandboxes.map((s) => s.kill()));
    const ids = sandboxes.map((s) => s.id);
    assert.deepEqual(cgroupDirsOf(ids), []);
    assert.deepEqual(readdirSync(join(state.dir, 'sandboxes')), []);
  });
});

describe('limits and noisy neighbours', { skip: skipNoRoot || (!PYTHON && 'needs python3') }, () => {
  test('a fork bomb and a memory hog in A do not stop B from answering', async () => {
    const a = await manager.create({ policy: { limits: { processes: 64, memoryMb: 128 } } });
    const b = await manager.create();
    const hog = await a.commands.run(
      [PYTHON ?? 'python3', '-c', 'chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n'],
      { background: true },
    );
    const hogResult = await hog.wait();
    assert.equal(hogResult.signal, 'SIGKILL', 'the memory hog is OOM-killed inside its own cgroup');
    await a.commands.run(['bash', '-c', 'bomb() { bomb | bomb & }; bomb'], { background: true });
    await sleep(300);

    const latencies: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = performance.now();
      const r = await b.commands.run(['echo', `ok-${i}`]);
      latencies.push(performance.now() - t);
      assert.equal(r.stdout, `ok-${i}\n`);
    }
    const p50 = percentile(latencies, 50);
    const max = Math.max(...latencies);
    console.log(
      `# neighbour B under a fork bomb in A: exec p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms`,
    );
    assert.ok(max < 2_000, `B answered slowly: ${latencies.map((l) => l.toFixed(0)).join(', ')}`);

    // A's pids limit was what stopped the bomb.
    const pidsDir = a.cgroupDirs.find((d) => existsSync(join(d, 'pids.events')));
    if (pidsDir !== undefined) {
      const events = readFileSync(join(pidsDir, 'pids.events'), 'utf8');
      assert.ok(Number(/max (\d+)/.exec(events)?.[1] ?? 0) > 0, `pids.events: ${events}`);
      assert.ok(Number(readFileSync(join(pidsDir, 'pids.current'), 'utf8')) <= 64);
    }
    const ids = [a.id, b.id];
    await a.kill();
    await b.kill();
    assert.deepEqual(cgroupDirsOf(ids), []);
  });
});
