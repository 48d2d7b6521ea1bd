import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  decide,
  type EgressRulesInput,
  egressRulesSchema,
  mergeRules,
  parseRule,
  replaceRules,
  rulesToInput,
} from '../../src/egress/rules.js';

const rules = (input: EgressRulesInput) => egressRulesSchema.parse(input);
const PUBLIC = '93.184.216.34';

describe('parseRule', () => {
  test('domains, wildcards, ports and CIDRs in canonical text', () => {
    assert.equal(parseRule('Example.COM.').text, 'example.com');
    assert.equal(parseRule('*.Bücher.de:443').text, '*.xn--bcher-kva.de:443');
    assert.equal(parseRule('10.0.0.0/8').text, '10.0.0.0/8');
    assert.equal(parseRule('10.0.0.1:22').text, '10.0.0.1/32:22');
    assert.equal(parseRule('127.1').text, '127.0.0.1/32');
    assert.equal(parseRule('2001:DB8::/32').text, '2001:db8::/32');
    assert.equal(parseRule('[2001:db8::1]:443').text, '[2001:db8::1/128]:443');
    assert.equal(parseRule('[::ffff:10.0.0.1]').text, '10.0.0.1/32');
  });
  test('refuses malformed rules', () => {
    for (const bad of [
      '*',
      '*.',
      '**.a.com',
      'a.com:0',
      'a.com:70000',
      '10.0.0.0/33',
      '*.10.0.0.1',
      'a/8',
      '[::1',
      '',
    ]) {
      assert.throws(
        () => parseRule(bad),
        (e: unknown) => e instanceof Error && 'code' in e,
        bad,
      );
    }
  });
  test('the schema reports bad rules as zod issues and rejects ports in allowPrivate', () => {
    assert.equal(egressRulesSchema.safeParse({ allow: ['a..b'] }).success, false);
    assert.equal(egressRulesSchema.safeParse({ allowPrivate: ['10.0.0.1:80'] }).success, false);
    assert.equal(egressRulesSchema.safeParse({ allowPrivate: ['example.com'] }).success, false);
    assert.equal(egressRulesSchema.safeParse({ allow: [], extra: 1 }).success, false);
    assert.deepEqual(rulesToInput(rules({})), {
      allow: [],
      deny: [],
      allowPrivate: [],
      onUndecided: 'deny',
      requests: [],
      intercept: [],
    });
  });
});

describe('decide', () => {
  const r = rules({
    allow: ['example.com', '*.api.example.org:443', '8.8.8.0/24', '[2606:4700::/32]:443', 'internal.corp'],
    deny: ['blocked.api.example.org', '8.8.8.8'],
  });
  test('default deny, naming the rule and how to allow', () => {
    const d = decide(r, { host: 'other.com', port: 443, resolved: [PUBLIC] });
    assert.equal(d.verdict, 'deny');
    assert.equal(d.rule, 'default-deny');
    assert.match(d.reason, /add "other\.com"/);
  });
  test('exact domain allowed with pinned addresses', () => {
    const d = decide(r, { host: 'EXAMPLE.com.', port: 80, resolved: [PUBLIC, `::ffff:${PUBLIC}`] });
    assert.equal(d.verdict, 'allow');
    assert.equal(d.rule, 'example.com');
    assert.deepEqual(d.dial, [PUBLIC]);
  });
  test('allowed by name only when not resolved yet: no addresses to dial', () => {
    const d = decide(r, { host: 'example.com', port: 80 });
    assert.equal(d.verdict, 'allow');
    assert.equal(d.dial, undefined);
    assert.match(d.reason, /resolve it and decide again/);
  });
  test('wildcard port rule', () => {
    assert.equal(decide(r, { host: 'x.api.example.org', port: 443, resolved: [PUBLIC] }).verdict, 'allow');
    assert.equal(decide(r, { host: 'x.api.example.org', port: 80, resolved: [PUBLIC] }).verdict, 'deny');
    assert.equal(decide(r, { host: 'api.example.org', port: 443, resolved: [PUBLIC] }).verdict, 'deny');
  });
  test('deny rule wins and says how to remove it', () => {
    const d = decide(r, { host: 'blocked.api.example.org', port: 443, resolved: [PUBLIC] });
    assert.equal(d.verdict, 'deny');
    assert.equal(d.rule, 'blocked.api.example.org');
    assert.match(d.reason, /remove "blocked\.api\.example\.org" from egress\.deny/);
  });
  test('IP deny rules also apply to a domain resolving there', () => {
    const d = decide(r, { host: 'example.com', port: 443, resolved: [PUBLIC, '8.8.8.8'] });
    assert.equal(d.verdict, 'deny');
    assert.equal(d.rule, '8.8.8.8/32');
  });
  test('IP destinations use IP rules; IPv6 port rule', () => {
    assert.equal(decide(r, { host: '8.8.8.4', port: 53 }).verdict, 'allow');
    assert.equal(decide(r, { host: '0x08080808', port: 53 }).rule, '8.8.8.8/32');
    assert.equal(decide(r, { host: '[2606:4700::1111]', port: 443 }).verdict, 'allow');
    assert.equal(decide(r, { host: '2606:4700::1111', port: 80 }).verdict, 'deny');
  });
  test('an allowed domain resolving into a refused class is denied (DNS rebinding)', () => {
    const d = decide(r, { host: 'internal.corp', port: 443, resolved: [PUBLIC, '10.1.2.3'] });
    assert.equal(d.verdict, 'deny');
    assert.equal(d.rule, 'class:private');
    assert.match(d.reason, /add "10\.1\.2\.3\/32".*allowPrivate/);
    const ok = decide(mergeRules(r, { allowPrivate: ['10.0.0.0/8'] }), {
      host: 'internal.corp',
      port: 443,
      resolved: ['10.1.2.3'],
    });
    assert.equal(ok.verdict, 'allow');
    assert.deepEqual(ok.dial, ['10.1.2.3']);
  });
  test('host addresses are refused', () => {
    const d = decide(
      r,
      { host: 'example.com', port: 443, resolved: ['8.8.4.4'] },
      { hostAddresses: ['8.8.4.4'] },
    );
    assert.equal(d.rule, 'class:host');
  });
  test('metadata needs an exact allowPrivate entry, a covering range is not enough', () => {
    const base = { allow: ['169.254.0.0/16'] };
    const req = { host: '169.254.169.254', port: 80 };
    assert.equal(decide(rules({ ...base, allowPrivate: ['169.254.0.0/16'] }), req).rule, 'class:metadata');
    assert.equal(decide(rules({ ...base, allowPrivate: ['169.254.169.254'] }), req).verdict, 'allow');
    assert.equal(
      decide(rules({ ...base, allowPrivate: ['169.254.0.0/16'] }), { ...req, host: '169.254.1.1' }).verdict,
      'allow',
    );
  });
  test('localhost and metadata names are refused by name when not resolved', () => {
    const open = rules({ allow: ['localhost', 'metadata.google.internal'] });
    assert.equal(decide(open, { host: 'localhost', port: 80 }).rule, 'class:loopback');
    assert.equal(decide(open, { host: 'dev.localhost', port: 80 }).rule, 'class:loopback');
    assert.equal(decide(open, { host: 'metadata.google.internal', port: 80 }).rule, 'class:metadata');
    // A public answer for a loopback name still needs allowPrivate: /etc/hosts may say anything.
    assert.equal(decide(open, { host: 'localhost', port: 80, resolved: [PUBLIC] }).verdict, 'deny');
  });
  test('ask for undecided destinations, never for refused classes or deny rules', () => {
    const ask = rules({ onUndecided: 'ask', deny: ['bad.com'] });
    const d = decide(ask, { host: 'new.com', port: 443, resolved: [PUBLIC] });
    assert.equal(d.verdict, 'ask');
    assert.deepEqual(d.dial, [PUBLIC]);
    assert.equal(decide(ask, { host: '10.0.0.1', port: 443 }).verdict, 'deny');
    assert.equal(decide(ask, { host: 'bad.com', port: 443 }).verdict, 'deny');
  });
  test('invalid destinations and resolutions are denied with a reason', () => {
    assert.equal(decide(r, { host: 'example.com/x', port: 443 }).rule, 'invalid-destination');
    assert.equal(decide(r, { host: 'example.com', port: 0 }).rule, 'invalid-destination');
    assert.equal(decide(r, { host: 'fe80::1%eth0', port: 443 }).rule, 'invalid-destination');
    assert.equal(decide(r, { host: 'example.com', port: 443, resolved: [] }).rule, 'invalid-resolution');
    assert.equal(
      decide(r, { host: 'example.com', port: 443, resolved: ['evil.com'] }).rule,
      'invalid-resolution',
    );
  });
});

describe('mergeRules / replaceRules', () => {
  test('merge unions and dedupes by canonical text; replace discards', () => {
    const cur = rules({ allow: ['example.com'], deny: ['bad.com'] });
    const merged = mergeRules(cur, {
      allow: ['EXAMPLE.com.', 'b.com'],
      deny: ['bad.com'],
      onUndecided: 'ask',
      requests: [{ action: 'deny', host: 'b.com', methods: ['post'] }],
      intercept: ['B.com'],
    });
    assert.deepEqual(rulesToInput(merged), {
      allow: ['example.com', 'b.com'],
      deny: ['bad.com'],
      allowPrivate: [],
      onUndecided: 'ask',
      requests: [{ action: 'deny', host: 'b.com', methods: ['POST'] }],
      intercept: ['b.com'],
    });
    const again = mergeRules(merged, { requests: [{ action: 'deny', host: 'B.COM', methods: ['POST'] }] });
    assert.equal(again.requests.length, 1, 'request rules dedupe by canonical text');
    assert.equal(mergeRules(merged, {}).onUndecided, 'ask');
    assert.deepEqual(rulesToInput(replaceRules({ allow: ['c.com'] })).allow, ['c.com']);
    assert.throws(() => mergeRules(cur, { allow: ['a..b'] }));
  });
});

describe('decide: properties', () => {
  const loopbackSpellings = fc.constantFrom(
    '127.0.0.1',
    '127.1',
    '0x7f000001',
    '2130706433',
    '0177.0.0.1',
    '::ffff:127.0.0.1',
    '[::ffff:7f00:1]',
    '127.0.0.1.',
  );
  test('any textual variant of 127.0.0.1 is denied without allowPrivate, even if allowed by rule', () => {
    fc.assert(
      fc.property(loopbackSpellings, fc.integer({ min: 1, max: 65535 }), (host, port) => {
        const r = rules({ allow: ['127.0.0.0/8', 'localhost', '*.example.com'], onUndecided: 'ask' });
        assert.equal(decide(r, { host, port }).verdict, 'deny');
        assert.equal(decide(r, { host: 'LOCALHOST.', port, resolved: ['127.0.0.1'] }).verdict, 'deny');
        assert.equal(decide(r, { host: 'a.example.com', port, resolved: [host] }).verdict, 'deny');
        const opened = mergeRules(r, { allowPrivate: ['127.0.0.1'] });
        assert.equal(decide(opened, { host, port }).verdict, 'allow');
      }),
    );
  });
  test('deny wins for any rule order', () => {
    const label = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);
    fc.assert(
      fc.property(
        label,
        label,
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        (sub, apex, i, j) => {
          const name = `${sub}.${apex}.com`;
          const allows = [name, `*.${apex}.com`, `${name}:443`, 'other.com'];
          const denies = ['x.com', 'y.com', 'z.com'];
          const allow = [...allows.slice(i), ...allows.slice(0, i)];
          const deny = [...denies.slice(0, j), j % 2 === 0 ? name : `*.${apex}.com`, ...denies.slice(j)];
          const d = decide(rules({ allow, deny }), { host: name, port: 443, resolved: [PUBLIC] });
          assert.equal(d.verdict, 'deny');
          assert.ok(d.rule === name || d.rule === `*.${apex}.com`);
        },
      ),
    );
  });
  test('a wildcard never matches its apex or a suffix lookalike', () => {
    const label = fc.stringMatching(/^[a-z0-9]{1,10}$/);
    fc.assert(
      fc.property(label, label, (prefix, apex) => {
        const r = rules({ allow: [`*.${apex}.com`] });
        const at = (host: string) => decide(r, { host, port: 443, resolved: [PUBLIC] }).verdict;
        assert.equal(at(`${apex}.com`), 'deny');
        assert.equal(at(`${prefix}${apex}.com`), 'deny');
        assert.equal(at(`${prefix}.${apex}.com`), 'allow');
        assert.equal(at(`${apex}.com.${prefix}.net`), 'deny');
      }),
    );
  });
  test('a Cyrillic homograph never matches the Latin rule', () => {
    const r = rules({ allow: ['example.com', '*.example.com'] });
    for (const host of ['ex\u0430mple.com', 'www.ex\u0430mple.com', '\u0435xample.com']) {
      assert.equal(decide(r, { host, port: 443, resolved: [PUBLIC] }).verdict, 'deny', host);
    }
  });
  test('decisions are the same for any spelling of the same destination', () => {
    fc.assert(
      fc.property(fc.ipV4(), (a) => {
        const r = rules({ allow: ['8.0.0.0/7', '0.0.0.0/0'], deny: ['9.0.0.0/8'] });
        const plain = decide(r, { host: a, port: 80 });
        assert.deepEqual(decide(r, { host: `[::ffff:${a}]`, port: 80 }), plain);
        const n = a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
        assert.deepEqual(decide(r, { host: String(n), port: 80 }), plain);
      }),
      { numRuns: 500 },
    );
  });
});
