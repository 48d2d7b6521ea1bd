import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { packageFile, seccompBuildPath } from '../../src/isolation/package-files.js';
import { compileSeccomp, seccompArches } from '../../src/isolation/seccomp/index.js';
import { seccompProfileNames } from '../../src/policy/schema.js';

test('the precompiled seccomp programs the engine loads are exactly what the compiler produces now', () => {
  for (const profile of seccompProfileNames) {
    for (const arch of seccompArches) {
      const path = packageFile(seccompBuildPath(profile, arch));
      assert.ok(path !== null, `${profile}-${arch} was not precompiled: run npm run build`);
      assert.ok(readFileSync(path).equals(compileSeccomp(profile, arch)), `${profile}-${arch} is stale`);
    }
  }
});
