import { readFile } from 'node:fs/promises';
import type { XmppAccount, XmppCredentials } from '@tincan/protocol';
import { RpcError } from './rpc-server.js';

/**
 * register_svc's account with its password: given, or read from `password_file` (its first line) by
 * the datapath itself, so that the password need not travel over the RPC.
 */
export async function resolveXmppAccount(account: XmppAccount): Promise<XmppCredentials> {
  const { password_file, password, ...rest } = account;
  if (password !== undefined) return { ...rest, password };
  let text: string;
  try {
    text = await readFile(password_file!, 'utf8');
  } catch (err) {
    throw new RpcError('bad_request', `xmpp.password_file: cannot read ${password_file}: ${(err as Error).message}`);
  }
  const first = text.split(/\r?\n/, 1)[0] ?? '';
  if (!first) throw new RpcError('bad_request', `xmpp.password_file: ${password_file} is empty (expected the password on its first line)`);
  if (first.length > 1024) throw new RpcError('bad_request', `xmpp.password_file: the password in ${password_file} is longer than 1024 characters`);
  return { ...rest, password: first };
}
