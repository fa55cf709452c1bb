/**
 * The controller's cluster port (cnm/deps.ts ClusterPort) over the cluster store: cluster networks
 * (name, VNI and subnet unique cluster-wide, in one transaction), addresses from the blocks this
 * host leases (ipam/blocks.ts; the local store holds the reservations, so a start needs no store
 * round trip unless a block is needed), and endpoints published under their address's key on this
 * host's lease, which makes publishing the cluster-wide duplicate check.
 *
 * The store client is made on first use: commands that touch only local networks never reach it.
 */
import { TsnetError, isCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { addrFamily, makePrefix, parseIpAddr, parseSubnet, prefixAddr, prefixContains, prefixLen, prefixesOverlap, type IpAddr, type NetworkId, type Prefix } from '../core/net.js';
import type { ClusterNetworkSpec, ClusterPort, RemoteEndpoint } from '../cnm/controller.js';
import type { NetworkRecord } from '../cnm/model.js';
import { blockLenFor, blocksOf, blockSet, subnetSet } from '../ipam/blocks.js';
import { reserveNext, reserveStatic, type ReservationPort } from '../ipam/range-set.js';
import { addrToBigInt, bigIntToAddr, prefixRange } from '../ipam/ranges.js';
import type { ClusterKv, Store } from '../sys/store/api.js';
import {
  BlockRecordSchema, ClusterNetworkRecordSchema, EndpointEntrySchema, KEYS, blockKey, decode, endpointKey, nameKey, networkKey, vniKey,
  type ClusterNetworkRecord, type EndpointEntry,
} from './model.js';
import { z } from 'zod';

/** The pool overlay subnets come from when none is given: 10.91.0.0/16 in /24s (tsnet's local pools are 10.89/16 and 10.90/16). */
export const OVERLAY_POOL = { base: '10.91.0.0/16' as Prefix, size: 24 } as const;
const FIRST_VNI = 256;

export interface ClusterHost {
  /** This host's id in the cluster (its store's engine id). */
  readonly id: string;
  readonly name: string;
  readonly advertise: IpAddr;
}

export interface ClusterPortDeps {
  /** The store client, made on first use. */
  readonly kv: () => ClusterKv;
  /** This host's lease (the agent keeps it alive); with `stale`, that one is gone: a new one. */
  readonly lease: (stale?: string) => Promise<string>;
  readonly local: Store;
  readonly host: ClusterHost;
  readonly log: Logger;
  readonly now: () => Date;
  /** The host's routes: a default overlay subnet avoids them. */
  readonly hostRoutes: () => Promise<readonly Prefix[]>;
}

const LocalBlockSchema = z.strictObject({ network: z.string(), block: z.string() });
const CursorSchema = z.strictObject({ cursor: z.string() });

export function specOfCluster(r: ClusterNetworkRecord): ClusterNetworkSpec {
  return {
    id: r.id, name: r.name, driver: r.driver, subnets: r.subnets.map((x) => ({ subnet: x.subnet, gateway: x.gateway, ...(x.ipRange !== undefined ? { ipRange: x.ipRange } : {}) })), internal: r.internal, options: { ...r.options, vni: String(r.vni) },
    labels: r.labels, dnsEnabled: r.dnsEnabled, created: r.created,
  };
}

export function remoteOf(e: EndpointEntry): RemoteEndpoint {
  return {
    networkId: e.network as NetworkId, endpointId: e.endpoint, sandboxId: e.sandbox, host: e.host, hostName: e.hostName,
    vtep: e.vtep, ip: e.ip, mac: e.mac, names: e.names,
  };
}

export function createClusterPort(d: ClusterPortDeps): ClusterPort & { readonly host: ClusterHost } {
  const blocks = d.local.collection({ name: 'cluster-blocks', version: 1, schema: LocalBlockSchema });
  const cursors = d.local.collection({ name: 'cluster-cursors', version: 1, schema: CursorSchema });
  const poolName = (net: string): string => `cluster-${net.slice(0, 48)}`;
  const portOf = (net: string): ReservationPort => {
    const res = d.local.reservations(poolName(net));
    return {
      reserve: (addr, owner) => res.reserve(addr, owner),
      release: async (addr) => void (await res.release(addr)),
      list: async () => (await res.list()).map((r) => ({ addr: r.key as IpAddr, owner: r.owner })),
      getCursor: async () => (await cursors.get(poolName(net)))?.cursor as IpAddr | undefined,
      setCursor: async (addr) => void (await cursors.put(poolName(net), { cursor: addr })),
    };
  };
  const myBlocks = async (net: string): Promise<Prefix[]> =>
    (await blocks.list({ prefix: net.slice(0, 16) })).entries.filter((e) => e.record.network === net).map((e) => e.record.block as Prefix)
      .sort((a, b) => (addrToBigInt(prefixAddr(a)) < addrToBigInt(prefixAddr(b)) ? -1 : 1));

  async function readNetwork(id: string): Promise<ClusterNetworkRecord | undefined> {
    const e = await d.kv().get(networkKey(id));
    return e === undefined ? undefined : decode(ClusterNetworkRecordSchema, e.key, e.value);
  }

  /** Leases the first free block of the network for this host (two round trips, once per block). */
  async function claimBlock(net: NetworkRecord): Promise<Prefix> {
    const s = net.subnets[0];
    if (s === undefined) throw new TsnetError('INTERNAL', `network ${net.name} has no subnet`);
    const len = blockLenFor(s.subnet, s.ipRange);
    for (let attempt = 0; attempt < 8; attempt++) {
      const taken = new Set((await d.kv().list(`${KEYS.blocks}${net.id}/`)).entries.map((e) => decode(BlockRecordSchema, e.key, e.value).block as string));
      const free = blocksOf(s.subnet, s.ipRange, len).find((b) => !taken.has(b));
      if (free === undefined) {
        throw new TsnetError('EXHAUSTED', `network ${net.name}: every address block of ${s.ipRange ?? s.subnet} (/${len}) is leased to a host; no free address block for this host`, { details: { network: net.id } });
      }
      const key = blockKey(net.id, free);
      const r = await d.kv().txn({ if: [{ key, absent: true }], then: [{ op: 'put', key, value: JSON.stringify({ host: d.host.id, block: free }) }] });
      if (!r.succeeded) continue; // another host took it meanwhile
      await blocks.put(`${net.id.slice(0, 16)}-${prefixAddr(free)}`, { network: net.id, block: free });
      d.log.info('address block leased', { network: net.name, block: free });
      return free;
    }
    throw new TsnetError('UNAVAILABLE', `network ${net.name}: could not lease an address block (lost every race to other hosts); try again`);
  }

  const exhausted = (net: NetworkRecord) => (): TsnetError => new TsnetError('EXHAUSTED', `network ${net.name}: this host's address blocks are full`, { details: { network: net.id } });

  return {
    host: d.host,

    async createNetwork(req) {
      const kv = d.kv();
      if (req.subnets.length > 1) throw new TsnetError('INVALID_CONFIG', 'subnet: an overlay network has one subnet', { details: { field: 'subnet' } });
      const want = req.subnets[0];
      const { entries } = await kv.list(KEYS.networks);
      const others = entries.flatMap((e) => {
        try {
          return [decode(ClusterNetworkRecordSchema, e.key, e.value)];
        } catch (err) {
          d.log.warn('skipping an unreadable cluster network', { key: e.key, err: (err as Error).message });
          return [];
        }
      });
      if (others.some((n) => n.name === req.name)) throw new TsnetError('ALREADY_EXISTS', `network with name ${req.name} already exists in the cluster`, { details: { field: 'name' } });
      const used = others.flatMap((n) => n.subnets.map((x) => x.subnet));
      const routes = await d.hostRoutes();
      let subnet: Prefix;
      if (want?.subnet !== undefined) {
        subnet = parseSubnet(want.subnet, 'subnet');
        const clash = used.find((u) => prefixesOverlap(u, subnet));
        if (clash !== undefined) throw new TsnetError('INVALID_CONFIG', `subnet: ${subnet} overlaps ${clash} of another cluster network`, { details: { field: 'subnet' } });
      } else {
        const pool = prefixRange(OVERLAY_POOL.base);
        const size = 1n << BigInt(32 - OVERLAY_POOL.size);
        let pick: Prefix | undefined;
        for (let n = pool.first; n <= pool.last && pick === undefined; n += size) {
          const cand = makePrefix(bigIntToAddr(n, 4), OVERLAY_POOL.size);
          if (!used.some((u) => prefixesOverlap(u, cand)) && !routes.some((r) => prefixesOverlap(r, cand))) pick = cand;
        }
        if (pick === undefined) throw new TsnetError('EXHAUSTED', `subnet: no free /${OVERLAY_POOL.size} left in ${OVERLAY_POOL.base} for an overlay network; give --subnet`, { details: { field: 'subnet' } });
        subnet = pick;
      }
      if (addrFamily(subnet) !== 4 || prefixLen(subnet) > 29) throw new TsnetError('INVALID_CONFIG', `subnet: ${subnet}: an overlay subnet is IPv4, /29 or larger`, { details: { field: 'subnet' } });
      const gateway = want?.gateway !== undefined ? parseIpAddr(want.gateway, 'gateway') : bigIntToAddr(prefixRange(subnet).first + 1n, 4);
      if (!prefixContains(subnet, gateway)) throw new TsnetError('INVALID_CONFIG', `gateway: ${gateway} is outside ${subnet}`, { details: { field: 'gateway' } });
      const ipRange = want?.ipRange !== undefined ? parseSubnet(want.ipRange, 'ip-range') : undefined;
      if (ipRange !== undefined && !prefixesOverlap(ipRange, subnet)) throw new TsnetError('INVALID_CONFIG', `ip-range: ${ipRange} is outside ${subnet}`, { details: { field: 'ip-range' } });
      const vnis = new Set(others.map((n) => n.vni));
      for (let attempt = 0; attempt < 8; attempt++) {
        let vni = FIRST_VNI;
        while (vnis.has(vni)) vni++;
        const rec: ClusterNetworkRecord = {
          schemaVersion: 1, id: req.id, name: req.name, driver: 'overlay', vni, subnets: [{ subnet, gateway, ...(ipRange !== undefined ? { ipRange } : {}) }],
          blockLen: blockLenFor(subnet, ipRange), internal: req.internal, dnsEnabled: req.dnsEnabled, options: { ...req.options }, labels: { ...req.labels },
          created: d.now().toISOString(), createdBy: d.host.id,
        };
        const r = await kv.txn({
          if: [{ key: nameKey(req.name), absent: true }, { key: vniKey(vni), absent: true }],
          then: [
            { op: 'put', key: networkKey(req.id), value: JSON.stringify(rec) },
            { op: 'put', key: nameKey(req.name), value: req.id },
            { op: 'put', key: vniKey(vni), value: req.id },
          ],
          readOnFailure: [nameKey(req.name)],
        });
        if (r.succeeded) {
          d.log.info('cluster network created', { network: req.id, name: req.name, vni, subnet });
          return specOfCluster(rec);
        }
        if (r.read.length > 0) throw new TsnetError('ALREADY_EXISTS', `network with name ${req.name} already exists in the cluster`, { details: { field: 'name' } });
        vnis.add(vni); // another network took the VNI meanwhile
      }
      throw new TsnetError('UNAVAILABLE', `network ${req.name}: could not reserve a VNI (lost every race); try again`);
    },

    async deleteNetwork(id, name) {
      const kv = d.kv();
      const eps = (await kv.list(`${KEYS.endpoints}${id}/`)).entries.map((e) => decode(EndpointEntrySchema, e.key, e.value));
      const elsewhere = eps.filter((e) => e.host !== d.host.id);
      if (elsewhere.length > 0) {
        const hosts = [...new Set(elsewhere.map((e) => e.hostName || e.host))].sort();
        throw new TsnetError('ALREADY_EXISTS', `error while removing network: network ${name} id ${id} has active endpoints on other hosts (${elsewhere.length} on ${hosts.join(', ')})`, { details: { field: 'network' } });
      }
      const rec = await readNetwork(id);
      const blockKeys = (await kv.list(`${KEYS.blocks}${id}/`)).entries.map((e) => e.key);
      await kv.txn({
        if: [],
        then: [
          { op: 'delete', key: networkKey(id) },
          { op: 'delete', key: nameKey(name) },
          ...(rec !== undefined ? [{ op: 'delete' as const, key: vniKey(rec.vni) }] : []),
          ...blockKeys.map((key) => ({ op: 'delete' as const, key })),
        ],
      });
      for (const e of (await blocks.list({ prefix: id.slice(0, 16) })).entries) if (e.record.network === id) await blocks.delete(e.id);
      await d.local.reservations(poolName(id)).releaseAll();
      await cursors.delete(poolName(id));
      d.log.info('cluster network removed', { network: id, name });
    },

    async findNetwork(idOrName) {
      const kv = d.kv();
      let id = /^[0-9a-f]{64}$/.test(idOrName) ? idOrName : (await kv.get(nameKey(idOrName)))?.value;
      if (id === undefined && /^[0-9a-f]{3,63}$/.test(idOrName)) {
        id = (await kv.list(`${KEYS.networks}${idOrName}`)).entries[0]?.key.slice(KEYS.networks.length);
      }
      if (id === undefined) return undefined;
      const rec = await readNetwork(id);
      return rec === undefined ? undefined : specOfCluster(rec);
    },

    async requestAddress(net, owner, ip) {
      const s = net.subnets[0];
      if (s === undefined) throw new TsnetError('INTERNAL', `network ${net.name} has no subnet`);
      const port = portOf(net.id);
      if (ip !== undefined) {
        const got = await reserveStatic(subnetSet(s.subnet, s.gateway), port, ip, owner, {
          label: `network ${net.name}`,
          inUse: (by) => new TsnetError('ALREADY_EXISTS', `address ${ip} on network ${JSON.stringify(net.name)} is in use by ${by === s.gateway ? 'the gateway' : by}; choose another --ip or free that address`, { details: { field: 'ip', value: ip } }),
          outside: () => new TsnetError('INVALID_CONFIG', `ip ${ip} is outside subnet ${s.subnet} of network ${JSON.stringify(net.name)}`, { details: { field: 'ip', value: ip } }),
          excludedName: () => 'the gateway',
        });
        return makePrefix(got.addr, prefixLen(s.subnet));
      }
      for (let round = 0; round < 2; round++) {
        const mine = await myBlocks(net.id);
        if (mine.length > 0) {
          try {
            const got = await reserveNext(blockSet(s.subnet, s.gateway, mine), port, owner, { label: `network ${net.name}`, exhausted: exhausted(net) });
            return makePrefix(got.addr, prefixLen(s.subnet));
          } catch (err) {
            if (!isCode(err, 'EXHAUSTED') || round > 0) throw err;
          }
        }
        await claimBlock(net);
      }
      throw exhausted(net)();
    },

    async releaseOwner(net, owner) {
      await d.local.reservations(poolName(net.id)).releaseOwner(owner);
    },

    async publishEndpoint(net, ep, names) {
      const addr = ep.addresses.find((a) => addrFamily(a) === 4);
      if (addr === undefined || ep.mac === undefined) throw new TsnetError('INTERNAL', `endpoint ${ep.id}: no IPv4 address or MAC to publish`);
      const ip = prefixAddr(addr);
      const entry: EndpointEntry = {
        host: d.host.id, hostName: d.host.name, vtep: d.host.advertise, network: net.id, endpoint: ep.id, sandbox: ep.sandboxId, ip, mac: ep.mac, names: [...names],
      };
      const key = endpointKey(net.id, ip);
      const put = async (lease: string) => d.kv().txn({ if: [{ key, absent: true }], then: [{ op: 'put', key, value: JSON.stringify(entry), lease }], readOnFailure: [key] });
      const lease = await d.lease();
      const r = await put(lease).catch(async (err: unknown) => {
        // The lease expired (no agent kept it alive): a new one, which the agent takes over.
        if (!isCode(err, 'NOT_FOUND')) throw err;
        return put(await d.lease(lease));
      });
      if (r.succeeded) return;
      const holder = r.read[0] === undefined ? undefined : decode(EndpointEntrySchema, key, r.read[0].value);
      if (holder?.endpoint === ep.id) return;
      const who = holder === undefined ? 'another endpoint' : `${holder.names[0] ?? holder.endpoint.slice(0, 12)} on host ${holder.hostName || holder.host}`;
      throw new TsnetError('ALREADY_EXISTS', `address ${ip} on network ${JSON.stringify(net.name)} is in use by ${who}; choose another --ip`, { details: { field: 'ip', value: ip } });
    },

    async withdrawEndpoint(net, ep) {
      const addr = ep.addresses.find((a) => addrFamily(a) === 4);
      if (addr === undefined) return;
      const key = endpointKey(net.id, prefixAddr(addr));
      try {
        const cur = await d.kv().get(key);
        if (cur === undefined) return;
        const e = decode(EndpointEntrySchema, key, cur.value);
        if (e.endpoint !== ep.id) return;
        await d.kv().txn({ if: [{ key, modRevision: cur.modRevision }], then: [{ op: 'delete', key }] });
      } catch (err) {
        // The agent withdraws what this host no longer has when the store is back.
        if (!isCode(err, 'UNAVAILABLE')) throw err;
        d.log.warn('cluster store unreachable: the endpoint will be withdrawn when it is back', { endpoint: ep.id, err: (err as Error).message });
      }
    },

    async remoteEndpoints(networkId) {
      const { entries } = await d.kv().list(`${KEYS.endpoints}${networkId}/`);
      return entries.map((e) => decode(EndpointEntrySchema, e.key, e.value)).filter((e) => e.host !== d.host.id).map(remoteOf);
    },
  };
}

