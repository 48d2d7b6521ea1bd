/**
 * Files API confinement, symlink races, and workspace snapshots on real warm sandboxes. The host never reads or
 * writes the workspace path-by-path while the sandbox runs (files go through the agent, inside the sandbox's
 * view); snapshots and the quota scan run with the sandbox frozen. These tests try to break both.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SnapshotError } from '../../src/sandbox/errors.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import type { Sandbox } from '../../src/sandbox/sandbox.js';
import { skipNoFreezer, sleep, tempStateDir } from './sandbox-fixture.js';

const state = tempStateDir('files');
const manager = new SandboxManager({ stateDir: state.dir, onStartup: 'reap', quotaCheckMs: 0 });
const marker = `ironcage-pwned-${process.pid}-${Date.now()}`;

before(async () => {
  await manager.start();
});
after(async () => {
  await manager.close();
  state.cleanup();
});

function workspaceOf(sandbox: Sandbox): string {
  return join(state.dir, 'sandboxes', sandbox.id, 'workspace');
}
function snapshotOf(sandbox: Sandbox, name: string): string {
  return join(state.dir, 'sandboxes', sandbox.id, 'snapshots', name);
}

/** Every path below `dir` (lstat only). */
function walk(dir: string, out: string[] = [], rel = ''): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const relPath = rel === '' ? name : `${rel}/${name}`;
    out.push(relPath);
    if (lstatSync(path).isDirectory()) walk(path, out, relPath);
  }
  return out;
}

describe('files API', () => {
  test('read/write/list/stat/mkdir/rename/remove inside the workspace', async () => {
    const sb = await manager.create();
    await sb.files.write('dir/a.txt', 'alpha');
    await sb.files.makeDir('dir/sub');
    await sb.files.write('/home/sandbox/dir/sub/b.bin', new Uint8Array([0, 1, 2, 255]));
    assert.equal(await sb.files.read('dir/a.txt'), 'alpha');
    assert.deepEqual([...(await sb.files.read('dir/sub/b.bin', { format: 'bytes' }))], [0, 1, 2, 255]);
    const listed = (await sb.files.list('dir', { depth: 2 })).map((e) => `${e.type}:${e.path}`).sort();
    assert.deepEqual(listed, [
      'dir:/home/sandbox/dir/sub',
      'file:/home/sandbox/dir/a.txt',
      'file:/home/sandbox/dir/sub/b.bin',
    ]);
    await sb.files.rename('dir/a.txt', 'dir/c.txt');
    assert.equal(await sb.files.exists('dir/a.txt'), false);
    assert.equal((await sb.files.stat('dir/c.txt')).size, 5);
    await sb.files.remove('dir', { recursive: true });
    assert.equal(await sb.files.exists('dir'), false);
    // The host-side workspace holds what the sandbox wrote, owned by the sandbox's host uid.
    await sb.files.write('seen-by-host', 'yes');
    assert.equal(readFileSync(join(workspaceOf(sb), 'seen-by-host'), 'utf8'), 'yes');
    await sb.kill();
  });

  test('`..` and absolute paths resolve inside the sandbox view, never on the host', async () => {
    const sb = await manager.create();
    // /etc/shadow is hidden in the sandbox: whatever the agent answers, it is not the host's file.
    const hostShadow = readHostFile('/etc/shadow'); // unreadable for an unprivileged test user: null

    const got = await sb.files.read('../../../../etc/shadow').catch((err: Error) => err);
    assert.ok(got instanceof Error || got !== hostShadow, 'the host /etc/shadow must not be readable');
    await assert.rejects(sb.files.write(`../../../../${marker}`, 'x'));
    await assert.rejects(sb.files.write(`/etc/${marker}`, 'x'));
    assert.ok(!existsSync(`/${marker}`) && !existsSync(`/etc/${marker}`));
    // The state directory (token, meta) is not in the sandbox's view at all.
    await assert.rejects(sb.files.read(join(state.dir, 'sandboxes', sb.id, 'token')));
    // A symlink to / created inside points at the sandbox's root, not the host's.
    await sb.commands.run(['ln', '-s', '/', 'root-link']);
    await sb.files.write(`root-link/tmp/${marker}`, 'inside');
    assert.ok(!existsSync(`/tmp/${marker}`), 'the write landed in the sandbox /tmp, not the host /tmp');
    assert.equal(await sb.files.read(`/tmp/${marker}`), 'inside');
    await sb.kill();
  });
});

describe('symlink races', { skip: skipNoFreezer }, () => {
  test('a directory flipping to a symlink to / while the host reads, writes, snapshots and restores', async () => {
    const sb = await manager.create();
    await sb.files.write('race/keep', 'kept');
    await sb.snapshot('before');
    const flipper = await sb.commands.run(
      ['sh', '-c', 'while :; do rm -rf race; ln -s / race; rm -f race; mkdir race; done'],
      { background: true },
    );
    const hostTmp = `/tmp/${marker}-race`;
    let writes = 0;
    for (let i = 0; i < 150; i++) {
      await sb.files.write(`race/tmp/${marker}-race`, 'x').then(
        () => writes++,
        () => {},
      );
      await sb.files.write(`race/${marker}`, 'x').catch(() => {});
      await sb.files.read('race/etc/hostname').catch(() => '');
      if (i % 30 === 0) {
        // Snapshots, restores and quota scans are host-side: they run frozen, and copy links as links.
        await sb.snapshot(`during-${i}`);
        await sb.workspaceUsage();
      }
      if (i === 75) await sb.restore('before');
    }
    await flipper.kill();
    await flipper.wait();
    assert.ok(!existsSync(hostTmp), 'nothing reached the host /tmp');
    assert.ok(!existsSync(`/${marker}`));
    // Every snapshot holds `race` as either a directory (of sandbox files only) or a link — never host content.
    for (const info of await sb.listSnapshots()) {
      const dir = snapshotOf(sb, info.name);
      for (const rel of walk(dir)) {
        assert.ok(rel === 'race' || rel.startsWith('race/'), `unexpected ${rel} in snapshot ${info.name}`);
        assert.ok(
          !rel.startsWith('race/etc') && !rel.startsWith('race/usr'),
          `host content ${rel} in ${info.name}`,
        );
      }
      const race = lstatSync(join(dir, 'race'), { throwIfNoEntry: false });
      if (race?.isSymbolicLink()) assert.equal(readlinkSync(join(dir, 'race')), '/');
    }
    console.log(`# ${writes} of 150 writes through the flipping path succeeded (inside the sandbox view)`);
    await sb.kill();
  });
});

describe('snapshots', { skip: skipNoFreezer }, () => {
  test('restore rolls back every change since the snapshot; delete and list work', async () => {
    const sb = await manager.create();
    await sb.files.write('a.txt', 'original');
    await sb.files.write('dir/b.txt', 'bee');
    await sb.commands.run(['ln', '-s', '/etc/passwd', 'link']);
    await sb.commands.run(['chmod', '600', 'a.txt']);
    const info = await sb.snapshot('s1');
    assert.equal(info.files, 2);
    assert.equal(info.symlinks, 1);
    // The link was copied as a link, not dereferenced.
    assert.equal(readlinkSync(join(snapshotOf(sb, 's1'), 'link')), '/etc/passwd');

    await sb.files.write('a.txt', 'changed');
    await sb.files.remove('dir', { recursive: true });
    await sb.files.write('new.txt', 'new');
    await sb.commands.run(['sh', '-c', 'rm link; ln -s / link']);
    await sb.restore('s1');
    assert.equal(await sb.files.read('a.txt'), 'original');
    assert.equal(await sb.files.read('dir/b.txt'), 'bee');
    assert.equal(await sb.files.exists('new.txt'), false);
    assert.equal((await sb.files.stat('link')).type, 'symlink');
    assert.equal((await sb.commands.run(['readlink', 'link'])).stdout, '/etc/passwd\n');
    assert.equal((await sb.commands.run(['stat', '-c', '%a %u', 'a.txt'])).stdout, '600 1000\n');
    // The sandbox can keep writing after a restore (ownership preserved).
    await sb.files.write('dir/after.txt', 'ok');

    await assert.rejects(
      sb.snapshot('s1'),
      (e: unknown) => e instanceof SnapshotError && e.code === 'SNAPSHOT_EXISTS',
    );
    await assert.rejects(
      sb.snapshot('../x'),
      (e: unknown) => e instanceof SnapshotError && e.code === 'SNAPSHOT_INVALID_NAME',
    );
    await sb.snapshot('s2');
    assert.deepEqual(
      (await sb.listSnapshots()).map((s) => s.name),
      ['s1', 's2'],
    );
    await sb.deleteSnapshot('s1');
    assert.deepEqual(
      (await sb.listSnapshots()).map((s) => s.name),
      ['s2'],
    );
    await assert.rejects(
      sb.restore('s1'),
      (e: unknown) => e instanceof SnapshotError && e.code === 'SNAPSHOT_NOT_FOUND',
    );
    await sb.kill();
  });

  test('a snapshot of a paused sandbox keeps it paused; processes survive a restore', async () => {
    const sb = await manager.create();
    const sleeper = await sb.commands.run(['sleep', '600'], { background: true });
    await sb.files.write('f', '1');
    await sb.pause();
    await sb.snapshot('p');
    assert.equal(sb.state, 'paused');
    await sb.resume();
    await sb.files.write('f', '2');
    await sb.restore('p');
    assert.equal(await sb.files.read('f'), '1');
    assert.ok((await sb.commands.list()).find((p) => p.id === sleeper.id)?.running);
    await sleep(1);
    await sb.kill();
  });
});

function readHostFile(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}
