/**
 * The on-disk layout of a manager's state directory (docs/warm-sandboxes.md). Everything a sandbox owns lives
 * under one directory, so destroying it is one recursive remove and crash recovery is one readdir.
 *
 *   <stateDir>/sandboxes/<id>/           0711 (root) / 0700: traversable, not listable, by the sandbox's uid
 *     meta.json      0600  what recovery needs (written atomically)
 *     token          0600  the agent's 32-byte secret, never inside the sandbox
 *     agent.sock     a hard link to run/agent.sock made at ready time: the host connects here, through
 *                    directories the sandbox cannot write, so a symlink planted in run/ is never followed
 *     sandbox.log    0600  bwrap's and the agent's stderr
 *     run/           0700, owned by the sandbox's host uid; bound at /.ironcage/run (agent.sock)
 *     workspace/     0700, owned by the sandbox's host uid; bound read-write at the policy's workdir
 *     egress/        0711 (root) / 0700, network mode `proxy` only; bound read-only at /.ironcage/egress
 *       egress.sock  0600 (owned by the sandbox's host uid): the sandbox's egress proxy
 *     egress.jsonl   0600  the proxy's audit events, one JSON line each; full segments egress.jsonl.<first seq>
 *     snapshots/<name>/    0700 host-side copies of workspace/
 */
import { join } from 'node:path';
import { EGRESS_SOCKET_NAME } from '../egress/sandbox-egress.js';

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const SNAPSHOT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface SandboxPaths {
  dir: string;
  meta: string;
  token: string;
  log: string;
  run: string;
  /** Inside run/ (writable by the sandbox user): only the agent's side uses it. */
  socket: string;
  /** Root-owned hard link to the agent's socket: what the host connects to. */
  hostSocket: string;
  workspace: string;
  snapshots: string;
  /** Directory of the egress proxy's socket: a directory is bound (not the socket), so a restarted proxy's new
   * socket is what the sandbox reaches. */
  egressDir: string;
  egressSocket: string;
  /** The egress audit log (current segment). */
  egressLog: string;
}

export function sandboxesDir(stateDir: string): string {
  return join(stateDir, 'sandboxes');
}

export function sandboxPaths(stateDir: string, id: string): SandboxPaths {
  const dir = join(sandboxesDir(stateDir), id);
  const run = join(dir, 'run');
  return {
    dir,
    meta: join(dir, 'meta.json'),
    token: join(dir, 'token'),
    log: join(dir, 'sandbox.log'),
    run,
    socket: join(run, 'agent.sock'),
    hostSocket: join(dir, 'agent.sock'),
    workspace: join(dir, 'workspace'),
    snapshots: join(dir, 'snapshots'),
    egressDir: join(dir, 'egress'),
    egressSocket: join(dir, 'egress', EGRESS_SOCKET_NAME),
    egressLog: join(dir, 'egress.jsonl'),
  };
}
