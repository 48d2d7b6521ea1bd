/** File operations through the agent, for real: they resolve in the sandbox's own view, never the host's. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { AgentClient, AgentError, AgentExit, AgentFsEvent } from '../../src/agent/client.js';
import { type TestSandbox, useConnectedSandbox } from './agent-harness.js';

const HOME = '/home/sandbox';

describe('agent files', () => {
  let sb: TestSandbox;
  let client: AgentClient;
  useConnectedSandbox((s, c) => {
    sb = s;
    client = c;
  });

  async function sh(script: string): Promise<AgentExit> {
    let id = -1;
    const exit = new Promise<AgentExit>((resolve) =>
      client.on('exit', (pid: number, e: AgentExit) => {
        if (pid === id) resolve(e);
      }),
    );
    id = (await client.spawn({ argv: ['sh', '-c', script], env: {}, cwd: HOME })).id;
    return exit;
  }

  test('1 MiB written and read back byte for byte, and visible in the host workspace', async () => {
    const data = randomBytes(1024 * 1024 + 17);
    await client.writeFile(`${HOME}/big.bin`, data);
    assert.ok((await client.readFile(`${HOME}/big.bin`)).equals(data));
    assert.ok(readFileSync(join(sb.workspace, 'big.bin')).equals(data));
    const st = await client.stat(`${HOME}/big.bin`);
    assert.deepEqual(
      { type: st.type, size: st.size, name: st.name },
      { type: 'file', size: data.length, name: 'big.bin' },
    );
    const streamed: Buffer[] = [];
    for await (const chunk of client.readFileStream(`${HOME}/big.bin`)) streamed.push(chunk as Buffer);
    assert.ok(streamed.length > 1);
    assert.ok(Buffer.concat(streamed).equals(data));
    const slice = await client.readFile(`${HOME}/big.bin`, { offset: 1000, length: 10 });
    assert.ok(slice.equals(data.subarray(1000, 1010)));
  });

  test('write modes: truncate, append, explicit mode, empty file', async () => {
    await client.writeFile(`${HOME}/f.txt`, Buffer.from('one\n'), { mode: 0o600 });
    await client.writeFile(`${HOME}/f.txt`, Buffer.from('two\n'), { append: true });
    assert.equal((await client.readFile(`${HOME}/f.txt`)).toString(), 'one\ntwo\n');
    assert.equal((await client.stat(`${HOME}/f.txt`)).mode, 0o600);
    await client.writeFile(`${HOME}/f.txt`, Buffer.from('three\n'));
    assert.equal((await client.readFile(`${HOME}/f.txt`)).toString(), 'three\n');
    await client.writeFile(`${HOME}/empty`, new Uint8Array(0));
    assert.equal((await client.stat(`${HOME}/empty`)).size, 0);
  });

  test('`..` and symlinks resolve inside the sandbox: host-only paths do not exist there', async () => {
    // A host file next to (not inside) the workspace, and a workspace symlink pointing at its host path.
    const secret = join(sb.root, 'host-only-secret.txt');
    writeFileSync(secret, 'host secret');
    symlinkSync(secret, join(sb.workspace, 'leak'));
    symlinkSync(`../../../../../../..${secret}`, join(sb.workspace, 'leak-relative'));
    for (const path of [`${HOME}/leak`, `${HOME}/leak-relative`, secret, `${HOME}/../..${secret}`]) {
      await assert.rejects(client.readFile(path), (err: AgentError) => err.errno === 'ENOENT', path);
    }
    // /etc/shadow through `..` from the workdir: the sandbox's /etc has no shadow file.
    await assert.rejects(client.readFile('../../etc/shadow'), (err: AgentError) => {
      assert.equal(err.code, 'FILE_ERROR');
      assert.ok(err.errno === 'ENOENT' || err.errno === 'EACCES', err.errno);
      return true;
    });
    // Writes through the link land in the sandbox's view too (the target directory does not exist there).
    await assert.rejects(client.writeFile(`${HOME}/leak`, Buffer.from('x')), { errno: 'ENOENT' });
    assert.equal(readFileSync(secret, 'utf8'), 'host secret');
    // stat does not follow the link.
    assert.equal((await client.stat(`${HOME}/leak`)).type, 'symlink');
  });

  test('only regular files are read or written: directories, FIFOs and devices are refused without hanging', async () => {
    await assert.rejects(client.readFile(HOME), { errno: 'EISDIR' });
    const made = await sh(`mkfifo ${HOME}/fifo`);
    assert.equal(made.kind === 'exit' && made.code, 0);
    await assert.rejects(client.readFile(`${HOME}/fifo`), { errno: 'EINVAL' });
    await assert.rejects(client.readFile('/dev/zero'), { errno: 'EINVAL' });
    await assert.rejects(client.writeFile('/dev/null', Buffer.from('x')), { errno: 'EINVAL' });
    await assert.rejects(
      client.writeFile('/usr/bin/sh-nope', Buffer.from('x')),
      (err: AgentError) => err.errno === 'EROFS' || err.errno === 'EACCES',
    );
  });

  test('list with depth, lstat semantics and no descent into symlinked directories', async () => {
    await client.mkdir(`${HOME}/tree/a/b/c`, { parents: true });
    await client.writeFile(`${HOME}/tree/a/b/c/deep.txt`, Buffer.from('deep'));
    await client.writeFile(`${HOME}/tree/top.txt`, Buffer.from('top'));
    await sh(`ln -s ${HOME}/tree ${HOME}/tree/a/loop && ln -s /usr ${HOME}/tree/usr-link`);
    const names = (entries: { path: string }[]) =>
      entries.map((e) => e.path.slice(`${HOME}/tree/`.length)).sort();
    assert.deepEqual(names(await client.listDir(`${HOME}/tree`)), ['a', 'top.txt', 'usr-link']);
    assert.deepEqual(names(await client.listDir(`${HOME}/tree/`, 2)), [
      'a',
      'a/b',
      'a/loop',
      'top.txt',
      'usr-link',
    ]);
    const all = await client.listDir(`${HOME}/tree`, 10);
    assert.deepEqual(names(all), ['a', 'a/b', 'a/b/c', 'a/b/c/deep.txt', 'a/loop', 'top.txt', 'usr-link']);
    const loop = all.find((e) => e.name === 'loop');
    assert.equal(loop?.type, 'symlink');
    const deep = all.find((e) => e.name === 'deep.txt');
    assert.deepEqual({ type: deep?.type, size: deep?.size }, { type: 'file', size: 4 });
    assert.ok(Math.abs((deep?.mtimeMs ?? 0) - Date.now()) < 60_000);
    await assert.rejects(client.listDir(`${HOME}/nope`), { errno: 'ENOENT' });
  });

  test('mkdir, rename and recursive remove that never follows a symlink out', async () => {
    await client.mkdir(`${HOME}/keep`);
    await assert.rejects(client.mkdir(`${HOME}/keep`), { errno: 'EEXIST' });
    await client.mkdir(`${HOME}/keep`, { parents: true });
    await client.writeFile(`${HOME}/keep/important.txt`, Buffer.from('keep me'));
    await client.mkdir(`${HOME}/trash/inner`, { parents: true });
    await client.writeFile(`${HOME}/trash/inner/junk`, Buffer.from('junk'));
    await sh(
      `ln -s ${HOME}/keep ${HOME}/trash/link-to-keep && ln -s ${HOME}/keep/important.txt ${HOME}/trash/inner/file-link`,
    );
    await assert.rejects(client.remove(`${HOME}/trash`), { errno: 'ENOTEMPTY' });
    await client.remove(`${HOME}/trash`, { recursive: true });
    await assert.rejects(client.stat(`${HOME}/trash`), { errno: 'ENOENT' });
    assert.equal((await client.readFile(`${HOME}/keep/important.txt`)).toString(), 'keep me');
    await client.rename(`${HOME}/keep/important.txt`, `${HOME}/keep/renamed.txt`);
    assert.equal(existsSync(join(sb.workspace, 'keep/renamed.txt')), true);
    await client.remove(`${HOME}/keep/renamed.txt`);
    await assert.rejects(client.remove(`${HOME}/keep/renamed.txt`), { errno: 'ENOENT' });
  });

  test('watch reports creates, writes, renames and removes, recursively into new directories', async () => {
    await client.mkdir(`${HOME}/watched`);
    const events: AgentFsEvent[] = [];
    const { watchId } = await client.watch(`${HOME}/watched`, { recursive: true });
    client.on('fs-event', (id: number, e: AgentFsEvent) => {
      if (id === watchId) events.push(e);
    });
    const seen = async (type: string, path: string) => {
      const deadline = Date.now() + 5000;
      while (!events.some((e) => e.type === type && e.path === path)) {
        if (Date.now() > deadline)
          throw new Error(`no ${type} event for ${path}; got ${JSON.stringify(events)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await client.mkdir(`${HOME}/watched/sub`);
    await seen('create', `${HOME}/watched/sub`);
    await new Promise((r) => setTimeout(r, 50)); // the new directory's watch is added when its create event is read
    await client.writeFile(`${HOME}/watched/sub/new.txt`, Buffer.from('x'));
    await seen('create', `${HOME}/watched/sub/new.txt`);
    await seen('write', `${HOME}/watched/sub/new.txt`);
    await client.rename(`${HOME}/watched/sub/new.txt`, `${HOME}/watched/moved.txt`);
    await seen('rename', `${HOME}/watched/sub/new.txt`);
    await seen('create', `${HOME}/watched/moved.txt`);
    await sh(`chmod 600 ${HOME}/watched/moved.txt`);
    await seen('chmod', `${HOME}/watched/moved.txt`);
    await client.remove(`${HOME}/watched/moved.txt`);
    await seen('remove', `${HOME}/watched/moved.txt`);
    await client.unwatch(watchId);
    const count = events.length;
    await client.writeFile(`${HOME}/watched/after.txt`, Buffer.from('x'));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(events.length, count);
    await assert.rejects(client.unwatch(watchId), { code: 'BAD_REQUEST' });
    await assert.rejects(client.watch(`${HOME}/no-such-dir`), { errno: 'ENOENT' });
  });
});
