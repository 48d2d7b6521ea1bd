/**
 * Cleanup: nothing of a sandbox outlives it — no process, no mount in the host's namespace, no cgroup — also
 * when the ironcage process itself is SIGKILLed. These run one at a time (they look at host-wide state).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sandboxParents } from '../../../src/isolation/cgroups/sandbox-cgroup.js';
import { LocalEngine } from '../../../src/isolation/local-engine.js';
import {
  engine,
  engineUsesCgroups,
  expectAttempts,
  expectExited,
  fail,
  hostPidsWithMarker,
  isRoot,
  type Probe,
  pythonProgram,
  runInSandbox,
  scratchHostDir,
} from '../harness.js';

const py = String.raw;

/** Host cgroup directories of sandboxes owned by `ownerPid` (every hierarchy). */
function sandboxCgroupDirs(ownerPid: number): string[] {
  const host = engine().cgroupHost();
  if (host === null) return [];
  const found: string[] = [];
  for (const parent of sandboxParents(host)) {
    try {
      for (const name of readdirSync(parent))
        if (name.startsWith(`${ownerPid}-`)) found.push(join(parent, name));
    } catch {
      // no ironcage/ directory in this hierarchy yet
    }
  }
  return found;
}

async function waitFor(what: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (what()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return what();
}

/** Children of this test process that are bubblewrap (a sandbox still being torn down or leaked). */
function bwrapChildren(): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && comm === 'bwrap') found.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

let mountSeenWhileRunning: string[] | null = null;

const CLI = join(dirname(fileURLToPath(import.meta.url)), '../../../src/cli/main.js');

export const cleanupProbes: Probe[] = [
  {
    id: 'clean-background-processes',
    category: 'cleanup',
    tries:
      'start a daemon (double fork, setsid, SIGTERM/SIGHUP ignored, marked argv) that sleeps 1000 s, then exit at once',
    proves: 'when the command exits, every process it left behind is killed before run() resolves',
    expected: 'the run exits 0; no host process carries the marker when run() returns',
    python: (fx) => py`
import subprocess
marker = 'ironcage-escape-daemon-${fx.token}'
code = 'import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\ntime.sleep(1000)'
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv('/usr/bin/python3', ['python3', '-c', code, marker])
    os._exit(0)
subprocess.Popen(['python3', '-c', code, marker], start_new_session=True)
time.sleep(0.3)
fact('started', True)
`,
    check: (run, fx) => {
      expectExited(run);
      const left = hostPidsWithMarker(`ironcage-escape-daemon-${fx.token}`);
      if (left.length > 0) fail(run, `sandbox processes survived the run: pids ${left.join(',')}`);
    },
  },
  {
    id: 'clean-timeout-tree',
    category: 'cleanup',
    tries: 'start a tree of marked sleepers in several sessions, then hang until the 1.5 s wall limit',
    proves: 'a timed-out run leaves no process behind either',
    expected: "outcome 'timeout'; no host process carries the marker afterwards",
    policy: { limits: { wallTimeMs: 1500 } },
    python: (fx) => py`
import subprocess
for _ in range(4):
    subprocess.Popen(['python3', '-c', 'import time; time.sleep(1000)', 'ironcage-escape-tree-${fx.token}'],
                     start_new_session=True)
time.sleep(1000)
`,
    check: (run, fx) => {
      if (run.result.outcome !== 'timeout') fail(run, 'expected a timeout');
      const left = hostPidsWithMarker(`ironcage-escape-tree-${fx.token}`);
      if (left.length > 0) fail(run, `processes survived the timeout: pids ${left.join(',')}`);
    },
  },
  {
    id: 'clean-no-host-mounts',
    category: 'cleanup',
    tries:
      'bind a uniquely named host directory writable at a unique path and, while the sandbox runs, look for ' +
      "that mount in the host's /proc/self/mountinfo; look again afterwards",
    proves:
      "the sandbox's mounts live only in its own mount namespace: none appears on the host, during or after",
    expected:
      'the token is never in host mountinfo; the file written inside does reach the bound host directory',
    policy: (fx) => ({
      filesystem: { writable: [{ host: mountDir(), sandbox: `/ironcage-escape-mnt-${fx.token}` }] },
    }),
    python: (fx) => py`
attempt('write through bind', lambda: open('/ironcage-escape-mnt-${fx.token}/hello', 'w').write('hi'))
sys.stdout.write('MOUNTED\n')
sys.stdout.flush()
time.sleep(0.5)
`,
    whileRunning: (chunk, fx) => {
      if (!chunk.includes('MOUNTED')) return;
      const info = readFileSync('/proc/self/mountinfo', 'utf8');
      mountSeenWhileRunning = info.split('\n').filter((l) => l.includes(fx.token));
    },
    check: (run, fx) => {
      expectAttempts(run, { 'write through bind': 'ok' });
      assert.ok(existsSync(join(mountDir(), 'hello')), 'the bind was live (the file reached the host dir)');
      if (mountSeenWhileRunning === null) fail(run, 'the host never looked at its mountinfo during the run');
      if (mountSeenWhileRunning.length > 0)
        fail(run, `host mountinfo showed: ${mountSeenWhileRunning.join(' | ')}`);
      const after = readFileSync('/proc/self/mountinfo', 'utf8');
      if (after.includes(fx.token)) fail(run, 'a sandbox mount is left in the host mountinfo');
    },
  },
  {
    id: 'clean-cgroups-removed',
    category: 'cleanup',
    requires: ['root-cgroups'],
    tries: 'run a sandbox, then list <hierarchy>/ironcage/<this pid>-* in every cgroup hierarchy',
    proves: 'each sandbox cgroup is removed when its run ends',
    expected: 'no directory of this process is left once its runs have ended',
    python: py`
fact('ran', True)
`,
    check: async (run) => {
      expectExited(run);
      const left = sandboxCgroupDirs(process.pid);
      if (left.length > 0) fail(run, `cgroup directories left after the run: ${left.join(', ')}`);
    },
  },
  {
    id: 'clean-no-bwrap-children',
    category: 'cleanup',
    tries: 'after a run, look for bubblewrap processes that are still children of the test process',
    proves: 'run() resolves only after the sandbox process itself is reaped (no zombie or orphan bwrap)',
    expected: 'no bwrap child of the test process',
    argv: ['true'],
    check: (run) => {
      expectExited(run);
      const left = bwrapChildren();
      if (left.length > 0) fail(run, `bwrap children still present: ${left.join(',')}`);
    },
  },
  {
    id: 'clean-cli-sigkill',
    category: 'cleanup',
    tries:
      '`ironcage run -- python3 …sleep 1000` (a marked sandbox), SIGKILL the CLI once the sandbox is up, then ' +
      "scan host processes; as root with cgroups, check the next engine run sweeps the CLI's leftover cgroup",
    proves:
      'even a SIGKILLed ironcage leaves no sandbox process running (die-with-parent), and its cgroup is swept ' +
      'by the next run',
    expected:
      "no marked process within 3 s of the kill; (root+cgroups) the CLI's cgroup dirs are gone after the next run",
    timeoutMs: 40_000,
    custom: async (fx) => {
      const marker = `ironcage-escape-cli-${fx.token}`;
      const code = pythonProgram(py`
import subprocess
subprocess.Popen(['python3', '-c', 'import time; time.sleep(1000)', '${marker}'], start_new_session=True)
sys.stdout.write('SANDBOX-UP\n')
sys.stdout.flush()
time.sleep(1000)
`);
      const cli = spawn(process.execPath, [CLI, 'run', '--timeout', '60', '--', 'python3', '-c', code], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      cli.stdout.on('data', (c: Buffer) => {
        out += c.toString('utf8');
      });
      cli.stderr.on('data', (c: Buffer) => {
        err += c.toString('utf8');
      });
      const exited = new Promise<void>((r) => cli.once('exit', () => r()));
      const up = await waitFor(
        () => out.includes('SANDBOX-UP') && hostPidsWithMarker(marker).length > 0,
        15_000,
      );
      if (!up) {
        cli.kill('SIGKILL');
        assert.fail(`the CLI sandbox never came up.\nstdout: ${out}\nstderr: ${err}`);
      }
      const cliPid = cli.pid as number;
      const cgroupsBefore = isRoot() && engineUsesCgroups() ? sandboxCgroupDirs(cliPid) : [];
      cli.kill('SIGKILL');
      await exited;
      const gone = await waitFor(() => hostPidsWithMarker(marker).length === 0, 3000);
      assert.ok(
        gone,
        `SANDBOX PROCESSES SURVIVED the SIGKILLed CLI: pids ${hostPidsWithMarker(marker).join(',')}`,
      );
      if (!(isRoot() && engineUsesCgroups())) return;
      assert.ok(cgroupsBefore.length > 0, 'the CLI sandbox had cgroup directories while it ran');
      // A fresh engine sweeps leftovers of dead owners on its first run.
      const next = await runInSandbox(['true'], { engine: new LocalEngine() });
      assert.equal(next.result.outcome, 'exit');
      const swept = await waitFor(() => sandboxCgroupDirs(cliPid).length === 0, 3000);
      assert.ok(
        swept,
        `the dead CLI's cgroup directories were not swept: ${sandboxCgroupDirs(cliPid).join(', ')}`,
      );
    },
  },
];

let mounted: string | null = null;

function mountDir(): string {
  mounted ??= scratchHostDir('ironcage-escape-mnt-');
  return mounted;
}
