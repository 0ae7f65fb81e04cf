// @tincan/tun: a Linux TUN device for Node.js.
//
// The native addon (native/tun.c) owns the fd: non-blocking reads driven by a uv_poll watcher, drained in
// batches into one reusable buffer; synchronous non-blocking writes, one or many packets per call.
// Addresses, MTU, routes and link state go through iproute2 (`ip`), run with execFile (no shell).
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';

export interface TunOptions {
  /** Interface name (at most 15 bytes). Omitted: the kernel picks one (tun0, tun1, ...). */
  name?: string;
  /** Open one queue of a multi-queue device (IFF_MULTI_QUEUE); open the same name again for more queues. */
  multiQueue?: boolean;
  /** Packets drained per readability callback (1..1024, default 64). */
  batch?: number;
  /** Free bytes in front of each packet in its slot, for a header written in place (0..4096, default 0). */
  headroom?: number;
  /** Room for one packet (576..65535, default 65535); a packet longer than this is truncated by the kernel. */
  slotSize?: number;
  /**
   * Segmentation offload: open with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM | TSO4 | TSO6). Every packet read
   * then has its 10-byte struct virtio_net_hdr (VNET_HDR_LEN) in the last bytes of its headroom, just
   * before it (so headroom must be at least 10), and may be a TCP super-packet of up to the device's
   * gso_max_size; write() puts a zero header in front of a plain packet, writeVnet() writes
   * [header][packet] as is. Every queue of a multi-queue device must be opened with the same value.
   */
  offload?: boolean;
}

/** sizeof(struct virtio_net_hdr), in front of every packet of a device opened with `offload`. */
export const VNET_HDR_LEN = 10;

/** The packets of one read batch. Reused between callbacks: valid only during the callback. */
export interface PacketBatch {
  /** All slots; packet i is buffer[offsets[i], offsets[i] + lengths[i]), with `headroom` bytes before it. */
  readonly buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  /** Number of packets in this batch (entries of offsets/lengths beyond count are stale). */
  count: number;
}

export interface InterfaceConfig {
  mtu?: number;
  /** Largest super-packet the kernel hands an offload device (`ip link set … gso_max_size`). */
  gsoMaxSize?: number;
  /** Packets the kernel queues for the reader before dropping (the TUN's ring; kernel default 500). */
  txQueueLen?: number;
  /** CIDRs, IPv4 or IPv6, e.g. '10.1.0.1/24', 'fd00::1/64'. */
  addresses?: readonly string[];
  /** Routes sent into the interface, e.g. '10.2.0.0/16'. */
  routes?: readonly string[];
  up?: boolean;
}

interface NativeHandle {
  readonly __tincanTun: unique symbol;
}

interface NativeBinding {
  open(
    name: string | null,
    multiQueue: boolean,
    buffer: Buffer,
    lengths: Uint32Array,
    batch: number,
    headroom: number,
    slotSize: number,
    stride: number,
    onPackets: (count: number) => void,
    onError: (err: Error) => void,
    offload: boolean,
  ): { handle: NativeHandle; name: string };
  resume(h: NativeHandle): void;
  pause(h: NativeHandle): void;
  close(h: NativeHandle): void;
  write(h: NativeHandle, buf: Uint8Array, offset: number, length: number, raw: boolean): boolean;
  writeBatch(h: NativeHandle, bufs: readonly Uint8Array[], count: number): number;
  writePackets(h: NativeHandle, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  nativeHeap: {
    supported: boolean;
    limitArenas(n: number): boolean;
    trim(): boolean;
    trimInBackground(): Promise<boolean>;
    stats(): NativeHeapStats | null;
  };
  usrsctpSysctl: {
    get(marker: string, name: string): number | null;
    set(marker: string, name: string, value: number): boolean;
  };
}

let binding: NativeBinding | undefined;
function native(): NativeBinding {
  if (!binding) {
    const require = createRequire(import.meta.url);
    try {
      binding = require('../build/Release/tincan_tun.node') as NativeBinding;
    } catch (err) {
      throw new Error(
        `@tincan/tun: cannot load the native addon build/Release/tincan_tun.node ` +
          `(build it with \`npm run build --workspace @tincan/tun\`): ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return binding;
}

/** An error about an invalid argument, with code ERR_INVALID_ARG_VALUE (like Node's own). */
function invalid(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_VALUE' });
}

function intOption(value: number | undefined, name: string, min: number, max: number, dflt: number): number {
  if (value === undefined) return dflt;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalid(`TunOptions.${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

/** Interface names the kernel accepts: 1..15 bytes, no '/', ':' or whitespace, not '.' or '..'. */
export function isValidInterfaceName(name: string): boolean {
  return (
    Buffer.byteLength(name) >= 1 &&
    Buffer.byteLength(name) <= 15 &&
    !/[/:\s]/.test(name) &&
    name !== '.' &&
    name !== '..'
  );
}

class Batch implements PacketBatch {
  count = 0;
  constructor(
    readonly buffer: Buffer,
    readonly offsets: Uint32Array,
    readonly lengths: Uint32Array,
  ) {}
}

export class TunDevice {
  readonly name: string;
  readonly headroom: number;
  /** Opened with `offload` (IFF_VNET_HDR): see TunOptions.offload. */
  readonly offload: boolean;
  /** The slots (read buffer) and their layout, also reachable from each PacketBatch. */
  readonly batch: PacketBatch;
  #handle: NativeHandle;
  #closed = false;
  #onPackets: ((batch: PacketBatch) => void) | undefined;
  #onError: ((err: Error) => void) | undefined;

  private constructor(handle: NativeHandle, name: string, headroom: number, batch: PacketBatch, offload: boolean) {
    this.#handle = handle;
    this.name = name;
    this.headroom = headroom;
    this.batch = batch;
    this.offload = offload;
  }

  /** Opens (creating if needed) a TUN device. Throws an Error with .code (ENOENT, EPERM, EBUSY, ...). */
  static open(opts: TunOptions = {}): TunDevice {
    if (typeof opts !== 'object' || opts === null) throw invalid('TunOptions must be an object');
    const { name, multiQueue = false, offload = false } = opts;
    if (name !== undefined && (typeof name !== 'string' || !isValidInterfaceName(name))) {
      throw invalid(`TunOptions.name must be 1..15 bytes without '/', ':' or spaces, got ${JSON.stringify(name)}`);
    }
    if (typeof multiQueue !== 'boolean') throw invalid('TunOptions.multiQueue must be a boolean');
    if (typeof offload !== 'boolean') throw invalid('TunOptions.offload must be a boolean');
    const batchSize = intOption(opts.batch, 'batch', 1, 1024, 64);
    const headroom = intOption(opts.headroom, 'headroom', offload ? VNET_HDR_LEN : 0, 4096, offload ? VNET_HDR_LEN : 0);
    const slotSize = intOption(opts.slotSize, 'slotSize', 576, 65535, 65535);
    const stride = Math.ceil((headroom + slotSize) / 8) * 8; // keeps every slot 8-byte aligned
    const buffer = Buffer.allocUnsafeSlow(batchSize * stride);
    const offsets = new Uint32Array(batchSize);
    for (let i = 0; i < batchSize; i++) offsets[i] = i * stride + headroom;
    const lengths = new Uint32Array(batchSize);
    const batch = new Batch(buffer, offsets, lengths);
    let dev: TunDevice | undefined;
    const opened = native().open(
      name ?? null,
      multiQueue,
      buffer,
      lengths,
      batchSize,
      headroom,
      slotSize,
      stride,
      (count) => {
        batch.count = count;
        if (dev) dev.#deliver(batch);
      },
      (err) => {
        if (dev) dev.#fail(err);
      },
      offload,
    );
    dev = new TunDevice(opened.handle, opened.name, headroom, batch, offload);
    return dev;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sets the packets callback and starts reading. The batch is only valid during the call. */
  onPackets(cb: (batch: PacketBatch) => void): void {
    if (typeof cb !== 'function') throw invalid('onPackets needs a function');
    this.#checkOpen();
    this.#onPackets = cb;
    native().resume(this.#handle);
  }

  /** Sets the callback for a fatal read error (reading has stopped then). Without one, the error is thrown. */
  onError(cb: (err: Error) => void): void {
    if (typeof cb !== 'function') throw invalid('onError needs a function');
    this.#onError = cb;
  }

  /** Writes one IP packet. false: dropped (queue full, no memory, or packet rejected by the kernel). */
  write(buf: Uint8Array, offset = 0, length = buf.length - offset): boolean {
    this.#checkOpen();
    return native().write(this.#handle, buf, offset, length, false);
  }

  /**
   * Offload devices only: writes [virtio_net_hdr][IP packet] (`length` counts both) as it is, e.g. a
   * super-packet. false: dropped, also when the kernel rejects the header (EINVAL).
   */
  writeVnet(buf: Uint8Array, offset = 0, length = buf.length - offset): boolean {
    this.#checkOpen();
    if (!this.offload) throw invalid(`TUN device ${this.name} was not opened with offload`);
    return native().write(this.#handle, buf, offset, length, true);
  }

  setGsoMaxSize(bytes: number): Promise<void> {
    return configureInterface(this.name, { gsoMaxSize: bytes });
  }

  /** Writes bufs[0..count), one packet per buffer, in one native call. Returns how many were accepted. */
  writeBatch(bufs: readonly Uint8Array[], count: number = bufs.length): number {
    this.#checkOpen();
    return native().writeBatch(this.#handle, bufs, count);
  }

  /** Writes `count` packets out of one buffer (e.g. PacketBatch slots edited in place). Returns how many. */
  writePackets(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    this.#checkOpen();
    return native().writePackets(this.#handle, buf, offsets, lengths, count);
  }

  /** Stops reading; a paused device does not keep the process alive. */
  pause(): void {
    if (!this.#closed) native().pause(this.#handle);
  }

  resume(): void {
    this.#checkOpen();
    if (!this.#onPackets) throw new Error('TunDevice.resume: call onPackets() first');
    native().resume(this.#handle);
  }

  /** Closes the fd (a non-persistent device disappears). Idempotent; allowed inside the packets callback. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native().close(this.#handle);
    this.#onPackets = undefined;
    this.#onError = undefined;
  }

  setMtu(mtu: number): Promise<void> {
    return configureInterface(this.name, { mtu });
  }

  /** The kernel's queue of packets waiting for us to read them (`ip link set … txqueuelen`). */
  setTxQueueLen(packets: number): Promise<void> {
    return configureInterface(this.name, { txQueueLen: packets });
  }

  addAddress(cidr: string): Promise<void> {
    return configureInterface(this.name, { addresses: [cidr] });
  }

  addRoute(cidr: string): Promise<void> {
    return configureInterface(this.name, { routes: [cidr] });
  }

  /** Routes `cidr` into this device, replacing any route to exactly that prefix (`ip route replace`). */
  replaceRoute(cidr: string): Promise<void> {
    return replaceRoute(this.name, cidr);
  }

  /** Removes the route to `cidr` through this device; false if there was none. */
  removeRoute(cidr: string): Promise<boolean> {
    return removeRoute(this.name, cidr);
  }

  setUp(): Promise<void> {
    return configureInterface(this.name, { up: true });
  }

  #checkOpen(): void {
    if (this.#closed) throw Object.assign(new Error(`TUN device ${this.name} is closed`), { code: 'EBADF' });
  }

  #deliver(batch: PacketBatch): void {
    const cb = this.#onPackets;
    if (cb) cb(batch);
  }

  #fail(err: Error): void {
    if (this.#onError) this.#onError(err);
    else throw err;
  }
}

/** An `ip` command failed; .stderr holds what it said. */
export class IpCommandError extends Error {
  readonly code = 'ERR_TUN_IP_COMMAND';
  constructor(
    readonly args: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | string | null,
    options?: ErrorOptions,
  ) {
    super(`\`ip ${args.join(' ')}\` failed (exit ${String(exitCode)}): ${stderr.trim() || 'no output'}`, options);
    this.name = 'IpCommandError';
  }
}

/** Runs `ip ARGS...` (iproute2) without a shell. */
export function ip(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const e = err as NodeJS.ErrnoException & { code?: number | string };
      if (e.code === 'ENOENT') {
        const hint = "iproute2 'ip' command not found (apt-get install iproute2)";
        return reject(new IpCommandError(args, hint, 'ENOENT', { cause: err }));
      }
      reject(new IpCommandError(args, String(stderr), e.code ?? null, { cause: err }));
    });
  });
}

function checkCidr(cidr: string): void {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(typeof cidr === 'string' ? cidr : '');
  const family = m ? isIP(m[1] ?? '') : 0;
  if (!m || !family || Number(m[2]) > (family === 4 ? 32 : 128)) {
    throw invalid(`expected an IPv4 or IPv6 CIDR like 10.0.0.1/24 or fd00::1/64, got ${JSON.stringify(cidr)}`);
  }
}

/** Configures an interface in this order: MTU, gso_max_size, queue length, addresses, link up, routes (these need the link up). */
export async function configureInterface(name: string, cfg: InterfaceConfig): Promise<void> {
  if (!isValidInterfaceName(name)) throw invalid(`invalid interface name ${JSON.stringify(name)}`);
  const { mtu, gsoMaxSize, txQueueLen, addresses = [], routes = [], up = false } = cfg;
  if (mtu !== undefined && (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535)) {
    throw invalid(`MTU must be an integer in [68, 65535], got ${String(mtu)}`);
  }
  if (gsoMaxSize !== undefined && (!Number.isInteger(gsoMaxSize) || gsoMaxSize < 1280 || gsoMaxSize > 65536)) {
    throw invalid(`gsoMaxSize must be an integer in [1280, 65536], got ${String(gsoMaxSize)}`);
  }
  if (txQueueLen !== undefined && (!Number.isInteger(txQueueLen) || txQueueLen < 1 || txQueueLen > 1 << 20)) {
    throw invalid(`txQueueLen must be an integer in [1, ${1 << 20}], got ${String(txQueueLen)}`);
  }
  addresses.forEach(checkCidr);
  routes.forEach(checkCidr);
  if (mtu !== undefined) await ip(['link', 'set', 'dev', name, 'mtu', String(mtu)]);
  if (gsoMaxSize !== undefined) await ip(['link', 'set', 'dev', name, 'gso_max_size', String(gsoMaxSize)]);
  if (txQueueLen !== undefined) await ip(['link', 'set', 'dev', name, 'txqueuelen', String(txQueueLen)]);
  for (const a of addresses) await ip(['addr', 'add', a, 'dev', name]);
  if (up) await ip(['link', 'set', 'dev', name, 'up']);
  for (const r of routes) await ip(['route', 'add', r, 'dev', name]);
}

/** `ip route replace CIDR dev NAME`: adds the route, or moves an existing route to that prefix here. */
export async function replaceRoute(name: string, cidr: string): Promise<void> {
  if (!isValidInterfaceName(name)) throw invalid(`invalid interface name ${JSON.stringify(name)}`);
  checkCidr(cidr);
  await ip(['route', 'replace', cidr, 'dev', name]);
}

/** `ip route del CIDR dev NAME`; resolves false (no error) when there is no such route. */
export async function removeRoute(name: string, cidr: string): Promise<boolean> {
  if (!isValidInterfaceName(name)) throw invalid(`invalid interface name ${JSON.stringify(name)}`);
  checkCidr(cidr);
  try {
    await ip(['route', 'del', cidr, 'dev', name]);
    return true;
  } catch (err) {
    // The kernel answers ESRCH ("No such process") for a route that is not there.
    if (err instanceof IpCommandError && /No such process|not found/i.test(err.stderr)) return false;
    throw err;
  }
}

/** glibc malloc's totals over all arenas (mallinfo2), in bytes. */
export interface NativeHeapStats {
  /** Taken from the kernel for the heaps (sbrk and arena heaps), mmapped blocks not counted. */
  heapBytes: number;
  /** In blocks malloc mmapped on their own (large ones). */
  mmappedBytes: number;
  /** Allocated, mmapped blocks included. */
  inUseBytes: number;
  /** Free inside the heaps: kept by malloc for reuse, resident until trimmed or reused. */
  freeBytes: number;
  /** Free at the top of the main heap, what a plain trim of it could give back. */
  topReleasableBytes: number;
}

/** The most malloc arenas limitArenas takes. */
export const MAX_MALLOC_ARENAS = 64;

/**
 * The process's C heap (glibc malloc), through the addon's native_heap.c: every native library in the
 * process (libdatachannel, usrsctp, OpenSSL, libjuice, node itself) allocates from it. Without glibc
 * (`supported` false) the calls do nothing: limitArenas and trim return false, stats null.
 */
export const nativeHeap = {
  /** The process runs on glibc malloc, so the calls below act. Loads the addon. */
  get supported(): boolean {
    return native().nativeHeap.supported;
  },

  /**
   * Caps the number of malloc arenas at `arenas` (mallopt M_ARENA_MAX): threads that first allocate after
   * this share the existing arenas once there are that many, instead of each getting one of its own
   * (glibc's default: up to 8 per core, each keeping its own free memory). Takes effect only if called
   * before the process has 9 arenas (when glibc fixes its default), so call it at start, before a library
   * starts threads. True when glibc took it. `arenas`: a whole number, 1..MAX_MALLOC_ARENAS.
   */
  limitArenas(arenas: number): boolean {
    if (!Number.isInteger(arenas) || arenas < 1 || arenas > MAX_MALLOC_ARENAS) {
      throw Object.assign(new RangeError(`nativeHeap.limitArenas takes a whole number of arenas, 1..${MAX_MALLOC_ARENAS}, got ${String(arenas)}`), {
        code: 'ERR_OUT_OF_RANGE',
      });
    }
    return native().nativeHeap.limitArenas(arenas);
  },

  /**
   * Gives the free pages of every arena back to the kernel (malloc_trim(0)); true when glibc madvised any
   * (it says so for pages given back before, too: not a measure of what was freed). Costs a
   * walk over the free lists with each arena locked in turn, and later allocations fault the pages back in:
   * for after a burst of work, not for the per-packet path.
   */
  trim(): boolean {
    return native().nativeHeap.trim();
  },

  /**
   * trim() on a thread of libuv's pool: the main thread goes on meanwhile (a thread that allocates from
   * the arena being trimmed waits for its lock). Resolves with trim()'s answer; false without glibc.
   */
  trimInBackground(): Promise<boolean> {
    return native().nativeHeap.trimInBackground();
  },

  /** malloc's totals (mallinfo2), or null without glibc. */
  stats(): NativeHeapStats | null {
    return native().nativeHeap.stats();
  },
};

/** The part of a loaded module's file path that names node-datachannel's native addon. */
export const NODE_DATACHANNEL_ADDON = 'node_datachannel';

/**
 * usrsctp's settings ("sysctls", e.g. `sack_freq_default`) inside node-datachannel's native addon, through
 * the addon's usrsctp_sysctl.c: node-datachannel links usrsctp in with hidden symbols, and libdatachannel's
 * own SctpSettings do not reach every setting. The addon finds usrsctp's getter and setter in the loaded
 * node-datachannel addon's symbol table and calls them only after checking that the code in memory is the
 * code in that file. `get` returns null and `set` false when it cannot (node-datachannel not loaded yet,
 * a stripped build, a setting usrsctp does not have). usrsctp_init resets every setting, so set them after
 * libdatachannel has initialised usrsctp (node-datachannel's `preload()`); each new SCTP association takes
 * the values in force when it starts. Not for the per-packet path: each call reads the symbol table.
 */
export const usrsctpSysctl = {
  /** The setting's value, or null when it cannot be reached. `name`: letters, digits and _. */
  get(name: string): number | null {
    return native().usrsctpSysctl.get(NODE_DATACHANNEL_ADDON, name);
  },

  /** Sets it; true when usrsctp took the value (it checks the range) and reads it back. */
  set(name: string, value: number): boolean {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      throw Object.assign(new RangeError(`usrsctpSysctl.set takes a whole number 0..2^32-1, got ${String(value)}`), { code: 'ERR_OUT_OF_RANGE' });
    }
    return native().usrsctpSysctl.set(NODE_DATACHANNEL_ADDON, name, value);
  },
};
