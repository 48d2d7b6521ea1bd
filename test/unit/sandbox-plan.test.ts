/** Pure parts of warm sandboxes: the warm bwrap plan, /proc stat parsing, and the meta.json schema. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { HostEntry, HostView } from '../../src/isolation/mounts.js';
import { MountPlanError } from '../../src/isolation/mounts.js';
import { parseProcStat } from '../../src/isolation/pids.js';
import { planWarmBwrapArgs, WARM_RUN_DIR, warmAgentCommand } from '../../src/isolation/warm.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import { sandboxMetaSchema } from '../../src/sandbox/meta.js';

/** A fake host view (in-memory map): the planner is pure, the real host is exercised by integration tests. */
function fakeHost(entries: Record<string, HostEntry>): HostView {
  return {
    homes: ['/root'],
    lookup: (p) => entries[p] ?? null,
    realpath: (p) => (entries[p] === undefined ? null : p),
  };
}
const host = fakeHost({ '/usr': { kind: 'dir' }, '/srv': { kind: 'dir' } });
const fds = { seccomp: 3, passwd: 4, group: 5, hosts: 6, info: 7, block: 8 };
const paths = { workspace: '/state/sandboxes/a/workspace', run: '/state/sandboxes/a/run' };

function plan(layer: Parameters<typeof resolvePolicy>[1] = {}) {
  const policy = resolvePolicy('default', layer);
  return planWarmBwrapArgs(policy, { host, agent: { fd: 9 }, hostEnv: {}, fds }, paths);
}

function indexOfPair(args: string[], a: string, b: string, c?: string): number {
  return args.findIndex((x, i) => x === a && args[i + 1] === b && (c === undefined || args[i + 2] === c));
}

describe('planWarmBwrapArgs', () => {
  test('the agent is PID 1 and the sandbox does not die with its manager', () => {
    const args = plan();
    assert.equal(args[0], '--as-pid-1');
    assert.ok(!args.includes('--die-with-parent'));
    assert.ok(
      args.includes('--unshare-pid') && args.includes('--cap-drop') && args.includes('--disable-userns'),
    );
  });

  test('the workspace is bound over the workdir mount, right after it (parents first)', () => {
    const args = plan();
    const tmpfs = indexOfPair(args, '--tmpfs', '/home/sandbox');
    const bind = indexOfPair(args, '--bind', paths.workspace, '/home/sandbox');
    assert.ok(tmpfs >= 0 && bind === tmpfs + 2, args.join(' '));
    // The workdir's own scratch is shrunk to 1 MiB: the bind covers it, it only keeps the planner's checks.
    assert.equal(args[tmpfs - 1], String(1024 * 1024));
  });

  test('the run directory is bound before the root becomes read-only', () => {
    const args = plan();
    const run = indexOfPair(args, '--bind', paths.run, WARM_RUN_DIR);
    const ro = indexOfPair(args, '--remount-ro', '/');
    assert.ok(run >= 0 && run < ro);
    assert.ok(indexOfPair(args, '--ro-bind-data', '9', '/.ironcage/agent') < run);
  });

  test('a custom workdir not covered by any mount still gets the workspace', () => {
    const args = plan({ filesystem: { workdir: '/work' } });
    assert.ok(indexOfPair(args, '--bind', paths.workspace, '/work') > 0);
  });

  test('mounts below the workdir are refused (the workspace would hide or reorder them)', () => {
    assert.throws(
      () => plan({ filesystem: { scratch: [{ path: '/home/sandbox/cache', sizeMb: 8 }] } }),
      (err: unknown) => err instanceof MountPlanError && err.rule === 'filesystem.workdir',
    );
    assert.throws(
      () => plan({ filesystem: { readOnly: [{ host: '/srv', sandbox: '/home/sandbox/srv' }] } }),
      MountPlanError,
    );
  });

  test('agent command line matches the contract', () => {
    assert.deepEqual(warmAgentCommand(30), [
      '/.ironcage/agent',
      'serve',
      '--socket',
      '/.ironcage/run/agent.sock',
      '--token-fd',
      '10',
      '--orphan-timeout',
      '30',
      '--ready-fd',
      '11',
    ]);
  });
});

describe('parseProcStat', () => {
  test('reads field 22 even when the command name has spaces and parentheses', () => {
    const rest = Array.from({ length: 30 }, (_, i) => String(i + 3));
    assert.equal(parseProcStat(`123 (a b) c) ${rest.join(' ')}`)?.startTime, 22);
    assert.equal(parseProcStat(`1 (sh) ${rest.join(' ')}`)?.startTime, 22);
    assert.deepEqual(parseProcStat(`123 (a b) c) ${rest.join(' ')}`), {
      comm: 'a b) c',
      state: '3',
      ppid: 4,
      startTime: 22,
    });
  });
  test('rejects malformed text', () => {
    assert.equal(parseProcStat('garbage'), null);
    assert.equal(parseProcStat('1 (sh) S 1'), null);
  });
});

describe('meta.json schema', () => {
  const meta = {
    version: 1,
    id: 'abc',
    createdAt: new Date(0).toISOString(),
    preset: 'default',
    policy: resolvePolicy('default'),
    env: { A: 'b' },
    hostId: { uid: 65534, gid: 65534 },
    bwrap: { pid: 10, startTime: 5 },
    init: { pid: 11, startTime: 6 },
    cgroup: '10-abc',
    cpuWeight: 100,
    workspaceQuotaBytes: 1024,
    deadline: null,
    timeoutMs: null,
    onTimeout: 'kill',
    state: 'running',
  };
  test('a record round-trips through JSON', () => {
    const parsed = sandboxMetaSchema.parse(JSON.parse(JSON.stringify(meta)));
    assert.deepEqual(parsed, meta);
  });
  test('a record without process identities is rejected', () => {
    assert.equal(sandboxMetaSchema.safeParse({ ...meta, init: { pid: 11 } }).success, false);
    assert.equal(sandboxMetaSchema.safeParse({ ...meta, state: 'zombie' }).success, false);
  });
});
