/**
 * The host-side credential store. Values are encrypted at rest with AES-256-GCM under a 32-byte master key
 * that lives outside vault.json (an option, IRONCAGE_VAULT_KEY, or a 0600 vault.key). Bindings stay readable
 * (the CLI lists them without the key) but are authenticated: the AAD of each value covers its name and its
 * binding, so moving a ciphertext to another name, or widening its hosts by editing the file, fails to decrypt.
 *
 * Nothing here ever puts a value in an error message, a log line, or an inspectable field.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { z } from 'zod';
import { DestinationError } from '../egress/destination.js';
import { parseRule, RuleSyntaxError } from '../egress/rules.js';
import { isPlaceholderFor, SecretSession } from './session.js';

export interface SecretBinding {
  /** Egress domain rules (rules.ts syntax): where the real value may be sent. At least one. */
  readonly hosts: readonly string[];
  /** Header names (case-insensitive) the placeholder may be substituted in; absent = any header. */
  readonly headers?: readonly string[];
  /** URL path prefixes (e.g. "/v1/") requests must start with for substitution; absent = any path. */
  readonly paths?: readonly string[];
  /** Also substitute in request bodies (default false: headers and URL only). */
  readonly body?: boolean;
}

/** What may be shown about a secret: everything but the value. */
export interface SecretInfo extends SecretBinding {
  readonly name: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export type VaultErrorCode =
  | 'INVALID_NAME'
  | 'INVALID_VALUE'
  | 'INVALID_BINDING'
  | 'NOT_FOUND'
  | 'KEY_PERMISSIONS'
  | 'CORRUPT'
  | 'WRONG_KEY';

export class VaultError extends Error {
  constructor(
    readonly code: VaultErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'VaultError';
  }
}

export const VAULT_FILE = 'vault.json';
export const KEY_FILE = 'vault.key';
export const KEY_ENV = 'IRONCAGE_VAULT_KEY';
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const MAX_VALUE_BYTES = 16_384;
const FORMAT = 1;
// RFC 9110 token: what a header name may be made of.
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const storedSecretSchema = z
  .object({
    name: z.string().regex(NAME),
    hosts: z.array(z.string()).min(1),
    headers: z.array(z.string()).optional(),
    paths: z.array(z.string()).optional(),
    body: z.boolean().optional(),
    createdAt: z.string(),
    updatedAt: z.string(),
    nonce: z.string(),
    data: z.string(),
  })
  .strict();
type StoredSecret = z.infer<typeof storedSecretSchema>;

const vaultFileSchema = z
  .object({ format: z.literal(FORMAT), keyCheck: z.string(), secrets: z.array(storedSecretSchema) })
  .strict();

const bindingSchema = z
  .object({
    hosts: z.array(z.string()).min(1, 'a secret needs at least one host it may be sent to'),
    headers: z.array(z.string().regex(HEADER_NAME, 'not a valid header name')).optional(),
    paths: z
      .array(
        z
          .string()
          .max(1024)
          .regex(/^\/[\x21-\x7e]*$/, 'a path prefix starts with "/" and has no spaces or control characters')
          .refine((p) => !/(^|\/)\.\.?(\/|$)/.test(p), 'a path prefix may not contain "." or ".." segments'),
      )
      .min(1, 'omit paths to allow any path; an empty list would never allow the secret')
      .optional(),
    body: z.boolean().optional(),
  })
  .strict();

interface Keys {
  readonly encryption: Buffer;
  readonly check: string;
}

interface State {
  readonly secrets: Map<string, StoredSecret>;
  /** Identity of the file this state was read from, to notice writes by another process. */
  readonly stamp: string;
}

export class Vault {
  readonly dir: string;
  #keys: Keys;
  /** Set when the key was generated now and vault.key must be written before the first vault.json. */
  #pendingKeyFile: Buffer | undefined;
  #state: State;

  private constructor(dir: string, keys: Keys, pendingKeyFile: Buffer | undefined) {
    this.dir = dir;
    this.#keys = keys;
    this.#pendingKeyFile = pendingKeyFile;
    this.#state = { secrets: new Map(), stamp: '' };
    this.#state = this.#load();
  }

  /**
   * Opens <dir>/vault.json (created on first write, 0600, written atomically) with a 32-byte key:
   * options.key, else env IRONCAGE_VAULT_KEY (base64 of 32 bytes), else <dir>/vault.key (created 0600 on
   * first use; refused if group/other can read it or another uid owns it).
   */
  static open(dir: string, options: { key?: Buffer } = {}): Vault {
    let master: Buffer;
    let pending: Buffer | undefined;
    if (options.key !== undefined) {
      master = checkKeyLength(options.key, 'the key option');
    } else if (process.env[KEY_ENV] !== undefined && process.env[KEY_ENV] !== '') {
      master = decodeKey(process.env[KEY_ENV] as string, `${KEY_ENV}`);
    } else {
      const found = readKeyFile(join(dir, KEY_FILE));
      if (found !== undefined) master = found;
      else if (exists(join(dir, VAULT_FILE))) {
        throw new VaultError(
          'WRONG_KEY',
          `${join(dir, VAULT_FILE)} exists but there is no key for it: set ${KEY_ENV} or restore ${join(dir, KEY_FILE)}`,
        );
      } else {
        master = randomBytes(32);
        pending = master;
      }
    }
    return new Vault(dir, deriveKeys(master), pending);
  }

  set(name: string, value: string, binding: SecretBinding): SecretInfo {
    checkName(name);
    const bytes = checkValue(value);
    const canonical = checkBinding(binding);
    return this.#mutate((secrets) => {
      const now = new Date().toISOString();
      const previous = secrets.get(name);
      const nonce = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', this.#keys.encryption, nonce);
      cipher.setAAD(aad(name, canonical));
      const data = Buffer.concat([cipher.update(bytes), cipher.final(), cipher.getAuthTag()]);
      bytes.fill(0);
      const stored: StoredSecret = {
        name,
        hosts: [...canonical.hosts],
        ...(canonical.headers === undefined ? {} : { headers: [...canonical.headers] }),
        ...(canonical.paths === undefined ? {} : { paths: [...canonical.paths] }),
        ...(canonical.body === undefined ? {} : { body: canonical.body }),
        createdAt: previous?.createdAt ?? now,
        updatedAt: now,
        nonce: nonce.toString('base64'),
        data: data.toString('base64'),
      };
      secrets.set(name, stored);
      return info(stored);
    });
  }

  list(): SecretInfo[] {
    this.#refresh();
    return [...this.#state.secrets.values()].map(info).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  get(name: string): SecretInfo | undefined {
    this.#refresh();
    const s = this.#state.secrets.get(name);
    return s === undefined ? undefined : info(s);
  }

  delete(name: string): boolean {
    if (!this.#refresh().secrets.has(name)) return false;
    return this.#mutate((secrets) => secrets.delete(name));
  }

  /** Starts a per-sandbox session with fresh placeholders for these secrets (NOT_FOUND if any is missing). */
  /**
   * `placeholders` keeps earlier placeholders (a re-adopted sandbox already holds them); only well-formed ones
   * for these names are taken, the rest are fresh.
   */
  session(names: readonly string[], placeholders?: Readonly<Record<string, string>>): SecretSession {
    const state = this.#refresh();
    const wanted = [...new Set(names)];
    const missing = wanted.filter((n) => !state.secrets.has(n));
    if (missing.length > 0) {
      throw new VaultError(
        'NOT_FOUND',
        `no secret named ${missing.join(', ')} in the vault (known: ${[...state.secrets.keys()].sort().join(', ') || 'none'})`,
      );
    }
    return new SecretSession(
      wanted.map((n) => {
        const s = state.secrets.get(n) as StoredSecret;
        const kept = placeholders?.[n];
        return {
          name: n,
          value: this.#decrypt(s),
          binding: bindingOf(s),
          ...(kept !== undefined && isPlaceholderFor(n, kept) ? { placeholder: kept } : {}),
        };
      }),
    );
  }

  toJSON(): { dir: string; secrets: string[] } {
    return { dir: this.dir, secrets: [...this.#state.secrets.keys()].sort() };
  }

  [inspect.custom](): string {
    return `Vault { dir: ${JSON.stringify(this.dir)}, secrets: ${this.#state.secrets.size} }`;
  }

  #decrypt(s: StoredSecret): Buffer {
    const nonce = Buffer.from(s.nonce, 'base64');
    const data = Buffer.from(s.data, 'base64');
    if (nonce.length !== 12 || data.length < 17) {
      throw new VaultError('CORRUPT', `secret ${s.name} in ${this.#file()} is damaged (bad nonce or length)`);
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#keys.encryption, nonce);
      decipher.setAAD(aad(s.name, bindingOf(s)));
      decipher.setAuthTag(data.subarray(data.length - 16));
      return Buffer.concat([decipher.update(data.subarray(0, data.length - 16)), decipher.final()]);
    } catch {
      throw new VaultError(
        'CORRUPT',
        `secret ${s.name} in ${this.#file()} failed authentication: the file was modified or damaged ` +
          '(its value, name or binding no longer match what was encrypted)',
      );
    }
  }

  #file(): string {
    return join(this.dir, VAULT_FILE);
  }

  /** Re-read vault.json if another process replaced it since we last read it. */
  #refresh(): State {
    if (fileStamp(this.#file()) !== this.#state.stamp) this.#state = this.#load();
    return this.#state;
  }

  #load(): State {
    const file = this.#file();
    let text: string;
    let stamp: string;
    try {
      const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        stamp = stampOf(fstatSync(fd));
        text = readFileSync(fd, 'utf8');
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { secrets: new Map(), stamp: '' };
      throw err;
    }
    let parsed: z.infer<typeof vaultFileSchema>;
    try {
      parsed = vaultFileSchema.parse(JSON.parse(text));
    } catch {
      throw new VaultError('CORRUPT', `${file} is not a valid ironcage vault (damaged or not ours)`);
    }
    if (!sameCheck(parsed.keyCheck, this.#keys.check)) {
      throw new VaultError(
        'WRONG_KEY',
        `${file} was written with a different key than the one given (option, ${KEY_ENV} or ${KEY_FILE})`,
      );
    }
    const secrets = new Map<string, StoredSecret>();
    for (const s of parsed.secrets) {
      if (secrets.has(s.name)) throw new VaultError('CORRUPT', `${file} lists secret ${s.name} twice`);
      secrets.set(s.name, s);
    }
    // Authenticate every entry now, so damage is reported when the vault is opened, not mid-sandbox.
    for (const s of secrets.values()) this.#decrypt(s).fill(0);
    return { secrets, stamp };
  }

  #mutate<T>(change: (secrets: Map<string, StoredSecret>) => T): T {
    const secrets = new Map(this.#refresh().secrets);
    const result = change(secrets);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (this.#pendingKeyFile !== undefined) {
      writeKeyFile(join(this.dir, KEY_FILE), this.#pendingKeyFile);
      this.#pendingKeyFile = undefined;
    }
    const body = {
      format: FORMAT,
      keyCheck: this.#keys.check,
      secrets: [...secrets.values()].sort((a, b) => (a.name < b.name ? -1 : 1)),
    };
    writeAtomically(this.#file(), `${JSON.stringify(body, null, 2)}\n`);
    this.#state = { secrets, stamp: fileStamp(this.#file()) };
    return result;
  }
}

function info(s: StoredSecret): SecretInfo {
  return { name: s.name, ...bindingOf(s), createdAt: s.createdAt, updatedAt: s.updatedAt };
}

function bindingOf(s: StoredSecret): SecretBinding {
  return {
    hosts: [...s.hosts],
    ...(s.headers === undefined ? {} : { headers: [...s.headers] }),
    ...(s.paths === undefined ? {} : { paths: [...s.paths] }),
    ...(s.body === undefined ? {} : { body: s.body }),
  };
}

/** Associated data: the name and the whole binding, in a fixed order. */
function aad(name: string, b: SecretBinding): Buffer {
  return Buffer.from(
    JSON.stringify([
      'ironcage-vault',
      FORMAT,
      name,
      b.hosts,
      b.headers ?? null,
      b.paths ?? null,
      b.body ?? null,
    ]),
  );
}

function checkName(name: string): void {
  if (typeof name !== 'string' || !NAME.test(name)) {
    // The name is not echoed: a swapped (value, name) pair would otherwise print the value.
    throw new VaultError(
      'INVALID_NAME',
      'invalid secret name: use 1-64 letters, digits or _, not starting with a digit (like GITHUB_TOKEN)',
    );
  }
}

/** Returns the UTF-8 bytes. Messages describe the problem by position only, never by content. */
function checkValue(value: string): Buffer {
  if (typeof value !== 'string') throw new VaultError('INVALID_VALUE', 'the secret value must be a string');
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length === 0 || bytes.length > MAX_VALUE_BYTES) {
    throw new VaultError(
      'INVALID_VALUE',
      `the secret value must be 1-${MAX_VALUE_BYTES} bytes of UTF-8; it is ${bytes.length} bytes`,
    );
  }
  if (bytes.toString('utf8') !== value) {
    throw new VaultError('INVALID_VALUE', 'the secret value is not valid Unicode text (lone surrogate)');
  }
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    // It is put into header lines: CR/LF would split the request, NUL and other controls are invalid there.
    if ((b < 0x20 && b !== 0x09) || b === 0x7f) {
      const what =
        b === 0
          ? 'NUL'
          : b === 0x0a
            ? 'a line feed'
            : b === 0x0d
              ? 'a carriage return'
              : 'a control character';
      throw new VaultError(
        'INVALID_VALUE',
        `the secret value contains ${what} at byte ${i}; values are inserted into HTTP headers, where that is not allowed (strip trailing newlines)`,
      );
    }
  }
  return bytes;
}

function checkBinding(binding: SecretBinding): SecretBinding {
  const parsed = bindingSchema.safeParse(binding);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const at = issue === undefined || issue.path.length === 0 ? 'binding' : `binding.${issue.path.join('.')}`;
    throw new VaultError('INVALID_BINDING', `${at}: ${issue?.message ?? 'invalid'}`);
  }
  const hosts: string[] = [];
  for (const h of parsed.data.hosts) {
    let text: string;
    try {
      const rule = parseRule(h);
      if (rule.kind !== 'domain') {
        throw new VaultError(
          'INVALID_BINDING',
          `binding.hosts: ${JSON.stringify(h)} is an IP address or network; secrets are bound to domain names only, ` +
            'because the proxy verifies the upstream TLS certificate against a name, while an address says nothing ' +
            'about who answers there (shared hosting, reassigned IPs). Use the API host name, e.g. "api.example.com"',
        );
      }
      text = rule.text;
    } catch (err) {
      if (err instanceof DestinationError || err instanceof RuleSyntaxError) {
        throw new VaultError('INVALID_BINDING', `binding.hosts: ${err.message}`);
      }
      throw err;
    }
    if (!hosts.includes(text)) hosts.push(text);
  }
  const dedupe = (xs: string[]) => [...new Set(xs)];
  return {
    hosts,
    ...(parsed.data.headers === undefined
      ? {}
      : { headers: dedupe(parsed.data.headers.map((h) => h.toLowerCase())) }),
    ...(parsed.data.paths === undefined ? {} : { paths: dedupe(parsed.data.paths) }),
    ...(parsed.data.body === undefined ? {} : { body: parsed.data.body }),
  };
}

function deriveKeys(master: Buffer): Keys {
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, 32));
  const check = createHmac('sha256', derive('ironcage vault key check')).update('ironcage vault').digest();
  return { encryption: derive('ironcage vault aes-256-gcm'), check: check.toString('base64') };
}

function sameCheck(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function checkKeyLength(key: Buffer, source: string): Buffer {
  if (!Buffer.isBuffer(key) || key.length !== 32) {
    throw new VaultError(
      'WRONG_KEY',
      `${source} must be exactly 32 bytes (got ${Buffer.isBuffer(key) ? key.length : 'no buffer'})`,
    );
  }
  return Buffer.from(key);
}

function decodeKey(text: string, source: string): Buffer {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/]{43}=$/.test(trimmed)) {
    throw new VaultError(
      'WRONG_KEY',
      `${source} must be the base64 of 32 bytes (44 characters ending in "="), e.g. from: openssl rand -base64 32`,
    );
  }
  return Buffer.from(trimmed, 'base64');
}

/** The key file, or undefined if there is none. Refuses one others can read or another user owns. */
function readKeyFile(path: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') {
      throw new VaultError(
        'KEY_PERMISSIONS',
        `${path} is a symbolic link; the key file must be a regular file`,
      );
    }
    throw err;
  }
  try {
    const st = fstatSync(fd);
    const uid = process.getuid?.();
    if (!st.isFile()) throw new VaultError('KEY_PERMISSIONS', `${path} is not a regular file`);
    if (uid !== undefined && st.uid !== uid) {
      throw new VaultError(
        'KEY_PERMISSIONS',
        `${path} is owned by uid ${st.uid}, not by this user (uid ${uid}); run: chown ${uid} ${path} && chmod 600 ${path}`,
      );
    }
    if ((st.mode & 0o077) !== 0) {
      throw new VaultError(
        'KEY_PERMISSIONS',
        `${path} can be accessed by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); run: chmod 600 ${path}`,
      );
    }
    const text = readFileSync(fd, 'utf8');
    try {
      return decodeKey(text, path);
    } catch {
      throw new VaultError('CORRUPT', `${path} does not hold the base64 of a 32-byte key`);
    }
  } finally {
    closeSync(fd);
  }
}

function writeKeyFile(path: string, key: Buffer): void {
  // O_EXCL: if another process created the key meanwhile, we must not overwrite it (its vault would be lost).
  const fd = openSync(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    writeSync(fd, `${key.toString('base64')}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  let open = true;
  try {
    writeSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    open = false;
    renameSync(tmp, path);
  } catch (err) {
    if (open) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // nothing left to clean up
    }
    throw err;
  }
  // The rename is durable only once the directory entry is on disk.
  const dirFd = openSync(join(path, '..'), constants.O_RDONLY);
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

function stampOf(st: { ino: number; size: number; mtimeMs: number; ctimeMs: number }): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

function fileStamp(path: string): string {
  try {
    return stampOf(statSync(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

function exists(path: string): boolean {
  return fileStamp(path) !== '';
}
