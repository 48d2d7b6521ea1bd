/**
 * `ironcage doctor`: prints which isolation features this host offers and the exact fix for each missing one.
 * Exit 0 when every required check passes (sandboxes can run), 1 when ironcage would refuse, 2 on bad usage.
 */
import { parseArgs } from 'node:util';
import { type Check, type PreflightReport, runPreflight } from '../isolation/preflight.js';

const HELP = `usage: ironcage doctor [--json] [--bwrap PATH] [--agent PATH]

Checks bubblewrap, user namespaces, seccomp, cgroups, Landlock and hardening sysctls on this host.

options:
  --json          print the full report (checks and facts) as JSON
  --bwrap PATH    bubblewrap to check (default: IRONCAGE_BWRAP, else bwrap on PATH)
  --agent PATH    ironcage-agent used to probe Landlock (default: this package's native build)

exit codes: 0 all required checks pass; 1 a required check failed (ironcage refuses to run); 2 bad usage.
`;

const COLOURS: Record<Check['status'], string> = { ok: '\x1b[32m', warn: '\x1b[33m', fail: '\x1b[31m' };
const RESET = '\x1b[0m';

export interface FormatOptions {
  colour: boolean;
}

/** The aligned text table, then one fix per distinct command (checks sharing a fix are listed together). */
export function formatDoctorReport(report: PreflightReport, options: FormatOptions): string {
  const paint = (status: Check['status'], text: string) =>
    options.colour ? `${COLOURS[status]}${text}${RESET}` : text;
  const titleOf = (c: Check) => (c.required ? `${c.title} *` : c.title);
  const width = Math.max('CHECK'.length, ...report.checks.map((c) => titleOf(c).length));
  const lines = [`${'CHECK'.padEnd(width)}  STATUS  DETAIL`];
  for (const check of report.checks) {
    lines.push(
      `${titleOf(check).padEnd(width)}  ${paint(check.status, check.status.padEnd(6))}  ${check.detail}`,
    );
  }
  lines.push('', '* required: ironcage refuses to run sandboxes when one of these fails');

  const byFix = new Map<string, Check[]>();
  for (const check of report.checks) {
    if (check.status === 'ok' || check.fix === undefined) continue;
    byFix.set(check.fix, [...(byFix.get(check.fix) ?? []), check]);
  }
  if (byFix.size > 0) {
    lines.push('', 'To fix:');
    for (const [fix, checks] of byFix) {
      const worst = checks.some((c) => c.status === 'fail') ? 'fail' : 'warn';
      lines.push(`  ${paint(worst, checks.map((c) => c.title).join(', '))}`, `    ${fix}`);
    }
  }

  const failed = report.checks.filter((c) => c.required && c.status === 'fail').length;
  const warnings = report.checks.filter(
    (c) => c.status !== 'ok' && !(c.required && c.status === 'fail'),
  ).length;
  const note = warnings > 0 ? ` (${warnings} warning${warnings === 1 ? '' : 's'})` : '';
  lines.push(
    '',
    report.ok
      ? `All required checks passed: ironcage can run sandboxes on this host${note}.`
      : `${failed} required check${failed === 1 ? '' : 's'} failed: ironcage will refuse to run sandboxes${note}.`,
  );
  return `${lines.join('\n')}\n`;
}

export async function doctorCommand(args: string[]): Promise<number> {
  let values: { json?: boolean; bwrap?: string; agent?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        json: { type: 'boolean' },
        bwrap: { type: 'string' },
        agent: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`ironcage doctor: ${err instanceof Error ? err.message : String(err)}\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const report = await runPreflight({
    ...(values.bwrap !== undefined ? { bwrapPath: values.bwrap } : {}),
    ...(values.agent !== undefined ? { agentPath: values.agent } : {}),
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    const noColour = process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '';
    process.stdout.write(formatDoctorReport(report, { colour: process.stdout.isTTY === true && !noColour }));
  }
  return report.ok ? 0 : 1;
}
