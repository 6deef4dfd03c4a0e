import { webcrypto } from 'node:crypto';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Length of the key-encryption key: AES-256. */
export const KEK_LENGTH_BYTES = 32;
/** The environment variable that may carry the key-encryption key (base64 of 32 bytes). */
export const KEK_ENV_VAR = 'SIGIL_KEK';
/** File name of the generated key-encryption key inside the data dir. */
export const KEK_FILE_NAME = 'kek.key';

const FORMAT_VERSION = 1;
const IV_LENGTH_BYTES = 12;
const TAG_LENGTH_BITS = 128;
const HEADER_LENGTH_BYTES = 1 + IV_LENGTH_BYTES;
const MIN_SEALED_LENGTH_BYTES = HEADER_LENGTH_BYTES + TAG_LENGTH_BITS / 8;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Where the key-encryption key came from; logged instead of the key itself. */
export type KekSource = { kind: 'env'; name: string } | { kind: 'file'; path: string; generated: boolean };

export interface LoadKekOptions {
  /** The key from the environment (`SIGIL_KEK`, base64 of 32 bytes), as `ServerConfig.kek` carries it. */
  kekBase64?: string | undefined;
  /** The server's data dir; the default key file lives at `<dataDir>/kek.key`. */
  dataDir: string;
  /** A configured key file that replaces the default path. */
  kekFile?: string | undefined;
}

/**
 * The key-encryption key (KEK) that seals the CA private keys stored in the database: AES-256-GCM through
 * WebCrypto, a fresh 12-byte random IV per encryption, and additional authenticated data naming the row a
 * ciphertext belongs to, so a sealed key copied into another row fails to open.
 *
 * Sealed layout: `version (1 byte) || iv (12 bytes) || ciphertext || tag (16 bytes)`.
 */
export class KeyEncryptionKey {
  private constructor(
    private readonly key: webcrypto.CryptoKey,
    readonly source: KekSource,
  ) {}

  /** Imports 32 raw key bytes; the CryptoKey is non-extractable. */
  static async fromBytes(raw: Uint8Array, source: KekSource): Promise<KeyEncryptionKey> {
    if (raw.byteLength !== KEK_LENGTH_BYTES) {
      throw new Error(`kek: must be ${KEK_LENGTH_BYTES} bytes, got ${raw.byteLength}`);
    }
    const key = await webcrypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
    return new KeyEncryptionKey(key, source);
  }

  /**
   * Loads the KEK from `SIGIL_KEK` when set, otherwise from the key file (the configured one, else
   * `<dataDir>/kek.key`), generating the default file with mode 0600 at first start. An existing file that group
   * or others can access, or that does not hold 32 base64-encoded bytes, stops the start with a message saying so.
   */
  static async load(options: LoadKekOptions): Promise<KeyEncryptionKey> {
    if (options.kekBase64 !== undefined && options.kekBase64.trim() !== '') {
      const raw = decodeKeyText(options.kekBase64, KEK_ENV_VAR);
      return KeyEncryptionKey.fromBytes(raw, { kind: 'env', name: KEK_ENV_VAR });
    }
    if (options.kekFile !== undefined) {
      const raw = await readKeyFile(options.kekFile);
      return KeyEncryptionKey.fromBytes(raw, { kind: 'file', path: options.kekFile, generated: false });
    }
    const path = join(options.dataDir, KEK_FILE_NAME);
    const generated = await generateKeyFileIfAbsent(options.dataDir, path);
    const raw = await readKeyFile(path);
    return KeyEncryptionKey.fromBytes(raw, { kind: 'file', path, generated });
  }

  /** Encrypts `plaintext`, binding it to `associatedData` (for a CA key: its id and kind). */
  async encrypt(plaintext: Uint8Array, associatedData: string): Promise<Buffer> {
    const iv = webcrypto.getRandomValues(new Uint8Array(IV_LENGTH_BYTES));
    const sealed = await webcrypto.subtle.encrypt(
      { name: 'AES-GCM', iv, additionalData: Buffer.from(associatedData, 'utf8'), tagLength: TAG_LENGTH_BITS },
      this.key,
      plaintext,
    );
    return Buffer.concat([Buffer.from([FORMAT_VERSION]), iv, Buffer.from(sealed)]);
  }

  /**
   * Decrypts what {@link encrypt} produced with the same `associatedData`. Fails when the KEK differs, the data
   * was altered, or the ciphertext belongs to another row.
   */
  async decrypt(sealed: Uint8Array, associatedData: string): Promise<Buffer> {
    if (sealed.byteLength < MIN_SEALED_LENGTH_BYTES) {
      throw new Error(`kek: sealed data must be at least ${MIN_SEALED_LENGTH_BYTES} bytes, got ${sealed.byteLength}`);
    }
    if (sealed[0] !== FORMAT_VERSION) {
      throw new Error(`kek: unsupported sealed data version ${sealed[0]}`);
    }
    const iv = sealed.subarray(1, HEADER_LENGTH_BYTES);
    try {
      const plaintext = await webcrypto.subtle.decrypt(
        { name: 'AES-GCM', iv, additionalData: Buffer.from(associatedData, 'utf8'), tagLength: TAG_LENGTH_BITS },
        this.key,
        sealed.subarray(HEADER_LENGTH_BYTES),
      );
      return Buffer.from(plaintext);
    } catch (error) {
      throw new Error(
        `kek: cannot decrypt data bound to '${associatedData}' (wrong key-encryption key, altered data or data of another row)`,
        { cause: error },
      );
    }
  }

  /** Describes the key's origin, never its material. */
  toJSON(): KekSource {
    return this.source;
  }
}

function decodeKeyText(text: string, where: string): Uint8Array {
  const trimmed = text.trim();
  if (!BASE64.test(trimmed)) {
    throw new Error(`${where}: must be ${KEK_LENGTH_BYTES} bytes encoded in base64, found non-base64 characters`);
  }
  const raw = Buffer.from(trimmed, 'base64');
  if (raw.byteLength !== KEK_LENGTH_BYTES) {
    throw new Error(`${where}: must be ${KEK_LENGTH_BYTES} bytes encoded in base64, got ${raw.byteLength} bytes`);
  }
  return raw;
}

async function readKeyFile(path: string): Promise<Uint8Array> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new Error(`kek file ${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: error,
    });
  }
  if (!info.isFile()) {
    throw new Error(`kek file ${path}: must be a regular file`);
  }
  const mode = info.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new Error(
      `kek file ${path}: must not be accessible by group or others (mode ${mode.toString(8).padStart(4, '0')}); ` +
        `run chmod 600 ${path}`,
    );
  }
  return decodeKeyText(await readFile(path, 'utf8'), `kek file ${path}`);
}

/** Creates the key file exclusively (0600), so two replicas sharing a data dir never overwrite each other's key. */
async function generateKeyFileIfAbsent(dataDir: string, path: string): Promise<boolean> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  let handle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new Error(`kek file ${path}: cannot be created (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: error,
    });
  }
  try {
    const raw = webcrypto.getRandomValues(new Uint8Array(KEK_LENGTH_BYTES));
    await handle.writeFile(`${Buffer.from(raw).toString('base64')}\n`, 'utf8');
  } finally {
    await handle.close();
  }
  return true;
}
