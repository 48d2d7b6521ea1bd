import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  AUDIT_ARCH,
  type SeccompArch,
  SYSCALL_TABLES,
  seccompArches,
} from '../../src/isolation/seccomp/arch.js';
import { compileSeccomp } from '../../src/isolation/seccomp/index.js';
import { runSeccomp } from '../../src/isolation/seccomp/interpreter.js';
import {
  disjointRegions,
  evaluateOci,
  kubernetesLocalhostProfile,
  type OciSeccomp,
  ociSeccompJson,
  toOciSeccomp,
} from '../../src/isolation/seccomp/oci.js';
import { PROFILES } from '../../src/isolation/seccomp/profiles.js';

const U64 = (1n << 64n) - 1n;
const profileNames = ['strict', 'default'] as const;
const OPS = new Set([
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
]);

function assertStructurallyValid(oci: OciSeccomp): void {
  assert.equal(oci.defaultAction, 'SCMP_ACT_ERRNO');
  assert.equal(oci.defaultErrnoRet, 1);
  assert.ok(oci.architectures.length > 0);
  for (const a of oci.architectures) assert.match(a, /^SCMP_ARCH_(X86_64|AARCH64)$/);
  const unconditional = new Set<string>();
  for (const rule of oci.syscalls) {
    assert.ok(rule.names.length > 0);
    assert.ok(rule.action === 'SCMP_ACT_ALLOW' || rule.action === 'SCMP_ACT_ERRNO');
    if (rule.action === 'SCMP_ACT_ALLOW') assert.equal(rule.errnoRet, undefined);
    else assert.ok(Number.isInteger(rule.errnoRet) && (rule.errnoRet as number) > 0);
    for (const name of rule.names) {
      assert.ok(
        seccompArches.some((arch) => name in SYSCALL_TABLES[arch]),
        `unknown syscall ${name}`,
      );
      if (rule.args === undefined) {
        assert.ok(!unconditional.has(name), `${name} listed twice`);
        unconditional.add(name);
      }
    }
    const seen = new Set<number>();
    for (const arg of rule.args ?? []) {
      assert.ok(Number.isInteger(arg.index) && arg.index >= 0 && arg.index <= 5);
      assert.ok(!seen.has(arg.index), 'libseccomp allows one comparison per argument per rule');
      seen.add(arg.index);
      assert.ok(OPS.has(arg.op));
      assert.equal(typeof arg.value, 'bigint');
      assert.ok(arg.value >= 0n && arg.value <= U64);
    }
  }
  for (const rule of oci.syscalls) {
    if (rule.args !== undefined) for (const n of rule.names) assert.ok(!unconditional.has(n), `${n} mixed`);
  }
}

describe('OCI export', () => {
  for (const p of profileNames) {
    for (const arch of seccompArches) {
      test(`${p}/${arch}: structurally valid linux.seccomp`, () => {
        const oci = toOciSeccomp(p, arch);
        assertStructurallyValid(oci);
        assert.deepEqual(oci.architectures, [arch === 'x86_64' ? 'SCMP_ARCH_X86_64' : 'SCMP_ARCH_AARCH64']);
        const json = JSON.parse(ociSeccompJson(oci));
        assert.equal(json.defaultAction, 'SCMP_ACT_ERRNO');
        assert.equal(json.syscalls.length, oci.syscalls.length);
      });

      test(`${p}/${arch}: allows exactly what the BPF allows (every syscall, probed and random arguments)`, () => {
        const oci = toOciSeccomp(p, arch);
        const bpf = compileSeccomp(p, arch);
        const profile = PROFILES[p];
        const compare = (name: string, nr: number, args: bigint[]) => {
          const b = runSeccomp(bpf, { nr, arch: AUDIT_ARCH[arch], args }).verdict;
          const o = evaluateOci(oci, arch, { nr, arch: AUDIT_ARCH[arch], args });
          assert.equal(o.action === 'allow', b.action === 'allow', `${name}(${args.join(',')})`);
          const rule = profile.rules[name];
          // Argument-free rules keep their exact errno (clone3 → ENOSYS).
          if (rule === undefined || rule.cases.length === 0) assert.deepEqual(o, b, name);
        };
        for (const [name, nr] of Object.entries(SYSCALL_TABLES[arch])) {
          const probes: bigint[][] = [[0n, 0n, 0n, 0n, 0n, 0n]];
          for (const c of profile.rules[name]?.cases ?? []) {
            const args = [0n, 0n, 0n, 0n, 0n, 0n];
            for (const m of c.when) args[m.arg] = (args[m.arg] as bigint) | m.value;
            probes.push(
              args,
              args.map((a) => a | (0xffff_0000n << 32n)),
              args.map((a) => a ^ 1n),
              args.map((a) => a ^ 0x100n),
            );
          }
          for (const args of probes) compare(name, nr, args);
        }
        const conditional = Object.entries(profile.rules).filter(
          ([n, r]) => r.cases.length > 0 && n in SYSCALL_TABLES[arch],
        );
        fc.assert(
          fc.property(
            fc.nat(),
            fc.array(fc.oneof(fc.bigInt({ min: 0n, max: U64 }), fc.bigInt({ min: 0n, max: 0x5500n })), {
              minLength: 6,
              maxLength: 6,
            }),
            (pick, args) => {
              const [name] = conditional[pick % conditional.length] as [string, unknown];
              compare(name, SYSCALL_TABLES[arch][name] as number, args);
            },
          ),
          { numRuns: 1500 },
        );
      });
    }
  }

  test('disjoint regions partition the argument space (exactly one region per call)', () => {
    for (const p of profileNames) {
      for (const [name, rule] of Object.entries(PROFILES[p].rules)) {
        if (rule.cases.length === 0) continue;
        const regions = disjointRegions(rule);
        fc.assert(
          fc.property(fc.array(fc.bigInt({ min: 0n, max: U64 }), { minLength: 6, maxLength: 6 }), (args) => {
            const hits = regions.filter(({ cube }) =>
              [...cube].every(([i, { mask, value }]) => ((args[i] as bigint) & mask) === value),
            );
            assert.equal(hits.length, 1, name);
          }),
          { numRuns: 300 },
        );
      }
    }
  });

  test('64-bit masks are written exactly in JSON (no float rounding)', () => {
    const text = ociSeccompJson(toOciSeccomp('default', 'x86_64'));
    // clone: (flags & (high word | CLONE_NEW*)) == 0
    const mask = (0xffff_ffffn << 32n) | 0x7e02_0000n;
    assert.ok(text.includes(`"value": ${mask.toString()}`), 'clone mask printed as an exact integer');
    assert.ok(!text.includes('bigint'));
  });

  test('Kubernetes Localhost profile: same JSON format, both architectures, a kubelet-relative path', () => {
    const k8s = kubernetesLocalhostProfile('default');
    assert.equal(k8s.localhostProfile, 'profiles/ironcage-default.json');
    const parsed = JSON.parse(k8s.content);
    assert.deepEqual(parsed.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_AARCH64']);
    assert.equal(parsed.defaultAction, 'SCMP_ACT_ERRNO');
    const allowed = parsed.syscalls.find(
      (r: { action: string; args?: unknown }) => r.action === 'SCMP_ACT_ALLOW' && !r.args,
    );
    assert.ok(allowed.names.includes('open'), 'x86_64-only names are kept for x86_64 nodes');
    assert.ok(allowed.names.includes('read'));
    // The multi-arch object evaluates per arch like the single-arch one.
    const multi = toOciSeccomp('default', ['x86_64', 'aarch64']);
    for (const arch of seccompArches as readonly SeccompArch[]) {
      const nr = SYSCALL_TABLES[arch].ptrace as number;
      assert.deepEqual(evaluateOci(multi, arch, { nr, arch: AUDIT_ARCH[arch] }), {
        action: 'errno',
        errno: 1,
      });
    }
  });
});
