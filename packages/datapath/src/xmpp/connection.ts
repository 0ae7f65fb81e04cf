/// <reference path="./xmpp-js.d.ts" />
/**
 * One XMPP client connection, assembled from xmpp.js 0.14 building blocks with our own stream
 * negotiation: STARTTLS (mandatory, certificate verified against the system store or a CA given at
 * run time), SASL SCRAM-SHA-1 or PLAIN, resource binding.
 *
 * Why not `client()` from @xmpp/client: its STARTTLS step calls `tls.connect({ socket, host })`
 * with nothing else (node_modules/@xmpp/starttls/index.js: `upgrade(socket, { host:
 * options.domain })`), so a private CA can only come from NODE_EXTRA_CA_CERTS at process start;
 * and it would fall back to SASL on a plaintext stream when the server offers no STARTTLS. Its
 * middleware runs in registration order, so ours can't get in front of it. Here the features
 * handlers are ours; transport, XML parser, middleware and IQ plumbing are xmpp.js's.
 *
 * The connection does no reconnecting: XmppSession makes a fresh one per attempt.
 */
import net from 'node:net';
import tls from 'node:tls';
import { Client, xml, type ConnectionSocket, type XmlElement } from '@xmpp/client-core';
import tcp from '@xmpp/tcp';
import middlewareFactory from '@xmpp/middleware';
import iqCallerFactory, { type IqCaller } from '@xmpp/iq/caller.js';
import iqCalleeFactory from '@xmpp/iq/callee.js';
import { NS_ROSTER, NS_STANZAS, parseJid, parseRosterQuery, type RosterItem } from './codec.js';
import { createMechanism, SaslError, type SaslMechanismName } from './sasl.js';

export const NS_STREAM = 'http://etherx.jabber.org/streams';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
export const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
export const NS_SESSION = 'urn:ietf:params:xml:ns:xmpp-session';
export const NS_PING = 'urn:xmpp:ping';

export type LoginErrorKind = 'tls' | 'auth' | 'protocol' | 'timeout';

/** A login step failed; `kind` says which (the session reports it as "<kind>: <message>"). */
export class LoginError extends Error {
  constructor(
    readonly kind: LoginErrorKind,
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'LoginError';
  }
}

/** xmpp.js threw while dispatching one incoming element; the stream itself is fine. */
export class DispatchError extends Error {
  constructor(
    readonly element: string,
    override readonly cause: unknown,
  ) {
    super(`cannot dispatch <${element}/>: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'DispatchError';
  }
}

export interface ConnectionOptions {
  host: string;
  port: number;
  /** The XMPP domain: stream `to`, SASL realm, and the name the server certificate must carry. */
  domain: string;
  /** SASL authentication identity (the JID's local part). */
  username: string;
  password: string;
  resource: string;
  mechanism: SaslMechanismName;
  /** PEM CA certificate(s) to trust instead of the default store; undefined: the default store. */
  ca?: string | Buffer;
  /** Per-step timeout (stream open, STARTTLS, SASL, bind), ms. */
  stepTimeoutMs: number;
  /** Incoming <message/> and <presence/> stanzas (after login). Must not throw. */
  onStanza(stanza: XmlElement): void;
  /** A roster push from our own account (RFC 6121 §2.1.6). Must not throw. */
  onRosterPush(items: RosterItem[]): void;
}

export interface XmppConnection {
  entity: Client;
  iqCaller: IqCaller;
}

/** The service URI for xmpp.js: plain TCP (STARTTLS follows) to host:port. */
export function serviceUri(host: string, port: number): string {
  return `xmpp://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
}

export function createConnection(opts: ConnectionOptions): XmppConnection {
  const entity = new Client({
    service: serviceUri(opts.host, opts.port),
    domain: opts.domain,
    timeout: opts.stepTimeoutMs,
  });
  tcp({ entity });
  // xmpp.js dispatches parsed elements synchronously from the socket's 'data' handler, and a few
  // of its paths throw on odd input (a stanza whose from="user@" has no domain makes the middleware
  // context's JID parser throw; a <stream:error/> without a condition makes StreamError.fromElement
  // throw): that would be an uncaught exception. Turn it into an 'error' event instead.
  const dispatch = entity._onElement.bind(entity);
  entity._onElement = (element) => {
    try {
      dispatch(element);
    } catch (err) {
      entity.emit('error', new DispatchError(element.name, err));
    }
  };
  const middleware = middlewareFactory({ entity });
  const iqCaller = iqCallerFactory({ middleware, entity });
  const iqCallee = iqCalleeFactory({ middleware, entity });

  // 1. TLS first, always. Any <stream:features/> on a plaintext stream must offer STARTTLS.
  middleware.use(async (ctx, next) => {
    if (!ctx.stanza.is('features', NS_STREAM) || entity.isSecure()) return next();
    if (!ctx.stanza.getChild('starttls', NS_TLS)) {
      throw new LoginError('tls', 'the server does not offer STARTTLS; refusing a plaintext stream');
    }
    const answer = await entity.sendReceive(xml('starttls', { xmlns: NS_TLS }));
    if (!answer.is('proceed', NS_TLS)) throw new LoginError('tls', `the server refused STARTTLS (<${answer.name}/>)`);
    const plain = entity.socket;
    if (!(plain instanceof net.Socket)) throw new LoginError('protocol', 'STARTTLS: no TCP socket to upgrade');
    // A NAT that forgot our mapping drops what the server sends until we send something: a
    // keepalive probe after 15 s idle re-creates the mapping (or meets a reset, and we reconnect)
    // instead of leaving presence and signals undelivered for a minute or more.
    plain.setKeepAlive(true, 15_000);
    plain.setNoDelay(true);
    const secure = await upgradeToTls(plain, tlsOptions(opts), opts.stepTimeoutMs);
    entity._attachSocket(secure);
    await entity.restart();
    return undefined;
  });

  // 2. SASL, only on a TLS stream.
  middleware.use(async (ctx, next) => {
    if (!ctx.stanza.is('features', NS_STREAM)) return next();
    const mechanisms = ctx.stanza.getChild('mechanisms', NS_SASL);
    if (!mechanisms) return next();
    if (!entity.isSecure()) throw new LoginError('tls', 'refusing to authenticate on a plaintext stream');
    const offered = mechanisms.getChildren('mechanism', NS_SASL).map((m) => m.text().trim());
    if (!offered.includes(opts.mechanism)) {
      throw new LoginError(
        'auth',
        `the server does not offer SASL ${opts.mechanism} (it offers ${offered.join(', ') || 'nothing'})`,
      );
    }
    await authenticate(entity, opts);
    await entity.restart();
    return undefined;
  });

  // 3. Resource binding (and the legacy session, when the server says it is not optional).
  middleware.use(async (ctx, next) => {
    if (!ctx.stanza.is('features', NS_STREAM)) return next();
    if (!ctx.stanza.getChild('bind', NS_BIND)) return next();
    if (!entity.isSecure()) throw new LoginError('tls', 'refusing to bind a resource on a plaintext stream');
    let bound: XmlElement | undefined;
    try {
      bound = await iqCaller.set(
        xml('bind', { xmlns: NS_BIND }, xml('resource', {}, opts.resource)),
        undefined,
        opts.stepTimeoutMs,
      );
    } catch (err) {
      throw new LoginError('protocol', `resource binding failed: ${(err as Error).message}`);
    }
    const jidText = bound?.getChildText('jid');
    if (!jidText || !parseJid(jidText)?.resource) throw new LoginError('protocol', 'resource binding returned no full JID');
    const session = ctx.stanza.getChild('session', NS_SESSION);
    if (session && !session.getChild('optional')) {
      await iqCaller.set(xml('session', { xmlns: NS_SESSION }), undefined, opts.stepTimeoutMs);
    }
    entity._jid(jidText);
    entity._ready(false);
    return undefined;
  });

  // XEP-0199: answer the server's pings. Other iq get/set fall through to the callee's
  // service-unavailable reply, so the server never waits on us.
  iqCallee.get(NS_PING, 'ping', () => ({}));
  iqCallee.set(NS_ROSTER, 'query', (ctx) => {
    const from = ctx.stanza.attrs.from;
    const own = entity.jid ? parseJid(entity.jid.toString())?.bare : undefined;
    if (from !== undefined && parseJid(from)?.bare !== own) {
      // RFC 6121 §2.1.6: a push not from our own account is ignored (and answered with an error).
      return xml('error', { type: 'cancel' }, xml('service-unavailable', { xmlns: NS_STANZAS }));
    }
    opts.onRosterPush(parseRosterQuery(ctx.element));
    return {};
  });

  middleware.use((ctx, next) => {
    const { name } = ctx.stanza;
    if ((name === 'message' || name === 'presence') && entity.status === 'online') {
      opts.onStanza(ctx.stanza);
      return undefined;
    }
    return next();
  });

  return { entity, iqCaller };
}

function tlsOptions(opts: ConnectionOptions): tls.ConnectionOptions {
  return {
    // The certificate must name the XMPP domain (RFC 6120 §13.7.2), whatever host we dialed.
    servername: opts.domain,
    host: opts.domain,
    minVersion: 'TLSv1.2',
    // rejectUnauthorized stays at its default (true): never turned off.
    ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
  };
}

/** Runs the TLS handshake over the connected TCP socket; resolves once the peer is verified. */
export function upgradeToTls(
  socket: net.Socket,
  options: tls.ConnectionOptions,
  timeoutMs: number,
): Promise<tls.TLSSocket & ConnectionSocket> {
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ ...options, socket });
    // Errors after the handshake reach the connection's own listener; this one only keeps a late
    // error (before the connection subscribes) from becoming an uncaught exception.
    secure.on('error', () => undefined);
    const done = (err?: Error) => {
      clearTimeout(timer);
      secure.off('secureConnect', onSecure);
      secure.off('error', onError);
      if (err) {
        secure.destroy();
        reject(err);
      } else {
        resolve(Object.assign(secure, { secure: true }));
      }
    };
    const onSecure = () => {
      // rejectUnauthorized already failed the handshake otherwise; this is belt and braces.
      if (!secure.authorized) done(new LoginError('tls', `TLS: certificate not trusted (${String(secure.authorizationError)})`));
      else done();
    };
    const onError = (err: Error & { code?: string }) => {
      done(new LoginError('tls', `TLS handshake with ${String(options.servername)} failed: ${err.code ? `${err.code}: ` : ''}${err.message}`, err.code));
    };
    const timer = setTimeout(() => done(new LoginError('timeout', 'TLS handshake timed out')), timeoutMs);
    secure.once('secureConnect', onSecure);
    secure.once('error', onError);
  });
}

/** The SASL exchange (RFC 6120 §6.4); resolves on verified <success/>, rejects with a LoginError. */
function authenticate(entity: Client, opts: ConnectionOptions): Promise<void> {
  const mech = createMechanism(opts.mechanism, opts.username, opts.password);
  return new Promise<void>((resolve, reject) => {
    let finished = false;
    const finish = (err?: Error) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      entity.off('nonza', onNonza);
      if (err) reject(err);
      else resolve();
    };
    const fail = (err: unknown) => {
      if (err instanceof SaslError) finish(new LoginError('auth', err.message, err.condition));
      else finish(err instanceof Error ? err : new Error(String(err)));
    };
    const decode = (el: XmlElement) => {
      const t = el.text().trim();
      return t === '' || t === '=' ? Buffer.alloc(0) : Buffer.from(t, 'base64');
    };
    const onNonza = (el: XmlElement) => {
      if (el.getNS() !== NS_SASL) return;
      try {
        if (el.name === 'challenge') {
          const resp = mech.challenge(decode(el));
          entity.send(xml('response', { xmlns: NS_SASL }, resp.length ? resp.toString('base64') : undefined)).catch(fail);
        } else if (el.name === 'success') {
          mech.success(decode(el));
          finish();
        } else if (el.name === 'failure') {
          const condition = el.getChildElements().find((c) => c.name !== 'text')?.name ?? 'unknown';
          const text = el.getChildText('text');
          finish(new LoginError('auth', `authentication failed: ${condition}${text ? ` (${text})` : ''}`, condition));
        }
      } catch (err) {
        fail(err);
      }
    };
    const timer = setTimeout(() => finish(new LoginError('timeout', 'SASL: no answer from the server')), opts.stepTimeoutMs);
    entity.on('nonza', onNonza);
    entity
      .send(xml('auth', { xmlns: NS_SASL, mechanism: mech.name }, mech.initial().toString('base64')))
      .catch(fail);
  });
}
