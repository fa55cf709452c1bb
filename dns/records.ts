/**
 * The embedded resolver's name table (pure): an immutable snapshot built from plain inputs (the
 * daemon converts CNM records into them). The server swaps whole snapshots on reload, so a query is
 * always answered from one consistent table and an update never tears a socket down.
 *
 * Visibility: a client is identified by its source address on the network the query arrived on; it
 * sees the names of every endpoint on the networks its own sandbox is attached to (the arrival
 * network first, so a container on two networks is answered with its address on the client's side).
 */
import { addrFamily, prefixContains, type IpAddr, type Prefix } from '../core/net.js';
import type { DnsEndpointInput, DnsNetworkInput } from './api.js';

export type { DnsEndpointInput, DnsNetworkInput } from './api.js';

export interface NetworkTable {
  readonly id: string;
  readonly name: string;
  readonly internal: boolean;
  readonly subnets: readonly Prefix[];
  readonly gateways: readonly IpAddr[];
  /** Lower-case name → addresses (in endpoint order; several endpoints may share an alias). */
  readonly byName: ReadonlyMap<string, readonly IpAddr[]>;
  /** Address → canonical name (PTR). */
  readonly byAddr: ReadonlyMap<IpAddr, string>;
  /** Address → sandbox id, for identifying clients. */
  readonly clients: ReadonlyMap<IpAddr, string>;
}

export interface DnsSnapshot {
  readonly version: number;
  readonly networks: ReadonlyMap<string, NetworkTable>;
  /** Sandbox id → ids of the DNS-enabled networks it is attached to. */
  readonly sandboxNetworks: ReadonlyMap<string, readonly string[]>;
  readonly records: number;
}

/** DNS names compare case-insensitively and without the root dot. */
export const normalizeName = (name: string): string => name.toLowerCase().replace(/\.$/, '');

export function buildSnapshot(version: number, networks: readonly DnsNetworkInput[], endpoints: readonly DnsEndpointInput[]): DnsSnapshot {
  const tables = new Map<string, { byName: Map<string, IpAddr[]>; byAddr: Map<IpAddr, string>; clients: Map<IpAddr, string> }>();
  for (const n of networks) tables.set(n.id, { byName: new Map(), byAddr: new Map(), clients: new Map() });
  const sandboxNetworks = new Map<string, string[]>();
  let records = 0;
  for (const e of endpoints) {
    const t = tables.get(e.networkId);
    if (!t) continue; // a network without DNS (or not a bridge network)
    const list = sandboxNetworks.get(e.sandboxId) ?? [];
    if (!list.includes(e.networkId)) list.push(e.networkId);
    sandboxNetworks.set(e.sandboxId, list);
    const names = [...new Set(e.names.map(normalizeName).filter((n) => n !== ''))];
    for (const a of e.addresses) {
      t.clients.set(a, e.sandboxId);
      if (names[0] !== undefined && !t.byAddr.has(a)) t.byAddr.set(a, names[0]);
    }
    for (const name of names) {
      const cur = t.byName.get(name) ?? [];
      for (const a of e.addresses) if (!cur.includes(a)) cur.push(a);
      t.byName.set(name, cur);
      records += e.addresses.length;
    }
  }
  return {
    version,
    networks: new Map(networks.map((n) => {
      const t = tables.get(n.id) as NonNullable<ReturnType<typeof tables.get>>;
      return [n.id, { id: n.id, name: n.name, internal: n.internal, subnets: [...n.subnets], gateways: [...n.gateways], ...t }];
    })),
    sandboxNetworks,
    records,
  };
}

/** The networks a client sees (arrival network first), or undefined for a source that is no endpoint there. */
export function visibleNetworks(s: DnsSnapshot, networkId: string, source: IpAddr): NetworkTable[] | undefined {
  const arrival = s.networks.get(networkId);
  const sandbox = arrival?.clients.get(source);
  if (arrival === undefined || sandbox === undefined) return undefined;
  const others = (s.sandboxNetworks.get(sandbox) ?? []).filter((id) => id !== networkId);
  return [arrival, ...others.flatMap((id) => s.networks.get(id) ?? [])];
}

/** Addresses of `name` in the first visible network that knows it; undefined if none does. */
export function lookupName(visible: readonly NetworkTable[], name: string): readonly IpAddr[] | undefined {
  const key = normalizeName(name);
  for (const t of visible) {
    const hit = t.byName.get(key);
    if (hit !== undefined) return hit;
  }
  return undefined;
}

/**
 * What a PTR lookup of `addr` gives: the name of a visible endpoint, "nxdomain" (inside one of the
 * snapshot's subnets, but no visible endpoint) or "foreign" (not ours: forwarded).
 */
export function lookupAddr(s: DnsSnapshot, visible: readonly NetworkTable[], addr: IpAddr): { readonly name: string } | 'nxdomain' | 'foreign' {
  for (const t of visible) {
    const hit = t.byAddr.get(addr);
    if (hit !== undefined) return { name: hit };
  }
  const fam = addrFamily(addr);
  return [...s.networks.values()].some((t) => t.subnets.some((p) => addrFamily(p) === fam && prefixContains(p, addr))) ? 'nxdomain' : 'foreign';
}
