/** The credential vault: encrypted secrets on the host, placeholders in the sandbox, substitution at egress. */
export { ExfiltrationError, type RequestCheck, SecretSession, type SessionSecret } from './session.js';
export {
  InvalidNeedleError,
  type MatchCallback,
  MultiReplacer,
  replaceAll,
  StreamReplacer,
} from './stream-replace.js';
export {
  KEY_ENV,
  KEY_FILE,
  type SecretBinding,
  type SecretInfo,
  VAULT_FILE,
  Vault,
  VaultError,
  type VaultErrorCode,
} from './vault.js';
