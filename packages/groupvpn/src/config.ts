import { GroupVpnConfig, type XmppCredentials } from '@tincan/protocol';
import { loadConfigFile, parseConfigText, resolveXmppCredentials, stateDirOf } from '@tincan/controller';

/** A validated GroupVPN config with the XMPP password resolved (read from password_file if given). */
export type GroupVpnSettings = Omit<GroupVpnConfig, 'xmpp' | 'state_dir'> & { xmpp: XmppCredentials; state_dir: string };

/** Loads `file`; throws ConfigError naming the file, the key path and what is expected. */
export async function loadGroupVpnConfig(file: string): Promise<GroupVpnSettings> {
  const config = await loadConfigFile(file, GroupVpnConfig);
  return { ...config, state_dir: stateDirOf(file, config), xmpp: await resolveXmppCredentials(file, config.xmpp) };
}

/** Validates config text (tests, --check-config on stdin); the password file is read as for a file. */
export async function parseGroupVpnConfig(file: string, text: string): Promise<GroupVpnSettings> {
  const config = parseConfigText(file, text, GroupVpnConfig);
  return { ...config, state_dir: stateDirOf(file, config), xmpp: await resolveXmppCredentials(file, config.xmpp) };
}
