/**
 * `ironcage sandbox ...`: the API's sandboxes from a shell, through the SDK (never the server's code), so the
 * CLI works against any `ironcage serve`, local or remote. Also home of the small helpers `secrets` shares.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { parseArgs } from 'node:util';
import { type ConnectionOptions, IroncageError, type ProcessResult, Sandbox } from '../sdk/index.js';
import type { SandboxInfo } from '../sdk/types.js';

/** Where a command reads and writes: the process by default, buffers in tests. */
export interface CliIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

export function processIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env };
}

/** Wrong invocation: exit 2 with the message and a pointer to --help. */
export class UsageError extends Error {
  readonly code = 'USAGE';
}

export const CONNECTION_OPTIONS = {
  'api-url': { type: 'string' },
  'api-key': { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export const CONNECTION_HELP = `connection (every command):
  --api-url URL     the server (default: $IRONCAGE_API_URL, else http://127.0.0.1:3000)
  --api-key KEY     the API key (default: $IRONCAGE_API_KEY; the admin key is in <state-dir>/admin-key)
  --json            machine-readable output on stdout
`;

/** Connection from flags, then the (given) environment; checked here so a missing key is a usage error. */
export function connectionFrom(
  values: { 'api-url'?: string; 'api-key'?: string },
  io: CliIo,
): ConnectionOptions {
  const apiUrl = values['api-url'] ?? io.env.IRONCAGE_API_URL;
  const apiKey = values['api-key'] ?? io.env.IRONCAGE_API_KEY;
  if (apiKey === undefined || apiKey === '') {
    throw new UsageError(
      'no API key: pass --api-key or set IRONCAGE_API_KEY (the admin key is in <state-dir>/admin-key)',
    );
  }
  return { apiKey, ...(apiUrl === undefined || apiUrl === '' ? {} : { apiUrl }) };
}

/** What to do about an API error, by its code or class. */
function hintFor(err: IroncageError): string {
  switch (err.name) {
    case 'AuthenticationError':
      return 'check --api-key / IRONCAGE_API_KEY (is the key revoked, or for another server?)';
    case 'ForbiddenError':
      return 'this key lacks the scope for that; use a key with it (the admin key can do everything)';
    case 'NotFoundError':
      return 'check the id or name (`ironcage sandbox ls` and `ironcage secrets ls` list what this key sees)';
    case 'RateLimitError':
      return 'wait and retry, or kill sandboxes you no longer need';
    case 'ConnectionError':
      return 'start the server (`ironcage serve`) or point --api-url / IRONCAGE_API_URL at it';
    default:
      return '';
  }
}

/** Prints an error and picks the exit code: 2 usage, 1 API error (with its code). Rethrows anything else. */
export function reportError(prefix: string, err: unknown, io: CliIo): number {
  if (err instanceof UsageError || isParseArgsError(err)) {
    io.stderr.write(`${prefix}: ${(err as Error).message}\n(see ${prefix} --help)\n`);
    return 2;
  }
  if (err instanceof IroncageError) {
    const hint = hintFor(err);
    const request = err.requestId === null ? '' : `, request ${err.requestId}`;
    io.stderr.write(`${prefix}: ${err.message} [${err.code}${request}]\n${hint === '' ? '' : `  ${hint}\n`}`);
    return 1;
  }
  throw err;
}

function isParseArgsError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}

/** `k=v` pairs into a record (flag name for the message). */
export function keyValues(pairs: string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of pairs ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--${flag} takes KEY=VALUE, got '${kv}'`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

function seconds(raw: string | undefined, flag: string): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(`--${flag} takes a positive number of seconds, got '${raw}'`);
  return Math.ceil(n * 1000);
}

/** Fixed-width columns; the last one is not padded. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '))
    .join('\n')
    .concat('\n');
}

function printJson(io: CliIo, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Shell conventions, as `ironcage run`: the code, 124 for a timeout, 128+N for signal N. */
export function exitCodeOf(result: Pick<ProcessResult, 'exitCode' | 'signal' | 'timedOut'>): number {
  if (result.timedOut) return 124;
  if (result.exitCode !== null) return result.exitCode;
  const signal = result.signal as keyof typeof constants.signals | null;
  return 128 + (signal !== null ? (constants.signals[signal] ?? 9) : 9);
}

const HELP = `usage: ironcage sandbox <command> [options]

Sandboxes on an ironcage server (\`ironcage serve\`), through its HTTP API.

commands:
  create [--preset P] [--timeout S] [--allow RULE]... [--metadata K=V]... [--env K=V]...
                                 create a sandbox and print its id (--timeout: TTL in seconds, 'none' for no TTL;
                                 --allow: open egress to RULE through the proxy, e.g. pypi.org, *.github.com:443)
  ls [--metadata K=V]...         list sandboxes (all pages): id, state, created, deadline
  exec ID [--cwd DIR] [--env K=V]... [--timeout S] -- CMD [ARGS...]
                                 run CMD as argv (no shell), streaming its output; exits with its exit code
  exec ID --sh 'STRING'          the same through /bin/sh -c
  cp LOCAL ID:PATH               upload a file (LOCAL '-' reads stdin); binary-safe
  cp ID:PATH LOCAL               download a file (LOCAL '-' writes stdout); binary-safe
  logs ID PROCESS_ID [--from N]  replay a process's output from byte N, then follow it until it exits
  shell ID [--cmd STRING | -- CMD [ARGS...]] [--cwd DIR] [--env K=V]...
                                 interactive terminal (login shell by default); piped stdin works too
  kill ID                        kill a sandbox (processes, workspace, snapshots)
  pause ID | resume ID           freeze / thaw every process of a sandbox
  snapshot ID NAME               checkpoint the workspace under NAME
  restore ID NAME                roll the workspace back to snapshot NAME

${CONNECTION_HELP}
exit codes: 0 ok; 2 usage error; 1 API error (its code is printed); exec, logs, shell: the command's own code,
124 on timeout, 128+N when it died of signal N.
`;

type Handler = (args: string[], io: CliIo) => Promise<number>;

const SUBCOMMANDS: Record<string, Handler> = {
  create: createCmd,
  ls: lsCmd,
  list: lsCmd,
  exec: execCmd,
  cp: cpCmd,
  logs: logsCmd,
  // Loaded on use: the terminal pulls in the WebSocket client.
  shell: async (a, io) => (await import('./shell.js')).shellCmd(a, io),
  kill: (a, io) => lifecycleCmd('kill', a, io),
  pause: (a, io) => lifecycleCmd('pause', a, io),
  resume: (a, io) => lifecycleCmd('resume', a, io),
  snapshot: (a, io) => snapshotCmd('snapshot', a, io),
  restore: (a, io) => snapshotCmd('restore', a, io),
};

export async function sandboxCommand(argv: string[], io: CliIo = processIo()): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') {
    io.stdout.write(HELP);
    return sub === undefined ? 2 : 0;
  }
  const handler = SUBCOMMANDS[sub];
  const prefix = `ironcage sandbox ${sub}`;
  if (handler === undefined) {
    io.stderr.write(`ironcage sandbox: unknown command '${sub}'\n${HELP}`);
    return 2;
  }
  try {
    return await handler(rest, io);
  } catch (err) {
    return reportError(prefix, err, io);
  }
}

/** parseArgs (strict, positionals allowed) with the connection flags added. */
function parse<O extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>>(
  args: string[],
  options: O,
) {
  return parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: { ...CONNECTION_OPTIONS, ...options },
  });
}

function positional(positionals: string[], count: number, names: string): string[] {
  if (positionals.length !== count) {
    throw new UsageError(
      `expected ${names}, got ${positionals.length === 0 ? 'nothing' : positionals.join(' ')}`,
    );
  }
  return positionals;
}

async function createCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    preset: { type: 'string' },
    timeout: { type: 'string' },
    allow: { type: 'string', multiple: true },
    metadata: { type: 'string', multiple: true },
    env: { type: 'string', multiple: true },
  });
  if (values.help) return help(io);
  positional(positionals, 0, 'no arguments');
  const connection = connectionFrom(values, io);
  const timeoutMs = values.timeout === 'none' ? null : seconds(values.timeout, 'timeout');
  const allow = values.allow ?? [];
  const env = keyValues(values.env, 'env');
  // Progress only for a person watching: a pipe or a log file gets nothing extra.
  const progress = io.stderr.isTTY === true;
  if (progress) io.stderr.write('creating sandbox...');
  let sandbox: Sandbox;
  try {
    sandbox = await Sandbox.create({
      ...connection,
      ...(values.preset === undefined ? {} : { preset: values.preset }),
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(allow.length === 0 ? {} : { policy: { network: { mode: 'proxy', allow } } }),
      ...(values.metadata === undefined ? {} : { metadata: keyValues(values.metadata, 'metadata') }),
      ...(Object.keys(env).length === 0 ? {} : { env }),
    });
  } finally {
    if (progress) io.stderr.write('\r\x1b[K');
  }
  if (values.json) printJson(io, await sandbox.info());
  else io.stdout.write(`${sandbox.id}\n`);
  return 0;
}

async function lsCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { metadata: { type: 'string', multiple: true } });
  if (values.help) return help(io);
  positional(positionals, 0, 'no arguments');
  const connection = connectionFrom(values, io);
  const items: SandboxInfo[] = [];
  for await (const info of Sandbox.listAll({
    ...connection,
    ...(values.metadata === undefined ? {} : { metadata: keyValues(values.metadata, 'metadata') }),
  })) {
    items.push(info);
  }
  if (values.json) {
    printJson(io, items);
    return 0;
  }
  const rows = items.map((s) => [s.id, s.state, s.createdAt, s.deadline ?? '-']);
  io.stdout.write(table([['ID', 'STATE', 'CREATED', 'DEADLINE'], ...rows]));
  return 0;
}

async function execCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    sh: { type: 'string' },
    cwd: { type: 'string' },
    env: { type: 'string', multiple: true },
    timeout: { type: 'string' },
  });
  if (values.help) return help(io);
  const [id, ...command] = positionals;
  if (id === undefined) throw new UsageError('expected ID -- CMD [ARGS...] (or ID --sh STRING)');
  if (values.sh !== undefined && command.length > 0) {
    throw new UsageError('give either --sh STRING or -- CMD [ARGS...], not both');
  }
  if (values.sh === undefined && command.length === 0)
    throw new UsageError('no command: add -- CMD [ARGS...]');
  const connection = connectionFrom(values, io);
  const timeoutMs = seconds(values.timeout, 'timeout');
  const env = keyValues(values.env, 'env');
  const sandbox = await Sandbox.connect(id, connection);
  // Ctrl-C disconnects, and the server kills the command when its stream goes away.
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  try {
    const result = await sandbox.commands.run(values.sh ?? command, {
      signal: controller.signal,
      ...(values.cwd === undefined ? {} : { cwd: values.cwd }),
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(Object.keys(env).length === 0 ? {} : { env }),
      ...(values.json
        ? {}
        : { onStdout: (d: string) => io.stdout.write(d), onStderr: (d: string) => io.stderr.write(d) }),
    });
    if (values.json) printJson(io, result);
    else if (result.timedOut) io.stderr.write(`ironcage sandbox exec: timed out\n`);
    return exitCodeOf(result);
  } finally {
    process.off('SIGINT', stop);
  }
}

/** `ID:PATH` splits at the first colon; a local path never has to contain one. */
function remote(spec: string): { id: string; path: string } | null {
  const colon = spec.indexOf(':');
  if (colon <= 0) return null;
  return { id: spec.slice(0, colon), path: spec.slice(colon + 1) };
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}

async function cpCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {});
  if (values.help) return help(io);
  const [from, to] = positional(positionals, 2, 'LOCAL ID:PATH or ID:PATH LOCAL') as [string, string];
  const src = remote(from);
  const dst = remote(to);
  if ((src === null) === (dst === null)) {
    throw new UsageError('exactly one side must be ID:PATH (a sandbox file), the other a local path or -');
  }
  const connection = connectionFrom(values, io);
  if (dst !== null) {
    const data = from === '-' ? await readAll(io.stdin) : await readFile(from);
    const sandbox = await Sandbox.connect(dst.id, connection);
    const written = await sandbox.files.write(dst.path, data);
    if (values.json) printJson(io, written);
    else io.stderr.write(`${written.bytes} bytes -> ${dst.id}:${written.path}\n`);
    return 0;
  }
  const source = src as { id: string; path: string };
  const sandbox = await Sandbox.connect(source.id, connection);
  const data = await sandbox.files.read(source.path);
  if (to === '-') io.stdout.write(data);
  else await writeFile(to, data);
  if (values.json && to !== '-') printJson(io, { path: to, bytes: data.byteLength });
  else if (to !== '-') io.stderr.write(`${data.byteLength} bytes -> ${to}\n`);
  return 0;
}

async function logsCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { from: { type: 'string' } });
  if (values.help) return help(io);
  const [id, processArg] = positional(positionals, 2, 'ID PROCESS_ID') as [string, string];
  const processId = Number(processArg);
  if (!Number.isSafeInteger(processId) || processId < 0) {
    throw new UsageError(`PROCESS_ID is a number, got '${processArg}'`);
  }
  const fromOffset = values.from === undefined ? undefined : Number(values.from);
  if (fromOffset !== undefined && (!Number.isSafeInteger(fromOffset) || fromOffset < 0)) {
    throw new UsageError(`--from takes a byte offset, got '${values.from}'`);
  }
  const connection = connectionFrom(values, io);
  const sandbox = await Sandbox.connect(id, connection);
  const handle = await sandbox.commands.connect(processId);
  const result = await handle.output({
    ...(fromOffset === undefined ? {} : { fromOffset }),
    ...(values.json
      ? {}
      : { onStdout: (d: string) => io.stdout.write(d), onStderr: (d: string) => io.stderr.write(d) }),
  });
  if (values.json) printJson(io, result);
  else if (result.lost.stdout + result.lost.stderr > 0) {
    io.stderr.write(
      `ironcage sandbox logs: the sandbox no longer held the first ${result.lost.stdout} stdout and ${result.lost.stderr} stderr bytes\n`,
    );
  }
  return exitCodeOf(result);
}

async function lifecycleCmd(action: 'kill' | 'pause' | 'resume', args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {});
  if (values.help) return help(io);
  const [id] = positional(positionals, 1, 'ID') as [string];
  const sandbox = await Sandbox.connect(id, connectionFrom(values, io));
  if (action === 'kill') {
    const killed = await sandbox.kill();
    if (values.json) printJson(io, { id, killed });
    else io.stdout.write(killed ? `killed ${id}\n` : `${id} was already gone\n`);
    return 0;
  }
  const info = action === 'pause' ? await sandbox.pause() : await sandbox.resume();
  if (values.json) printJson(io, info);
  else io.stdout.write(`${info.id} ${info.state}\n`);
  return 0;
}

async function snapshotCmd(action: 'snapshot' | 'restore', args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {});
  if (values.help) return help(io);
  const [id, name] = positional(positionals, 2, 'ID NAME') as [string, string];
  const sandbox = await Sandbox.connect(id, connectionFrom(values, io));
  if (action === 'snapshot') {
    const snap = await sandbox.snapshot(name);
    if (values.json) printJson(io, snap);
    else
      io.stdout.write(`snapshot ${snap.name}: ${snap.files} files, ${snap.dirs} dirs, ${snap.bytes} bytes\n`);
    return 0;
  }
  const info = await sandbox.restore(name);
  if (values.json) printJson(io, info);
  else io.stdout.write(`${info.id} restored to ${name}\n`);
  return 0;
}

function help(io: CliIo): number {
  io.stdout.write(HELP);
  return 0;
}
