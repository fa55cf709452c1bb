/**
 * `tsnet docker-plugin [--socket PATH]`: serves Docker's remote NetworkDriver and IpamDriver
 * (plugins/docker) in the foreground until SIGTERM or SIGINT. dockerd finds it as
 * /run/docker/plugins/tsnet.sock: `docker network create -d tsnet --ipam-driver tsnet ...`.
 */
import type { Logger } from '../../core/log.js';
import { DEFAULT_PLUGIN_SOCKET, serveDockerPlugin } from '../../engine/docker-plugin.js';
import type { Engine } from '../../engine/engine.js';
import { parseArgs, str, usage, type FlagSpec } from '../args.js';
import type { Command } from './types.js';

const FLAGS: FlagSpec[] = [
  { name: 'socket', type: 'string', help: `unix socket to listen on (default ${DEFAULT_PLUGIN_SOCKET})`, placeholder: 'PATH' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

export function dockerPluginCommand(engine: () => Promise<Engine>, log: Logger): Command {
  return {
    summary: "Serve Docker's remote network driver and IPAM plugin (tsnet) on a unix socket",
    async run(argv, io) {
      const a = parseArgs(argv, FLAGS);
      if (a.flags['help'] === true) {
        io.out(usage('docker-plugin [OPTIONS]', "Serve Docker's remote network driver and IPAM driver until SIGTERM.", FLAGS, 'tsnet docker-plugin & docker network create -d tsnet --ipam-driver tsnet --subnet 10.77.0.0/24 lab'));
        return 0;
      }
      const socket = str(a, 'socket');
      const server = await serveDockerPlugin(await engine(), { log, ...(socket !== undefined ? { socketPath: socket } : {}) });
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
