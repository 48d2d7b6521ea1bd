import { constants } from 'node:os';
import type { RunResult } from '../sandbox/engine.js';

/** Shell conventions: the command's code, 128+signal, 124 for a timeout (as timeout(1)), 125 for setup. */
export function exitCodeFor(result: RunResult): number {
  if (result.outcome === 'exit' && result.exitCode !== null) return result.exitCode;
  if (result.outcome === 'timeout') return 124;
  if (result.outcome === 'setup-error') return 125;
  const signal = result.signal as keyof typeof constants.signals | null;
  return 128 + (signal !== null ? (constants.signals[signal] ?? 9) : 9);
}
