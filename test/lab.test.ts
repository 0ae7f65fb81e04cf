// The lab itself: scripts/lab selftest, plus direct checks through the harness.
import { describe, expect, it } from 'vitest';
import { clearImpair, impair, labInfo, labScript, runIn, spawnIn } from './harness/lab.js';

/** ping -c COUNT -i 0.05 from HOST to DST; returns the number of replies. */
async function pingReplies(host: string, dst: string, count = 20): Promise<number> {
  const r = await runIn(host, 'ping', ['-n', '-q', '-c', String(count), '-i', '0.05', '-W', '1', dst], {
    timeoutMs: 20_000,
  });
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  if (!m) throw new Error(`unexpected ping output (${r.code}): ${r.stdout}${r.stderr}`);
  return Number(m[2]);
}

describe('lab', () => {
  it('scripts/lab selftest passes', async () => {
    const r = await labScript(['selftest'], { timeoutMs: 110_000 });
    const out = r.stdout + r.stderr;
    if (r.code !== 0) console.error(out);
    expect(r.code, out).toBe(0);
    expect(out).toMatch(/selftest: all checks passed/);
    expect(out).not.toMatch(/^FAIL /m);
  });

  it('lab.json describes hosts, servers and accounts', () => {
    const lab = labInfo();
    expect(lab.hosts.h1.router).toBe('nat1');
    expect(lab.hosts.h1.public_ipv4).toBe('198.18.0.11');
    expect(lab.hosts.h3.nat).toBe('symmetric');
    expect(lab.hosts.lan2.ipv6).toEqual(['fd00:4::3']);
    expect(lab.xmpp).toMatchObject({ host: '198.18.0.2', port: 5222, domain: 'vpn.test' });
    expect(lab.stun).toBe('198.18.0.2:3478');
    expect(lab.turn).toMatchObject({ username: 'tincan', password: 'tincan-lab' });
    expect(lab.accounts.users.filter((u) => u.groups.includes('lab'))).toHaveLength(64);
  });

  it('h1 pings pub through nat1', async () => {
    expect(await pingReplies('h1', labInfo().hosts.pub.ipv4[0]!, 5)).toBe(5);
  });

  it("h1 cannot reach h2's private address", async () => {
    const r = await runIn('h1', 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '1', '10.2.0.2']);
    expect(r.code).not.toBe(0);
  });

  it('pub sees h1 as nat1 (spawnIn + waitForLine)', async () => {
    const server = spawnIn(
      'pub',
      process.execPath,
      [
        '-e',
        `const s = require('node:dgram').createSocket('udp4');
         s.on('message', (m, r) => console.log('from ' + r.address + ':' + r.port + ' ' + m));
         s.bind(4000, '198.18.0.10', () => console.log('listening'));`,
      ],
      { name: 'udp-server' },
    );
    await server.waitForLine(/^listening$/);
    const client = await runIn('h1', process.execPath, [
      '-e',
      `const s = require('node:dgram').createSocket('udp4');
       s.send('hello', 4000, '198.18.0.10', () => s.close());`,
    ]);
    expect(client.code, client.stderr).toBe(0);
    const m = await server.waitForLine(/^from (\S+):\d+ hello$/, 5000);
    expect(m[1]).toBe('198.18.0.11');
    const exit = await server.kill();
    expect(exit.signal ?? exit.code).toBeTruthy();
  });

  it('impair adds loss on a NAT and --clear removes it', async () => {
    const pub = labInfo().hosts.pub.ipv4[0]!;
    await impair('nat1', { loss: 50 }); // 50 % each way: ~75 % of pings lost
    const lossy = await pingReplies('h1', pub, 20);
    expect(lossy).toBeLessThanOrEqual(14);
    await clearImpair('nat1');
    expect(await pingReplies('h1', pub, 20)).toBeGreaterThanOrEqual(19);
    const status = await labScript(['status']);
    expect(status.stdout).not.toMatch(/impaired nat1/);
  });

  it('impair --rate limits throughput (iperf3 through nat2)', async () => {
    const server = spawnIn('pub', 'iperf3', ['-s', '-1', '--forceflush', '-B', '198.18.0.10', '-p', '5299'], { name: 'iperf3-server' });
    await server.waitForLine(/Server listening/);
    await impair('nat2', { rate: '5mbit' });
    const r = await runIn('h2', 'iperf3', ['-c', '198.18.0.10', '-p', '5299', '-t', '2', '-J'], { timeoutMs: 20_000 });
    expect(r.code, r.stderr).toBe(0);
    const mbit = (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received
      .bits_per_second / 1e6;
    expect(mbit).toBeGreaterThan(1);
    expect(mbit).toBeLessThan(8);
    // impair() is cleared automatically after the test
  });
});
