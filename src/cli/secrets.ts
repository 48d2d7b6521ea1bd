/** `ironcage secrets ...`: the server's secret vault (values go in, only names and bindings come out). */
import { parseArgs } from 'node:util';
import { IroncageClient } from '../sdk/index.js';
import {
  type CliIo,
  CONNECTION_HELP,
  CONNECTION_OPTIONS,
  connectionFrom,
  processIo,
  reportError,
  table,
  UsageError,
} from './sandbox.js';

const HELP = `usage: ironcage secrets <command> [options]

Secrets in the server's vault. A sandbox whose policy names a secret sees only a placeholder; the egress proxy
swaps in the value on requests to the secret's hosts.

commands:
  set NAME --host H [--host H]... [--header X]... [--path P]... [--body]
                     create or replace NAME with the value read from stdin (one trailing newline dropped).
                     The value is never taken from the command line: argv is visible to every local user
                     in /proc and ps, and it lands in shell history. Use: printf %s "$TOKEN" | ironcage secrets set ...
                     --host: hosts the value may be sent to; --header: only in these request headers;
                     --path: only on these URL paths; --body: also in request bodies
  ls                 list names and bindings (never values)
  rm NAME            delete NAME

${CONNECTION_HELP}
exit codes: 0 ok; 2 usage error; 1 API error (its code is printed).
`;

export async function secretsCommand(argv: string[], io: CliIo = processIo()): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') {
    io.stdout.write(HELP);
    return sub === undefined ? 2 : 0;
  }
  const handler = { set: setCmd, ls: lsCmd, list: lsCmd, rm: rmCmd, delete: rmCmd }[sub];
  if (handler === undefined) {
    io.stderr.write(`ironcage secrets: unknown command '${sub}'\n${HELP}`);
    return 2;
  }
  try {
    return await handler(rest, io);
  } catch (err) {
    return reportError(`ironcage secrets ${sub}`, err, io);
  }
}

async function readValue(io: CliIo): Promise<string> {
  if (io.stdin.isTTY) io.stderr.write('secret value (then Enter and Ctrl-D): ');
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  // `echo $TOKEN |` adds a newline that is not part of the value.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

async function setCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    host: { type: 'string', multiple: true },
    header: { type: 'string', multiple: true },
    path: { type: 'string', multiple: true },
    body: { type: 'boolean', default: false },
    value: { type: 'string' },
  });
  if (values.help) return help(io);
  // --value exists only to refuse it with the reason, instead of a bare "unknown option".
  if (values.value !== undefined) {
    throw new UsageError(
      'the value is read from stdin, never from argv (other users see argv in ps and /proc, and shells keep it in history)',
    );
  }
  if (positionals.length !== 1) throw new UsageError('expected NAME');
  const name = positionals[0] as string;
  const hosts = values.host ?? [];
  if (hosts.length === 0) throw new UsageError('at least one --host is needed: where the value may be sent');
  const connection = connectionFrom(values, io);
  const value = await readValue(io);
  if (value === '')
    throw new UsageError('empty value on stdin (pipe the value in: printf %s "$TOKEN" | ...)');
  const headers = values.header;
  const paths = values.path;
  const info = await new IroncageClient(connection).secrets.create({
    name,
    value,
    hosts,
    ...(headers === undefined ? {} : { headers }),
    ...(paths === undefined ? {} : { paths }),
    ...(values.body ? { body: true } : {}),
  });
  if (values.json) io.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
  else io.stdout.write(`secret ${info.name} set (hosts: ${info.hosts.join(', ')})\n`);
  return 0;
}

async function lsCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {});
  if (values.help) return help(io);
  if (positionals.length !== 0) throw new UsageError('ls takes no arguments');
  const secrets = await new IroncageClient(connectionFrom(values, io)).secrets.list();
  if (values.json) {
    io.stdout.write(`${JSON.stringify(secrets, null, 2)}\n`);
    return 0;
  }
  const rows = secrets.map((s) => [
    s.name,
    s.hosts.join(','),
    s.headers?.join(',') ?? '-',
    s.paths?.join(',') ?? '-',
    s.updatedAt,
  ]);
  io.stdout.write(table([['NAME', 'HOSTS', 'HEADERS', 'PATHS', 'UPDATED'], ...rows]));
  return 0;
}

async function rmCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {});
  if (values.help) return help(io);
  if (positionals.length !== 1) throw new UsageError('expected NAME');
  const name = positionals[0] as string;
  await new IroncageClient(connectionFrom(values, io)).secrets.delete(name);
  if (values.json) io.stdout.write(`${JSON.stringify({ name, deleted: true })}\n`);
  else io.stdout.write(`secret ${name} deleted\n`);
  return 0;
}

function parse<
  O extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean; default?: boolean }>,
>(args: string[], options: O) {
  return parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: { ...CONNECTION_OPTIONS, ...options },
  });
}

function help(io: CliIo): number {
  io.stdout.write(HELP);
  return 0;
}
