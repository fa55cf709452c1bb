/**
 * tsnet as a library: `import { createController } from 'tsnet'`. The networking module of an
 * engine: networks, sandboxes (network namespaces with hosts/resolv.conf), endpoints with static
 * addresses, aliases and published ports, DNS records, and events, with the same validation,
 * rollback and crash recovery as the CLI (they share engine/engine.ts). One controller may run many
 * operations at once: the store's locks (in-process and cross-process) serialize what must be.
 *
 * A composition root, like cli/main.ts: it builds the real kernel, firewall and store parts.
 */
import { createJsonLogger, parseLogLevel, type Logger, type LogLevel } from '../core/log.js';
import { parseNetnsPath, type NetnsRef } from '../core/net.js';
import { TsnetError } from '../core/errors.js';
import { FIREWALL_BACKENDS, type FirewallBackend } from '../sys/firewall/api.js';
import { createEngine } from '../engine/engine.js';
import { withEvents, type TsnetController } from './events.js';

export type { CreateNetworkRequest, NetworkDetails, NetworkMode, SandboxHandle, SubnetRequest } from '../cnm/controller.js';
export type { EndpointRecord, NetworkRecord, SandboxRecord } from '../cnm/model.js';
export type { ErrorCode } from '../core/errors.js';
export type { Logger, LogLevel } from '../core/log.js';
export type { FirewallBackend } from '../sys/firewall/api.js';
export type {
  ConnectRequest, CreateSandboxRequest, DnsRecord, PublishPort, TsnetController, TsnetEventName, TsnetEvents, TsnetListener,
} from './events.js';
export { TsnetError };

export interface ControllerOptions {
  /** Records directory (default /var/lib/tsnet). */
  readonly stateDir?: string;
  /** Runtime directory: netns files, sockets (default /run/tsnet). */
  readonly runDir?: string;
  /** Default nftables. */
  readonly firewall?: FirewallBackend;
  /** A Logger, or the level of JSON lines on stderr (default warn). */
  readonly log?: Logger | LogLevel;
  /**
   * Path of the network namespace that plays "host" (default: this process's). When it is not this
   * process's own, the controller takes its store locks there through a helper process it starts
   * on first use and ends on close() (the CLI, the plugins and the daemon lock in that namespace).
   */
  readonly hostNetns?: string;
  /**
   * The daemon (embedded DNS, firewall watcher) this controller starts when a sandbox first joins a
   * network and none runs: `close()` stops it unless this is true. True: the engine owns it from
   * then on (it keeps answering names and repairing rules for the sandboxes that stay; `tsnet daemon
   * --stop` ends it). A daemon that was running already is never stopped by the library.
   */
  readonly keepDaemon?: boolean;
}

export interface ClosableController extends TsnetController {
  /**
   * Stops what this controller started: its long-lived helper processes (iproute2 batches) and the
   * daemon it started (unless `keepDaemon`). Networks, sandboxes and their kernel objects stay.
   */
  close(): Promise<void>;
}

/**
 * Opens the controller on a state directory: creates the predefined networks (bridge, host, none)
 * if missing and reconciles what an earlier crash left half-done.
 */
export async function createController(opts: ControllerOptions = {}): Promise<ClosableController> {
  const fw = opts.firewall ?? 'nftables';
  if (!(FIREWALL_BACKENDS as readonly string[]).includes(fw)) {
    throw new TsnetError('INVALID_CONFIG', `firewall: expected ${FIREWALL_BACKENDS.join(', ')}, got ${JSON.stringify(fw)}`, { details: { field: 'firewall' } });
  }
  const log: Logger = typeof opts.log === 'object'
    ? opts.log
    : createJsonLogger({ write: (l) => process.stderr.write(l), level: parseLogLevel(opts.log, 'warn') });
  const hostNs: NetnsRef | undefined = opts.hostNetns !== undefined ? parseNetnsPath(opts.hostNetns, 'hostNetns') : undefined;
  const engine = await createEngine({
    stateDir: opts.stateDir ?? '/var/lib/tsnet',
    runDir: opts.runDir ?? '/run/tsnet',
    firewall: fw,
    log,
    ...(hostNs !== undefined ? { hostNs } : {}),
    ...(process.env['DBUS_SYSTEM_BUS_ADDRESS'] !== undefined ? { systemBus: process.env['DBUS_SYSTEM_BUS_ADDRESS'] } : {}),
  });
  try {
    await engine.controller.ensurePredefined();
    await engine.controller.reconcile();
  } catch (err) {
    await engine.close();
    throw err;
  }
  return {
    ...withEvents(engine.controller, log),
    async close() {
      if (opts.keepDaemon !== true) await engine.stopStartedDaemon();
      await engine.close();
    },
  };
}
