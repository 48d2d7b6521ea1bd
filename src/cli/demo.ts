/**
 * `ironcage demo`: runs a few ordinary and a few hostile commands in sandboxes and shows what happened to each.
 * It is the quick start's "see it work" step; every line is a real run on this machine.
 */
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
const tryIt = (code: string) =>
  py(
    `import os, socket, ctypes\ntry:\n    ${code}\n    print('ALLOWED')\nexcept OSError as e:\n    print('BLOCKED', e.strerror)`,
  );
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
    argv: tryIt('os.unshare(os.CLONE_NEWUSER)'),
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
    argv: ['sh', '-c', 'f() { f | f & }; f; sleep 2; echo survived'],
    layer: { limits: { processes: 64, wallTimeMs: 3000 } },
    verdict: (r) => `contained: ${r.outcome}${r.message ? ` (${r.message})` : ''}`,
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

export async function demoCommand(): Promise<number> {
  const engine = new LocalEngine();
  process.stdout.write(
    'ironcage demo: each line is a real sandbox run on this machine (preset: default)\n\n',
  );
  let failures = 0;
  for (const scene of scenes) {
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
  process.stdout.write(
    failures === 0
      ? '\nEverything hostile was contained. Try: node dist/bin/main.js run -- sh -c "id; ls /"\n'
      : `\n${failures} scene(s) were NOT contained: run \`ironcage doctor\`.\n`,
  );
  return failures === 0 ? 0 : 1;
}
