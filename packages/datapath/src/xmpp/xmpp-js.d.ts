// Minimal type declarations for the parts of xmpp.js 0.14 (plain ESM JavaScript, no bundled types)
// that the datapath uses. Only what src/xmpp/*.ts touches is declared; the shapes follow
// node_modules/@xmpp/{xml,connection,client-core,tcp,middleware,iq}/ at 0.14.0.

declare module '@xmpp/client-core' {
  import { EventEmitter } from 'node:events';

  export type XmlChild = XmlElement | string;

  /** An ltx element (what @xmpp/xml builds and its parser emits). */
  export interface XmlElement {
    name: string;
    attrs: Record<string, string | undefined>;
    children: XmlChild[];
    parent: XmlElement | null;
    is(name: string, xmlns?: string): boolean;
    getNS(): string | undefined;
    getChild(name: string, xmlns?: string): XmlElement | undefined;
    getChildren(name: string, xmlns?: string): XmlElement[];
    getChildElements(): XmlElement[];
    getChildText(name: string, xmlns?: string): string | null;
    getText(): string;
    text(): string;
    append(...children: XmlChild[]): XmlElement;
    toString(): string;
  }

  export interface XmlFactory {
    (
      name: string,
      attrs?: Record<string, string | number | undefined> | null,
      ...children: (XmlChild | null | undefined | false | (XmlChild | null | undefined | false)[])[]
    ): XmlElement;
  }
  export const xml: XmlFactory & {
    /** The streaming parser the connection uses: emits 'start' (root), 'element' (each top-level
     *  child of the root), 'end' and 'error'. */
    Parser: new () => XmlParser;
  };

  export interface XmlParser extends EventEmitter {
    write(data: string): void;
  }

  export interface JID {
    local: string;
    domain: string;
    resource: string;
    bare(): JID;
    toString(): string;
  }
  export function jid(address: string): JID;
  export function jid(local: string | null, domain: string, resource?: string): JID;

  export type ConnectionStatus =
    | 'offline'
    | 'connecting'
    | 'connect'
    | 'opening'
    | 'open'
    | 'online'
    | 'closing'
    | 'close'
    | 'disconnecting'
    | 'disconnect';

  export interface ClientOptions {
    service: string;
    domain: string;
    lang?: string;
    /** Per-step timeout (stream open, sendReceive, close), ms; the library's default is 2000. */
    timeout?: number;
  }

  /** A duplex the connection reads from / writes to; `secure` marks a TLS stream (isSecure()). */
  export interface ConnectionSocket extends EventEmitter {
    secure?: boolean;
    write(data: string, cb?: (err?: Error | null) => void): unknown;
    end(): unknown;
    destroy?(err?: Error): unknown;
  }

  export class Client extends EventEmitter {
    constructor(options: ClientOptions);
    options: ClientOptions;
    jid: JID | null;
    status: ConnectionStatus;
    socket: ConnectionSocket | null;
    transports: unknown[];
    timeout: number;
    isSecure(): boolean;
    start(): Promise<JID>;
    stop(): Promise<unknown>;
    disconnect(): Promise<unknown>;
    restart(): Promise<unknown>;
    send(element: XmlElement): Promise<void>;
    sendReceive(element: XmlElement, timeout?: number): Promise<XmlElement>;
    _attachSocket(socket: ConnectionSocket): void;
    /** Dispatches one parsed top-level element ('element', 'stanza'/'nonza' events). */
    _onElement(element: XmlElement): void;
    _jid(address: string): JID;
    _ready(resumed?: boolean): void;
  }
}

declare module '@xmpp/tcp' {
  import type { Client } from '@xmpp/client-core';
  /** Registers the xmpp:// (plain TCP, then STARTTLS) transport on the entity. */
  export default function tcp(deps: { entity: Client }): void;
}

declare module '@xmpp/middleware' {
  import type { Client, XmlElement } from '@xmpp/client-core';
  export interface IncomingContext {
    stanza: XmlElement;
    entity: Client;
    name: string;
    id: string;
    type: string;
    element?: XmlElement;
  }
  export type Next = () => Promise<unknown>;
  export type Handler = (ctx: IncomingContext, next: Next) => unknown;
  export interface Middleware {
    use(fn: Handler): Handler;
    filter(fn: Handler): Handler;
  }
  export default function middleware(deps: { entity: Client }): Middleware;
}

declare module '@xmpp/iq/caller.js' {
  import type { Client, XmlElement } from '@xmpp/client-core';
  import type { Middleware } from '@xmpp/middleware';
  export interface IqCaller {
    request(stanza: XmlElement, timeout?: number): Promise<XmlElement>;
    get(element: XmlElement, to?: string, timeout?: number): Promise<XmlElement | undefined>;
    set(element: XmlElement, to?: string, timeout?: number): Promise<XmlElement | undefined>;
  }
  export default function iqCaller(deps: { middleware: Middleware; entity: Client }): IqCaller;
}

declare module '@xmpp/iq/callee.js' {
  import type { Client, XmlElement } from '@xmpp/client-core';
  import type { Middleware, IncomingContext, Next } from '@xmpp/middleware';
  /** A handler's return: an element (result payload), a truthy value (empty result), or nothing
   *  (service-unavailable); an <error/> element becomes an error reply. */
  export type IqHandler = (ctx: IncomingContext & { element: XmlElement }, next: Next) => unknown;
  export interface IqCallee {
    get(ns: string, name: string, handler: IqHandler): void;
    set(ns: string, name: string, handler: IqHandler): void;
  }
  export default function iqCallee(deps: { middleware: Middleware; entity: Client }): IqCallee;
}
