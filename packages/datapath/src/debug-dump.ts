import { closeSync, openSync, writeSync } from 'node:fs';
import type { ForwardTap } from './outside.js';

/** pcap's link type for private use (LINKTYPE_USER0): each record is one TinCan full frame. */
export const PCAP_LINKTYPE_TINCAN_FRAME = 147;
const SNAPLEN = 65535;

/**
 * Debug only (`tincan-datapath --debug-dump-forwarded FILE`): writes every frame this node forwards for
 * other nodes, as it goes out, to a pcap file (link type USER0; each record a full frame
 * `[src UID][dst UID][…]`, sealed frames as they are: the relay's view). One synchronous write per
 * frame: it slows forwarding down, so not for production. The file is created (mode 0600) or
 * truncated at start; with `--lanes` > 1 only the primary's forwarding is written.
 */
export class ForwardDump implements ForwardTap {
  private readonly fd: number;
  private readonly record = Buffer.alloc(16);
  frames = 0;

  constructor(path: string) {
    this.fd = openSync(path, 'w', 0o600);
    const header = Buffer.alloc(24);
    header.writeUInt32LE(0xa1b2c3d4, 0); // microsecond timestamps
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeUInt32LE(SNAPLEN, 16);
    header.writeUInt32LE(PCAP_LINKTYPE_TINCAN_FRAME, 20);
    writeSync(this.fd, header);
  }

  forwarded(frame: Buffer): void {
    const now = Date.now();
    const len = Math.min(frame.length, SNAPLEN);
    const r = this.record;
    r.writeUInt32LE(Math.floor(now / 1000), 0);
    r.writeUInt32LE((now % 1000) * 1000, 4);
    r.writeUInt32LE(len, 8);
    r.writeUInt32LE(frame.length, 12);
    try {
      writeSync(this.fd, r);
      writeSync(this.fd, frame, 0, len);
      this.frames++;
    } catch {
      // A full disk or a removed file: the dump misses frames; forwarding goes on.
    }
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch { /* closed */ }
  }
}

/** The frames of a pcap file written by ForwardDump (for tools and tests). */
export function readForwardDump(file: Buffer): Buffer[] {
  if (file.length < 24 || file.readUInt32LE(0) !== 0xa1b2c3d4 || file.readUInt32LE(20) !== PCAP_LINKTYPE_TINCAN_FRAME) {
    throw new Error('not a TinCan forwarded-frames dump');
  }
  const frames: Buffer[] = [];
  for (let at = 24; at + 16 <= file.length;) {
    const len = file.readUInt32LE(at + 8);
    if (at + 16 + len > file.length) break; // cut off while being written
    frames.push(file.subarray(at + 16, at + 16 + len));
    at += 16 + len;
  }
  return frames;
}
