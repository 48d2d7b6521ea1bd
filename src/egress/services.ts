/**
 * What the egress proxies of one installation share: the CA that TLS interception issues leaf certificates
 * from (trusted inside every proxy-mode sandbox, nowhere else), the credential vault that `network.secrets`
 * names come from, and any extra roots to trust for upstream servers. All of it lives in the state directory;
 * nothing is created until something asks for it.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Vault } from '../vault/index.js';
import { CertificateAuthority } from './tls/ca.js';
import { buildTrustBundle } from './tls/trust.js';

export interface EgressServices {
  /** Issues interception certificates; its certificate is added to each proxy-mode sandbox's trust bundle. */
  readonly ca: CertificateAuthority;
  /** System roots plus the CA, as mounted inside sandboxes. */
  readonly trustBundle: string;
  /** Roots the proxies trust for upstream servers in addition to Node's (a corporate CA, a test server's). */
  readonly upstreamCa?: readonly string[];
  /** Where `network.secrets` names are looked up. */
  readonly vault: Vault;
}

/**
 * The default state directory: IRONCAGE_STATE_DIR, else /var/lib/ironcage for root, else
 * $XDG_STATE_HOME/ironcage (~/.local/state/ironcage).
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.IRONCAGE_STATE_DIR) return env.IRONCAGE_STATE_DIR;
  if (process.getuid?.() === 0) return '/var/lib/ironcage';
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'ironcage');
}

/** Loads (or creates on first use) the CA at `<stateDir>/ca` and opens the vault at `<stateDir>/vault`. */
export async function openEgressServices(
  stateDir: string,
  options: { upstreamCa?: readonly string[]; vaultKey?: Buffer } = {},
): Promise<EgressServices> {
  const ca = await CertificateAuthority.loadOrCreate(join(stateDir, 'ca'));
  return {
    ca,
    trustBundle: buildTrustBundle(ca.certPem),
    ...(options.upstreamCa ? { upstreamCa: options.upstreamCa } : {}),
    vault: Vault.open(join(stateDir, 'vault'), options.vaultKey ? { key: options.vaultKey } : {}),
  };
}

/**
 * Opens the services on first call and shares them afterwards: `given` when the caller configured them,
 * else the ones in `stateDir` (read when first needed, so an engine that never runs a proxy-mode sandbox
 * never creates a CA). A failed open is not cached, so fixing the directory and retrying works.
 */
export function lazyEgressServices(
  given: EgressServices | undefined,
  stateDir: () => string,
): () => Promise<EgressServices> {
  let opening: Promise<EgressServices> | undefined;
  return () => {
    opening ??= (given ? Promise.resolve(given) : openEgressServices(stateDir())).catch((err: Error) => {
      opening = undefined;
      throw err;
    });
    return opening;
  };
}
