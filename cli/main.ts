#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
/**
 * `tsnet`: the composition root. The only place (with the plugin entry points) that reads the
 * environment, builds the real sys implementations and maps errors to exit codes.
 *
 * Global flags (before the command): --state-dir DIR (TSNET_STATE_DIR, default /var/lib/tsnet),
 * --run-dir DIR (TSNET_RUN_DIR, default /run/tsnet), --firewall nftables|iptables|none
 * (TSNET_FIREWALL, default nftables), --log-level debug|info|warn|error (TSNET_LOG_LEVEL, default warn).
 * TSNET_DNS_UPSTREAM=IP[:PORT],...: where the embedded DNS daemon forwards (default: the host's
 * resolv.conf); passed on to the daemon the CLI starts.
 * TSNET_DNS_NATIVE=0: the DNS daemon answers UDP in JS only, without its native fast path (default on
 * when dist/dns-fast.node loads); passed on to the daemon the CLI starts.
 */
import { fileURLToPath } from 'node:url';
import type { Controller } from '../cnm/controller.js';
import { EXIT_CODE, TsnetError } from '../core/errors.js';
import { createJsonLogger, parseLogLevel } from '../core/log.js';
import { FIREWALL_BACKENDS, type FirewallBackend } from '../sys/firewall/api.js';
import { list, parseArgs, str, type FlagSpec } from './args.js';
import { cniCommands } from './commands/cni.js';
import { containerCommands } from './commands/container.js';
import { daemonCommands } from './commands/daemon.js';
import { eventsCommand } from './commands/events.js';
import { dockerPluginCommand } from './commands/docker-plugin.js';
import { labCommands } from './commands/lab.js';
import { networkCommands } from './commands/network.js';
import { systemCommands } from './commands/system.js';
import type { Command, Io } from './commands/types.js';
import { createEngine, type Engine, type Settings } from '../engine/engine.js';
import { readOptional, writeInPlace } from '../sys/files.js';
import type { CliRequest, ServedIo } from '../engine/cli-service.js';
import type { DaemonSettings } from '../engine/daemon-main.js';
import { resolve as resolvePath } from 'node:path';

const VERSION = '0.1.0';

const GLOBAL: FlagSpec[] = [
  { name: 'state-dir', type: 'string', help: 'records directory (TSNET_STATE_DIR, default /var/lib/tsnet)', placeholder: 'DIR' },
  { name: 'run-dir', type: 'string', help: 'runtime directory (TSNET_RUN_DIR, default /run/tsnet)', placeholder: 'DIR' },
  { name: 'firewall', type: 'string', help: 'nftables (default), iptables or none (TSNET_FIREWALL)', placeholder: 'BACKEND' },
  { name: 'cluster-store', type: 'string', help: 'join a cluster: etcd://IP:PORT[,IP:PORT...] (TSNET_CLUSTER_STORE; saved in the state directory)', placeholder: 'URL' },
  { name: 'cluster-advertise', type: 'string', help: 'this host\'s address on the underlay (TSNET_CLUSTER_ADVERTISE)', placeholder: 'IP' },
  { name: 'cluster-store-opt', type: 'string', multiple: true, help: 'cafile=, certfile=, keyfile= (etcd TLS), ttl=SECONDS, grace=SECONDS', placeholder: 'KEY=VALUE' },
  { name: 'log-level', type: 'string', help: 'debug, info, warn (default), error (TSNET_LOG_LEVEL)', placeholder: 'LEVEL' },
  { name: 'help', type: 'boolean', help: 'show this help' },
  { name: 'version', short: 'v', type: 'boolean', help: 'print the version' },
];

function helpText(commands: Record<string, Command>, network: Record<string, Command>): string {
  const lines = [
    'Usage: tsnet [GLOBAL OPTIONS] COMMAND [ARGS...]',
    '',
    'Container networking: networks, containers on them, addresses, NAT, isolation.',
    '',
    'Commands:',
    ...Object.entries(commands).map(([n, c]) => `  ${n.padEnd(22)} ${c.summary}`),
    ...Object.entries(network).map(([n, c]) => `  ${`network ${n}`.padEnd(22)} ${c.summary}`),
    ...Object.entries(labCommands({ lab: () => Promise.reject(new Error('help')), files: { readText: async () => undefined, write: async () => undefined }, tty: false, now: () => 0 })).map(([n, c]) => `  ${`lab ${n}`.padEnd(22)} ${c.summary}`),
    ...Object.entries(cniCommands({ runDir: '/run/tsnet' })).map(([n, c]) => `  ${`cni ${n}`.padEnd(22)} ${c.summary}`),
    '',
    'Global options:',
    ...GLOBAL.map((g) => `  --${g.name}${g.type === 'string' ? ` ${g.placeholder ?? ''}` : ''}`.padEnd(26) + g.help),
    '',
    'Run `tsnet COMMAND --help` for a command\'s options and an example.',
    'Example: tsnet network create lab && tsnet run -d --name web --network lab -- node server.js',
  ];
  return `${lines.join('\n')}\n`;
}

interface Globals {
  readonly g: ReturnType<typeof parseArgs>;
  readonly settings: Settings;
  readonly log: ReturnType<typeof createJsonLogger>;
}

function globalsOf(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Globals {
  // Global options stop at the command name.
  const g = parseArgs(argv, GLOBAL, { stopAtPositional: true });
  const level = parseLogLevel(str(g, 'log-level') ?? env['TSNET_LOG_LEVEL'], 'warn');
  const log = createJsonLogger({ write: (l) => process.stderr.write(l), level });
  const fw = str(g, 'firewall') ?? env['TSNET_FIREWALL'] ?? 'nftables';
  if (!(FIREWALL_BACKENDS as readonly string[]).includes(fw)) {
    throw new TsnetError('INVALID_CONFIG', `firewall: expected ${FIREWALL_BACKENDS.join(', ')}, got ${JSON.stringify(fw)}`, { details: { field: 'firewall' } });
  }
  const settings: Settings = {
    stateDir: str(g, 'state-dir') ?? env['TSNET_STATE_DIR'] ?? '/var/lib/tsnet',
    runDir: str(g, 'run-dir') ?? env['TSNET_RUN_DIR'] ?? '/run/tsnet',
    firewall: fw as FirewallBackend,
    log,
    ...(env['TSNET_DNS_UPSTREAM'] !== undefined ? { dnsUpstream: env['TSNET_DNS_UPSTREAM'] } : {}),
    ...(env['TSNET_DNS_NATIVE'] !== undefined ? { dnsNative: env['TSNET_DNS_NATIVE'] } : {}), // dns2: native fast path switch
    ...(env['DBUS_SYSTEM_BUS_ADDRESS'] !== undefined ? { systemBus: env['DBUS_SYSTEM_BUS_ADDRESS'] } : {}),
    cluster: {
      ...((str(g, 'cluster-store') ?? env['TSNET_CLUSTER_STORE']) !== undefined ? { store: (str(g, 'cluster-store') ?? env['TSNET_CLUSTER_STORE']) as string } : {}),
      ...((str(g, 'cluster-advertise') ?? env['TSNET_CLUSTER_ADVERTISE']) !== undefined ? { advertise: (str(g, 'cluster-advertise') ?? env['TSNET_CLUSTER_ADVERTISE']) as string } : {}),
      opts: list(g, 'cluster-store-opt'),
    },
  };
  return { g, settings, log };
}

function commandTables(getWorld: () => Promise<Engine>, settings: Settings, log: Globals['log']): { top: Record<string, Command>; network: Record<string, Command>; lab: Record<string, Command> } {
  const controller = async (): Promise<Controller> => {
    const w = await getWorld();
    await w.controller.ensurePredefined();
    return w.controller;
  };
  const network = networkCommands(controller);
  const local = (c: Command): Command => ({ ...c, local: () => true });
  const top: Record<string, Command> = {
    ...containerCommands(async () => (await getWorld()).container),
    ...Object.fromEntries(Object.entries(systemCommands(async () => {
      await controller();
      return (await getWorld()).system;
    })).map(([k, c]) => [k, local(c)])),
    events: local(eventsCommand(async () => (await getWorld()).events)),
    ...Object.fromEntries(Object.entries(daemonCommands(settings, serveInDaemon)).map(([k, c]) => [k, local(c)])),
    'docker-plugin': local(dockerPluginCommand(getWorld, log)),
  };
  const lab = labCommands({
    lab: async () => {
      await controller();
      return (await getWorld()).lab();
    },
    files: { readText: readOptional, write: (path, content) => writeInPlace(path, content) },
    tty: process.stderr.isTTY,
    now: () => Date.now(),
  });
  return { top, network, lab };
}

export interface MainOptions {
  /** The engine to use (the daemon's, when it serves the command); it is not closed at the end. */
  readonly engine?: () => Promise<Engine>;
}

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv, io: Io, opts: MainOptions = {}): Promise<number> {
  const { g, settings, log } = globalsOf(argv, env);
  let world: Promise<Engine> | undefined;
  const getWorld = opts.engine ?? ((): Promise<Engine> => (world ??= createEngine(settings)));
  const { top, network, lab } = commandTables(getWorld, settings, log);
  const [cmd, ...rest] = g.positionals;
  try {
    if (g.flags['version'] === true || cmd === 'version') {
      io.out(`tsnet ${VERSION} (node ${process.version})\n`);
      return 0;
    }
    if (cmd === undefined || cmd === 'help' || g.flags['help'] === true) {
      io.out(helpText(top, network));
      return cmd === undefined && g.flags['help'] !== true ? 2 : 0;
    }
    if (cmd === 'network') {
      const [sub, ...args] = rest;
      const c = sub === undefined ? undefined : network[sub === 'list' ? 'ls' : sub === 'remove' ? 'rm' : sub];
      if (!c) {
        io.out(`Usage: tsnet network COMMAND\n\nCommands:\n${Object.entries(network).map(([n, x]) => `  ${n.padEnd(12)} ${x.summary}\n`).join('')}`);
        return sub === undefined || sub === '--help' ? 0 : EXIT_CODE.INVALID_CONFIG;
      }
      return (await c.run(args, io)) || 0;
    }
    if (cmd === 'lab') {
      const [sub, ...args] = rest;
      const c = sub === undefined ? undefined : lab[sub === 'list' ? 'ls' : sub === 'deploy' ? 'up' : sub === 'destroy' ? 'down' : sub];
      if (!c) {
        io.out(`Usage: tsnet lab COMMAND\n\nLabs from a file: nodes (containers LAB-NODE), networks, point-to-point links, bridges.\n\nCommands:\n${Object.entries(lab).map(([n, x]) => `  ${n.padEnd(12)} ${x.summary}\n`).join('')}`);
        return sub === undefined || sub === '--help' ? 0 : EXIT_CODE.INVALID_CONFIG;
      }
      return (await c.run(args, io)) || 0;
    }
    if (cmd === 'cni') {
      const [sub, ...args] = rest;
      const c = sub === undefined ? undefined : cniCommands(settings)[sub];
      if (!c) {
        io.out(`Usage: tsnet cni COMMAND\n\nCommands:\n${Object.entries(cniCommands(settings)).map(([n, x]) => `  ${n.padEnd(12)} ${x.summary}\n`).join('')}`);
        return sub === undefined || sub === '--help' ? 0 : EXIT_CODE.INVALID_CONFIG;
      }
      return (await c.run(args, io)) || 0;
    }
    const c = top[cmd];
    if (!c) throw new TsnetError('INVALID_CONFIG', `unknown command ${JSON.stringify(cmd)}; see tsnet --help`, { details: { field: 'command' } });
    return (await c.run(rest, io)) || 0;
  } finally {
    if (world) await (await world.catch(() => undefined))?.close();
  }
}

/** Runs a command line to its exit code: a failure is printed on `io.err` and mapped to its code (README). */
export async function runCli(argv: readonly string[], env: NodeJS.ProcessEnv, io: Io, opts: MainOptions = {}): Promise<number> {
  try {
    const code = await main(argv, env, io, opts);
    return typeof code === 'number' ? code : 0;
  } catch (err) {
    // Commands that act on several objects print each failure themselves.
    if (!(err instanceof TsnetError && err.details['reported'] === true)) io.err(`Error: ${errorLine(err)}\n`);
    return err instanceof TsnetError ? EXIT_CODE[err.code] : EXIT_CODE.INTERNAL;
  }
}

/** Whether the daemon for `mine` may run this command line (same directories and backend; not a local command). */
export function servable(argv: readonly string[], env: Readonly<Record<string, string | undefined>>, mine: Pick<Settings, 'stateDir' | 'runDir' | 'firewall'>): boolean {
  let globals: Globals;
  try {
    globals = globalsOf(argv, env);
  } catch {
    return true; // the served command reports the bad option
  }
  const { g, settings } = globals;
  if (resolvePath(settings.stateDir) !== resolvePath(mine.stateDir) || resolvePath(settings.runDir) !== resolvePath(mine.runDir) || settings.firewall !== mine.firewall) return false;
  const [cmd, sub, ...rest] = g.positionals;
  if (cmd === undefined || cmd === 'help' || cmd === 'version' || cmd === 'network') return true;
  // Labs print progress on the client's terminal and run many containers: in the client's process.
  if (cmd === 'cni' || cmd === 'lab') return false;
  const c = commandTables(() => Promise.reject(new Error('no engine')), settings, globals.log).top[cmd];
  return c === undefined || c.local?.(sub === undefined ? [] : [sub, ...rest]) !== true;
}

/** The daemon's side of the front end: runs a served command line with the daemon's engine. */
function serveInDaemon(engine: () => Promise<Engine>, mine: DaemonSettings): (req: CliRequest, io: ServedIo) => Promise<number | 'local'> {
  return async (req, io) => {
    if (!servable(req.argv, req.env, mine)) return 'local';
    return runCli(req.argv, req.env, io, { engine });
  };
}

function errorLine(err: unknown): string {
  if (err instanceof AggregateError) return err.errors.map(errorLine).join('; ');
  if (err instanceof Error) return err.message;
  return String(err);
}

const isEntry = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isEntry) {
  const tty = process.stdin.isTTY === true;
  const io: Io = {
    out: (t) => {
      process.stdout.write(t);
    },
    err: (t) => {
      process.stderr.write(t);
    },
    env: process.env,
    cwd: process.cwd(),
    stdin: process.stdin,
    ...(tty ? {
      terminal: {
        setRaw: (on: boolean) => {
          process.stdin.setRawMode(on);
        },
        size: () => (process.stdout.isTTY ? { cols: process.stdout.columns, rows: process.stdout.rows } : undefined),
        onResize: (f: (s: { cols: number; rows: number }) => void) => {
          const h = (): void => f({ cols: process.stdout.columns, rows: process.stdout.rows });
          process.stdout.on('resize', h);
          return () => {
            process.stdout.off('resize', h);
          };
        },
      },
    } : {}),
    onSignal: (signals, f) => {
      const hs = signals.map((s) => [s, () => f(s)] as const);
      for (const [s, h] of hs) process.on(s, h);
      return () => {
        for (const [s, h] of hs) process.off(s, h);
      };
    },
  };
  void runCli(process.argv.slice(2), process.env, io).then((code) => {
    process.exitCode = code;
  });
}
