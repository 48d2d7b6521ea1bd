/**
 * Network: the sandbox's network namespace has loopback only. Probes aim only at the host's 127.0.0.1 (services
 * the test itself starts) and at TEST-NET addresses (192.0.2.1, 2001:db8::1) that are never routed anywhere.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { expectAllBlocked, expectAttempts, factOf, fail, type Probe } from '../harness.js';

const py = String.raw;

/** Connection attempts the host makes to a port a sandbox opened (net-port-not-on-host), by port. */
const hostAttempts = new Map<number, Promise<string>>();

/** Host-side connect to 127.0.0.1:port; resolves to what happened (never rejects). */
function hostConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let data = '';
    socket.setTimeout(2000, () => {
      socket.destroy();
      resolve(`connected, read ${JSON.stringify(data)}`);
    });
    socket.on('data', (d) => {
      data += d.toString('utf8');
    });
    socket.on('end', () => resolve(`connected, read ${JSON.stringify(data)}`));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

const CONNECT = py`
def tcp_connect(family, addr, timeout=3):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    data = s.recv(64)
    return 'connected, read %r' % data
`;

export const networkProbes: Probe[] = [
  {
    id: 'net-host-loopback',
    category: 'network',
    tries: "connect to a TCP service the test listens on at the HOST's 127.0.0.1",
    proves:
      "the sandbox's 127.0.0.1 is its own: host-local services (databases, admin APIs, metadata proxies) are unreachable",
    expected: 'ECONNREFUSED, and the host service accepts no connection',
    prepare: (fx) => {
      acceptedBefore = fx.tcpAccepted();
    },
    python: (fx) => py`
${CONNECT}
attempt('connect 127.0.0.1:${fx.tcpPort}', lambda: tcp_connect(socket.AF_INET, ('127.0.0.1', ${fx.tcpPort})))
attempt('connect localhost:${fx.tcpPort}', lambda: tcp_connect(socket.AF_INET, ('localhost', ${fx.tcpPort})))
`,
    check: (run, fx) => {
      expectAllBlocked(run, 'ECONNREFUSED');
      assert.equal(fx.tcpAccepted(), acceptedBefore, 'the host service saw a connection');
    },
  },
  {
    id: 'net-abstract-unix',
    category: 'network',
    tries:
      'connect to a Linux abstract Unix socket the test listens on in the host (abstract names have no file)',
    proves:
      'abstract Unix sockets (X11, containerd shims, dbus) are namespaced away: the file view does not protect them, the network namespace does',
    expected: 'ECONNREFUSED',
    python: (fx) => py`
def connect_abstract():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect('\0' + ${JSON.stringify(fx.abstractName)})
    return 'connected, read %r' % s.recv(64)
attempt('connect @${fx.abstractName}', connect_abstract)
`,
    check: (run, fx) => {
      expectAllBlocked(run, 'ECONNREFUSED');
      assert.equal(fx.abstractAccepted(), 0, 'the host abstract socket saw a connection');
    },
  },
  {
    id: 'net-external-tcp',
    category: 'network',
    tries: 'connect to 192.0.2.1:80 and :443 (TEST-NET-1, never routed)',
    proves: 'there is no route out of the sandbox: outbound connections fail at once',
    expected: 'ENETUNREACH',
    python: py`
${CONNECT}
attempt('connect 192.0.2.1:80', lambda: tcp_connect(socket.AF_INET, ('192.0.2.1', 80)))
attempt('connect 192.0.2.1:443', lambda: tcp_connect(socket.AF_INET, ('192.0.2.1', 443)))
`,
    check: (run) => expectAllBlocked(run, 'ENETUNREACH'),
  },
  {
    id: 'net-external-ipv6',
    category: 'network',
    tries: 'connect to [2001:db8::1]:80 (IPv6 documentation prefix, never routed)',
    proves: 'IPv6 has no route out either',
    expected: 'ENETUNREACH (or EADDRNOTAVAIL when IPv6 is not configured at all)',
    python: py`
${CONNECT}
attempt('connect [2001:db8::1]:80', lambda: tcp_connect(socket.AF_INET6, ('2001:db8::1', 80)))
`,
    check: (run) => expectAllBlocked(run, ['ENETUNREACH', 'EADDRNOTAVAIL']),
  },
  {
    id: 'net-udp-out',
    category: 'network',
    tries: 'send UDP datagrams to 192.0.2.1:53 and 192.0.2.1:123',
    proves: 'datagrams cannot leave either (no DNS or NTP tunnel)',
    expected: 'ENETUNREACH',
    python: py`
for port in (53, 123):
    def send(p=port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return s.sendto(b'ironcage-probe', ('192.0.2.1', p))
    attempt('udp 192.0.2.1:%d' % port, send)
`,
    check: (run) => expectAllBlocked(run, 'ENETUNREACH'),
  },
  {
    id: 'net-dns',
    category: 'network',
    tries: "resolve example.com and a name under the host's search domain; read /etc/resolv.conf",
    proves:
      'no name resolution: nothing to exfiltrate through DNS, and no host resolver configuration inside',
    expected: 'getaddrinfo fails (gaierror); /etc/resolv.conf ENOENT',
    python: py`
attempt('resolve example.com', lambda: socket.getaddrinfo('example.com', 80))
attempt('resolve metadata.google.internal', lambda: socket.getaddrinfo('metadata.google.internal', 80))
attempt('read /etc/resolv.conf', lambda: open('/etc/resolv.conf').read())
`,
    check: (run) =>
      expectAttempts(run, {
        'resolve example.com': 'gaierror',
        'resolve metadata.google.internal': 'gaierror',
        'read /etc/resolv.conf': 'ENOENT',
      }),
  },
  {
    id: 'net-bind-same-port',
    category: 'network',
    tries: "bind 127.0.0.1 on the port the host's test service already uses, listen, and talk to itself",
    proves:
      'loopback works inside but is a different stack: the port is free there (on the host it is in use)',
    expected:
      "bind, listen and connect all work; the peer is the sandbox's own listener, not the host service",
    python: (fx) => py`
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
attempt('bind 127.0.0.1:${fx.tcpPort}', lambda: srv.bind(('127.0.0.1', ${fx.tcpPort})))
attempt('listen', lambda: srv.listen(1))
cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
cli.settimeout(2)
attempt('connect to itself', lambda: cli.connect(('127.0.0.1', ${fx.tcpPort})))
conn, _ = srv.accept()
conn.sendall(b'inside')
fact('peer_said', cli.recv(64).decode())
`,
    check: (run, fx) => {
      expectAttempts(run, {
        [`bind 127.0.0.1:${fx.tcpPort}`]: 'ok',
        listen: 'ok',
        'connect to itself': 'ok',
      });
      assert.equal(factOf(run, 'peer_said'), 'inside');
    },
  },
  {
    id: 'net-port-not-on-host',
    category: 'network',
    tries:
      'listen on a port inside and, while it is listening, let the host connect to that port on its own 127.0.0.1',
    proves: 'a service started inside is not exposed on the host',
    expected:
      "the host's connection is refused (or reaches some unrelated host service, never the sandbox's banner)",
    timeoutMs: 30_000,
    python: (fx) => py`
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(('127.0.0.1', 0))
srv.listen(4)
port = srv.getsockname()[1]
fact('port', port)
sys.stdout.write('LISTENING %d\n' % port)
sys.stdout.flush()
srv.settimeout(2.5)
try:
    conn, _ = srv.accept()
    conn.sendall(b'SANDBOX-BANNER-${fx.token}')
    fact('accepted', True)
except socket.timeout:
    fact('accepted', False)
`,
    whileRunning: (chunk) => {
      const m = /LISTENING (\d+)/.exec(chunk);
      if (m?.[1] !== undefined) hostAttempts.set(Number(m[1]), hostConnect(Number(m[1])));
    },
    check: async (run, fx) => {
      const port = factOf<number>(run, 'port');
      const seen = hostAttempts.get(port);
      if (seen === undefined) fail(run, 'the host never saw the LISTENING line');
      const outcome = await seen;
      if (outcome.includes(`SANDBOX-BANNER-${fx.token}`))
        fail(run, `the host reached the sandbox's port: ${outcome}`);
      assert.equal(factOf(run, 'accepted'), false, 'the sandbox listener accepted a connection');
    },
  },
  {
    id: 'net-proc-net-tables',
    category: 'network',
    tries: 'read /proc/net/tcp and /proc/net/unix looking for the host test service and its abstract socket',
    proves: 'host sockets are not even listed inside (per-namespace socket tables)',
    expected: 'neither the host port nor the abstract name appears',
    python: py`
fact('tcp_ports', sorted(set(int(l.split()[1].split(':')[1], 16) for l in open('/proc/net/tcp').readlines()[1:])))
fact('unix', [l.split()[-1] for l in open('/proc/net/unix').readlines()[1:] if len(l.split()) > 7])
`,
    check: (run, fx) => {
      if (factOf<number[]>(run, 'tcp_ports').includes(fx.tcpPort)) fail(run, 'host TCP port listed');
      if (factOf<string[]>(run, 'unix').some((n) => n.includes(fx.abstractName)))
        fail(run, 'host socket listed');
    },
  },
];

let acceptedBefore = 0;
