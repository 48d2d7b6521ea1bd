/** /v1/sandboxes/:id/files: executed by the sandbox's agent, inside its view, with the sandbox user's rights. */
import type { Readable } from 'node:stream';
import {
  errorSchema,
  fileEntrySchema,
  fileListSchema,
  filePathQuery,
  listFilesQuery,
  mkdirBody,
  okSchema,
  removeFileQuery,
  renameBody,
  sandboxIdParams,
  writeResultSchema,
} from '../schemas.js';
import { defineRoute, type RouteDef, SENT, type ServerContext } from './route.js';

/** Upload chunk size: the body is written as it arrives, at most this much held in memory per request. */
const UPLOAD_CHUNK_BYTES = 1024 * 1024;
const OCTET = 'application/octet-stream';
const SANDBOX_OR_FILE_404 = {
  description: 'No such sandbox (or not yours), or no such file',
  schema: errorSchema,
};

export function fileRoutes(_ctx: ServerContext): RouteDef[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/files',
      summary: 'Download a file (raw bytes)',
      tag: 'files',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      query: filePathQuery,
      responses: {
        200: { description: 'The file', contentType: OCTET },
        404: SANDBOX_OR_FILE_404,
        409: { description: 'Sandbox paused or stopped', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        const data = await sandbox.files.read(call.query.path, { format: 'bytes' });
        call.reply.header('content-type', OCTET).send(data);
        return SENT;
      },
    }),

    defineRoute({
      method: 'PUT',
      url: '/v1/sandboxes/:id/files',
      summary:
        'Upload a file: the raw request body is streamed into it (missing parent directories are created)',
      tag: 'files',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      query: filePathQuery,
      bodyKind: 'raw',
      status: 201,
      responses: {
        201: { description: 'Written', schema: writeResultSchema },
        404: SANDBOX_OR_FILE_404,
        413: { description: 'Workspace quota exceeded', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        const path = call.query.path;
        const stream = call.request.body as Readable | undefined;
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        let written = 0;
        // The first write truncates (or creates) the file, later ones append: memory stays bounded.
        const flush = async (force: boolean) => {
          if (!force && pendingBytes < UPLOAD_CHUNK_BYTES) return;
          if (written > 0 && pendingBytes === 0) return;
          const data = Buffer.concat(pending, pendingBytes);
          pending = [];
          pendingBytes = 0;
          await sandbox.files.write(path, data, { append: written > 0 });
          written += data.length;
        };
        if (stream !== undefined) {
          for await (const chunk of stream) {
            pending.push(chunk as Buffer);
            pendingBytes += (chunk as Buffer).length;
            await flush(false);
          }
        }
        await flush(true);
        await call.audit('file.write', { path, bytes: written }, sandbox.id);
        return { path, bytes: written };
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/v1/sandboxes/:id/files',
      summary: 'Remove a file or directory (?recursive=true for a non-empty directory)',
      tag: 'files',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      query: removeFileQuery,
      responses: { 200: { description: 'Removed', schema: okSchema }, 404: SANDBOX_OR_FILE_404 },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        await sandbox.files.remove(call.query.path, { recursive: call.query.recursive ?? false });
        await call.audit('file.remove', { path: call.query.path }, sandbox.id);
        return { ok: true };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/files/list',
      summary: 'List a directory (depth levels deep; symlinks are listed, never followed)',
      tag: 'files',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      query: listFilesQuery,
      responses: {
        200: { description: 'Entries', schema: fileListSchema },
        404: SANDBOX_OR_FILE_404,
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        return { entries: await sandbox.files.list(call.query.path, { depth: call.query.depth ?? 1 }) };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/files/stat',
      summary: 'Stat a path (not following a final symlink)',
      tag: 'files',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      query: filePathQuery,
      responses: { 200: { description: 'The entry', schema: fileEntrySchema }, 404: SANDBOX_OR_FILE_404 },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        return await sandbox.files.stat(call.query.path);
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/files/mkdir',
      summary: 'Create a directory (with parents unless parents: false)',
      tag: 'files',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      body: mkdirBody,
      status: 201,
      responses: { 201: { description: 'Created', schema: okSchema }, 404: SANDBOX_OR_FILE_404 },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        await sandbox.files.makeDir(call.body.path, { parents: call.body.parents ?? true });
        await call.audit('file.mkdir', { path: call.body.path }, sandbox.id);
        return { ok: true };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/files/rename',
      summary: 'Rename or move a file or directory',
      tag: 'files',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      body: renameBody,
      responses: { 200: { description: 'Renamed', schema: okSchema }, 404: SANDBOX_OR_FILE_404 },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        await sandbox.files.rename(call.body.from, call.body.to);
        await call.audit('file.rename', { from: call.body.from, to: call.body.to }, sandbox.id);
        return { ok: true };
      },
    }),
  ];
}
