import { GroupVpnConfig } from '@tincan/protocol';
import { loadConfigFile, parseConfigText, resolveMemberCert, resolveXmppCredentials, stateDirOf, type ResolvedXmpp } from '@tincan/controller';

/**
 * A validated GroupVPN config with the XMPP password resolved (read from password_file if given), the
 * state directory defaulted (after the config file's name) and, with a membership CA, this node's
 * membership certificate read from membership.cert_file.
 */
export type GroupVpnSettings = Omit<GroupVpnConfig, 'xmpp' | 'state_dir'> & { xmpp: ResolvedXmpp; state_dir: string; member_cert?: string | null };

/** Loads `file`; throws ConfigError naming the file, the key path and what is expected. */
export async function loadGroupVpnConfig(file: string): Promise<GroupVpnSettings> {
  const config = await loadConfigFile(file, GroupVpnConfig);
  return { ...config, state_dir: stateDirOf(file, config), xmpp: await resolveXmppCredentials(file, config.xmpp), member_cert: await resolveMemberCert(file, config.membership) };
}

/** Validates config text (tests, --check-config on stdin); the password file is read as for a file. */
export async function parseGroupVpnConfig(file: string, text: string): Promise<GroupVpnSettings> {
  const config = parseConfigText(file, text, GroupVpnConfig);
  return { ...config, state_dir: stateDirOf(file, config), xmpp: await resolveXmppCredentials(file, config.xmpp), member_cert: await resolveMemberCert(file, config.membership) };
}
