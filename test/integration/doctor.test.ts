/**
 * `ironcage doctor` on this machine for real: real bwrap, real kernel, the real agent. The CLI is run as a
 * child process so exit codes and output are exactly what a user sees.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  assertIsolationAvailable,
  IsolationUnavailableError,
  type PreflightReport,
  REQUIRED_CHECK_IDS,
  runPreflight,
} from '../../src/isolation/preflight.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const isRoot = process.geteuid?.() === 0;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  return new Promise((done) => {
    execFile(file, args, { env, cwd: '/', timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err && typeof err.code === 'number' ? err.code : err ? -1 : 0;
      done({ code, stdout, stderr });
    });
  });
}

function doctor(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  return run(process.execPath, [CLI, 'doctor', ...args], env);
}

function assertReportShape(report: PreflightReport): void {
  assert.equal(typeof report.ok, 'boolean');
  assert.equal(typeof report.durationMs, 'number');
  assert.ok(Array.isArray(report.checks) && report.checks.length > 10);
  for (const c of report.checks) {
    assert.match(c.id, /^[a-z][\w.]*$/);
    assert.ok(['ok', 'warn', 'fail'].includes(c.status), c.id);
    assert.equal(typeof c.title, 'string');
    assert.equal(typeof c.detail, 'string');
    assert.equal(typeof c.required, 'boolean');
    if (c.status !== 'ok') assert.ok(typeof c.fix === 'string' && c.fix.length > 0, `${c.id} has no fix`);
  }
  const f = report.facts;
  assert.ok(f.bwrapPath === null || f.bwrapPath.startsWith('/'));
  assert.ok(f.bwrapVersion === null || /^\d+\.\d+\.\d+$/.test(f.bwrapVersion));
  assert.equal(typeof f.userns, 'boolean');
  assert.equal(typeof f.seccomp, 'boolean');
  assert.ok(['v2', 'v1', 'none'].includes(f.cgroupMode));
  assert.ok(['unified', 'hybrid', 'legacy', 'none'].includes(f.cgroupLayout));
  assert.ok(f.landlockAbi === null || (Number.isInteger(f.landlockAbi) && f.landlockAbi >= 1));
  assert.equal(typeof f.isRoot, 'boolean');
  assert.match(f.arch, /^\w+$/);
}

describe('runPreflight on this host', () => {
  test('everything required is ok and the facts match the machine', async () => {
    const report = await runPreflight();
    assertReportShape(report);
    const failing = report.checks.filter((c) => c.status === 'fail');
    assert.deepEqual(failing, [], 'no check fails on the development machine');
    assert.equal(report.ok, true);
    for (const id of REQUIRED_CHECK_IDS)
      assert.equal(report.checks.find((c) => c.id === id)?.status, 'ok', id);
    assert.doesNotThrow(() => assertIsolationAvailable(report));
    assert.equal(report.facts.isRoot, isRoot);
    assert.equal(report.facts.userns, true);
    assert.equal(report.facts.seccomp, true);
    assert.match(report.checks.find((c) => c.id === 'seccomp')?.detail ?? '', /bwrap installed a filter/);
    assert.ok(report.facts.bwrapPath !== null && existsSync(report.facts.bwrapPath));
  });

  test('Landlock is probed through the built agent, and "not probed" without it', async (t) => {
    const agent = fileURLToPath(new URL('../../../native/build/ironcage-agent', import.meta.url));
    if (!existsSync(agent)) {
      t.skip('native/build/ironcage-agent is not built');
      return;
    }
    const probed = await runPreflight({ agentPath: agent });
    const landlock = probed.checks.find((c) => c.id === 'landlock');
    assert.doesNotMatch(landlock?.detail ?? '', /not probed/);
    // Either a real ABI or an explained kernel limitation, never silence.
    if (probed.facts.landlockAbi !== null) assert.match(landlock?.detail ?? '', /^ABI \d+/);
    else assert.equal(landlock?.status, 'warn');

    const missing = await runPreflight({ agentPath: '/nonexistent/ironcage-agent' });
    const notProbed = missing.checks.find((c) => c.id === 'landlock');
    assert.equal(notProbed?.status, 'warn');
    assert.match(notProbed?.detail ?? '', /^not probed: .*ENOENT/);
    assert.equal(missing.facts.landlockAbi, null);
  });

  test('a bwrap that is not bubblewrap (/usr/bin/false) fails version and probe', async () => {
    const report = await runPreflight({ bwrapPath: '/usr/bin/false' });
    assert.equal(report.ok, false);
    assert.equal(report.checks.find((c) => c.id === 'bwrap.present')?.status, 'ok');
    assert.equal(report.checks.find((c) => c.id === 'bwrap.version')?.status, 'fail');
    const probe = report.checks.find((c) => c.id === 'bwrap.probe');
    assert.equal(probe?.status, 'fail');
    assert.match(probe?.detail ?? '', /exit 1/);
    assert.throws(() => assertIsolationAvailable(report), IsolationUnavailableError);
  });

  test('a missing bwrap makes assertIsolationAvailable refuse with the fix', async () => {
    const report = await runPreflight({ bwrapPath: '/nonexistent/bwrap' });
    assert.equal(report.ok, false);
    assert.throws(
      () => assertIsolationAvailable(report),
      (err: unknown) =>
        err instanceof IsolationUnavailableError &&
        err.code === 'ISOLATION_UNAVAILABLE' &&
        /bubblewrap installed: the configured bwrap path \/nonexistent\/bwrap is not an executable file/.test(
          err.message,
        ) &&
        /fix: configure the path of an executable bwrap/.test(err.message),
    );
  });
});

describe('ironcage doctor (CLI)', () => {
  test('--json prints the report and exits 0', async () => {
    const result = await doctor(['--json']);
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout) as PreflightReport;
    assertReportShape(report);
    assert.equal(report.ok, true);
  });

  test('text output: one aligned row per check, no colour when piped', async () => {
    const [text, json] = await Promise.all([doctor([]), doctor(['--json'])]);
    assert.equal(text.code, 0, text.stderr);
    const report = JSON.parse(json.stdout) as PreflightReport;
    const lines = text.stdout.split('\n');
    assert.match(lines[0] ?? '', /^CHECK +STATUS {2}DETAIL$/);
    const statusColumn = (lines[0] ?? '').indexOf('STATUS');
    for (const c of report.checks) {
      const row = lines.find((l) => l.startsWith(`${c.title}${c.required ? ' *' : ''} `));
      assert.ok(row, `row for ${c.id}`);
      assert.equal(row.slice(statusColumn).split(' ')[0], c.status, c.id);
    }
    assert.ok(!text.stdout.includes('\x1b['), 'no escape sequences when stdout is a pipe');
    assert.match(text.stdout, /All required checks passed/);
  });

  test('IRONCAGE_BWRAP=/nonexistent: exit 1 and the text contains the fix', async () => {
    const result = await doctor([], { ...process.env, IRONCAGE_BWRAP: '/nonexistent' });
    assert.equal(result.code, 1);
    assert.match(
      result.stdout,
      /bubblewrap installed \* +fail +IRONCAGE_BWRAP=\/nonexistent is not an executable file/,
    );
    assert.match(
      result.stdout,
      /To fix:\n.*bubblewrap installed.*\n +point IRONCAGE_BWRAP at an executable bwrap/,
    );
    assert.match(result.stdout, /apt-get install bubblewrap|dnf install bubblewrap/);
    assert.match(result.stdout, /required checks? failed: ironcage will refuse to run sandboxes/);
  });

  test('--bwrap /nonexistent --json: a failing report, exit 1', async () => {
    const result = await doctor(['--bwrap', '/nonexistent', '--json']);
    assert.equal(result.code, 1);
    const report = JSON.parse(result.stdout) as PreflightReport;
    assertReportShape(report);
    assert.equal(report.ok, false);
    assert.equal(report.facts.bwrapPath, null);
    assert.equal(report.checks.find((c) => c.id === 'bwrap.present')?.status, 'fail');
  });

  test('bad usage exits 2', async () => {
    const result = await doctor(['--frobnicate']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /usage: ironcage doctor/);
  });

  test('as an unprivileged user (nobody): sandboxes still work, advice uses sudo', async (t) => {
    if (!isRoot || !existsSync('/usr/bin/setpriv')) {
      t.skip('needs root and setpriv to switch to uid 65534');
      return;
    }
    const result = await run('/usr/bin/setpriv', [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      process.execPath,
      CLI,
      'doctor',
      '--json',
    ]);
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout) as PreflightReport;
    assertReportShape(report);
    assert.equal(report.facts.isRoot, false);
    assert.equal(report.facts.userns, true);
    assert.match(report.checks.find((c) => c.id === 'host.user')?.detail ?? '', /ordinary user/);
    const cgroups = report.checks.find((c) => c.id === 'cgroups');
    // nobody cannot write this host's cgroups unless they were delegated: then the fix says how.
    if (report.facts.cgroupMode === 'none') {
      assert.equal(cgroups?.status, 'warn');
      assert.match(cgroups?.detail ?? '', /rlimits/);
    }
    for (const c of report.checks) if (c.fix?.includes('sysctl -w')) assert.match(c.fix, /^sudo sysctl -w/);
  });
});
