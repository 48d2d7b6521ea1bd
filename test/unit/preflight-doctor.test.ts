import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDoctorReport } from '../../src/cli/doctor.js';
import type { PreflightReport } from '../../src/isolation/preflight.js';

function report(ok: boolean): PreflightReport {
  return {
    ok,
    durationMs: 12,
    checks: [
      { id: 'host.arch', title: 'CPU architecture', status: 'ok', detail: 'x86_64', required: true },
      {
        id: 'bwrap.present',
        title: 'bubblewrap installed',
        status: ok ? 'ok' : 'fail',
        detail: ok ? '/usr/bin/bwrap' : 'bwrap is not on PATH',
        ...(ok ? {} : { fix: 'apt-get install bubblewrap' }),
        required: true,
      },
      {
        id: 'userns',
        title: 'user namespaces',
        status: ok ? 'ok' : 'fail',
        detail: ok ? 'bwrap created one' : 'not confirmed',
        ...(ok ? {} : { fix: 'apt-get install bubblewrap' }),
        required: true,
      },
      {
        id: 'sysctl.kernel.kptr_restrict',
        title: 'kernel.kptr_restrict',
        status: 'warn',
        detail: '0: kernel pointers may appear in /proc files',
        fix: 'sysctl -w kernel.kptr_restrict=1',
        required: false,
      },
    ],
    // The formatter reads only the checks.
    facts: {} as PreflightReport['facts'],
  };
}

test('the table is aligned and required checks are starred', () => {
  const lines = formatDoctorReport(report(true), { colour: false }).split('\n');
  assert.equal(lines[0], `${'CHECK'.padEnd(22)}  STATUS  DETAIL`);
  assert.equal(lines[1], `${'CPU architecture *'.padEnd(22)}  ok      x86_64`);
  // 'bubblewrap installed *' is the widest title (22): every row's status starts two columns after it.
  assert.deepEqual(
    lines.slice(0, 5).map((l) => l.slice(24, 30).trim()),
    ['STATUS', 'ok', 'ok', 'ok', 'warn'],
  );
});

test('a passing report: warnings still get their fix, summary says it can run', () => {
  const text = formatDoctorReport(report(true), { colour: false });
  assert.match(text, /To fix:\n {2}kernel\.kptr_restrict\n {4}sysctl -w kernel\.kptr_restrict=1\n/);
  assert.match(
    text,
    /All required checks passed: ironcage can run sandboxes on this host \(1 warning\)\.\n$/,
  );
});

test('a failing report groups checks that share one fix and says ironcage will refuse', () => {
  const text = formatDoctorReport(report(false), { colour: false });
  assert.match(text, /To fix:\n {2}bubblewrap installed, user namespaces\n {4}apt-get install bubblewrap\n/);
  assert.match(text, /2 required checks failed: ironcage will refuse to run sandboxes \(1 warning\)\.\n$/);
});

test('colour only when asked', () => {
  const ESC = '\x1b[';
  assert.ok(!formatDoctorReport(report(false), { colour: false }).includes(ESC));
  const coloured = formatDoctorReport(report(false), { colour: true });
  assert.ok(coloured.includes(`${ESC}31mfail  ${ESC}0m`));
  assert.ok(coloured.includes(`${ESC}33mwarn  ${ESC}0m`));
});
