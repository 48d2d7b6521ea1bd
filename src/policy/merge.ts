/**
 * Layering: a preset, then policy files, then command-line flags. Lists add up (scratch mounts are replaced by
 * path), objects merge, scalars are replaced by the later layer. The result is validated once, at the end.
 */
import { type PresetName, presets } from './presets.js';
import { type SandboxPolicy, type SandboxPolicyInput, sandboxPolicySchema } from './schema.js';

export class PolicyError extends Error {
  readonly code = 'POLICY_INVALID';
  constructor(
    message: string,
    readonly issues: readonly string[],
  ) {
    super(message);
    this.name = 'PolicyError';
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function mergeValue(key: string, base: unknown, layer: unknown): unknown {
  if (layer === undefined) return base;
  if (Array.isArray(base) && Array.isArray(layer)) {
    if (key === 'scratch') {
      const byPath = new Map<unknown, unknown>();
      for (const m of [...base, ...layer]) byPath.set(isPlainObject(m) ? m.path : m, m);
      return [...byPath.values()];
    }
    return [...new Set([...base, ...layer].map((v) => JSON.stringify(v)))].map((v) => JSON.parse(v));
  }
  if (isPlainObject(base) && isPlainObject(layer)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(layer)) out[k] = mergeValue(k, base[k], v);
    return out;
  }
  return layer;
}

/** Merge layers (left to right) without validating; see resolvePolicy. */
export function mergePolicyInputs(...layers: SandboxPolicyInput[]): SandboxPolicyInput {
  return layers.reduce<unknown>((acc, layer) => mergeValue('', acc, layer), {}) as SandboxPolicyInput;
}

/** A preset plus layers, validated and fully defaulted. Throws PolicyError naming every bad field. */
export function resolvePolicy(preset: PresetName, ...layers: SandboxPolicyInput[]): SandboxPolicy {
  const merged = mergePolicyInputs(presets[preset] as SandboxPolicyInput, ...layers);
  const parsed = sandboxPolicySchema.safeParse(merged);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(policy)'}: ${i.message}`);
    throw new PolicyError(`invalid sandbox policy:\n  ${issues.join('\n  ')}`, issues);
  }
  return parsed.data;
}

/** Parse a policy file's JSON text into a layer, with errors that name the file. */
export function parsePolicyLayer(text: string, source: string): SandboxPolicyInput {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new PolicyError(`${source}: not valid JSON (${(err as Error).message})`, [(err as Error).message]);
  }
  const parsed = sandboxPolicySchema.partial().safeParse(value);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(policy)'}: ${i.message}`);
    throw new PolicyError(`${source}: invalid sandbox policy:\n  ${issues.join('\n  ')}`, issues);
  }
  return value as SandboxPolicyInput;
}
