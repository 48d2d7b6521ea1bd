/**
 * envd's directory watching for E2B's SDK, over the sandbox's own (agent inotify) watch: the server-streaming
 * filesystem.Filesystem/WatchDir (what the JS SDK's files.watchDir uses), and the polling trio CreateWatcher /
 * GetWatcherEvents / RemoveWatcher (what E2B's Python SDK uses). Event names are relative to the watched
 * directory, as envd reports them.
 */
import { randomUUID } from 'node:crypto';
import { posix } from 'node:path';
import type { FileEvent } from '../../sandbox/files.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { onSandboxStopped, relativeName } from '../routes/watch.js';
import { ConnectRpcError, type ConnectStream } from './connect.js';

type Json = Record<string, unknown>;

/** Polling watchers per sandbox: each holds agent watches until removed. */
export const MAX_POLLING_WATCHERS = 64;
/** Events a polling watcher holds between polls; older ones are dropped beyond it. */
export const MAX_PENDING_EVENTS = 10_000;
/** A polling watcher nobody polled for this long is removed (its client is gone without RemoveWatcher). */
export const IDLE_WATCHER_MS = 10 * 60_000;

const EVENT_TYPE: Record<FileEvent['type'], string> = {
  create: 'EVENT_TYPE_CREATE',
  write: 'EVENT_TYPE_WRITE',
  remove: 'EVENT_TYPE_REMOVE',
  rename: 'EVENT_TYPE_RENAME',
  chmod: 'EVENT_TYPE_CHMOD',
};

function filesystemEvent(root: string, event: FileEvent): Json {
  return { name: relativeName(root, event.path), type: EVENT_TYPE[event.type] };
}

function request(message: Json): { path: string; recursive: boolean } {
  if (typeof message.path !== 'string' || message.path === '') {
    throw new ConnectRpcError('invalid_argument', 'path must be a non-empty string');
  }
  if (message.includeEntry === true) {
    throw new ConnectRpcError('unimplemented', 'includeEntry is not supported; stat the named path instead');
  }
  return { path: message.path, recursive: message.recursive === true };
}

/** Starts the sandbox's watch on a directory (refusing anything else), with the absolute root it watches. */
async function startWatch(
  sandbox: Sandbox,
  message: Json,
  onEvent: (root: string, event: FileEvent) => void,
): Promise<{ root: string; stop(): Promise<void> }> {
  const { path, recursive } = request(message);
  const root = posix.resolve(sandbox.policy.filesystem.workdir, path);
  const entry = await sandbox.files.stat(root);
  if (entry.type !== 'dir') throw new ConnectRpcError('invalid_argument', `path ${root} is not a directory`);
  const watch = await sandbox.files.watch(root, (event) => onEvent(root, event), { recursive });
  return { root, stop: () => watch.stop() };
}

/** filesystem.Filesystem/WatchDir: a start event, then the changes, until the client leaves or the sandbox stops. */
export async function watchDir(sandbox: Sandbox, message: Json, stream: ConnectStream): Promise<void> {
  const watch = await startWatch(sandbox, message, (root, event) =>
    stream.write({ filesystem: filesystemEvent(root, event) }),
  );
  stream.keepAlive({ keepalive: {} });
  let unsubscribe = () => {};
  const stopped = new Promise<void>((resolve) => {
    unsubscribe = onSandboxStopped(sandbox, resolve);
  });
  try {
    stream.write({ start: {} });
    await Promise.race([stream.gone, stopped]);
  } finally {
    unsubscribe();
    await watch.stop();
  }
  if (sandbox.state === 'stopped') throw new ConnectRpcError('unavailable', `sandbox ${sandbox.id} stopped`);
}

interface PollingWatcher {
  stop(): Promise<void>;
  /** Not yet polled; the oldest are dropped beyond MAX_PENDING_EVENTS. */
  events: Json[];
  lastPoll: number;
}

/** Polling watchers by sandbox: they end with it (WeakMap) and are only reachable through its access token. */
const watchers = new WeakMap<Sandbox, Map<string, PollingWatcher>>();

function watchersOf(sandbox: Sandbox): Map<string, PollingWatcher> {
  let map = watchers.get(sandbox);
  if (map === undefined) {
    const created = new Map<string, PollingWatcher>();
    map = created;
    watchers.set(sandbox, created);
    onSandboxStopped(sandbox, () => {
      for (const watcher of created.values()) void watcher.stop().catch(() => {});
      created.clear();
    });
  }
  return map;
}

async function removeIdle(map: Map<string, PollingWatcher>): Promise<void> {
  const now = Date.now();
  for (const [id, watcher] of map) {
    if (now - watcher.lastPoll < IDLE_WATCHER_MS) continue;
    map.delete(id);
    await watcher.stop().catch(() => {});
  }
}

function watcherOf(sandbox: Sandbox, message: Json): { id: string; watcher: PollingWatcher } {
  const id = message.watcherId;
  const watcher = typeof id === 'string' ? watchersOf(sandbox).get(id) : undefined;
  if (watcher === undefined) throw new ConnectRpcError('not_found', `watcher ${String(id)} not found`);
  return { id: id as string, watcher };
}

/** The polling trio, as unary handlers for envd.ts's table. */
export const watcherRpcs: Record<string, (sandbox: Sandbox, message: Json) => Promise<Json>> = {
  'filesystem.Filesystem/CreateWatcher': async (sandbox, message) => {
    const map = watchersOf(sandbox);
    await removeIdle(map);
    if (map.size >= MAX_POLLING_WATCHERS) {
      throw new ConnectRpcError(
        'resource_exhausted',
        `sandbox ${sandbox.id} has ${map.size} watchers; remove one with RemoveWatcher first`,
      );
    }
    const watcher: PollingWatcher = { stop: async () => {}, events: [], lastPoll: Date.now() };
    const watch = await startWatch(sandbox, message, (root, event) => {
      if (watcher.events.length >= MAX_PENDING_EVENTS) watcher.events.shift();
      watcher.events.push(filesystemEvent(root, event));
    });
    watcher.stop = () => watch.stop();
    const id = randomUUID();
    map.set(id, watcher);
    return { watcherId: id };
  },
  'filesystem.Filesystem/GetWatcherEvents': async (sandbox, message) => {
    const { watcher } = watcherOf(sandbox, message);
    watcher.lastPoll = Date.now();
    return { events: watcher.events.splice(0) };
  },
  'filesystem.Filesystem/RemoveWatcher': async (sandbox, message) => {
    const { id, watcher } = watcherOf(sandbox, message);
    watchersOf(sandbox).delete(id);
    await watcher.stop();
    return {};
  },
};
