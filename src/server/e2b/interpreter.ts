/**
 * What `@e2b/code-interpreter` expects at the sandbox URL (E2B runs Jupyter on port 49999 for it): POST
 * /execute streaming newline-delimited JSON (stdout, stderr, result, error, number_of_executions,
 * end_of_execution), and /contexts to create, list, restart and remove execution contexts. Here a context is one
 * long-lived python3 process inside the sandbox running ironcage's own driver (interpreter-driver.ts); no
 * Jupyter. Python only. Contexts belong to their sandbox and end with it.
 */
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { ProcessHandle } from '../../sandbox/commands.js';
import { SandboxStateError } from '../../sandbox/errors.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { ApiError, describeZodError } from '../errors.js';
import { parseUntrustedJson } from '../untrusted-json.js';
import type { E2bAccess } from './access.js';
import { DRIVER_BOOTSTRAP, DRIVER_SOURCE, DRIVER_TAG } from './interpreter-driver.js';

/** Languages a context can run. */
export const INTERPRETER_LANGUAGES = ['python'] as const;
/** Largest /execute body (the code and its env). */
export const MAX_EXECUTE_BODY_BYTES = 16 * 1024 * 1024;
/** Contexts one sandbox may hold at once. */
export const MAX_CONTEXTS_PER_SANDBOX = 16;
/** How long an interrupted execution may take to stop before its context is restarted (state lost). */
export const INTERRUPT_GRACE_MS = 3_000;
/** How long a new driver may take to report ready. */
const START_TIMEOUT_MS = 20_000;
/** Longest protocol line accepted from a driver (its messages carry at most ~2 M characters of text). */
const MAX_DRIVER_LINE = 16 * 1024 * 1024;
/** Interval of keepalive messages on a quiet /execute stream (proxies close idle connections). */
const KEEPALIVE_MS = 25_000;

type Json = Record<string, unknown>;

/** A failure of the interpreter itself (the driver did not start or ended), with a stable code. */
export class InterpreterError extends Error {
  constructor(
    readonly code: 'DRIVER_START_FAILED' | 'CONTEXT_DIED' | 'CONTEXT_CLOSED',
    message: string,
  ) {
    super(message);
    this.name = 'InterpreterError';
  }
}

/** One message of the SDK's stream (see its parseOutput). */
export type OutputMessage =
  | { type: 'stdout' | 'stderr'; text: string }
  | { type: 'result'; is_main_result: true; [format: string]: unknown }
  | { type: 'error'; name: string; value: string; traceback: string }
  | { type: 'number_of_executions'; execution_count: number }
  | { type: 'end_of_execution' }
  /** Not one of the SDK's types (it skips unknown ones): keeps an idle stream's connection busy. */
  | { type: 'keepalive' };

/** Display formats passed on from a driver's result (the SDK's Result fields). */
const RESULT_FORMATS = ['text', 'html', 'markdown', 'svg', 'png', 'jpeg', 'latex', 'json', 'javascript'];

function isJson(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A driver's messages come from inside the sandbox, where the user's code could write anything to them: only
 * well-formed messages for the request in progress are turned into the SDK's format, everything else dropped.
 */
function toOutput(message: Json): OutputMessage | null {
  switch (message.type) {
    case 'stdout':
    case 'stderr':
      return typeof message.text === 'string' ? { type: message.type, text: message.text } : null;
    case 'result': {
      if (!isJson(message.data) || typeof message.data.text !== 'string') return null;
      const formats: Json = {};
      for (const format of RESULT_FORMATS) {
        const value = message.data[format];
        if (typeof value === 'string' || (format === 'json' && value !== undefined)) formats[format] = value;
      }
      return { ...formats, type: 'result', is_main_result: true };
    }
    case 'error':
      return {
        type: 'error',
        name: String(message.name ?? 'Error'),
        value: String(message.value ?? ''),
        traceback: String(message.traceback ?? ''),
      };
    default:
      return null;
  }
}

function parseDriverLine(line: string): Json | null {
  try {
    const value = parseUntrustedJson(line);
    return isJson(value) ? value : null;
  } catch {
    return null;
  }
}

interface Running {
  id: number;
  onOutput: (message: OutputMessage) => void;
  finish: (outcome: { executionCount: number } | InterpreterError) => void;
}

/** One python3 driver process and its protocol. */
class Driver {
  #handle: ProcessHandle | null = null;
  #buffer = '';
  #running: Running | null = null;
  #ready: ((ok: true | InterpreterError) => void) | null = null;
  readonly #readyPromise: Promise<true | InterpreterError>;
  #stderrTail = '';
  #ended = false;
  #nextId = 1;

  private constructor() {
    this.#readyPromise = new Promise((resolve) => {
      this.#ready = resolve;
    });
  }

  static async start(sandbox: Sandbox, cwd: string): Promise<Driver> {
    const driver = new Driver();
    const handle = await sandbox.commands
      .run(['python3', '-u', '-c', DRIVER_BOOTSTRAP], {
        background: true,
        stdin: true,
        cwd,
        tag: DRIVER_TAG,
        // Everything is read through the callbacks; a long-lived context must not also pile output up for wait().
        keepBytes: 0,
        onStdout: (text) => driver.#onText(text),
        // Kept for the message when the driver dies (a crash of the driver itself, python3 missing).
        onStderr: (text) => {
          driver.#stderrTail = (driver.#stderrTail + text).slice(-2000);
        },
      })
      .catch((err: unknown) => {
        throw new InterpreterError(
          'DRIVER_START_FAILED',
          `python3 could not be started in the sandbox: ${err instanceof Error ? err.message : String(err)}`,
        );
      });
    driver.#handle = handle;
    void handle.wait().then((result) => {
      const how = result.exitCode !== null ? `exit code ${result.exitCode}` : `signal ${result.signal}`;
      const detail = driver.#stderrTail.trim().split('\n').slice(-3).join(' | ');
      driver.#end(
        new InterpreterError(
          'CONTEXT_DIED',
          `the context's python3 process ended (${how})${detail === '' ? '' : `: ${detail}`}`,
        ),
      );
    });
    const timer = setTimeout(
      () =>
        driver.#ready?.(
          new InterpreterError('DRIVER_START_FAILED', `python3 did not start within ${START_TIMEOUT_MS} ms`),
        ),
      START_TIMEOUT_MS,
    );
    await handle.sendStdin(`${JSON.stringify(DRIVER_SOURCE)}\n`).catch(() => {});
    const outcome = await driver.#readyPromise;
    clearTimeout(timer);
    if (outcome !== true) {
      await driver.kill();
      throw new InterpreterError('DRIVER_START_FAILED', `python3 could not start: ${outcome.message}`);
    }
    return driver;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Runs one execution; resolves with the context's execution count, or an InterpreterError if it died. */
  execute(
    code: string,
    env: Record<string, string>,
    onOutput: (message: OutputMessage) => void,
  ): Promise<{ executionCount: number } | InterpreterError> {
    if (this.#ended) return Promise.resolve(new InterpreterError('CONTEXT_DIED', 'the context has ended'));
    if (this.#running !== null) throw new Error('one execution at a time per driver');
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#running = {
        id,
        onOutput,
        finish: (outcome) => {
          this.#running = null;
          resolve(outcome);
        },
      };
      this.#handle?.sendStdin(`${JSON.stringify({ id, code, env })}\n`).catch((err: unknown) => {
        void this.kill(`could not reach the context: ${(err as Error).message}`);
      });
    });
  }

  /** KeyboardInterrupt in the running code (the driver ignores it between executions). */
  interrupt(): Promise<void> {
    return this.#handle?.kill('SIGINT').catch(() => {}) ?? Promise.resolve();
  }

  async kill(reason = 'the context was closed'): Promise<void> {
    this.#end(new InterpreterError('CONTEXT_CLOSED', reason));
    await this.#handle?.kill('SIGKILL').catch(() => {});
  }

  #end(reason: InterpreterError): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#ready?.(reason);
    this.#ready = null;
    this.#running?.finish(reason);
  }

  #onText(text: string): void {
    if (this.#ended) return;
    // Only the new text can hold the next newline (a long line arrives in many chunks).
    let newline = text.indexOf('\n');
    if (newline >= 0) newline += this.#buffer.length;
    this.#buffer += text;
    while (newline >= 0) {
      const line = this.#buffer.slice(0, newline);
      this.#buffer = this.#buffer.slice(newline + 1);
      this.#onLine(line);
      newline = this.#buffer.indexOf('\n');
    }
    if (this.#buffer.length > MAX_DRIVER_LINE) {
      this.#buffer = '';
      void this.kill(`the context sent a message over ${MAX_DRIVER_LINE} bytes; it was restarted`);
    }
  }

  #onLine(line: string): void {
    const message = parseDriverLine(line);
    if (message === null) return;
    if (message.type === 'ready') {
      this.#ready?.(true);
      this.#ready = null;
      return;
    }
    const running = this.#running;
    if (running === null || message.id !== running.id) return;
    if (message.type === 'end') {
      const count = typeof message.execution_count === 'number' ? message.execution_count : 0;
      running.finish({ executionCount: count });
      return;
    }
    const output = toOutput(message);
    if (output !== null) running.onOutput(output);
  }
}

export interface CodeContextInfo {
  id: string;
  language: string;
  cwd: string;
}

/** An execution context: its driver (started on first use, again after a restart) and its queue. */
class CodeContext {
  readonly id: string;
  readonly language = 'python';
  readonly cwd: string;
  readonly #sandbox: Sandbox;
  #driver: Promise<Driver> | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(sandbox: Sandbox, id: string, cwd: string) {
    this.#sandbox = sandbox;
    this.id = id;
    this.cwd = cwd;
  }

  get info(): CodeContextInfo {
    return { id: this.id, language: this.language, cwd: this.cwd };
  }

  /**
   * Runs `code` after the executions queued before it. `client` aborts when the client left: a queued run is
   * skipped; a running one is interrupted, and restarted (state lost) if it does not stop within the grace.
   */
  execute(
    code: string,
    env: Record<string, string>,
    onOutput: (message: OutputMessage) => void,
    client: AbortSignal,
  ): Promise<void> {
    const run = this.#queue.then(() => this.#run(code, env, onOutput, client));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #run(
    code: string,
    env: Record<string, string>,
    onOutput: (message: OutputMessage) => void,
    client: AbortSignal,
  ): Promise<void> {
    if (client.aborted) return;
    let driver: Driver;
    try {
      driver = await this.#ensureDriver();
    } catch (err) {
      onOutput(errorOutput(err));
      return;
    }
    const outcome = driver.execute(code, env, onOutput);
    const left = new Promise<'left'>((resolve) => {
      if (client.aborted) resolve('left');
      else client.addEventListener('abort', () => resolve('left'), { once: true });
    });
    const first = await Promise.race([outcome, left]);
    if (first === 'left') {
      await driver.interrupt();
      let timer: NodeJS.Timeout | undefined;
      const stopped = await Promise.race([
        outcome.then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), INTERRUPT_GRACE_MS);
        }),
      ]);
      clearTimeout(timer);
      if (!stopped)
        await this.#stopDriver(driver, 'the interrupted execution did not stop; context restarted');
      return;
    }
    if (first instanceof InterpreterError) {
      onOutput(errorOutput(first));
      return;
    }
    onOutput({ type: 'number_of_executions', execution_count: first.executionCount });
  }

  #ensureDriver(): Promise<Driver> {
    if (this.#closed)
      return Promise.reject(new InterpreterError('CONTEXT_CLOSED', 'the context was removed'));
    const current = this.#driver;
    const fresh = () => {
      const started = Driver.start(this.#sandbox, this.cwd);
      this.#driver = started;
      // A failed start is reported once; the next execution tries again.
      started.catch(() => {
        if (this.#driver === started) this.#driver = null;
      });
      return started;
    };
    if (current === null) return fresh();
    return current.then(
      (driver) => (driver.ended ? fresh() : driver),
      () => fresh(),
    );
  }

  async #stopDriver(driver: Driver, reason: string): Promise<void> {
    await driver.kill(reason);
    if (this.#driver !== null && (await this.#driver.catch(() => null)) === driver) this.#driver = null;
  }

  /** Ends the driver; a new one starts with a clean namespace on the next execution. */
  async restart(reason = 'the context was restarted'): Promise<void> {
    const current = this.#driver;
    this.#driver = null;
    const driver = await current?.catch(() => null);
    await driver?.kill(reason);
  }

  async close(reason: string): Promise<void> {
    this.#closed = true;
    await this.restart(reason);
  }
}

function errorOutput(err: unknown): OutputMessage {
  const code = err instanceof InterpreterError ? err.code : 'INTERPRETER_ERROR';
  const name = code === 'DRIVER_START_FAILED' ? 'InterpreterUnavailable' : 'ContextDied';
  return {
    type: 'error',
    name,
    value: err instanceof Error ? err.message : String(err),
    traceback: '',
  };
}

/** The contexts of one sandbox. */
class SandboxContexts {
  readonly contexts = new Map<string, CodeContext>();
  defaultId: string | null = null;

  constructor(readonly sandbox: Sandbox) {}

  create(cwd: string | undefined): CodeContext {
    if (this.contexts.size >= MAX_CONTEXTS_PER_SANDBOX) {
      throw new ApiError(
        429,
        'TOO_MANY_CONTEXTS',
        `a sandbox holds at most ${MAX_CONTEXTS_PER_SANDBOX} code contexts; remove one first`,
      );
    }
    const context = new CodeContext(
      this.sandbox,
      randomUUID(),
      cwd ?? this.sandbox.policy.filesystem.workdir,
    );
    this.contexts.set(context.id, context);
    return context;
  }

  get(id: string): CodeContext {
    const context = this.contexts.get(id);
    // 404 is the status whose body E2B's SDK shows.
    if (context === undefined) throw new ApiError(404, 'CONTEXT_NOT_FOUND', `code context ${id} not found`);
    return context;
  }

  defaultContext(): CodeContext {
    const existing = this.defaultId === null ? undefined : this.contexts.get(this.defaultId);
    if (existing !== undefined) return existing;
    const context = this.create(undefined);
    this.defaultId = context.id;
    return context;
  }

  async remove(id: string): Promise<void> {
    const context = this.get(id);
    this.contexts.delete(id);
    if (this.defaultId === id) this.defaultId = null;
    await context.close('the context was removed');
  }

  async closeAll(reason: string): Promise<void> {
    const all = [...this.contexts.values()];
    this.contexts.clear();
    this.defaultId = null;
    await Promise.all(all.map((context) => context.close(reason)));
  }
}

/** Every sandbox's contexts. Keyed weakly by the live Sandbox object, dropped when it stops. */
export class CodeInterpreter {
  readonly #bySandbox = new WeakMap<Sandbox, SandboxContexts>();
  readonly #live = new Set<SandboxContexts>();

  for(sandbox: Sandbox): SandboxContexts {
    let entry = this.#bySandbox.get(sandbox);
    if (entry === undefined) {
      const created = new SandboxContexts(sandbox);
      entry = created;
      this.#bySandbox.set(sandbox, created);
      this.#live.add(created);
      // The drivers die with the sandbox's processes; what is left here is bookkeeping and waiting clients.
      sandbox.once('stopped', () => {
        this.#bySandbox.delete(sandbox);
        this.#live.delete(created);
        void created.closeAll('the sandbox stopped');
      });
    }
    return entry;
  }

  /** Contexts held for a sandbox (0 once it stopped). */
  contextCount(sandbox: Sandbox): number {
    return this.#bySandbox.get(sandbox)?.contexts.size ?? 0;
  }

  /** Ends every driver (server shutdown: a kept sandbox must not carry drivers no server knows about). */
  async closeAll(): Promise<void> {
    const all = [...this.#live];
    this.#live.clear();
    await Promise.all(all.map((entry) => entry.closeAll('the server is shutting down')));
  }
}

const languageField = z.string().max(64).nullish();
const executeBody = z.object({
  code: z.string(),
  context_id: z.string().max(128).nullish(),
  language: languageField,
  env_vars: z
    .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name'), z.string())
    .nullish(),
});
const contextBody = z.object({ language: languageField, cwd: z.string().min(1).max(4096).nullish() });

function checkLanguage(language: string | null | undefined): void {
  if (language === null || language === undefined || language === 'python' || language === 'python3') return;
  // 404: the SDK only shows the body of a 404 or 502; there is no kernel for this language here.
  throw new ApiError(
    404,
    'LANGUAGE_NOT_SUPPORTED',
    `language '${language}' is not supported by ironcage's code interpreter; ` +
      `supported: ${INTERPRETER_LANGUAGES.join(', ')}`,
  );
}

async function readJson(request: FastifyRequest, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let total = 0;
  const body = request.body as Readable | undefined;
  if (body === undefined) return {};
  for await (const chunk of body) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new ApiError(413, 'BODY_TOO_LARGE', `body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return parseUntrustedJson(text);
  } catch {
    throw new ApiError(400, 'INVALID_JSON', 'request body is not valid JSON');
  }
}

function parse<S extends z.ZodTypeAny>(schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value ?? {});
  if (!result.success)
    throw new ApiError(400, 'INVALID_INPUT', describeZodError(result.error, 'request body'));
  return result.data;
}

type Headers = FastifyRequest['headers'];

/**
 * The code-interpreter SDK sends the envd access token (X-Access-Token) only with /execute; its context calls
 * carry the sandbox's traffic access token (E2B-Traffic-Access-Token), which the control API hands out as the
 * same token. Either proves the caller holds the sandbox.
 */
function withAccessToken(headers: Headers): Headers {
  if (headers['x-access-token'] !== undefined) return headers;
  const traffic = headers['e2b-traffic-access-token'];
  return traffic === undefined ? headers : { ...headers, 'x-access-token': traffic };
}

/** Registers the code-interpreter routes on the envd scope (the URL E2B's SDK uses for port 49999 too). */
export function registerInterpreter(app: FastifyInstance, access: E2bAccess): CodeInterpreter {
  const interpreter = new CodeInterpreter();
  const open = new Set<FastifyReply>();
  app.addHook('preClose', async () => {
    for (const reply of open) reply.raw.destroy();
    await interpreter.closeAll();
  });

  /** The sandbox's contexts; `operation` names what needs its processes (refused while it is paused). */
  const contextsOf = async (request: FastifyRequest, operation?: string) => {
    const sandbox = await access.envdSandbox(withAccessToken(request.headers));
    // A frozen driver cannot answer, and must not be mistaken for a dead one and replaced.
    if (operation !== undefined && sandbox.state === 'paused') {
      throw new SandboxStateError('SANDBOX_PAUSED', sandbox.id, operation);
    }
    return interpreter.for(sandbox);
  };

  app.post('/execute', async (request, reply) => {
    const contexts = await contextsOf(request, 'run code');
    const body = parse(executeBody, await readJson(request, MAX_EXECUTE_BODY_BYTES));
    let context: CodeContext;
    if (body.context_id !== null && body.context_id !== undefined) {
      context = contexts.get(body.context_id);
    } else {
      checkLanguage(body.language);
      context = contexts.defaultContext();
    }
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': 'application/x-ndjson',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    raw.flushHeaders();
    open.add(reply);
    const client = new AbortController();
    raw.once('close', () => client.abort());
    const write = (message: OutputMessage) => {
      if (!raw.destroyed && !raw.writableEnded) raw.write(`${JSON.stringify(message)}\n`);
    };
    const keepalive = setInterval(() => write({ type: 'keepalive' }), KEEPALIVE_MS);
    try {
      await context.execute(body.code, body.env_vars ?? {}, write, client.signal);
      write({ type: 'end_of_execution' });
    } catch (err) {
      write(errorOutput(err));
    } finally {
      clearInterval(keepalive);
      open.delete(reply);
      if (!raw.destroyed && !raw.writableEnded) raw.end();
    }
    return reply;
  });

  app.post('/contexts', async (request, reply) => {
    const contexts = await contextsOf(request);
    const body = parse(contextBody, await readJson(request, 64 * 1024));
    checkLanguage(body.language);
    return reply.status(200).send(contexts.create(body.cwd ?? undefined).info);
  });

  app.get('/contexts', async (request) => {
    const contexts = await contextsOf(request);
    return [...contexts.contexts.values()].map((context) => context.info);
  });

  app.delete('/contexts/:id', async (request, reply) => {
    const contexts = await contextsOf(request, 'remove a code context');
    await contexts.remove((request.params as { id: string }).id);
    return reply.status(204).send();
  });

  app.post('/contexts/:id/restart', async (request, reply) => {
    const contexts = await contextsOf(request, 'restart a code context');
    await contexts.get((request.params as { id: string }).id).restart();
    return reply.status(204).send();
  });

  return interpreter;
}
