/**
 * The unmodified `e2b` SDK against a real `ironcage serve` app on 127.0.0.1:0, for what e2b-compat.test.ts does
 * not cover: files.watchDir (and envd's polling watcher RPCs, spoken here as plain Connect JSON since the JS
 * SDK streams), pause / connect-to-resume / the state filter of list, closeStdin, and getMetrics. Real
 * sandboxes, store and keys; the agent's inotify watches are counted from the host's /proc.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type FilesystemEvent, Sandbox } from 'e2b';
import { E2B_ENVD_VERSION } from '../../src/server/e2b/api.js';
import {
  e2bConnection,
  inotifyWatches,
  serverStateDir,
  startServer,
  type TestServer,
  until,
  WATCH_COUNT_SKIP,
} from './server-fixture.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True when the cgroup directories hold both CPU and memory accounting (what getMetrics needs). */
function hasCpuAndMemoryAccounting(dirs: readonly string[]): boolean {
  const has = (file: string) =>
    dirs.some((dir) => {
      try {
        readFileSync(posix.join(dir, file));
        return true;
      } catch {
        return false;
      }
    });
  return (has('cpu.stat') || has('cpuacct.usage')) && (has('memory.current') || has('memory.usage_in_bytes'));
}

describe('e2b SDK extras against ironcage serve', { timeout: 180_000 }, () => {
  let server: TestServer;
  let state: { dir: string; cleanup(): void };
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string; requestTimeoutMs: number };

  before(async () => {
    state = serverStateDir('e2b-extras');
    server = await startServer(state.dir);
    opts = e2bConnection(server);
  });

  after(async () => {
    await server?.close();
    state?.cleanup();
  });

  test('files.watchDir: events with relative names, recursive, and stop() removes the watch', {
    skip: WATCH_COUNT_SKIP,
  }, async () => {
    const sandbox = await Sandbox.create(opts);
    try {
      assert.equal((await sandbox.getInfo()).envdVersion, E2B_ENVD_VERSION);
      const agentPid = server.manager.get(sandbox.sandboxId)?.initPid ?? -1;
      await sandbox.files.makeDir('/tmp/ew/sub');
      const baseline = inotifyWatches(agentPid);

      const flat: FilesystemEvent[] = [];
      const watch = await sandbox.files.watchDir('/tmp/ew', (e) => {
        flat.push(e);
      });
      assert.equal(inotifyWatches(agentPid), baseline + 1);
      await sandbox.files.write('/tmp/ew/a.txt', 'a');
      await sandbox.files.rename('/tmp/ew/a.txt', '/tmp/ew/b.txt');
      await sandbox.files.write('/tmp/ew/sub/hidden.txt', 'not reported: not recursive');
      await sandbox.files.remove('/tmp/ew/b.txt');
      await until('the remove event', () => flat.some((e) => e.type === 'remove'));
      const seen = flat.map((e) => `${e.type}:${e.name}`);
      for (const expected of [
        'create:a.txt',
        'write:a.txt',
        'rename:a.txt',
        'create:b.txt',
        'remove:b.txt',
      ]) {
        assert.ok(seen.includes(expected), `${expected} in ${seen.join(', ')}`);
      }
      assert.ok(!seen.some((s) => s.includes('hidden')), seen.join(', '));
      await watch.stop();
      await until('the watch to be removed', () => inotifyWatches(agentPid) === baseline);

      const deep: FilesystemEvent[] = [];
      const recursive = await sandbox.files.watchDir(
        '/tmp/ew',
        (e) => {
          deep.push(e);
        },
        { recursive: true },
      );
      await sandbox.files.write('/tmp/ew/sub/deep.txt', 'deep');
      await until('the nested event', () =>
        deep.some((e) => e.name === 'sub/deep.txt' && e.type === 'create'),
      );
      await recursive.stop();
      await until('the recursive watch to be removed', () => inotifyWatches(agentPid) === baseline);

      await assert.rejects(
        sandbox.files.watchDir('/tmp/ew/none', () => {}),
        /not found|no such/i,
      );
      await assert.rejects(
        sandbox.files.watchDir('/tmp/ew/sub/deep.txt', () => {}),
        /not a directory/,
      );
      assert.equal(inotifyWatches(agentPid), baseline, 'refused watches leave nothing behind');
    } finally {
      await sandbox.kill();
    }
  });

  test("envd's polling watchers: CreateWatcher, GetWatcherEvents, RemoveWatcher (Connect JSON)", {
    skip: WATCH_COUNT_SKIP,
  }, async () => {
    const sandbox = await Sandbox.create(opts);
    try {
      const agentPid = server.manager.get(sandbox.sandboxId)?.initPid ?? -1;
      const token = (sandbox as unknown as { envdAccessToken: string }).envdAccessToken;
      const rpc = async (method: string, message: unknown) => {
        const res = await fetch(`${opts.sandboxUrl}/filesystem.Filesystem/${method}`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'e2b-sandbox-id': sandbox.sandboxId,
            'x-access-token': token,
          },
          body: JSON.stringify(message),
        });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      await sandbox.files.makeDir('/tmp/poll');
      const baseline = inotifyWatches(agentPid);
      const created = await rpc('CreateWatcher', { path: '/tmp/poll', recursive: false });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      const watcherId = created.body.watcherId as string;
      assert.match(watcherId, /^[0-9a-f-]{36}$/);
      assert.equal(inotifyWatches(agentPid), baseline + 1);

      await sandbox.files.write('/tmp/poll/p.txt', 'p');
      let events: { name: string; type: string }[] = [];
      for (let i = 0; i < 50 && !events.some((e) => e.type === 'EVENT_TYPE_WRITE'); i++) {
        const polled = await rpc('GetWatcherEvents', { watcherId });
        assert.equal(polled.status, 200);
        events = events.concat(polled.body.events as typeof events);
        await sleep(50);
      }
      assert.deepEqual(events[0], { name: 'p.txt', type: 'EVENT_TYPE_CREATE' });
      assert.ok(events.some((e) => e.type === 'EVENT_TYPE_WRITE' && e.name === 'p.txt'));
      const drained = await rpc('GetWatcherEvents', { watcherId });
      assert.deepEqual(drained.body, { events: [] }, 'events are handed out once');

      const removed = await rpc('RemoveWatcher', { watcherId });
      assert.equal(removed.status, 200);
      await until('the watch to be removed', () => inotifyWatches(agentPid) === baseline);
      const gone = await rpc('GetWatcherEvents', { watcherId });
      assert.equal(gone.status, 404);
      assert.equal(gone.body.code, 'not_found');

      const missing = await rpc('CreateWatcher', { path: '/tmp/poll/none' });
      assert.equal(missing.status, 404);
      const entry = await rpc('CreateWatcher', { path: '/tmp/poll', includeEntry: true });
      assert.equal(entry.status, 501, 'includeEntry is refused, not ignored');
    } finally {
      await sandbox.kill();
    }
  });

  test('pause freezes the sandbox, list filters by state, connect resumes it', async (t) => {
    const sandbox = await Sandbox.create({ ...opts, metadata: { suite: 'e2b-extras-pause' } });
    try {
      if (!server.manager.get(sandbox.sandboxId)?.canPause) {
        t.skip('no cgroup freezer on this host');
        return;
      }
      const ticks: string[] = [];
      const ticker = await sandbox.commands.run('i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done', {
        background: true,
        onStdout: (data) => {
          ticks.push(data);
        },
      });
      await until('the ticker to run', () => ticks.length >= 3);

      assert.equal(await sandbox.pause(), true);
      assert.equal(server.manager.get(sandbox.sandboxId)?.state, 'paused');
      assert.equal((await sandbox.getInfo()).state, 'paused');
      await sleep(100); // output already on its way may still land
      const frozenAt = ticks.length;
      await sleep(600);
      assert.equal(ticks.length, frozenAt, 'nothing runs while paused');
      await assert.rejects(sandbox.commands.run('echo hi'), /paused/);
      assert.equal(await sandbox.pause(), false, 'already paused');

      const listed = (state: ('running' | 'paused')[]) =>
        Sandbox.list({ ...opts, query: { metadata: { suite: 'e2b-extras-pause' }, state } })
          .nextItems()
          .then((page) => page.map((s) => `${s.sandboxId}:${s.state}`));
      assert.deepEqual(await listed(['paused']), [`${sandbox.sandboxId}:paused`]);
      assert.deepEqual(await listed(['running']), []);
      assert.deepEqual(await listed(['running', 'paused']), [`${sandbox.sandboxId}:paused`]);

      const resumed = await Sandbox.connect(sandbox.sandboxId, opts);
      assert.equal((await resumed.getInfo()).state, 'running');
      await until('the ticker to continue', () => ticks.length > frozenAt + 3);
      assert.equal((await resumed.commands.run('echo back')).stdout, 'back\n');
      assert.deepEqual(await listed(['running']), [`${sandbox.sandboxId}:running`]);
      await ticker.kill();

      await assert.rejects(sandbox.pause({ keepMemory: false }), /keepMemory/);
      assert.equal(
        server.manager.get(sandbox.sandboxId)?.state,
        'running',
        'the refused pause changed nothing',
      );
    } finally {
      await sandbox.kill();
    }
  });

  test('the deprecated POST /sandboxes/{id}/resume resumes a paused sandbox', async (t) => {
    const sandbox = await Sandbox.create(opts);
    try {
      if (!server.manager.get(sandbox.sandboxId)?.canPause) {
        t.skip('no cgroup freezer on this host');
        return;
      }
      const resume = () =>
        fetch(`${opts.apiUrl}/sandboxes/${sandbox.sandboxId}/resume`, {
          method: 'POST',
          headers: { 'x-api-key': opts.apiKey, 'content-type': 'application/json' },
          body: JSON.stringify({ timeout: 120 }),
        });
      assert.equal((await resume()).status, 409, 'a running sandbox is not resumed');
      await sandbox.pause();
      const res = await resume();
      assert.equal(res.status, 201);
      const body = (await res.json()) as { sandboxID: string; envdAccessToken: string };
      assert.equal(body.sandboxID, sandbox.sandboxId);
      const live = server.manager.get(sandbox.sandboxId);
      assert.equal(live?.state, 'running');
      assert.ok(Math.abs((live?.deadline ?? 0) - (Date.now() + 120_000)) < 10_000, 'the timeout was applied');
      assert.equal((await sandbox.commands.run('echo ok')).stdout, 'ok\n');
    } finally {
      await sandbox.kill();
    }
  });

  test('closeStdin (envd 0.5.2) ends a command reading stdin', async () => {
    const sandbox = await Sandbox.create(opts);
    try {
      const cat = await sandbox.commands.run('cat; echo done', { background: true, stdin: true });
      await sandbox.commands.sendStdin(cat.pid, 'line\n');
      await sandbox.commands.closeStdin(cat.pid);
      const result = await cat.wait();
      assert.equal(result.stdout, 'line\ndone\n');
    } finally {
      await sandbox.kill();
    }
  });

  test("getMetrics: the sandbox's cgroup CPU and memory and its workspace, or nothing without a cgroup", async () => {
    const sandbox = await Sandbox.create(opts);
    try {
      const live = server.manager.get(sandbox.sandboxId);
      assert.ok(live);
      const measurable = hasCpuAndMemoryAccounting(live.cgroupDirs);
      // The workspace is the workdir's tree (/tmp is not part of it).
      await sandbox.files.write(`${live.policy.filesystem.workdir}/ballast.bin`, 'x'.repeat(256 * 1024));
      const burner = await sandbox.commands.run('while :; do :; done', { background: true });
      await sleep(300);
      const metrics = await sandbox.getMetrics();
      await burner.kill();
      if (!measurable) {
        assert.deepEqual(metrics, [], 'no cgroup accounting: no numbers are made up');
        return;
      }
      assert.equal(metrics.length, 1);
      const [m] = metrics;
      assert.ok(m !== undefined);
      assert.ok(Math.abs(m.timestamp.getTime() - Date.now()) < 10_000);
      assert.ok(m.cpuCount >= 1);
      assert.ok(m.cpuUsedPct > 10, `a busy loop shows as CPU use (${m.cpuUsedPct}%)`);
      assert.ok(m.cpuUsedPct <= 100);
      assert.ok(m.memUsed > 0 && m.memUsed <= m.memTotal, `${m.memUsed} of ${m.memTotal}`);
      const usage = await live.workspaceUsage();
      assert.equal(m.diskTotal, usage.quotaBytes);
      assert.ok(m.diskUsed >= 256 * 1024, `the workspace holds the ballast (${m.diskUsed})`);

      const idle = await sandbox.getMetrics();
      assert.ok((idle[0]?.cpuUsedPct ?? 100) < m.cpuUsedPct, 'an idle sandbox uses less CPU');
      const past = await sandbox.getMetrics({
        start: new Date(Date.now() - 3_600_000),
        end: new Date(Date.now() - 1_800_000),
      });
      assert.deepEqual(past, [], 'no history is kept');
    } finally {
      await sandbox.kill();
    }
  });
});
