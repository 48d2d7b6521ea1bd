/**
 * Making tools inside a sandbox trust ironcage's egress CA: a CA bundle to mount over the system one, and the
 * environment variables through which common runtimes pick a bundle (several ignore the system store or
 * carry their own, e.g. Node, Python requests/certifi, pip, the AWS SDKs, Deno and Cargo).
 */
import { readFileSync } from 'node:fs';

/** Debian/Ubuntu's bundle, which OpenSSL, curl, git and most Linux tools read by default. */
export const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/** The system bundle (if readable) followed by the ironcage CA, for mounting over the bundle inside a sandbox. */
export function buildTrustBundle(caPem: string, systemBundlePath: string = SYSTEM_CA_BUNDLE): string {
  let system = '';
  try {
    system = readFileSync(systemBundlePath, 'utf8');
  } catch {
    // No readable system bundle (minimal images): the sandbox then trusts only the ironcage CA.
  }
  const separator = system === '' || system.endsWith('\n') ? '' : '\n';
  // Text outside BEGIN/END lines is ignored by OpenSSL, Go, Node and Python bundle readers, so a label is safe.
  return `${system}${separator}# ironcage egress CA\n${caPem.trim()}\n`;
}

/** Environment variables that make common tools trust `bundlePathInSandbox`. */
export function trustEnv(bundlePathInSandbox: string): Record<string, string> {
  return {
    SSL_CERT_FILE: bundlePathInSandbox, // OpenSSL-based tools, Go, Ruby, Python's ssl module
    NODE_EXTRA_CA_CERTS: bundlePathInSandbox, // Node: added to its compiled-in roots
    REQUESTS_CA_BUNDLE: bundlePathInSandbox, // Python requests (otherwise certifi's own bundle)
    CURL_CA_BUNDLE: bundlePathInSandbox,
    GIT_SSL_CAINFO: bundlePathInSandbox,
    PIP_CERT: bundlePathInSandbox,
    AWS_CA_BUNDLE: bundlePathInSandbox,
    DENO_CERT: bundlePathInSandbox,
    CARGO_HTTP_CAINFO: bundlePathInSandbox,
  };
}
