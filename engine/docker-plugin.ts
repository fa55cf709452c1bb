/**
 * The Docker door's composition: Docker's remote NetworkDriver and IpamDriver (plugins/docker) over
 * the engine's parts, served as JSON over HTTP on a unix socket (sys/http-unix.ts). A composition
 * root; `cli/commands/docker-plugin.ts` only parses flags.
 */
import { basename, dirname, join } from 'node:path';
import type { Logger } from '../core/log.js';
import { createDispatcher } from '../plugins/docker/dispatch.js';
import { createDockerIpam } from '../plugins/docker/ipam-driver.js';
import { createDockerNetworkDriver } from '../plugins/docker/network-driver.js';
import { CONTENT_TYPE } from '../plugins/docker/protocol.js';
import { serveJsonOverUnixHttp, type JsonServer } from '../sys/http-unix.js';
import type { Engine } from './engine.js';

export const DEFAULT_PLUGIN_SOCKET = '/run/docker/plugins/tsnet.sock';

/** The macvlan driver's socket beside the bridge one: `docker network create -d tsnet-macvlan -o parent=eth0`. */
export const macvlanSocketOf = (socketPath: string): string => join(dirname(socketPath), `${basename(socketPath, '.sock')}-macvlan.sock`);

/**
 * Restores the plugin's networks in the kernel, then serves until `close()`: Docker's driver name
 * is the socket's, so `tsnet` (bridge) and `tsnet-macvlan` (macvlan), both with the IPAM driver.
 */
export async function serveDockerPlugin(engine: Engine, opts: { readonly socketPath?: string; readonly log: Logger }): Promise<JsonServer> {
  const { log } = opts;
  const socketPath = opts.socketPath ?? DEFAULT_PLUGIN_SOCKET;
  const ipam = createDockerIpam({ ipam: engine.parts.ipam, log, randomHex: engine.parts.randomHex });
  const serve = async (driver: 'bridge' | 'macvlan', path: string): Promise<JsonServer> => {
    const network = createDockerNetworkDriver({ controller: engine.controller, driver, log, randomHex: engine.parts.randomHex });
    return serveJsonOverUnixHttp({ socketPath: path, contentType: CONTENT_TYPE, handle: createDispatcher({ network, ipam }, log), log: log.child({ component: `docker-plugin-${driver}` }) });
  };
  await createDockerNetworkDriver({ controller: engine.controller, driver: 'bridge', log, randomHex: engine.parts.randomHex }).restore();
  const servers = [await serve('bridge', socketPath), await serve('macvlan', macvlanSocketOf(socketPath))];
  return {
    socketPath,
    async close() {
      for (const s of servers) await s.close();
    },
  };
}
