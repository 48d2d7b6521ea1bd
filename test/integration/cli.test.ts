/** `ironcage run` and friends as a user types them: real processes, real exit codes. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

// The bundled CLI, exactly what `ironcage` runs once installed.
const cli = join(dirname(fileURLToPath(import.meta.url)), '../../bin/main.js');
const ironcage = (args: string[], input?: string) =>
  spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', input, timeout: 30_000 });

const dir = mkdtempSync(join(tmpdir(), 'ironcage-cli-test-'));
// As root, sandboxes run as host uid 65534; the shared test directory must be writable for it.
chmodSync(dir, 0o777);
after(() => rmSync(dir, { recursive: true, force: true }));

describe('ironcage CLI', { concurrency: 4 }, () => {
  test('passes stdout, stderr and the exit code through', () => {
    const r = ironcage(['run', '--', 'sh', '-c', 'echo to-out; echo to-err >&2; exit 5']);
    assert.equal(r.status, 5);
    assert.equal(r.stdout, 'to-out\n');
    assert.equal(r.stderr, 'to-err\n');
  });

  test('passes stdin through', () => {
    const r = ironcage(['run', '--', 'wc', '-c'], 'twelve bytes');
    assert.equal(r.stdout.trim(), '12');
  });

  test('--json prints the typed result with the captured output', () => {
    const r = ironcage(['run', '--json', '--', 'sh', '-c', 'echo hi; exit 3']);
    assert.equal(r.status, 3);
    const result = JSON.parse(r.stdout);
    assert.equal(result.outcome, 'exit');
    assert.equal(result.exitCode, 3);
    assert.equal(result.stdout, 'hi\n');
    assert.equal(typeof result.wallMs, 'number');
  });

  test('--allow gives the sandbox its egress proxy; anything else is refused with the rule', () => {
    const fetch = [
      'import urllib.request, urllib.error',
      'for url in ("http://denied.example.org/", "http://169.254.169.254/"):',
      '    try: urllib.request.urlopen(url, timeout=5); print("ALLOWED")',
      '    except urllib.error.HTTPError as e: print(e.code, e.headers.get("X-Ironcage-Denied-Rule"))',
    ].join('\n');
    const r = spawnSync(
      process.execPath,
      [cli, 'run', '--allow', 'allowed.example.org', '--', 'python3', '-c', fetch],
      {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, IRONCAGE_STATE_DIR: join(dir, 'state') },
      },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '403 default-deny\n403 class:metadata\n');
    const json = spawnSync(
      process.execPath,
      [cli, 'run', '--json', '--allow', 'allowed.example.org', '--', 'python3', '-c', fetch],
      { encoding: 'utf8', timeout: 30_000, env: { ...process.env, IRONCAGE_STATE_DIR: join(dir, 'state') } },
    );
    const events = (
      JSON.parse(json.stdout) as { egress: { type: string; destination: string; rule: string }[] }
    ).egress;
    assert.deepEqual(
      events.map((e) => [e.type, e.destination, e.rule]),
      [
        ['denied', 'denied.example.org:80', 'default-deny'],
        ['denied', '169.254.169.254:80', 'class:metadata'],
      ],
    );
  });

  test('demo runs every scene, egress included, and exits 0', () => {
    const r = spawnSync(process.execPath, [cli, 'demo'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /HTTP to a domain not allowed +blocked: 403 default-deny/);
    assert.match(r.stdout, /read the secret DEMO_TOKEN +a placeholder: ironcage_ph_demo_token_/);
    assert.match(r.stdout, /Everything hostile was contained/);
  });

  test('--timeout ends with exit code 124 and says which limit', () => {
    const r = ironcage(['run', '--timeout', '0.5', '--', 'sleep', '30']);
    assert.equal(r.status, 124);
    assert.match(r.stderr, /timeout: wall-clock limit of 500 ms reached \(limits\.wallTimeMs\)/);
  });

  test('--ro, --rw, --workdir and --setenv shape the sandbox', () => {
    writeFileSync(join(dir, 'in.txt'), 'data');
    const r = ironcage([
      'run',
      '--rw',
      dir,
      '--workdir',
      dir,
      '--setenv',
      'GREETING=hello',
      '--',
      'sh',
      '-c',
      'cat in.txt; echo " $GREETING" > out.txt; pwd',
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `data${dir}\n`);
  });

  test('host environment variables do not leak; --env passes one by name', () => {
    const env = { ...process.env, IRONCAGE_CANARY: 'canary-value-93' };
    const run = (args: string[]) =>
      spawnSync(process.execPath, [cli, 'run', ...args, '--', 'sh', '-c', 'echo "[$IRONCAGE_CANARY]"'], {
        encoding: 'utf8',
        env,
      });
    assert.equal(run([]).stdout, '[]\n');
    assert.equal(run(['--env', 'IRONCAGE_CANARY']).stdout, '[canary-value-93]\n');
  });

  test('refusals exit 125 and say what was refused and how to allow it', () => {
    const missing = ironcage(['run', '--ro', '/does/not/exist', '--', 'true']);
    assert.equal(missing.status, 125);
    assert.match(missing.stderr, /filesystem\.readOnly path \/does\/not\/exist does not exist/);
    const secret = ironcage(['run', '--ro', '/root', '--', 'true']);
    assert.equal(secret.status, 125);
    assert.match(secret.stderr, /hidden path \/root; to allow it, add "\/root" to filesystem\.reveal/);
  });

  test('bad policy files and flags are clear errors that name the field', () => {
    const file = join(dir, 'bad-policy.json');
    writeFileSync(file, JSON.stringify({ limits: { memoryMb: -5 } }));
    const bad = ironcage(['run', '--policy', file, '--', 'true']);
    assert.equal(bad.status, 125);
    assert.match(bad.stderr, /limits\.memoryMb/);
    const notJson = join(dir, 'not-json.json');
    writeFileSync(notJson, '{ nope');
    assert.match(ironcage(['run', '--policy', notJson, '--', 'true']).stderr, /not valid JSON/);
    assert.match(
      ironcage(['run', '--memory', 'lots', '--', 'true']).stderr,
      /--memory takes a positive number/,
    );
    assert.equal(ironcage(['run', '--preset', 'lax', '--', 'true']).status, 2);
    assert.equal(ironcage(['run']).status, 2);
    assert.equal(ironcage(['frobnicate']).status, 2);
  });

  test('a policy file layers on the preset', () => {
    const file = join(dir, 'policy.json');
    writeFileSync(file, JSON.stringify({ hostname: 'from-policy', env: { set: { MODE: 'file' } } }));
    const r = ironcage(['run', '--policy', file, '--', 'sh', '-c', 'echo $(hostname) $MODE']);
    assert.equal(r.stdout, 'from-policy file\n');
  });

  test('SIGTERM to the CLI stops the sandbox and the CLI exits', async () => {
    const child = spawn(process.execPath, [cli, 'run', '--', 'sh', '-c', 'echo ready; sleep 60'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    // Only once the command runs (a loaded machine can take a while to get there) is SIGTERM meaningful.
    await new Promise<void>((resolve) =>
      child.stdout?.on('data', (c: Buffer) => c.includes('ready') && resolve()),
    );
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    assert.equal(code, 137, 'aborted runs exit 128+SIGKILL');
  });

  test('SIGKILL of the CLI at any moment of setup leaves no sandbox process behind', async () => {
    const marker = '27.1828';
    const children = Array.from({ length: 12 }, (_, i) => {
      const child = spawn(process.execPath, [cli, 'run', '--', 'sleep', marker], { stdio: 'ignore' });
      setTimeout(() => child.kill('SIGKILL'), 60 + i * 8); // Node starts in ~60 ms, then bwrap sets up
      return new Promise((r) => child.on('close', r));
    });
    await Promise.all(children);
    await new Promise((r) => setTimeout(r, 500));
    const survivors = readdirSync('/proc').filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === `sleep\u0000${marker}\u0000`;
      } catch {
        return false;
      }
    });
    assert.deepEqual(survivors, []);
  });
});
