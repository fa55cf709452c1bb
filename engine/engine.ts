/**
 * The real wiring of tsnet's parts (store, netlink, firewall, IPAM, drivers, controller, runtime),
 * shared by the CLI and the benchmarks. A composition root: it builds real sys implementations.
 * Every kernel handle is bound to `hostNs` (the namespace playing "host"; the process's own by
 * default).
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { createController, type CnmChange, type Controller } from '../cnm/controller.js';
import { networkHasDns, type NetworkRecord } from '../cnm/model.js';
import { createStoreCnmState } from '../cnm/state.js';
import { TsnetError, isCode } from '../core/errors.js';
import { KeyedMutex } from '../core/keyed-mutex.js';
import type { Logger } from '../core/log.js';
import { HOST_NETNS, parseIpAddr, prefixLen, type NetnsRef, type SandboxId } from '../core/net.js';
import type { ClusterPort } from '../cnm/controller.js';
import { leaseCollection } from '../cluster/agent.js';
import { ClusterSettingsSchema, type ClusterSettings } from '../cluster/model.js';
import { createClusterPort, type ClusterHost } from '../cluster/port.js';
import { createEtcdKv, parseEtcdUrl } from '../sys/store/etcd.js';
import { parseOwnerTag } from '../drivers/owner.js';
import { hostsFile } from '../dns/hosts-file.js';
import { containerResolvConf, parseResolvConf } from '../dns/resolv-conf.js';
import { createDriverRegistry, type DriverRegistry } from '../drivers/registry.js';
import { createIpam } from '../ipam/allocator.js';
import type { Ipam } from '../ipam/api.js';
import { createStoreIpamStore } from '../ipam/store-adapter.js';
import { createRuntime } from '../runtime/container.js';
import { hostProcessTable, resolveTools } from '../sys/procs.js';
import { RUNTIME_TOOLS } from '../runtime/spec.js';
import { createStoreContainerStore } from '../runtime/store-adapter.js';
import type { Runtime } from '../runtime/api.js';
import { SAFE_PATH, inNetns, run, spawnDetached } from '../sys/exec.js';
import type { Firewall, FirewallBackend, FirewallDeps } from '../sys/firewall/api.js';
import { createIptablesFirewall, iptNames, parseSave } from '../sys/firewall/iptables.js';
import { createNftablesFirewall } from '../sys/firewall/nftables.js';
import { createNoneFirewall } from '../sys/firewall/none.js';
import { createHostPorts } from '../sys/host-ports.js';
import { createIproute2NetlinkFor } from '../sys/netlink/iproute2.js';
import { createNetnsManager, inOwnNetns } from '../sys/netns.js';
import { proxiedLock, type ProxiedLock } from '../sys/store/lock-proxy.js';
import type { ClusterKv, Store } from '../sys/store/api.js';
import { openFsStore } from '../sys/store/fs.js';
import { listDir, localFiles, pathExists, readOptional, removePath, withAppendFd, writeInPlace } from '../sys/files.js';
import { createFirewalld } from '../sys/firewall/firewalld.js';
import { hostForward, ownHostRules } from '../sys/firewall/host-chains.js';
import { LET_THROUGH_TO } from '../sys/firewall/plan.js';
import { readHostRules } from '../sys/firewall/host-rules.js';
import type { HostFacts, HostForwardFact } from './doctor.js';
import { createSysctlFor } from '../sys/sysctl.js';
import { LabRecordSchema, type LabRecord } from '../lab/api.js';
import type { Lab } from '../lab/lab.js';
import { createTcFor, probeNetem } from '../sys/tc.js';
import { daemonFiles, daemonRequest, notifyDaemon } from '../sys/daemon-control.js';
import { connectAttach } from '../sys/attach.js';
import { createEventLog } from '../sys/event-log.js';
import { spawnInteractive } from '../sys/pty.js';
import type { Argv, EventLog, RecordChanges } from '../sys/api.js';
import { containerEvent, eventSink, withNetworkEvents, type EventSink } from './events.js';

export interface Settings {
  readonly stateDir: string;
  readonly runDir: string;
  readonly firewall: FirewallBackend;
  readonly log: Logger;
  /** The namespace playing host (default: this process's). */
  readonly hostNs?: NetnsRef;
  /** The runtime's shim entry point (default: shim.js beside this bundle). */
  readonly shim?: string;
  /** The native supervisor (default: tsnet-supervise beside this bundle, when it was built); null: the shim for all. */
  readonly nativeShim?: string | null;
  /** Where the DNS daemon forwards (TSNET_DNS_UPSTREAM), passed to the daemon this process starts. */
  readonly dnsUpstream?: string;
  /** TSNET_DNS_NATIVE, passed to the daemon this process starts (its native UDP fast path; default on). */
  readonly dnsNative?: string;
  /** The CLI bundle that runs `daemon` (default: tsnet.js beside this bundle; absent → no daemon is started). */
  readonly daemonEntry?: string;
  /** DBUS_SYSTEM_BUS_ADDRESS: where firewalld is looked for (default the system bus socket). */
  readonly systemBus?: string;
  /** --cluster-store / --cluster-advertise / --cluster-store-opt as given (persisted; absent: the saved choice). */
  readonly cluster?: ClusterFlags;
  /** Set when the engine runs inside the daemon: changes reach its services directly, not through its socket. */
  readonly inDaemon?: { reload(changes?: RecordChanges): Promise<void> };
}

export interface ClusterFlags {
  readonly store?: string;
  readonly advertise?: string;
  readonly opts?: readonly string[];
}

const CLUSTER_OPTS = ['cafile', 'certfile', 'keyfile', 'ttl', 'grace'] as const;

/**
 * The host's cluster settings: what the flags (or TSNET_CLUSTER_STORE / TSNET_CLUSTER_ADVERTISE)
 * give, over what the state directory saved, saved again when they changed; undefined when this
 * host is in no cluster. INVALID_CONFIG naming the flag.
 */
export async function resolveCluster(store: Store, given: ClusterFlags): Promise<ClusterSettings | undefined> {
  const col = store.collection({ name: 'cluster-settings', version: 1, schema: ClusterSettingsSchema as unknown as z.ZodType<ClusterSettings> });
  const saved = await col.get('cluster');
  if (given.store === undefined && given.advertise === undefined && (given.opts ?? []).length === 0) return saved;
  const opts: Record<string, string> = {};
  for (const o of given.opts ?? []) {
    const eq = o.indexOf('=');
    const k = eq > 0 ? o.slice(0, eq) : o;
    if (eq <= 0 || !(CLUSTER_OPTS as readonly string[]).includes(k)) {
      throw new TsnetError('INVALID_CONFIG', `cluster-store-opt: invalid value ${JSON.stringify(o)}: expected KEY=VALUE with KEY one of ${CLUSTER_OPTS.join(', ')}`, { details: { field: 'cluster-store-opt', value: o } });
    }
    opts[k] = o.slice(eq + 1);
  }
  const storeList = given.store !== undefined ? parseEtcdUrl(given.store, 'cluster-store') : saved?.store;
  const advertise = given.advertise !== undefined ? parseIpAddr(given.advertise, 'cluster-advertise') : saved?.advertise;
  if (storeList === undefined) throw new TsnetError('INVALID_CONFIG', 'cluster-store: required with --cluster-advertise (etcd://IP:PORT[,IP:PORT...])', { details: { field: 'cluster-store' } });
  if (advertise === undefined) throw new TsnetError('INVALID_CONFIG', 'cluster-advertise: required with --cluster-store (this host\'s address on the underlay)', { details: { field: 'cluster-advertise' } });
  const num = (k: 'ttl' | 'grace'): number | undefined => {
    const v = opts[k];
    if (v === undefined) return saved?.[k];
    if (!/^\d+$/.test(v)) throw new TsnetError('INVALID_CONFIG', `cluster-store-opt: ${k}=${v}: expected seconds`, { details: { field: 'cluster-store-opt', value: `${k}=${v}` } });
    return Number(v);
  };
  const path = (k: 'cafile' | 'certfile' | 'keyfile'): string | undefined => opts[k] ?? saved?.[k];
  if ((path('certfile') === undefined) !== (path('keyfile') === undefined)) {
    const [has, lacks] = path('certfile') !== undefined ? ['certfile', 'keyfile'] : ['keyfile', 'certfile'];
    throw new TsnetError('INVALID_CONFIG', `cluster-store-opt: ${has} given without ${lacks} (a client certificate needs both)`, { details: { field: 'cluster-store-opt', value: lacks } });
  }
  const next = ClusterSettingsSchema.safeParse({
    store: storeList, advertise, ...Object.fromEntries((['cafile', 'certfile', 'keyfile'] as const).flatMap((k) => (path(k) !== undefined ? [[k, path(k)]] : []))),
    ...(num('ttl') !== undefined ? { ttl: num('ttl') } : {}), ...(num('grace') !== undefined ? { grace: num('grace') } : {}),
  });
  if (!next.success) throw new TsnetError('INVALID_CONFIG', `cluster-store-opt: ${z.prettifyError(next.error)}`, { details: { field: 'cluster-store-opt' } });
  if (JSON.stringify(next.data) !== JSON.stringify(saved)) await col.put('cluster', next.data);
  return next.data;
}

/** The cluster store client of the settings (TLS files read now). */
export async function clusterStoreClient(c: ClusterSettings, log: Logger): Promise<ClusterKv> {
  const read = async (k: 'cafile' | 'certfile' | 'keyfile'): Promise<string | undefined> => {
    const p = c[k];
    if (p === undefined) return undefined;
    const text = await readOptional(p);
    if (text === undefined) throw new TsnetError('INVALID_CONFIG', `cluster-store-opt: ${k}=${p}: cannot be read`, { details: { field: 'cluster-store-opt', value: `${k}=${p}` } });
    return text;
  };
  const [ca, cert, key] = await Promise.all([read('cafile'), read('certfile'), read('keyfile')]);
  // TLS when any of the three is given (a client certificate alone: the members' CA is one the system trusts).
  const tls = ca !== undefined || cert !== undefined ? { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}) } : undefined;
  return createEtcdKv({ endpoints: c.store, log, ...(tls !== undefined ? { tls } : {}) });
}

/** What the daemon's cluster agent needs from the engine. */
export interface EngineCluster {
  readonly settings: ClusterSettings;
  readonly host: ClusterHost;
  readonly kv: () => Promise<ClusterKv>;
}

/** A controller change as the records the daemon's services re-read. */
export function changesOf(e: CnmChange): RecordChanges {
  return {
    ...(e.kind === 'network-created' || e.kind === 'network-deleted' ? { networks: true } : {}),
    ...(e.endpointIds !== undefined ? { endpoints: e.endpointIds } : {}),
    ...(e.sandboxIds !== undefined ? { sandboxes: e.sandboxIds } : {}),
  };
}

/** What the host-level commands (doctor, firewall reload) need. */
export interface SystemDeps {
  readonly controller: Controller;
  readonly firewall: Firewall;
  readonly hostNs: NetnsRef;
  /** DBUS_SYSTEM_BUS_ADDRESS, where firewalld is asked. */
  readonly systemBus?: string;
  /** Whether the daemon of this run directory answers (doctor). */
  readonly daemon?: () => Promise<{ readonly running: boolean; readonly pid?: number }>;
  /** Records set aside because they could not be read (doctor). */
  readonly unreadable?: () => Promise<NonNullable<HostFacts['unreadable']>>;
  /** Names of the interfaces of the host namespace (doctor: missing bridges). */
  readonly links?: () => Promise<readonly string[]>;
}

async function processNames(): Promise<string[]> {
  const pids = (await listDir('/proc').catch(() => [])).filter((d) => /^\d+$/.test(d));
  const names = await Promise.all(pids.map((p) => readOptional(`/proc/${p}/comm`)));
  return [...new Set(names.filter((n): n is string => n !== undefined).map((n) => n.trim()))];
}

/** The host's iptables FORWARD behaviour and tsnet's let-through rules there, per family, from `iptables-save -t filter`. */
export function hostForwardFacts(saves: { readonly 4?: string; readonly 6?: string }): HostForwardFact[] {
  const n = iptNames('tsnet');
  return ([4, 6] as const).flatMap((family) => {
    const text = saves[family];
    if (text === undefined) return [];
    const saved = parseSave(text);
    const h = hostForward(family, saved);
    const rules = ownHostRules(n, saved).map((r) => ({ chain: r.chain, network: r.comment?.slice(n.comment.length + 5) ?? '' }));
    return [{ family, policy: h.policy, dockerUser: h.dockerUser, rules }];
  });
}

function letThroughTo(backend: Firewall['backend']): Pick<HostFacts, 'letThroughTo'> {
  const to = LET_THROUGH_TO[backend];
  return to === undefined ? {} : { letThroughTo: to };
}

/** What `tsnet doctor` judges (engine/doctor.ts), read from the host and the records. */
export async function gatherHostFacts(d: SystemDeps): Promise<HostFacts> {
  const [rules, ufwConf, ufwDefaults, processes, listing, firewalld] = await Promise.all([
    readHostRules(d.hostNs),
    readOptional('/etc/ufw/ufw.conf'),
    readOptional('/etc/default/ufw'),
    processNames(),
    d.firewall.list().catch(() => undefined),
    createFirewalld({ netns: d.hostNs, name: 'tsnet', ...(d.systemBus !== undefined ? { systemBus: d.systemBus } : {}) }).read({}).catch(() => undefined),
  ]);
  const sysctls: Record<string, string | undefined> = {};
  for (const k of ['net.ipv4.ip_forward', 'net.bridge.bridge-nf-call-iptables']) sysctls[k] = (await readOptional(`/proc/sys/${k.replaceAll('.', '/')}`))?.trim();
  const all = await d.controller.listNetworks();
  const nets = all.filter((n) => n.driver === 'bridge' && n.status === 'ready');
  let withPorts = 0;
  const onNetwork = new Set<string>();
  for (const sb of await d.controller.listSandboxes()) {
    for (const e of await d.controller.endpointsOf(sb.id)) {
      if (e.ports.length > 0) withPorts++;
      if (e.status === 'ready') onNetwork.add(e.networkId);
    }
  }
  const [daemon, unreadable, links] = await Promise.all([d.daemon?.(), d.unreadable?.(), d.links?.()]);
  const have = new Set(links ?? []);
  const bridgeOf = (n: NetworkRecord): string | undefined => (typeof n.config['bridge'] === 'string' ? n.config['bridge'] : undefined);
  return {
    ...(daemon !== undefined ? { daemon: { ...daemon, dnsNetworks: all.filter((n) => n.status === 'ready' && networkHasDns(n) && onNetwork.has(n.id)).map((n) => n.name) } } : {}),
    ...(links !== undefined ? { missingBridges: nets.flatMap((n) => { const b = bridgeOf(n); return b !== undefined && !have.has(b) ? [{ network: n.name, bridge: b }] : []; }) } : {}),
    ...(unreadable !== undefined ? { unreadable } : {}),
    backend: d.firewall.backend,
    ...rules,
    ...(ufwConf !== undefined ? { ufwConf } : {}),
    ...(ufwDefaults !== undefined ? { ufwDefaults } : {}),
    processes,
    sysctls,
    ...(firewalld !== undefined ? { firewalld } : {}),
    hostForward: hostForwardFacts(rules.iptables),
    ...letThroughTo(d.firewall.backend),
    records: { networks: nets.length, endpointsWithPorts: withPorts },
    kernel: listing === undefined ? undefined : { networks: listing.networks.length, endpointsWithPorts: listing.endpoints.length, ...(listing.blocked ? { blocked: listing.blocked.map((id) => nets.find((x) => x.id === id)?.name ?? id) } : {}) },
  };
}

/** What the container commands (run, ps, rm...) need. */
export interface ContainerDeps {
  readonly controller: Controller;
  readonly runtime: Runtime;
  readonly randomHex: (bytes: number) => string;
  readonly events: EventLog;
  /** Holds a cross-process lock while `fn` runs (a crash releases it). */
  readonly withLock: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  /**
   * Finishes or undoes what crashed commands left (containers, sandboxes, endpoints, addresses) and
   * restores missing bridges and rules: every record, so O(containers). No command runs it: each
   * recovers the objects it touches; the daemon runs it when it starts and periodically.
   */
  readonly recover: () => Promise<void>;
  /**
   * The lazy, per-object part of `recover` for a name that is taken: removes the sandbox `id` if its
   * container never came (a `run` killed half-way, whose lock is free) or the container nobody else
   * will remove (`Runtime.collect`). True if the name is free now.
   */
  readonly recoverSandbox: (id: string) => Promise<boolean>;
}

/** The parts below the controller, for the other ways in (the Docker plugin). */
export interface EngineParts {
  readonly store: Store;
  readonly ipam: Ipam;
  readonly drivers: DriverRegistry;
  readonly randomHex: (bytes: number) => string;
}

export interface Engine {
  readonly controller: Controller;
  /** What doctor and firewall reload need. */
  readonly system: SystemDeps;
  /** The event log `tsnet events` reads (every process appends to it). */
  readonly events: EventLog;
  /** `tsnet lab`: topologies from a file, over the controller and the runtime (loaded on first use). */
  lab(): Promise<Lab>;
  readonly firewall: Firewall;
  readonly parts: EngineParts;
  readonly runtime: Runtime;
  readonly container: ContainerDeps;
  readonly netlink: { closeAll(): Promise<void> };
  /** The cluster this host is in, if any. */
  readonly cluster?: EngineCluster;
  /** Stops the daemon if this engine started it (and it still runs); the library's close() does, unless told to leave it. */
  stopStartedDaemon(): Promise<void>;
  close(): Promise<void>;
}

const EngineSchema = z.strictObject({ engineId: z.string().regex(/^[0-9a-f]{32}$/) });
const FIREWALLS = {
  nftables: createNftablesFirewall,
  iptables: createIptablesFirewall,
  none: () => createNoneFirewall(),
} as const satisfies Record<FirewallBackend, (deps: FirewallDeps) => Firewall>;

const randomHex = (n: number): string => randomBytes(n).toString('hex');

/** The directory of this bundle (dist/: tsnet.js, shim.js, lock-proxy.js and the native helpers beside it). */
const DIST_DIR = dirname(fileURLToPath(import.meta.url));

export { readOptional };

/**
 * Starts `tsnet daemon` detached (same state and run directories, this process's namespace), logging
 * to the run directory, under its watchdog (native/watchdog.c: restarts it when it dies) when that
 * was built.
 */
async function startDaemon(s: Settings): Promise<void> {
  const entry = s.daemonEntry ?? join(DIST_DIR, 'tsnet.js');
  if (!(await pathExists(entry))) {
    throw new TsnetError('UNAVAILABLE', `cannot start the DNS daemon: ${entry} not found (build with npm run build)`);
  }
  const watchdog = join(dirname(entry), 'tsnet-watchdog');
  const daemon: Argv = [process.execPath, entry, '--state-dir', s.stateDir, '--run-dir', s.runDir, '--firewall', s.firewall, '--log-level', 'info', 'daemon', ...(s.dnsUpstream !== undefined ? ['--upstream', s.dnsUpstream] : [])];
  // In the namespace playing host (the library's `hostNetns`), where the engine's bridges are.
  const argv: Argv = inNetns(s.hostNs ?? HOST_NETNS, (await pathExists(watchdog)) ? [watchdog, '--', ...daemon] : daemon);
  await withAppendFd(daemonFiles(s.runDir).log, (fd) => {
    spawnDetached(argv, {
      stdio: ['ignore', fd, fd],
      env: { ...(s.dnsNative !== undefined ? { TSNET_DNS_NATIVE: s.dnsNative } : {}), ...(s.systemBus !== undefined ? { DBUS_SYSTEM_BUS_ADDRESS: s.systemBus } : {}) },
    });
  });
}

/**
 * Starts the daemon unless one answers, and returns once it answers: its pid, and whether this call
 * started it. One process at a time starts it, under the store lock `daemon-start`, and waits for it
 * there: parallel first commands (50 `tsnet run -d` on a host where none runs yet, a lab's nodes)
 * would otherwise each spawn a daemon (measured: 10 daemons for 50 runs, 9 of which exited again at
 * the single-instance lock, each a Node start on a loaded machine). A waiter finds it answering.
 */
export async function ensureDaemon(s: Settings, given?: Pick<Store, 'withLock'>, timeoutMs = 15_000): Promise<{ readonly started: boolean; readonly pid: number }> {
  const answering = async (): Promise<number | undefined> => (await daemonRequest(s.runDir, 'status', 5_000).catch(() => undefined))?.pid;
  const running = await answering();
  if (running !== undefined) return { started: false, pid: running };
  const store = given ?? (await openFsStore({ dir: s.stateDir }));
  return store.withLock('daemon-start', async () => {
    const meanwhile = await answering();
    if (meanwhile !== undefined) return { started: false, pid: meanwhile };
    await startDaemon(s);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await new Promise((r) => setTimeout(r, 25));
      const pid = await answering();
      if (pid !== undefined) return { started: true, pid };
      if (Date.now() > deadline) throw new TsnetError('UNAVAILABLE', `daemon did not start within ${timeoutMs} ms; see ${daemonFiles(s.runDir).log}`);
    }
  }, { timeoutMs: timeoutMs + 15_000 });
}

/**
 * The engine record (its id: the owner tag of this store's kernel objects, the IPv6 ULA seed). Read,
 * not rewritten, by every command. One that cannot be read is set aside and made anew, keeping the
 * scope the kernel objects of this state directory carry in their owner tags (so they stay this
 * store's); only the ULA seed of networks made afterwards changes.
 */
async function engineRecord(store: Store, s: Settings, hostNs: NetnsRef, netlink: ReturnType<typeof createIproute2NetlinkFor>): Promise<z.infer<typeof EngineSchema>> {
  const engines = store.collection({ name: 'engine', version: 1, schema: EngineSchema });
  const have = await engines.get('engine', { setAside: true });
  if (have !== undefined) return have;
  let scope: string | undefined;
  if ((await engines.listSetAside()).length > 0) {
    const where = resolvePath(s.stateDir);
    const links = await netlink(hostNs).listLinks().catch(() => []);
    scope = links.map((l) => parseOwnerTag(l.alias)).find((t) => t?.where === where && /^[0-9a-f]{16}$/.test(t.scope))?.scope;
    s.log.warn('the engine record could not be read; it was set aside and made anew', { scope: scope ?? 'new (no kernel object of this store was found)' });
  }
  return engines.upsert('engine', (cur) => cur ?? { engineId: `${scope ?? randomHex(8)}${randomHex(8)}` });
}

/**
 * The store's locks for a process outside the namespace playing host (the library with a
 * `hostNetns` that is not its own): taken there, through a helper (sys/store/lock-proxy.ts), where
 * the CLI, the plugins and the daemon take theirs; undefined in the host's own namespace.
 */
async function lockProxyFor(hostNs: NetnsRef): Promise<((scope: string) => ProxiedLock) | undefined> {
  if (await inOwnNetns(hostNs)) return undefined;
  // Next to this bundle (dist/); from the sources (tests), the built one.
  const candidates = [join(DIST_DIR, 'lock-proxy.js'), join(DIST_DIR, '..', 'dist', 'lock-proxy.js')];
  let entry: string | undefined;
  for (const c of candidates) if (entry === undefined && (await pathExists(c))) entry = c;
  if (entry === undefined) throw new TsnetError('UNAVAILABLE', `the host namespace is not this process's, and its lock helper is missing (${candidates.join(', ')}; build with npm run build)`);
  const argv = inNetns(hostNs, [process.execPath, entry]);
  return (scope) => proxiedLock(argv, scope);
}

export async function createEngine(s: Settings): Promise<Engine> {
  const hostNs = s.hostNs ?? HOST_NETNS;
  let startedDaemon = false;
  let lockProxy: ProxiedLock | undefined;
  const proxyFor = await lockProxyFor(hostNs);
  const store = await openFsStore({ dir: s.stateDir, ...(proxyFor !== undefined ? { crossProcess: (scope: string) => (lockProxy = proxyFor(scope)) } : {}) });
  const netlink = createIproute2NetlinkFor({ log: s.log });
  const sysctl = createSysctlFor();
  const tc = createTcFor();
  const fwDeps: FirewallDeps = { netns: hostNs, log: s.log, ...(s.systemBus !== undefined ? { systemBus: s.systemBus } : {}) };
  const firewall: Firewall = FIREWALLS[s.firewall](fwDeps);
  const engine = await engineRecord(store, s, hostNs, netlink);
  const ipam = createIpam({
    store: createStoreIpamStore(store),
    ulaSeed: engine.engineId,
    // Every route of the host except default routes: a new network must not shadow any of them.
    hostRoutes: async () => (await netlink(hostNs).listRoutes()).filter((r) => prefixLen(r.dst) > 0).map((r) => r.dst),
  });
  const clusterSettings = await resolveCluster(store, s.cluster ?? {});
  let kvMade: Promise<ClusterKv> | undefined;
  const kvOf = (): Promise<ClusterKv> => (kvMade ??= clusterStoreClient(clusterSettings as ClusterSettings, s.log));
  const clusterHost: ClusterHost | undefined = clusterSettings === undefined ? undefined : { id: engine.engineId.slice(0, 16), name: hostname(), advertise: clusterSettings.advertise };
  let clusterPort: ClusterPort | undefined;
  if (clusterSettings !== undefined && clusterHost !== undefined) {
    const kvNow = await kvOf();
    const leases = leaseCollection(store);
    clusterPort = createClusterPort({
      kv: () => kvNow,
      async lease(stale) {
        const cur = (await leases.get('lease'))?.id;
        if (cur !== undefined && cur !== stale) return cur;
        const id = await kvNow.grantLease(clusterSettings.ttl);
        await leases.put('lease', { id });
        return id;
      },
      local: store, host: clusterHost, log: s.log, now: () => new Date(),
      hostRoutes: async () => (await netlink(hostNs).listRoutes()).filter((r) => prefixLen(r.dst) > 0).map((r) => r.dst),
    });
  }
  const drivers = createDriverRegistry({
    hostNs, netlink, sysctl, firewall, log: s.log, randomHex, tc,
    ...(clusterSettings !== undefined ? { advertise: clusterSettings.advertise } : {}),
    withLock: (name, fn) => store.withLock(`drivers/${name}`, fn),
  });
  const netns = createNetnsManager(join(s.runDir, 'netns'));
  const sandboxDir = join(s.stateDir, 'sandboxes');
  const hostResolv = async (): Promise<{ host: string; resolved: string | undefined }> => ({
    host: (await readOptional('/etc/resolv.conf')) ?? '',
    resolved: await readOptional('/run/systemd/resolve/resolv.conf'),
  });
  const daemonStart = new KeyedMutex();
  const events = createEventLog({ dir: join(s.stateDir, 'events'), lock: (name, fn) => store.withLock(name, fn) });
  const sink: EventSink = eventSink(events, s.log);
  const cnmState = createStoreCnmState(store, { onUnreadable: (msg, err) => s.log.warn(msg, { err: err.message }) });
  const controller = withNetworkEvents(createController({
    state: cnmState,
    ipam,
    drivers,
    netns,
    hostNs,
    netlink,
    hostPorts: createHostPorts(hostNs, sysctl),
    // Kernel objects carry this store's tag: only they are ever deleted (drivers/owner.ts).
    owner: { scope: engine.engineId.slice(0, 16), where: resolvePath(s.stateDir) },
    files: {
      dirFor: (id: SandboxId) => join(sandboxDir, id),
      // Rewritten in place, never replaced: the container bind-mounts this inode, and a rename
      // would leave it looking at the old file (Docker rewrites /etc/hosts in place too).
      write: (path, content) => writeInPlace(path, content),
      removeDir: (dir) => removePath(dir),
    },
    async resolvConf(o) {
      const r = await hostResolv();
      return containerResolvConf(parseResolvConf(r.host), r.resolved !== undefined ? parseResolvConf(r.resolved) : undefined, {
        ...(o.dns.length > 0 ? { dns: o.dns } : {}),
        ...(o.dnsSearch.length > 0 ? { dnsSearch: o.dnsSearch } : {}),
        ...(o.dnsOptions.length > 0 ? { dnsOptions: o.dnsOptions } : {}),
        ...(o.embedded !== undefined ? { embedded: o.embedded } : {}),
      });
    },
    // Embedded DNS (issue 5): the daemon reloads from the records and acks before the command
    // returns. It is started when a container joins a network and none answers: it serves DNS and
    // restores firewall rules someone took away (issue 4).
    // One connect at a time may start it: parallel connects (a lab's nodes) would each spawn a
    // daemon, and two that come up together can split the control socket and the DNS sockets
    // between them (names then go unanswered).
    onChange: (e) => (s.inDaemon !== undefined
      ? s.inDaemon.reload(changesOf(e))
      : e.kind === 'connected'
        ? daemonStart.run('start', () => notifyDaemon({ runDir: s.runDir, changes: changesOf(e), start: () => ensureDaemon(s, store).then((d) => void (startedDaemon ||= d.started)) }))
        : notifyDaemon({ runDir: s.runDir, changes: changesOf(e) })).then(() => undefined),
    // Docker writes the IPv6 loopback lines whatever the networks (the container has ::1 on lo).
    hostsFile: (self, extra) => hostsFile({ self, extra }),
    log: s.log,
    randomHex,
    now: () => new Date(),
    sysctl,
    tc,
    ...(clusterPort !== undefined ? { cluster: clusterPort } : {}),
  }), sink, () => new Date());
  const releaseSandbox = async (rec: { readonly id: string }): Promise<void> => {
    await controller.deleteSandbox(rec.id).catch((err: unknown) => {
      if (!isCode(err, 'NOT_FOUND')) throw err;
    });
  };
  const init = (await resolveTools(['tini-static'], SAFE_PATH).catch(() => undefined))?.['tini-static'];
  const containers = createStoreContainerStore(store, { onUnreadable: (err) => s.log.warn('containers: skipping a record that cannot be read', { err: err.message }) });
  /** A container whose record could not be read: its sandbox is not "a container that never came". */
  const unreadableContainer = async (id: string): Promise<boolean> => (await containers.listSetAside()).some((r) => r.id === id);
  const nativeShim = s.nativeShim !== undefined ? s.nativeShim : join(DIST_DIR, 'tsnet-supervise');
  const runtime = createRuntime({
    store: containers,
    procs: hostProcessTable(),
    files: localFiles,
    exec: { run, spawnDetached, interactive: spawnInteractive, attach: connectAttach },
    clock: { now: () => new Date(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) },
    log: s.log,
    randomHex,
    runDir: join(s.runDir, 'containers'),
    logDir: join(s.stateDir, 'logs'),
    shim: [process.execPath, s.shim ?? join(DIST_DIR, 'shim.js')],
    ...(nativeShim !== null && (await pathExists(nativeShim)) ? { nativeShim } : {}),
    daemonSocket: daemonFiles(s.runDir).socket,
    tools: await resolveTools(RUNTIME_TOOLS, SAFE_PATH),
    ...(init !== undefined ? { initPath: init } : {}),
    selfPid: process.pid,
    onRemove: releaseSandbox,
    // As Docker at stop: the sandbox goes (dynamic addresses, host ports, DNS names released); the
    // container's network configuration stays in its record and `start` makes a new sandbox.
    onExit: releaseSandbox,
    onEvent: (e) => sink.emit(containerEvent(e, new Date())),
  });
  const withLock = <T>(name: string, fn: () => Promise<T>): Promise<T> => store.withLock(name, fn);
  const container: ContainerDeps = {
    controller,
    runtime,
    randomHex,
    events,
    withLock,
    async recoverSandbox(id) {
      const hasContainer = (): Promise<boolean> => runtime.inspect(id).then(() => true, (err: unknown) => (isCode(err, 'NOT_FOUND') ? false : Promise.reject(err)));
      if (await hasContainer()) return runtime.collect(id);
      if (await unreadableContainer(id)) return false;
      const sb = await controller.findSandbox(id).catch(() => undefined);
      if (sb?.container !== true) return false; // not a container's (the library's): never taken over
      let removed = false;
      await store.withLock(`container/${id}`, async () => {
        if (await hasContainer()) return;
        await releaseSandbox({ id });
        removed = true;
        s.log.info('removed the sandbox of a container that never started', { sandbox: id });
      }, { timeoutMs: 0 }).catch((err: unknown) => {
        if (!isCode(err, 'UNAVAILABLE')) throw err; // held: a run is making it
      });
      return removed;
    },
    async recover() {
      // The daemon runs this soon after it starts, also on a host that uses tsnet only through CNI:
      // the predefined networks (and so tsnet0) are made only where containers of the CLI exist.
      if ((await runtime.list()).length > 0) await controller.ensurePredefined();
      await runtime.reconcile();
      // A sandbox whose container record never came (a run killed half-way) is removed, once the
      // run that makes it is certainly gone (it holds container/<id> until the record exists).
      const live = new Set((await runtime.list()).map((c) => c.id));
      for (const sb of await controller.listSandboxes()) {
        if (sb.container !== true || live.has(sb.id) || (await unreadableContainer(sb.id))) continue;
        await withLock(`container/${sb.id}`, async () => {
          if ((await runtime.list()).some((c) => c.id === sb.id)) return;
          await controller.deleteSandbox(sb.id).catch((err: unknown) => {
            if (!isCode(err, 'NOT_FOUND')) throw err;
          });
          s.log.info('removed the sandbox of a container that never started', { sandbox: sb.name });
        });
      }
      await controller.reconcile();
    },
  };
  const labRecords = store.collection<LabRecord>({ name: 'labs', version: 1, schema: LabRecordSchema as unknown as z.ZodType<LabRecord> });
  let netem: Promise<boolean> | undefined;
  let labP: Promise<Lab> | undefined;
  const lab = (): Promise<Lab> => (labP ??= import('../lab/lab.js').then(({ createLab }) => createLab({
    controller,
    runtime,
    labs: {
      get: (name) => labRecords.get(name),
      put: async (rec) => {
        await labRecords.put(rec.name, rec);
      },
      delete: async (name) => {
        await labRecords.delete(name);
      },
      async list() {
        const r = await labRecords.list();
        if (r.errors.length > 0) throw new TsnetError('INTERNAL', `labs: ${r.errors.map((e) => e.message).join('; ')}`);
        return r.entries.map((e) => e.record);
      },
    },
    withLock,
    reconcile: () => container.recover(),
    sysctl,
    // Asked once per process, and only by a lab that needs delay, jitter or loss.
    netemAvailable: () => (netem ??= probeNetem()),
    randomHex,
    now: () => new Date(),
    log: s.log,
  })));
  const system: SystemDeps = {
    controller, firewall, hostNs,
    ...(s.systemBus !== undefined ? { systemBus: s.systemBus } : {}),
    daemon: async () => {
      const r = await daemonRequest(s.runDir, 'status', 2_000).catch(() => undefined);
      return r === undefined ? { running: false } : { running: true, pid: r.pid };
    },
    async unreadable() {
      const kinds = [
        ['container', containers.listSetAside()], ['network', cnmState.networks.listSetAside()], ['endpoint', cnmState.endpoints.listSetAside()],
        ['sandbox', cnmState.sandboxes.listSetAside()], ['engine', store.collection({ name: 'engine', version: 1, schema: EngineSchema }).listSetAside()],
      ] as const;
      const out: NonNullable<HostFacts['unreadable']>[number][] = [];
      for (const [kind, list] of kinds) for (const r of await list) out.push({ kind, id: r.id, path: r.path });
      return out;
    },
    links: async () => (await netlink(hostNs).listLinks()).map((l) => l.name as string),
  };
  return {
    controller,
    system,
    events,
    lab,
    firewall,
    parts: { store, ipam, drivers, randomHex },
    runtime,
    container,
    netlink,
    ...(clusterSettings !== undefined && clusterHost !== undefined ? { cluster: { settings: clusterSettings, host: clusterHost, kv: kvOf } } : {}),
    async stopStartedDaemon() {
      if (!startedDaemon) return;
      startedDaemon = false;
      const r = await daemonRequest(s.runDir, 'stop', 5_000).catch(() => undefined);
      if (r === undefined) return;
      // Until the process is gone (its watchdog then ends with it), at most 5 s.
      const procs = hostProcessTable();
      for (let i = 0; i < 100 && (await procs.startTime(r.pid)) !== undefined; i++) await new Promise((res) => setTimeout(res, 50));
    },
    async close() {
      await sink.flush();
      await netlink.closeAll();
      if (kvMade !== undefined) await (await kvMade.catch(() => undefined))?.close();
      await lockProxy?.close();
    },
  };
}

