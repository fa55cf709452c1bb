/**
 * The composition root of the CNI plugin binaries tsnet-bridge, tsnet-ipam and tsnet-portmap: one
 * CommonJS bundle (dist/tsnet-cni.cjs) started from a V8 startup snapshot in which `preload` has
 * already evaluated every part, or through plugins/cni/bin/loader.cjs with a code cache (see
 * cli/commands/cni.ts). Reads the environment, builds the real sys parts only once the request is
 * known to be well-formed (VERSION and malformed input never start a helper process), runs the
 * skeleton and exits with its status.
 *
 * TSNET_CNI_LOG_LEVEL (debug, info, warn (default), error): JSON lines on stderr.
 * TSNET_STATE_DIR, TSNET_RUN_DIR: tsnet's directories for the DNS registry (as for the CLI; a
 * configuration's tsnetStateDir / tsnetRunDir win).
 */
import type { Logger } from '../../core/log.js';
import type { Firewall, FirewallBackend, FirewallDeps } from '../../sys/firewall/api.js';
import type { NetlinkFor } from '../../sys/netlink/api.js';
import type { CniDeps } from './deps.js';
import type { Controller } from '../../cnm/controller.js';
import { dispatch, type Plugin } from './skel.js';

export type PluginKind = 'bridge' | 'ipam' | 'portmap' | 'macvlan';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

/** What a host of many requests (the daemon's CNI service) shares between them. */
export interface DepsOptions {
  readonly log?: Logger;
  /** Handles of the host namespace (long-lived ip process); container namespaces get their own per request. */
  readonly netlink?: NetlinkFor;
  /** tsnet's directories for the DNS registry when a configuration names none (default: TSNET_STATE_DIR / TSNET_RUN_DIR, else /var/lib/tsnet, /run/tsnet). */
  readonly stateDir?: string;
  readonly runDir?: string;
  /** The daemon's controller, for configurations with `tsnetNetwork` (a standalone plugin has none). */
  readonly controller?: () => Promise<Controller>;
}

/** tsnet's DNS registry (plugins/cni/dns.ts): loaded when a request asks for it (and by `preload`). */
const dnsModules = () => Promise.all([import('../../sys/store/cni-attachments.js'), import('../../sys/daemon-client.js')]);

/**
 * The real parts, loaded only once the request is known to be well-formed (VERSION and malformed
 * input never load them): dynamic imports, which the bundler turns into lazily evaluated modules.
 */
export async function buildDeps(o: DepsOptions = {}): Promise<CniDeps> {
  const [
    { execPlugin, randomHex }, { TsnetError }, { createJsonLogger, parseLogLevel }, { run, findExecutable },
    { FIREWALL_BACKENDS }, { createIptablesFirewall }, { createNftablesFirewall }, { createNoneFirewall },
    { createIproute2NetlinkFor }, { isNetnsFile, pidAlive }, { openHostLocalStore }, { abstractSocketLock, createLocker }, { createSysctlFor }, { createTcFor },
  ] = await Promise.all([
    import('./delegate.js'), import('../../core/errors.js'), import('../../core/log.js'), import('../../sys/exec.js'),
    import('../../sys/firewall/api.js'), import('../../sys/firewall/iptables.js'), import('../../sys/firewall/nftables.js'), import('../../sys/firewall/none.js'),
    import('../../sys/netlink/iproute2.js'), import('../../sys/netns.js'), import('../../sys/store/host-local.js'), import('../../sys/store/lock.js'), import('../../sys/sysctl.js'), import('../../sys/tc.js'),
  ]);
  const HOST_NETNS = { kind: 'host' } as const;

  const log = o.log ?? createJsonLogger({ write: (l) => process.stderr.write(l), level: parseLogLevel(process.env['TSNET_CNI_LOG_LEVEL'], 'warn') });
  const netlink = o.netlink ?? createIproute2NetlinkFor({ log });
  const firewalls = new Map<string, Firewall>();
  const systemBus = process.env['DBUS_SYSTEM_BUS_ADDRESS'];
  const fwDeps: FirewallDeps = { netns: HOST_NETNS, log, ...(systemBus !== undefined ? { systemBus } : {}) };
  const make = { nftables: createNftablesFirewall, iptables: createIptablesFirewall, none: () => createNoneFirewall() } as const satisfies Record<FirewallBackend, (d: FirewallDeps) => Firewall>;
  const locker = createLocker({ crossProcess: abstractSocketLock('tsnet-cni'), label: 'tsnet-cni' });
  const dnsRegistry: CniDeps['dnsRegistry'] = (dirs) => {
    const stateDir = dirs.stateDir ?? o.stateDir ?? process.env['TSNET_STATE_DIR'] ?? '/var/lib/tsnet';
    const runDir = dirs.runDir ?? o.runDir ?? process.env['TSNET_RUN_DIR'] ?? '/run/tsnet';
    const reg = dnsModules().then(([{ createCniDnsRegistry }, { daemonCall, daemonSocket }]) => createCniDnsRegistry({ stateDir, call: daemonCall, socket: daemonSocket(runDir) }));
    reg.catch(() => undefined); // awaited by every use; never an unhandled rejection
    return {
      put: async (id, rec) => (await reg).put(id, rec),
      remove: async (id) => (await reg).remove(id),
      ids: async (prefix) => (await reg).ids(prefix),
      removeStaleTemps: async (keep) => (await reg).removeStaleTemps(keep),
      reload: async (ms) => (await reg).reload(ms),
    };
  };
  return {
    hostNs: HOST_NETNS,
    dnsRegistry,
    netlink,
    sysctl: createSysctlFor(),
    tc: createTcFor(),
    firewall(backend) {
      let fw = firewalls.get(backend);
      if (!fw) {
        if (!(FIREWALL_BACKENDS as readonly string[]).includes(backend)) {
          throw new TsnetError('INVALID_CONFIG', `firewallBackend: ${JSON.stringify(backend)} is not one of ${FIREWALL_BACKENDS.join(', ')}`, { details: { field: 'firewallBackend' } });
        }
        fw = make[backend as FirewallBackend](fwDeps);
        firewalls.set(backend, fw);
      }
      return fw;
    },
    log,
    randomHex,
    openIpamStore: (dataDir, network) => openHostLocalStore({ ...(dataDir !== undefined ? { dataDir } : {}), network }),
    withLock: (name, fn) => locker.withLock(name, fn),
    isNetns: isNetnsFile,
    isAlive: pidAlive,
    execPlugin: (type, verb, path, env, stdin) => execPlugin(run, findExecutable, { type, verb, path, env, stdin }),
    ...(o.controller !== undefined ? { controller: o.controller } : {}),
  };
}

const FACTORIES = {
  bridge: async () => (await import('./bridge.js')).createBridgePlugin,
  ipam: async () => (await import('./ipam-plugin.js')).createIpamPlugin,
  portmap: async () => (await import('./portmap.js')).createPortmapPlugin,
  macvlan: async () => (await import('./macvlan.js')).createMacvlanPlugin,
} as const satisfies Record<PluginKind, () => Promise<(deps: CniDeps) => Plugin>>;

const isKind = (k: string | undefined): k is PluginKind => k !== undefined && Object.hasOwn(FACTORIES, k);

/**
 * A standalone plugin process: `kind` comes from the binary's name, or from TSNET_CNI_PLUGIN when
 * the C front end (plugins/cni/bin/client.c) runs `tsnet-cni-node` because no daemon listens.
 */
export async function runPlugin(named: string): Promise<never> {
  const fromEnv = process.env['TSNET_CNI_PLUGIN'];
  const kind: PluginKind = isKind(fromEnv) ? fromEnv : isKind(named) ? named : 'bridge';
  const code = await dispatch(
    { env: process.env, readStdin, write: (t) => process.stdout.write(t) },
    async () => {
      const [factory, deps] = await Promise.all([FACTORIES[kind](), buildDeps()]);
      return factory(deps);
    },
  );
  // Exit at once: the ip helper processes see EOF on their stdin and end by themselves.
  await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
  process.exit(code);
}

/**
 * One request served in a long-lived process (the daemon's CNI service): the same dispatch as a
 * standalone plugin, with `deps` built by the host. Resolves with the exit status and stdout.
 */
export async function serveRequest(named: string, env: Readonly<Record<string, string>>, stdin: string, deps: () => Promise<CniDeps>): Promise<{ readonly code: number; readonly stdout: string }> {
  let stdout = '';
  const write = (t: string): void => {
    stdout += t;
  };
  if (!isKind(named)) {
    const { CNI_ERR, CniError, errorJson } = await import('./errors.js');
    write(errorJson(new CniError(CNI_ERR.INVALID_CONFIG, `plugin: ${JSON.stringify(named)} is not one of ${Object.keys(FACTORIES).join(', ')}`, 'unknown plugin'), '1.1.0'));
    return { code: 1, stdout };
  }
  const kind = named;
  const code = await dispatch({ env, readStdin: () => Promise.resolve(stdin), write }, async () => (await FACTORIES[kind]())(await deps()));
  return { code, stdout };
}

/** Loads every part (for a V8 startup snapshot, which then starts with everything evaluated). */
export async function preload(): Promise<void> {
  await Promise.all([...Object.values(FACTORIES).map((f) => f()), buildDeps(), dnsModules()]);
}
