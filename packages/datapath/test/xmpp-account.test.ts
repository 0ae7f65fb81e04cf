// register_svc's account: the datapath reads a password file itself, so the password need not travel.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RegisterSvcRequest } from '@tincan/protocol';
import { resolveXmppAccount } from '../src/xmpp-account.js';

describe('resolveXmppAccount', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tincan-xmpp-account-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const account = { host: 'xmpp.lab', port: 5222, jid: 'n1@xmpp.lab', mechanism: 'SCRAM-SHA-1' } as const;

  it('takes the password as given, or the first line of password_file', async () => {
    expect(await resolveXmppAccount({ ...account, password: 'given' })).toEqual({ ...account, password: 'given' });
    writeFileSync(join(dir, 'pw'), 'from-file\nsecond line\n');
    expect(await resolveXmppAccount({ ...account, password_file: join(dir, 'pw') })).toEqual({ ...account, password: 'from-file' });
  });

  it('refuses a missing or empty file with bad_request, and the RPC schema a relative path or both fields', async () => {
    await expect(resolveXmppAccount({ ...account, password_file: join(dir, 'nope') })).rejects.toMatchObject({ code: 'bad_request', message: expect.stringContaining('password_file') });
    writeFileSync(join(dir, 'empty'), '\n');
    await expect(resolveXmppAccount({ ...account, password_file: join(dir, 'empty') })).rejects.toMatchObject({ code: 'bad_request', message: expect.stringContaining('empty') });
    const req = (xmpp: object) => RegisterSvcRequest.safeParse({ tid: 1, m: 'register_svc', xmpp: { host: 'h', jid: 'n@d', ...xmpp } });
    expect(req({ password_file: 'relative/pw' }).success).toBe(false);
    expect(req({ password_file: '/abs/pw', password: 'x' }).success).toBe(false);
    expect(req({}).success).toBe(false);
    expect(req({ password_file: '/abs/pw' }).success).toBe(true);
  });
});
