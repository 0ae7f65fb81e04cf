import { randomBytes } from 'node:crypto';
import { constants, readFileSync, unlinkSync } from 'node:fs';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * The RPC token file: written fresh at every start, readable by the datapath's own user only, removed
 * at exit. The state directory is made 0700 (again, at every start) and must be a directory of ours,
 * not a symbolic link; the token goes to a new temp file (O_EXCL, O_NOFOLLOW: an existing file or
 * link there is never followed) that is renamed over the token file (a rename replaces a link at the
 * target instead of following it).
 */
export async function writeTokenFile(file: string, tokenHex: string): Promise<void> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const d = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW).catch(async (err: NodeJS.ErrnoException) => {
    const link = await lstat(dir).then((st) => st.isSymbolicLink(), () => false);
    throw new Error(link ? `the state directory ${dir} is a symbolic link: give its real path` : `cannot open the state directory ${dir}: ${err.message}`);
  });
  try {
    const st = await d.stat();
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid) {
      throw new Error(`the state directory ${dir} belongs to uid ${st.uid}, not to this process (uid ${uid})`);
    }
    if ((st.mode & 0o777) !== 0o700) await d.chmod(0o700);
  } finally {
    await d.close();
  }
  const tmp = `${file}.${randomBytes(8).toString('hex')}.tmp`;
  const f = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    try {
      await f.chmod(0o600); // whatever the umask
      await f.writeFile(`${tokenHex}\n`);
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Removes the token file if it still holds this token (synchronous: also from an exit handler). */
export function removeTokenFile(file: string, tokenHex: string): void {
  try {
    if (readFileSync(file, 'utf8').trim() === tokenHex) unlinkSync(file);
  } catch {
    // gone already, or not ours to remove
  }
}
