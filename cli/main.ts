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
import { HOST_NETNS } from '../core/net.js';
import { FIREWALL_BACKENDS, type FirewallBackend } from '../sys/firewall/api.js';
import { parseArgs, str, type FlagSpec } from './args.js';
import { cniCommands } from './commands/cni.js';
import { containerCommands } from './commands/container.js';
import { daemonCommands } from './commands/daemon.js';
import { dockerPluginCommand } from './commands/docker-plugin.js';
import { networkCommands } from './commands/network.js';
import { systemCommands } from './commands/system.js';
import type { Command, Io } from './commands/types.js';
import { createEngine, type Engine, type Settings } from './engine.js';

const VERSION = '0.1.0';

const GLOBAL: FlagSpec[] = [
  { name: 'state-dir', type: 'string', help: 'records directory (TSNET_STATE_DIR, default /var/lib/tsnet)', placeholder: 'DIR' },
  { name: 'run-dir', type: 'string', help: 'runtime directory (TSNET_RUN_DIR, default /run/tsnet)', placeholder: 'DIR' },
  { name: 'firewall', type: 'string', help: 'nftables (default), iptables or none (TSNET_FIREWALL)', placeholder: 'BACKEND' },
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

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
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
  };
  let world: Promise<Engine> | undefined;
  const getWorld = (): Promise<Engine> => (world ??= createEngine(settings));
  const controller = async (): Promise<Controller> => {
    const w = await getWorld();
    await w.controller.ensurePredefined();
    return w.controller;
  };
  const network = networkCommands(controller);
  const top: Record<string, Command> = {
    ...containerCommands(async () => (await getWorld()).container),
    ...systemCommands(async () => ({ controller: await controller(), firewall: (await getWorld()).firewall, hostNs: HOST_NETNS })),
    ...daemonCommands(settings),
    'docker-plugin': dockerPluginCommand(async () => (await getWorld()).parts, log),
  };
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
    if (cmd === 'cni') {
      // CNI plugin installation (issue #6).
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

function errorLine(err: unknown): string {
  if (err instanceof AggregateError) return err.errors.map(errorLine).join('; ');
  if (err instanceof Error) return err.message;
  return String(err);
}

const isEntry = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isEntry) {
  const io: Io = {
    out: (t) => {
      process.stdout.write(t);
    },
    err: (t) => {
      process.stderr.write(t);
    },
  };
  main(process.argv.slice(2), process.env, io).then(
    (code) => {
      process.exitCode = typeof code === 'number' ? code : 0;
    },
    (err: unknown) => {
      // Commands that act on several objects print each failure themselves.
      if (!(err instanceof TsnetError && err.details['reported'] === true)) process.stderr.write(`Error: ${errorLine(err)}\n`);
      process.exitCode = err instanceof TsnetError ? EXIT_CODE[err.code] : EXIT_CODE.INTERNAL;
    },
  );
}
