import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The node's persistent DTLS identity: its certificate's fingerprint is what peers verify. */
export interface NodeIdentity {
  certificatePemFile: string;
  keyPemFile: string;
  /** SHA-256 fingerprint as in SDP: colon-separated uppercase hex. */
  fingerprint: string;
  /** The certificate's DER, base64: what presence announces (NodeCert). */
  certificateBase64: string;
  /** The certificate itself, and its private key (ECDH for sealed relayed frames, sealing.ts). */
  certificate: X509Certificate;
  privateKey: KeyObject;
}

/**
 * Loads the node certificate from the state directory, creating an ECDSA P-256 one on first start
 * (with openssl: Node's crypto can make keys but not X.509 certificates).
 */
export async function loadIdentity(stateDir: string): Promise<NodeIdentity> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const certificatePemFile = join(stateDir, 'node-cert.pem');
  const keyPemFile = join(stateDir, 'node-key.pem');
  if (!(await exists(certificatePemFile)) || !(await exists(keyPemFile))) {
    try {
      await run('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', keyPemFile, '-out', certificatePemFile, '-days', '3650', '-subj', '/CN=tincan-node',
      ]);
    } catch (err) {
      throw new Error(`cannot create the node certificate in ${stateDir} (is openssl installed?): ${String(err)}`);
    }
  }
  const cert = new X509Certificate(await readFile(certificatePemFile));
  const privateKey = createPrivateKey(await readFile(keyPemFile));
  return {
    certificatePemFile, keyPemFile, fingerprint: cert.fingerprint256, certificateBase64: cert.raw.toString('base64'),
    certificate: cert, privateKey,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
