/** `ironcage run`: one command in a fresh sandbox, stdio and exit code passed through. */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { EgressEvent } from '../egress/forward.js';
import { LocalEngine } from '../isolation/local-engine.js';
import { parsePolicyLayer, resolvePolicy } from '../policy/merge.js';
import { type PresetName, presetNames } from '../policy/presets.js';
import type { SandboxPolicyInput } from '../policy/schema.js';
import type { RunResult } from '../sandbox/engine.js';
import { exitCodeFor } from './exit-codes.js';

const HELP = `usage: ironcage run [options] -- CMD [ARGS...]

Runs CMD in a fresh kernel-isolated sandbox and passes its stdio and exit code through.

options:
  --preset NAME     strict | default (default: default)
  --policy FILE     JSON policy layered on the preset (repeatable, applied in order)
  --ro PATH         bind a host path read-only at the same path (repeatable)
  --rw PATH         bind a host path read-write at the same path (repeatable)
  --workdir PATH    working directory inside the sandbox
  --env NAME        pass the host variable NAME into the sandbox (repeatable)
  --setenv K=V      set a variable inside the sandbox (repeatable)
  --timeout S       wall-clock limit in seconds
  --memory MB       memory limit in MiB
  --pids N          process/thread limit
  --allow RULE      network through the sandbox's egress proxy, allowing RULE: example.com, *.example.com,
                    example.com:443, 10.0.0.0/8 (repeatable; everything else is refused, with the reason)
  --deny RULE       refuse RULE even if an --allow covers it (repeatable)
  --allow-private A let the proxy reach a private/loopback address or CIDR A (repeatable)
  --secret NAME     give the sandbox a placeholder for vault secret NAME (repeatable; needs --allow)
  --json            print the typed result (with stdout/stderr, and the egress audit events) as JSON

exit codes: the command's own; 128+N when it died of signal N; 124 timeout; 125 refused or setup failed.
`;

function flagLayer(values: Record<string, string | boolean | string[] | undefined>): SandboxPolicyInput {
  const num = (name: string, scale: number): number | undefined => {
    const raw = values[name];
    if (typeof raw !== 'string') return undefined;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} takes a positive number, got '${raw}'`);
    return Math.ceil(n * scale);
  };
  const list = (name: string) => (values[name] as string[] | undefined) ?? [];
  const set: Record<string, string> = {};
  for (const kv of list('setenv')) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`--setenv takes NAME=VALUE, got '${kv}'`);
    set[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const limits = { wallTimeMs: num('timeout', 1000), memoryMb: num('memory', 1), processes: num('pids', 1) };
  const workdir = values.workdir as string | undefined;
  const egress = {
    allow: list('allow'),
    deny: list('deny'),
    allowPrivate: list('allow-private'),
    secrets: list('secret'),
  };
  const proxied = Object.values(egress).some((l) => l.length > 0);
  return {
    filesystem: { readOnly: list('ro'), writable: list('rw'), ...(workdir ? { workdir } : {}) },
    limits: Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)),
    env: { pass: list('env'), set },
    ...(proxied ? { network: { mode: 'proxy' as const, ...egress } } : {}),
  };
}

export async function runCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      preset: { type: 'string', default: 'default' },
      policy: { type: 'string', multiple: true },
      ro: { type: 'string', multiple: true },
      rw: { type: 'string', multiple: true },
      workdir: { type: 'string' },
      env: { type: 'string', multiple: true },
      setenv: { type: 'string', multiple: true },
      timeout: { type: 'string' },
      memory: { type: 'string' },
      pids: { type: 'string' },
      allow: { type: 'string', multiple: true },
      deny: { type: 'string', multiple: true },
      'allow-private': { type: 'string', multiple: true },
      secret: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length === 0) {
    process.stderr.write(`ironcage run: no command given\n${HELP}`);
    return 2;
  }
  const preset = values.preset as string;
  if (!(presetNames as string[]).includes(preset)) {
    process.stderr.write(`ironcage run: unknown preset '${preset}' (choose ${presetNames.join(' or ')})\n`);
    return 2;
  }
  const fileLayers = (values.policy ?? []).map((file) => parsePolicyLayer(readFileSync(file, 'utf8'), file));
  const policy = resolvePolicy(preset as PresetName, ...fileLayers, flagLayer(values));

  const engine = new LocalEngine();
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const captured = { stdout: [] as Buffer[], stderr: [] as Buffer[], egress: [] as EgressEvent[] };
  let result: RunResult;
  try {
    result = await engine.run({
      policy,
      argv: positionals,
      stdin: values.json ? 'ignore' : 'inherit',
      signal: controller.signal,
      onStdout: (c) => (values.json ? captured.stdout.push(c) : process.stdout.write(c)),
      onStderr: (c) => (values.json ? captured.stderr.push(c) : process.stderr.write(c)),
      onEgress: (e) => captured.egress.push(e),
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  if (values.json) {
    const stdout = Buffer.concat(captured.stdout).toString('utf8');
    const stderr = Buffer.concat(captured.stderr).toString('utf8');
    const egress = policy.network.mode === 'proxy' ? { egress: captured.egress } : {};
    process.stdout.write(`${JSON.stringify({ ...result, stdout, stderr, ...egress }, null, 2)}\n`);
  } else if (result.outcome !== 'exit' && result.message) {
    process.stderr.write(`ironcage: ${result.outcome}: ${result.message}\n`);
  }
  return exitCodeFor(result);
}
