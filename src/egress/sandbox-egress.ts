/**
 * The one place a sandbox's egress proxy is started, for one-shot runs and warm sandboxes alike: a proxy on a
 * Unix socket the sandbox reaches through a bind mount. Who owns the socket and where it lives is decided
 * here; what the proxy allows is src/egress/proxy.ts and rules.ts.
 */
import { chmodSync, chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { egressRulesOf, type NetworkPolicy } from '../policy/schema.js';
import type { SecretSession } from '../vault/index.js';
import {
  type EgressEvent,
  type EgressProxy,
  type EgressProxyLimits,
  type EgressProxyOptions,
  startEgressProxy,
} from './proxy.js';
import type { EgressRulesInput } from './rules.js';
import type { EgressServices } from './services.js';

export const EGRESS_SOCKET_NAME = 'egress.sock';

export interface SandboxEgress {
  readonly socketPath: string;
  readonly proxy: EgressProxy;
  /** Secret name → placeholder, for the sandbox's environment (empty without `network.secrets`). */
  readonly secretEnv: Readonly<Record<string, string>>;
  /** System roots plus the installation CA, to mount in the sandbox (absent without services). */
  readonly trustBundle?: string;
  /** Stops the proxy and removes its socket (and the directory, when this module created it). */
  close(): Promise<void>;
}

export interface SandboxEgressOptions {
  network: Extract<NetworkPolicy, { mode: 'proxy' }>;
  /** When running as root: the sandbox's host uid/gid, which gets the socket (its only way to connect). */
  hostId: { uid: number; gid: number } | null;
  /**
   * Directory for the socket, prepared by the caller (a warm sandbox's own, so a restarted manager listens
   * at the same path again). Default: a fresh private temporary directory, removed on close.
   */
  dir?: string;
  /** Rules in force instead of the policy's (a warm sandbox's live rules after updates). */
  rules?: EgressRulesInput;
  sandboxId?: string;
  onEvent?: (e: EgressEvent) => void;
  ask?: EgressProxyOptions['ask'];
  /** The installation's CA and vault: TLS interception and `network.secrets` need them. */
  services?: EgressServices;
  /** Placeholders to keep (a re-adopted warm sandbox already has them in its environment). */
  placeholders?: Readonly<Record<string, string>>;
}

export class EgressStartError extends Error {
  readonly code = 'EGRESS_START_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EgressStartError';
  }
}

/**
 * Starts a sandbox's proxy. A temporary directory is made 0711: the sandbox's host uid may reach the socket by
 * name but not list or add anything. The socket itself is 0600 and, as root, owned by the sandbox's host uid.
 */
export async function startSandboxEgress(options: SandboxEgressOptions): Promise<SandboxEgress> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), `ironcage-egress-${process.pid}-`));
  const removeDir = () => {
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };
  const { network, services } = options;
  try {
    if (ownDir) chmodSync(dir, 0o711);
    let secrets: SecretSession | undefined;
    if (network.secrets.length > 0) {
      if (!services)
        throw new Error('network.secrets needs the credential vault, and this engine has none configured');
      secrets = services.vault.session(network.secrets, options.placeholders);
    }
    const proxy = await startEgressProxy({
      socketPath: join(dir, EGRESS_SOCKET_NAME),
      rules: options.rules ?? egressRulesOf(network),
      limits: definedLimits(network.limits),
      ...(services
        ? { tls: { ca: services.ca, ...(services.upstreamCa ? { upstreamCa: services.upstreamCa } : {}) } }
        : {}),
      ...(secrets ? { secrets } : {}),
      ...(options.sandboxId === undefined ? {} : { sandboxId: options.sandboxId }),
      ...(options.onEvent === undefined ? {} : { onEvent: options.onEvent }),
      ...(options.ask === undefined ? {} : { ask: options.ask }),
    });
    try {
      if (options.hostId !== null) chownSync(proxy.socketPath, options.hostId.uid, options.hostId.gid);
    } catch (err) {
      await proxy.close();
      throw err;
    }
    return {
      socketPath: proxy.socketPath,
      proxy,
      secretEnv: secrets?.env ?? {},
      ...(services ? { trustBundle: services.trustBundle } : {}),
      close: async () => {
        try {
          await proxy.close();
        } finally {
          removeDir();
        }
      },
    };
  } catch (err) {
    removeDir();
    throw new EgressStartError(`cannot start the egress proxy: ${(err as Error).message}`, { cause: err });
  }
}

/** The policy's proxy budgets, without the fields it leaves to the proxy's defaults. */
function definedLimits(
  limits: Extract<NetworkPolicy, { mode: 'proxy' }>['limits'],
): Partial<EgressProxyLimits> {
  return Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined));
}
