/**
 * The MCP server: sandbox tools for an LLM client, over an in-process SandboxManager. Transport-free (the
 * stdio command in ./mcp.ts connects it; src/server/mcp-http.ts serves it over streamable HTTP).
 *
 * Every failure is answered as a tool result with `isError: true` and a sentence saying what was refused and
 * how to proceed; nothing a client sends can crash the server.
 */
import { randomBytes } from 'node:crypto';
import { BlockList } from 'node:net';
import { posix } from 'node:path';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { AgentError } from '../agent/client.js';
import { type EgressRule, parseRule } from '../egress/rules.js';
import type { PresetName } from '../policy/presets.js';
import type { SandboxPolicyInput } from '../policy/schema.js';
import type { CommandResult, ProcessHandle } from '../sandbox/commands.js';
import {
  SandboxManagerError,
  SandboxStartError,
  SandboxStateError,
  WorkspaceQuotaError,
} from '../sandbox/errors.js';
import type { CreateOptions, SandboxManager } from '../sandbox/manager.js';
import type { EgressLogRecord } from '../sandbox/network.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { VERSION } from '../version.js';

export interface McpLimits {
  /** Live sandboxes this server may hold at once. */
  maxSandboxes: number;
  /** Preset of sandbox_create when the client names none. */
  defaultPreset: PresetName;
  /**
   * Egress rules the operator permits. A client's `allowDomains` must each fall within one of them; empty:
   * every network request is refused (sandboxes have no network).
   */
  allow: readonly string[];
  /** stdout and stderr each keep at most this many bytes in a tool result (the rest is cut with a marker). */
  maxOutputBytes: number;
  /** sandbox_read_file refuses larger files. */
  maxReadBytes: number;
  defaultCommandTimeoutS: number;
  /** Cap of a command's timeoutSeconds. */
  maxCommandTimeoutS: number;
  /** Idle timeout of a sandbox when the client names none: every tool call on it starts the count again. */
  defaultSandboxTimeoutS: number;
  maxSandboxTimeoutS: number;
  /** sandbox_list_files returns at most this many entries. */
  maxListEntries: number;
}

export const DEFAULT_MCP_LIMITS: McpLimits = {
  maxSandboxes: 4,
  defaultPreset: 'default',
  allow: [],
  maxOutputBytes: 64 * 1024,
  maxReadBytes: 1024 * 1024,
  defaultCommandTimeoutS: 60,
  maxCommandTimeoutS: 600,
  defaultSandboxTimeoutS: 30 * 60,
  maxSandboxTimeoutS: 4 * 60 * 60,
  maxListEntries: 1000,
};

/** A refused tool call; the message says what was refused and how to fix it. */
export class McpToolError extends Error {
  constructor(
    readonly code:
      | 'SANDBOX_NOT_FOUND'
      | 'LIMIT_REACHED'
      | 'POLICY_REFUSED'
      | 'TIMEOUT'
      | 'INVALID_INPUT'
      | 'FILE_TOO_LARGE'
      | 'SERVER_CLOSED',
    message: string,
  ) {
    super(message);
    this.name = 'McpToolError';
  }
}

/** Bad server configuration (an operator --allow rule that does not parse). */
export class McpConfigError extends Error {
  readonly code = 'INVALID_MCP_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'McpConfigError';
  }
}

export interface SandboxMcpServer {
  readonly server: McpServer;
  /** Ids of the live sandboxes this server created. */
  sandboxIds(): string[];
  /** Refuses further creates and kills every sandbox this server created. */
  close(): Promise<void>;
}

interface Owned {
  sandbox: Sandbox;
  preset: PresetName;
  allow: string[];
  idleMs: number;
  createdAt: string;
}

const LANGUAGES = {
  python: { ext: 'py', argv: (file: string) => ['python3', file] },
  node: { ext: 'js', argv: (file: string) => ['node', file] },
  bash: { ext: 'sh', argv: (file: string) => ['bash', file] },
} as const;

const INSTRUCTIONS = `ironcage gives you isolated Linux sandboxes (bubblewrap, seccomp, cgroups). Create one with
sandbox_create, then run shell commands (sandbox_run_command), code (sandbox_run_code) and file operations in it.
Files live in the sandbox's workdir (/home/sandbox with the default preset; relative paths resolve there). There
is no network unless the sandbox was created with allowDomains. Kill sandboxes you no longer need: only a few may
exist at once. A sandbox unused for its timeout is killed.`;

const sandboxIdField = z.string().min(1).describe('Id returned by sandbox_create.');
const timeoutField = z
  .number()
  .int()
  .positive()
  .optional()
  .describe('Kill the command after this many seconds (default 60; capped by the server).');

/** Builds the MCP server for `manager`; sandboxes it creates are tracked and killed by close(). */
export function createSandboxMcpServer(
  manager: SandboxManager,
  limits: Partial<McpLimits> = {},
  options: {
    log?: (line: string) => void;
    /**
     * Starts a sandbox for sandbox_create instead of `manager.create` (it must return one of `manager`'s
     * sandboxes): the HTTP transport records the calling API key as its owner this way. Its errors become the
     * tool's error result.
     */
    createSandbox?: (create: CreateOptions) => Promise<Sandbox>;
    /** Wraps every command start (the HTTP transport times them into the server's metrics). */
    measureExec?: <T extends CommandResult | ProcessHandle>(start: () => Promise<T>) => Promise<T>;
  } = {},
): SandboxMcpServer {
  const config: McpLimits = { ...DEFAULT_MCP_LIMITS, ...limits };
  const log = options.log ?? (() => {});
  const createSandbox = options.createSandbox ?? ((create: CreateOptions) => manager.create(create));
  const measureExec = options.measureExec ?? ((start) => start());
  const ceiling = config.allow.map((text) => {
    try {
      return parseRule(text);
    } catch (err) {
      throw new McpConfigError(`--allow ${JSON.stringify(text)}: ${(err as Error).message}`);
    }
  });
  const owned = new Map<string, Owned>();
  /** Creates in flight: counted against the limit, and awaited by close() so none outlives it. */
  const creating = new Set<Promise<unknown>>();
  let closed = false;

  const server = new McpServer(
    { name: 'ironcage', version: VERSION },
    { instructions: INSTRUCTIONS, capabilities: { tools: {} } },
  );

  /** Registers a tool whose failures become isError results (logged to the operator's stderr). */
  function tool<Shape extends z.ZodRawShape>(
    name: string,
    description: string,
    inputSchema: Shape,
    handler: (args: z.objectOutputType<Shape, z.ZodTypeAny>) => Promise<CallToolResult>,
  ): void {
    server.registerTool(name, { description, inputSchema }, (async (
      args: z.objectOutputType<Shape, z.ZodTypeAny>,
    ) => {
      try {
        return await handler(args);
      } catch (err) {
        const message = describeError(err);
        log(`${name}: ${message}`);
        return { content: [{ type: 'text', text: message }], isError: true };
      }
    }) as never);
  }

  function lookup(id: string): Owned {
    const entry = owned.get(id);
    if (entry === undefined || manager.get(id) !== entry.sandbox || entry.sandbox.state === 'stopped') {
      owned.delete(id);
      throw new McpToolError(
        'SANDBOX_NOT_FOUND',
        `no sandbox with id ${JSON.stringify(id)}: it never existed, was killed, or was idle past its timeout. ` +
          'Call sandbox_list for the live ones, or sandbox_create for a new one.',
      );
    }
    return entry;
  }

  /** Restarts the idle timeout, plus `busyMs` for a command about to run. */
  function touch(entry: Owned, busyMs = 0): void {
    try {
      entry.sandbox.setTimeout(entry.idleMs + busyMs);
    } catch {
      // stopped meanwhile: the next operation says so
    }
  }

  function commandTimeoutMs(seconds: number | undefined): { ms: number; capped: boolean } {
    const asked = seconds ?? config.defaultCommandTimeoutS;
    const capped = asked > config.maxCommandTimeoutS;
    return { ms: Math.min(asked, config.maxCommandTimeoutS) * 1000, capped };
  }

  async function runForeground(
    entry: Owned,
    command: string | string[],
    opts: { cwd?: string; timeoutSeconds?: number },
  ): Promise<CallToolResult> {
    const { ms, capped } = commandTimeoutMs(opts.timeoutSeconds);
    const sandbox = entry.sandbox;
    const denied: EgressLogRecord[] = [];
    const onEgress = (event: EgressLogRecord) => {
      if (event.decision === 'deny' && denied.length < 20) denied.push(event);
    };
    const total = { stdout: 0, stderr: 0 };
    sandbox.on('egress', onEgress);
    touch(entry, ms);
    const started = Date.now();
    let result: CommandResult;
    try {
      result = await measureExec(() =>
        sandbox.commands.run(command, {
          timeoutMs: ms,
          ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
          onStdout: (d) => {
            total.stdout += Buffer.byteLength(d);
          },
          onStderr: (d) => {
            total.stderr += Buffer.byteLength(d);
          },
        }),
      );
    } finally {
      sandbox.off('egress', onEgress);
      touch(entry);
    }
    const durationMs = Date.now() - started;
    const stdout = clip(result.stdout, total.stdout, config.maxOutputBytes);
    const stderr = clip(result.stderr, total.stderr, config.maxOutputBytes);
    const egressDenied = denied.map((e) => ({
      destination: e.destination,
      ...(e.rule === undefined ? {} : { rule: e.rule }),
      ...(e.error === undefined ? {} : { error: e.error }),
    }));
    const structured = {
      exitCode: result.exitCode,
      signal: result.signal,
      stdout,
      stderr,
      durationMs,
      timedOut: result.timedOut,
      ...(egressDenied.length === 0 ? {} : { egressDenied }),
    };
    const notes: string[] = [];
    if (capped)
      notes.push(`timeoutSeconds was capped to the server's maximum of ${config.maxCommandTimeoutS}`);
    for (const d of egressDenied) {
      notes.push(
        `network: the sandbox's egress proxy refused ${d.destination}${d.rule ? ` (${d.rule})` : ''}` +
          `${entry.allow.length === 0 ? '; this sandbox has no network (create one with allowDomains)' : `; allowed: ${entry.allow.join(', ')}`}`,
      );
    }
    const header = result.timedOut
      ? `TIMEOUT: the command ran longer than ${ms / 1000} s and was killed. Raise timeoutSeconds (at most ` +
        `${config.maxCommandTimeoutS}), or start it with background: true and write its output to a file.`
      : `exit code: ${result.exitCode ?? 'none'}${result.signal ? ` (killed by ${result.signal})` : ''}, ${durationMs} ms`;
    const text = [
      header,
      ...notes,
      `--- stdout ---\n${stdout}`,
      ...(stderr === '' ? [] : [`--- stderr ---\n${stderr}`]),
    ].join('\n');
    return {
      content: [{ type: 'text', text }],
      structuredContent: structured,
      ...(result.timedOut ? { isError: true } : {}),
    };
  }

  // ------------------------------------------------------------------------------------------ tools

  tool(
    'sandbox_create',
    'Create a new isolated Linux sandbox and return its sandboxId (needed by every other tool). It has a ' +
      'writable workdir, python3, node, bash and the usual tools; no network unless allowDomains is given. ' +
      `At most ${config.maxSandboxes} sandboxes may exist at once: kill ones you no longer need.`,
    {
      preset: z
        .enum(['default', 'strict'])
        .optional()
        .describe(
          `Policy preset: "default" (1 GiB memory, workdir /home/sandbox) or "strict" (256 MiB, 16 processes, ` +
            `workdir /tmp). Default: ${config.defaultPreset}.`,
        ),
      timeoutSeconds: z
        .number()
        .int()
        .positive()
        .optional()
        .describe(
          `Idle timeout: the sandbox is killed after this many seconds without a tool call on it (default ` +
            `${config.defaultSandboxTimeoutS}, at most ${config.maxSandboxTimeoutS}).`,
        ),
      allowDomains: z
        .array(z.string().min(1))
        .optional()
        .describe(
          'Give the sandbox network access through its egress proxy, allowing only these destinations ' +
            '(e.g. "pypi.org", "*.pythonhosted.org", "api.example.com:443"); everything else is refused. ' +
            (ceiling.length === 0
              ? 'This server permits no network: do not set it.'
              : `This server permits: ${config.allow.join(', ')}.`) +
            ' Omit for no network.',
        ),
    },
    async ({ preset, timeoutSeconds, allowDomains }) => {
      if (closed) throw new McpToolError('SERVER_CLOSED', 'the server is shutting down');
      if (owned.size + creating.size >= config.maxSandboxes) {
        throw new McpToolError(
          'LIMIT_REACHED',
          `sandbox limit reached: this server allows ${config.maxSandboxes} sandboxes at once and ` +
            `${owned.size + creating.size} exist (${[...owned.keys()].join(', ')}). ` +
            'Kill one with sandbox_kill (or reuse one) and try again.',
        );
      }
      if (timeoutSeconds !== undefined && timeoutSeconds > config.maxSandboxTimeoutS) {
        throw new McpToolError(
          'INVALID_INPUT',
          `timeoutSeconds ${timeoutSeconds} is over this server's maximum of ${config.maxSandboxTimeoutS}; ` +
            'ask for less (every tool call restarts the idle timeout anyway)',
        );
      }
      const allow = checkAllow(allowDomains ?? [], ceiling, config.allow);
      const chosen: PresetName = preset ?? config.defaultPreset;
      const idleMs = (timeoutSeconds ?? config.defaultSandboxTimeoutS) * 1000;
      const policy: SandboxPolicyInput = {
        // Warm sandboxes need the default seccomp profile (their agent forks and waits); `strict` keeps its
        // smaller filesystem view and limits.
        seccomp: 'default',
        limits: { outputBytes: config.maxOutputBytes },
        ...(allow.length === 0 ? {} : { network: { mode: 'proxy', allow } }),
      };
      const pending = createSandbox({ preset: chosen, policy, timeoutMs: idleMs });
      creating.add(pending);
      let sandbox: Sandbox;
      try {
        sandbox = await pending;
      } finally {
        creating.delete(pending);
      }
      if (closed) {
        await sandbox.kill();
        throw new McpToolError('SERVER_CLOSED', 'the server is shutting down');
      }
      const entry: Owned = {
        sandbox,
        preset: chosen,
        allow,
        idleMs,
        createdAt: new Date().toISOString(),
      };
      owned.set(sandbox.id, entry);
      sandbox.once('stopped', (reason) => {
        if (owned.get(sandbox.id) === entry) owned.delete(sandbox.id);
        log(`sandbox ${sandbox.id} stopped (${reason})`);
      });
      log(
        `sandbox ${sandbox.id} created (preset ${chosen}, network ${allow.length ? allow.join(',') : 'none'})`,
      );
      const structured = {
        sandboxId: sandbox.id,
        preset: chosen,
        workdir: sandbox.policy.filesystem.workdir,
        network: allow.length === 0 ? 'none' : 'proxy',
        allowDomains: allow,
        idleTimeoutSeconds: idleMs / 1000,
      };
      return {
        content: [
          {
            type: 'text',
            text:
              `created sandbox ${sandbox.id} (preset ${chosen}, workdir ${structured.workdir}, ` +
              `network: ${allow.length === 0 ? 'none' : `only ${allow.join(', ')}`}, idle timeout ` +
              `${idleMs / 1000} s)`,
          },
        ],
        structuredContent: structured,
      };
    },
  );

  tool(
    'sandbox_run_command',
    'Run a command in a sandbox and return its exit code, stdout and stderr (each cut at ' +
      `${config.maxOutputBytes} bytes). Give either "command" (a shell string run with sh -c: pipes, ` +
      'redirects and && work) or "argv" (program and arguments, no shell). With background: true it returns ' +
      'at once with the pid; redirect its output to a file and read it later with sandbox_read_file.',
    {
      sandboxId: sandboxIdField,
      command: z.string().min(1).optional().describe('Shell command line, run with sh -c.'),
      argv: z
        .array(z.string())
        .min(1)
        .optional()
        .describe('Program and arguments, run without a shell (instead of command).'),
      cwd: z.string().optional().describe("Working directory (default: the sandbox's workdir)."),
      timeoutSeconds: timeoutField,
      background: z
        .boolean()
        .optional()
        .describe(
          'Start it and return its pid without waiting (it lives until it exits or the sandbox dies).',
        ),
    },
    async ({ sandboxId, command, argv, cwd, timeoutSeconds, background }) => {
      if ((command === undefined) === (argv === undefined)) {
        throw new McpToolError(
          'INVALID_INPUT',
          'give exactly one of "command" (a shell string) or "argv" (an array of program and arguments)',
        );
      }
      const entry = lookup(sandboxId);
      const what: string | string[] = command ?? (argv as string[]);
      if (!background) {
        return runForeground(entry, what, {
          ...(cwd === undefined ? {} : { cwd }),
          ...(timeoutSeconds === undefined ? {} : { timeoutSeconds }),
        });
      }
      touch(entry);
      const handle = await measureExec(() =>
        entry.sandbox.commands.run(what, {
          background: true,
          ...(cwd === undefined ? {} : { cwd }),
          ...(timeoutSeconds === undefined ? {} : { timeoutMs: commandTimeoutMs(timeoutSeconds).ms }),
        }),
      );
      return {
        content: [{ type: 'text', text: `started in the background, pid ${handle.pid}` }],
        structuredContent: { pid: handle.pid, background: true },
      };
    },
  );

  tool(
    'sandbox_run_code',
    'Run a snippet of code in a sandbox: it is written to a temporary file and run with python3, node or ' +
      'bash. Returns exit code, stdout and stderr like sandbox_run_command. Print what you want to see.',
    {
      sandboxId: sandboxIdField,
      language: z.enum(['python', 'node', 'bash']).describe('Interpreter: python (python3), node or bash.'),
      code: z.string().min(1).describe('The program text.'),
      timeoutSeconds: timeoutField,
    },
    async ({ sandboxId, language, code, timeoutSeconds }) => {
      const entry = lookup(sandboxId);
      const spec = LANGUAGES[language];
      // /tmp exists in every preset; the random name keeps concurrent runs apart.
      const file = `/tmp/ironcage-code-${randomBytes(6).toString('hex')}.${spec.ext}`;
      touch(entry);
      await entry.sandbox.files.write(file, code);
      try {
        return await runForeground(entry, spec.argv(file), {
          ...(timeoutSeconds === undefined ? {} : { timeoutSeconds }),
        });
      } finally {
        await entry.sandbox.files.remove(file).catch(() => {});
      }
    },
  );

  tool(
    'sandbox_read_file',
    `Read a file from a sandbox (at most ${config.maxReadBytes} bytes). Text comes back as is; a binary ` +
      'file comes back base64-encoded. Relative paths are relative to the workdir.',
    {
      sandboxId: sandboxIdField,
      path: z.string().min(1).describe('File path inside the sandbox.'),
    },
    async ({ sandboxId, path }) => {
      const entry = lookup(sandboxId);
      touch(entry);
      const files = entry.sandbox.files;
      const stat = await files.stat(path);
      if (stat.type === 'dir') {
        throw new McpToolError(
          'INVALID_INPUT',
          `${stat.path} is a directory; list it with sandbox_list_files`,
        );
      }
      if (stat.size > config.maxReadBytes) {
        throw new McpToolError(
          'FILE_TOO_LARGE',
          `${stat.path} is ${stat.size} bytes, over the ${config.maxReadBytes}-byte read limit; read a part ` +
            'with sandbox_run_command (e.g. head -c 100000, tail -n 200, sed -n 1,200p, grep)',
        );
      }
      const data = await files.read(path, { format: 'bytes' });
      // stat is lstat (a symlink's own size) and the file may have grown since: check what really came back.
      if (data.length > config.maxReadBytes) {
        throw new McpToolError(
          'FILE_TOO_LARGE',
          `${stat.path} is ${data.length} bytes, over the ${config.maxReadBytes}-byte read limit; read a part ` +
            'with sandbox_run_command (e.g. head -c 100000, tail -n 200, sed -n 1,200p, grep)',
        );
      }
      const text = asText(data);
      const structured = {
        path: stat.path,
        size: data.length,
        encoding: text === null ? 'base64' : 'utf8',
        content: text ?? data.toString('base64'),
      };
      return {
        content: [
          {
            type: 'text',
            text:
              text ??
              `${stat.path} is binary (${data.length} bytes, not UTF-8 text); base64:\n${structured.content}`,
          },
        ],
        structuredContent: structured,
      };
    },
  );

  tool(
    'sandbox_write_file',
    'Write a file in a sandbox (replacing it; missing parent directories are created). Relative paths are ' +
      'relative to the workdir.',
    {
      sandboxId: sandboxIdField,
      path: z.string().min(1).describe('File path inside the sandbox.'),
      content: z.string().describe('The file content.'),
      encoding: z
        .enum(['utf8', 'base64'])
        .optional()
        .describe('How content is encoded: utf8 text (default) or base64 for binary data.'),
    },
    async ({ sandboxId, path, content, encoding }) => {
      const entry = lookup(sandboxId);
      touch(entry);
      const data = encoding === 'base64' ? Buffer.from(content, 'base64') : Buffer.from(content, 'utf8');
      await entry.sandbox.files.write(path, data);
      const full = posix.resolve(entry.sandbox.policy.filesystem.workdir, path);
      return {
        content: [{ type: 'text', text: `wrote ${data.length} bytes to ${full}` }],
        structuredContent: { path: full, bytes: data.length },
      };
    },
  );

  tool(
    'sandbox_list_files',
    'List a directory in a sandbox (default: the workdir), optionally recursively up to a depth.',
    {
      sandboxId: sandboxIdField,
      path: z.string().min(1).optional().describe('Directory inside the sandbox (default: the workdir).'),
      depth: z
        .number()
        .int()
        .min(1)
        .max(10)
        .optional()
        .describe('1 (default): the directory itself; 2: also its subdirectories; ...'),
    },
    async ({ sandboxId, path, depth }) => {
      const entry = lookup(sandboxId);
      touch(entry);
      const dir = posix.resolve(entry.sandbox.policy.filesystem.workdir, path ?? '.');
      const all = await entry.sandbox.files.list(dir, { depth: depth ?? 1 });
      const kept = all.slice(0, config.maxListEntries);
      const entries = kept.map((e) => ({ path: e.path, type: e.type, size: e.size }));
      const lines = entries.map(
        (e) => `${e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : '-'} ${e.size}\t${e.path}`,
      );
      if (all.length > kept.length)
        lines.push(`... ${all.length - kept.length} more entries not shown; list a subdirectory`);
      return {
        content: [{ type: 'text', text: lines.length === 0 ? `${dir} is empty` : lines.join('\n') }],
        structuredContent: { path: dir, entries, truncated: all.length > kept.length },
      };
    },
  );

  tool(
    'sandbox_kill',
    'Kill a sandbox: every process in it stops and its files are deleted. Frees a slot for sandbox_create.',
    { sandboxId: sandboxIdField },
    async ({ sandboxId }) => {
      const entry = lookup(sandboxId);
      await entry.sandbox.kill();
      owned.delete(sandboxId);
      return {
        content: [{ type: 'text', text: `killed sandbox ${sandboxId}` }],
        structuredContent: { sandboxId, killed: true },
      };
    },
  );

  tool('sandbox_list', 'List the live sandboxes of this session.', {}, async () => {
    const sandboxes = [...owned.values()]
      .filter((e) => e.sandbox.state !== 'stopped')
      .map((e) => ({
        sandboxId: e.sandbox.id,
        preset: e.preset,
        state: e.sandbox.state,
        network: e.allow.length === 0 ? 'none' : 'proxy',
        allowDomains: e.allow,
        createdAt: e.createdAt,
        expiresAt: e.sandbox.deadline === null ? null : new Date(e.sandbox.deadline).toISOString(),
      }));
    const text =
      sandboxes.length === 0
        ? `no sandboxes (limit ${config.maxSandboxes})`
        : [
            `${sandboxes.length} of at most ${config.maxSandboxes} sandboxes:`,
            ...sandboxes.map(
              (s) =>
                `${s.sandboxId} preset=${s.preset} state=${s.state} network=${s.allowDomains.join(',') || 'none'} ` +
                `expires=${s.expiresAt ?? 'never'}`,
            ),
          ].join('\n');
    return {
      content: [{ type: 'text', text }],
      structuredContent: { sandboxes, maxSandboxes: config.maxSandboxes },
    };
  });

  return {
    server,
    sandboxIds: () => [...owned.keys()],
    close: async () => {
      closed = true;
      await Promise.allSettled([...creating]);
      const all = [...owned.values()];
      owned.clear();
      await Promise.all(all.map((e) => e.sandbox.kill().catch(() => {})));
    },
  };
}

/** Validates a client's allow rules against the operator's ceiling; returns them in canonical form. */
function checkAllow(
  requested: readonly string[],
  ceiling: readonly EgressRule[],
  ceilingText: readonly string[],
): string[] {
  if (requested.length === 0) return [];
  if (ceiling.length === 0) {
    throw new McpToolError(
      'POLICY_REFUSED',
      'refused: this server gives sandboxes no network (it was started without --allow). Create the sandbox ' +
        'without allowDomains, or ask the operator to start `ironcage mcp` with --allow RULE.',
    );
  }
  const out: string[] = [];
  for (const text of requested) {
    let rule: EgressRule;
    try {
      rule = parseRule(text);
    } catch (err) {
      throw new McpToolError('INVALID_INPUT', `allowDomains: ${(err as Error).message}`);
    }
    if (!ceiling.some((c) => ruleCovers(c, rule))) {
      throw new McpToolError(
        'POLICY_REFUSED',
        `refused: ${rule.text} is not within what this server permits (${ceilingText.join(', ')}); ` +
          'ask only for destinations covered by those rules',
      );
    }
    if (!out.includes(rule.text)) out.push(rule.text);
  }
  return out;
}

/** True when every destination `inner` allows is also allowed by `outer`. */
export function ruleCovers(outer: EgressRule, inner: EgressRule): boolean {
  if (outer.port !== undefined && outer.port !== inner.port) return false;
  if (outer.kind === 'domain' && inner.kind === 'domain') {
    if (!outer.wildcard) return !inner.wildcard && inner.name === outer.name;
    // `*.x` covers any strict subdomain of x, and `*.x` itself; never `x`.
    return inner.name.endsWith(`.${outer.name}`) || (inner.wildcard && inner.name === outer.name);
  }
  if (outer.kind === 'cidr' && inner.kind === 'cidr') {
    if (outer.version !== inner.version || inner.prefix < outer.prefix) return false;
    const net = new BlockList();
    const type = outer.version === 4 ? 'ipv4' : 'ipv6';
    net.addSubnet(outer.address, outer.prefix, type);
    return net.check(inner.address, type);
  }
  return false;
}

/** UTF-8 text without NUL bytes, else null (binary). */
function asText(data: Buffer): string | null {
  if (data.includes(0)) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch {
    return null;
  }
}

/** `kept` is the prefix the sandbox kept; `totalBytes` how much the stream really produced. */
function clip(kept: string, totalBytes: number, max: number): string {
  let text = kept;
  if (Buffer.byteLength(text) > max) text = Buffer.from(text).subarray(0, max).toString('utf8');
  const shown = Buffer.byteLength(text);
  if (shown >= totalBytes) return text;
  return (
    `${text}\n[ironcage: output truncated, ${totalBytes - shown} of ${totalBytes} bytes not shown; ` +
    'redirect it to a file and read parts of it]'
  );
}

/** One sentence for the client: what failed, and what to do about it. */
function describeError(err: unknown): string {
  if (err instanceof McpToolError) return err.message;
  if (err instanceof SandboxStateError || err instanceof WorkspaceQuotaError) return err.message;
  if (err instanceof SandboxStartError) return `the sandbox could not be started: ${err.message}`;
  if (err instanceof SandboxManagerError) return err.message;
  if (err instanceof AgentError) {
    const hint: Record<string, string> = {
      ENOENT:
        'no such file or directory in the sandbox (paths outside its view, like host secrets, do not exist there)',
      EACCES: 'permission denied inside the sandbox',
      EPERM: 'operation not permitted inside the sandbox',
      EISDIR: 'is a directory',
      ENOTDIR: 'a path component is not a directory',
      EROFS: 'read-only file system: write below the workdir or /tmp',
      ENOSPC: 'no space left: the sandbox filesystem is full',
    };
    const why = err.errno !== undefined ? hint[err.errno] : undefined;
    return why === undefined ? `refused by the sandbox: ${err.message}` : `${why} (${err.message})`;
  }
  if (err instanceof Error) return `error: ${err.message}`;
  return `error: ${String(err)}`;
}
