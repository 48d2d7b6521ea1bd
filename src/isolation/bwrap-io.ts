/**
 * The descriptors bwrap reads while it sets a sandbox up and the one it reports on, shared by the one-shot
 * engine and the warm-sandbox launcher.
 */
import type { SandboxPolicy } from '../policy/schema.js';
import { planEtcFiles } from './mounts.js';

export type BwrapStdio = (NodeJS.WritableStream & NodeJS.ReadableStream)[];

/** Writes the seccomp program and the generated /etc files into the descriptors the plan named for them. */
export function feedSetupData(
  stdio: BwrapStdio,
  fds: { seccomp: number; passwd: number; group: number; hosts: number },
  seccomp: Buffer,
  policy: SandboxPolicy,
  trust?: { fd: number; bundle: string },
): void {
  const etc = planEtcFiles(policy);
  if (trust) stdio[trust.fd]?.end(trust.bundle);
  stdio[fds.seccomp]?.end(seccomp);
  stdio[fds.passwd]?.end(etc.passwd);
  stdio[fds.group]?.end(etc.group);
  stdio[fds.hosts]?.end(etc.hosts);
}

/** Calls back once with the sandbox's init pid from bwrap's --info-fd JSON, or null if bwrap wrote none. */
export function watchInfo(
  stream: NodeJS.ReadableStream | undefined,
  onPid: (pid: number | null) => void,
): void {
  let info = '';
  stream?.on('data', (c: Buffer) => {
    info += c.toString('utf8');
  });
  stream?.on('end', () => {
    const match = /"child-pid"\s*:\s*(\d+)/.exec(info);
    onPid(match === null ? null : Number(match[1]));
  });
}
