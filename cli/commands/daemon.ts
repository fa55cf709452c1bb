/**
 * `tsnet daemon`: flags for the long-lived process (engine/daemon-main.ts) hosting the embedded DNS
 * resolver, the firewall watcher and the CNI plugins' service. Runs in the foreground; `--start`
 * starts it in the background (the `tsnet` front end does, before a first `run`); `--stop`,
 * `--status` and `--reload` talk to a running one.
 */
import { TsnetError } from '../../core/errors.js';
import { bool, parseArgs, str, usage, type FlagSpec } from '../args.js';
import { fileURLToPath } from 'node:url';
import { ensureDaemon } from '../../engine/engine.js';
import { daemonRequest, installUnit, runTsnetDaemon, type DaemonRunOptions, type DaemonSettings } from '../../engine/daemon-main.js';
import type { Command } from './types.js';

const SPECS: FlagSpec[] = [
  { name: 'start', type: 'boolean', help: 'start the daemon in the background unless one runs, and return once it answers' },
  { name: 'stop', type: 'boolean', help: 'stop the running daemon' },
  { name: 'status', type: 'boolean', help: 'print the running daemon\'s status (JSON)' },
  { name: 'reload', type: 'boolean', help: 'make the running daemon reload the records' },
  { name: 'upstream', type: 'string', help: 'forward to these servers: IP[:PORT],... (TSNET_DNS_UPSTREAM; default: the host\'s resolv.conf)', placeholder: 'LIST' },
  { name: 'resolv-conf', type: 'string', help: 'the host resolv.conf to take upstreams from (default /etc/resolv.conf, following systemd-resolved)', placeholder: 'PATH' },
  { name: 'metrics-address', type: 'string', help: 'serve Prometheus metrics on HOST:PORT, GET /metrics (default: off)', placeholder: 'HOST:PORT' },
  { name: 'no-cni', type: 'boolean', help: 'do not serve the CNI plugins\' requests (RUN_DIR/cni.sock; without it they run standalone)' },
  { name: 'install-unit', type: 'boolean', help: 'write the systemd unit tsnet.service (restarts the daemon when it dies) and, with systemd running, enable and start it' },
  { name: 'unit-dir', type: 'string', help: 'where --install-unit writes (default /etc/systemd/system)', placeholder: 'DIR' },
  { name: 'help', type: 'boolean', help: 'show this help' },
];

/** How the daemon serves the front end's command lines, given its engine (cli/main.ts). */
export type ServeCli = (engine: Parameters<NonNullable<DaemonRunOptions['cli']>>[0], settings: DaemonSettings) => ReturnType<NonNullable<DaemonRunOptions['cli']>>;

export const daemonCommands = (settings: DaemonSettings, serveCli?: ServeCli): Record<string, Command> => ({
  daemon: {
    summary: 'Run the tsnet daemon (embedded DNS) in the foreground, or --start/--stop/--status/--reload it',
    async run(argv, io) {
      const p = parseArgs(argv, SPECS);
      if (bool(p, 'help')) return io.out(usage('daemon [OPTIONS]', 'Run the daemon serving DNS on every DNS-enabled network\'s gateway (port 53, UDP and TCP).', SPECS, 'tsnet daemon --status'));
      if (bool(p, 'install-unit')) {
        const r = await installUnit(settings, {
          unitDir: str(p, 'unit-dir') ?? '/etc/systemd/system', node: process.execPath, entry: fileURLToPath(import.meta.url),
          ...(str(p, 'upstream') !== undefined ? { upstream: str(p, 'upstream') as string } : {}),
        });
        io.out(r.started ? `installed and started ${r.file}\n` : `wrote ${r.file}\nto start it: ${r.next}\n`);
        return 0;
      }
      if (str(p, 'unit-dir') !== undefined) throw new TsnetError('INVALID_CONFIG', 'unit-dir: only with --install-unit', { details: { field: 'unit-dir' } });
      if (bool(p, 'start')) {
        const d = await ensureDaemon(settings);
        io.out(`${d.started ? 'started' : 'already running:'} daemon ${d.pid}\n`);
        return 0;
      }
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
      await runTsnetDaemon(settings, {
        ...(str(p, 'upstream') !== undefined ? { upstream: str(p, 'upstream') as string } : {}),
        ...(str(p, 'resolv-conf') !== undefined ? { resolvConf: str(p, 'resolv-conf') as string } : {}),
        noCni: bool(p, 'no-cni'),
        ...(str(p, 'metrics-address') !== undefined ? { metricsAddress: str(p, 'metrics-address') as string } : {}),
        ...(serveCli !== undefined ? { cli: (engine) => serveCli(engine, settings) } : {}),
        onReady: () => io.err(`tsnet daemon ${process.pid} ready\n`),
      });
      return 0;
    },
  },
});
