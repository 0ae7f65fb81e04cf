import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupVpnConfigJsonSchema } from '@tincan/protocol';
import { ConfigError, xmppAccountFor } from '@tincan/controller';
import { loadGroupVpnConfig } from '../src/config.js';

const here = dirname(fileURLToPath(import.meta.url));
let dir: string;

const base = {
  network_id: 'lab',
  xmpp: { host: 'xmpp.lab', jid: 'node1@vpn.test', password: 'secret' },
  vnic: { ip4: '10.254.0.1/16' },
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
    await loadGroupVpnConfig(file);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toContain(file);
    return msg;
  }
  throw new Error('the config loaded');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'groupvpn-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('GroupVPN config', () => {
  it('loads a minimal config and fills the defaults', async () => {
    const c = await loadGroupVpnConfig(await write('ok.json', base));
    expect(c).toEqual({
      network_id: 'lab',
      xmpp: { host: 'xmpp.lab', port: 5222, jid: 'node1@vpn.test', password: 'secret', mechanism: 'SCRAM-SHA-1' },
      vnic: { name: 'tincan0', ip4: '10.254.0.1/16', mtu: 1280 },
      stun: [],
      turn: [],
      link_policy: 'on-demand',
      max_links: 32,
      idle_timeout_s: 300,
      datapath: '127.0.0.1:5801',
      state_dir: '/var/lib/tincan/ok', // the default for a file ok.json: the units' layout
      log_level: 'info',
      routing: {
        multihop: true, topology: 'mesh', shortcut_pps: 50, deny: [], advertise: [], routers: {},
        accept: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
        allow_unauthenticated: false, max_routes_per_neighbour: 1024, max_routes: 32_768,
      },
      member_cert: null,
    });
  });

  it('checks members and membership: JIDs, domains, the CA key, and reads the certificate file', async () => {
    const caKey = `ed25519:${'A'.repeat(43)}`;
    await expect(loadGroupVpnConfig(await write('m1.json', { ...base, members: { jids: ['not a jid'] } })))
      .rejects.toThrow(/members\.jids\[0\]: expected a bare JID/);
    await expect(loadGroupVpnConfig(await write('m2.json', { ...base, members: { domains: ['a@b'] } })))
      .rejects.toThrow(/members\.domains\[0\]/);
    await expect(loadGroupVpnConfig(await write('m3.json', { ...base, membership: { ca_key: 'ed25519:short', cert_file: 'x' } })))
      .rejects.toThrow(/membership\.ca_key/);
    await expect(loadGroupVpnConfig(await write('m4.json', { ...base, membership: { ca_key: caKey, cert_file: 'missing.cert' } })))
      .rejects.toThrow(/membership\.cert_file: cannot read .*missing\.cert/);
    await write('garbage.cert', 'hello');
    await expect(loadGroupVpnConfig(await write('m5.json', { ...base, membership: { ca_key: caKey, cert_file: 'garbage.cert' } })))
      .rejects.toThrow(/holds no membership certificate/);
    const cert = `tcm1.${'e'.repeat(40)}.${'s'.repeat(86)}`;
    await write('node.cert', `${cert}\n`);
    const c = await loadGroupVpnConfig(await write('m6.json', { ...base, members: { groups: ['lab'] }, membership: { ca_key: caKey, cert_file: 'node.cert' } }));
    expect(c.member_cert).toBe(cert);
    expect(c.members).toEqual({ groups: ['lab'], jids: [], domains: [] });
  });

  it('checks the routing keys: subnets without host bits, structured needs multihop and on-demand links', async () => {
    const withRouting = (routing: unknown, extra: Record<string, unknown> = {}) => ({ ...base, routing, ...extra });
    await expect(loadGroupVpnConfig(await write('r1.json', withRouting({ advertise: ['10.44.0.1/24'] }))))
      .rejects.toThrow(/routing\.advertise\[0\].*host bits/s);
    await expect(loadGroupVpnConfig(await write('r2.json', withRouting({ topology: 'structured', multihop: false }))))
      .rejects.toThrow(/routing\.multihop.*needs multihop/s);
    await expect(loadGroupVpnConfig(await write('r3.json', withRouting({ topology: 'structured' }, { link_policy: 'proactive' }))))
      .rejects.toThrow(/link_policy.*full mesh/s);
    await expect(loadGroupVpnConfig(await write('r4.json', withRouting({ deny: ['10.254.0.2'], hops: 3 }))))
      .rejects.toThrow(/routing.*hops/s);
    const routers = { '10.254.0.1': ['10.44.0.0/16', 'fd00:44::/48'], '10.254.0.2': ['10.45.0.0/24'] };
    const ok = await loadGroupVpnConfig(await write('r5.json', withRouting({ topology: 'structured', advertise: ['10.44.0.0/24', 'fd00:44::/64'], routers })));
    expect(ok.routing).toMatchObject({ topology: 'structured', multihop: true, advertise: ['10.44.0.0/24', 'fd00:44::/64'], routers });
  });

  it('checks router grants: inside this node\'s own grant, no overlaps, no default routes or mapped IPv6', async () => {
    const withRouting = (routing: unknown) => ({ ...base, routing });
    expect(await problem(withRouting({ advertise: ['10.44.0.0/24'] }))).toMatch(/routing\.advertise\[0\]: 10\.44\.0\.0\/24 is not granted to this node/);
    expect(await problem(withRouting({ advertise: ['10.44.0.0/24'], routers: { '10.254.0.1': ['10.44.0.0/25'] } }))).toMatch(/not granted/);
    expect(await problem(withRouting({ routers: { '10.254.0.2': ['10.44.0.0/16'], '10.254.0.3': ['10.44.8.0/24'] } })))
      .toMatch(/routing\.routers\.10\.254\.0\.2: 10\.44\.0\.0\/16 overlaps 10\.44\.8\.0\/24, granted to 10\.254\.0\.3/);
    expect(await problem(withRouting({ routers: { '10.254.0.2': ['10.254.128.0/24'] } }))).toMatch(/overlaps the VPN's own subnet 10\.254\.0\.0\/16/);
    for (const bad of ['0.0.0.0/0', '::/0', '0.0.0.0/1', '::ffff:1.2.3.4/96', '::ffff:0:0/96', '127.0.0.0/8', 'ff00::/8', '10.44.0.1/24']) {
      expect(await problem(withRouting({ routers: { '10.254.0.2': [bad] } }))).toMatch(/routing\.routers/);
      expect(await problem(withRouting({ advertise: [bad], routers: { '10.254.0.1': ['10.0.0.0/8'] } }))).toMatch(/routing\.advertise\[0\]/);
    }
    expect(await problem(withRouting({ routers: { 'pub': ['10.44.0.0/24'] } }))).toMatch(/routing\.routers/);
  });

  it('loads the full example of docs/config.md', async () => {
    const full = {
      $schema: '../docs/groupvpn-config.schema.json',
      network_id: 'lab',
      xmpp: { host: 'xmpp.lab', port: 5222, jid: 'node1@vpn.test', password: 's', ca_file: 'ca.pem', mechanism: 'PLAIN' },
      vnic: { name: 'tincan0', ip4: '10.254.0.1/16', mtu: 1280 },
      stun: ['stun.lab:3478'],
      turn: [{ address: 'turn.lab:3478', username: 'u', password: 'p' }],
      link_policy: 'proactive',
      max_links: 32,
      idle_timeout_s: 300,
      datapath: '127.0.0.1:5801',
      state_dir: '/var/lib/tincan/lab',
      log_level: 'debug',
    };
    await write('ca.pem', '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const c = await loadGroupVpnConfig(await write('full.json', full));
    expect(c.xmpp.ca_file).toBe(join(dir, 'ca.pem')); // relative to the config file
    expect(c.turn[0]!.username).toBe('u');
  });

  it('names the file, the key path and what is expected', async () => {
    const { network_id: _, ...noId } = base;
    expect(await problem(noId)).toMatch(/network_id: missing \(expected string\)/);
    expect(await problem({ ...base, max_links: '32' })).toMatch(/max_links: expected number, got the string "32"/);
    expect(await problem({ ...base, vnic: { ip4: '10.254.0.1' } })).toMatch(
      /vnic\.ip4: expected an IPv4 address with its prefix length, e\.g\. "10\.254\.0\.1\/16"/,
    );
    expect(await problem({ ...base, vnic: { ip4: '10.254.0.0/16' } })).toMatch(/vnic\.ip4: 10\.254\.0\.0 is the network address/);
    expect(await problem({ ...base, vnic: { ip4: '10.254.255.255/16' } })).toMatch(/broadcast address/);
    expect(await problem({ ...base, vnic: { ip4: '10.254.0.1/31' } })).toMatch(/vnic\.ip4: the prefix length must be 8–30/);
    expect(await problem({ ...base, vnic: { ip4: '300.1.1.1/16' } })).toMatch(/vnic\.ip4: expected an IPv4 address/);
    expect(await problem({ ...base, link_polcy: 'proactive' })).toMatch(/link_polcy: unknown key/);
    expect(await problem({ ...base, link_policy: 'sometimes' })).toMatch(/link_policy: .*"on-demand".*"proactive"/);
    expect(await problem({ ...base, turn: [{ address: 'turn.lab', username: 'u', password: 'p' }] })).toMatch(
      /turn\[0\]\.address: expected host:port/,
    );
    expect(await problem({ ...base, datapath: '10.0.0.1:5801' })).toMatch(/datapath: expected "127\.0\.0\.1:PORT"/);
    expect(await problem({ ...base, vnic: { ip4: '10.254.0.1/16', name: 'much-too-long-name0' } })).toMatch(/vnic\.name: /);
    expect(await problem({ ...base, xmpp: { host: 'x', jid: 'nobody' , password: 'p' } })).toMatch(/xmpp\.jid: expected user@domain/);
    expect(await problem('{ "network_id": ')).toMatch(/not valid JSON/);
    expect(await problem([])).toMatch(/\(top level\): expected object, got an array/);
  });

  it('reports several problems at once, one per line', async () => {
    const msg = await problem({ network_id: '', xmpp: base.xmpp, vnic: { ip4: 'x' }, max_links: 0 });
    expect(msg.split('\n').length).toBe(4);
  });

  it('takes the password from password_file (first line), relative to the config file; exactly one of the two', async () => {
    await writeFile(join(dir, 'pw.txt'), 'from-file\nignored\n');
    const { password: _, ...xmpp } = base.xmpp;
    const c = await loadGroupVpnConfig(await write('pwf.json', { ...base, xmpp: { ...xmpp, password_file: 'pw.txt' } }));
    expect(c.xmpp.password).toBe('from-file');
    // register_svc names the file (absolute) instead of sending the password; the password only when asked.
    expect(c.xmpp.password_file).toBe(join(dir, 'pw.txt'));
    expect(xmppAccountFor(c.xmpp)).toEqual({ ...xmpp, port: 5222, mechanism: 'SCRAM-SHA-1', password_file: join(dir, 'pw.txt') });
    expect(xmppAccountFor(c.xmpp, true)).not.toHaveProperty('password_file');
    expect(xmppAccountFor(c.xmpp, true).password).toBe('from-file');
    expect(await problem({ ...base, xmpp: { ...xmpp } })).toMatch(/xmpp\.password: missing: give "password" or "password_file"/);
    expect(await problem({ ...base, xmpp: { ...base.xmpp, password_file: 'pw.txt' } })).toMatch(/xmpp\.password_file: give either/);
    expect(await problem({ ...base, xmpp: { ...xmpp, password_file: 'nope.txt' } })).toMatch(
      /xmpp\.password_file: cannot read .*nope\.txt/,
    );
  });

  it('catches at check time what would fail later: a port in xmpp.host, an unreadable or non-PEM ca_file', async () => {
    expect(await problem({ ...base, xmpp: { ...base.xmpp, host: 'xmpp.example.org:5222' } })).toMatch(
      /xmpp\.host: "xmpp\.example\.org:5222" has a port in it: give "host": "xmpp\.example\.org" and "port": 5222/,
    );
    expect(await problem({ ...base, xmpp: { ...base.xmpp, host: 'xmpp://xmpp.example.org' } })).toMatch(/xmpp\.host: .*not a host name/);
    expect(await problem({ ...base, xmpp: { ...base.xmpp, ca_file: 'no-such-ca.pem' } })).toMatch(
      /xmpp\.ca_file: cannot read .*no-such-ca\.pem: no such file .*leave ca_file out to trust the system's CAs/,
    );
    await writeFile(join(dir, 'not-a-cert.pem'), 'hello\n');
    expect(await problem({ ...base, xmpp: { ...base.xmpp, ca_file: 'not-a-cert.pem' } })).toMatch(/xmpp\.ca_file: .*holds no PEM certificate/);
  });

  it('a JSON syntax error is reported at its line and column; a byte-order mark is skipped', async () => {
    const text = '{\n  "network_id": "lab",\n  "vnic": { "ip4": "10.254.0.1/16" }\n  "xmpp": {}\n}\n';
    const msg = await problem(text);
    expect(msg).toMatch(/bad\.json: line 4, column 3: not valid JSON \(.+\): check the syntax just before there/);
    expect(msg).not.toMatch(/position/);
    expect(await problem('{ "network_id": ')).toMatch(/line 1, column 17: not valid JSON/);
    const c = await loadGroupVpnConfig(await write('bom.json', `\uFEFF${JSON.stringify(base)}`));
    expect(c.network_id).toBe('lab');
  });

  it('state_dir defaults to /var/lib/tincan/NAME for NAME.json, as the systemd units lay it out', async () => {
    expect((await loadGroupVpnConfig(await write('office.json', base))).state_dir).toBe('/var/lib/tincan/office');
    expect((await loadGroupVpnConfig(await write('set.json', { ...base, state_dir: '/srv/tc' }))).state_dir).toBe('/srv/tc');
  });

  it('a missing file is reported with its name', async () => {
    await expect(loadGroupVpnConfig(join(dir, 'absent.json'))).rejects.toThrow(/absent\.json: cannot read the file/);
  });

  it('docs/groupvpn-config.schema.json is current (regenerate: tincan-groupvpn --print-config-schema)', async () => {
    const file = join(here, '../../../docs/groupvpn-config.schema.json');
    const onDisk = JSON.parse(await readFile(file, 'utf8')) as unknown;
    expect(onDisk).toEqual(groupVpnConfigJsonSchema());
  });
});
