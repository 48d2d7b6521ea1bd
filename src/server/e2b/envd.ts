/**
 * What E2B's SDK expects from the daemon inside each sandbox ("envd", reached at E2B_SANDBOX_URL with the
 * sandbox named by the E2b-Sandbox-Id header): /health, /files (download and multipart upload), and the Connect
 * services process.Process and filesystem.Filesystem, served here by the sandbox's own agent through the
 * Sandbox API. Messages use proto3 JSON names; the field set is only what these handlers read or write.
 */

import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AgentDirEntry, AgentProcessInfo } from '../../agent/client.js';
import type { ProcessHandle } from '../../sandbox/commands.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { ApiError, toApiError } from '../errors.js';
import type { ServerMetrics } from '../metrics.js';
import type { E2bAccess } from './access.js';
import {
  ConnectRpcError,
  ConnectStream,
  connectCodeForStatus,
  parseJsonMessage,
  parseStreamRequest,
  sendUnaryError,
} from './connect.js';
import { watchDir, watcherRpcs } from './watch.js';

/** Largest upload or RPC body held in memory. */
export const MAX_ENVD_BODY_BYTES = 64 * 1024 * 1024;

type Json = Record<string, unknown>;

async function readBody(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > MAX_ENVD_BODY_BYTES) {
      throw new ApiError(413, 'BODY_TOO_LARGE', `body larger than ${MAX_ENVD_BODY_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function toConnectError(err: unknown): ConnectRpcError {
  if (err instanceof ConnectRpcError) return err;
  const api = toApiError(err);
  // A paused or stopped sandbox is a precondition, not the already_exists a bare 409 would map to.
  if (api.status === 409 && api.code.startsWith('SANDBOX_')) {
    return new ConnectRpcError('failed_precondition', api.message);
  }
  return new ConnectRpcError(connectCodeForStatus(api.status), api.message);
}

function str(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') {
    throw new ConnectRpcError('invalid_argument', `${field} must be a non-empty string`);
  }
  return value;
}

function obj(value: unknown): Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : {};
}

const FILE_TYPE: Record<AgentDirEntry['type'], string> = {
  file: 'FILE_TYPE_FILE',
  dir: 'FILE_TYPE_DIRECTORY',
  symlink: 'FILE_TYPE_SYMLINK',
  other: 'FILE_TYPE_UNSPECIFIED',
};

function permissions(type: AgentDirEntry['type'], mode: number): string {
  const lead = type === 'dir' ? 'd' : type === 'symlink' ? 'l' : '-';
  let out = lead;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (mode >> shift) & 7;
    out += `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${bits & 1 ? 'x' : '-'}`;
  }
  return out;
}

/** filesystem.EntryInfo (int64 size as a string, as proto3 JSON writes it). */
function entryInfo(entry: AgentDirEntry): Json {
  return {
    name: entry.name,
    type: FILE_TYPE[entry.type],
    path: entry.path,
    size: String(entry.size),
    mode: entry.mode,
    permissions: permissions(entry.type, entry.mode),
    modifiedTime: new Date(entry.mtimeMs).toISOString(),
  };
}

/** process.ProcessEvent.EndEvent from an ironcage result. */
function endEvent(result: { exitCode: number | null; signal: string | null }): Json {
  if (result.exitCode !== null) {
    return { exitCode: result.exitCode, exited: true, status: `exit status ${result.exitCode}` };
  }
  return { exitCode: -1, exited: false, status: `signal: ${result.signal ?? 'unknown'}` };
}

/** The process an E2B selector names: `pid` is the pid inside the sandbox, `tag` the start-time tag. */
async function findProcess(sandbox: Sandbox, selector: unknown): Promise<ProcessHandle> {
  const sel = obj(selector);
  const infos = await sandbox.commands.list();
  const matches = (info: AgentProcessInfo) =>
    typeof sel.pid === 'number' ? info.pid === sel.pid : typeof sel.tag === 'string' && info.tag === sel.tag;
  // Pids are reused inside a sandbox: the running process wins, then the newest.
  const found =
    infos.find((info) => matches(info) && info.running) ??
    infos.filter(matches).sort((a, b) => b.id - a.id)[0];
  if (found === undefined) throw new ConnectRpcError('not_found', 'no such process');
  return sandbox.commands.connect(found.id);
}

/** Streams a process's events (start, output from the given offsets, end) until it exits or the client leaves. */
async function streamProcess(
  stream: ConnectStream,
  handle: ProcessHandle,
  from: { stdout: number; stderr: number },
  terminal = false,
): Promise<void> {
  stream.write({ event: { start: { pid: handle.pid } } });
  // A terminal's output is E2B's `pty` data (its SDK hands only that to a PTY's onData).
  const out = terminal ? 'pty' : 'stdout';
  const attachment = await handle.attach({
    fromOffset: from,
    onStdout: (data) => stream.write({ event: { data: { [out]: data.toString('base64') } } }),
    onStderr: (data) => stream.write({ event: { data: { stderr: data.toString('base64') } } }),
  });
  stream.keepAlive({ event: { keepalive: {} } });
  try {
    const result = await Promise.race([handle.wait(), stream.gone.then(() => null)]);
    if (result !== null) stream.write({ event: { end: endEvent(result) } });
  } finally {
    attachment.detach();
  }
}

/** Processes started on a terminal, per sandbox (by the agent's process id), so Connect streams `pty` data. */
const terminals = new WeakMap<Sandbox, Set<number>>();

type Unary = (sandbox: Sandbox, message: Json) => Promise<Json>;
type Streaming = (
  sandbox: Sandbox,
  message: Json,
  stream: ConnectStream,
  metrics: ServerMetrics,
) => Promise<void>;

const unary: Record<string, Unary> = {
  'process.Process/List': async (sandbox) => {
    const infos = await sandbox.commands.list();
    return {
      processes: infos
        .filter((info) => info.running)
        .map((info) => ({
          config: { cmd: info.argv[0] ?? '', args: info.argv.slice(1), envs: {} },
          pid: info.pid,
          ...(info.tag === '' ? {} : { tag: info.tag }),
        })),
    };
  },
  'process.Process/SendInput': async (sandbox, message) => {
    const handle = await findProcess(sandbox, message.process);
    const input = obj(message.input);
    const data =
      typeof input.stdin === 'string' ? input.stdin : typeof input.pty === 'string' ? input.pty : '';
    await handle.sendStdin(Buffer.from(data, 'base64'));
    return {};
  },
  'process.Process/CloseStdin': async (sandbox, message) => {
    const handle = await findProcess(sandbox, message.process);
    await handle.closeStdin();
    return {};
  },
  'process.Process/SendSignal': async (sandbox, message) => {
    const handle = await findProcess(sandbox, message.process);
    const signal = message.signal === 'SIGNAL_SIGTERM' || message.signal === 15 ? 'SIGTERM' : 'SIGKILL';
    await handle.kill(signal);
    return {};
  },
  'process.Process/Update': async (sandbox, message) => {
    const handle = await findProcess(sandbox, message.process);
    const size = obj(obj(message.pty).size);
    if (typeof size.rows === 'number' && typeof size.cols === 'number')
      await handle.resize(size.rows, size.cols);
    return {};
  },
  'filesystem.Filesystem/Stat': async (sandbox, message) => ({
    entry: entryInfo(await sandbox.files.stat(str(message.path, 'path'))),
  }),
  'filesystem.Filesystem/MakeDir': async (sandbox, message) => {
    const path = str(message.path, 'path');
    // E2B reports an existing directory as already_exists (its SDK then returns false).
    if (await sandbox.files.exists(path))
      throw new ConnectRpcError('already_exists', `${path} already exists`);
    await sandbox.files.makeDir(path, { parents: true });
    return { entry: entryInfo(await sandbox.files.stat(path)) };
  },
  'filesystem.Filesystem/Move': async (sandbox, message) => {
    const destination = str(message.destination, 'destination');
    await sandbox.files.rename(str(message.source, 'source'), destination);
    return { entry: entryInfo(await sandbox.files.stat(destination)) };
  },
  'filesystem.Filesystem/ListDir': async (sandbox, message) => {
    const depth = typeof message.depth === 'number' && message.depth > 0 ? message.depth : 1;
    const entries = await sandbox.files.list(str(message.path, 'path'), { depth });
    return { entries: entries.map(entryInfo) };
  },
  'filesystem.Filesystem/Remove': async (sandbox, message) => {
    await sandbox.files.remove(str(message.path, 'path'), { recursive: true });
    return {};
  },
  ...watcherRpcs,
};

const streaming: Record<string, Streaming> = {
  'process.Process/Start': async (sandbox, message, stream, metrics) => {
    const config = obj(message.process);
    const cmd = str(config.cmd, 'process.cmd');
    const args = Array.isArray(config.args) ? config.args.map(String) : [];
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(obj(config.envs))) env[k] = String(v);
    const size = obj(obj(message.pty).size);
    const terminal = typeof size.rows === 'number' && typeof size.cols === 'number';
    const handle = await metrics.timeExec('e2b', () =>
      sandbox.commands.run([cmd, ...args], {
        background: true,
        env,
        ...(typeof config.cwd === 'string' && config.cwd !== '' ? { cwd: config.cwd } : {}),
        ...(typeof message.tag === 'string' ? { tag: message.tag } : {}),
        ...(message.stdin === true ? { stdin: true } : {}),
        ...(terminal ? { pty: { rows: size.rows as number, cols: size.cols as number } } : {}),
      }),
    );
    if (terminal) {
      const ids = terminals.get(sandbox) ?? new Set<number>();
      terminals.set(sandbox, ids.add(handle.id));
      void handle.wait().then(() => ids.delete(handle.id));
    }
    await streamProcess(stream, handle, { stdout: 0, stderr: 0 }, terminal);
  },
  'process.Process/Connect': async (sandbox, message, stream) => {
    const handle = await findProcess(sandbox, message.process);
    // E2B's Connect delivers output from now on (no replay).
    await streamProcess(stream, handle, handle.offsets, terminals.get(sandbox)?.has(handle.id) === true);
  },
  'filesystem.Filesystem/WatchDir': watchDir,
};

export function registerEnvd(app: FastifyInstance, access: E2bAccess, metrics: ServerMetrics): void {
  // Streams of background commands stay open as long as the command runs: a closing server ends them.
  const open = new Set<ConnectStream>();
  app.addHook('preClose', async () => {
    for (const stream of open) stream.end(new ConnectRpcError('unavailable', 'the server is shutting down'));
  });

  app.get('/health', async (request, reply) => {
    await access.envdSandbox(request.headers);
    return reply.status(204).send();
  });

  app.get('/files', async (request, reply) => {
    const sandbox = await access.envdSandbox(request.headers);
    const path = (request.query as Json).path;
    if (typeof path !== 'string' || path === '') throw new ApiError(400, 'INVALID_INPUT', 'path is required');
    const data = await sandbox.files.read(path, { format: 'bytes' });
    return reply
      .type('application/octet-stream')
      .header('content-disposition', `attachment; filename=${JSON.stringify(posix.basename(path))}`)
      .send(data);
  });

  app.post('/files', async (request, reply) => {
    const sandbox = await access.envdSandbox(request.headers);
    const queryPath = (request.query as Json).path;
    const body = await readBody(request.body as Readable);
    const type = request.headers['content-type'] ?? '';
    const files: { path: string; data: Buffer }[] = [];
    if (type.startsWith('multipart/form-data')) {
      // Node's own multipart parser (undici's Response.formData); each part's filename is its path.
      const form = await new Response(body, { headers: { 'content-type': type } }).formData().catch(() => {
        throw new ApiError(400, 'INVALID_INPUT', 'malformed multipart body');
      });
      for (const value of form.values()) {
        if (typeof value === 'string') continue;
        const path = typeof queryPath === 'string' && queryPath !== '' ? queryPath : value.name;
        files.push({ path, data: Buffer.from(await value.arrayBuffer()) });
      }
    } else {
      if (typeof queryPath !== 'string' || queryPath === '') {
        throw new ApiError(400, 'INVALID_INPUT', 'path is required for a raw upload');
      }
      files.push({ path: queryPath, data: body });
    }
    if (files.length === 0) throw new ApiError(400, 'INVALID_INPUT', 'no file in the upload');
    const written = [];
    for (const file of files) {
      await sandbox.files.write(file.path, file.data);
      const entry = await sandbox.files.stat(file.path);
      written.push({ name: entry.name, type: entry.type === 'dir' ? 'dir' : 'file', path: entry.path });
    }
    return reply.status(200).send(written);
  });

  app.post('/:service/:method', async (request: FastifyRequest, reply: FastifyReply) => {
    const { service, method } = request.params as { service: string; method: string };
    const name = `${service}/${method}`;
    const contentType = request.headers['content-type'] ?? '';
    const body = await readBody(request.body as Readable);
    const stream = Object.hasOwn(streaming, name) ? streaming[name] : undefined;
    if (stream !== undefined) {
      if (!contentType.startsWith('application/connect+json')) {
        throw new ApiError(415, 'UNSUPPORTED_MEDIA_TYPE', 'streaming calls take application/connect+json');
      }
      // Errors before the stream opens are HTTP errors; after, they go in the end-of-stream message.
      const sandbox = await access.envdSandbox(request.headers);
      const message = obj(parseStreamRequest(body));
      const out = new ConnectStream(reply);
      open.add(out);
      try {
        await Promise.race([stream(sandbox, message, out, metrics), out.gone]);
        out.end();
      } catch (err) {
        out.end(toConnectError(err));
      } finally {
        open.delete(out);
      }
      return reply;
    }
    const handler = Object.hasOwn(unary, name) ? unary[name] : undefined;
    try {
      if (handler === undefined) throw new ConnectRpcError('unimplemented', `${name} is not implemented`);
      if (!contentType.startsWith('application/json')) {
        throw new ConnectRpcError('invalid_argument', 'unary calls take application/json (Connect JSON)');
      }
      const sandbox = await access.envdSandbox(request.headers);
      return reply.type('application/json').send(await handler(sandbox, obj(parseJsonMessage(body))));
    } catch (err) {
      sendUnaryError(reply, toConnectError(err));
      return reply;
    }
  });
}
