/**
 * Fix texts: exact commands, tailored to the distribution and to whether we already run as root. When the
 * distribution is not one we know, every variant is listed so the reader can pick.
 */
import type { OsRelease } from './parse.js';

export type DistroFamily = 'debian' | 'ubuntu' | 'fedora';

export interface FixContext {
  family: DistroFamily | null;
  isRoot: boolean;
}

export function distroFamily(os: OsRelease | null): DistroFamily | null {
  if (!os) return null;
  const ids = [os.id ?? '', ...os.idLike];
  // Ubuntu derivatives (Mint, Pop!_OS) list `ubuntu debian`; Ubuntu wins because its kernel differs.
  if (ids.includes('ubuntu')) return 'ubuntu';
  if (ids.includes('debian')) return 'debian';
  if (ids.some((id) => id === 'fedora' || id === 'rhel' || id === 'centos')) return 'fedora';
  return null;
}

export type FixVariants = Partial<Record<DistroFamily, string>>;

const LABEL: Record<DistroFamily, string> = { debian: 'Debian', ubuntu: 'Ubuntu', fedora: 'Fedora' };

/** The variant for this host's family, or all variants labelled (identical ones merged: `Debian/Ubuntu: ...`). */
export function distroFix(ctx: FixContext, variants: FixVariants): string {
  if (ctx.family !== null) {
    const own = variants[ctx.family];
    if (own !== undefined) return own;
  }
  const byCommand = new Map<string, string[]>();
  for (const family of ['debian', 'ubuntu', 'fedora'] as const) {
    const command = variants[family];
    if (command === undefined) continue;
    byCommand.set(command, [...(byCommand.get(command) ?? []), LABEL[family]]);
  }
  return [...byCommand].map(([command, labels]) => `${labels.join('/')}: ${command}`).join('; ');
}

export function sudo(ctx: FixContext): string {
  return ctx.isRoot ? '' : 'sudo ';
}

/** Sets a sysctl now and keeps it across reboots. */
export function sysctlFix(ctx: FixContext, name: string, value: number | string): string {
  const s = sudo(ctx);
  return `${s}sysctl -w ${name}=${value} && echo '${name} = ${value}' | ${s}tee -a /etc/sysctl.d/60-ironcage.conf`;
}

export function installBubblewrapFix(ctx: FixContext): string {
  const s = sudo(ctx);
  return distroFix(ctx, {
    debian: `${s}apt-get install bubblewrap`,
    ubuntu: `${s}apt-get install bubblewrap`,
    fedora: `${s}dnf install bubblewrap`,
  });
}
