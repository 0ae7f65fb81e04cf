import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { uidToBytes, type Uid } from '@tincan/protocol';

/** Collects log lines (objects) so tests can check what was logged. */
export function captureLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

/** An IPv4 packet (20-byte header, no payload checks) from src to dst, as an unmapped frame from the datapath. */
export function unmappedFrame(srcUid: Uid, src: string, dst: string, dstUid: Uid | null = null): Buffer {
  const ip = Buffer.alloc(28);
  ip[0] = 0x45;
  ip.writeUInt16BE(28, 2);
  ip[8] = 64;
  ip[9] = 1; // ICMP
  src.split('.').forEach((b, i) => (ip[12 + i] = Number(b)));
  dst.split('.').forEach((b, i) => (ip[16 + i] = Number(b)));
  return Buffer.concat([uidToBytes(srcUid), dstUid ? uidToBytes(dstUid) : Buffer.alloc(20), ip]);
}

/** The captured log lines with this message. */
export function logged(lines: Record<string, unknown>[], msg: string): Record<string, unknown>[] {
  return lines.filter((l) => l.msg === msg);
}

/**
 * A node identity as the datapath makes one (identity.ts): a P-256 key and a self-signed certificate
 * in `dir`, made with openssl. Returns the key file and the certificate as presence carries it.
 */
export function makeNodeIdentity(dir: string, name: string): { keyFile: string; certB64: string } {
  const keyFile = join(dir, `${name}-key.pem`);
  const certFile = join(dir, `${name}-cert.pem`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', `/CN=${name}`,
  ], { stdio: 'ignore' });
  return { keyFile, certB64: new X509Certificate(readFileSync(certFile)).raw.toString('base64') };
}
