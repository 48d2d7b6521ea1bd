/** The `network` policy field and what the planner does with a run's egress proxy. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EGRESS_SOCKET_PATH, type HostView, planBwrapArgs } from '../../src/isolation/mounts.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import { sandboxPolicySchema } from '../../src/policy/schema.js';

// A fake, empty host: every optional system path is absent, so only ironcage's own mounts are planned.
const emptyHost: HostView = { lookup: () => null, realpath: () => null, homes: [] };
const ctx = {
  host: emptyHost,
  agent: { fd: 11 },
  hostEnv: {},
  fds: { seccomp: 3, passwd: 5, group: 6, hosts: 7 },
};

describe('network policy', () => {
  test("defaults to mode 'none'", () => {
    assert.deepEqual(sandboxPolicySchema.parse({}).network, { mode: 'none' });
  });

  test('proxy mode fills defaults and keeps the rules as written', () => {
    const network = sandboxPolicySchema.parse({
      network: { mode: 'proxy', allow: ['*.Example.com:443'] },
    }).network;
    assert.deepEqual(network, {
      mode: 'proxy',
      allow: ['*.Example.com:443'],
      deny: [],
      allowPrivate: [],
      requests: [],
      intercept: [],
      onUndecided: 'deny',
      port: 3128,
      secrets: [],
      limits: {},
    });
  });

  test('invalid rules, ports and fields are refused', () => {
    for (const network of [
      { mode: 'proxy', allow: ['exa mple.com'] },
      { mode: 'proxy', deny: ['10.0.0.0/99'] },
      { mode: 'proxy', allowPrivate: ['example.com'] },
      { mode: 'proxy', port: 0 },
      { mode: 'proxy', requests: [{ action: 'allow', host: 'a.com', paths: ['no-slash'] }] },
      { mode: 'proxy', requests: [{ action: 'maybe', host: 'a.com' }] },
      { mode: 'proxy', secrets: ['not a name'] },
      { mode: 'proxy', limits: { requestsPerSecond: -1 } },
      { mode: 'none', allow: ['example.com'] },
      { mode: 'open' },
    ]) {
      assert.equal(sandboxPolicySchema.safeParse({ network }).success, false, JSON.stringify(network));
    }
  });
});

describe('planner with an egress proxy', () => {
  test('binds the socket and points the proxy variables at the relay port; a policy env.set still wins', () => {
    const policy = resolvePolicy('default', { env: { set: { no_proxy: 'internal' } } });
    const args = planBwrapArgs(policy, { ...ctx, egress: { socket: '/tmp/x/egress.sock', port: 4000 } });
    const bind = args.indexOf(EGRESS_SOCKET_PATH);
    assert.deepEqual(args.slice(bind - 2, bind + 1), ['--bind', '/tmp/x/egress.sock', EGRESS_SOCKET_PATH]);
    const env = new Map<string, string>();
    args.forEach((a, i) => {
      if (a === '--setenv') env.set(args[i + 1] as string, args[i + 2] as string);
    });
    for (const name of ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy']) {
      assert.equal(env.get(name), 'http://127.0.0.1:4000', name);
    }
    assert.equal(env.get('NO_PROXY'), '');
    assert.equal(env.get('no_proxy'), 'internal');
  });

  test('without one, nothing about a proxy is planned', () => {
    const args = planBwrapArgs(resolvePolicy('default'), ctx);
    assert.ok(!args.includes(EGRESS_SOCKET_PATH));
    assert.ok(!args.some((a) => /proxy/i.test(a)));
  });
});
