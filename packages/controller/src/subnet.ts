import { ip4ToNumber, numberToIp4, parseCidr } from '@tincan/protocol';

/** An IPv4 subnet and this node's address in it, from "a.b.c.d/len". */
export class Subnet4 {
  readonly address: string;
  readonly prefix: number;
  readonly network: number;
  readonly mask: number;
  readonly broadcast: number;
  readonly self: number;

  constructor(cidr: string) {
    const c = parseCidr(cidr);
    if (c.family !== 4) throw new Error(`not an IPv4 subnet: ${cidr}`);
    this.address = c.address;
    this.prefix = c.prefix;
    this.mask = c.prefix === 0 ? 0 : (0xffffffff << (32 - c.prefix)) >>> 0;
    this.self = ip4ToNumber(c.address);
    this.network = (this.self & this.mask) >>> 0;
    this.broadcast = (this.network | (~this.mask >>> 0)) >>> 0;
  }

  /** Whether `n` (an address as a 32-bit number) is in the subnet. */
  contains(n: number): boolean {
    return ((n & this.mask) >>> 0) === this.network;
  }

  /** A unicast host address of the subnet other than this node's own. */
  isPeerHost(n: number): boolean {
    return this.contains(n) && n !== this.network && n !== this.broadcast && n !== this.self;
  }

  /** Same as isPeerHost for a dotted quad; false for anything that is not an IPv4 address. */
  isPeerAddress(ip: string): boolean {
    try {
      return this.isPeerHost(ip4ToNumber(ip));
    } catch {
      return false;
    }
  }

  get cidr(): string {
    return `${numberToIp4(this.network)}/${this.prefix}`;
  }
}
