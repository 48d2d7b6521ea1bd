/**
 * `ironcage sandbox shell ID`: an interactive terminal in a sandbox (the SDK's sandbox.pty). On a TTY the
 * local terminal goes raw (every key, Ctrl-C included, goes to the remote side) and follows window resizes;
 * with piped stdin the input is forwarded as typed and its end becomes an end-of-file (Ctrl-D) on the remote
 * terminal, so scripts and tests can drive it. Exits with the remote exit code.
 */
import { constants } from 'node:os';
import { parseArgs } from 'node:util';
import { type PtyExit, Sandbox } from '../sdk/index.js';
import { type CliIo, CONNECTION_OPTIONS, connectionFrom, keyValues, UsageError } from './sandbox.js';

/** The terminal's end-of-file character (VEOF): what a user presses to end input. */
const EOF = '\x04';

type TtyIn = CliIo['stdin'] & { setRawMode?(raw: boolean): unknown; isRaw?: boolean };
type TtyOut = CliIo['stdout'] & { rows?: number; columns?: number };

export const SHELL_HELP = `usage: ironcage sandbox shell ID [--cmd STRING | -- CMD [ARGS...]] [--cwd DIR] [--env K=V]...

An interactive terminal in sandbox ID: a login shell (/bin/bash if present, else /bin/sh), --cmd STRING run
with /bin/sh -c, or CMD ARGS as argv. Closing the connection kills the remote process. Exits with its exit
code (128+N when signal N ended it).
`;

function exitCode(exit: PtyExit): number {
  if (exit.exitCode !== null) return exit.exitCode;
  const signal = exit.signal as keyof typeof constants.signals | null;
  return 128 + (signal !== null ? (constants.signals[signal] ?? 9) : 9);
}

export async function shellCmd(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      ...CONNECTION_OPTIONS,
      cmd: { type: 'string' },
      cwd: { type: 'string' },
      env: { type: 'string', multiple: true },
    },
  });
  if (values.help) {
    io.stdout.write(SHELL_HELP);
    return 0;
  }
  const [id, ...argv] = positionals;
  if (id === undefined) throw new UsageError('expected ID');
  if (values.cmd !== undefined && argv.length > 0) {
    throw new UsageError('give either --cmd STRING or -- CMD [ARGS...], not both');
  }
  const connection = connectionFrom(values, io);
  const env = keyValues(values.env, 'env');
  const stdin = io.stdin as TtyIn;
  const stdout = io.stdout as TtyOut;
  const interactive = stdin.isTTY === true && typeof stdin.setRawMode === 'function';

  const sandbox = await Sandbox.connect(id, connection);
  const pty = await sandbox.pty.create({
    rows: stdout.isTTY && stdout.rows ? stdout.rows : 24,
    cols: stdout.isTTY && stdout.columns ? stdout.columns : 80,
    ...(values.cmd !== undefined ? { cmd: values.cmd } : argv.length > 0 ? { cmd: argv } : {}),
    ...(values.cwd === undefined ? {} : { cwd: values.cwd }),
    ...(Object.keys(env).length === 0 ? {} : { env }),
    onData: (data) => stdout.write(data),
    onError: (err) => io.stderr.write(`\r\nironcage sandbox shell: ${err.message} [${err.code}]\r\n`),
  });

  const wasRaw = stdin.isRaw === true;
  const restore = () => {
    if (interactive) stdin.setRawMode?.(wasRaw);
  };
  const onInput = (chunk: Buffer | string) => {
    if (pty.open) pty.write(typeof chunk === 'string' ? chunk : new Uint8Array(chunk));
  };
  const onEnd = () => {
    // Piped input ran out: end-of-file for the remote side, as a user's Ctrl-D.
    if (pty.open) pty.write(EOF);
  };
  const onResize = () => {
    if (pty.open && stdout.rows && stdout.columns) pty.resize(stdout.rows, stdout.columns);
  };
  // Outside signals (the terminal's own keys go to the remote side in raw mode): close, which kills it.
  const onSignal = () => pty.close();
  if (interactive) stdin.setRawMode?.(true);
  // Restores the terminal even if something below throws past the finally (process.exit elsewhere).
  process.once('exit', restore);
  stdin.on('data', onInput);
  stdin.once('end', onEnd);
  // Node emits 'resize' on a TTY stdout when SIGWINCH arrives.
  stdout.on('resize', onResize);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  if (!interactive) process.on('SIGINT', onSignal);
  stdin.resume();
  try {
    return exitCode(await pty.wait());
  } finally {
    restore();
    process.off('exit', restore);
    stdin.off('data', onInput);
    stdin.off('end', onEnd);
    stdout.off('resize', onResize);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    process.off('SIGINT', onSignal);
    stdin.pause();
    pty.close();
  }
}
