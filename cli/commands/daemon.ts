/**
 * `tsnet daemon`: the long-lived process hosting the embedded DNS resolver, the firewall watcher
 * and the CNI plugins' service (cli/cni-service.ts). Runs in the foreground; `--stop`, `--status` and `--reload` talk to a running one. The
 * CLI starts it on demand (detached) when a container joins a DNS-enabled network.
 */
import { TsnetError, isCode } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { createStoreCnmState } from '../../cnm/state.js';
import { parseUpstreams } from '../../dns/upstreams.js';
import { createCniAttachmentReader } from '../../sys/store/cni-attachments-reader.js';
import { openFsStore } from '../../sys/store/fs.js';
import { bool, parseArgs, str, usage, type FlagSpec } from '../args.js';
import { daemonRequest, runDaemon, type DaemonService } from '../daemon.js';
import { createCniService } from '../cni-service.js';
import { loadDnsNative } from '../dns-native.js';
import { createDnsService, type UpstreamSource } from '../dns-service.js';
import type { Controller } from '../../cnm/controller.js';
import { HOST_NETNS } from '../../core/net.js';
import type { FirewallBackend } from '../../sys/firewall/api.js';
import { createEngine, type Engine } from '../engine.js';
import { createFirewallService } from '../firewall-service.js';
import type { Command } from './types.js';

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
}

const SPECS: FlagSpec[] = [
  { name: 'stop', type: 'boolean', help: 'stop the running daemon' },
  { name: 'status', type: 'boolean', help: 'print the running daemon\'s status (JSON)' },
  { name: 'reload', type: 'boolean', help: 'make the running daemon reload the records' },
  { name: 'upstream', type: 'string', help: 'forward to these servers: IP[:PORT],... (TSNET_DNS_UPSTREAM; default: the host\'s resolv.conf)', placeholder: 'LIST' },
  { name: 'resolv-conf', type: 'string', help: 'the host resolv.conf to take upstreams from (default /etc/resolv.conf, following systemd-resolved)', placeholder: 'PATH' },
  { name: 'no-cni', type: 'boolean', help: 'do not serve the CNI plugins\' requests (RUN_DIR/cni.sock; without it they run standalone)' },
  { name: 'help', type: 'boolean', help: 'show this help' },
];

export const daemonCommands = (settings: DaemonSettings): Record<string, Command> => ({
  daemon: {
    summary: 'Run the tsnet daemon (embedded DNS) in the foreground, or --stop/--status/--reload it',
    async run(argv, io) {
      const p = parseArgs(argv, SPECS);
      if (bool(p, 'help')) return io.out(usage('daemon [OPTIONS]', 'Run the daemon serving DNS on every DNS-enabled network\'s gateway (port 53, UDP and TCP).', SPECS, 'tsnet daemon --status'));
      const op = bool(p, 'stop') ? 'stop' : bool(p, 'status') ? 'status' : bool(p, 'reload') ? 'reload' : undefined;
      if (op !== undefined) {
        const r = await daemonRequest(settings.runDir, op);
        if (r === undefined) {
          if (op === 'stop') return io.out('no daemon running\n');
          throw new TsnetError('NOT_FOUND', `no daemon running (${settings.runDir})`, { details: { field: 'daemon' } });
        }
        if (!r.ok) throw new TsnetError('UNAVAILABLE', `daemon ${op}: ${r.error ?? '?'}`);
        io.out(op === 'status' ? `${JSON.stringify(r, null, 2)}\n` : `${op === 'stop' ? 'stopping' : 'reloaded'} daemon ${r.pid}\n`);
        return 0;
      }
      const upstreamRaw = str(p, 'upstream') ?? settings.dnsUpstream;
      const upstreams: UpstreamSource = upstreamRaw !== undefined
        ? { kind: 'fixed', servers: parseUpstreams(upstreamRaw) }
        : { kind: 'resolv-conf', path: str(p, 'resolv-conf') ?? '/etc/resolv.conf', resolvedPath: '/run/systemd/resolve/resolv.conf' };
      const store = await openFsStore({ dir: settings.stateDir });
      // The whole engine only for the firewall watcher's restores, made when it first needs it.
      let engine: Promise<Engine> | undefined;
      const engineController = async (): Promise<Controller> => (await (engine ??= createEngine(settings))).controller;
      const services: DaemonService[] = [
        createDnsService({ state: createStoreCnmState(store), log: settings.log, port: 53, upstreams, native: loadDnsNative(settings.dnsNative), cniAttachments: createCniAttachmentReader(settings.stateDir) }),
        createFirewallService({ hostNs: HOST_NETNS, log: settings.log, controller: engineController }),
        ...(bool(p, 'no-cni') ? [] : [createCniService({ stateDir: settings.stateDir, runDir: settings.runDir, log: settings.log })]),
      ];
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
        onReady: () => io.err(`tsnet daemon ${process.pid} ready\n`),
        });
      } finally {
        if (engine) await (await engine.catch(() => undefined))?.close();
      }
      return 0;
    },
  },
});
