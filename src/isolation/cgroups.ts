/** Entry point of the cgroups module (implementation in ./cgroups/). */
export * from './cgroups/index.js';
