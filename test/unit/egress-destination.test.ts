import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { classifyAddress } from '../../src/egress/address-classes.js';
import {
  canonicalizeHost,
  DestinationError,
  destinationText,
  parsePort,
} from '../../src/egress/destination.js';

const ip4 = (address: string) => ({ kind: 'ip', version: 4, address });
const ip6 = (address: string) => ({ kind: 'ip', version: 6, address });

function assertCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof DestinationError && err.code === code);
}

describe('canonicalizeHost: domains', () => {
  test('lowercases and strips exactly one trailing dot', () => {
    assert.deepEqual(canonicalizeHost('Example.COM.'), { kind: 'domain', name: 'example.com' });
    assertCode(() => canonicalizeHost('example.com..'), 'INVALID_DOMAIN');
    assertCode(() => canonicalizeHost('.'), 'EMPTY_HOST');
  });
  test('IDN becomes punycode; a Cyrillic homograph stays distinct', () => {
    assert.deepEqual(canonicalizeHost('Bücher.de'), { kind: 'domain', name: 'xn--bcher-kva.de' });
    const homograph = canonicalizeHost('ex\u0430mple.com');
    assert.equal(homograph.kind, 'domain');
    assert.notEqual(destinationText(homograph), 'example.com');
    assert.match(destinationText(homograph), /^xn--/);
  });
  test('refuses characters the URL parser would treat as the end of the host', () => {
    for (const bad of [
      'evil.com/x.example.com',
      'a\\b',
      'a?b',
      'a#b',
      'user@host',
      '%41.com',
      'a b',
      'a\u0000b',
    ]) {
      assertCode(() => canonicalizeHost(bad), 'INVALID_CHARACTER');
    }
    assertCode(() => canonicalizeHost('*.example.com'), 'INVALID_CHARACTER');
  });
  test('refuses empty labels, bad punycode, over-long labels and names', () => {
    assertCode(() => canonicalizeHost('a..b'), 'INVALID_DOMAIN');
    assertCode(() => canonicalizeHost('xn--.com'), 'INVALID_DOMAIN');
    assertCode(() => canonicalizeHost(`${'a'.repeat(64)}.com`), 'INVALID_DOMAIN');
    assertCode(() => canonicalizeHost(`${'a.'.repeat(127)}com`), 'INVALID_DOMAIN');
    assertCode(() => canonicalizeHost(''), 'EMPTY_HOST');
  });
  test('keeps underscores (real DNS names use them)', () => {
    assert.deepEqual(canonicalizeHost('_acme.Example.com'), { kind: 'domain', name: '_acme.example.com' });
  });
});

describe('canonicalizeHost: IPv4', () => {
  test('every inet_aton spelling of 127.0.0.1 is the dotted quad', () => {
    for (const v of [
      '127.0.0.1',
      '127.1',
      '0x7f.1',
      '2130706433',
      '0177.0.0.1',
      '0x7f000001',
      '127.0.1',
      '127.0.0.1.',
    ]) {
      assert.deepEqual(canonicalizeHost(v), ip4('127.0.0.1'), v);
    }
  });
  test('fullwidth digits are mapped before parsing', () => {
    assert.deepEqual(canonicalizeHost('\uff11\uff12\uff17.\uff10.\uff10.\uff11'), ip4('127.0.0.1'));
  });
  test('out of range or malformed numbers are refused', () => {
    for (const v of ['256.1.1.1', '4294967296', '1.2.3.4.5', '09.1.1.1', 'foo.0x7f']) {
      assertCode(() => canonicalizeHost(v), 'INVALID_DOMAIN');
    }
  });
});

describe('canonicalizeHost: IPv6', () => {
  test('brackets optional, compressed canonical text', () => {
    assert.deepEqual(canonicalizeHost('[0:0:0:0:0:0:0:1]'), ip6('::1'));
    assert.deepEqual(canonicalizeHost('2001:DB8:0:0:1:0:0:1'), ip6('2001:db8::1:0:0:1'));
    assert.deepEqual(canonicalizeHost('[fe80::1]'), ip6('fe80::1'));
  });
  test('IPv4-mapped addresses become IPv4', () => {
    for (const v of [
      '::ffff:127.0.0.1',
      '[::ffff:7f00:1]',
      '[::FFFF:127.0.0.1]',
      '0:0:0:0:0:ffff:7f00:0001',
    ]) {
      assert.deepEqual(canonicalizeHost(v), ip4('127.0.0.1'), v);
    }
    assert.deepEqual(canonicalizeHost('::ffff:a9fe:a9fe'), ip4('169.254.169.254'));
  });
  test('zone ids, unclosed brackets and garbage are refused with codes', () => {
    assertCode(() => canonicalizeHost('fe80::1%eth0'), 'IPV6_ZONE_ID');
    assertCode(() => canonicalizeHost('[fe80::1%25eth0]'), 'IPV6_ZONE_ID');
    assertCode(() => canonicalizeHost('[::1'), 'INVALID_IPV6');
    assertCode(() => canonicalizeHost('1::2::3'), 'INVALID_IPV6');
    assertCode(() => canonicalizeHost('example.com:443'), 'INVALID_IPV6');
  });
});

describe('parsePort', () => {
  test('1-65535 only, integers or decimal digits', () => {
    assert.equal(parsePort(1), 1);
    assert.equal(parsePort('65535'), 65535);
    for (const bad of [0, 65536, 1.5, -1, '0x50', '', '80a', ' 80'])
      assert.throws(() => parsePort(bad), DestinationError);
  });
});

describe('canonicalizeHost: properties', () => {
  const hosts = fc.oneof(
    fc.domain(),
    fc.ipV4(),
    fc.ipV4Extended(),
    fc.ipV6(),
    fc.ipV6().map((a) => `[${a}]`),
    fc.domain().map((d) => `${d.toUpperCase()}.`),
  );
  test('idempotent: canonicalising the canonical text changes nothing', () => {
    fc.assert(
      fc.property(hosts, (h) => {
        let first: ReturnType<typeof canonicalizeHost>;
        try {
          first = canonicalizeHost(h);
        } catch (err) {
          assert.ok(err instanceof DestinationError);
          return;
        }
        assert.deepEqual(canonicalizeHost(destinationText(first)), first);
      }),
      { numRuns: 2000 },
    );
  });
  test('every extended IPv4 spelling becomes a plain dotted quad', () => {
    fc.assert(
      fc.property(fc.ipV4Extended(), (h) => {
        const d = canonicalizeHost(h);
        assert.equal(d.kind, 'ip');
        assert.match(destinationText(d), /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/);
      }),
    );
  });
  test('IPv4-mapped form of any IPv4 address is that address', () => {
    fc.assert(
      fc.property(fc.ipV4(), (a) => {
        assert.deepEqual(canonicalizeHost(`[::ffff:${a}]`), canonicalizeHost(a));
      }),
    );
  });
});

describe('classifyAddress', () => {
  const cases: [string, string][] = [
    ['127.0.0.1', 'loopback'],
    ['::1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.0.1', 'private'],
    ['fd12::1', 'private'],
    ['169.254.1.1', 'link-local'],
    ['fe80::abcd', 'link-local'],
    ['169.254.169.254', 'metadata'],
    ['fd00:ec2::254', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['168.63.129.16', 'metadata'],
    ['169.254.170.2', 'metadata'],
    ['100.64.0.1', 'cgnat'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['192.0.2.1', 'documentation'],
    ['2001:db8::1', 'documentation'],
    ['240.0.0.1', 'reserved'],
    ['64:ff9b::7f00:1', 'loopback'],
    ['0x7f.1', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
  ];
  for (const [address, cls] of cases) {
    test(`${address} is ${cls}`, () => {
      assert.ok(classifyAddress(address).includes(cls as never), `${address}: ${classifyAddress(address)}`);
    });
  }
  test('public addresses have no class', () => {
    for (const a of [
      '8.8.8.8',
      '93.184.216.34',
      '172.32.0.1',
      '100.128.0.1',
      '2606:4700::1111',
      '11.0.0.1',
    ]) {
      assert.deepEqual(classifyAddress(a), [], a);
    }
  });
  test("the host's own addresses, in any spelling", () => {
    assert.deepEqual(classifyAddress('203.0.114.7', ['203.0.114.7']), ['host']);
    assert.deepEqual(classifyAddress('::ffff:cb00:7207', ['203.0.114.7']), ['host']);
    assert.deepEqual(classifyAddress('2606:4700::1', ['2606:4700:0:0::1']), ['host']);
    assert.deepEqual(classifyAddress('203.0.114.8', ['203.0.114.7']), []);
  });
  test('refuses a domain name', () => {
    assert.throws(() => classifyAddress('example.com'), TypeError);
  });
});
