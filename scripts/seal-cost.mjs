#!/usr/bin/env node
// Cost of sealing and opening relayed frames (packages/datapath/src/sealing.ts), per packet, on this
// machine: `npm run build && node scripts/seal-cost.mjs [PACKET_BYTES] [PACKETS]`. Real node keys
// (openssl, as the datapath makes them) in temporary state directories, removed at the end.
// docs/decisions/sealed-relayed-frames.md quotes its figures.
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counters } from '../packages/datapath/dist/counters.js';
import { ForwardingTable } from '../packages/datapath/dist/forwarding-table.js';
import { loadIdentity } from '../packages/datapath/dist/identity.js';
import { SealedFrames } from '../packages/datapath/dist/sealing.js';

const LEN = Number(process.argv[2] ?? 1280);
const N = Number(process.argv[3] ?? 100_000);
const dirs = [mkdtempSync(join(tmpdir(), 'tincan-seal-cost-')), mkdtempSync(join(tmpdir(), 'tincan-seal-cost-'))];
try {
  const [idA, idC] = await Promise.all(dirs.map((d) => loadIdentity(d)));
  const A = randomBytes(20);
  const C = randomBytes(20);
  const a = new SealedFrames(idA.privateKey, new Counters());
  const c = new SealedFrames(idC.privateKey, new Counters());
  a.setLocalUid(A);
  c.setLocalUid(C);
  a.setPeer(C.toString('hex'), idC.certificate);
  c.setPeer(A.toString('hex'), idA.certificate);
  const table = new ForwardingTable();
  const peerC = table.ensurePeer(C.toString('hex'));
  const peerA = table.ensurePeer(A.toString('hex'));
  const packet = randomBytes(LEN);
  packet[0] = 0x45;
  const frames = [];
  const time = (label, fn) => {
    for (let i = 0; i < Math.min(N, 10_000); i++) fn(i, true);
    const t = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn(i, false);
    const ns = Number(process.hrtime.bigint() - t) / N;
    console.log(`${label.padEnd(44)} ${(ns / 1000).toFixed(2)} µs/packet  (${((LEN * 8) / ns).toFixed(2)} Gbit/s of ${LEN}-byte packets on one core)`);
  };
  const scratch = Buffer.alloc(LEN);
  time('copy the packet (baseline)', () => { packet.copy(scratch); });
  const key = randomBytes(32);
  const iv = Buffer.alloc(12);
  time('createCipheriv + update + final, bare', () => {
    const ci = createCipheriv('aes-256-gcm', key, iv);
    ci.update(packet);
    ci.final();
    ci.getAuthTag();
  });
  time('SealedFrames.seal', () => { a.seal(packet, 0, LEN, peerC); });
  // Frames to open, each once (a replay would be refused before decryption): sealed beforehand.
  for (let i = 0; i < N + Math.min(N, 10_000); i++) frames.push(Buffer.from(a.seal(packet, 0, LEN, peerC)));
  let k = 0;
  time('SealedFrames.open', () => { if (c.open(frames[k++], peerA) === null) throw new Error('did not open'); });
} finally {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
