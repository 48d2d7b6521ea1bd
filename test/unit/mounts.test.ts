import assert from 'node:assert/strict';
import { posix } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  type HostEntry,
  type HostView,
  MountPlanError,
  planBwrapArgs,
  planEnvironment,
} from '../../src/isolation/mounts.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import type { SandboxPolicyInput } from '../../src/policy/schema.js';

/** A fake host filesystem (an in-memory map) for the pure planner; the real one is exercised by integration tests. */
function fakeHost(entries: Record<string, HostEntry>, homes = ['/root', '/home/alice']): HostView {
  const lookup = (p: string) => entries[p] ?? null;
  const realpath = (p: string): string | null => {
    const parts = p.split('/').filter(Boolean);
    let cur = '/';
    for (let i = 0; i < parts.length; i++) {
      const next = posix.join(cur, parts[i] as string);
      const e = lookup(next);
      if (e === null) return null;
      if (e.kind === 'symlink') {
        const target = posix.resolve(cur, e.target);
        const rest = parts.slice(i + 1).join('/');
        return realpath(rest ? posix.join(target, rest) : target);
      }
      cur = next;
    }
    return cur;
  };
  return { lookup, realpath, homes };
}

const dir = { kind: 'dir' } as const;
const file = { kind: 'file' } as const;
const baseHost: Record<string, HostEntry> = {
  '/usr': dir,
  '/usr/bin': dir,
  '/bin': { kind: 'symlink', target: 'usr/bin' },
  '/etc': dir,
  '/etc/shadow': file,
  '/etc/ld.so.cache': file,
  '/root': dir,
  '/root/.ssh': dir,
  '/home': dir,
  '/home/alice': dir,
  '/home/alice/.ssh': dir,
  '/home/alice/.aws': dir,
  '/home/alice/.aws/credentials': file,
  '/home/alice/project': dir,
  '/home/alice/project/.env': file,
  '/home/alice/project/secrets': dir,
  '/home/alice/project/link-to-root': { kind: 'symlink', target: '/root' },
  '/srv': dir,
  '/srv/data': dir,
  '/srv/data/out': dir,
};

const ctx = (entries = baseHost, hostEnv: Record<string, string> = {}) => ({
  host: fakeHost(entries),
  agent: { path: '/opt/ironcage/agent' },
  hostEnv,
  fds: { seccomp: 3, passwd: 5, group: 6, hosts: 7 },
});

const plan = (layer: SandboxPolicyInput, entries = baseHost, hostEnv: Record<string, string> = {}) =>
  planBwrapArgs(resolvePolicy('default', layer), ctx(entries, hostEnv));

/** Positions of `flag a b` triples in argv, as [index, a, b]. */
function triples(args: string[], flag: string): [number, string, string][] {
  const out: [number, string, string][] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push([i, args[i + 1] as string, args[i + 2] as string]);
  });
  return out;
}

describe('mount planner', () => {
  test('always isolates: namespaces, no userns, no caps, new session, clean env, fresh proc and dev', () => {
    const args = plan({});
    for (const flag of [
      '--unshare-user',
      '--unshare-pid',
      '--unshare-ipc',
      '--unshare-uts',
      '--unshare-net',
      '--unshare-cgroup',
      '--disable-userns',
      '--new-session',
      '--die-with-parent',
      '--clearenv',
    ]) {
      assert.ok(args.includes(flag), `missing ${flag}`);
    }
    assert.equal(args[args.indexOf('--cap-drop') + 1], 'ALL');
    assert.deepEqual(triples(args, '--proc').length, 1);
    assert.equal(args[args.indexOf('--dev') + 1], '/dev');
    assert.equal(args[args.indexOf('--seccomp') + 1], '3');
    // The root and /dev are remounted read-only after every mount was made.
    const lastMount = Math.max(
      args.lastIndexOf('--ro-bind'),
      args.lastIndexOf('--tmpfs'),
      args.lastIndexOf('--bind'),
    );
    assert.ok(triples(args, '--remount-ro').some(([i, d]) => d === '/' && i > lastMount));
    assert.ok(triples(args, '--remount-ro').some(([i, d]) => d === '/dev' && i > lastMount));
  });

  test('the agent is bound from its path, or copied from a descriptor', () => {
    assert.deepEqual(
      triples(plan({}), '--ro-bind')
        .find(([, , d]) => d === '/.ironcage/agent')
        ?.slice(1),
      ['/opt/ironcage/agent', '/.ironcage/agent'],
    );
    const copied = planBwrapArgs(resolvePolicy('default'), { ...ctx(), agent: { fd: 11 } });
    assert.deepEqual(
      triples(copied, '--ro-bind-data')
        .find(([, , d]) => d === '/.ironcage/agent')
        ?.slice(1),
      ['11', '/.ironcage/agent'],
    );
  });

  test('system directories are read-only and merged-usr links are mirrored, not followed', () => {
    const args = plan({});
    assert.deepEqual(
      triples(args, '--ro-bind')
        .find(([, s]) => s === '/usr')
        ?.slice(1),
      ['/usr', '/usr'],
    );
    assert.deepEqual(
      triples(args, '--symlink')
        .find(([, , d]) => d === '/bin')
        ?.slice(1),
      ['usr/bin', '/bin'],
    );
    assert.equal(triples(args, '--bind').length, 0, 'no writable bind unless asked');
  });

  test('deny wins: hidden paths inside a bound directory are covered after the bind', () => {
    const args = plan({
      filesystem: {
        writable: ['/home/alice'],
        hidden: ['/home/alice/project/.env', '/home/alice/project/secrets'],
      },
    });
    const bindAt = args.indexOf('/home/alice');
    const envAt = triples(args, '--ro-bind').find(
      ([, s, d]) => s === '/dev/null' && d === '/home/alice/project/.env',
    );
    assert.ok(envAt && envAt[0] > bindAt, '.env hidden after the bind');
    const tmpfsAt = args.findIndex(
      (a, i) => a === '--tmpfs' && args[i + 1] === '/home/alice/project/secrets',
    );
    assert.ok(tmpfsAt > bindAt, 'secrets dir hidden after the bind');
    // ~/.ssh and ~/.aws from the preset's secret list are hidden too.
    assert.ok(args.some((a, i) => a === '--tmpfs' && args[i + 1] === '/home/alice/.ssh'));
    assert.ok(args.some((a, i) => a === '--tmpfs' && args[i + 1] === '/home/alice/.aws'));
  });

  test('a bind inside a hidden path is refused, naming the rule and how to allow it', () => {
    assert.throws(
      () => plan({ filesystem: { readOnly: ['/home/alice/.aws'] } }),
      (err: unknown) =>
        err instanceof MountPlanError &&
        err.rule === 'filesystem.hidden' &&
        /filesystem\.reveal/.test(err.message) &&
        err.message.includes('/home/alice/.aws'),
    );
  });

  test('a symlink cannot carry a bind into a hidden path', () => {
    assert.throws(
      () => plan({ filesystem: { readOnly: ['/home/alice/project/link-to-root'] } }),
      (err: unknown) => err instanceof MountPlanError && /resolves to \/root/.test(err.message),
    );
  });

  test('reveal is the explicit way to allow a hidden path', () => {
    const args = plan({ filesystem: { readOnly: ['/home/alice/.aws'], reveal: ['~/.aws'] } });
    assert.ok(triples(args, '--ro-bind').some(([, s]) => s === '/home/alice/.aws'));
  });

  test('never binds the host root, and refuses binds over /proc or /dev', () => {
    const withRoot = { ...baseHost, '/': dir };
    assert.throws(() => plan({ filesystem: { readOnly: ['/'] } }, withRoot), MountPlanError);
    assert.throws(
      () => plan({ filesystem: { readOnly: [{ host: '/srv', sandbox: '/proc/x' }] } }),
      MountPlanError,
    );
    assert.throws(
      () => plan({ filesystem: { writable: [{ host: '/srv', sandbox: '/dev' }] } }),
      MountPlanError,
    );
  });

  test('a missing required path is refused; a missing optional one is skipped', () => {
    assert.throws(() => plan({ filesystem: { readOnly: ['/nope'] } }), /does not exist/);
    const args = plan({ filesystem: { optional: ['/nope'] } });
    assert.ok(!args.includes('/nope'));
  });

  test('workdir must be inside a bound path or scratch mount', () => {
    assert.throws(() => plan({ filesystem: { workdir: '/elsewhere' } }), /filesystem\.workdir/);
    const args = plan({ filesystem: { writable: ['/srv/data'], workdir: '/srv/data/out' } });
    assert.equal(args[args.indexOf('--chdir') + 1], '/srv/data/out');
  });

  test('environment: nothing from the host unless passed by name', () => {
    const policy = resolvePolicy('default', { env: { pass: ['TERM'] } });
    const env = planEnvironment(policy, { TERM: 'xterm', AWS_SECRET_ACCESS_KEY: 'x', PATH: '/host/bin' });
    assert.equal(env.TERM, 'xterm');
    assert.equal(env.AWS_SECRET_ACCESS_KEY, undefined);
    assert.notEqual(env.PATH, '/host/bin');
  });

  test('property: for any set of binds and hidden paths, deny wins and parents precede children', () => {
    const paths = Object.keys(baseHost).filter((p) => baseHost[p]?.kind === 'dir' && p !== '/root');
    // Hidden symlinks need no cover: they resolve inside the sandbox's own view (tested above).
    const hiddenChoices = Object.keys(baseHost).filter(
      (p) => (p.startsWith('/home/alice/') || p.startsWith('/srv')) && baseHost[p]?.kind !== 'symlink',
    );
    fc.assert(
      fc.property(
        fc.subarray(paths),
        fc.subarray(paths),
        fc.subarray(hiddenChoices),
        fc.dictionary(fc.constantFrom('SECRET', 'TOKEN', 'HOME', 'PATH'), fc.string()),
        (ro, rw, hidden, hostEnv) => {
          let args: string[];
          try {
            args = planBwrapArgs(
              resolvePolicy('default', { filesystem: { readOnly: ro, writable: rw, hidden } }),
              ctx(baseHost, hostEnv),
            );
          } catch (err) {
            // The only acceptable refusal: a bind that is itself inside a hidden path.
            assert.ok(err instanceof MountPlanError && err.rule === 'filesystem.hidden', String(err));
            return;
          }
          const binds = [...triples(args, '--ro-bind'), ...triples(args, '--bind')].filter(
            ([, s]) => s !== '/dev/null',
          );
          assert.ok(
            binds.every(([, s]) => s !== '/'),
            'never binds /',
          );
          for (const [i, , dest] of binds) {
            for (const [j, , other] of binds) {
              if (other !== dest && other.startsWith(`${dest}/`)) assert.ok(i < j, `${dest} before ${other}`);
            }
          }
          for (const h of hidden) {
            const cover = binds.find(([, s]) => h.startsWith(`${s}/`));
            if (!cover) continue;
            const at = args.findIndex((a, i) => (a === '--tmpfs' || a === '/dev/null') && args[i + 1] === h);
            assert.ok(at > cover[0], `${h} hidden after its bind`);
          }
          for (const [name, value] of Object.entries(hostEnv)) {
            if (name === 'HOME' || name === 'PATH') continue;
            assert.ok(
              !args.some((a, i) => a === '--setenv' && args[i + 1] === name && args[i + 2] === value),
            );
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
