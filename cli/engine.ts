/**
 * The real wiring of tsnet's parts (store, netlink, firewall, IPAM, drivers, controller, runtime),
 * shared by the CLI and the benchmarks. A composition root: it builds real sys implementations.
 * Every kernel handle is bound to `hostNs` (the namespace playing "host"; the process's own by
 * default).
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { createController, type Controller } from '../cnm/controller.js';
import { createStoreCnmState } from '../cnm/state.js';
import { TsnetError, isCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { HOST_NETNS, prefixLen, type NetnsRef, type SandboxId } from '../core/net.js';
import { hostsFile } from '../dns/hosts-file.js';
import { containerResolvConf, parseResolvConf } from '../dns/resolv-conf.js';
import { createDriverRegistry, type DriverRegistry } from '../drivers/registry.js';
import { createIpam } from '../ipam/allocator.js';
import type { Ipam } from '../ipam/api.js';
import { createStoreIpamStore } from '../ipam/store-adapter.js';
import { createRuntime } from '../runtime/container.js';
import { hostProcessTable, resolveTools } from '../runtime/host.js';
import { createStoreContainerStore } from '../runtime/store-adapter.js';
import type { Runtime } from '../runtime/api.js';
import { SAFE_PATH, run, spawnDetached } from '../sys/exec.js';
import type { Firewall, FirewallBackend, FirewallDeps } from '../sys/firewall/api.js';
import { createIptablesFirewall } from '../sys/firewall/iptables.js';
import { createNftablesFirewall } from '../sys/firewall/nftables.js';
import { createNoneFirewall } from '../sys/firewall/none.js';
import { createHostPorts } from '../sys/host-ports.js';
import { createIproute2NetlinkFor } from '../sys/netlink/iproute2.js';
import { createNetnsManager } from '../sys/netns.js';
import type { Store } from '../sys/store/api.js';
import { openFsStore } from '../sys/store/fs.js';
import { createSysctlFor } from '../sys/sysctl.js';
import type { ContainerDeps } from './commands/container.js';
import { daemonFiles, notifyDaemon } from './daemon.js';

export interface Settings {
  readonly stateDir: string;
  readonly runDir: string;
  readonly firewall: FirewallBackend;
  readonly log: Logger;
  /** The namespace playing host (default: this process's). */
  readonly hostNs?: NetnsRef;
  /** The runtime's shim entry point (default: shim.js beside this bundle). */
  readonly shim?: string;
  /** Where the DNS daemon forwards (TSNET_DNS_UPSTREAM), passed to the daemon this process starts. */
  readonly dnsUpstream?: string;
  /** TSNET_DNS_NATIVE, passed to the daemon this process starts (its native UDP fast path; default on). */
  readonly dnsNative?: string;
  /** The CLI bundle that runs `daemon` (default: tsnet.js beside this bundle; absent → no daemon is started). */
  readonly daemonEntry?: string;
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
  readonly firewall: Firewall;
  readonly parts: EngineParts;
  readonly runtime: Runtime;
  readonly container: ContainerDeps;
  readonly netlink: { closeAll(): Promise<void> };
  close(): Promise<void>;
}

const EngineSchema = z.strictObject({ engineId: z.string().regex(/^[0-9a-f]{32}$/) });
const FIREWALLS = {
  nftables: createNftablesFirewall,
  iptables: createIptablesFirewall,
  none: () => createNoneFirewall(),
} as const satisfies Record<FirewallBackend, (deps: FirewallDeps) => Firewall>;

const randomHex = (n: number): string => randomBytes(n).toString('hex');

/** A file's text, or undefined when it cannot be read. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Starts `tsnet daemon` detached (same state and run directories, this process's namespace), logging to the run directory. */
async function startDaemon(s: Settings): Promise<void> {
  const entry = s.daemonEntry ?? join(dirname(fileURLToPath(import.meta.url)), 'tsnet.js');
  if (!(await access(entry).then(() => true, () => false))) {
    throw new TsnetError('UNAVAILABLE', `cannot start the DNS daemon: ${entry} not found (build with npm run build)`);
  }
  await mkdir(s.runDir, { recursive: true });
  const logFile = await open(daemonFiles(s.runDir).log, 'a');
  try {
    spawnDetached([process.execPath, entry, '--state-dir', s.stateDir, '--run-dir', s.runDir, '--firewall', s.firewall, '--log-level', 'info', 'daemon', ...(s.dnsUpstream !== undefined ? ['--upstream', s.dnsUpstream] : [])], {
      stdio: ['ignore', logFile.fd, logFile.fd],
      ...(s.dnsNative !== undefined ? { env: { TSNET_DNS_NATIVE: s.dnsNative } } : {}),
    });
  } finally {
    await logFile.close();
  }
}

export async function createEngine(s: Settings): Promise<Engine> {
  const hostNs = s.hostNs ?? HOST_NETNS;
  const store = await openFsStore({ dir: s.stateDir });
  const netlink = createIproute2NetlinkFor({ log: s.log });
  const sysctl = createSysctlFor();
  const fwDeps = { netns: hostNs, log: s.log };
  const firewall: Firewall = FIREWALLS[s.firewall](fwDeps);
  const engine = await store
    .collection({ name: 'engine', version: 1, schema: EngineSchema })
    .upsert('engine', (cur) => cur ?? { engineId: randomHex(16) });
  const ipam = createIpam({
    store: createStoreIpamStore(store),
    ulaSeed: engine.engineId,
    // Every route of the host except default routes: a new network must not shadow any of them.
    hostRoutes: async () => (await netlink(hostNs).listRoutes()).filter((r) => prefixLen(r.dst) > 0).map((r) => r.dst),
  });
  const drivers = createDriverRegistry({ hostNs, netlink, sysctl, firewall, log: s.log, randomHex });
  const netns = createNetnsManager(join(s.runDir, 'netns'));
  const sandboxDir = join(s.stateDir, 'sandboxes');
  const hostResolv = async (): Promise<{ host: string; resolved: string | undefined }> => ({
    host: (await readOptional('/etc/resolv.conf')) ?? '',
    resolved: await readOptional('/run/systemd/resolve/resolv.conf'),
  });
  const controller = createController({
    state: createStoreCnmState(store),
    ipam,
    drivers,
    netns,
    hostNs,
    netlink,
    hostPorts: createHostPorts(hostNs, sysctl),
    files: {
      dirFor: (id: SandboxId) => join(sandboxDir, id),
      async write(path, content) {
        await mkdir(dirname(path), { recursive: true });
        // Rewritten in place, never replaced: the container bind-mounts this inode, and a rename
        // would leave it looking at the old file (Docker rewrites /etc/hosts in place too).
        await writeFile(path, content, { mode: 0o644 });
      },
      removeDir: (dir) => rm(dir, { recursive: true, force: true }),
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
    onChange: (e) => notifyDaemon({ runDir: s.runDir, ...(e.kind === 'connected' ? { start: () => startDaemon(s) } : {}) }).then(() => undefined),
    // Docker writes the IPv6 loopback lines whatever the networks (the container has ::1 on lo).
    hostsFile: (self, extra) => hostsFile({ self, extra }),
    log: s.log,
    randomHex,
    now: () => new Date(),
  });
  const distDir = dirname(fileURLToPath(import.meta.url));
  const runtime = createRuntime({
    store: createStoreContainerStore(store),
    procs: hostProcessTable(),
    exec: { run, spawnDetached },
    clock: { now: () => new Date(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) },
    log: s.log,
    randomHex,
    runDir: join(s.runDir, 'containers'),
    logDir: join(s.stateDir, 'logs'),
    shim: [process.execPath, s.shim ?? join(distDir, 'shim.js')],
    tools: await resolveTools(SAFE_PATH),
    async onRemove(rec) {
      await controller.deleteSandbox(rec.id).catch((err: unknown) => {
        if (!isCode(err, 'NOT_FOUND')) throw err;
      });
    },
  });
  const withLock = <T>(name: string, fn: () => Promise<T>): Promise<T> => store.withLock(name, fn);
  const container: ContainerDeps = {
    controller,
    runtime,
    randomHex,
    withLock,
    async reconcile() {
      await controller.ensurePredefined();
      await runtime.reconcile();
      // A sandbox whose container record never came (a run killed half-way) is removed, once the
      // run that makes it is certainly gone (it holds container/<id> until the record exists).
      const containers = new Set((await runtime.list()).map((c) => c.id));
      for (const sb of await controller.listSandboxes()) {
        if (containers.has(sb.id)) continue;
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
  return {
    controller,
    firewall,
    parts: { store, ipam, drivers, randomHex },
    runtime,
    container,
    netlink,
    close: () => netlink.closeAll(),
  };
}

