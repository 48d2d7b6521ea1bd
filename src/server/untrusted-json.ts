/**
 * JSON that came from outside (request bodies, Connect messages, a sandbox's driver output). The keys
 * `__proto__` and `constructor` are refused with a SyntaxError, like any malformed input, rather than dropped:
 * nothing parsed here can carry them into an object spread or merge later.
 */
export function parseUntrustedJson(text: string): unknown {
  return JSON.parse(text, (key, value) => {
    if (key === '__proto__' || key === 'constructor') throw new SyntaxError(`forbidden key ${key}`);
    return value;
  });
}
