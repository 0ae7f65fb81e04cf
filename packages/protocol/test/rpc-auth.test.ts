import { describe, expect, it } from 'vitest';
import { MsgType, RPC_SEAL_OVERHEAD, RPC_VERSION, RpcSessionKeys, newRpcNonce, newRpcToken, parseRpcToken, proofMatches, rpcProof } from '../src/index.js';

describe('RPC session keys', () => {
  const token = newRpcToken();
  const cn = newRpcNonce();
  const dn = newRpcNonce();
  const pair = () => ({ client: new RpcSessionKeys(7, token, 'client', cn, dn), datapath: new RpcSessionKeys(7, token, 'datapath', cn, dn) });

  it('seals both ways: encrypted, authenticated, each once', () => {
    const { client, datapath } = pair();
    const secret = Buffer.from('{"m":"register_svc","password":"hunter2"}');
    const d = client.seal(RPC_VERSION, MsgType.Control, secret);
    expect(d.length).toBe(secret.length + RPC_SEAL_OVERHEAD);
    expect([d[0], d[1], d.readUInt32BE(2)]).toEqual([RPC_VERSION, MsgType.Control, 7]);
    expect(d.toString('latin1')).not.toContain('hunter2');
    const o = datapath.open(d);
    expect(o.ok && o.payload.equals(secret)).toBe(true);
    expect(datapath.open(d)).toEqual({ ok: false, reason: 'replay' });
    // Not back to its sender (a key per direction), not with another token, not tampered (header or body).
    expect(client.open(client.seal(RPC_VERSION, MsgType.Packet, secret))).toEqual({ ok: false, reason: 'tag' });
    const other = new RpcSessionKeys(7, newRpcToken(), 'datapath', cn, dn);
    expect(other.open(client.seal(RPC_VERSION, MsgType.Control, secret))).toEqual({ ok: false, reason: 'tag' });
    for (const at of [1, 9, 20, -1]) {
      const t = client.seal(RPC_VERSION, MsgType.Control, secret);
      t[at < 0 ? t.length + at : at]! ^= 1;
      expect(datapath.open(t)).toEqual({ ok: false, reason: 'tag' });
    }
    expect(datapath.open(Buffer.alloc(10))).toEqual({ ok: false, reason: 'tag' });
  });

  it('takes reordered datagrams within a window of 32, each once; older ones never', () => {
    const { client, datapath } = pair();
    const sent = Array.from({ length: 40 }, () => client.seal(RPC_VERSION, MsgType.Packet, Buffer.from('x')));
    expect(datapath.open(sent[39]!).ok).toBe(true);
    expect(datapath.open(sent[10]!).ok).toBe(true); // 29 back
    expect(datapath.open(sent[10]!)).toEqual({ ok: false, reason: 'replay' });
    expect(datapath.open(sent[5]!)).toEqual({ ok: false, reason: 'replay' }); // 34 back: too old
    expect(datapath.open(sent[38]!).ok).toBe(true);
  });

  it('proofs differ by side, nonces and session, and need the token', () => {
    const p = rpcProof(token, 'datapath', cn, dn, 7);
    expect(proofMatches(p, rpcProof(token, 'datapath', cn, dn, 7))).toBe(true);
    for (const q of [rpcProof(token, 'client', cn, dn, 7), rpcProof(token, 'datapath', dn, cn, 7), rpcProof(token, 'datapath', cn, dn, 8), rpcProof(newRpcToken(), 'datapath', cn, dn, 7)]) {
      expect(proofMatches(p, q)).toBe(false);
    }
    expect(proofMatches(p, 'short')).toBe(false);
    expect(parseRpcToken(`${token.toString('hex')}\n`).equals(token)).toBe(true);
    expect(() => parseRpcToken('a'.repeat(48))).toThrow(/64 hex/);
  });
});
