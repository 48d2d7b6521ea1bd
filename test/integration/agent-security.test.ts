/**
 * The warm-sandbox agent's defences for real: the token, peer checks, malformed input, and failing closed when
 * the host goes away.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { AgentClient, type AgentExit } from '../../src/agent/client.js';
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  HEADER_BYTES,
  PROTOCOL_VERSION,
} from '../../src/agent/protocol.js';
import { startTestSandbox, type TestSandbox, useConnectedSandbox } from './agent-harness.js';

/** Write raw bytes on a fresh connection; resolves with what came back once the agent closes it. */
function rawExchange(
  path: string,
  bytes: Buffer[],
  timeoutMs = 7000,
  enough?: (received: Buffer) => boolean,
): Promise<{ closed: boolean; received: Buffer }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket: Socket = createConnection({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false, received: Buffer.concat(chunks) });
    }, timeoutMs);
    socket.on('connect', () => {
      for (const b of bytes) socket.write(b);
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (enough?.(Buffer.concat(chunks))) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ closed: false, received: Buffer.concat(chunks) });
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ closed: true, received: Buffer.concat(chunks) });
    });
  });
}

const hello = (token: Buffer, version = PROTOCOL_VERSION): Buffer =>
  encodeFrame({ type: 'hello', id: 1, version, token });

function header(length: number, type: number, id: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt32LE(length, 0);
  h.writeUInt8(type, 4);
  h.writeUInt32LE(id, 5);
  return h;
}

async function runToEnd(client: AgentClient, argv: string[], env: Record<string, string> = {}) {
  let id = -1;
  let stdout = '';
  const exit = new Promise<AgentExit>((resolve) =>
    client.on('exit', (pid: number, e: AgentExit) => {
      if (pid === id) resolve(e);
    }),
  );
  client.on('output', (pid: number, _s: string, d: Buffer) => {
    if (pid === id) stdout += d.toString();
  });
  id = (await client.spawn({ argv, env, cwd: '' })).id;
  return { exit: await exit, stdout };
}

describe('agent defences', () => {
  let sb: TestSandbox;
  let client: AgentClient;
  useConnectedSandbox((s, c) => {
    sb = s;
    client = c;
  });

  test('a wrong token gets the connection dropped without an answer', async () => {
    await assert.rejects(AgentClient.connect(sb.socketPath, randomBytes(32)), { code: 'AUTH_REFUSED' });
    const wrong = Buffer.from(sb.token);
    wrong[31] = (wrong[31] ?? 0) ^ 1; // one bit off
    const r = await rawExchange(sb.socketPath, [hello(wrong)]);
    assert.deepEqual(r, { closed: true, received: Buffer.alloc(0) });
  });

  test('requests before HELLO, oversized and malformed frames drop the connection', async () => {
    const cases: Record<string, Buffer[]> = {
      'spawn before hello': [encodeFrame({ type: 'listProcs', id: 1 })],
      'huge length before hello': [header(0xffff_fff0, 1, 1)],
      'hello with a short token': [header(4 + 16, 1, 1), Buffer.alloc(20)],
      'unknown type': [header(0, 0xee, 1)],
      'random bytes': [randomBytes(4096)],
    };
    for (const [name, bytes] of Object.entries(cases)) {
      const r = await rawExchange(sb.socketPath, bytes);
      assert.equal(r.closed, true, name);
      assert.equal(r.received.length, 0, name);
    }
  });

  test('after HELLO, a malformed frame drops only that connection', async () => {
    // A spawn whose argv count promises more strings than the payload holds, then a truncated string.
    const bad = Buffer.concat([
      header(4 + 4 + 2 + 4, 0x02, 2),
      Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0x2f, 0, 0xff, 0xff, 0xff, 0xff]),
    ]);
    const r = await rawExchange(sb.socketPath, [hello(sb.token), bad]);
    assert.equal(r.closed, true);
    const frames = new FrameDecoder().push(r.received);
    assert.deepEqual(
      frames.map((f: Frame) => f.type),
      ['helloOk'],
    );
    // Event id 0 is reserved for the agent: using it as a request id is malformed too.
    const r2 = await rawExchange(sb.socketPath, [hello(sb.token), encodeFrame({ type: 'listProcs', id: 0 })]);
    assert.equal(r2.closed, true);
    // The agent and the authenticated client are unaffected.
    const ok = await runToEnd(client, ['echo', 'still serving']);
    assert.equal(ok.stdout, 'still serving\n');
  });

  test('garbage of every shape never takes the agent down', async () => {
    for (let i = 0; i < 40; i++) {
      const junk = randomBytes(1 + Math.floor(Math.random() * 200));
      await rawExchange(sb.socketPath, i % 2 === 0 ? [junk] : [hello(sb.token), junk], 3000);
    }
    const fresh = await AgentClient.connect(sb.socketPath, sb.token);
    try {
      assert.equal((await runToEnd(fresh, ['echo', 'alive'])).stdout, 'alive\n');
    } finally {
      fresh.close();
    }
  });

  test('random payloads behind valid request headers are answered or dropped, never a crash', async () => {
    const requestTypes = [
      0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
    ];
    const outcomes = { answered: 0, dropped: 0 };
    for (let i = 0; i < 300; i++) {
      const type = requestTypes[i % requestTypes.length] ?? 0x07;
      // Mostly small numbers and short NUL-separated strings, so some payloads parse and reach the handlers.
      const payload = Buffer.from(
        Array.from({ length: Math.floor(Math.random() * 48) }, () =>
          Math.random() < 0.5 ? 0 : Math.floor(Math.random() * 256),
        ),
      );
      const fuzz = Buffer.concat([header(payload.length, type, 7), payload]);
      // A LIST after it: its reply proves the connection survived the fuzzed frame.
      const decode = (b: Buffer) => {
        try {
          return new FrameDecoder().push(b);
        } catch {
          return [];
        }
      };
      const list = encodeFrame({ type: 'listProcs', id: 99 });
      const r = await rawExchange(sb.socketPath, [hello(sb.token), fuzz, list], 3000, (b) =>
        decode(b).some((f) => f.id === 99),
      );
      const frames = decode(r.received);
      if (frames.some((f) => f.id === 99)) outcomes.answered++;
      else {
        assert.equal(
          r.closed,
          true,
          `type ${type} payload ${payload.toString('hex')}: neither answered nor dropped`,
        );
        outcomes.dropped++;
      }
    }
    assert.ok(outcomes.dropped > 0 && outcomes.answered > 0, JSON.stringify(outcomes));
    assert.equal((await runToEnd(client, ['echo', 'survived'])).stdout, 'survived\n');
  });

  test('a protocol version mismatch is refused with a reason', async () => {
    const r = await rawExchange(sb.socketPath, [hello(sb.token, 99)]);
    assert.equal(r.closed, true);
    const [frame] = new FrameDecoder().push(r.received);
    assert.equal(frame?.type, 'error');
    assert.equal(frame?.type === 'error' && frame.code, 'VERSION_MISMATCH');
  });

  test('processes inside the sandbox cannot talk to the agent, even with the token', async () => {
    const probe = [
      'python3',
      '-c',
      'import os,socket,struct\n' +
        's=socket.socket(socket.AF_UNIX)\n' +
        "s.connect('/.ironcage/run/agent.sock')\n" +
        "tok=bytes.fromhex(os.environ['TOKEN'])\n" +
        'try:\n' +
        "  s.sendall(struct.pack('<IBI',4+32,1,1)+struct.pack('<I',1)+tok)\n" +
        "  print('answer', len(s.recv(100)))\n" +
        'except (BrokenPipeError, ConnectionResetError):\n' +
        "  print('refused')\n",
    ];
    const r = await runToEnd(client, probe, { TOKEN: sb.token.toString('hex') });
    // The agent closes before reading anything (EOF, EPIPE or a reset, by timing): never a HELLO_OK.
    assert.match(r.stdout, /^(answer 0|refused)\n$/);
    // ...and the agent (which holds the token) is not dumpable: its /proc files refuse even its own uid,
    // while another process of the same uid is readable.
    const mem = await runToEnd(client, [
      'sh',
      '-c',
      'sleep 5 & p=$!; cat /proc/$p/environ >/dev/null && echo sibling-readable; kill $p; ' +
        'cat /proc/1/environ >/dev/null 2>&1 && echo agent-readable || echo agent-denied',
    ]);
    assert.equal(mem.stdout, 'sibling-readable\nagent-denied\n');
  });
});

describe('agent fails closed', () => {
  test('with no host connected for --orphan-timeout, everything is killed and the sandbox ends', async () => {
    const sb = await startTestSandbox({ orphanTimeoutS: 1 });
    try {
      const client = await AgentClient.connect(sb.socketPath, sb.token);
      await client.spawn({ argv: ['sleep', '1000'], env: {}, cwd: '' });
      await client.spawn({ argv: ['sh', '-c', 'trap "" TERM HUP; sleep 1000'], env: {}, cwd: '' });
      const closedAt = performance.now();
      client.close();
      const code = await Promise.race([
        sb.exited,
        new Promise((r) => setTimeout(() => r('still running'), 8000)),
      ]);
      assert.equal(code, 2);
      const took = performance.now() - closedAt;
      assert.ok(took >= 900 && took < 5000, `ended after ${took} ms`);
      assert.throws(() => process.kill(sb.agentHostPid, 0), { code: 'ESRCH' });
    } finally {
      await sb.destroy();
    }
  });

  test('a reconnect within the timeout keeps the sandbox alive', async () => {
    const sb = await startTestSandbox({ orphanTimeoutS: 1 });
    try {
      (await AgentClient.connect(sb.socketPath, sb.token)).close();
      await new Promise((r) => setTimeout(r, 300));
      const again = await AgentClient.connect(sb.socketPath, sb.token);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(sb.bwrap.exitCode, null);
      assert.equal((await runToEnd(again, ['echo', 'kept'])).stdout, 'kept\n');
      again.close();
    } finally {
      await sb.destroy();
    }
  });

  test('SHUTDOWN ends the sandbox at once', async () => {
    const sb = await startTestSandbox();
    try {
      const client = await AgentClient.connect(sb.socketPath, sb.token);
      await client.spawn({ argv: ['sleep', '1000'], env: {}, cwd: '' });
      await client.shutdown();
      assert.equal(await sb.exited, 0);
    } finally {
      await sb.destroy();
    }
  });
});
