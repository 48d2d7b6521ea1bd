/**
 * GET /v1/sandboxes/:id/files/watch: a directory's changes as an NDJSON stream (the agent's inotify watch),
 * open until the client disconnects, the sandbox stops or the server shuts down. Every end of the stream
 * removes the watch from the agent, so abandoned streams leave no inotify watches behind.
 */
import { posix } from 'node:path';
import { SandboxStateError } from '../../sandbox/errors.js';
import type { FileEvent } from '../../sandbox/files.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { ApiError } from '../errors.js';
import { errorSchema, sandboxIdParams, watchFilesQuery, watchLineSchema } from '../schemas.js';
import { NDJSON, startNdjson } from './ndjson.js';
import { defineRoute, type RouteDef, SENT, type ServerContext } from './route.js';

/** Per app: how to end each open watch stream (a closing server must not wait for clients to hang up). */
const openStreams = new WeakMap<ServerContext, Set<() => void>>();

/** Ends every open watch stream of this app with an error line; called from the app's preClose hook. */
export function endWatchStreams(ctx: ServerContext): void {
  for (const end of [...(openStreams.get(ctx) ?? [])]) end();
}

/** Callbacks for a sandbox's end, behind one 'stopped' listener (many watches would trip the listener limit). */
const stopListeners = new WeakMap<Sandbox, Set<() => void>>();

/** Calls `listener` once when `sandbox` stops; returns the unsubscribe. */
export function onSandboxStopped(sandbox: Sandbox, listener: () => void): () => void {
  let listeners = stopListeners.get(sandbox);
  if (listeners === undefined) {
    const created = new Set<() => void>();
    listeners = created;
    stopListeners.set(sandbox, created);
    sandbox.once('stopped', () => {
      for (const notify of [...created]) notify();
      created.clear();
    });
  }
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** An event path relative to the watched root: '' for the root itself, 'sub/file' below it. */
export function relativeName(root: string, path: string): string {
  if (path === root) return '';
  const prefix = root.endsWith('/') ? root : `${root}/`;
  return path.startsWith(prefix) ? path.slice(prefix.length) : posix.relative(root, path);
}

function eventLine(root: string, event: FileEvent): Record<string, unknown> {
  return { type: 'event', kind: event.type, name: relativeName(root, event.path), path: event.path };
}

export function watchRoutes(ctx: ServerContext): RouteDef[] {
  const streams = new Set<() => void>();
  openStreams.set(ctx, streams);
  return [
    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/files/watch',
      summary:
        'Watch a directory (recursive=true: and its subdirectories, new ones included): an NDJSON stream of a ' +
        'start line, then one event line per change (kind create|write|remove|rename|chmod; a rename is the ' +
        "old name's `rename` plus the new name's `create`), until the client disconnects",
      tag: 'files',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      query: watchFilesQuery,
      responses: {
        200: { description: 'NDJSON stream', schema: watchLineSchema, contentType: NDJSON },
        400: { description: 'The path is not a directory', schema: errorSchema },
        404: { description: 'No such sandbox (or not yours), or no such directory', schema: errorSchema },
        409: { description: 'Sandbox paused or stopped', schema: errorSchema },
      },
      async handler(call) {
        // Noted before any await: a client gone before the stream starts must not leave a watch behind.
        let clientGone = false;
        call.reply.raw.once('close', () => {
          clientGone = true;
        });
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        const root = posix.resolve(sandbox.policy.filesystem.workdir, call.query.path);
        const entry = await sandbox.files.stat(root);
        if (entry.type !== 'dir') {
          const what = entry.type === 'symlink' ? 'a symlink (not followed)' : `a ${entry.type}`;
          throw new ApiError(
            400,
            'NOT_A_DIRECTORY',
            `${root} is ${what}, not a directory; watch a directory`,
          );
        }
        // Events are delivered from socket reads, never before this handler's continuation runs: once the
        // watch resolves, the stream is opened without an await in between, so no event can come first.
        let deliver = (_event: FileEvent) => {};
        const watch = await sandbox.files.watch(root, (event) => deliver(event), {
          recursive: call.query.recursive ?? false,
        });
        const out = startNdjson(call.reply, { heartbeatMs: ctx.ndjsonHeartbeatMs });
        out.write({ type: 'start', path: root });
        deliver = (event) => out.write(eventLine(root, event));

        let finished = false;
        const finish = (err?: unknown) => {
          if (finished) return;
          finished = true;
          unsubscribe();
          streams.delete(onShutdown);
          void watch.stop();
          if (err === undefined) out.end();
          else out.fail(err);
        };
        const onStopped = () =>
          finish(new SandboxStateError('SANDBOX_STOPPED', sandbox.id, 'watch a directory'));
        const onShutdown = () =>
          finish(
            new ApiError(503, 'SERVER_CLOSING', 'the server is shutting down; watch again once it is back'),
          );
        const unsubscribe = onSandboxStopped(sandbox, onStopped);
        streams.add(onShutdown);
        out.onAbort(() => finish());
        if (clientGone || sandbox.state === 'stopped') finish();
        return SENT;
      },
    }),
  ];
}
