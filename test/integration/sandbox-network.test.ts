/**
 * Warm sandboxes with `network.mode: 'proxy'`: real bwrap, real curl and python3 inside, real HTTP servers on
 * the host's loopback (reachable from the sandbox's own network namespace only through its egress proxy).
 * Live rule updates, the persisted audit log, re-adoption after `kill -9` of the manager, and cleanup.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { replaceRules } from '../../src/egress/rules.js';
import { EGRESS_SOCKET_PATH, egressProxyEnvironment } from '../../src/isolation/mounts.js';
import { planWarmBwrapArgs, WARM_EGRESS_DIR, warmAgentCommand } from '../../src/isolation/warm.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import { sandboxPaths } from '../../src/sandbox/layout.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { readMeta } from '../../src/sandbox/meta.js';
import { EgressLog, type EgressLogRecord, readEgressLog } from '../../src/sandbox/network.js';
import type { Sandbox } from '../../src/sandbox/sandbox.js';
import { PYTHON, processesWithMarker, tempStateDir } from './sandbox-fixture.js';

const CURL = ['/usr/bin/curl', '/bin/curl'].find((p) => existsSync(p));
const skip = (!CURL && 'needs curl') || (!PYTHON && 'needs python3') || false;

/** Two host servers: `allowed` is in the sandbox's rules from the start, `other` is not. */
const servers: Record<'allowed' | 'other', { server: http.Server; port: number; body: string }> = {} as never;

before(async () => {
  for (const name of ['allowed', 'other'] as const) {
    const body = `${name} server ${process.pid}`;
    const server = http.createServer((_req, res) => res.end(body));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    servers[name] = { server, port: (server.address() as AddressInfo).port, body };
  }
});
after(async () => {
  for (const { server } of Object.values(servers)) {
    server.closeAllConnections();
    await new Promise<void>((ok) => server.close(() => ok()));
  }
});

function proxyPolicy(): { network: { mode: 'proxy'; allow: string[]; allowPrivate: string[] } } {
  return {
    network: {
      mode: 'proxy',
      allow: [`127.0.0.1:${servers.allowed.port}`],
      allowPrivate: ['127.0.0.1'],
    },
  };
}

/** The sandbox's initial rules, for replace(). */
function initialRules(): { allow: string[]; allowPrivate: string[] } {
  const { allow, allowPrivate } = proxyPolicy().network;
  return { allow, allowPrivate };
}

/** A rule's canonical text, as the rules (and meta.json) keep it. */
function canonical(rule: string): string {
  return replaceRules({ allow: [rule] }).allow[0]?.text ?? rule;
}

/** curl through the proxy variables: status, the denied-rule header (or -), body. */
async function curl(sandbox: Sandbox, which: 'allowed' | 'other') {
  const r = await sandbox.commands.run(
    [
      CURL ?? 'curl',
      '-sS',
      '--max-time',
      '10',
      '-D',
      '/tmp/headers',
      '-o',
      '/tmp/body',
      '-w',
      '%{http_code}',
      `http://127.0.0.1:${servers[which].port}/`,
    ],
    {},
  );
  const headers = (await sandbox.commands.run(['cat', '/tmp/headers'], {})).stdout;
  const body = (await sandbox.commands.run(['cat', '/tmp/body'], {})).stdout;
  const rule = /^x-ironcage-denied-rule: *(.*?)\r?$/im.exec(headers)?.[1] ?? '-';
  return { status: r.stdout.trim(), rule, body, exitCode: r.exitCode, stderr: r.stderr };
}

/** A TCP connect straight to the host server's port, no proxy. */
async function directConnect(sandbox: Sandbox): Promise<string> {
  const script = [
    'import socket',
    'try:',
    `    socket.create_connection(("127.0.0.1", ${servers.allowed.port}), timeout=5); print("connected")`,
    'except OSError as e:',
    '    print("refused", e.errno)',
  ].join('\n');
  return (await sandbox.commands.run([PYTHON ?? 'python3', '-c', script], {})).stdout.trim();
}

/** Lines of /proc/net/unix (the host's network namespace) naming `path`: a socket still bound there. */
function boundUnixSockets(path: string): string[] {
  return readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .filter((line) => line.endsWith(` ${path}`));
}

describe('warm sandbox egress', { skip, concurrency: false }, () => {
  const state = tempStateDir('network');
  let manager: SandboxManager;
  let sandbox: Sandbox;
  const emitted: EgressLogRecord[] = [];

  before(async () => {
    manager = new SandboxManager({ stateDir: state.dir, onStartup: 'reap', quotaCheckMs: 0 });
    await manager.start();
    sandbox = await manager.create({ id: 'net-a', timeoutMs: null, policy: proxyPolicy() });
    sandbox.on('egress', (e) => emitted.push(e));
  });
  after(async () => {
    await manager.close();
    state.cleanup();
  });

  test('an allowed destination is reached through the proxy', async () => {
    assert.equal(sandbox.network.enabled, true);
    const r = await curl(sandbox, 'allowed');
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual([r.status, r.rule, r.body], ['200', '-', servers.allowed.body]);
    const env = await sandbox.commands.run(['sh', '-c', 'echo "$HTTP_PROXY|$https_proxy|$NO_PROXY"'], {});
    assert.equal(env.stdout, 'http://127.0.0.1:3128|http://127.0.0.1:3128|\n');
    // The relay's target inside is the same path one-shot runs use.
    const link = await sandbox.commands.run(['readlink', EGRESS_SOCKET_PATH], {});
    assert.equal(link.exitCode, 0, link.stderr);
  });

  test('a destination outside the rules gets 403 with the deciding rule', async () => {
    const r = await curl(sandbox, 'other');
    assert.equal(r.status, '403');
    assert.notEqual(r.rule, '-');
    assert.ok(!r.body.includes(servers.other.body));
  });

  test('a direct connect, bypassing the proxy, fails', async () => {
    assert.match(await directConnect(sandbox), /^refused /);
    const noProxy = await sandbox.commands.run(
      [
        CURL ?? 'curl',
        '-sS',
        '--noproxy',
        '*',
        '--max-time',
        '5',
        `http://127.0.0.1:${servers.allowed.port}/`,
      ],
      {},
    );
    assert.notEqual(noProxy.exitCode, 0);
    assert.ok(!noProxy.stdout.includes(servers.allowed.body));
  });

  test('the sandbox cannot change the socket directory', async () => {
    const r = await sandbox.commands.run(
      ['sh', '-c', 'ls /.ironcage/egress; rm -f /.ironcage/egress/egress.sock; touch /.ironcage/egress/x'],
      {},
    );
    assert.notEqual(r.exitCode, 0);
    assert.ok(existsSync(sandboxPaths(state.dir, 'net-a').egressSocket));
    assert.equal((await curl(sandbox, 'allowed')).status, '200');
  });

  test('merge opens a destination live, replace closes it again; both are persisted', async () => {
    const otherRule = canonical(`127.0.0.1:${servers.other.port}`);
    const merged = sandbox.network.merge({ allow: [`127.0.0.1:${servers.other.port}`] });
    assert.ok(merged.allow.some((r) => r.text === otherRule));
    const opened = await curl(sandbox, 'other');
    assert.deepEqual([opened.status, opened.body], ['200', servers.other.body]);
    const meta = readMeta(sandboxPaths(state.dir, 'net-a').meta);
    assert.ok(meta.egressRules?.allow?.includes(otherRule), 'the merged rule is in meta.json');

    sandbox.network.replace(initialRules());
    assert.deepEqual(
      sandbox.network.rules().allow.map((r) => r.text),
      [canonical(`127.0.0.1:${servers.allowed.port}`)],
    );
    assert.equal((await curl(sandbox, 'other')).status, '403');
    assert.equal((await curl(sandbox, 'allowed')).status, '200');
    const after = readMeta(sandboxPaths(state.dir, 'net-a').meta);
    assert.ok(!after.egressRules?.allow?.includes(otherRule), 'the removal is in meta.json');
  });

  test('invalid rules throw the rules error and leave the old rules in force', async () => {
    const before = sandbox.network.rules();
    assert.throws(() => sandbox.network.merge({ allow: ['not a rule at all:xyz'] }));
    assert.throws(() => sandbox.network.replace({ allowPrivate: ['example.com'] }));
    assert.deepEqual(sandbox.network.rules(), before);
    assert.equal((await curl(sandbox, 'allowed')).status, '200');
  });

  test('every decision is in the audit log, in order, and pages', async () => {
    const all = sandbox.network.events({ limit: 1000 });
    assert.ok(all.events.length >= 6, `expected several events, got ${all.events.length}`);
    assert.deepEqual(
      all.events.map((e) => e.seq),
      all.events.map((_, i) => i + 1),
      'seq starts at 1 and has no gaps',
    );
    assert.deepEqual(all.events, emitted, "the log holds exactly what the 'egress' event delivered");
    assert.ok(all.events.every((e) => e.sandboxId === 'net-a' && !Number.isNaN(Date.parse(e.time))));
    const denied = all.events.filter((e) => e.decision === 'deny');
    assert.ok(denied.length >= 2 && denied.every((e) => e.type === 'denied' && e.rule !== undefined));
    assert.ok(all.events.some((e) => e.decision === 'allow' && e.status === 200));

    const pages: EgressLogRecord[] = [];
    let since = 0;
    for (let i = 0; i < 100; i++) {
      const page = sandbox.network.events({ since, limit: 2 });
      if (page.events.length === 0) break;
      assert.ok(page.events.length <= 2);
      pages.push(...page.events);
      since = page.next;
    }
    assert.deepEqual(pages, all.events);
    assert.equal(sandbox.network.events({ since: all.next }).events.length, 0);
    // Persisted as JSON lines in the sandbox's directory.
    const lines = readFileSync(sandboxPaths(state.dir, 'net-a').egressLog, 'utf8').trim().split('\n');
    assert.equal(lines.length, all.events.length);
  });

  test("a sandbox with network 'none' has no proxy, and saying how to get one", async () => {
    const plain = await manager.create({ id: 'net-none', timeoutMs: null });
    try {
      assert.equal(plain.network.enabled, false);
      assert.deepEqual(plain.network.rules().allow, []);
      assert.throws(
        () => plain.network.merge({ allow: ['example.com'] }),
        (err: Error & { code?: string }) =>
          err.code === 'SANDBOX_NETWORK_DISABLED' && /mode: 'proxy'/.test(err.message),
      );
      assert.deepEqual(plain.network.events(), { events: [], next: 0 });
      const env = await plain.commands.run(['sh', '-c', 'echo "[$HTTP_PROXY]"'], {});
      assert.equal(env.stdout, '[]\n');
      assert.match(await directConnect(plain), /^refused /);
    } finally {
      await plain.kill();
    }
  });

  test('kill removes the socket and stops the proxy listener', async () => {
    const sb = await manager.create({ id: 'net-kill', timeoutMs: null, policy: proxyPolicy() });
    const paths = sandboxPaths(state.dir, 'net-kill');
    assert.equal((await curl(sb, 'allowed')).status, '200');
    assert.equal(boundUnixSockets(paths.egressSocket).length, 1, 'the proxy listens');
    await sb.kill();
    assert.equal(existsSync(paths.egressSocket), false);
    assert.equal(existsSync(paths.dir), false);
    assert.deepEqual(boundUnixSockets(paths.egressSocket), []);
    assert.throws(() => sb.network.merge({ allow: ['example.com'] }), { code: 'SANDBOX_STOPPED' });
  });
});

const managerUrl = pathToFileURL(join(import.meta.dirname, '../../src/sandbox/manager.js')).href;

describe('warm sandbox egress after kill -9 of the manager', { skip }, () => {
  test('a re-adopting manager restarts the proxy with the rules as last updated and continues the log', async () => {
    const state = tempStateDir('network-crash');
    after(() => state.cleanup());
    const marker = `ironcage-net-crash-${process.pid}-${Date.now()}`;
    const { allowed, other } = servers;
    // The child creates the sandbox, opens `other` live, uses both servers, then is killed with SIGKILL.
    const script = `
      const { SandboxManager } = await import(${JSON.stringify(managerUrl)});
      const m = new SandboxManager({ stateDir: ${JSON.stringify(state.dir)}, onStartup: 'reap' });
      await m.start();
      const sb = await m.create({ id: 'net-crash', timeoutMs: null, policy: ${JSON.stringify(proxyPolicy())} });
      sb.network.merge({ allow: ['127.0.0.1:${other.port}'] });
      const codes = [];
      for (const port of [${allowed.port}, ${other.port}]) {
        const r = await sb.commands.run([${JSON.stringify(CURL)}, '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:' + port + '/'], {});
        codes.push(r.stdout);
      }
      await sb.commands.run(['bash', '-c', 'exec -a ${marker} sleep 600'], { background: true });
      process.stdout.write(JSON.stringify({ codes, events: sb.network.events().events.length }) + '\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const report = await new Promise<{ codes: string[]; events: number }>((resolve, reject) => {
      let text = '';
      child.stdout.on('data', (c: Buffer) => {
        text += c.toString();
        const nl = text.indexOf('\n');
        if (nl >= 0) resolve(JSON.parse(text.slice(0, nl)));
      });
      child.on('exit', (code) => reject(new Error(`the child manager exited early (code ${code})`)));
    });
    child.removeAllListeners('exit');
    const exited = new Promise((resolve) => child.on('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    assert.deepEqual(report.codes, ['200', '200']);
    assert.equal(report.events, 2);
    const paths = sandboxPaths(state.dir, 'net-crash');
    assert.ok(existsSync(paths.egressSocket), 'the dead proxy left its socket file');
    assert.equal(boundUnixSockets(paths.egressSocket).length, 0, 'nobody listens on it any more');

    const manager = new SandboxManager({ stateDir: state.dir, onStartup: 'adopt', quotaCheckMs: 0 });
    try {
      const started = await manager.start();
      assert.deepEqual(started.adopted, ['net-crash']);
      const sb = manager.get('net-crash');
      assert.ok(sb !== undefined);
      assert.ok(
        sb.network.rules().allow.some((r) => r.text === canonical(`127.0.0.1:${other.port}`)),
        'the live update made before the crash is in force',
      );
      assert.deepEqual(
        [(await curl(sb, 'other')).status, (await curl(sb, 'allowed')).body],
        ['200', allowed.body],
      );
      const events = sb.network.events().events;
      assert.deepEqual(
        events.map((e) => e.seq),
        [1, 2, 3, 4],
        'the re-adopting manager continues the seq',
      );
      sb.network.replace(initialRules());
      assert.equal((await curl(sb, 'other')).status, '403');
    } finally {
      await manager.close();
    }
    assert.deepEqual(processesWithMarker(marker), []);
    assert.deepEqual(readdirSync(join(state.dir, 'sandboxes')), []);
  });
});

describe('egress audit log files', () => {
  test('segments rotate, the oldest are dropped past the cap, and a reopened log continues the seq', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ironcage-egress-log-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'egress.jsonl');
    const limits = { segmentBytes: 2048, maxBytes: 6144 };
    const event = (i: number) =>
      ({
        type: 'request',
        protocol: 'http',
        destination: `host-${i}.example:80`,
        decision: 'allow',
        bytesUp: 0,
        bytesDown: i,
        durationMs: 1,
      }) as const;
    let log = new EgressLog(path, limits);
    for (let i = 1; i <= 150; i++) assert.equal(log.append(event(i)).seq, i);
    log.close();

    const files = readdirSync(dir);
    const total = files.reduce((sum, f) => sum + readFileSync(join(dir, f)).length, 0);
    assert.ok(files.length > 2, `rotated into segments: ${files.join(' ')}`);
    assert.ok(total <= limits.maxBytes + limits.segmentBytes, `capped: ${total} bytes`);

    const kept = readEgressLog(path, { limit: 1000 }).events;
    assert.ok(kept.length < 150, 'the oldest events were dropped');
    assert.equal(kept.at(-1)?.seq, 150);
    assert.deepEqual(
      kept.map((e) => e.seq),
      kept.map((_, i) => 150 - kept.length + 1 + i),
      'what is kept is the contiguous newest part',
    );
    const from = (kept[0]?.seq ?? 0) + 10;
    assert.deepEqual(
      readEgressLog(path, { since: from, limit: 3 }).events.map((e) => e.seq),
      [from, from + 1, from + 2],
    );

    // A torn last line (a crash mid-write) is skipped, and the seq continues after the last whole record.
    appendFileSync(path, '{"seq":151,"time":"x","ty');
    log = new EgressLog(path, limits);
    assert.equal(log.append(event(151)).seq, 151);
    log.close();
    const tail = readEgressLog(path, { since: 149 }).events.map((e) => e.seq);
    assert.deepEqual(tail, [149, 150, 151]);
  });
});

describe('warm plan with egress (pure)', () => {
  /** A fake host view (in-memory): only the planner's pure output is checked here. */
  const host = {
    homes: [],
    lookup: (p: string) => (p === '/usr' ? ({ kind: 'dir' } as const) : null),
    realpath: (p: string) => (p === '/usr' ? p : null),
  };
  const fds = { seccomp: 3, passwd: 4, group: 5, hosts: 6, info: 7, block: 8 };
  const dirs = { workspace: '/s/a/workspace', run: '/s/a/run' };
  const egress = { dir: '/s/a/egress', socketName: 'egress.sock', port: 4128 };

  test('binds the socket directory read-only, links EGRESS_SOCKET_PATH into it, sets the proxy variables', () => {
    const policy = resolvePolicy('default', { env: { set: { NO_PROXY: 'internal' } } });
    const args = planWarmBwrapArgs(policy, { host, agent: { fd: 9 }, hostEnv: {}, fds }, dirs, egress);
    const at = (...seq: string[]) => args.findIndex((_, i) => seq.every((x, j) => args[i + j] === x));
    assert.ok(at('--ro-bind', egress.dir, WARM_EGRESS_DIR) >= 0);
    assert.ok(at('--symlink', `${WARM_EGRESS_DIR}/egress.sock`, EGRESS_SOCKET_PATH) >= 0);
    assert.ok(!args.includes(`${egress.dir}/egress.sock`), 'the socket file itself is never bound');
    assert.ok(at('--ro-bind', egress.dir, WARM_EGRESS_DIR) < at('--remount-ro', '/'));
    for (const [name, value] of Object.entries(egressProxyEnvironment(4128))) {
      if (name !== 'NO_PROXY') assert.ok(at('--setenv', name, value) >= 0, name);
    }
    // The policy's own env.set still wins over the proxy variables.
    assert.ok(at('--setenv', 'NO_PROXY', 'internal') >= 0 && at('--setenv', 'NO_PROXY', '') < 0);
    assert.deepEqual(warmAgentCommand(30, 4128).slice(-2), ['--relay', `4128:${EGRESS_SOCKET_PATH}`]);
    const none = planWarmBwrapArgs(policy, { host, agent: { fd: 9 }, hostEnv: {}, fds }, dirs);
    assert.ok(!none.includes(WARM_EGRESS_DIR) && !none.includes('HTTP_PROXY'));
    assert.ok(!warmAgentCommand(30).includes('--relay'));
  });
});

describe('warm sandbox egress: the ask hook', { skip }, () => {
  test('undecided destinations go to the manager egressAsk hook, with the sandbox id', async () => {
    const state = tempStateDir('net-ask');
    const asked: { sandboxId?: string; destination: string }[] = [];
    const manager = new SandboxManager({
      stateDir: state.dir,
      onStartup: 'reap',
      // Approves the "allowed" server only: a human's answer, scripted.
      egressAsk: async (request) => {
        asked.push({
          ...(request.sandboxId ? { sandboxId: request.sandboxId } : {}),
          destination: request.destination,
        });
        return request.destination === `127.0.0.1:${servers.allowed.port}`;
      },
    });
    try {
      await manager.start();
      const sandbox = await manager.create({
        id: 'net-ask',
        timeoutMs: null,
        policy: { network: { mode: 'proxy', allowPrivate: ['127.0.0.1'], onUndecided: 'ask' } },
      });
      const approved = await curl(sandbox, 'allowed');
      assert.equal(approved.status, '200', approved.stderr);
      const refused = await curl(sandbox, 'other');
      assert.deepEqual([refused.status, refused.rule], ['403', 'ask:refused']);
      assert.deepEqual(
        asked.map((a) => a.sandboxId),
        ['net-ask', 'net-ask'],
      );
      await sandbox.kill();
    } finally {
      await manager.close();
      state.cleanup();
    }
  });
});
