/**
 * `ironcage serve`'s flags for the /mcp endpoint: their parseArgs definitions, their usage text, and the
 * validation that turns them into buildApp's `mcp` option. Kept apart from serve.ts so the checks are pure and
 * testable without starting a server.
 */

import { parseRule } from '../egress/rules.js';
import { DEFAULT_MCP_LIMITS, type McpLimits } from '../mcp/server.js';
import { type PresetName, presetNames } from '../policy/presets.js';
import { MCP_HTTP_DEFAULTS, type McpHttpOptions } from './mcp-http.js';

/** A serve flag with an invalid value (exit status 2); the message names the flag and what it takes. */
export class ServeUsageError extends Error {
  readonly code = 'SERVE_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'ServeUsageError';
  }
}

const DEFAULT_MAX_SESSIONS = MCP_HTTP_DEFAULTS.maxSessions;
const DEFAULT_MAX_SESSIONS_PER_KEY = MCP_HTTP_DEFAULTS.maxSessionsPerKey;
const DEFAULT_SESSION_IDLE_S = MCP_HTTP_DEFAULTS.sessionIdleMs / 1000;

/** parseArgs definitions, to spread into serve's own. */
export const MCP_SERVE_OPTIONS = {
  'no-mcp': { type: 'boolean' },
  'mcp-max-sessions': { type: 'string' },
  'mcp-max-sessions-per-key': { type: 'string' },
  'mcp-session-idle': { type: 'string' },
  'mcp-max-sandboxes': { type: 'string' },
  'mcp-sandbox-timeout': { type: 'string' },
  'mcp-max-sandbox-timeout': { type: 'string' },
  'mcp-command-timeout': { type: 'string' },
  'mcp-max-command-timeout': { type: 'string' },
  'mcp-preset': { type: 'string' },
  'mcp-allow': { type: 'string', multiple: true },
} as const;

export const MCP_SERVE_USAGE = `
MCP over HTTP (/mcp, same API keys):
  --no-mcp                        serve no /mcp endpoint
  --mcp-max-sessions N            open sessions across all keys (default ${DEFAULT_MAX_SESSIONS})
  --mcp-max-sessions-per-key N    open sessions of one API key (default ${DEFAULT_MAX_SESSIONS_PER_KEY})
  --mcp-session-idle S            close a session idle this many seconds, killing its sandboxes
                                  (default ${DEFAULT_SESSION_IDLE_S})
  --mcp-max-sandboxes N           sandboxes one session may hold at once (default ${DEFAULT_MCP_LIMITS.maxSandboxes}; the
                                  key's own quota applies too)
  --mcp-sandbox-timeout S         idle timeout of a sandbox when the client names none
                                  (default ${DEFAULT_MCP_LIMITS.defaultSandboxTimeoutS})
  --mcp-max-sandbox-timeout S     largest sandbox timeout a client may ask (default ${DEFAULT_MCP_LIMITS.maxSandboxTimeoutS})
  --mcp-command-timeout S         command timeout when the client names none (default ${DEFAULT_MCP_LIMITS.defaultCommandTimeoutS})
  --mcp-max-command-timeout S     cap of a command's timeout (default ${DEFAULT_MCP_LIMITS.maxCommandTimeoutS})
  --mcp-preset P                  preset of sandbox_create when the client names none: ${presetNames.join(' | ')}
  --mcp-allow RULE                let clients ask for network access within RULE (repeatable: example.com,
                                  *.example.com, example.com:443); without it MCP sandboxes have no network
`;

/** The parsed values of MCP_SERVE_OPTIONS. */
export type McpFlagValues = {
  [K in keyof typeof MCP_SERVE_OPTIONS]?: K extends 'no-mcp'
    ? boolean
    : K extends 'mcp-allow'
      ? string[]
      : string;
};

/** A whole number within [min, max]; the message names the flag. */
function integerFlag(
  values: McpFlagValues,
  flag: keyof McpFlagValues,
  min: number,
  max: number,
): number | undefined {
  const text = values[flag];
  if (text === undefined) return undefined;
  if (typeof text !== 'string' || !/^\d{1,9}$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new ServeUsageError(
      `--${flag} takes a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

const DAY_S = 24 * 60 * 60;

/**
 * The `mcp` option of buildApp from serve's flags: false for --no-mcp, else the limits the flags set (the rest
 * keep their defaults). Throws ServeUsageError for a value out of range, an egress rule that does not parse, a
 * default above its maximum, or --no-mcp combined with another --mcp-* flag.
 */
export function mcpOptionsFromFlags(values: McpFlagValues): McpHttpOptions | false {
  const given = (Object.keys(MCP_SERVE_OPTIONS) as (keyof McpFlagValues)[]).filter(
    (flag) => flag !== 'no-mcp' && values[flag] !== undefined,
  );
  if (values['no-mcp'] === true) {
    if (given.length > 0) {
      throw new ServeUsageError(
        `--no-mcp disables /mcp, so --${given[0]} has nothing to configure; drop one of them`,
      );
    }
    return false;
  }
  const maxSessions = integerFlag(values, 'mcp-max-sessions', 1, 100_000);
  const maxSessionsPerKey = integerFlag(values, 'mcp-max-sessions-per-key', 1, 100_000);
  const idleS = integerFlag(values, 'mcp-session-idle', 1, 7 * DAY_S);
  const limits: Partial<McpLimits> = {};
  const maxSandboxes = integerFlag(values, 'mcp-max-sandboxes', 1, 10_000);
  if (maxSandboxes !== undefined) limits.maxSandboxes = maxSandboxes;
  const sandboxTimeout = integerFlag(values, 'mcp-sandbox-timeout', 1, 30 * DAY_S);
  if (sandboxTimeout !== undefined) limits.defaultSandboxTimeoutS = sandboxTimeout;
  const maxSandboxTimeout = integerFlag(values, 'mcp-max-sandbox-timeout', 1, 30 * DAY_S);
  if (maxSandboxTimeout !== undefined) limits.maxSandboxTimeoutS = maxSandboxTimeout;
  const commandTimeout = integerFlag(values, 'mcp-command-timeout', 1, DAY_S);
  if (commandTimeout !== undefined) limits.defaultCommandTimeoutS = commandTimeout;
  const maxCommandTimeout = integerFlag(values, 'mcp-max-command-timeout', 1, DAY_S);
  if (maxCommandTimeout !== undefined) limits.maxCommandTimeoutS = maxCommandTimeout;

  const preset = values['mcp-preset'];
  if (preset !== undefined) {
    if (!presetNames.includes(preset as PresetName)) {
      throw new ServeUsageError(
        `--mcp-preset takes one of ${presetNames.join(', ')}, got ${JSON.stringify(preset)}`,
      );
    }
    limits.defaultPreset = preset as PresetName;
  }
  const allow = values['mcp-allow'];
  if (allow !== undefined) {
    for (const rule of allow) {
      try {
        parseRule(rule);
      } catch (err) {
        throw new ServeUsageError(`--mcp-allow ${JSON.stringify(rule)}: ${(err as Error).message}`);
      }
    }
    limits.allow = allow;
  }

  const merged = { ...DEFAULT_MCP_LIMITS, ...limits };
  if (merged.defaultSandboxTimeoutS > merged.maxSandboxTimeoutS) {
    throw new ServeUsageError(
      `the MCP sandbox timeout (${merged.defaultSandboxTimeoutS} s) is above its maximum ` +
        `(${merged.maxSandboxTimeoutS} s); lower --mcp-sandbox-timeout or raise --mcp-max-sandbox-timeout`,
    );
  }
  if (merged.defaultCommandTimeoutS > merged.maxCommandTimeoutS) {
    throw new ServeUsageError(
      `the MCP command timeout (${merged.defaultCommandTimeoutS} s) is above its maximum ` +
        `(${merged.maxCommandTimeoutS} s); lower --mcp-command-timeout or raise --mcp-max-command-timeout`,
    );
  }
  const options: McpHttpOptions = {};
  if (Object.keys(limits).length > 0) options.limits = limits;
  if (maxSessions !== undefined) options.maxSessions = maxSessions;
  if (maxSessionsPerKey !== undefined) options.maxSessionsPerKey = maxSessionsPerKey;
  if (idleS !== undefined) options.sessionIdleMs = idleS * 1000;
  // Only when both are given: a small --mcp-max-sessions simply caps the default per-key bound.
  if (maxSessions !== undefined && maxSessionsPerKey !== undefined && maxSessionsPerKey > maxSessions) {
    throw new ServeUsageError(
      `--mcp-max-sessions-per-key (${maxSessionsPerKey}) is above --mcp-max-sessions (${maxSessions}); ` +
        'one key could never open that many',
    );
  }
  return options;
}
