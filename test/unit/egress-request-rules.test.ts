import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { EgressBudget } from '../../src/egress/budget.js';
import { canonicalizeHost } from '../../src/egress/destination.js';
import { decideRequest, normalizePath } from '../../src/egress/request-rules.js';
import { egressRulesSchema, ruleNamesDestination } from '../../src/egress/rules.js';

function verdict(requests: unknown[], host: string, method: string, target: string, port = 443) {
  const rules = egressRulesSchema.parse({ requests });
  const dest = canonicalizeHost(host);
  return decideRequest(rules.requests, (r) => ruleNamesDestination(r, dest, port), { method, target }, host);
}

describe('normalizePath', () => {
  test('dot segments resolve, escapes decode, ambiguous encodings are refused', () => {
    assert.deepEqual(normalizePath('/a/./b/../c?x=1'), ['a', 'c']);
    assert.deepEqual(normalizePath('/a/%2e%2e/b'), ['b']);
    assert.deepEqual(normalizePath('/r%65pos/x'), ['repos', 'x']);
    assert.deepEqual(normalizePath('/'), ['']);
    for (const bad of ['/a%2fb', '/a%5Cb', '/a\\b', '/a%00', '/a%zz', 'relative', '']) {
      assert.equal(normalizePath(bad), undefined, bad);
    }
  });
});

describe('decideRequest', () => {
  const rules = [
    { action: 'allow', host: 'api.example.com', methods: ['get', 'HEAD'], paths: ['/repos/**'] },
    { action: 'allow', host: '*.example.com', methods: ['POST'], paths: ['/upload/*'] },
    { action: 'deny', host: 'api.example.com', paths: ['/repos/*/admin/**'] },
  ];

  test('allow rules limit a named host; deny wins; other hosts are untouched', () => {
    assert.equal(verdict(rules, 'api.example.com', 'GET', '/repos/a/b').verdict, 'allow');
    assert.equal(
      verdict(rules, 'api.example.com', 'head', '/repos').verdict,
      'allow',
      '** matches zero segments',
    );
    assert.equal(
      verdict(rules, 'api.example.com', 'POST', '/upload/x').verdict,
      'allow',
      'via the wildcard rule',
    );
    const post = verdict(rules, 'api.example.com', 'POST', '/repos/a');
    assert.deepEqual([post.verdict, post.verdict === 'deny' && post.rule], ['deny', 'request-default-deny']);
    const admin = verdict(rules, 'api.example.com', 'GET', '/repos/a/admin/x');
    assert.equal(admin.verdict === 'deny' && admin.rule, 'deny * api.example.com /repos/*/admin/**');
    assert.equal(verdict(rules, 'other.org', 'DELETE', '/anything').verdict, 'allow');
    assert.equal(
      verdict(rules, 'x.example.com', 'GET', '/upload/a/b').verdict,
      'deny',
      '* stays in one segment',
    );
  });

  test('port-scoped host rules apply only on that port', () => {
    const scoped = [{ action: 'deny', host: 'api.example.com:8443' }];
    assert.equal(verdict(scoped, 'api.example.com', 'GET', '/', 8443).verdict, 'deny');
    assert.equal(verdict(scoped, 'api.example.com', 'GET', '/', 443).verdict, 'allow');
  });

  test('no spelling of a denied path gets through (property)', () => {
    const deny = [{ action: 'deny', host: 'h.example', paths: ['/admin/**'] }];
    const spellings = fc.constantFrom(
      '/admin/x',
      '/a/../admin/x',
      '/%61dmin/x',
      '/./admin/x',
      '/admin/./x',
      '/x/%2e%2e/admin',
    );
    fc.assert(
      fc.property(spellings, fc.constantFrom('GET', 'POST', 'get'), (path, method) => {
        return verdict(deny, 'h.example', method, path).verdict === 'deny';
      }),
    );
  });

  test('malformed rules are refused by the schema', () => {
    for (const bad of [
      { action: 'allow', host: 'a.com', methods: ['GET /'] },
      { action: 'allow', host: 'a.com', paths: ['x'] },
      { action: 'allow', host: 'a.com', paths: ['/a?b'] },
      { action: 'allow', host: 'a..com' },
      { action: 'allow', host: 'a.com', extra: 1 },
    ]) {
      assert.equal(egressRulesSchema.safeParse({ requests: [bad] }).success, false, JSON.stringify(bad));
    }
  });
});

describe('EgressBudget', () => {
  test('the bucket allows a burst of twice the rate, then refills with time', () => {
    let now = 0;
    const budget = new EgressBudget(
      { requestsPerSecond: 2, maxTotalBytes: Number.POSITIVE_INFINITY },
      () => now,
    );
    const taken = Array.from({ length: 6 }, () => budget.takeRequest() === undefined);
    assert.deepEqual(taken, [true, true, true, true, false, false]);
    now += 500; // one token back
    assert.equal(budget.takeRequest(), undefined);
    assert.equal(budget.takeRequest()?.rule, 'limit:requests-per-second');
  });

  test('the byte budget refuses once spent', () => {
    const budget = new EgressBudget({ requestsPerSecond: Number.POSITIVE_INFINITY, maxTotalBytes: 100 });
    assert.equal(budget.addBytes(60), true);
    assert.equal(budget.takeRequest(), undefined);
    assert.equal(budget.addBytes(60), false);
    assert.equal(budget.takeRequest()?.rule, 'limit:total-bytes');
    assert.match(budget.bytesExhausted()?.reason ?? '', /maxTotalBytes/);
  });
});
