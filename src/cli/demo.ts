/**
 * `ironcage demo`: runs a few ordinary and a few hostile commands in sandboxes and shows what happened to each.
 * It is the quick start's "see it work" step; every line is a real run on this machine.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEgressServices } from '../egress/services.js';
import { LocalEngine } from '../isolation/local-engine.js';
import { resolvePolicy } from '../policy/merge.js';
import type { SandboxPolicyInput } from '../policy/schema.js';
import type { RunResult } from '../sandbox/engine.js';

interface Scene {
  title: string;
  argv: string[];
  layer?: SandboxPolicyInput;
  /** What a contained run looks like, judged from the result and output. */
  verdict: (r: RunResult, out: string) => string;
}

const py = (code: string) => ['python3', '-c', code];
/** Runs one Python statement and prints ALLOWED or BLOCKED with the error; `check` turns a libc -1 into OSError. */
const tryIt = (statement: string) =>
  py(`import os, socket, ctypes
libc = ctypes.CDLL(None, use_errno=True)
def check(rc):
    if rc != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
try:
    ${statement}
    print('ALLOWED')
except OSError as e:
    print('BLOCKED', e.strerror)`);
const blocked = (_r: RunResult, out: string) =>
  out.startsWith('BLOCKED') ? `blocked: ${out.slice(8)}` : `NOT BLOCKED: ${out}`;

const scenes: Scene[] = [
  {
    title: 'run python',
    argv: py(
      'import sys, os; print(f"python {sys.version.split()[0]} as uid {os.getuid()} on {os.uname().nodename}")',
    ),
    verdict: (r, out) => (r.exitCode === 0 ? `ran: ${out}` : `failed: ${r.outcome}`),
  },
  {
    title: 'read /etc/shadow',
    argv: tryIt("open('/etc/shadow').read()"),
    verdict: blocked,
  },
  {
    title: 'list /root',
    argv: tryIt('os.listdir("/root")'),
    verdict: blocked,
  },
  {
    title: 'write to /usr/bin',
    argv: tryIt("open('/usr/bin/evil', 'w')"),
    verdict: blocked,
  },
  {
    title: 'connect to 192.0.2.1:443',
    argv: tryIt("socket.create_connection(('192.0.2.1', 443), timeout=2)"),
    verdict: blocked,
  },
  {
    title: 'new user namespace',
    argv: tryIt('check(libc.unshare(0x10000000))  # CLONE_NEWUSER'),
    verdict: blocked,
  },
  {
    title: 'raw packet socket',
    argv: tryIt('socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'),
    verdict: blocked,
  },
  {
    title: 'host environment',
    argv: py("import os; print(','.join(sorted(os.environ)))"),
    verdict: (_r, out) => `only the sandbox's own: ${out}`,
  },
  {
    title: 'fork bomb (pids limit 64)',
    argv: py(`import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except OSError as e:
    print(f'fork refused after {n} processes ({e.strerror})')`),
    layer: { limits: { processes: 64, wallTimeMs: 5000 } },
    verdict: (r, out) => `contained: ${out || r.outcome}`,
  },
  {
    title: 'memory bomb (limit 128 MiB)',
    argv: py('x = []\nwhile True: x.append(bytearray(16 << 20))'),
    layer: { limits: { memoryMb: 128 } },
    verdict: (r) => `contained: ${r.outcome}, peak ${Math.round((r.peakMemoryBytes ?? 0) / 2 ** 20)} MiB`,
  },
  {
    title: 'sleep forever (timeout 1 s)',
    argv: ['sleep', 'infinity'],
    layer: { limits: { wallTimeMs: 1000 } },
    verdict: (r) => `contained: ${r.outcome} after ${Math.round(r.wallMs)} ms`,
  },
];

/** Fetches a URL with urllib through the sandbox's proxy; prints the status and the rule that decided. */
const fetchUrl = (url: string) =>
  py(`import urllib.request, urllib.error
try:
    r = urllib.request.urlopen(${JSON.stringify(url)}, timeout=5); print('ALLOWED', r.status)
except urllib.error.HTTPError as e:
    print('BLOCKED', e.code, e.headers.get('X-Ironcage-Denied-Rule'))
except OSError as e:
    print('BLOCKED', e)`);

/** Egress: a proxy-mode sandbox may reach only what its rules allow, and holds placeholders, not secrets. */
const proxied: SandboxPolicyInput = {
  network: { mode: 'proxy', allow: ['pypi.org'], secrets: ['DEMO_TOKEN'] },
};
const egressScenes: Scene[] = [
  {
    title: 'HTTP to a domain not allowed',
    argv: fetchUrl('http://example.com/'),
    layer: proxied,
    verdict: blocked,
  },
  {
    title: 'cloud metadata 169.254.169.254',
    argv: fetchUrl('http://169.254.169.254/latest/meta-data/'),
    layer: proxied,
    verdict: blocked,
  },
  {
    title: 'socket around the proxy',
    argv: tryIt("socket.create_connection(('1.1.1.1', 80), timeout=2)"),
    layer: proxied,
    verdict: blocked,
  },
  {
    title: 'read the secret DEMO_TOKEN',
    argv: ['sh', '-c', 'echo "$DEMO_TOKEN"'],
    layer: proxied,
    verdict: (_r, out) =>
      out.startsWith('ironcage_ph_') ? `a placeholder: ${out.slice(0, 24)}...` : `NOT BLOCKED: ${out}`,
  },
];

/** A warm sandbox: created once, a background process keeps state across commands, pause and snapshot. */
async function warmScenes(): Promise<number> {
  const { SandboxManager } = await import('../sandbox/manager.js');
  const stateDir = mkdtempSync(join(tmpdir(), 'ironcage-demo-'));
  const manager = new SandboxManager({ stateDir, onStartup: 'reap' });
  const line = (title: string, what: string, ms: number) =>
    process.stdout.write(`  ${title.padEnd(30)} ${what}  [${Math.round(ms)} ms]\n`);
  let t0 = performance.now();
  try {
    await manager.start();
    const sandbox = await manager.create({ timeoutMs: 60_000 });
    line('create a warm sandbox', `ready (id ${sandbox.id})`, performance.now() - t0);
    t0 = performance.now();
    const ran = await sandbox.commands.run(['true']);
    line('exec `true` in it', `exit ${ran.exitCode}`, performance.now() - t0);
    const counter = await sandbox.commands.run(
      ['python3', '-u', '-c', 'import sys\nn = 0\nfor _ in sys.stdin:\n    n += 1\n    print(n)'],
      { background: true, stdin: true },
    );
    await counter.sendStdin('tick\ntick\n');
    if (!sandbox.canPause) {
      line('pause, snapshot, restore', 'not available here: no cgroup freezer for this user (see doctor)', 0);
      await sandbox.kill();
      return 0;
    }
    t0 = performance.now();
    await sandbox.pause();
    await sandbox.resume();
    await counter.sendStdin('tick\n');
    let seen = '';
    const attachment = await counter.attach({ fromOffset: 0, onStdout: (b) => (seen += b.toString()) });
    for (let i = 0; i < 100 && !seen.includes('3\n'); i++) await new Promise((r) => setTimeout(r, 10));
    attachment.detach();
    const counted = seen.trim().split('\n').join(' ');
    line('pause + resume a live process', `its counter went on: ${counted}`, performance.now() - t0);
    t0 = performance.now();
    await sandbox.files.write('notes.txt', 'v1');
    await sandbox.snapshot('v1');
    await sandbox.files.write('notes.txt', 'v2 (a mistake)');
    await sandbox.restore('v1');
    const notes = await sandbox.files.read('notes.txt');
    line('snapshot, change, restore', `notes.txt is "${notes}" again`, performance.now() - t0);
    await sandbox.kill();
    return counted === '1 2 3' && notes === 'v1' ? 0 : 1;
  } catch (err) {
    line('warm sandbox', `FAILED: ${(err as Error).message}`, performance.now() - t0);
    return 1;
  } finally {
    await manager.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

async function runScenes(engine: LocalEngine, list: Scene[]): Promise<number> {
  let failures = 0;
  for (const scene of list) {
    const chunks: Buffer[] = [];
    const result = await engine.run({
      policy: resolvePolicy('default', { limits: { wallTimeMs: 10_000 } }, scene.layer ?? {}),
      argv: scene.argv,
      onStdout: (c) => chunks.push(c),
    });
    const out = Buffer.concat(chunks).toString('utf8').trim().split('\n').at(-1) ?? '';
    const verdict = scene.verdict(result, out);
    if (verdict.startsWith('NOT BLOCKED') || result.outcome === 'setup-error') failures++;
    process.stdout.write(`  ${scene.title.padEnd(30)} ${verdict}  [${Math.round(result.wallMs)} ms]\n`);
  }
  return failures;
}

export async function demoCommand(): Promise<number> {
  // The demo's own CA and vault, in a temporary state directory: it leaves nothing behind.
  const stateDir = mkdtempSync(join(tmpdir(), 'ironcage-demo-egress-'));
  try {
    const services = await openEgressServices(stateDir, { vaultKey: randomBytes(32) });
    // A made-up value, generated now; the demo shows the sandbox never sees it.
    services.vault.set('DEMO_TOKEN', randomBytes(24).toString('hex'), { hosts: ['pypi.org'] });
    const engine = new LocalEngine({ egress: services });
    process.stdout.write(
      'ironcage demo: each line is a real sandbox run on this machine (preset: default)\n\n',
    );
    let failures = await runScenes(engine, scenes);
    process.stdout.write('\negress gateway (network.mode proxy: allow pypi.org, secret DEMO_TOKEN):\n');
    failures += await runScenes(engine, egressScenes);
    return await warmAndSummary(failures);
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
}

async function warmAndSummary(failures: number): Promise<number> {
  process.stdout.write('\nwarm sandboxes (kept between commands):\n');
  failures += await warmScenes();
  process.stdout.write(
    failures === 0
      ? '\nEverything hostile was contained. Try: node dist/bin/main.js run -- sh -c "id; ls /"\n'
      : `\n${failures} scene(s) were NOT contained: run \`ironcage doctor\`.\n`,
  );
  return failures === 0 ? 0 : 1;
}
