/**
 * Test PKI for local HTTPS upstream servers in the egress integration tests (not a test file). Deliberately
 * independent of ironcage's interception CA: an upstream signed by it would prove nothing about interception.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../../src/egress/tls/ca.js';

/** A fresh CA and one leaf naming all `names` (canonical DNS names and/or IP addresses). */
export async function createTestPki(
  names: string[],
): Promise<{ caPem: string; keyPem: string; certPem: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'ironcage-test-pki-'));
  try {
    const ca = await CertificateAuthority.loadOrCreate(join(dir, 'ca'), {
      commonName: 'ironcage test upstream CA',
      validityDays: 2,
    });
    const leaf = await ca.issueForHosts(names);
    return { caPem: ca.certPem, keyPem: leaf.keyPem, certPem: leaf.certPem };
  } finally {
    // The CA key lives on only in memory, and only until this function returns.
    await rm(dir, { recursive: true, force: true });
  }
}
