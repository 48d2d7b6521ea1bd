/**
 * The one-shot agent's lifeline: the status pipe doubles as proof that the host is alive. If the host goes away
 * (a CLI killed with SIGKILL while bwrap was still setting up, before bwrap's own --die-with-parent is armed),
 * the agent must not start the command, or must stop everything it started. Real bwrap, real PID namespace.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { AGENT_BUILD_PATH, packageFile } from '../../src/isolation/package-files.js';
import { BWRAP_PROBE_ARGS } from '../../src/isolation/preflight/bwrap.js';

const agent = packageFile(AGENT_BUILD_PATH);

/** Starts `agent exec --status-fd 3 -- argv` in a minimal sandbox; the test holds the other end of fd 3. */
function sandboxedAgent(argv: string[]) {
  const child = spawn(
    'bwrap',
    [
      ...BWRAP_PROBE_ARGS,
      '--ro-bind',
      agent as string,
      '/agent',
      '--',
      '/agent',
      'exec',
      '--status-fd',
      '3',
      '--',
      ...argv,
    ],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const closed = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  const lifeline = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  lifeline.on('error', () => {});
  return { child, lifeline, closed };
}

function running(cmdline: string): string[] {
  return readdirSync('/proc').filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === cmdline;
    } catch {
      return false;
    }
  });
}

describe('agent lifeline (exec mode)', { skip: agent === null ? 'agent not built' : false }, () => {
  test('the host gone before the command starts: the command never runs', async () => {
    const { lifeline, closed } = sandboxedAgent(['sh', '-c', 'echo RAN']);
    lifeline.destroy(); // bwrap needs milliseconds to set up; the agent starts after this
    const r = await closed;
    assert.equal(r.stdout, '', 'the command must not have run');
    assert.match(r.stderr, /host went away before the command started/);
    assert.equal(r.code, 125);
  });

  test('the host gone while the command runs: every process of the sandbox is killed', async () => {
    const marker = '41.2718';
    const { lifeline, closed } = sandboxedAgent([
      'sh',
      '-c',
      `setsid sleep ${marker} & sleep ${marker}; echo SURVIVED`,
    ]);
    for (let i = 0; i < 100 && running(`sleep\u0000${marker}\u0000`).length < 2; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(running(`sleep\u0000${marker}\u0000`).length, 2, 'both sleepers started');
    const t0 = performance.now();
    lifeline.destroy();
    const r = await closed;
    assert.ok(performance.now() - t0 < 2000, 'the sandbox ended promptly');
    assert.equal(r.stdout, '');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(
      running(`sleep\u0000${marker}\u0000`),
      [],
      'even the process in its own session is gone',
    );
  });
});
