/**
 * Presets: complete starting policies. `default` runs what real tools need (shells, python3, node, git, gcc,
 * pip/npm offline); `strict` is for pure computation. Users layer their own policy on top (./merge.ts).
 */
import type { SandboxPolicyInput } from './schema.js';

/** Host paths that hold secrets. Hidden even below a directory the user binds (deny wins). */
export const SECRET_PATHS: readonly string[] = [
  '/root',
  '/etc/shadow',
  '/etc/gshadow',
  '/etc/shadow-',
  '/etc/gshadow-',
  '/etc/sudoers',
  '/etc/sudoers.d',
  '/etc/ssh',
  '/etc/ssl/private',
  '/run',
  '/var/run',
  '/var/lib/docker',
  '/var/lib/kubelet',
  '/var/lib/containerd',
  '~/.ssh',
  '~/.gnupg',
  '~/.aws',
  '~/.azure',
  '~/.config/gcloud',
  '~/.kube',
  '~/.docker',
  '~/.netrc',
  '~/.git-credentials',
  '~/.npmrc',
  '~/.pypirc',
  '~/.password-store',
  '~/.local/share/keyrings',
  '~/.bash_history',
  '~/.zsh_history',
  '~/.python_history',
  '~/.node_repl_history',
  '~/.ironcage',
];

/** The read-only system view: the programs and libraries, never a blanket bind of `/`. */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];

/** The few files of /etc that programs need; /etc is never bound whole. */
const ETC_FILES = [
  '/etc/alternatives',
  '/etc/ld.so.cache',
  '/etc/ld.so.conf',
  '/etc/ld.so.conf.d',
  '/etc/localtime',
  '/etc/timezone',
  '/etc/nsswitch.conf',
  '/etc/protocols',
  '/etc/services',
  '/etc/mime.types',
  '/etc/os-release',
  '/etc/debian_version',
  '/etc/ssl/certs',
  '/etc/ca-certificates',
  '/etc/ca-certificates.conf',
  '/etc/bash.bashrc',
  '/etc/profile',
  '/etc/inputrc',
  '/etc/magic',
  '/etc/python3',
  '/etc/python3.11',
  '/etc/gitconfig',
];

const SANDBOX_HOME = '/home/sandbox';

/** Environment every preset sets; nothing comes from the host unless a policy passes it by name. */
const BASE_ENV = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: SANDBOX_HOME,
  USER: 'sandbox',
  LOGNAME: 'sandbox',
  LANG: 'C.UTF-8',
  TMPDIR: '/tmp',
};

export const presets = {
  default: {
    filesystem: {
      optional: [...SYSTEM_DIRS, ...ETC_FILES],
      hidden: [...SECRET_PATHS],
      scratch: [
        { path: '/tmp', sizeMb: 256 },
        { path: SANDBOX_HOME, sizeMb: 256 },
        { path: '/dev/shm', sizeMb: 64 },
      ],
      workdir: SANDBOX_HOME,
    },
    limits: { wallTimeMs: 600_000, cpuTimeMs: 600_000, memoryMb: 1024, processes: 256 },
    env: { set: { ...BASE_ENV } },
    seccomp: 'default',
  },
  strict: {
    filesystem: {
      optional: [...SYSTEM_DIRS, '/etc/ld.so.cache', '/etc/localtime'],
      hidden: [...SECRET_PATHS],
      scratch: [{ path: '/tmp', sizeMb: 16 }],
      workdir: '/tmp',
    },
    limits: { wallTimeMs: 30_000, cpuTimeMs: 30_000, memoryMb: 256, processes: 16, openFiles: 64 },
    env: { set: { PATH: BASE_ENV.PATH, LANG: 'C.UTF-8', HOME: '/tmp' } },
    seccomp: 'strict',
  },
} as const satisfies Record<string, SandboxPolicyInput>;

export type PresetName = keyof typeof presets;
export const presetNames = Object.keys(presets) as PresetName[];
