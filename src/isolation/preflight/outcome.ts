/** Reading the result of a helper process (bwrap, the agent) the same way in every check. */
import type { ExecOutcome } from './types.js';

export function succeeded(outcome: ExecOutcome | undefined): boolean {
  return outcome !== undefined && outcome.error === undefined && outcome.exitCode === 0;
}

/** `exit 1: bwrap: ...`: the first lines of stderr, which is where bwrap says what went wrong. */
export function describeFailure(outcome: ExecOutcome): string {
  if (outcome.error !== undefined) return outcome.error;
  const how = outcome.signal !== null ? `killed by ${outcome.signal}` : `exit ${outcome.exitCode}`;
  const stderr = outcome.stderr.trim().split('\n').slice(0, 3).join(' | ');
  return stderr === '' ? `${how}, no error output` : `${how}: ${stderr}`;
}

/** bwrap's own messages when it cannot create or map a user namespace. */
export function isUserNamespaceFailure(outcome: ExecOutcome): boolean {
  return /namespace|uid map|gid map|setgroups/i.test(outcome.stderr);
}
