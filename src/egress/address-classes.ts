/**
 * Special-purpose address classes. An address in any of them is not "the public internet": reaching it from a
 * sandbox would touch the host, its network, or the cloud control plane, so the egress policy refuses it unless
 * the operator names it in `allowPrivate`.
 */
import { BlockList } from 'node:net';
import { canonicalizeHost } from './destination.js';

export type AddressClass =
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'metadata'
  | 'cgnat'
  | 'unspecified'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'reserved'
  | 'host';

/** One line per class, for denial messages an LLM (or a human) can act on. */
export const addressClassDescriptions: Readonly<Record<AddressClass, string>> = {
  loopback: 'a loopback address (the host itself)',
  private: 'a private-network address (RFC 1918 / IPv6 unique-local)',
  'link-local': 'a link-local address',
  metadata: 'a cloud metadata endpoint (it hands out instance credentials)',
  cgnat: 'a carrier-grade NAT / shared address (100.64.0.0/10, also used by VPN overlays)',
  unspecified: 'an unspecified / "this network" address (0.0.0.0 reaches the host on Linux)',
  multicast: 'a multicast address',
  broadcast: 'the broadcast address',
  documentation: 'a documentation-only address',
  reserved: 'a reserved or special-purpose address',
  host: "one of this host's own addresses",
};

type Subnet = readonly [network: string, prefix: number];

const ipv4Ranges: Readonly<Record<Exclude<AddressClass, 'host'>, readonly Subnet[]>> = {
  loopback: [['127.0.0.0', 8]],
  private: [
    ['10.0.0.0', 8],
    ['172.16.0.0', 12],
    ['192.168.0.0', 16],
  ],
  'link-local': [['169.254.0.0', 16]],
  metadata: [
    ['169.254.169.254', 32], // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
    ['169.254.170.2', 32], // AWS ECS task credentials
    ['169.254.169.253', 32], // AWS VPC DNS
    ['168.63.129.16', 32], // Azure WireServer / host agent
    ['100.100.100.200', 32], // Alibaba Cloud
    ['192.0.0.192', 32], // Oracle Cloud (legacy)
  ],
  cgnat: [['100.64.0.0', 10]],
  unspecified: [['0.0.0.0', 8]],
  multicast: [['224.0.0.0', 4]],
  broadcast: [['255.255.255.255', 32]],
  documentation: [
    ['192.0.2.0', 24],
    ['198.51.100.0', 24],
    ['203.0.113.0', 24],
  ],
  reserved: [
    ['192.0.0.0', 24],
    ['198.18.0.0', 15],
    ['240.0.0.0', 4],
  ],
};

const ipv6Ranges: Readonly<Record<Exclude<AddressClass, 'host'>, readonly Subnet[]>> = {
  loopback: [['::1', 128]],
  private: [['fc00::', 7]],
  'link-local': [['fe80::', 10]],
  metadata: [
    ['fd00:ec2::254', 128], // AWS IMDS over IPv6
    ['fd00:ec2::23', 128], // AWS VPC DNS over IPv6
  ],
  cgnat: [],
  unspecified: [['::', 128]],
  multicast: [['ff00::', 8]],
  broadcast: [],
  documentation: [
    ['2001:db8::', 32],
    ['3fff::', 20],
  ],
  // IPv4-compatible (deprecated), discard-only, site-local (deprecated), 6to4/Teredo relays.
  reserved: [
    ['::', 96],
    ['100::', 64],
    ['fec0::', 10],
    ['2001::', 32],
    ['2002::', 16],
  ],
};

function buildLists(): ReadonlyMap<AddressClass, BlockList> {
  const lists = new Map<AddressClass, BlockList>();
  for (const cls of Object.keys(ipv4Ranges) as Exclude<AddressClass, 'host'>[]) {
    const list = new BlockList();
    for (const [net, prefix] of ipv4Ranges[cls]) list.addSubnet(net, prefix, 'ipv4');
    for (const [net, prefix] of ipv6Ranges[cls]) list.addSubnet(net, prefix, 'ipv6');
    lists.set(cls, list);
  }
  return lists;
}

const classLists = buildLists();

// NAT64 (RFC 6052 well-known prefix) reaches the embedded IPv4 address, so it inherits that address's classes.
const NAT64 = /^64:ff9b::([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/**
 * Every special class `ip` belongs to (empty for an ordinary public address). `ip` may be any spelling
 * `canonicalizeHost` accepts; `hostAddresses` are this machine's own addresses, in any spelling.
 */
export function classifyAddress(ip: string, hostAddresses: readonly string[] = []): AddressClass[] {
  const dest = canonicalizeHost(ip);
  if (dest.kind !== 'ip')
    throw new TypeError(`classifyAddress needs an IP address, got ${JSON.stringify(ip)}`);
  const family = dest.version === 4 ? 'ipv4' : 'ipv6';
  const classes: AddressClass[] = [];
  for (const [cls, list] of classLists) if (list.check(dest.address, family)) classes.push(cls);
  if (hostAddresses.some((h) => sameAddress(h, dest.address))) classes.push('host');
  const nat64 = NAT64.exec(dest.address);
  if (nat64 !== null) {
    const hi = Number.parseInt(nat64[1] as string, 16);
    const lo = Number.parseInt(nat64[2] as string, 16);
    const embedded = `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
    for (const cls of classifyAddress(embedded, hostAddresses)) if (!classes.includes(cls)) classes.push(cls);
  }
  return classes;
}

function sameAddress(a: string, canonical: string): boolean {
  try {
    const d = canonicalizeHost(a);
    return d.kind === 'ip' && d.address === canonical;
  } catch {
    return false;
  }
}
