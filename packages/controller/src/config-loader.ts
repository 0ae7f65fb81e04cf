import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { MemberCert, checkConfig, defaultStateDir, type MembershipConfig, type XmppAccount, type XmppConfig, type XmppCredentials } from '@tincan/protocol';

/** A config file that cannot be used; the message names the file, the key and what is expected. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(problems.length === 1 ? `${file}: ${problems[0]}` : `${file}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Anything checkConfig accepts (a zod schema from @tincan/protocol). */
type Schema = Parameters<typeof checkConfig>[0];
type Output<S> = S extends { _zod: { output: infer O } } ? O : never;

/** Reads and validates a JSON config file: every problem reported with the file name and key path. */
export async function loadConfigFile<S extends Schema>(file: string, schema: S): Promise<Output<S>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the file: ${fileProblem(err)}`]);
  }
  return parseConfigText(file, text, schema);
}

/** Why a file could not be read, and what to do about it. */
export function fileProblem(err: unknown): string {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT':
      return 'no such file (check the path; a relative one is relative to the config file)';
    case 'EACCES':
      return 'permission denied (the services run as user tincan: make it root:tincan, mode 0640)';
    case 'EISDIR':
      return 'it is a directory, not a file';
    default:
      return (err as Error).message;
  }
}

/**
 * JSON.parse with a syntax error reported at its line and column (a byte-order mark at the start,
 * as some editors write, is skipped).
 */
export function parseJsonText(file: string, text: string): unknown {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  try {
    return JSON.parse(body);
  } catch (err) {
    const raw = (err as Error).message;
    const pos = /at position (\d+)/.exec(raw);
    const what = raw.replace(/,? ?(?:in JSON )?at position \d+.*$/s, '').replace(/^JSON\.parse: /, '');
    let where = 'at the end';
    if (pos || /end of (?:JSON|data) input/i.test(raw)) {
      const at = pos ? Number(pos[1]) : body.length;
      const before = body.slice(0, at).split('\n');
      where = `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
    }
    throw new ConfigError(file, [
      `${where}: not valid JSON (${what}): check the syntax just before there: a missing comma, quote or bracket, or a comma before } or ]`,
    ]);
  }
}

/** Same as loadConfigFile, from text already read. */
export function parseConfigText<S extends Schema>(file: string, text: string, schema: S): Output<S> {
  const data = parseJsonText(file, text);
  const r = checkConfig(schema, data);
  if (!r.ok) throw new ConfigError(file, r.problems);
  return r.value as Output<S>;
}

/** The config's state_dir, or the default for its file name (/var/lib/tincan/NAME for NAME.json). */
export function stateDirOf(file: string, config: { state_dir?: string | undefined }): string {
  return config.state_dir ?? defaultStateDir(file);
}

/** A path from a config file: relative paths are relative to the file's directory. */
export function configRelative(file: string, path: string): string {
  return isAbsolute(path) ? path : resolve(dirname(file), path);
}

/**
 * A controller's XMPP account: the credentials with the password, and where it came from when it was
 * read from a file (`password_file`, absolute): then register_svc names the file instead of sending
 * the password (registerAccount).
 */
export type ResolvedXmpp = XmppCredentials & { password_file?: string };

/**
 * The XMPP credentials for register_svc: reads `password_file` (its first line; it must be readable
 * here too, so that a bad path fails at start) and resolves it and `ca_file` against the config
 * file's directory. `keyPath` names the section in error messages.
 */
export async function resolveXmppCredentials(file: string, x: XmppConfig, keyPath = 'xmpp'): Promise<ResolvedXmpp> {
  const { password_file, password, ...rest } = x;
  let pw = password;
  let path: string | undefined;
  if (password_file !== undefined) {
    path = configRelative(file, password_file);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new ConfigError(file, [`${keyPath}.password_file: cannot read ${path}: ${fileProblem(err)}`]);
    }
    pw = text.replace(/^\uFEFF/, '').split(/\r?\n/, 1)[0] ?? '';
    if (!pw) throw new ConfigError(file, [`${keyPath}.password_file: ${path} is empty (expected the password on its first line)`]);
  }
  if (rest.ca_file !== undefined) {
    // The datapath reads it when it logs in, long after a --check-config: check it now.
    const path = configRelative(file, rest.ca_file);
    let pem: string;
    try {
      pem = await readFile(path, 'utf8');
    } catch (err) {
      throw new ConfigError(file, [
        `${keyPath}.ca_file: cannot read ${path}: ${fileProblem(err)}; or leave ca_file out to trust the system's CAs`,
      ]);
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new ConfigError(file, [`${keyPath}.ca_file: ${path} holds no PEM certificate (expected "-----BEGIN CERTIFICATE-----")`]);
    }
  }
  return {
    ...rest,
    password: pw!,
    ...(path !== undefined ? { password_file: path } : {}),
    ...(rest.ca_file !== undefined ? { ca_file: configRelative(file, rest.ca_file) } : {}),
  };
}

/**
 * What register_svc carries: the password file's path when the password came from one (the datapath
 * reads it itself: the password does not travel), else the password; `withPassword` forces the
 * password (a datapath that cannot read the file, e.g. running as another user).
 */
export function xmppAccountFor(x: ResolvedXmpp, withPassword = false): XmppAccount {
  const { password_file, password, ...rest } = x;
  return password_file !== undefined && !withPassword ? { ...rest, password_file } : { ...rest, password };
}

/**
 * This node's membership certificate (membership.cert_file, relative to the config file), or null
 * without a membership CA. An unreadable file or one that holds no certificate is a ConfigError.
 */
export async function resolveMemberCert(file: string, m: MembershipConfig | undefined): Promise<string | null> {
  if (m === undefined) return null;
  const path = configRelative(file, m.cert_file);
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (err) {
    throw new ConfigError(file, [`membership.cert_file: cannot read ${path}: ${(err as Error).message}`]);
  }
  if (!MemberCert.safeParse(text).success) {
    throw new ConfigError(file, [`membership.cert_file: ${path} holds no membership certificate (tincanctl ca sign writes one)`]);
  }
  return text;
}
