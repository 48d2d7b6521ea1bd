/**
 * Pure parsers for the kernel text this module reads: /proc/self/cgroup, /proc/self/mountinfo and the small
 * cgroupfs control files. No I/O here, so every format quirk is unit-tested with fixed strings.
 */

/** One line of /proc/<pid>/cgroup: `hierarchy-id:controller,list:/path` (v2 is `0::/path`). */
export interface ProcCgroupEntry {
  hierarchyId: number;
  /** Empty for the v2 line; may hold named hierarchies such as `name=systemd`. */
  controllers: string[];
  path: string;
}

export function parseProcSelfCgroup(text: string): ProcCgroupEntry[] {
  const entries: ProcCgroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    // The path itself may contain ':'; only the first two separate fields.
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const hierarchyId = Number(line.slice(0, first));
    if (!Number.isInteger(hierarchyId)) continue;
    const controllers = line
      .slice(first + 1, second)
      .split(',')
      .filter((c) => c !== '');
    entries.push({ hierarchyId, controllers, path: line.slice(second + 1) });
  }
  return entries;
}

/** One line of /proc/<pid>/mountinfo (see proc(5)); only the fields this module needs. */
export interface MountEntry {
  /** Path of the mount's root inside its filesystem (for cgroupfs: the cgroup shown at mountPoint). */
  root: string;
  mountPoint: string;
  mountOptions: string[];
  fsType: string;
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    // A variable number of optional fields sits before the lone '-' separator.
    const separator = fields.indexOf('-', 6);
    if (fields.length < 10 || separator < 0 || fields.length < separator + 3) continue;
    entries.push({
      root: unescapeMountField(fields[3] ?? ''),
      mountPoint: unescapeMountField(fields[4] ?? ''),
      mountOptions: (fields[5] ?? '').split(','),
      fsType: fields[separator + 1] ?? '',
      superOptions: (fields[separator + 3] ?? '').split(','),
    });
  }
  return entries;
}

/** Space-separated controller names (cgroup.controllers, cgroup.subtree_control). */
export function parseControllerList(text: string): string[] {
  return text.split(/\s+/).filter((c) => c !== '');
}

/** Flat keyed files: `key value` per line (cpu.stat, memory.events, pids.events, memory.oom_control). */
export function parseFlatKeyed(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [key, value, extra] = line.trim().split(/\s+/);
    if (key === undefined || key === '' || value === undefined || extra !== undefined) continue;
    if (!/^\d+$/.test(value)) continue;
    values.set(key, Number(value));
  }
  return values;
}

/** A file holding one unsigned number (memory.peak, cpuacct.usage); `max` or garbage gives null. */
export function parseSingleNumber(text: string): number | null {
  const trimmed = text.trim();
  return /^\d+$/.test(trimmed) ? Number(trimmed) : null;
}

/** cgroup.procs: one pid per line. */
export function parsePidList(text: string): number[] {
  const pids: number[] = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (/^\d+$/.test(trimmed)) pids.push(Number(trimmed));
  }
  return pids;
}
