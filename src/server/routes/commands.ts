/** /v1/sandboxes/:id/commands and /processes: foreground and background runs, stdin, signals, output replay. */
import type { Readable } from 'node:stream';
import type { AgentProcessInfo } from '../../agent/client.js';
import type { CommandResult, ProcessHandle } from '../../sandbox/commands.js';
import {
  backgroundProcessSchema,
  commandResultSchema,
  errorSchema,
  killProcessBody,
  ndjsonLineSchema,
  okSchema,
  outputQuery,
  processListSchema,
  processParams,
  runCommandBody,
  sandboxIdParams,
  stdinQuery,
  stdinResultSchema,
} from '../schemas.js';
import { NDJSON, startNdjson, wantsNdjson } from './ndjson.js';
import { defineRoute, type RouteDef, SANDBOX_404, SENT, type ServerContext } from './route.js';

const STATE_409 = { description: 'Sandbox paused or stopped', schema: errorSchema };

function exitLine(result: CommandResult): Record<string, unknown> {
  return {
    type: 'exit',
    exitCode: result.exitCode,
    signal: result.signal,
    timedOut: result.timedOut,
    truncated: result.truncated,
    cpuMs: result.cpuMs,
    maxRssKb: result.maxRssKb,
  };
}

function processInfo(info: AgentProcessInfo) {
  return {
    id: info.id,
    pid: info.pid,
    argv: info.argv,
    tag: info.tag,
    running: info.running,
    exitCode: info.exit?.kind === 'exit' ? info.exit.code : null,
    signal: info.exit?.kind === 'signal' ? info.exit.signal : null,
    outputBytes: info.outputBytes,
  };
}

/** argv for the audit log: bounded, so a huge command line cannot bloat it. */
export function auditArgv(argv: readonly string[]): string[] {
  return argv.slice(0, 16).map((a) => (a.length > 256 ? `${a.slice(0, 256)}…` : a));
}

export function commandRoutes(ctx: ServerContext): RouteDef[] {
  return [
    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/commands',
      summary:
        'Run a command. Foreground: one JSON result, or with `Accept: application/x-ndjson` a stream of ' +
        'start/stdout/stderr/exit lines (output base64). Background: 201 with the process id. A foreground ' +
        'command is killed when the client disconnects.',
      tag: 'commands',
      auth: 'sandbox:write',
      params: sandboxIdParams,
      body: runCommandBody,
      responses: {
        200: {
          description: 'Foreground result (JSON), or its NDJSON stream',
          schema: commandResultSchema,
          alt: { contentType: NDJSON, schema: ndjsonLineSchema },
        },
        201: { description: 'Background process started', schema: backgroundProcessSchema },
        400: { description: 'Invalid command', schema: errorSchema },
        404: SANDBOX_404,
        409: STATE_409,
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        const { body } = call;
        const argv = body.argv ?? ['/bin/sh', '-c', body.cmd as string];
        const timeoutMs = body.timeoutMs ?? (body.background ? undefined : sandbox.policy.limits.wallTimeMs);
        // Always started as a handle: a foreground run must be killable when its client goes away.
        const handle = await ctx.metrics.timeExec('rest', () =>
          sandbox.commands.run(argv, {
            background: true,
            ...(body.env === undefined ? {} : { env: body.env }),
            ...(body.cwd === undefined ? {} : { cwd: body.cwd }),
            ...(body.stdin === undefined || body.stdin === false ? {} : { stdin: body.stdin }),
            ...(body.tag === undefined ? {} : { tag: body.tag }),
            ...(timeoutMs === undefined ? {} : { timeoutMs }),
          }),
        );
        await call.audit(
          'command.run',
          { argv: auditArgv(argv), background: body.background === true, processId: handle.id },
          sandbox.id,
        );
        if (body.background) {
          call.reply.status(201);
          return { id: handle.id, pid: handle.pid, argv: [...handle.argv] };
        }
        let finished = false;
        const killOnAbort = () => {
          if (!finished) handle.kill('SIGKILL').catch(() => {});
        };
        if (wantsNdjson(call.request.headers.accept)) {
          const stream = startNdjson(call.reply, { heartbeatMs: ctx.ndjsonHeartbeatMs });
          stream.onAbort(killOnAbort);
          stream.write({ type: 'start', id: handle.id, pid: handle.pid });
          void streamOutput(handle, 0, stream).finally(() => {
            finished = true;
          });
          return SENT;
        }
        call.reply.raw.once('close', killOnAbort);
        const result = await handle.wait();
        finished = true;
        return { id: handle.id, pid: handle.pid, ...result };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/processes',
      summary: 'Processes the sandbox agent knows (running, and ended ones it still remembers)',
      tag: 'commands',
      auth: 'sandbox:read',
      params: sandboxIdParams,
      responses: {
        200: { description: 'Processes', schema: processListSchema },
        404: SANDBOX_404,
        409: STATE_409,
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        return { processes: (await sandbox.commands.list()).map(processInfo) };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/processes/:processId/kill',
      summary: "Signal a process's process group (default SIGKILL)",
      tag: 'commands',
      auth: 'sandbox:write',
      params: processParams,
      body: killProcessBody.optional(),
      responses: {
        200: { description: 'Signalled', schema: okSchema },
        404: { description: 'No such sandbox or process', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        const handle = await sandbox.commands.connect(call.params.processId);
        const signal = (call.body?.signal ?? 'SIGKILL') as NodeJS.Signals | number;
        await handle.kill(signal);
        await call.audit('process.kill', { processId: handle.id, signal }, sandbox.id);
        return { ok: true };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/v1/sandboxes/:id/processes/:processId/stdin',
      summary:
        'Write the raw request body to the stdin of a process started with stdin: true (?eof=true closes it)',
      tag: 'commands',
      auth: 'sandbox:write',
      params: processParams,
      query: stdinQuery,
      bodyKind: 'raw',
      responses: {
        200: { description: 'Written', schema: stdinResultSchema },
        404: { description: 'No such sandbox or process', schema: errorSchema },
        409: { description: 'Stdin closed (or never opened)', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:write');
        const handle = await sandbox.commands.connect(call.params.processId);
        const stream = call.request.body as Readable | undefined;
        let bytes = 0;
        if (stream !== undefined) {
          for await (const chunk of stream) {
            const data = chunk as Buffer;
            bytes += data.length;
            await handle.sendStdin(data);
          }
        }
        if (call.query.eof) await handle.closeStdin();
        return { ok: true, bytes };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/v1/sandboxes/:id/processes/:processId/output',
      summary:
        'Re-attach: NDJSON replay of the output from fromOffset (bytes since start, both streams), then live ' +
        'output until the process exits',
      tag: 'commands',
      auth: 'sandbox:read',
      params: processParams,
      query: outputQuery,
      responses: {
        200: { description: 'NDJSON stream', schema: ndjsonLineSchema, contentType: NDJSON },
        404: { description: 'No such sandbox or process', schema: errorSchema },
      },
      async handler(call) {
        const { sandbox } = await call.sandbox(call.params.id, 'sandbox:read');
        const handle = await sandbox.commands.connect(call.params.processId);
        const stream = startNdjson(call.reply, { heartbeatMs: ctx.ndjsonHeartbeatMs });
        void streamOutput(handle, call.query.fromOffset ?? 0, stream);
        return SENT;
      },
    }),
  ];
}

/** Replays from `fromOffset`, follows live output, ends with the exit line (or an error line). */
async function streamOutput(
  handle: ProcessHandle,
  fromOffset: number,
  stream: ReturnType<typeof startNdjson>,
): Promise<void> {
  let attachment: Awaited<ReturnType<ProcessHandle['attach']>> | null = null;
  stream.onAbort(() => attachment?.detach());
  try {
    attachment = await handle.attach({
      fromOffset,
      onStdout: (data) => stream.write({ type: 'stdout', data: data.toString('base64') }),
      onStderr: (data) => stream.write({ type: 'stderr', data: data.toString('base64') }),
    });
    if (stream.closed) attachment.detach();
    if (attachment.lost.stdout > 0 || attachment.lost.stderr > 0) {
      stream.write({ type: 'lost', ...attachment.lost });
    }
    const result = await handle.wait();
    attachment.detach();
    stream.write(exitLine(result));
    stream.end();
  } catch (err) {
    attachment?.detach();
    stream.fail(err);
  }
}
