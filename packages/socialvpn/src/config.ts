import { SocialVpnConfig } from '@tincan/protocol';
import { ConfigError, loadConfigFile, parseConfigText, resolveXmppCredentials, stateDirOf, type ResolvedXmpp } from '@tincan/controller';

/** A validated SocialVPN config with the XMPP password resolved (read from password_file if given). */
export type SocialVpnSettings = Omit<SocialVpnConfig, 'xmpp' | 'state_dir'> & { xmpp: ResolvedXmpp; state_dir: string };

/** GroupVPN keys people carry over by habit: say what SocialVPN does instead. */
const GROUPVPN_HINTS: Record<string, string> = {
  network_id: 'SocialVPN has no network id: your friends are the mutually subscribed contacts of your XMPP roster',
  'vnic.ip4': 'SocialVPN takes its own address from "subnet" (its first host address) or "address"',
  link_policy: 'SocialVPN\'s policy is the social profile (see "social_profile")',
};

function withHints(err: unknown): unknown {
  if (!(err instanceof ConfigError)) return err;
  const problems = err.problems.map((p) => {
    const m = /^([^:]+): unknown key/.exec(p);
    const hint = m ? GROUPVPN_HINTS[m[1]!] : undefined;
    return hint ? `${m![1]}: not a SocialVPN key (${hint})` : p;
  });
  return new ConfigError(err.file, problems);
}

/** Loads `file`; throws ConfigError naming the file, the key path and what is expected. */
export async function loadSocialVpnConfig(file: string): Promise<SocialVpnSettings> {
  let config: SocialVpnConfig;
  try {
    config = await loadConfigFile(file, SocialVpnConfig);
  } catch (err) {
    throw withHints(err);
  }
  return { ...config, state_dir: stateDirOf(file, config), xmpp: await resolveXmppCredentials(file, config.xmpp) };
}

/** Validates config text (tests, tools); the password file is read as for a file. */
export async function parseSocialVpnConfig(file: string, text: string): Promise<SocialVpnSettings> {
  let config: SocialVpnConfig;
  try {
    config = parseConfigText(file, text, SocialVpnConfig);
  } catch (err) {
    throw withHints(err);
  }
  return { ...config, state_dir: stateDirOf(file, config), xmpp: await resolveXmppCredentials(file, config.xmpp) };
}
