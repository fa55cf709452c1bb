/**
 * The host's cluster agent, a service of `tsnet daemon`: membership, watches, kernel programming.
 *
 * - Membership: a lease with a TTL (`ttl`, default 10 s), renewed every third of it; the host's
 *   record and its endpoints' entries live on it, so a host that stops renewing (killed daemon, cut
 *   link) disappears from the store when the lease expires, and the others remove its kernel
 *   entries and names. Its address blocks are freed by any host `grace` seconds after it left.
 * - One watch on the cluster's prefix, from the revision of the last full listing; the stream
 *   resumes from the revision after the last one delivered when it reconnects (sys/store/etcd.ts).
 * - Each change of a network's endpoints re-syncs that network's peer entries in the kernel
 *   (driver syncPeers: diff against what is installed, so nothing is ever duplicated) and tells
 *   the DNS service (`onPeers`), which answers the other hosts' names from `remote()`.
 * - Store unreachable: nothing is torn down (running containers keep their entries and names);
 *   renewals go on every second; when the store answers again the agent re-lists everything,
 *   takes a new lease if its old one expired, republishes this host's endpoints, withdraws those
 *   it no longer has, and resumes the watch: it resynchronizes by itself.
 * - Restart: the last known peers are kept in the local store, so a daemon that starts while the
 *   store is unreachable still serves them (kernel entries and DNS).
 */
import type { Logger } from '../core/log.js';
import type { IpAddr, MacAddr } from '../core/net.js';
import type { Controller, RemoteEndpoint } from '../cnm/controller.js';
import type { DaemonService } from '../sys/api.js';
import type { ClusterKv, KvEntry, KvEvent, KvWatch, Store } from '../sys/store/api.js';
import { z } from 'zod';
import {
  BlockRecordSchema, ClusterNetworkRecordSchema, EndpointEntrySchema, HostRecordSchema, KEYS, ROOT, decode, endpointKey, hostKey,
  type BlockRecord, type ClusterNetworkRecord, type EndpointEntry, type HostRecord,
} from './model.js';
import { remoteOf, specOfCluster, type ClusterHost } from './port.js';

export interface ClusterAgentOptions {
  readonly kv: ClusterKv;
  readonly local: Store;
  readonly host: ClusterHost;
  readonly ttl: number;
  readonly grace: number;
  readonly controller: () => Promise<Controller>;
  /** The other hosts' endpoints changed (the DNS service reloads). */
  readonly onPeers: () => Promise<void>;
  readonly log: Logger;
  readonly now?: () => number;
}

const LeaseSchema = z.strictObject({ id: z.string() });
const MirrorSchema = z.strictObject({ endpoints: z.array(EndpointEntrySchema) });

/** The lease record the agent and the CLI share (state directory), as cluster/port.ts's `lease`. */
export function leaseCollection(local: Store) {
  return local.collection({ name: 'cluster-lease', version: 1, schema: LeaseSchema });
}

export function createClusterAgent(o: ClusterAgentOptions): DaemonService & { remote(): RemoteEndpoint[] } {
  const log = o.log.child({ component: 'cluster' });
  const now = o.now ?? Date.now;
  const leases = leaseCollection(o.local);
  const mirror = o.local.collection({ name: 'cluster-mirror', version: 1, schema: MirrorSchema });
  const networks = new Map<string, ClusterNetworkRecord>();
  const endpoints = new Map<string, EndpointEntry>();
  const hosts = new Map<string, HostRecord>();
  const blocks = new Map<string, BlockRecord & { readonly modRevision: number }>();
  const missingSince = new Map<string, number>();
  let lease: string | undefined;
  let connected = false;
  let watch: KvWatch | undefined;
  let renewTimer: NodeJS.Timeout | undefined;
  let gcTimer: NodeJS.Timeout | undefined;
  let stopped = false;
  let syncing: Promise<void> | undefined;
  let applying: Promise<void> | undefined;
  let applyAgain = false;
  /**
   * The cluster networks whose peers changed since the last pass ('all': every one, as after a
   * listing, a reload or a failed pass). Measured: with 12 overlay networks a pass over all of them
   * (a neighbour and an FDB read per VXLAN device) held up the entry of a new container by up to
   * 0.9 s when watch events came in a burst (bench multihost's first reach).
   */
  let dirty: Set<string> | 'all' = 'all';
  const markDirty = (network: string | undefined): void => {
    if (dirty === 'all') return;
    if (network === undefined) dirty = 'all';
    else dirty.add(network);
  };
  const counts = { resyncs: 0, events: 0, peersAdded: 0, peersRemoved: 0, blocksFreed: 0, failures: 0 };
  let lastError: string | undefined;
  const stopHooks: (() => void)[] = [];

  const safeDecode = <T>(schema: z.ZodType<T>, e: { key: string; value: string }): T | undefined => {
    try {
      return decode(schema, e.key, e.value);
    } catch (err) {
      log.warn('skipping an unreadable cluster record', { key: e.key, err: (err as Error).message });
      return undefined;
    }
  };

  /** Applies one record (a listing's or a watch event's) to the caches; returns the network it touched. */
  const take = (key: string, entry: KvEntry | undefined): { network?: string; networkChanged?: boolean } => {
    if (key.startsWith(KEYS.endpoints)) {
      const e = entry === undefined ? undefined : safeDecode(EndpointEntrySchema, entry);
      const before = endpoints.get(key);
      if (e === undefined) endpoints.delete(key);
      else endpoints.set(key, e);
      return { network: e?.network ?? before?.network ?? key.slice(KEYS.endpoints.length).split('/')[0] ?? '' };
    }
    if (key.startsWith(KEYS.networks)) {
      const id = key.slice(KEYS.networks.length);
      const n = entry === undefined ? undefined : safeDecode(ClusterNetworkRecordSchema, entry);
      if (n === undefined) networks.delete(id);
      else networks.set(id, n);
      return { network: id, networkChanged: true };
    }
    if (key.startsWith(KEYS.hosts)) {
      const id = key.slice(KEYS.hosts.length);
      const h = entry === undefined ? undefined : safeDecode(HostRecordSchema, entry);
      if (h === undefined) {
        hosts.delete(id);
        missingSince.set(id, now());
      } else {
        hosts.set(id, h);
        missingSince.delete(id);
      }
      return {};
    }
    if (key.startsWith(KEYS.blocks)) {
      const b = entry === undefined ? undefined : safeDecode(BlockRecordSchema, entry);
      if (b === undefined || entry === undefined) blocks.delete(key);
      else blocks.set(key, { ...b, modRevision: entry.modRevision });
    }
    return {};
  };

  const remote = (): RemoteEndpoint[] => [...endpoints.values()].filter((e) => e.host !== o.host.id).map(remoteOf);

  /** This host's copies of the cluster's networks, its kernel entries and the DNS, from the caches. */
  const applyOnce = async (): Promise<void> => {
    const c = await o.controller();
    const local = (await c.listNetworks()).filter((n) => n.scope === 'cluster');
    if (connected) {
      for (const n of networks.values()) {
        if (!local.some((l) => l.id === n.id)) {
          await c.adoptClusterNetwork(specOfCluster(n)).catch((err: unknown) => log.warn('joining a cluster network failed', { network: n.name, err: (err as Error).message }));
        }
      }
      for (const l of local) if (!networks.has(l.id)) await c.dropClusterNetwork(l.id);
    }
    const peers = remote();
    const todo = dirty;
    dirty = new Set();
    for (const n of (await c.listNetworks()).filter((x) => x.scope === 'cluster' && (todo === 'all' || todo.has(x.id)))) {
      const mine = peers.filter((p) => p.networkId === n.id).map((p) => ({ ip: p.ip, mac: p.mac as MacAddr, vtep: p.vtep as IpAddr }));
      const r = await c.syncClusterPeers(n.id, mine);
      counts.peersAdded += r.added;
      counts.peersRemoved += r.removed;
    }
    await mirror.put('peers', { endpoints: [...endpoints.values()].filter((e) => e.host !== o.host.id) });
    await o.onPeers();
  };
  const apply = (): Promise<void> => {
    if (applying !== undefined) {
      applyAgain = true;
      return applying;
    }
    applying = (async () => {
      try {
        do {
          applyAgain = false;
          await applyOnce().catch((err: unknown) => {
            dirty = 'all'; // the next pass redoes everything
            counts.failures++;
            lastError = (err as Error).message;
            log.error('programming the cluster networks failed', { err: lastError });
          });
        } while (applyAgain);
      } finally {
        applying = undefined;
      }
    })();
    return applying;
  };

  const onEvents = (events: readonly KvEvent[]): void => {
    counts.events += events.length;
    for (const ev of events) {
      const key = ev.type === 'put' ? ev.entry.key : ev.key;
      const touched = take(key, ev.type === 'put' ? ev.entry : undefined);
      if (touched.network !== undefined) markDirty(touched.network);
      else if (key.startsWith(KEYS.hosts)) markDirty(undefined); // a host came or went: every network
    }
    void apply();
  };

  /** This host's endpoints on cluster networks in the store: its local ones, on its lease, and no others. */
  const republish = async (id: string): Promise<void> => {
    const c = await o.controller();
    const nets = new Map((await c.listNetworks()).filter((n) => n.scope === 'cluster').map((n) => [n.id as string, n]));
    const want = new Map<string, EndpointEntry>();
    for (const sb of await c.listSandboxes()) {
      for (const ep of await c.endpointsOf(sb.id)) {
        const net = nets.get(ep.networkId);
        const addr = ep.addresses.find((a) => !a.includes(':'));
        if (net === undefined || ep.status !== 'ready' || addr === undefined || ep.mac === undefined) continue;
        const ip = addr.split('/')[0] as IpAddr;
        want.set(endpointKey(net.id, ip), {
          host: o.host.id, hostName: o.host.name, vtep: o.host.advertise, network: net.id, endpoint: ep.id, sandbox: sb.id, ip, mac: ep.mac,
          names: [sb.name, sb.hostname, ...ep.aliases, sb.id.slice(0, 12)],
        });
      }
    }
    for (const [key, e] of want) {
      const cur = endpoints.get(key);
      if (cur !== undefined && cur.host !== o.host.id) {
        log.error('an address of this host is held by another host\'s endpoint in the cluster store', { key, holder: cur.hostName });
        continue;
      }
      const r = await o.kv.txn({ if: [], then: [{ op: 'put', key, value: JSON.stringify(e), lease: id }] });
      if (r.succeeded) endpoints.set(key, e);
    }
    for (const [key, e] of [...endpoints]) {
      if (e.host === o.host.id && !want.has(key)) {
        await o.kv.delete(key);
        endpoints.delete(key);
      }
    }
  };

  /** The full resync: lease, membership, listing, this host's endpoints, the watch. */
  const resync = async (): Promise<void> => {
    const saved = (await leases.get('lease'))?.id;
    let id = saved !== undefined && (await o.kv.keepAlive(saved)) > 0 ? saved : undefined;
    if (id === undefined) {
      id = await o.kv.grantLease(o.ttl);
      await leases.put('lease', { id });
    }
    lease = id;
    await o.kv.put(hostKey(o.host.id), JSON.stringify({ host: o.host.id, name: o.host.name, advertise: o.host.advertise, since: new Date(now()).toISOString() } satisfies HostRecord), { lease: id });
    const { entries, revision } = await o.kv.list(ROOT);
    endpoints.clear();
    networks.clear();
    hosts.clear();
    blocks.clear();
    for (const e of entries) take(e.key, e);
    dirty = 'all';
    await republish(id);
    connected = true;
    counts.resyncs++;
    watch?.close();
    watch = o.kv.watch(ROOT, revision + 1, {
      onEvents,
      onCompacted: () => void resyncSoon(),
      onConnection: (up) => log.debug('cluster watch', { up }),
    });
    log.info('cluster agent in sync', { revision, networks: networks.size, endpoints: endpoints.size, hosts: hosts.size });
    await apply();
  };
  const resyncSoon = (): Promise<void> => {
    syncing ??= resync()
      .catch((err: unknown) => {
        connected = false;
        counts.failures++;
        lastError = (err as Error).message;
        log.warn('cluster store unreachable; keeping the kernel entries and names as they are', { err: lastError });
      })
      .finally(() => {
        syncing = undefined;
      });
    return syncing;
  };

  const renew = async (): Promise<void> => {
    if (stopped || syncing !== undefined) return;
    if (!connected || lease === undefined) return resyncSoon();
    try {
      if ((await o.kv.keepAlive(lease)) === 0) {
        log.warn('the membership lease expired; rejoining');
        await resyncSoon();
      }
    } catch (err) {
      connected = false;
      lastError = (err as Error).message;
      log.warn('cluster store unreachable', { err: lastError });
    }
  };

  /** Frees the blocks of hosts that left more than `grace` seconds ago. */
  const collect = async (): Promise<void> => {
    if (!connected || stopped) return;
    for (const [key, b] of blocks) {
      if (hosts.has(b.host)) continue;
      const since = missingSince.get(b.host);
      if (since === undefined) {
        missingSince.set(b.host, now());
        continue;
      }
      if (now() - since < o.grace * 1000) continue;
      const r = await o.kv.txn({ if: [{ key, modRevision: b.modRevision }], then: [{ op: 'delete', key }] }).catch(() => undefined);
      if (r?.succeeded === true) {
        counts.blocksFreed++;
        log.info('freed the address block of a host that left', { block: b.block, host: b.host });
      }
    }
  };

  return {
    name: 'cluster',
    async start() {
      const saved = await mirror.get('peers').catch(() => undefined);
      for (const e of saved?.endpoints ?? []) endpoints.set(endpointKey(e.network, e.ip), e);
      if (saved !== undefined) await apply();
      await resyncSoon();
      const every = Math.max(500, Math.floor((o.ttl * 1000) / 3));
      renewTimer = setInterval(() => void renew(), connected ? every : 1000);
      renewTimer.unref();
      // Renew every second while the store is away (rejoin fast), every ttl/3 otherwise.
      const fast = setInterval(() => {
        if (!connected) void renew();
      }, 1000);
      fast.unref();
      gcTimer = setInterval(() => void collect(), 2000);
      gcTimer.unref();
      const stopFast = (): void => clearInterval(fast);
      stopHooks.push(stopFast);
    },
    reload: () => {
      dirty = 'all'; // a reload also repairs what changed in the kernel
      return apply();
    },
    async stop() {
      stopped = true;
      clearInterval(renewTimer);
      clearInterval(gcTimer);
      for (const h of stopHooks) h();
      watch?.close();
      await syncing;
      await applying;
      await o.kv.close();
    },
    status: () => ({
      host: o.host.id, advertise: o.host.advertise, store: o.kv.where, connected, lease: lease ?? null,
      networks: networks.size, endpoints: endpoints.size, remoteEndpoints: remote().length, hosts: [...hosts.values()].map((h) => h.name || h.host).sort(),
      revision: watch?.revision ?? 0, ...counts, ...(lastError !== undefined ? { lastError } : {}),
    }),
    remote,
  };
}

