/** The agent's status line (src/agent/agent.c, protocol v1): how the command ended and what it used. */
export type AgentStatus = { utimeUs: number; stimeUs: number; maxRssKb: number } & (
  | { kind: 'exit'; code: number }
  | { kind: 'signal'; signal: number }
  | { kind: 'exec-error'; errno: number }
);

/** Parse the status text; null when the agent never reported (setup failed or the agent was killed). */
export function parseAgentStatus(text: string): AgentStatus | null {
  const line = text.split('\n').find((l) => l.startsWith('{'));
  if (line === undefined) return null;
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (raw.v !== 1) return null;
  const num = (k: string) => (typeof raw[k] === 'number' ? (raw[k] as number) : 0);
  const usage = { utimeUs: num('utime_us'), stimeUs: num('stime_us'), maxRssKb: num('maxrss_kb') };
  if (typeof raw.exec_errno === 'number') return { ...usage, kind: 'exec-error', errno: raw.exec_errno };
  if (typeof raw.signal === 'number') return { ...usage, kind: 'signal', signal: raw.signal };
  if (typeof raw.exit === 'number') return { ...usage, kind: 'exit', code: raw.exit };
  return null;
}
