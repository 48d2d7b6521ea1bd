import { constants } from 'node:os';

const names = new Map<number, string>(Object.entries(constants.signals).map(([name, no]) => [no, name]));

/** Signal number → name (SIGKILL); unknown numbers come back as SIG<n>. */
export function signalName(signal: number): string {
  return names.get(signal) ?? `SIG${signal}`;
}
