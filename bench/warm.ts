/**
 * Warm-sandbox benchmark: prints comparison tables with baselines measured in the same run.
 *   node dist/bench/warm.js [--idle N]
 * create→ready (one at a time, and 50 at once); exec of `true` in a warm sandbox vs the one-shot engine; first
 * stdout byte; 1 MiB file write + read; host memory per idle sandbox with N (default 500) of them alive.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalEngine } from '../src/isolation/local-engine.js';
import { resolvePolicy } from '../src/policy/merge.js';
import { SandboxManager } from '../src/sandbox/manager.js';
import { descendants, memAvailableKb, pssKb, quantile, table } from './lib.js';

const idleArg = process.argv.indexOf('--idle');
const IDLE = idleArg > 0 ? Number(process.argv[idleArg + 1]) : 500;
const ms = (t0: number) => performance.now() - t0;
const row = (name: string, xs: number[], target: string) => [
  name,
  quantile(xs, 0.5),
  quantile(xs, 0.99),
  String(xs.length),
  target,
];

const stateDir = mkdtempSync(join(tmpdir(), 'ironcage-bench-warm-'));
const manager = new SandboxManager({ stateDir, onStartup: 'reap' });
await manager.start();
console.log(`ironcage warm-sandbox benchmark — ${new Date().toISOString()}, node ${process.version}`);
try {
  // create → ready, one at a time
  const creates: number[] = [];
  for (let i = 0; i < 40; i++) {
    const t0 = performance.now();
    const sandbox = await manager.create({ timeoutMs: null });
    creates.push(ms(t0));
    await sandbox.kill();
  }
  // 50 at once: the time until the last is ready
  const t50 = performance.now();
  const fifty = await Promise.all(Array.from({ length: 50 }, () => manager.create({ timeoutMs: null })));
  const parallel50 = ms(t50);

  // exec of `true`: warm (with the 50 alive) vs one-shot engine, alternating
  const sandbox = fifty[0];
  if (sandbox === undefined) throw new Error('no sandbox');
  const engine = new LocalEngine();
  const policy = resolvePolicy('default');
  const warm: number[] = [];
  const oneShot: number[] = [];
  const firstByte: number[] = [];
  for (let i = 0; i < 200; i++) {
    let t0 = performance.now();
    await sandbox.commands.run(['/usr/bin/true']);
    warm.push(ms(t0));
    if (i % 4 === 0) {
      t0 = performance.now();
      await engine.run({ policy, argv: ['/usr/bin/true'] });
      oneShot.push(ms(t0));
      t0 = performance.now();
      let first = 0;
      await sandbox.commands.run(['echo', 'x'], { onStdout: () => (first ||= ms(t0)) });
      firstByte.push(first);
    }
  }
  // 1 MiB write + read through the files API
  const mib = Buffer.alloc(1 << 20, 7);
  const files: number[] = [];
  for (let i = 0; i < 30; i++) {
    const t0 = performance.now();
    await sandbox.files.write('/tmp/blob', mib);
    const back = await sandbox.files.read('/tmp/blob', { format: 'bytes' });
    files.push(ms(t0));
    if (back.length !== mib.length) throw new Error('short read');
  }
  table(
    'Warm sandboxes: latency (ms)',
    ['operation', 'p50', 'p99', 'runs', 'target'],
    [
      row('create → ready (one at a time)', creates, 'p50 ≤ 30, p99 ≤ 100'),
      ['create → ready, 50 at once: last one ready', parallel50, parallel50, '1', 'all ≤ 1500'],
      row('exec `true`, warm sandbox (50 alive)', warm, 'p50 ≤ 3, p99 ≤ 10'),
      row('exec `true`, one-shot engine (baseline)', oneShot, ''),
      row('first stdout byte of `echo x`, warm', firstByte, ''),
      row('1 MiB file write + read, warm', files, ''),
    ],
  );
  await Promise.all(fifty.map((s) => s.kill()));

  // idle host memory: IDLE sandboxes alive at once
  const before = memAvailableKb();
  const idle = [];
  for (let i = 0; i < IDLE; i += 50) {
    const batch = Math.min(50, IDLE - i);
    idle.push(
      ...(await Promise.all(Array.from({ length: batch }, () => manager.create({ timeoutMs: null })))),
    );
  }
  await new Promise((r) => setTimeout(r, 2000));
  const pids = descendants(process.pid);
  const pss = pssKb(pids) / 1024;
  const drop = (before - memAvailableKb()) / 1024;
  const perSandbox = Math.max(pss, drop) / IDLE;
  table(
    `Warm sandboxes: host memory with ${IDLE} idle sandboxes alive`,
    ['measure', 'total MiB', 'per sandbox MiB'],
    [
      [`PSS of all ${pids.length} sandbox processes (bwrap + agent each)`, pss, pss / IDLE],
      ['drop in MemAvailable (also kernel objects)', drop, drop / IDLE],
      [
        `idle sandboxes 24 GiB would hold at the larger figure`,
        '',
        String(Math.floor((24 * 1024) / perSandbox)),
      ],
    ],
  );
  await Promise.all(idle.map((s) => s.kill()));
} finally {
  await manager.close();
  rmSync(stateDir, { recursive: true, force: true });
}
