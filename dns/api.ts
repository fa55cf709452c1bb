/**
 * What the embedded resolver is fed: plain descriptions of the DNS-enabled networks and of the
 * endpoints on them. The writer side (cnm/dns.ts) builds them from the CNM records; dns/records.ts
 * turns them into the table the server answers from.
 */
import type { IpAddr, Prefix } from '../core/net.js';

export interface DnsNetworkInput {
  readonly id: string;
  readonly name: string;
  /** Internal networks answer their own names and never forward. */
  readonly internal: boolean;
  readonly subnets: readonly Prefix[];
  /** Where the resolver listens for this network (its gateways). */
  readonly gateways: readonly IpAddr[];
}

export interface DnsEndpointInput {
  readonly networkId: string;
  readonly sandboxId: string;
  readonly addresses: readonly IpAddr[];
  /** The first name is the canonical one (answered for PTR): container name, then hostname, aliases, short id. */
  readonly names: readonly string[];
}
