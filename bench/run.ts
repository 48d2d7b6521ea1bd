/**
 * Isolation-core benchmark: prints comparison tables with baselines measured in the same run.
 *   node dist/bench/run.js [--runs N]
 * 1. one-shot /usr/bin/true: bare spawn, bare bwrap with the same namespaces/mounts/seccomp, the library, the CLI
 * 2. syscall micro-benchmark inside the default sandbox vs on the host (seccomp + namespace overhead)
 * 3. host memory per running sandbox
 * Medians and p90 over many runs, alternating the variants so machine noise hits them alike.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { realHostView } from '../src/isolation/host-view.js';
import { LocalEngine } from '../src/isolation/local-engine.js';
import { planBwrapArgs, planEtcFiles } from '../src/isolation/mounts.js';
import { compileSeccomp } from '../src/isolation/seccomp/index.js';
import { resolvePolicy } from '../src/policy/merge.js';
import { descendants, memAvailableKb, pssKb, quantile, table } from './lib.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 60;
/** A clean environment for child Node processes: NODE_EXTRA_CA_CERTS alone adds ~50 ms to Node's start here. */
const CLEAN_ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

/** As root the engine runs bwrap as host uid 65534; the bare-bwrap baseline does exactly the same. */
const SANDBOX_ID = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};

function timeSpawn(
  cmd: string,
  args: string[],
  options: {
    stdio?: unknown[];
    feed?: (c: ChildProcess) => void;
    uid?: number;
    gid?: number;
    env?: NodeJS.ProcessEnv;
  } = {},
) {
  return new Promise<number>((resolve, reject) => {
    const t0 = performance.now();
    const { feed, ...spawnOptions } = options;
    const child = spawn(cmd, args, { stdio: 'ignore', env: CLEAN_ENV, ...spawnOptions } as never);
    feed?.(child);
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${cmd} exited ${code}`)),
    );
  });
}

async function oneShot(engine: LocalEngine): Promise<void> {
  const policy = resolvePolicy('default');
  // The same plan the engine makes, with the agent copied in from fd 7 (as the engine does as root).
  const fds = { seccomp: 3, passwd: 4, group: 5, hosts: 6 };
  const bareArgs = [
    ...planBwrapArgs(policy, { host: realHostView(), agent: { fd: 7 }, hostEnv: {}, fds }),
    '--',
    '/usr/bin/true',
  ];
  const filter = compileSeccomp('default');
  const etc = planEtcFiles(policy);
  const agentPath = join(root, 'native/build/ironcage-agent');
  const bareBwrap = () => {
    const agent = openSync(agentPath, 'r');
    return timeSpawn('/usr/bin/bwrap', bareArgs, {
      ...SANDBOX_ID,
      env: {},
      stdio: ['ignore', 'ignore', 'inherit', 'pipe', 'pipe', 'pipe', 'pipe', agent],
      feed: (child) => {
        closeSync(agent);
        const s = child.stdio as unknown as NodeJS.WritableStream[];
        s[3]?.end(filter);
        s[4]?.end(etc.passwd);
        s[5]?.end(etc.group);
        s[6]?.end(etc.hosts);
      },
    });
  };
  const variants: [string, () => Promise<number>][] = [
    ['bare /usr/bin/true (spawn)', () => timeSpawn('/usr/bin/true', [])],
    ['bare bwrap, same flags + seccomp', bareBwrap],
    [
      'ironcage library (LocalEngine.run)',
      async () => {
        const t0 = performance.now();
        await engine.run({ policy, argv: ['/usr/bin/true'] });
        return performance.now() - t0;
      },
    ],
    [
      'ironcage CLI (node dist/bin/main.js run)',
      () => timeSpawn(process.execPath, [join(root, 'dist/bin/main.js'), 'run', '--', '/usr/bin/true']),
    ],
    ['node -e 0 (Node start alone)', () => timeSpawn(process.execPath, ['-e', '0'])],
  ];
  const samples = new Map(variants.map(([name]) => [name, [] as number[]]));
  for (const [, run] of variants) await run(); // warm caches
  for (let i = 0; i < RUNS; i++) for (const [name, run] of variants) samples.get(name)?.push(await run());
  const bwrapMedian = quantile(samples.get('bare bwrap, same flags + seccomp') ?? [], 0.5);
  table(
    `One-shot /usr/bin/true (${RUNS} runs each, ms; cgroup + rlimits + agent included for ironcage)`,
    ['variant', 'p50', 'p90', 'x bare bwrap'],
    variants.map(([name]) => {
      const xs = samples.get(name) ?? [];
      return [name, quantile(xs, 0.5), quantile(xs, 0.9), (quantile(xs, 0.5) / bwrapMedian).toFixed(2)];
    }),
  );
}

async function syscalls(engine: LocalEngine): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ironcage-bench-'));
  try {
    chmodSync(dir, 0o755); // reachable by the sandbox's host uid when run as root
    const bin = join(dir, 'syscall-loop');
    const cc = spawnSync('cc', ['-O2', '-o', bin, join(root, 'bench/syscall-loop.c')], { stdio: 'inherit' });
    if (cc.status !== 0) throw new Error('cannot compile bench/syscall-loop.c');
    const policy = resolvePolicy('default', { filesystem: { readOnly: [dir] } });
    const inside: Record<string, number>[] = [];
    const outside: Record<string, number>[] = [];
    for (let i = 0; i < 9; i++) {
      outside.push(JSON.parse(spawnSync(bin, { encoding: 'utf8' }).stdout));
      let out = '';
      await engine.run({ policy, argv: [bin], onStdout: (c) => (out += c.toString()) });
      inside.push(JSON.parse(out));
    }
    table(
      'Syscall micro-benchmark (ns per call, median of 9 runs of 200k calls)',
      ['syscall', 'host', 'sandbox (default)', 'overhead'],
      Object.keys(outside[0] ?? {}).map((k) => {
        const host = quantile(
          outside.map((o) => o[k] as number),
          0.5,
        );
        const box = quantile(
          inside.map((o) => o[k] as number),
          0.5,
        );
        return [k, host, box, `${(((box - host) / host) * 100).toFixed(1)}%`];
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function memory(engine: LocalEngine): Promise<void> {
  const n = 50;
  const policy = resolvePolicy('default', { limits: { wallTimeMs: 60_000 } });
  const before = memAvailableKb();
  const controller = new AbortController();
  setMaxListeners(n + 1, controller.signal); // one shared signal for all runs is fine
  const runs = Array.from({ length: n }, () =>
    engine.run({ policy, argv: ['sleep', '60'], signal: controller.signal }),
  );
  await new Promise((r) => setTimeout(r, 3000));
  const pids = descendants(process.pid);
  const pss = pssKb(pids);
  const after = memAvailableKb();
  controller.abort();
  await Promise.all(runs);
  table(
    `Host memory per running sandbox (${n} sandboxes running sleep)`,
    ['measure', 'total MiB', 'per sandbox MiB'],
    [
      [`PSS of all ${pids.length} sandbox processes (bwrap, init, agent, sleep)`, pss / 1024, pss / 1024 / n],
      [
        'drop in MemAvailable (includes kernel: namespaces, page tables)',
        (before - after) / 1024,
        (before - after) / 1024 / n,
      ],
    ],
  );
}

const engine = new LocalEngine();
console.log(
  `ironcage isolation benchmark — ${new Date().toISOString()}, node ${process.version}, ${RUNS} runs`,
);
await oneShot(engine);
await syscalls(engine);
await memory(engine);
