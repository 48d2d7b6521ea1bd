/**
 * The escape and containment battery: every probe of ./probes/ as one node:test test, by category.
 * Never run a probe's program outside the sandbox: the harness only ever hands it to the engine.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CATEGORIES, registerCategory, registerTeardown } from './harness.js';
import { ALL_PROBES, PROBES_BY_CATEGORY } from './probes/index.js';
import { renderBatteryDoc } from './render-doc.js';

test('the battery has at least 60 probes with unique ids, each documented', () => {
  assert.ok(ALL_PROBES.length >= 60, `only ${ALL_PROBES.length} probes`);
  const ids = ALL_PROBES.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'duplicate probe ids');
  for (const p of ALL_PROBES) {
    assert.match(p.id, /^(fs|priv|kern|info|net|res|clean)-[a-z0-9-]+$/, p.id);
    assert.ok(p.tries && p.proves && p.expected, `${p.id} lacks its documentation`);
    assert.ok(p.custom !== undefined || p.check !== undefined, `${p.id} has no check`);
  }
});

// The repository copy of the document; absent in the unprivileged test copy, which has no docs/.
const doc = join(dirname(fileURLToPath(import.meta.url)), '../../../docs/escape-battery.md');
test('docs/escape-battery.md is the rendering of the probe tables', {
  skip: !existsSync(doc) && 'no docs/',
}, () => {
  assert.equal(
    readFileSync(doc, 'utf8'),
    renderBatteryDoc(),
    'docs/escape-battery.md is stale: node dist/test/escape/render-doc.js > docs/escape-battery.md',
  );
});

for (const category of CATEGORIES) {
  // Resource probes load the machine (fork bombs, CPU spin) and cleanup probes look at host-wide state.
  const concurrency = category === 'cleanup' ? 1 : category === 'resources' ? 2 : 4;
  registerCategory(category, PROBES_BY_CATEGORY[category], { concurrency });
}
registerTeardown();
