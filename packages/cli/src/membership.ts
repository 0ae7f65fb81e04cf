/**
 * tincanctl's membership commands: the controllers' trust state (key pins, refused key changes) and
 * the membership CA (a key pair, certificates). Pure helpers here; main.ts wires them to commands.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CertFingerprint,
  MemberCertPayload,
  NetworkCidr,
  TrustPins,
  pinsFileName,
  trustAcceptPrefix,
  type TrustAcceptRequest,
  type TrustController,
} from '@tincan/protocol';
import { certFingerprint, decodeMemberCert, memberCertSignedBy, parseCaPrivateKey, parseCaPublicKey, signMemberCert } from '@tincan/controller';

const CONTROLLERS: TrustController[] = ['groupvpn', 'socialvpn'];

/** The pins files in a state directory, parsed (a garbled one is reported, not thrown). */
export function readPins(stateDir: string): { ctl: TrustController; pins: TrustPins | null; problem: string | null }[] {
  const out: { ctl: TrustController; pins: TrustPins | null; problem: string | null }[] = [];
  for (const ctl of CONTROLLERS) {
    let text: string;
    try {
      text = readFileSync(join(stateDir, pinsFileName(ctl)), 'utf8');
    } catch {
      continue;
    }
    try {
      const r = TrustPins.safeParse(JSON.parse(text));
      out.push(r.success ? { ctl, pins: r.data, problem: null } : { ctl, pins: null, problem: 'unexpected content' });
    } catch {
      out.push({ ctl, pins: null, problem: 'not JSON' });
    }
  }
  return out;
}

export interface PendingChange {
  ctl: TrustController;
  key: string;
  jid: string;
  uid: string;
  fingerprint: string;
  pinned: string | null;
  lastMs: number;
}

/** Every refused key change waiting for an operator. */
export function pendingChanges(stateDir: string): PendingChange[] {
  const out: PendingChange[] = [];
  for (const { ctl, pins } of readPins(stateDir)) {
    if (!pins) continue;
    for (const [key, p] of Object.entries(pins.pending)) {
      const [jid = '', uid = ''] = key.split(' ');
      out.push({ ctl, key, jid, uid, fingerprint: p.fingerprint, pinned: pins.pins[key]?.fingerprint ?? null, lastMs: p.last_ms });
    }
  }
  return out;
}

/**
 * The pending changes `what` names: a bare JID (all its devices), a full JID, or a UID prefix of at
 * least 8 hex digits. With `fingerprint`, only the change to that key.
 */
export function selectPending(all: PendingChange[], what: string, fingerprint?: string): PendingChange[] {
  const w = what.trim().toLowerCase();
  const bare = w.includes('/') ? w.slice(0, w.indexOf('/')) : w;
  let hits: PendingChange[];
  if (/^[0-9a-f]{8,40}$/.test(w)) hits = all.filter((p) => p.uid.startsWith(w));
  else if (/^[^@/\s]+@[^@/\s]+$/.test(bare)) hits = all.filter((p) => p.jid === bare);
  else throw new Error(`"${what}" is neither a JID nor a UID (at least 8 hex digits)`);
  if (fingerprint !== undefined) hits = hits.filter((p) => p.fingerprint === fingerprint.toUpperCase());
  return hits;
}

/** Writes one accept request per controller (atomically: a temporary file renamed); returns the paths. */
export function writeAcceptRequests(stateDir: string, changes: PendingChange[]): string[] {
  const paths: string[] = [];
  for (const ctl of CONTROLLERS) {
    const mine = changes.filter((c) => c.ctl === ctl);
    if (mine.length === 0) continue;
    const req: TrustAcceptRequest = { version: 1, accept: mine.map((c) => ({ key: c.key, fingerprint: c.fingerprint })) };
    const name = `${trustAcceptPrefix(ctl)}${Date.now()}-${randomBytes(4).toString('hex')}.json`;
    const path = join(stateDir, name);
    const tmp = join(stateDir, `.${name}.tmp`);
    writeFileSync(tmp, `${JSON.stringify(req)}\n`, { mode: 0o600 });
    renameSync(tmp, path);
    paths.push(path);
  }
  return paths;
}

/** Whether every request file was taken by its controller. */
export function requestsTaken(stateDir: string, paths: string[]): boolean {
  const have = new Set(readdirSync(stateDir).map((n) => join(stateDir, n)));
  return paths.every((p) => !have.has(p));
}

/** `tincanctl trust list`. */
export function renderTrust(stateDir: string): string {
  const files = readPins(stateDir);
  if (files.length === 0) return `no key pins in ${stateDir} (no controller has pinned a key there yet)`;
  const lines: string[] = [];
  for (const { ctl, pins, problem } of files) {
    if (!pins) {
      lines.push(`${ctl}: ${pinsFileName(ctl)} is unusable (${problem})`);
      continue;
    }
    lines.push(`${ctl}: ${Object.keys(pins.pins).length} keys pinned`);
    for (const [key, p] of Object.entries(pins.pins)) lines.push(`  ${key.split(' ')[0]}  ${key.split(' ')[1]!.slice(0, 12)}  ${p.fingerprint}`);
    const pending = Object.entries(pins.pending);
    if (pending.length > 0) {
      lines.push(`${ctl}: ${pending.length} refused key change(s):`);
      for (const [key, p] of pending) {
        const [jid = '', uid = ''] = key.split(' ');
        lines.push(`  ${jid}  ${uid.slice(0, 12)}  pinned ${pins.pins[key]?.fingerprint ?? '?'}`);
        lines.push(`  ${' '.repeat(jid.length)}  ${' '.repeat(12)}  offered ${p.fingerprint}  (last ${new Date(p.last_ms).toISOString()}; accept: tincanctl trust accept ${uid.slice(0, 12)})`);
      }
    }
  }
  return lines.join('\n');
}

// --- the membership CA ----------------------------------------------------------------------------

export interface SignOptions {
  caKeyPem: string;
  network: string;
  jid: string;
  ip4: string;
  /** The node's node-cert.pem (its fingerprint is taken), or the fingerprint itself. */
  nodeCertPem?: string;
  fingerprint?: string;
  subnets: string[];
  /** Validity: from `notBefore` (default now) for `days`. */
  days: number;
  notBefore?: Date;
}

/** The fingerprint of a PEM certificate, as the datapath reports it (SHA-256 of the DER). */
export function pemFingerprint(pem: string): string {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error('no PEM certificate found (expected the datapath\'s node-cert.pem)');
  return certFingerprint(m[1]!.replace(/\s+/g, ''));
}

/** `tincanctl ca sign`: a membership certificate, validated as peers will read it. */
export function signCertificate(o: SignOptions): string {
  const key = parseCaPrivateKey(o.caKeyPem);
  const fp = o.nodeCertPem !== undefined ? pemFingerprint(o.nodeCertPem) : o.fingerprint?.toUpperCase();
  if (fp === undefined) throw new Error('give the node certificate (--node-cert) or its fingerprint (--fingerprint)');
  if (!CertFingerprint.safeParse(fp).success) throw new Error(`not a SHA-256 fingerprint: ${fp}`);
  for (const s of o.subnets) if (!NetworkCidr.safeParse(s).success) throw new Error(`not a subnet (network address/prefix): ${s}`);
  if (!Number.isFinite(o.days) || o.days <= 0 || o.days > 3650) throw new Error('--days: 1 to 3650 (keep certificates short-lived: expiry is how they are revoked)');
  const nbf = Math.floor((o.notBefore ?? new Date()).getTime() / 1000);
  const payload = MemberCertPayload.safeParse({
    v: 1, net: o.network, jid: o.jid.toLowerCase(), fp, ip4: o.ip4, subnets: o.subnets, nbf, exp: nbf + Math.round(o.days * 86_400),
  });
  if (!payload.success) {
    const i = payload.error.issues[0];
    throw new Error(`${i ? `${i.path.join('.')}: ${i.message}` : 'invalid certificate content'}`);
  }
  return signMemberCert(key, payload.data);
}

/** `tincanctl ca show`: what a certificate says (its signature checked when the CA public key is given). */
export function describeCertificate(text: string, caPublic?: string): string {
  const d = decodeMemberCert(text.trim());
  if (!d.ok) throw new Error(`${d.problem}: ${d.detail}`);
  const p = d.payload;
  const lines = [
    `network   ${p.net}`,
    `jid       ${p.jid}`,
    `node key  ${p.fp}`,
    `ip4       ${p.ip4}`,
    `subnets   ${p.subnets.length ? p.subnets.join(', ') : '(none)'}`,
    `valid     ${new Date(p.nbf * 1000).toISOString()} to ${new Date(p.exp * 1000).toISOString()}`,
  ];
  if (caPublic !== undefined) lines.push(`signature ${memberCertSignedBy(parseCaPublicKey(caPublic), text.trim()) ? 'good (by this CA)' : 'NOT by this CA'}`);
  return lines.join('\n');
}
