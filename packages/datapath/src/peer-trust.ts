/**
 * Links come up only with the key the controller trusts for the peer (set_peer_cert; docs/security.md,
 * "Membership"). The datapath checks the fingerprints a peer's signaled description names before
 * libdatachannel sees it, and the certificate DTLS verified once the link is up (Datapath.checkLinkKey).
 */

/** Every `a=fingerprint:` line of a description (session or media level): algorithm and value, upper case. */
export function descriptionFingerprints(sdp: string): { algorithm: string; value: string }[] {
  const out: { algorithm: string; value: string }[] = [];
  for (const m of sdp.matchAll(/^a=fingerprint:(\S+) (\S+)\s*$/gm)) out.push({ algorithm: m[1]!.toLowerCase(), value: m[2]!.toUpperCase() });
  return out;
}

/**
 * Why a peer's description does not bind its link to the trusted certificate (SHA-256 fingerprint,
 * colon-separated upper-case hex), or null when it does: it must name at least one fingerprint, and
 * every one it names must be SHA-256 and the trusted one (libdatachannel would verify DTLS against
 * whichever it took).
 */
export function descriptionKeyMismatch(sdp: string, trusted: string): string | null {
  const fps = descriptionFingerprints(sdp);
  if (fps.length === 0) return 'it names no certificate fingerprint';
  const other = fps.find((f) => f.algorithm !== 'sha-256' || f.value !== trusted.toUpperCase());
  return other ? `it names another certificate (${other.algorithm} ${other.value})` : null;
}
