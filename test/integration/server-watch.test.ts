/**
 * File watching over HTTP: GET /v1/sandboxes/:id/files/watch (NDJSON) and the SDK's files.watchDir, against a
 * real `ironcage serve` app on 127.0.0.1:0 with real sandboxes; the agent's inotify watches are counted from
 * the host's /proc to prove every way a stream ends removes them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { IroncageError, NotFoundError, Sandbox as SdkSandbox, ValidationError } from '../../src/sdk/index.js';
import type { FileWatchEvent } from '../../src/sdk/types.js';
import {
  inotifyWatches,
  type Json,
  request,
  serverStateDir,
  startServer,
  type TestServer,
  until,
  WATCH_COUNT_SKIP,
} from './server-fixture.js';

/** An open watch stream read line by line as it arrives. */
class WatchStream {
  readonly lines: Json[] = [];
  readonly abort = new AbortController();
  ended = false;
  #done: Promise<void> = Promise.resolve();

  static async open(server: TestServer, key: string, sandboxId: string, query: string): Promise<WatchStream> {
    const stream = new WatchStream();
    const res = await fetch(`${server.url}/v1/sandboxes/${sandboxId}/files/watch?${query}`, {
      headers: { authorization: `Bearer ${key}` },
      signal: stream.abort.signal,
    });
    assert.equal(res.status, 200, await (res.ok ? Promise.resolve('') : res.text()));
    assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
    stream.#done = stream.#read(res);
    await stream.waitFor('the start line', (l) => l.type === 'start');
    return stream;
  }

  async #read(res: Response): Promise<void> {
    const decoder = new TextDecoder();
    let pending = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        pending += decoder.decode(chunk, { stream: true });
        for (let nl = pending.indexOf('\n'); nl !== -1; nl = pending.indexOf('\n')) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line !== '') this.lines.push(JSON.parse(line));
        }
      }
    } catch {
      // aborted by the test
    }
    this.ended = true;
  }

  events(): Json[] {
    return this.lines.filter((l) => l.type === 'event');
  }

  async waitFor(what: string, match: (line: Json) => boolean): Promise<Json> {
    await until(what, () => this.lines.some(match) || this.ended);
    const found = this.lines.find(match);
    assert.ok(found, `${what}: the stream ended first; lines: ${JSON.stringify(this.lines)}`);
    return found;
  }

  async event(kind: string, name: string): Promise<Json> {
    return this.waitFor(`${kind} ${name}`, (l) => l.type === 'event' && l.kind === kind && l.name === name);
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.#done;
  }

  async finished(): Promise<void> {
    await this.#done;
  }
}

describe('file watch over HTTP', { timeout: 120_000, skip: WATCH_COUNT_SKIP }, () => {
  const state = serverStateDir('server-watch');
  let server: TestServer;
  let admin: string;
  let sandboxId: string;
  let agentPid: number;

  const put = (path: string, body: string, id = sandboxId) =>
    request(server, 'PUT', `/v1/sandboxes/${id}/files?path=${encodeURIComponent(path)}`, {
      key: admin,
      raw: body,
      headers: { 'content-type': 'application/octet-stream' },
    });
  const mkdir = (path: string) =>
    request(server, 'POST', `/v1/sandboxes/${sandboxId}/files/mkdir`, { key: admin, body: { path } });
  const remove = (path: string) =>
    request(server, 'DELETE', `/v1/sandboxes/${sandboxId}/files?path=${encodeURIComponent(path)}`, {
      key: admin,
    });

  before(async () => {
    server = await startServer(state.dir);
    admin = server.adminKey;
    const created = await request(server, 'POST', '/v1/sandboxes', { key: admin, body: {} });
    assert.equal(created.status, 201, created.text);
    sandboxId = created.json.id;
    agentPid = server.manager.get(sandboxId)?.initPid ?? -1;
    assert.ok(agentPid > 0);
  });

  after(async () => {
    await server?.close();
    state.cleanup();
  });

  test('create, write, rename and remove arrive; a non-recursive watch ignores subdirectories', async () => {
    assert.equal((await mkdir('/tmp/w/sub')).status, 201);
    const before = inotifyWatches(agentPid);
    const stream = await WatchStream.open(server, admin, sandboxId, 'path=/tmp/w');
    try {
      assert.deepEqual(stream.lines[0], { type: 'start', path: '/tmp/w' });
      assert.equal(inotifyWatches(agentPid), before + 1, 'one directory, one inotify watch');
      assert.equal((await put('/tmp/w/a.txt', 'hello')).status, 201);
      const created = await stream.event('create', 'a.txt');
      assert.equal(created.path, '/tmp/w/a.txt');
      await stream.event('write', 'a.txt');
      const moved = await request(server, 'POST', `/v1/sandboxes/${sandboxId}/files/rename`, {
        key: admin,
        body: { from: '/tmp/w/a.txt', to: '/tmp/w/b.txt' },
      });
      assert.equal(moved.status, 200);
      await stream.event('rename', 'a.txt');
      await stream.event('create', 'b.txt');
      assert.equal((await put('/tmp/w/sub/deep.txt', 'deep')).status, 201);
      assert.equal((await remove('/tmp/w/b.txt')).status, 200);
      await stream.event('remove', 'b.txt');
      // deep.txt was written before b.txt was removed, and events arrive in order: it was never reported.
      assert.ok(
        !stream.events().some((e) => String(e.name).startsWith('sub/')),
        JSON.stringify(stream.events()),
      );
    } finally {
      await stream.close();
    }
    await until('the watch to be removed', () => inotifyWatches(agentPid) === before);
  });

  test('recursive: existing and new subdirectories are watched, names are relative', async () => {
    assert.equal((await mkdir('/tmp/r/pre')).status, 201);
    const before = inotifyWatches(agentPid);
    const stream = await WatchStream.open(server, admin, sandboxId, 'path=/tmp/r&recursive=true');
    try {
      assert.equal(inotifyWatches(agentPid), before + 2, '/tmp/r and /tmp/r/pre');
      assert.equal((await put('/tmp/r/pre/g.txt', 'g')).status, 201);
      const deep = await stream.event('create', 'pre/g.txt');
      assert.equal(deep.path, '/tmp/r/pre/g.txt');
      assert.equal((await mkdir('/tmp/r/new')).status, 201);
      await stream.event('create', 'new');
      // The agent adds the new directory's watch when it reads that create event.
      await until('the new directory to be watched', () => inotifyWatches(agentPid) === before + 3);
      assert.equal((await put('/tmp/r/new/h.txt', 'h')).status, 201);
      await stream.event('write', 'new/h.txt');
    } finally {
      await stream.close();
    }
    await until('every watch of the stream to be removed', () => inotifyWatches(agentPid) === before);
  });

  test('a relative path is under the workdir; missing paths, files, unknown sandboxes and other tenants are 4xx', async () => {
    const workdir = server.manager.get(sandboxId)?.policy.filesystem.workdir;
    const before = inotifyWatches(agentPid);
    assert.equal((await mkdir('rel')).status, 201);
    const stream = await WatchStream.open(server, admin, sandboxId, 'path=rel');
    assert.deepEqual(stream.lines[0], { type: 'start', path: `${workdir}/rel` });
    await stream.close();
    await until('the watch to be removed', () => inotifyWatches(agentPid) === before);

    const get = (query: string, key = admin, id = sandboxId) =>
      request(server, 'GET', `/v1/sandboxes/${id}/files/watch?${query}`, { key });
    const missing = await get('path=/tmp/no-such-dir');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.code, 'FILE_NOT_FOUND');
    assert.equal((await put('/tmp/plain.txt', 'x')).status, 201);
    const file = await get('path=/tmp/plain.txt');
    assert.equal(file.status, 400);
    assert.equal(file.json.error.code, 'NOT_A_DIRECTORY');
    assert.match(file.json.error.message, /not a directory/);
    assert.equal((await get('')).status, 400, 'path is required');
    assert.equal((await get('path=/tmp&recursive=maybe')).status, 400);
    assert.equal((await get('path=/tmp', admin, 'feedfacefeedface')).status, 404);
    const tenant = await server.newKey(['sandbox']);
    const foreign = await get('path=/tmp', tenant.key);
    assert.equal(foreign.status, 404, "another tenant's sandbox is not found");
    assert.equal(inotifyWatches(agentPid), before, 'refused requests leave no watch');
  });

  test('many streams opened and dropped leave no watch behind', async () => {
    const warnings: string[] = [];
    // Only the server's own listeners: the library's Files.watch adds one fs-event listener per watch to the
    // agent client (reported upstream), which is not what this checks.
    const onWarning = (w: Error & { type?: unknown }) => warnings.push(`${w.name}:${String(w.type)}`);
    process.on('warning', onWarning);
    const before = inotifyWatches(agentPid);
    const streams = await Promise.all(
      Array.from({ length: 12 }, () =>
        WatchStream.open(server, admin, sandboxId, 'path=/tmp&recursive=true'),
      ),
    );
    assert.ok(inotifyWatches(agentPid) > before);
    await Promise.all(streams.map((s) => s.close()));
    await until('all watches to be removed', () => inotifyWatches(agentPid) === before);
    process.off('warning', onWarning);
    assert.ok(
      !warnings.includes('MaxListenersExceededWarning:stopped'),
      'one stop listener per sandbox, not per stream',
    );
  });

  test('a killed sandbox ends the stream with SANDBOX_STOPPED', async () => {
    const created = await request(server, 'POST', '/v1/sandboxes', { key: admin, body: {} });
    const id = created.json.id as string;
    const stream = await WatchStream.open(server, admin, id, 'path=/tmp');
    assert.equal((await request(server, 'DELETE', `/v1/sandboxes/${id}`, { key: admin })).status, 200);
    await stream.finished();
    const last = stream.lines.at(-1);
    assert.equal(last?.type, 'error');
    assert.equal(last?.code, 'SANDBOX_STOPPED');
  });

  test('the OpenAPI document lists the watch route', async () => {
    const doc = await request(server, 'GET', '/openapi.json', { key: admin });
    const op = doc.json.paths['/v1/sandboxes/{id}/files/watch']?.get;
    assert.ok(op, 'documented');
    assert.ok(op.responses['200'].content['application/x-ndjson']);
    const names = op.parameters.map((p: Json) => p.name).sort();
    assert.deepEqual(names, ['id', 'path', 'recursive']);
  });

  describe('SDK files.watchDir', () => {
    test('events arrive, stop() ends the stream and removes the watch', async () => {
      const sandbox = await SdkSandbox.connect(sandboxId, { apiUrl: server.url, apiKey: admin });
      await sandbox.files.makeDir('/tmp/sdkw');
      const before = inotifyWatches(agentPid);
      const events: FileWatchEvent[] = [];
      const exits: (IroncageError | null)[] = [];
      const handle = await sandbox.files.watchDir('/tmp/sdkw', (e) => events.push(e), {
        onExit: (err) => exits.push(err),
      });
      assert.equal(handle.path, '/tmp/sdkw');
      await sandbox.files.write('/tmp/sdkw/x.txt', 'x');
      await sandbox.files.remove('/tmp/sdkw/x.txt');
      await until('create and remove', () => events.some((e) => e.kind === 'remove'));
      assert.deepEqual(events[0], { kind: 'create', name: 'x.txt', path: '/tmp/sdkw/x.txt' });
      assert.ok(events.some((e) => e.kind === 'write' && e.name === 'x.txt'));
      await handle.stop();
      assert.equal(await handle.ended, null);
      assert.deepEqual(exits, [null]);
      await until('the watch to be removed', () => inotifyWatches(agentPid) === before);
      const count = events.length;
      await sandbox.files.write('/tmp/sdkw/after.txt', 'late');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(events.length, count, 'no events after stop()');
    });

    test('recursive option and AbortSignal', async () => {
      const sandbox = await SdkSandbox.connect(sandboxId, { apiUrl: server.url, apiKey: admin });
      await sandbox.files.makeDir('/tmp/sdkr/inner');
      const before = inotifyWatches(agentPid);
      const abort = new AbortController();
      const events: FileWatchEvent[] = [];
      const handle = await sandbox.files.watchDir('/tmp/sdkr', (e) => events.push(e), {
        recursive: true,
        signal: abort.signal,
      });
      await sandbox.files.write('/tmp/sdkr/inner/y.txt', 'y');
      await until('the nested create', () => events.some((e) => e.name === 'inner/y.txt'));
      abort.abort();
      assert.equal(await handle.ended, null);
      await until('the watch to be removed', () => inotifyWatches(agentPid) === before);
    });

    test('typed errors: missing path, a file; a killed sandbox ends the watch with SANDBOX_STOPPED', async () => {
      const conn = { apiUrl: server.url, apiKey: admin };
      const sandbox = await SdkSandbox.create(conn);
      await assert.rejects(
        sandbox.files.watchDir('/tmp/none', () => {}),
        NotFoundError,
      );
      await sandbox.files.write('/tmp/f.txt', 'f');
      await assert.rejects(
        sandbox.files.watchDir('/tmp/f.txt', () => {}),
        (err: unknown) => err instanceof ValidationError && err.code === 'NOT_A_DIRECTORY',
      );
      const handle = await sandbox.files.watchDir('/tmp', () => {});
      await sandbox.kill();
      const ended = await handle.ended;
      assert.ok(ended instanceof IroncageError);
      assert.equal(ended.code, 'SANDBOX_STOPPED');
    });
  });

  test('closing the server ends open watch streams instead of waiting for their clients', async () => {
    const ownState = serverStateDir('server-watch-close');
    const own = await startServer(ownState.dir);
    try {
      const created = await request(own, 'POST', '/v1/sandboxes', { key: own.adminKey, body: {} });
      const stream = await WatchStream.open(own, own.adminKey, created.json.id, 'path=/tmp');
      const closed = own.close().then(() => 'closed');
      const timeout = new Promise((r) => setTimeout(() => r('timeout'), 10_000).unref());
      assert.equal(await Promise.race([closed, timeout]), 'closed');
      await stream.finished();
      assert.equal(stream.lines.at(-1)?.code, 'SERVER_CLOSING');
    } finally {
      await own.close();
      ownState.cleanup();
    }
  });
});
