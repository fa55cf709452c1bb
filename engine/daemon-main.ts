/**
 * The tsnet daemon's composition: the services it hosts (embedded DNS, firewall watcher, the CNI
 * plugins' service) over one state and run directory, under the single-instance lock. A
 * composition root: it builds the real store, resolver and engine. `cli/commands/daemon.ts` only
 * parses flags and calls `runTsnetDaemon`.
 */
import { TsnetError, isCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { HOST_NETNS } from '../core/net.js';
import type { Controller } from '../cnm/controller.js';
import { createStoreCnmState } from '../cnm/state.js';
import { parseUpstreams } from '../dns/upstreams.js';
import type { FirewallBackend } from '../sys/firewall/api.js';
import { createCniAttachmentReader } from '../sys/store/cni-attachments-reader.js';
import { watchRuleset } from '../sys/firewall/monitor.js';
import { openFsStore } from '../sys/store/fs.js';
import { makeDir, pathExists, readOptional, replaceFile } from '../sys/files.js';
import { run } from '../sys/exec.js';
import { join, resolve as resolvePath } from 'node:path';
import { UNIT_NAME, systemdUnit } from './systemd-unit.js';
import { createCniService } from './cni-service.js';
import { cliSocketPath, createCliService, type CliServiceOptions } from './cli-service.js';
import { ownNamespaces } from '../sys/netns.js';
import { hostProcessTable } from '../sys/procs.js';
import { listenFramed } from '../sys/unix-socket.js';
import type { DaemonService, RecordChanges } from '../sys/api.js';
import { runDaemon, type DaemonControl } from '../sys/daemon.js';
export { daemonRequest } from '../sys/daemon-control.js';
import { loadDnsNative } from './dns-native.js';
import { createDnsService, type UpstreamSource } from './dns-service.js';
import { clusterStoreClient, createEngine, resolveCluster, type ClusterFlags, type Engine } from './engine.js';
import { createClusterAgent } from '../cluster/agent.js';
import { createFirewallService } from './firewall-service.js';
import { createMetricsService } from './metrics-service.js';
import { createRecoveryService } from './recovery-service.js';
import { serveMetrics } from '../sys/metrics-http.js';
import { createStoreContainerStore } from '../runtime/store-adapter.js';

export interface DaemonSettings {
  readonly stateDir: string;
  readonly runDir: string;
  readonly log: Logger;
  /** The firewall backend the watcher restores rules with. */
  readonly firewall: FirewallBackend;
  /** TSNET_DNS_UPSTREAM: the default of --upstream. */
  readonly dnsUpstream?: string;
  /** TSNET_DNS_NATIVE: the resolver's native UDP fast path, on unless 0/off/false. */
  readonly dnsNative?: string;
  /** The cluster flags as given (else the state directory's saved choice). */
  readonly cluster?: ClusterFlags;
}

export interface DaemonRunOptions {
  /** Forward to these servers (IP[:PORT],...); default: the host's resolv.conf. */
  readonly upstream?: string;
  /** The host resolv.conf to take upstreams from (default /etc/resolv.conf). */
  readonly resolvConf?: string;
  /** Do not serve the CNI plugins' requests. */
  readonly noCni?: boolean;
  /** Serve Prometheus metrics on HOST:PORT (GET /metrics); off when absent. */
  readonly metricsAddress?: string;
  /**
   * The CLI's commands, served on RUN_DIR/cli.sock for the `tsnet` front end (engine/cli-service.ts)
   * with the daemon's engine; absent: not served.
   */
  readonly cli?: (engine: () => Promise<Engine>) => CliServiceOptions['serve'];
  readonly onReady?: () => void;
}

/** Runs the daemon in this process until it is stopped (SIGTERM, `stop`, its pid file removed). */
export async function runTsnetDaemon(settings: DaemonSettings, opts: DaemonRunOptions = {}): Promise<void> {
  const upstreamRaw = opts.upstream ?? settings.dnsUpstream;
  const upstreams: UpstreamSource = upstreamRaw !== undefined
    ? { kind: 'fixed', servers: parseUpstreams(upstreamRaw) }
    : { kind: 'resolv-conf', path: opts.resolvConf ?? '/etc/resolv.conf', resolvedPath: '/run/systemd/resolve/resolv.conf' };
  const store = await openFsStore({ dir: settings.stateDir });
  // One warm engine for every service that acts (firewall restores, recovery, observed exits, the
  // cluster agent), made when first needed (at once for a host in a cluster: the agent programs the
  // kernel through it). Its changes reach the services directly, not through the control socket.
  let control: DaemonControl | undefined;
  let engine: Promise<Engine> | undefined;
  // A change made before the services' control exists (the cluster agent adopting networks as it
  // starts) is not lost: the first control does a full reload.
  let missed = false;
  const reloadServices = (c?: RecordChanges): Promise<void> => {
    if (control !== undefined) return control.reload(c);
    missed = true;
    return Promise.resolve();
  };
  const getEngine = (): Promise<Engine> => (engine ??= createEngine({ ...settings, inDaemon: { reload: reloadServices } }));
  const engineController = async (): Promise<Controller> => (await getEngine()).controller;
  const cluster = await resolveCluster(store, settings.cluster ?? {});
  let agent: ReturnType<typeof createClusterAgent> | undefined;
  const dns = createDnsService({
    state: createStoreCnmState(store), log: settings.log, port: 53, upstreams, native: loadDnsNative(settings.dnsNative), cniAttachments: createCniAttachmentReader(settings.stateDir), readFile: readOptional,
    remote: () => agent?.remote() ?? [],
  });
  if (cluster !== undefined) {
    const e = await getEngine();
    if (e.cluster === undefined) throw new TsnetError('INTERNAL', 'cluster settings without a cluster engine');
    agent = createClusterAgent({
      kv: await clusterStoreClient(cluster, settings.log), local: e.parts.store, host: e.cluster.host, ttl: cluster.ttl, grace: cluster.grace,
      controller: async () => e.controller, onPeers: () => dns.reload(), log: settings.log,
    });
  }
  const services: DaemonService[] = [
    // The agent's own changes (a network adopted) come back to it as a reload while its pass runs:
    // it is asked to apply again, not waited for (waiting would be waiting for itself).
    ...(agent !== undefined ? [{ ...agent, reload: async () => void agent?.reload().catch((err: unknown) => settings.log.warn('cluster agent reload failed', { err: err instanceof Error ? err.message : String(err) })) }] : []),
    dns,
    createFirewallService({ watch: (w) => watchRuleset(HOST_NETNS, w), log: settings.log, controller: engineController }),
    ...(opts.noCni === true ? [] : [createCniService({ stateDir: settings.stateDir, runDir: settings.runDir, log: settings.log, controller: engineController })]),
    ...(opts.cli === undefined ? [] : [createCliService({
      socket: cliSocketPath(settings.runDir), log: settings.log, serve: opts.cli(getEngine),
      namespaces: ownNamespaces, startTime: (pid) => hostProcessTable().startTime(pid), listen: listenFramed,
    })]),
    createRecoveryService({
      log: settings.log,
      recover: async () => (await getEngine()).container.recover(),
      reloadAll: () => reloadServices(),
    }),
  ];
  if (opts.metricsAddress !== undefined) {
    const others = [...services];
    const containers = createStoreContainerStore(store);
    const cnm = createStoreCnmState(store);
    services.push(createMetricsService({
      address: opts.metricsAddress, log: settings.log, services: () => others, serve: serveMetrics,
      containers: () => containers.list(), networks: () => cnm.networks.list(),
    }));
  }
  try {
    await runDaemon({
      runDir: settings.runDir,
      log: settings.log,
      services,
      async holdLock(fn) {
        let entered = false;
        await store.withLock('daemon', async () => {
          entered = true;
          await fn();
        }, { timeoutMs: 300 }).catch((err: unknown) => {
          if (!entered && isCode(err, 'UNAVAILABLE')) throw new TsnetError('ALREADY_EXISTS', `a daemon is already running for ${settings.stateDir}`, { cause: err });
          throw err;
        });
      },
      // A container's supervisor says its process ended: observed now (its sandbox, addresses,
      // ports and names released; an exited --rm container nobody waits for removed).
      async onExited(id) {
        const e = await getEngine();
        await e.runtime.inspect(id).catch((err: unknown) => {
          if (!isCode(err, 'NOT_FOUND')) throw err;
        });
        await e.runtime.collect(id);
      },
      onControl: (c) => {
        control = c;
        if (missed) {
          missed = false;
          void c.reload().catch((err: unknown) => settings.log.warn('reload after start failed', { err: err instanceof Error ? err.message : String(err) }));
        }
      },
      ...(opts.onReady !== undefined ? { onReady: opts.onReady } : {}),
    });
  } finally {
    if (engine) await (await engine.catch(() => undefined))?.close();
  }
}

/**
 * `tsnet daemon --install-unit`: writes the systemd unit (engine/systemd-unit.ts) into `unitDir`
 * and, when systemd runs this host, enables and starts it; returns what it did and what is left to do.
 */
export async function installUnit(settings: DaemonSettings, o: { readonly unitDir: string; readonly entry: string; readonly node: string; readonly upstream?: string }): Promise<{ readonly file: string; readonly started: boolean; readonly next: string }> {
  const file = join(o.unitDir, UNIT_NAME);
  await makeDir(o.unitDir);
  await replaceFile(file, systemdUnit({
    node: o.node, entry: o.entry, stateDir: resolvePath(settings.stateDir), runDir: resolvePath(settings.runDir), firewall: settings.firewall,
    ...(o.upstream !== undefined ? { upstream: o.upstream } : {}),
  }), 0o644);
  const next = `systemctl daemon-reload && systemctl enable --now ${UNIT_NAME}`;
  // systemd runs this host (sd_booted(3)) and the unit went where it looks.
  if (!(await pathExists('/run/systemd/system')) || resolvePath(o.unitDir) !== '/etc/systemd/system') return { file, started: false, next };
  await run(['systemctl', 'daemon-reload'], { timeoutMs: 60_000 });
  await run(['systemctl', 'enable', '--now', UNIT_NAME], { timeoutMs: 60_000 });
  return { file, started: true, next };
}
