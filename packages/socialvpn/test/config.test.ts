import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { socialVpnConfigJsonSchema } from '@tincan/protocol';
import { ConfigError } from '@tincan/controller';
import { loadSocialVpnConfig } from '../src/config.js';

const here = dirname(fileURLToPath(import.meta.url));
let dir: string;

const base = {
  xmpp: { host: 'xmpp.example.org', jid: 'alice@example.org', password: 'secret' },
  subnet: '172.31.0.0/16',
};

async function write(name: string, content: unknown): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

/** The error message loading `content` gives (fails the test if it loads). */
async function problem(content: unknown): Promise<string> {
  const file = await write('bad.json', content);
  try {
    await loadSocialVpnConfig(file);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toContain(file);
    return msg;
  }
  throw new Error('the config loaded');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'socialvpn-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('SocialVPN config', () => {
  it('loads a minimal config and fills the defaults', async () => {
    const c = await loadSocialVpnConfig(await write('ok.json', base));
    expect(c).toEqual({
      xmpp: { host: 'xmpp.example.org', port: 5222, jid: 'alice@example.org', password: 'secret', mechanism: 'SCRAM-SHA-1' },
      subnet: '172.31.0.0/16',
      vnic: { name: 'tincan0', mtu: 1280 },
      stun: [],
      turn: [],
      max_links: 32,
      idle_timeout_s: 300,
      social_profile: { proactive_links: 4, min_score: 1.5, half_life_days: 7, active_day_packets: 50 },
      own_devices: true,
      datapath: '127.0.0.1:5801',
      state_dir: '/var/lib/tincan/ok', // the default for a file ok.json: the units' layout
      log_level: 'info',
    });
  });

  it('loads the full example of docs/config.md', async () => {
    const full = {
      $schema: '../docs/socialvpn-config.schema.json',
      xmpp: { host: 'xmpp.example.org', port: 5222, jid: 'alice@example.org', password: 's', ca_file: 'ca.pem', mechanism: 'PLAIN' },
      subnet: '172.31.0.0/16',
      address: '172.31.0.1',
      vnic: { name: 'tincan0', mtu: 1280 },
      stun: ['stun.example.org:3478'],
      turn: [{ address: 'turn.example.org:3478', username: 'u', password: 'p' }],
      max_links: 32,
      idle_timeout_s: 300,
      social_profile: { proactive_links: 4, min_score: 1.5, half_life_days: 7, active_day_packets: 50 },
      own_devices: true,
      datapath: '127.0.0.1:5801',
      state_dir: '/var/lib/tincan/social',
      log_level: 'debug',
    };
    await write('ca.pem', '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const c = await loadSocialVpnConfig(await write('full.json', full));
    expect(c.xmpp.ca_file).toBe(join(dir, 'ca.pem'));
    expect(c.address).toBe('172.31.0.1');
  });

  it('names the file, the key path and what is expected', async () => {
    const { subnet: _, ...noSubnet } = base;
    expect(await problem(noSubnet)).toMatch(/subnet: missing \(expected string\)/);
    expect(await problem({ ...base, subnet: '172.31.0.0' })).toMatch(/subnet: expected an IPv4 subnet with its prefix length, e\.g\. "172\.31\.0\.0\/16"/);
    expect(await problem({ ...base, subnet: '172.31.0.5/16' })).toMatch(
      /subnet: 172\.31\.0\.5\/16 has host bits set: give the subnet as 172\.31\.0\.0\/16 \(and "address": "172\.31\.0\.5"/,
    );
    expect(await problem({ ...base, subnet: '10.0.0.0/31' })).toMatch(/subnet: the prefix length must be 8–30/);
    expect(await problem({ ...base, address: '10.1.1.1' })).toMatch(/address: 10\.1\.1\.1 is not in the subnet 172\.31\.0\.0\/16/);
    expect(await problem({ ...base, address: '172.31.255.255' })).toMatch(/address: 172\.31\.255\.255 is the broadcast address/);
    expect(await problem({ ...base, address: '172.31.0.1/16' })).toMatch(/address: expected an IPv4 address \(no prefix length\)/);
    expect(await problem({ ...base, max_links: '32' })).toMatch(/max_links: expected number, got the string "32"/);
    expect(await problem({ ...base, max_links: 2 })).toMatch(/social_profile\.proactive_links: at most max_links \(2\)/);
    expect(await problem({ ...base, social_profile: { half_life_days: 0 } })).toMatch(/social_profile\.half_life_days: /);
    expect(await problem({ ...base, social_profile: { proactive: 3 } })).toMatch(/social_profile\.proactive: unknown key/);
    expect(await problem({ ...base, turn: [{ address: 'turn', username: 'u', password: 'p' }] })).toMatch(/turn\[0\]\.address: expected host:port/);
    expect(await problem({ ...base, datapath: '10.0.0.1:5801' })).toMatch(/datapath: expected "127\.0\.0\.1:PORT"/);
    expect(await problem({ ...base, xmpp: { host: 'x', jid: 'nobody', password: 'p' } })).toMatch(/xmpp\.jid: expected user@domain/);
    expect(await problem('{ "subnet": ')).toMatch(/not valid JSON/);
    expect(await problem([])).toMatch(/\(top level\): expected object, got an array/);
  });

  it('explains GroupVPN keys that SocialVPN does not take', async () => {
    expect(await problem({ ...base, network_id: 'lab' })).toMatch(/network_id: not a SocialVPN key \(SocialVPN has no network id/);
    expect(await problem({ ...base, vnic: { ip4: '10.254.0.1/16' } })).toMatch(/vnic\.ip4: not a SocialVPN key \(.*"subnet"/);
    expect(await problem({ ...base, link_policy: 'proactive' })).toMatch(/link_policy: not a SocialVPN key/);
    expect(await problem({ ...base, vnic: { nmae: 'x' } })).toMatch(/vnic\.nmae: unknown key/);
  });

  it('reports several problems at once, one per line', async () => {
    const msg = await problem({ xmpp: base.xmpp, subnet: 'x', max_links: 0, vnic: { mtu: 10 } });
    expect(msg.split('\n').length).toBe(5); // the file, then one line per problem
  });

  it('takes the password from password_file, relative to the config file', async () => {
    await writeFile(join(dir, 'pw.txt'), 'from-file\n');
    const { password: _, ...xmpp } = base.xmpp;
    const c = await loadSocialVpnConfig(await write('pwf.json', { ...base, xmpp: { ...xmpp, password_file: 'pw.txt' } }));
    expect(c.xmpp.password).toBe('from-file');
    expect(await problem({ ...base, xmpp: { ...xmpp } })).toMatch(/xmpp\.password: missing: give "password" or "password_file"/);
  });

  it('docs/socialvpn-config.schema.json is current (regenerate: tincan-socialvpn --print-config-schema)', async () => {
    const file = join(here, '../../../docs/socialvpn-config.schema.json');
    const onDisk = JSON.parse(await readFile(file, 'utf8')) as unknown;
    expect(onDisk).toEqual(socialVpnConfigJsonSchema());
  });
});
