export {
  ADMIN_KEY_ENV,
  ADMIN_KEY_FILE,
  type EnsureAdminKeyResult,
  ensureAdminKey,
} from './admin-key.js';
export {
  API_KEY_PATTERN,
  API_KEY_PREFIX,
  authenticate,
  type CreateApiKeyInput,
  type CreatedApiKey,
  createApiKey,
  displayPrefix,
  generateApiKey,
  type HeaderBag,
  hashApiKey,
  PRESENTED_KEY_PATTERN,
  presentedKeyFromHeaders,
} from './api-keys.js';
export { ACTIONS, type Action, type AuthorizedKey, authorize, ownerFilterFor } from './authorize.js';
export {
  AdminKeyError,
  type AdminKeyErrorCode,
  ForbiddenError,
  QuotaExceededError,
  RateLimitError,
  UnauthenticatedError,
} from './errors.js';
export {
  checkSandboxQuota,
  type RateDecision,
  RateLimiter,
  type RateLimiterOptions,
  reserveSandbox,
} from './limits.js';
