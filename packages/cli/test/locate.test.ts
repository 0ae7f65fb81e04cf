import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { locateDatapath } from '../src/locate.js';

// The units' layout in a temporary directory: etc/NAME.json, etc/NAME.env, state/NAME/rpc-PORT.token.
let dir: string;
let etc: string;
let state: string;
const at = () => ({ configDir: etc, stateRoot: state });

async function datapath(name: string, port: number, token = 'tok-' + name): Promise<void> {
  await mkdir(join(state, name), { recursive: true });
  await writeFile(join(state, name, `rpc-${port}.token`), `${token}\n`);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tincanctl-locate-'));
  etc = join(dir, 'etc');
  state = join(dir, 'state');
  await mkdir(etc);
  await mkdir(state);
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('locateDatapath', () => {
  it('-n NAME: the units\' layout, with the port from NAME.env', async () => {
    await datapath('lab', 5811);
    await writeFile(join(etc, 'lab.env'), '# the datapath\nTINCAN_RPC=127.0.0.1:5811\nTINCAN_LOG_LEVEL=info\n');
    expect(await locateDatapath({ ...at(), network: 'lab' })).toEqual({
      rpc: { address: '127.0.0.1', port: 5811 }, stateDir: join(state, 'lab'), token: 'tok-lab', what: 'network lab',
    });
  });

  it('-n NAME with NAME.json: its "datapath" and "state_dir" (state_dir defaulting like the controller\'s)', async () => {
    await writeFile(join(etc, 'lab.json'), `\uFEFF${JSON.stringify({ datapath: '127.0.0.1:5821', state_dir: join(dir, 'elsewhere') })}`);
    await mkdir(join(dir, 'elsewhere'));
    await writeFile(join(dir, 'elsewhere', 'rpc-5821.token'), 'x');
    expect(await locateDatapath({ ...at(), network: 'lab' })).toMatchObject({ rpc: { port: 5821 }, stateDir: join(dir, 'elsewhere'), token: 'x' });
    // --config FILE without state_dir: /var/lib/tincan/NAME, as the controller would use.
    await writeFile(join(etc, 'office.json'), '{}');
    await expect(locateDatapath({ ...at(), config: join(etc, 'office.json') })).rejects.toThrow(
      `is tincan-datapath running for ${join(etc, 'office.json')}? no RPC token at /var/lib/tincan/office/rpc-5801.token`,
    );
  });

  it('no name: the only network running; several: asks which', async () => {
    await datapath('lab', 5831);
    expect(await locateDatapath(at())).toMatchObject({ rpc: { port: 5831 }, what: 'network lab' });
    await datapath('home', 5801);
    await expect(locateDatapath(at())).rejects.toThrow('several networks run here (home, lab): pick one with -n NETWORK');
    expect(await locateDatapath({ ...at(), network: 'home' })).toMatchObject({ rpc: { port: 5801 }, token: 'tok-home' });
  });

  it('--rpc and --state-dir override what was found', async () => {
    await datapath('lab', 5801);
    await mkdir(join(dir, 'own'));
    await writeFile(join(dir, 'own', 'rpc-5999.token'), 'own');
    expect(await locateDatapath({ ...at(), stateDir: join(dir, 'own'), rpc: '127.0.0.1:5999' })).toMatchObject({ token: 'own', what: `state directory ${join(dir, 'own')}` });
  });

  it('says what to check when it finds nothing, or input that is wrong', async () => {
    await expect(locateDatapath({ ...at(), network: 'lab' })).rejects.toThrow(
      `is tincan-datapath running for network lab? no RPC token at ${join(state, 'lab')}/rpc-5801.token (check: systemctl status tincan-datapath@lab;`,
    );
    await expect(locateDatapath({ ...at(), network: '../etc' })).rejects.toThrow(/a network name is letters, digits/);
    await expect(locateDatapath({ ...at(), network: 'lab', rpc: 'nope' })).rejects.toThrow('--rpc: expected the datapath\'s RPC as address:port');
    await writeFile(join(etc, 'bad.json'), '{\n  "datapath": "127.0.0.1:5801",\n}');
    await expect(locateDatapath({ ...at(), config: join(etc, 'bad.json') })).rejects.toThrow(/bad\.json: line 3, column 1: not valid JSON/);
    await expect(locateDatapath({ ...at(), config: join(etc, 'absent.json') })).rejects.toThrow(/cannot read .*absent\.json: no such file/);
    await datapath('empty', 5801, '');
    await expect(locateDatapath({ ...at(), network: 'empty' })).rejects.toThrow(/is empty: restart tincan-datapath for network empty/);
  });
});
