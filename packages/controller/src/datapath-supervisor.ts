import type { Logger } from 'pino';
import type { RpcEvent, RpcParams, RpcResults, RpcVerb, StateResult } from '@tincan/protocol';
import type { Clock, TimerHandle } from './clock.js';
import { Backoff } from './backoff.js';
import { type DatapathPort, errorMessage, isNoAnswer, isUnauthorized } from './datapath-port.js';
import { InputGuard } from './input-guard.js';
import { LogLimiter } from './rate-limit.js';

export interface SupervisorHandlers {
  onEvent(e: RpcEvent): void;
  onPacket(frame: Buffer): void;
  /**
   * (Re)drive the datapath: called with its state when we attach (at start, after a reconnect, and
   * when it restarted). `restarted`: a datapath we were attached to is gone with all its links.
   * Throwing makes the next poll try again.
   */
  attach(state: StateResult, restarted: boolean, seq: number): Promise<void>;
  /** Every later poll; `seq` is the RPC sequence number of the get_state request. */
  onState(state: StateResult, seq: number): void;
  /** The datapath stopped answering (called once per outage). */
  onUnreachable?(reason: string): void;
}

export interface SupervisorOptions {
  /** An already connected client (tests); without `connect` it cannot be replaced. */
  client?: DatapathPort;
  /** Makes a new client (reading the datapath's current token): at start and after a datapath restart. */
  connect?: () => Promise<DatapathPort>;
  clock: Clock;
  logger: Logger;
  handlers: SupervisorHandlers;
  /** get_state every this often (default 5 s). */
  pollIntervalMs?: number;
  /** Retrying a datapath that is not there (yet): first delay and ceiling. */
  retryInitialMs?: number;
  retryMaxMs?: number;
}

export type SupervisorStatus = 'connecting' | 'attached' | 'unreachable' | 'stopped';

/**
 * Keeps a controller attached to its datapath: connects (retrying until the datapath is there),
 * registers for events (set_cb_endpoint), polls get_state, and notices a datapath restart — the
 * restarted datapath writes a new token, so requests come back "unauthorized"; its uptime goes back;
 * its node has no UID; or it no longer sends events to us — then reconnects and re-attaches.
 */
export class DatapathSupervisor {
  private port: DatapathPort | null;
  private portGen = 0;
  private needReconnect = false;
  private attached = false;
  private everAttached = false;
  private lastUptime = -1;
  private timer: TimerHandle | null = null;
  private ticking: Promise<void> | null = null;
  private stopped = false;
  private readonly retry: Backoff;
  private readonly limiter: LogLimiter;
  /** Datapath events and packets whose handler threw: counted drops, not the end of the controller. */
  private readonly guard: InputGuard;
  private readonly pollIntervalMs: number;
  private firstAttach: { resolve: () => void; promise: Promise<void> };
  /** RPC calls sent so far (orders our link creations against get_state snapshots). */
  seq = 0;
  status: SupervisorStatus = 'connecting';
  restarts = 0;
  outages = 0;
  lastError: string | null = null;

  constructor(private readonly opts: SupervisorOptions) {
    if (!opts.client && !opts.connect) throw new Error('DatapathSupervisor needs a client or a connect function');
    this.port = null;
    this.pollIntervalMs = opts.pollIntervalMs ?? 5_000;
    this.retry = new Backoff({ initialMs: opts.retryInitialMs ?? 1_000, maxMs: opts.retryMaxMs ?? 5_000, jitter: 0.1 });
    this.limiter = new LogLimiter(opts.clock, 60_000);
    this.guard = new InputGuard(opts.logger, opts.clock);
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.firstAttach = { resolve, promise };
    if (opts.client) this.adoptPort(opts.client);
  }

  /** Starts the loop; resolves once attached the first time (it keeps retrying until then). */
  start(): Promise<void> {
    void this.tick();
    return this.firstAttach.promise;
  }

  get isAttached(): boolean {
    return this.attached;
  }

  /** Datapath events and packets dropped because their handler threw, by kind ("signal event", "packet", …). */
  get handlerFailures(): Readonly<Record<string, number>> {
    return this.guard.counts;
  }

  /** An RPC call on the current client; an "unauthorized" answer triggers a reconnect. */
  async call<M extends RpcVerb>(m: M, params: RpcParams<M>): Promise<RpcResults[M]> {
    const port = this.port;
    if (!port) throw new Error(`${m}: not connected to the datapath`);
    this.seq++;
    try {
      return await port.call(m, params);
    } catch (err) {
      if (isUnauthorized(err) && port === this.port && !this.needReconnect) {
        this.needReconnect = true;
        this.schedule(0);
      }
      throw err;
    }
  }

  sendPacket(frame: Buffer): void {
    this.port?.sendPacket(frame);
  }

  /** Polls now (tests; also after events that suggest the datapath changed). */
  async pollNow(): Promise<void> {
    if (this.ticking) await this.ticking;
    await this.tick();
  }

  stop(): void {
    this.stopped = true;
    this.firstAttach.resolve(); // nobody waits forever for a stopped supervisor
    this.status = 'stopped';
    if (this.timer !== null) this.opts.clock.clearTimeout(this.timer);
    this.timer = null;
    this.port?.close();
    this.port = null;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer !== null) this.opts.clock.clearTimeout(this.timer);
    this.timer = this.opts.clock.setTimeout(() => {
      this.timer = null;
      void this.tick();
    }, ms);
  }

  private adoptPort(port: DatapathPort): void {
    const gen = ++this.portGen;
    this.port = port;
    port.onEvent((e) => {
      if (gen === this.portGen && !this.stopped) this.guard.run(`${e.event} event`, () => this.opts.handlers.onEvent(e));
    });
    port.onPacket((f) => {
      if (gen === this.portGen && !this.stopped) this.guard.run('packet', () => this.opts.handlers.onPacket(f));
    });
  }

  private tick(): Promise<void> {
    if (this.ticking) return this.ticking;
    this.ticking = this.doTick().finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  private async doTick(): Promise<void> {
    if (this.stopped) return;
    const log = this.opts.logger;
    let next = this.pollIntervalMs;
    try {
      if (!this.port || this.needReconnect) await this.reconnect();
      if (!this.attached) {
        await this.attach();
      } else {
        const seq = ++this.seq;
        const state = await this.port!.call('get_state', { stats: true });
        if (this.stopped) return;
        this.markReachable();
        if (this.looksRestarted(state)) {
          log.warn({ uptime_s: state.node.uptime_s, uid: state.node.uid }, 'the datapath restarted: re-driving it');
          this.restarts++;
          this.attached = false;
          await this.attach({ state, seq });
        } else {
          this.lastUptime = state.node.uptime_s;
          const port = this.port!;
          if (port.localPort !== undefined && !state.node.controller?.endsWith(`:${port.localPort}`)) {
            if (this.limiter.allow('resubscribe').ok) {
              log.warn({ controller: state.node.controller }, 'the datapath sends its events elsewhere: registering again');
            }
            await port.subscribe();
          }
          this.opts.handlers.onState(state, seq);
        }
      }
      this.retry.reset('dp');
      this.lastError = null;
    } catch (err) {
      if (this.stopped) return;
      const msg = errorMessage(err);
      this.lastError = msg;
      if (isUnauthorized(err)) {
        // A new datapath with a new token: read it again.
        if (!this.needReconnect) log.warn('the datapath refused our token (it restarted?): reconnecting');
        this.needReconnect = true;
        next = 0;
      } else {
        next = this.attached ? this.pollIntervalMs : this.retry.fail('dp', this.opts.clock.now());
        if (isNoAnswer(err) && this.status !== 'unreachable' && this.status !== 'connecting') {
          this.status = 'unreachable';
          this.outages++;
          log.warn({ err: msg }, 'the datapath does not answer');
          this.opts.handlers.onUnreachable?.(msg);
        } else if (this.limiter.allow(`err:${msg}`).ok) {
          log.warn({ err: msg }, this.attached ? 'polling the datapath failed' : 'cannot attach to the datapath yet');
        }
      }
    }
    this.schedule(next);
  }

  private async reconnect(): Promise<void> {
    if (!this.opts.connect) {
      if (this.needReconnect) throw new Error('the datapath restarted, and this controller cannot reconnect (no connect function)');
      return;
    }
    const old = this.port;
    this.portGen++; // silence the old client at once
    this.port = null;
    old?.close();
    const port = await this.opts.connect();
    if (this.stopped) {
      port.close();
      return;
    }
    this.adoptPort(port);
    if (this.needReconnect && this.everAttached) this.restarts++;
    this.needReconnect = false;
    this.attached = false;
  }

  private async attach(known?: { state: StateResult; seq: number }): Promise<void> {
    const port = this.port!;
    await port.subscribe();
    const seq = known?.seq ?? ++this.seq;
    const state = known?.state ?? (await port.call('get_state', { stats: true }));
    if (this.stopped) return;
    this.markReachable();
    const restarted = this.everAttached;
    await this.opts.handlers.attach(state, restarted, seq);
    this.attached = true;
    this.everAttached = true;
    this.lastUptime = state.node.uptime_s;
    this.opts.logger.info({ restarted, uptime_s: state.node.uptime_s, links: state.links.length }, 'attached to the datapath');
    this.firstAttach.resolve();
  }

  private markReachable(): void {
    if (this.status === 'unreachable') this.opts.logger.info('the datapath answers again');
    this.status = 'attached';
  }

  private looksRestarted(state: StateResult): boolean {
    if (state.node.uid === null) return true;
    return this.lastUptime >= 0 && state.node.uptime_s + 2 < this.lastUptime;
  }
}
