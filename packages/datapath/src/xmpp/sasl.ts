/**
 * SASL client mechanisms for the XMPP login: SCRAM-SHA-1 (RFC 5802, no channel binding) and PLAIN
 * (RFC 4616, only ever offered over verified TLS). Pure and synchronous; the session drives the
 * <auth>/<challenge>/<response>/<success> exchange.
 *
 * SCRAM uses node:crypto's native PBKDF2 (≈ milliseconds for 4096 iterations), where xmpp.js's
 * sasl-scram-sha-1 runs one WebCrypto HMAC per iteration (0.6–0.9 s of CPU per login), and it
 * verifies the server's signature (mutual authentication), which a stolen-database server can't fake.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export type SaslMechanismName = 'SCRAM-SHA-1' | 'PLAIN';

export interface SaslMechanism {
  readonly name: SaslMechanismName;
  /** The initial response (sent in <auth>). */
  initial(): Buffer;
  /** Answers a server challenge. */
  challenge(data: Buffer): Buffer;
  /** Checks the additional data of <success> (SCRAM: the server signature); throws if wrong. */
  success(data: Buffer): void;
}

export class SaslError extends Error {
  constructor(
    readonly condition: string,
    message: string,
  ) {
    super(message);
    this.name = 'SaslError';
  }
}

export function createMechanism(
  name: SaslMechanismName,
  username: string,
  password: string,
  nonce?: string,
): SaslMechanism {
  return name === 'PLAIN' ? new Plain(username, password) : new ScramSha1(username, password, nonce);
}

class Plain implements SaslMechanism {
  readonly name = 'PLAIN' as const;
  constructor(
    private readonly username: string,
    private readonly password: string,
  ) {}
  initial(): Buffer {
    return Buffer.from(`\0${this.username}\0${this.password}`, 'utf8');
  }
  challenge(): Buffer {
    throw new SaslError('protocol', 'PLAIN: unexpected server challenge');
  }
  success(): void {}
}

/** RFC 5802 saslname: ',' and '=' escaped. */
function saslname(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

function parseAttributes(s: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of s.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) continue;
    out.set(part[0]!, part.slice(2));
  }
  return out;
}

function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha1', key).update(data).digest();
}

export class ScramSha1 implements SaslMechanism {
  readonly name = 'SCRAM-SHA-1' as const;
  private readonly cnonce: string;
  private clientFirstBare = '';
  private serverSignature: Buffer | null = null;
  private stage: 'initial' | 'challenge' | 'final' | 'verified' = 'initial';

  constructor(
    private readonly username: string,
    private readonly password: string,
    nonce?: string,
  ) {
    this.cnonce = nonce ?? randomBytes(18).toString('base64');
  }

  initial(): Buffer {
    this.clientFirstBare = `n=${saslname(this.username.normalize('NFKC'))},r=${this.cnonce}`;
    this.stage = 'challenge';
    return Buffer.from(`n,,${this.clientFirstBare}`, 'utf8');
  }

  challenge(data: Buffer): Buffer {
    if (this.stage === 'final') {
      // Some servers send the server-final message as a challenge and expect an empty response.
      this.success(data);
      return Buffer.alloc(0);
    }
    if (this.stage !== 'challenge') throw new SaslError('protocol', 'SCRAM: challenge before the initial response');
    const serverFirst = data.toString('utf8');
    const attrs = parseAttributes(serverFirst);
    if (attrs.has('e')) throw new SaslError('server-error', `SCRAM: server error ${attrs.get('e')}`);
    const nonce = attrs.get('r');
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (!nonce || !salt || !Number.isInteger(iterations) || iterations < 1) {
      throw new SaslError('protocol', 'SCRAM: malformed server-first message');
    }
    if (!nonce.startsWith(this.cnonce) || nonce.length <= this.cnonce.length) {
      throw new SaslError('protocol', 'SCRAM: server nonce does not extend ours');
    }
    if (iterations > 1_000_000) throw new SaslError('protocol', `SCRAM: unreasonable iteration count ${iterations}`);
    const salted = pbkdf2Sync(Buffer.from(this.password.normalize('NFKC'), 'utf8'), Buffer.from(salt, 'base64'), iterations, 20, 'sha1');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha1').update(clientKey).digest();
    const finalWithoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${finalWithoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ clientSignature[i]!;
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    this.stage = 'final';
    return Buffer.from(`${finalWithoutProof},p=${proof.toString('base64')}`, 'utf8');
  }

  success(data: Buffer): void {
    // Already verified through a challenge-borne server-final message: <success/> carries nothing.
    if (this.stage === 'verified' && data.length === 0) return;
    if (this.stage !== 'final' || !this.serverSignature) throw new SaslError('protocol', 'SCRAM: success before the exchange completed');
    const attrs = parseAttributes(data.toString('utf8'));
    if (attrs.has('e')) throw new SaslError('server-error', `SCRAM: server error ${attrs.get('e')}`);
    const v = attrs.get('v');
    if (v === undefined) {
      throw new SaslError('protocol', 'SCRAM: the server did not prove it knows the password (no server signature)');
    }
    const got = Buffer.from(v, 'base64');
    if (got.length !== this.serverSignature.length || !timingSafeEqual(got, this.serverSignature)) {
      throw new SaslError('server-signature', 'SCRAM: wrong server signature (server does not know our credentials)');
    }
    this.stage = 'verified';
  }
}
