/// <reference path="./xmpp-js.d.ts" />
/**
 * The TinCan stanza codec: what the datapath puts on XMPP and how it reads what comes back.
 * Pure functions over ltx elements (no connection), so every garbage case is unit-testable.
 *
 *  - presence: <presence><priority>-1</priority><node xmlns=PRESENCE_NS uid=… overlay=… caps=… cert=… mcert=…/></presence>
 *  - signal:   <message to=FULL type="normal"><signal xmlns=SIGNAL_NS>JSON</signal>
 *              <no-store xmlns="urn:xmpp:hints"/></message>, JSON = XmppSignal {v:1, uid, type, data}
 */
import { xml, type XmlElement } from '@xmpp/client-core';
import { X509Certificate } from 'node:crypto';
import { MAX_SIGNAL_BYTES, MemberCert, NODE_CAPS_MAX, NodeCap, NodeCert, PRESENCE_NS, SIGNAL_NS, Uid, XmppSignal, type RosterItem } from '@tincan/protocol';

export type { XmlElement } from '@xmpp/client-core';

export const NS_HINTS = 'urn:xmpp:hints';
export const NS_ROSTER = 'jabber:iq:roster';
export const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
/** Longest overlay id we accept in a peer's presence (the RPC's register_svc allows 64). */
export const MAX_OVERLAY_LEN = 64;
/** Longest caps attribute we read in a peer's presence (NODE_CAPS_MAX tokens of 32 and spaces). */
export const MAX_CAPS_ATTR_LEN = 512;
/**
 * Our presence priority. Negative (RFC 6121 §4.7.2.3): the server never hands this resource a
 * message addressed to the bare JID, so a user's chats don't land in the datapath and a signal
 * addressed to a vanished full JID of the same account isn't rerouted here.
 */
export const PRESENCE_PRIORITY = -1;

// ---------------------------------------------------------------------------------------------
// JIDs

export interface ParsedJid {
  /** local@domain/resource, with local and domain lower-cased (resource is case-sensitive). */
  full: string;
  bare: string;
  local: string;
  domain: string;
  /** '' for a bare JID. */
  resource: string;
}

/** Parses and normalizes a JID; null when it is not one (no domain, empty parts, whitespace). */
export function parseJid(s: string | undefined | null): ParsedJid | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > 3071) return null;
  const slash = s.indexOf('/');
  const resource = slash >= 0 ? s.slice(slash + 1) : '';
  const head = slash >= 0 ? s.slice(0, slash) : s;
  if (slash >= 0 && resource.length === 0) return null;
  const at = head.indexOf('@');
  const local = at >= 0 ? head.slice(0, at).toLowerCase() : '';
  const domain = (at >= 0 ? head.slice(at + 1) : head).toLowerCase();
  if (at >= 0 && local.length === 0) return null;
  if (domain.length === 0 || /[\s@/]/.test(domain) || /[\s@]/.test(local)) return null;
  const bare = local ? `${local}@${domain}` : domain;
  return { full: resource ? `${bare}/${resource}` : bare, bare, local, domain, resource };
}

/** The resource we bind when the configured JID has none: stable per node, so a restarted node
 *  replaces its previous session on the server instead of leaving a ghost next to it. */
export function defaultResource(uid: string): string {
  return `tincan-${uid.slice(0, 8)}`;
}

// ---------------------------------------------------------------------------------------------
// Outgoing

/** What a node announces in its presence besides its UID. */
export interface PresenceAnnouncement {
  overlay?: string | null;
  caps?: readonly string[];
  /** The node certificate's DER, base64 (NodeCert). */
  cert?: string | null;
  /** The membership certificate (MemberCert), when the network has a CA. */
  memberCert?: string | null;
}

export function buildPresence(uid: string, a: PresenceAnnouncement = {}): XmlElement {
  const caps = a.caps ?? [];
  return xml(
    'presence',
    {},
    xml('priority', {}, String(PRESENCE_PRIORITY)),
    xml('node', {
      xmlns: PRESENCE_NS,
      uid,
      ...(a.overlay ? { overlay: a.overlay } : {}),
      ...(caps.length > 0 ? { caps: caps.join(' ') } : {}),
      ...(a.cert ? { cert: a.cert } : {}),
      ...(a.memberCert ? { mcert: a.memberCert } : {}),
    }),
  );
}

export function buildUnavailable(): XmlElement {
  return xml('presence', { type: 'unavailable' });
}

/**
 * Validates and serializes a signal; throws (with a message fit for an RPC error) when `type` or
 * `data` don't fit the schema or the JSON exceeds MAX_SIGNAL_BYTES.
 */
export function encodeSignal(uid: string, type: string, data: unknown): string {
  const parsed = XmppSignal.safeParse({ v: 1, uid, type, data });
  if (!parsed.success) {
    throw new Error(`invalid signal: ${summarizeIssues(parsed.error.issues)}`);
  }
  const json = JSON.stringify(parsed.data);
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > MAX_SIGNAL_BYTES) {
    throw new Error(`signal of ${bytes} bytes exceeds the ${MAX_SIGNAL_BYTES}-byte limit`);
  }
  return json;
}

export function buildSignalMessage(to: string, json: string, id?: string): XmlElement {
  return xml(
    'message',
    { to, type: 'normal', ...(id ? { id } : {}) },
    xml('signal', { xmlns: SIGNAL_NS }, json),
    xml('no-store', { xmlns: NS_HINTS }),
  );
}

// ---------------------------------------------------------------------------------------------
// Incoming presence

export type PresenceParse =
  /** An available TinCan node. */
  | { kind: 'available'; jid: ParsedJid; uid: string; overlay: string | null; caps: string[]; cert: string | null; memberCert: string | null }
  /** type="unavailable", or type="error" (treated alike: the peer is gone either way). `jid` may be bare. */
  | { kind: 'unavailable'; jid: ParsedJid; error: boolean }
  /** Not for us: subscription requests, probes, presence without the TinCan child, no sender. */
  | { kind: 'ignore'; reason: string }
  /** Carries the TinCan child but it is broken (bad UID, overlay too long, bare sender). */
  | { kind: 'malformed'; reason: string };

export function parsePresence(stanza: XmlElement): PresenceParse {
  if (stanza.name !== 'presence') return { kind: 'ignore', reason: 'not a presence stanza' };
  const type = stanza.attrs.type ?? 'available';
  const from = parseJid(stanza.attrs.from);
  if (!from) return { kind: 'ignore', reason: 'no usable sender' };
  if (type === 'unavailable' || type === 'error') return { kind: 'unavailable', jid: from, error: type === 'error' };
  if (type !== 'available') return { kind: 'ignore', reason: `presence type ${type}` };
  const node = stanza.getChild('node', PRESENCE_NS);
  if (!node) return { kind: 'ignore', reason: 'no TinCan node element' };
  if (!from.resource) return { kind: 'malformed', reason: 'TinCan presence from a bare JID' };
  const uid = node.attrs.uid;
  if (!Uid.safeParse(uid).success) return { kind: 'malformed', reason: 'TinCan presence with a bad uid' };
  const overlay = node.attrs.overlay;
  if (overlay !== undefined && (overlay.length === 0 || overlay.length > MAX_OVERLAY_LEN)) {
    return { kind: 'malformed', reason: 'TinCan presence with a bad overlay' };
  }
  return {
    kind: 'available',
    jid: from,
    uid: uid as string,
    overlay: overlay ?? null,
    caps: parseCaps(node.attrs.caps),
    cert: parseNodeCert(node.attrs.cert),
    memberCert: MemberCert.safeParse(node.attrs.mcert).success ? (node.attrs.mcert as string) : null,
  };
}

/**
 * A peer's announced node certificate, if it is base64 of an X.509 certificate; else null. Like an
 * unreadable capability, an unreadable certificate costs the presence nothing but the certificate:
 * whether a peer without one is trusted is the controller's decision.
 */
export function parseNodeCert(attr: string | undefined): string | null {
  if (!NodeCert.safeParse(attr).success) return null;
  try {
    new X509Certificate(Buffer.from(attr as string, 'base64'));
    return attr as string;
  } catch {
    return null;
  }
}

/**
 * A peer's announced capabilities: its well-formed tokens, each once, the first NODE_CAPS_MAX. A
 * token we cannot read is skipped, not the presence: a newer node may announce more than we know.
 */
export function parseCaps(attr: string | undefined): string[] {
  if (typeof attr !== 'string' || attr.length > MAX_CAPS_ATTR_LEN) return [];
  const caps: string[] = [];
  for (const token of attr.split(/\s+/)) {
    if (caps.length === NODE_CAPS_MAX) break;
    if (NodeCap.safeParse(token).success && !caps.includes(token)) caps.push(token);
  }
  return caps;
}

// ---------------------------------------------------------------------------------------------
// Incoming messages

export type MessageDrop =
  | 'bounces'
  | 'messages_ignored'
  | 'signals_dropped_malformed'
  | 'signals_dropped_oversized'
  | 'signals_dropped_uid_mismatch';

export type MessageParse =
  | { ok: true; jid: ParsedJid; signal: XmppSignal }
  | { ok: false; counter: MessageDrop; reason: string; from?: string };

/**
 * Reads a message stanza. `uidOf(fullJid)` returns the UID that JID announced in presence, if any:
 * a signal from a JID that announced a UID must carry that UID; a signal from a JID not seen in
 * presence yet is accepted (and teaches nothing).
 */
export function parseSignalMessage(
  stanza: XmlElement,
  uidOf: (fullJid: string) => string | undefined,
): MessageParse {
  const fromAttr = stanza.attrs.from;
  if (stanza.name !== 'message') return { ok: false, counter: 'messages_ignored', reason: 'not a message stanza' };
  const type = stanza.attrs.type ?? 'normal';
  const child = stanza.getChild('signal', SIGNAL_NS);
  if (type === 'error') {
    // A bounce, never a reply (some servers bounce already-delivered messages; XEP-0198).
    const err = stanza.getChild('error');
    const condition = err?.getChildElements().find((c) => c.getNS() === NS_STANZAS)?.name ?? 'unknown';
    return {
      ok: false,
      counter: 'bounces',
      reason: `bounce (${condition})${child ? ' of a signal' : ''}`,
      ...(fromAttr ? { from: fromAttr } : {}),
    };
  }
  if (!child) return { ok: false, counter: 'messages_ignored', reason: 'no TinCan signal element' };
  if (type === 'groupchat') return { ok: false, counter: 'messages_ignored', reason: 'signal in a groupchat message' };
  const from = parseJid(fromAttr);
  if (!from || !from.resource) {
    return { ok: false, counter: 'signals_dropped_malformed', reason: 'signal without a full sender JID' };
  }
  const text = child.text();
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_SIGNAL_BYTES) {
    return {
      ok: false,
      counter: 'signals_dropped_oversized',
      reason: `signal of ${bytes} bytes exceeds ${MAX_SIGNAL_BYTES}`,
      from: from.full,
    };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, counter: 'signals_dropped_malformed', reason: 'signal is not JSON', from: from.full };
  }
  const parsed = XmppSignal.safeParse(json);
  if (!parsed.success) {
    return {
      ok: false,
      counter: 'signals_dropped_malformed',
      reason: `signal fails the schema: ${summarizeIssues(parsed.error.issues)}`,
      from: from.full,
    };
  }
  const announced = uidOf(from.full);
  if (announced !== undefined && announced !== parsed.data.uid) {
    return {
      ok: false,
      counter: 'signals_dropped_uid_mismatch',
      reason: `signal claims uid ${parsed.data.uid} but ${from.full} announced ${announced}`,
      from: from.full,
    };
  }
  return { ok: true, jid: from, signal: parsed.data };
}

// ---------------------------------------------------------------------------------------------
// Roster

export type Subscription = RosterItem['subscription'];
/** A roster item: bare JID, subscription, and its roster groups (e.g. a shared group of prosody's mod_groups). */
export type { RosterItem };
/** Groups read per roster item, and the longest group name kept (longer ones are skipped). */
export const ROSTER_GROUPS_MAX = 32;
export const ROSTER_GROUP_MAX_LEN = 256;
const SUBSCRIPTIONS: ReadonlySet<string> = new Set(['none', 'to', 'from', 'both', 'remove']);

export function buildRosterGet(): XmlElement {
  return xml('query', { xmlns: NS_ROSTER });
}

/** The items of a roster result or push; items with a bad JID are skipped. */
export function parseRosterQuery(query: XmlElement | undefined): RosterItem[] {
  if (!query) return [];
  const items: RosterItem[] = [];
  for (const item of query.getChildren('item')) {
    const jid = parseJid(item.attrs.jid);
    if (!jid) continue;
    const sub = item.attrs.subscription ?? 'none';
    const groups: string[] = [];
    for (const g of item.getChildren('group')) {
      if (groups.length === ROSTER_GROUPS_MAX) break;
      const name = g.text().trim();
      if (name.length > 0 && name.length <= ROSTER_GROUP_MAX_LEN && !groups.includes(name)) groups.push(name);
    }
    items.push({ jid: jid.bare, subscription: (SUBSCRIPTIONS.has(sub) ? sub : 'none') as Subscription, groups });
  }
  return items;
}

// ---------------------------------------------------------------------------------------------

function summarizeIssues(issues: readonly { path: PropertyKey[]; message: string }[]): string {
  return issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.map(String).join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

/** Parses top-level stanzas written as they appear inside a jabber:client stream (tests, tools). */
export function parseStanzas(s: string): XmlElement[] {
  const parser = new xml.Parser();
  const out: XmlElement[] = [];
  let error: unknown = null;
  parser.on('element', (el: XmlElement) => out.push(el));
  parser.on('error', (err: unknown) => {
    error ??= err;
  });
  parser.write(`<stream xmlns="jabber:client">${s}`);
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return out;
}
