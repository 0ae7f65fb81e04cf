import * as z from 'zod';
import { CertFingerprint } from './member-cert.js';
import { Uid } from './uid.js';

/**
 * Key pinning without a membership CA (docs/security.md): the first node certificate seen for a
 * (bare JID, UID) is pinned in the controller's state directory, and a different one is refused until
 * an operator accepts it with `tincanctl trust accept`. Two files per controller (<ctl> = groupvpn or
 * socialvpn), both written atomically:
 *
 *  - `<ctl>-pins.json` (the controller's, mode 0600): the pins, and the refused key changes;
 *  - `<ctl>-trust-accept-<random>.json` (tincanctl's): key changes to accept; the controller applies
 *    each such file within a poll interval and deletes it.
 */
export type TrustController = 'groupvpn' | 'socialvpn';

export function pinsFileName(ctl: TrustController): string {
  return `${ctl}-pins.json`;
}

export function trustAcceptPrefix(ctl: TrustController): string {
  return `${ctl}-trust-accept-`;
}

/** "<bare JID> <UID>": the key of a pin. */
export const PinKey = z.string().max(1100).regex(/^[^@/\s]+@[^@/\s]+ [0-9a-f]{40}$/, 'a pin key: "<bare JID> <UID>"');
export type PinKey = z.infer<typeof PinKey>;

export function pinKey(bareJid: string, uid: Uid): PinKey {
  return `${bareJid} ${uid}`;
}

export const TrustPins = z.strictObject({
  version: z.literal(1),
  pins: z.record(PinKey, z.strictObject({ fingerprint: CertFingerprint, since_ms: z.number() })),
  /** Refused key changes, waiting for an operator. */
  pending: z.record(
    PinKey,
    z.strictObject({
      fingerprint: CertFingerprint,
      /** The full JID whose presence carried it, last time. */
      jid: z.string().max(3071),
      first_ms: z.number(),
      last_ms: z.number(),
    }),
  ),
});
export type TrustPins = z.infer<typeof TrustPins>;

export const TrustAcceptRequest = z.strictObject({
  version: z.literal(1),
  /** Each: pin this fingerprint for this key (it must be the pending one, or the request is ignored). */
  accept: z.array(z.strictObject({ key: PinKey, fingerprint: CertFingerprint })).min(1).max(1024),
});
export type TrustAcceptRequest = z.infer<typeof TrustAcceptRequest>;
