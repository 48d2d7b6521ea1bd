/**
 * Prometheus metrics of one app, on a prom-client Registry of its own (never the library's global one: tests
 * build several apps in one process, and two apps must not count into each other). GET /metrics renders it.
 *
 * Label values are bounded sets only: route patterns (`/v1/sandboxes/:id`, never the URL), status classes,
 * outcomes, reasons. No sandbox id, key id or host name is ever a label, so the series count stays fixed.
 * Durations are in seconds (the Prometheus convention) with buckets from 1 ms up, since most calls take
 * milliseconds.
 */
import type { FastifyInstance } from 'fastify';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { CgroupStats } from '../isolation/cgroups.js';
import type { CommandResult, ProcessHandle } from '../sandbox/commands.js';
import type { SandboxManager } from '../sandbox/manager.js';
import type { EgressLogRecord } from '../sandbox/network.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { toApiError } from './errors.js';

/** Which API started a command. */
export type ExecApi = 'rest' | 'e2b' | 'mcp';
/** How a command ended: exit 0, another exit code, a signal, its timeout, or it failed to start or follow. */
export type ExecOutcome = 'ok' | 'nonzero' | 'signal' | 'timeout' | 'error';

const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];
// A cold create is tens of milliseconds (bwrap, agent handshake, egress proxy); slow disks push it to seconds.
const CREATE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
// Commands range from `true` (a few ms) to long builds.
const EXEC_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/** The outcome label of a finished command. */
export function execOutcome(result: Pick<CommandResult, 'exitCode' | 'signal' | 'timedOut'>): ExecOutcome {
  if (result.timedOut) return 'timeout';
  if (result.exitCode === 0) return 'ok';
  if (result.exitCode !== null) return 'nonzero';
  return result.signal !== null ? 'signal' : 'error';
}

/**
 * The reason label of an egress refusal: the family of the deciding rule. Operator-written rule texts (a deny
 * rule names a host) are folded into `rule`, so no host name becomes a label value.
 */
export function denialReason(rule: string | undefined): string {
  if (rule === undefined) return 'unknown';
  const family = rule.split(':', 1)[0] ?? '';
  switch (family) {
    case 'limit':
    case 'vault':
    case 'tls':
    case 'ask':
      return family;
    case 'class':
      return 'address-class';
    default:
      break;
  }
  if (rule === 'default-deny' || rule === 'request-default-deny') return 'default-deny';
  if (rule.startsWith('invalid-')) return 'invalid';
  return 'rule';
}

function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

function seconds(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e9;
}

export class ServerMetrics {
  readonly registry = new Registry();

  readonly #httpDuration = new Histogram({
    name: 'ironcage_http_request_duration_seconds',
    help: 'HTTP request duration until the response ended (streams included), by route pattern and status class.',
    labelNames: ['method', 'route', 'status_class'] as const,
    buckets: HTTP_BUCKETS,
    registers: [this.registry],
  });
  readonly #httpRequests = new Counter({
    name: 'ironcage_http_requests_total',
    help: 'HTTP requests by route pattern and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly #createDuration = new Histogram({
    name: 'ironcage_sandbox_create_duration_seconds',
    help: 'Time to create a sandbox through the API (reservation, start, ready), by outcome.',
    labelNames: ['outcome'] as const,
    buckets: CREATE_BUCKETS,
    registers: [this.registry],
  });
  readonly #stopped = new Counter({
    name: 'ironcage_sandboxes_stopped_total',
    help: 'Sandboxes this server tracked that stopped, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly #execs = new Counter({
    name: 'ironcage_execs_total',
    help: 'Commands started through the API.',
    registers: [this.registry],
  });
  readonly #execDuration = new Histogram({
    name: 'ironcage_exec_duration_seconds',
    help: 'Command duration from the start request to its end, by API and outcome (ok, nonzero, signal, timeout, error).',
    labelNames: ['api', 'outcome'] as const,
    buckets: EXEC_BUCKETS,
    registers: [this.registry],
  });
  readonly #execCpu = new Counter({
    name: 'ironcage_exec_cpu_seconds_total',
    help: 'User + system CPU time of finished commands, as the sandbox agent measured them.',
    labelNames: ['api'] as const,
    registers: [this.registry],
  });
  readonly #egressDenials = new Counter({
    name: 'ironcage_egress_denials_total',
    help: 'Outbound connections and requests the egress proxies refused, by the family of the deciding rule.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly #authFailures = new Counter({
    name: 'ironcage_auth_failures_total',
    help: 'Requests refused for their API key: unauthenticated (missing, unknown, revoked) or forbidden (scope).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly #rateLimited = new Counter({
    name: 'ironcage_rate_limited_total',
    help: "Requests refused because their key's requests-per-minute bucket was empty.",
    registers: [this.registry],
  });
  readonly #quotaRefusals = new Counter({
    name: 'ironcage_quota_refusals_total',
    help: 'Sandbox creations refused because the key owns its maxSandboxes already.',
    registers: [this.registry],
  });

  constructor(manager: Pick<SandboxManager, 'list'>) {
    new Gauge({
      name: 'ironcage_sandboxes',
      help: 'Sandboxes this server manages, by state.',
      labelNames: ['state'] as const,
      registers: [this.registry],
      // Read at scrape time: the manager's list is the truth, nothing to keep in step.
      collect() {
        const count = { running: 0, paused: 0 };
        for (const s of manager.list()) if (s.state === 'running' || s.state === 'paused') count[s.state]++;
        this.set({ state: 'running' }, count.running);
        this.set({ state: 'paused' }, count.paused);
      },
    });
    // What the sandboxes use, summed at scrape time from their cgroups (per-sandbox series would put ids in
    // labels). Sandboxes without a cgroup (rlimits only, e.g. unprivileged hosts) add nothing.
    const total = (read: (usage: CgroupStats) => number | null) => {
      let sum = 0;
      for (const sandbox of manager.list()) {
        const usage = sandbox.resourceUsage();
        sum += usage === null ? 0 : (read(usage) ?? 0);
      }
      return sum;
    };
    new Gauge({
      name: 'ironcage_sandbox_memory_bytes',
      help: 'Memory the live sandboxes use now, summed over their cgroups.',
      registers: [this.registry],
      collect() {
        this.set(total((u) => u.memoryBytes));
      },
    });
    new Gauge({
      name: 'ironcage_sandbox_cpu_seconds',
      help: 'CPU time the live sandboxes have used since they started, summed over their cgroups.',
      registers: [this.registry],
      collect() {
        this.set(total((u) => (u.cpuMs === null ? null : u.cpuMs / 1000)));
      },
    });
    // Process CPU, memory, event-loop lag, GC, handles: the server's own resource use.
    collectDefaultMetrics({ register: this.registry });
    // Zero series from the start, so a rate() over them works before the first event.
    for (const reason of ['unauthenticated', 'forbidden']) this.#authFailures.inc({ reason }, 0);
    this.#rateLimited.inc(0);
    this.#quotaRefusals.inc(0);
  }

  /** Prometheus text exposition of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * Request duration and counts (onResponse, by route pattern) and refusals by auth, rate limit and quota
   * (onError, which Fastify runs for errors of hooks and handlers in every scope registered after this call).
   */
  instrument(app: FastifyInstance): void {
    app.addHook('onResponse', async (request, reply) => {
      const route = request.is404 ? 'unmatched' : (request.routeOptions.url ?? 'unmatched');
      const status = reply.statusCode;
      this.#httpRequests.inc({ method: request.method, route, status: String(status) });
      this.#httpDuration.observe(
        { method: request.method, route, status_class: statusClass(status) },
        reply.elapsedTime / 1000,
      );
    });
    app.addHook('onError', async (_request, _reply, error) => this.#refused(error));
  }

  #refused(error: unknown): void {
    const api = toApiError(error);
    if (api.status === 401) this.#authFailures.inc({ reason: 'unauthenticated' });
    else if (api.code === 'FORBIDDEN') this.#authFailures.inc({ reason: 'forbidden' });
    else if (api.code === 'RATE_LIMITED') this.#rateLimited.inc();
    else if (api.code === 'QUOTA_EXCEEDED') this.#quotaRefusals.inc();
  }

  /** Times a sandbox creation (its errors pass through, counted as outcome `error`). */
  async timeCreate<T>(create: () => Promise<T>): Promise<T> {
    const start = process.hrtime.bigint();
    try {
      const created = await create();
      this.#createDuration.observe({ outcome: 'ok' }, seconds(start));
      return created;
    } catch (err) {
      this.#createDuration.observe({ outcome: 'error' }, seconds(start));
      throw err;
    }
  }

  /**
   * Counts and times a command: `start` starts it (a background handle is followed until the process ends, a
   * foreground result is observed at once). A start that throws is outcome `error`; the error passes through.
   */
  async timeExec<T extends ProcessHandle | CommandResult>(api: ExecApi, start: () => Promise<T>): Promise<T> {
    const begin = process.hrtime.bigint();
    let started: T;
    try {
      started = await start();
    } catch (err) {
      this.#execDuration.observe({ api, outcome: 'error' }, seconds(begin));
      throw err;
    }
    this.#execs.inc();
    const finish = (result: CommandResult) => {
      this.#execDuration.observe({ api, outcome: execOutcome(result) }, seconds(begin));
      if (result.cpuMs !== null) this.#execCpu.inc({ api }, result.cpuMs / 1000);
    };
    if ('wait' in started && typeof started.wait === 'function') {
      (started as ProcessHandle)
        .wait()
        .then(finish, () => this.#execDuration.observe({ api, outcome: 'error' }, seconds(begin)));
    } else {
      finish(started as CommandResult);
    }
    return started;
  }

  /** Follows a sandbox this server hands out: its egress refusals and how it stops. */
  observeSandbox(sandbox: Sandbox): void {
    const onEgress = (record: EgressLogRecord) => {
      if (record.decision === 'deny') this.#egressDenials.inc({ reason: denialReason(record.rule) });
    };
    sandbox.on('egress', onEgress);
    sandbox.once('stopped', (reason) => {
      sandbox.off('egress', onEgress);
      this.#stopped.inc({ reason });
    });
  }
}
