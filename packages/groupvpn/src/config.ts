import { GroupVpnConfig } from '@tincan/protocol';
import { loadConfigFile, parseConfigText, resolveXmppCredentials, type ResolvedXmpp } from '@tincan/controller';

/** A validated GroupVPN config with the XMPP password resolved (read from password_file if given). */
export type GroupVpnSettings = Omit<GroupVpnConfig, 'xmpp'> & { xmpp: ResolvedXmpp };

/** Loads `file`; throws ConfigError naming the file, the key path and what is expected. */
export async function loadGroupVpnConfig(file: string): Promise<GroupVpnSettings> {
  const config = await loadConfigFile(file, GroupVpnConfig);
  return { ...config, xmpp: await resolveXmppCredentials(file, config.xmpp) };
}

/** Validates config text (tests, --check-config on stdin); the password file is read as for a file. */
export async function parseGroupVpnConfig(file: string, text: string): Promise<GroupVpnSettings> {
  const config = parseConfigText(file, text, GroupVpnConfig);
  return { ...config, xmpp: await resolveXmppCredentials(file, config.xmpp) };
}
