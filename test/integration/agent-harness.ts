/**
 * Test harness (not a test): starts a real warm sandbox the way the lifecycle manager will (bwrap with the
 * planner's arguments, `--as-pid-1`, no `--die-with-parent`, the run directory bound at /.ironcage/run, the
 * token on an extra pipe) with `ironcage-agent serve` as its PID 1.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { AgentClient } from '../../src/agent/client.js';
import { realHostView } from '../../src/isolation/host-view.js';
import { AGENT_PATH, planBwrapArgs, planEtcFiles } from '../../src/isolation/mounts.js';
import { AGENT_BUILD_PATH, packageFile, seccompBuildPath } from '../../src/isolation/package-files.js';
import { compileSeccomp } from '../../src/isolation/seccomp/index.js';
import { resolvePolicy } from '../../src/policy/merge.js';
import type { SandboxPolicyInput } from '../../src/policy/schema.js';

export const isRoot = process.getuid?.() === 0;
const SANDBOX_ID = { uid: 65534, gid: 65534 };
/** stdio positions passed to bwrap (inherited by the agent). */
const FD = { seccomp: 3, passwd: 4, group: 5, hosts: 6, token: 7, ready: 8, info: 9, agent: 10 } as const;

export interface TestSandbox {
  /** Host-side path of the agent socket. */
  socketPath: string;
  token: Buffer;
  /** Host directory bound read-write at /home/sandbox (the sandbox's workdir). */
  workspace: string;
  /** Host directory holding run/ and workspace/. */
  root: string;
  bwrap: ChildProcess;
  /** Host pid of the agent (PID 1 inside), from bwrap's --info-fd. */
  agentHostPid: number;
  /** Resolves with bwrap's exit code once the sandbox is gone. */
  exited: Promise<number | null>;
  /** ms from spawning bwrap until the agent said it listens. */
  readyMs: number;
  stderr(): string;
  /** Kill bwrap (the agent, PID 1, dies with its namespace) and remove the directories. */
  destroy(): Promise<void>;
}

function agentBinary(): string {
  // IRONCAGE_TEST_AGENT: run the suites against another build (e.g. one with sanitizers).
  const override = process.env.IRONCAGE_TEST_AGENT;
  if (override !== undefined && override !== '') return override;
  const path = packageFile(AGENT_BUILD_PATH);
  if (path === null) throw new Error('agent not built: run node scripts/build-native.mjs');
  return path;
}

function seccompDefault(): Buffer {
  const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  const prebuilt = packageFile(seccompBuildPath('default', arch));
  return prebuilt !== null ? readFileSync(prebuilt) : compileSeccomp('default');
}

export async function startTestSandbox(
  options: { orphanTimeoutS?: number; policy?: SandboxPolicyInput } = {},
): Promise<TestSandbox> {
  const root = mkdtempSync(join(tmpdir(), 'ironcage-agent-test-'));
  const run = join(root, 'run');
  const workspace = join(root, 'workspace');
  mkdirSync(run);
  mkdirSync(workspace);
  chmodSync(root, 0o755);
  chmodSync(run, 0o700);
  if (isRoot) {
    // bwrap runs as uid 65534 and the sandbox user maps to it: it must be able to bind and write these.
    chownSync(run, SANDBOX_ID.uid, SANDBOX_ID.gid);
    chownSync(workspace, SANDBOX_ID.uid, SANDBOX_ID.gid);
  }
  const resolved = resolvePolicy(
    'default',
    { filesystem: { writable: [{ host: workspace, sandbox: '/home/sandbox' }], workdir: '/home/sandbox' } },
    options.policy ?? {},
  );
  // The preset's /home/sandbox tmpfs would be mounted over the workspace bind (the later mount wins).
  const scratch = resolved.filesystem.scratch.filter((s) => s.path !== '/home/sandbox');
  const policy = { ...resolved, filesystem: { ...resolved.filesystem, scratch } };
  const agentPath = agentBinary();
  const planned = planBwrapArgs(policy, {
    host: realHostView(),
    agent: isRoot ? { fd: FD.agent } : { path: agentPath },
    hostEnv: process.env,
    fds: { seccomp: FD.seccomp, passwd: FD.passwd, group: FD.group, hosts: FD.hosts, info: FD.info },
  });
  // Warm sandboxes outlive their manager (it re-adopts them), so no --die-with-parent; the agent is PID 1.
  const args = planned.filter((a) => a !== '--die-with-parent');
  const remountRoot = args.findIndex((a, i) => a === '--remount-ro' && args[i + 1] === '/');
  args.splice(remountRoot, 0, '--bind', run, '/.ironcage/run');
  args.splice(0, 0, '--as-pid-1');
  args.push(
    '--',
    AGENT_PATH,
    'serve',
    '--socket',
    '/.ironcage/run/agent.sock',
    '--token-fd',
    String(FD.token),
    '--ready-fd',
    String(FD.ready),
    '--orphan-timeout',
    String(options.orphanTimeoutS ?? 30),
  );

  const token = randomBytes(32);
  const agentFd = isRoot ? openSync(agentPath, 'r') : 'ignore';
  const started = performance.now();
  let bwrap: ChildProcess;
  try {
    bwrap = spawn('/usr/bin/bwrap', args, {
      env: {},
      ...(isRoot ? SANDBOX_ID : {}),
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe', agentFd],
    });
  } finally {
    if (typeof agentFd === 'number') closeSync(agentFd);
  }
  let stderr = '';
  bwrap.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<number | null>((resolve) => bwrap.on('exit', (code) => resolve(code)));
  const stdio = bwrap.stdio as unknown as (NodeJS.WritableStream & NodeJS.ReadableStream)[];
  const etc = planEtcFiles(policy);
  for (const s of stdio.slice(3)) s?.on('error', () => {});
  stdio[FD.seccomp]?.end(seccompDefault());
  stdio[FD.passwd]?.end(etc.passwd);
  stdio[FD.group]?.end(etc.group);
  stdio[FD.hosts]?.end(etc.hosts);
  stdio[FD.token]?.end(token);
  let info = '';
  stdio[FD.info]?.on('data', (c: Buffer) => {
    info += c.toString();
  });
  const infoDone = new Promise<void>((resolve) => {
    stdio[FD.info]?.once('end', resolve);
    void exited.then(() => resolve());
  });
  const ready = await new Promise<boolean>((resolve) => {
    const stream = stdio[FD.ready];
    stream?.once('data', () => resolve(true));
    stream?.once('end', () => resolve(false));
    void exited.then(() => resolve(false));
  });
  const readyMs = performance.now() - started;
  await infoDone;
  const agentHostPid = Number(/"child-pid"\s*:\s*(\d+)/.exec(info)?.[1] ?? 0);
  const sandbox: TestSandbox = {
    socketPath: join(run, 'agent.sock'),
    token,
    workspace,
    root,
    bwrap,
    agentHostPid,
    exited,
    readyMs,
    stderr: () => stderr,
    async destroy() {
      if (bwrap.exitCode === null && bwrap.signalCode === null) {
        // Without --die-with-parent, killing bwrap would leave the sandbox running: kill its PID 1 instead,
        // which ends the namespace, and then bwrap.
        for (const pid of [agentHostPid, bwrap.pid ?? 0]) {
          try {
            if (pid > 0) process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        await exited;
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
  if (!ready) {
    const code = await exited;
    await sandbox.destroy();
    throw new Error(`the sandbox agent did not start (bwrap exit ${code}): ${stderr}`);
  }
  return sandbox;
}

/**
 * For a describe block: a test sandbox with a connected client, started before its tests and destroyed after.
 * `onReady` hands them over (tests keep them in their own variables).
 */
export function useConnectedSandbox(onReady: (sandbox: TestSandbox, client: AgentClient) => void): void {
  let sandbox: TestSandbox | undefined;
  let client: AgentClient | undefined;
  before(async () => {
    sandbox = await startTestSandbox();
    client = await AgentClient.connect(sandbox.socketPath, sandbox.token);
    onReady(sandbox, client);
  });
  after(async () => {
    client?.close();
    await sandbox?.destroy();
  });
}
