#!/usr/bin/env node
/**
 * Generates src/isolation/seccomp/tables/{x86_64,aarch64}.ts (syscall name → number) from the host's Linux
 * UAPI headers, plus a hand-kept list of syscalls added after those headers were published.
 *
 *   node scripts/gen-syscall-tables.mjs [--include-dir /usr/include] [--check]
 *
 * --check regenerates in memory and exits 1 when a committed table differs (for CI).
 *
 * x86_64 numbers come from asm/unistd_64.h (one plain `#define __NR_x N` per call). aarch64 has no table of
 * its own: it includes asm-generic/unistd.h after defining a few __ARCH_WANT_* switches, so this script
 * evaluates that header's #if/#ifdef blocks itself (a tiny preprocessor for exactly the constructs the header
 * uses; anything else is a hard error rather than a silent guess).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, '..', 'src', 'isolation', 'seccomp', 'tables');

const args = process.argv.slice(2);
const includeDir = args.includes('--include-dir') ? args[args.indexOf('--include-dir') + 1] : '/usr/include';
const checkOnly = args.includes('--check');

const X86_64_HEADER = join(includeDir, 'x86_64-linux-gnu/asm/unistd_64.h');
const GENERIC_HEADER = join(includeDir, 'asm-generic/unistd.h');

/**
 * What arch/arm64/include/uapi/asm/unistd.h defines before including asm-generic/unistd.h (Linux 6.1).
 * __ARCH_WANT_SYNC_FILE_RANGE2 is deliberately absent: arm64 uses the plain sync_file_range argument order.
 */
const ARM64_DEFINES = {
  __BITS_PER_LONG: 64,
  __ARCH_WANT_RENAMEAT: 1,
  __ARCH_WANT_NEW_STAT: 1,
  __ARCH_WANT_SET_GET_RLIMIT: 1,
  __ARCH_WANT_TIME32_SYSCALLS: 1,
  __ARCH_WANT_SYS_CLONE3: 1,
  __ARCH_WANT_MEMFD_SECRET: 1,
};

/**
 * Syscalls newer than the 6.1 UAPI headers Debian 12 ships. Since 5.1 (pidfd_send_signal = 424) every new
 * syscall gets the same number on all architectures, so one list serves x86_64 and aarch64.
 * Keep this in step with new kernel releases; a number here must never change.
 */
const SHARED_SINCE_6_1 = [
  ['cachestat', 451, '6.5'],
  ['fchmodat2', 452, '6.6'],
  ['map_shadow_stack', 453, '6.6'],
  ['futex_wake', 454, '6.7'],
  ['futex_wait', 455, '6.7'],
  ['futex_requeue', 456, '6.7'],
  ['statmount', 457, '6.8'],
  ['listmount', 458, '6.8'],
  ['lsm_get_self_attr', 459, '6.8'],
  ['lsm_set_self_attr', 460, '6.8'],
  ['lsm_list_modules', 461, '6.8'],
  ['mseal', 462, '6.10'],
  ['setxattrat', 463, '6.13'],
  ['getxattrat', 464, '6.13'],
  ['listxattrat', 465, '6.13'],
  ['removexattrat', 466, '6.13'],
  ['open_tree_attr', 467, '6.15'],
  ['file_getattr', 468, '6.17'],
  ['file_setattr', 469, '6.17'],
  ['listns', 470, '6.19'],
];

/** x86_64-only additions below 424 (uprobe trampolines; the kernel lets them bypass seccomp since 6.12). */
const X86_64_SINCE_6_1 = [
  ['uretprobe', 335, '6.11'],
  ['uprobe', 336, '6.16'],
];

function fail(message) {
  console.error(`gen-syscall-tables: ${message}`);
  process.exit(2);
}

function readHeader(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    fail(`cannot read ${path} (${err.code}); install the Linux UAPI headers (Debian: linux-libc-dev)`);
  }
}

/** Strips C comments (block and line) so directives can be matched line by line. */
function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

function parseX86_64(text) {
  const table = new Map();
  for (const line of stripComments(text).split('\n')) {
    const m = /^#define\s+__NR_(\w+)\s+(\d+)\s*$/.exec(line.trim());
    if (m) table.set(m[1], Number(m[2]));
  }
  return table;
}

/**
 * Evaluates the subset of C preprocessor conditions asm-generic/unistd.h uses:
 * defined(X), X == N, X != N, ||, &&, !, parentheses.
 */
function evalCondition(expr, macros) {
  const tokens = expr.match(/defined\s*\(\s*\w+\s*\)|defined\s+\w+|\|\||&&|==|!=|!|\(|\)|\w+/g) ?? [];
  let pos = 0;
  const peek = () => tokens[pos];
  const next = () => tokens[pos++];
  const value = (name) => {
    if (!(name in macros)) return 0;
    const v = macros[name];
    return typeof v === 'number' ? v : Number.NaN;
  };
  function primary() {
    const t = next();
    if (t === undefined) fail(`truncated #if expression: ${expr}`);
    if (t === '!') return primary() ? 0 : 1;
    if (t === '(') {
      const v = or();
      if (next() !== ')') fail(`unbalanced parentheses in: ${expr}`);
      return v;
    }
    const def = /^defined\s*\(?\s*(\w+)\s*\)?$/.exec(t);
    if (def) return def[1] in macros ? 1 : 0;
    if (/^\d+$/.test(t)) return Number(t);
    if (/^\w+$/.test(t)) {
      const v = value(t);
      if (Number.isNaN(v)) fail(`macro ${t} has no numeric value in: ${expr}`);
      return v;
    }
    fail(`unsupported token '${t}' in: ${expr}`);
  }
  function comparison() {
    let left = primary();
    while (peek() === '==' || peek() === '!=') {
      const op = next();
      const right = primary();
      left = op === '==' ? Number(left === right) : Number(left !== right);
    }
    return left;
  }
  function and() {
    let v = comparison();
    while (peek() === '&&') {
      next();
      const r = comparison();
      v = v && r ? 1 : 0;
    }
    return v;
  }
  function or() {
    let v = and();
    while (peek() === '||') {
      next();
      const r = and();
      v = v || r ? 1 : 0;
    }
    return v;
  }
  const result = or();
  if (pos !== tokens.length) fail(`trailing tokens in #if expression: ${expr}`);
  return result !== 0;
}

function parseGeneric(text, defines) {
  const macros = { ...defines };
  const stack = []; // each: { active, taken } for the enclosing #if chain
  const active = () => stack.every((s) => s.active);
  for (const raw of stripComments(text).split('\n')) {
    const line = raw.trim();
    if (!line.startsWith('#')) continue;
    const m = /^#\s*(\w+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const [, directive, rest] = m;
    switch (directive) {
      case 'if':
      case 'ifdef':
      case 'ifndef': {
        const parentActive = active();
        let cond = false;
        if (parentActive) {
          if (directive === 'if') cond = evalCondition(rest, macros);
          else if (directive === 'ifdef') cond = rest.trim() in macros;
          else cond = !(rest.trim() in macros);
        }
        stack.push({ active: cond, taken: cond, parentActive });
        break;
      }
      case 'else': {
        const top = stack.at(-1) ?? fail('#else without #if');
        top.active = top.parentActive && !top.taken;
        top.taken = true;
        break;
      }
      case 'elif':
        fail('#elif is not expected in asm-generic/unistd.h; extend the evaluator');
        break;
      case 'endif':
        if (stack.pop() === undefined) fail('#endif without #if');
        break;
      case 'define': {
        if (!active()) break;
        const d = /^(\w+)(\([^)]*\))?\s*(.*)$/.exec(rest);
        if (!d || d[2]) break; // function-like macros (__SYSCALL, __SC_3264, ...) carry no numbers
        const [, name, , body] = d;
        const trimmed = body.trim();
        if (/^\d+$/.test(trimmed)) macros[name] = Number(trimmed);
        else if (/^\w+$/.test(trimmed) && typeof macros[trimmed] === 'number') macros[name] = macros[trimmed];
        else macros[name] = trimmed;
        break;
      }
      case 'undef':
        if (active()) delete macros[rest.trim()];
        break;
      case 'include':
        break; // only asm/bitsperlong.h, whose one fact (__BITS_PER_LONG) is in the defines
      default:
        fail(`unexpected directive #${directive}`);
    }
  }
  if (stack.length !== 0) fail('unterminated #if block');
  const table = new Map();
  for (const [name, value] of Object.entries(macros)) {
    if (!name.startsWith('__NR_') || typeof value !== 'number') continue;
    const sys = name.slice('__NR_'.length);
    // Markers, not syscalls: the table size and the start of the arch-private range.
    if (sys === 'syscalls' || sys === 'arch_specific_syscall') continue;
    table.set(sys, value);
  }
  return table;
}

function addLater(table, entries, archName) {
  for (const [name, nr] of entries) {
    const existing = table.get(name);
    if (existing !== undefined && existing !== nr)
      fail(`${archName}: ${name} is ${existing} in headers but ${nr} here`);
    for (const [other, n] of table) {
      if (n === nr && other !== name) fail(`${archName}: number ${nr} is both ${other} and ${name}`);
    }
    table.set(name, nr);
  }
}

function render(table, { constName, arch, sources }) {
  const entries = [...table].sort((a, b) => a[1] - b[1]);
  const numbers = new Set();
  for (const [name, nr] of entries) {
    if (numbers.has(nr)) fail(`${arch}: duplicate number ${nr} (${name})`);
    numbers.add(nr);
  }
  const body = entries.map(([name, nr]) => `  ${name}: ${nr},`).join('\n');
  const sourceLines = sources.map((s) => ` *  - ${s}`).join('\n');
  return `/**
 * Linux ${arch} syscall numbers (name → number). GENERATED by scripts/gen-syscall-tables.mjs; do not edit.
 * Sources:
${sourceLines}
 */
export const ${constName}: Readonly<Record<string, number>> = Object.freeze({
${body}
});
`;
}

const x86 = parseX86_64(readHeader(X86_64_HEADER));
if (x86.size < 300) fail(`${X86_64_HEADER} yielded only ${x86.size} syscalls`);
addLater(x86, [...X86_64_SINCE_6_1, ...SHARED_SINCE_6_1], 'x86_64');

const arm = parseGeneric(readHeader(GENERIC_HEADER), ARM64_DEFINES);
if (arm.size < 250) fail(`${GENERIC_HEADER} yielded only ${arm.size} syscalls`);
addLater(arm, SHARED_SINCE_6_1, 'aarch64');

const describe = (list) => list.map(([n, nr, v]) => `${n}=${nr} (Linux ${v})`);
const laterLines = [
  'syscalls newer than those headers, hand-kept in scripts/gen-syscall-tables.mjs:',
  ...describe(SHARED_SINCE_6_1).map((d) => `  ${d}`),
];
const outputs = [
  [
    'x86_64.ts',
    render(x86, {
      constName: 'X86_64_SYSCALLS',
      arch: 'x86_64',
      sources: [
        `${X86_64_HEADER} (linux-libc-dev)`,
        `x86_64-only additions: ${describe(X86_64_SINCE_6_1).join(', ')}`,
        ...laterLines,
      ],
    }),
  ],
  [
    'aarch64.ts',
    render(arm, {
      constName: 'AARCH64_SYSCALLS',
      arch: 'aarch64',
      sources: [
        `${GENERIC_HEADER} (linux-libc-dev), evaluated with the arm64 switches`,
        `  ${Object.keys(ARM64_DEFINES).join(', ')}`,
        ...laterLines,
      ],
    }),
  ],
];

let stale = false;
for (const [file, text] of outputs) {
  const path = join(outDir, file);
  if (checkOnly) {
    let current = '';
    try {
      current = readFileSync(path, 'utf8');
    } catch {}
    if (current !== text) {
      console.error(`${path} is out of date; run node scripts/gen-syscall-tables.mjs`);
      stale = true;
    }
  } else {
    writeFileSync(path, text);
    console.log(`wrote ${path}`);
  }
}
if (stale) process.exit(1);
