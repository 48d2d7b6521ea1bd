/**
 * Pure parsers for everything the preflight reads: tool output, /proc text, sysctl values, os-release.
 * No I/O here, so each quirk is pinned down by unit tests with fixed strings.
 */
import { parseMountInfo } from '../cgroups/parse.js';
import type { CgroupLayout } from './types.js';

export interface Version {
  major: number;
  minor: number;
  patch: number;
}

export function formatVersion(v: Version): string {
  return `${v.major}.${v.minor}.${v.patch}`;
}

/** Negative when a < b, zero when equal, positive when a > b. */
export function compareVersions(a: Version, b: Version): number {
  return a.major - b.major || a.minor - b.minor || a.patch - b.patch;
}

/** `bwrap --version` prints `bubblewrap 0.8.0`; distributions may append a suffix (`0.4.0-1ubuntu0.1`). */
export function parseBwrapVersion(output: string): Version | null {
  const match = /^bubblewrap\s+v?(\d+)\.(\d+)(?:\.(\d+))?/m.exec(output.trim());
  if (!match) return null;
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3] ?? 0) };
}

/** `uname -r` style release (`6.1.0-18-amd64`, `6.8.0-45-generic`, `6.10.12-200.fc40.x86_64`). */
export function parseKernelRelease(release: string): Version | null {
  const match = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release.trim());
  if (!match) return null;
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3] ?? 0) };
}

/** `Key:\tvalue` lines of /proc/<pid>/status. */
export function parseProcStatus(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

export interface SeccompStatus {
  /** The kernel has CONFIG_SECCOMP (the `Seccomp:` field exists). */
  supported: boolean;
  /** 0 disabled, 1 strict, 2 filter: the mode this process already runs under. */
  mode: number | null;
  /** `Seccomp_filters:` (kernel >= 5.9 with CONFIG_SECCOMP_FILTER): filters already attached to us. */
  filters: number | null;
  noNewPrivs: boolean;
}

function intOrNull(value: string | undefined): number | null {
  if (value === undefined || !/^-?\d+$/.test(value)) return null;
  return Number(value);
}

export function parseSeccompStatus(procStatus: string): SeccompStatus {
  const fields = parseProcStatus(procStatus);
  return {
    supported: fields.has('Seccomp'),
    mode: intOrNull(fields.get('Seccomp')),
    filters: intOrNull(fields.get('Seccomp_filters')),
    noNewPrivs: fields.get('NoNewPrivs') === '1',
  };
}

/** /proc/sys/kernel/seccomp/actions_avail: space-separated action names. */
export function parseSeccompActions(text: string): string[] {
  return text.split(/\s+/).filter((a) => a !== '');
}

/** A sysctl file holding one integer (with a trailing newline); null for anything else. */
export function parseSysctlInt(raw: string | null): number | null {
  if (raw === null) return null;
  return intOrNull(raw.trim());
}

export interface OsRelease {
  id: string | null;
  idLike: string[];
  versionId: string | null;
  prettyName: string | null;
}

/** os-release(5): KEY=value lines, values optionally quoted with shell-style escapes. */
export function parseOsRelease(text: string): OsRelease {
  const values = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!match) continue;
    let value = match[2] ?? '';
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.endsWith(quote) && value.length >= 2) {
      value = value.slice(1, -1).replace(/\\(["'$`\\])/g, '$1');
    }
    values.set(match[1] ?? '', value);
  }
  return {
    id: values.get('ID')?.toLowerCase() ?? null,
    idLike: (values.get('ID_LIKE') ?? '')
      .toLowerCase()
      .split(/\s+/)
      .filter((s) => s !== ''),
    versionId: values.get('VERSION_ID') ?? null,
    prettyName: values.get('PRETTY_NAME') ?? null,
  };
}

/** How cgroup filesystems are mounted: v2 only, v1 only, or both (systemd's "hybrid"). */
export function classifyCgroupLayout(mountInfo: string): CgroupLayout {
  const mounts = parseMountInfo(mountInfo);
  const hasV2 = mounts.some((m) => m.fsType === 'cgroup2');
  // A v1 mount that only carries a named hierarchy (name=systemd) holds no resource controller.
  const hasV1 = mounts.some((m) => m.fsType === 'cgroup' && m.superOptions.some((o) => isV1Controller(o)));
  if (hasV2 && hasV1) return 'hybrid';
  if (hasV2) return 'unified';
  if (hasV1) return 'legacy';
  return 'none';
}

const V1_CONTROLLER_NAMES = new Set([
  'cpu',
  'cpuacct',
  'cpuset',
  'memory',
  'devices',
  'freezer',
  'net_cls',
  'net_prio',
  'blkio',
  'perf_event',
  'hugetlb',
  'pids',
  'rdma',
  'misc',
]);

function isV1Controller(option: string): boolean {
  return V1_CONTROLLER_NAMES.has(option);
}

/**
 * `ironcage-agent probe` prints one JSON line `{"v":1,"landlock_abi":N}`; N < 0 is -errno of
 * landlock_create_ruleset (ENOSYS: not built in, EOPNOTSUPP: built in but not enabled at boot).
 */
export function parseAgentProbe(stdout: string): { landlockAbi: number } | null {
  for (const line of stdout.split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed !== 'object' || parsed === null) continue;
      const abi = (parsed as Record<string, unknown>).landlock_abi;
      if (typeof abi === 'number' && Number.isInteger(abi)) return { landlockAbi: abi };
    } catch {
      // not our line
    }
  }
  return null;
}

/** Kernel machine names ironcage generates seccomp filters for; Node's os.machine() reports these. */
export const SUPPORTED_ARCHES = ['x86_64', 'aarch64'] as const;

/** Some kernels/tools report arm64 for aarch64. */
export function normalizeArch(machine: string): string {
  return machine === 'arm64' ? 'aarch64' : machine === 'amd64' ? 'x86_64' : machine;
}
