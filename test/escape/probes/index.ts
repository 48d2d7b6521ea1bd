/** Every probe of the battery, by category, in the order the battery runs and the document lists them. */
import type { Category, Probe } from '../harness.js';
import { cleanupProbes } from './cleanup.js';
import { filesystemProbes } from './filesystem.js';
import { infoLeakProbes } from './info-leak.js';
import { kernelProbes } from './kernel.js';
import { networkProbes } from './network.js';
import { privilegeProbes } from './privilege.js';
import { resourceProbes } from './resources.js';

export const PROBES_BY_CATEGORY: Readonly<Record<Category, readonly Probe[]>> = {
  filesystem: filesystemProbes,
  privilege: privilegeProbes,
  kernel: kernelProbes,
  'info-leak': infoLeakProbes,
  network: networkProbes,
  resources: resourceProbes,
  cleanup: cleanupProbes,
};

export const ALL_PROBES: readonly Probe[] = Object.values(PROBES_BY_CATEGORY).flat();
