import { ip4ToNumber, numberToIp4 } from '@tincan/protocol';
import type { Subnet4 } from './subnet.js';

/**
 * Host addresses of a subnet handed out to keys (SocialVPN: friends' device UIDs), never the node's
 * own address, the network or the broadcast address. Allocation goes round-robin from a cursor (the
 * address after the last one handed out), so an address that was freed is reused as late as
 * possible; the cursor is part of the persisted state.
 */
export class AddressPool {
  private readonly byKey = new Map<string, number>();
  private readonly byAddr = new Map<number, string>();
  private next: number;

  constructor(
    readonly subnet: Subnet4,
    cursor?: string | null,
  ) {
    this.next = this.subnet.network + 1;
    if (cursor) {
      try {
        const n = ip4ToNumber(cursor);
        if (this.subnet.contains(n)) this.next = n;
      } catch {
        // a bad cursor only costs the round-robin order
      }
    }
  }

  /** Host addresses other keys may get (all hosts but our own). */
  get capacity(): number {
    return this.subnet.broadcast - this.subnet.network - 2;
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Where the next search starts (persist it). */
  get cursor(): string {
    return numberToIp4(this.next);
  }

  get(key: string): string | undefined {
    const n = this.byKey.get(key);
    return n === undefined ? undefined : numberToIp4(n);
  }

  /** The key an address (as a 32-bit number) is assigned to. */
  ownerOf(n: number): string | undefined {
    return this.byAddr.get(n);
  }

  /** Records an existing assignment (from the state file); false if the address is unusable or taken. */
  assign(key: string, ip4: string): boolean {
    let n: number;
    try {
      n = ip4ToNumber(ip4);
    } catch {
      return false;
    }
    if (!this.subnet.isPeerHost(n)) return false;
    const owner = this.byAddr.get(n);
    if (owner !== undefined && owner !== key) return false;
    this.release(key);
    this.byKey.set(key, n);
    this.byAddr.set(n, key);
    return true;
  }

  /** The key's address, allocating the next free one if it has none; null when the subnet is full. */
  allocate(key: string): string | null {
    const have = this.get(key);
    if (have !== undefined) return have;
    const { network, broadcast } = this.subnet;
    const span = broadcast - network - 1; // host addresses
    let n = this.next;
    for (let i = 0; i < span; i++) {
      if (n <= network || n >= broadcast) n = network + 1;
      if (this.subnet.isPeerHost(n) && !this.byAddr.has(n)) {
        this.byKey.set(key, n);
        this.byAddr.set(n, key);
        this.next = n + 1 >= broadcast ? network + 1 : n + 1;
        return numberToIp4(n);
      }
      n++;
    }
    return null;
  }

  /** Frees the key's address. */
  release(key: string): void {
    const n = this.byKey.get(key);
    if (n === undefined) return;
    this.byKey.delete(key);
    if (this.byAddr.get(n) === key) this.byAddr.delete(n);
  }

  entries(): IterableIterator<[string, number]> {
    return this.byKey.entries();
  }
}
