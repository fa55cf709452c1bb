/**
 * `tsnet docker-plugin [--socket PATH]`: serves Docker's remote NetworkDriver and IpamDriver
 * (plugins/docker) in the foreground until SIGTERM or SIGINT. dockerd finds it as
 * /run/docker/plugins/tsnet.sock: `docker network create -d tsnet --ipam-driver tsnet ...`.
 */
import { randomInt } from 'node:crypto';
import type { Logger } from '../../core/log.js';
import { createDispatcher } from '../../plugins/docker/dispatch.js';
import { createDockerIpam } from '../../plugins/docker/ipam-driver.js';
import { createDockerNetworkDriver } from '../../plugins/docker/network-driver.js';
import { servePlugin } from '../../plugins/docker/serve.js';
import { parseArgs, str, usage, type FlagSpec } from '../args.js';
import type { EngineParts } from '../engine.js';
import type { Command } from './types.js';

export const DEFAULT_PLUGIN_SOCKET = '/run/docker/plugins/tsnet.sock';

const FLAGS: FlagSpec[] = [
  { name: 'socket', type: 'string', help: `unix socket to listen on (default ${DEFAULT_PLUGIN_SOCKET})`, placeholder: 'PATH' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

export function dockerPluginCommand(parts: () => Promise<EngineParts>, log: Logger): Command {
  return {
    summary: "Serve Docker's remote network driver and IPAM plugin (tsnet) on a unix socket",
    async run(argv, io) {
      const a = parseArgs(argv, FLAGS);
      if (a.flags['help'] === true) {
        io.out(usage('docker-plugin [OPTIONS]', "Serve Docker's remote network driver and IPAM driver until SIGTERM.", FLAGS, 'tsnet docker-plugin & docker network create -d tsnet --ipam-driver tsnet --subnet 10.77.0.0/24 lab'));
        return 0;
      }
      const p = await parts();
      const network = createDockerNetworkDriver({ driver: p.drivers('bridge'), store: p.store, log, randomHex: p.randomHex, randomInt: (n) => randomInt(n) });
      const ipam = createDockerIpam({ ipam: p.ipam, log, randomHex: p.randomHex });
      await network.restore();
      const server = await servePlugin({ socketPath: str(a, 'socket') ?? DEFAULT_PLUGIN_SOCKET, dispatch: createDispatcher({ network, ipam }, log), log });
      io.err(`tsnet docker-plugin: listening on ${server.socketPath}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          resolve();
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      await server.close();
      return 0;
    },
  };
}
