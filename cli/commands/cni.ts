/**
 * `tsnet cni install [--bin-dir /opt/cni/bin] [--conf-dir /etc/cni/net.d]`: installs the CNI
 * plugin binaries tsnet-bridge, tsnet-ipam and tsnet-portmap and writes an example conflist.
 *
 * The three binaries are one small loader under three names (the name picks the plugin) beside the
 * shared bundle tsnet-cni.cjs. Start-up is what a CNI plugin is judged by, so a V8 startup
 * snapshot of the evaluated bundle (tsnet-cni.blob) is built with the node that runs this command
 * and named in the binaries' shebang; the binaries are then checked by running VERSION. If the
 * snapshot cannot be built or does not run (or the path does not fit a shebang), the binaries run
 * the bundle through a V8 code cache instead (slower start, same behaviour). A node upgrade
 * invalidates the snapshot: run `tsnet cni install` again. scripts/build.mjs uses this same code
 * for dist/.
 *
 * Front end: when a C compiler (`cc`) is there, the three names are instead a small C program
 * (plugins/cni/bin/client.c, compiled here) that hands the request to a running `tsnet daemon`
 * (its CNI service on RUN_DIR/cni.sock, engine/cni-service.ts) and, when no daemon listens, runs the
 * Node plugin (`tsnet-cni-node`, the loader above) itself. Same behaviour either way; with the
 * daemon a request does not pay a Node start. `--no-front-end` installs the Node plugin directly.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TsnetError } from '../../core/errors.js';
import { parseSubnet } from '../../core/net.js';
import { checkName } from '../../cnm/names.js';
import { installCni, writeExampleConflist } from '../../engine/cni-install.js';
import { cniSocketPath } from '../../engine/cni-service.js';
import { bool, parseArgs, str, usage, type FlagSpec } from '../args.js';
import type { Command, Io } from './types.js';

const INSTALL: FlagSpec[] = [
  { name: 'bin-dir', type: 'string', help: 'where the plugin binaries go (default /opt/cni/bin)', placeholder: 'DIR' },
  { name: 'conf-dir', type: 'string', help: 'where the example conflist goes (default /etc/cni/net.d; "" for none)', placeholder: 'DIR' },
  { name: 'network', type: 'string', help: 'write a pod network on this tsnet network instead (served by the node\'s tsnet daemon; an overlay network spans the cluster)', placeholder: 'NAME' },
  { name: 'subnet', type: 'string', help: 'subnet of the example network (default 10.87.0.0/16)', placeholder: 'CIDR' },
  { name: 'suffix', type: 'string', help: 'file name suffix of the binaries (default none; dist/ uses .cjs)', placeholder: 'SUFFIX' },
  { name: 'no-snapshot', type: 'boolean', help: 'do not build a V8 startup snapshot (use the code cache only)' },
  { name: 'no-front-end', type: 'boolean', help: 'install the Node plugin under the plugin names, without the C front end that uses a running tsnet daemon' },
  { name: 'force', type: 'boolean', help: 'overwrite an existing example conflist' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];
export function cniCommands(settings: { readonly runDir: string }): Record<string, Command> {
  return {
    install: {
      summary: 'install the CNI plugins (tsnet-bridge, tsnet-ipam, tsnet-portmap) and an example conflist',
      async run(argv: readonly string[], io: Io) {
        const a = parseArgs(argv, INSTALL);
        if (bool(a, 'help')) {
          io.out(usage('cni install', 'Install the CNI plugin binaries and write an example network configuration list.', INSTALL, 'tsnet cni install --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d'));
          return 0;
        }
        const binDir = str(a, 'bin-dir') ?? '/opt/cni/bin';
        const confDir = str(a, 'conf-dir') ?? '/etc/cni/net.d';
        const srcDir = dirname(fileURLToPath(import.meta.url));
        const r = await installCni({
          srcDir, binDir, ...(str(a, 'suffix') !== undefined ? { suffix: str(a, 'suffix') as string } : {}), snapshot: !bool(a, 'no-snapshot'),
          frontEnd: !bool(a, 'no-front-end'), socket: cniSocketPath(resolve(settings.runDir)),
        });
        io.out(`installed ${r.binaries.join(', ')} (${r.frontEnd ? `C front end using a running tsnet daemon (${cniSocketPath(resolve(settings.runDir))}), else ` : ''}Node with a ${r.snapshot ? 'V8 startup snapshot' : 'V8 code cache'})\n`);
        if (confDir !== '') {
          const network = str(a, 'network');
          if (network !== undefined && str(a, 'subnet') !== undefined) throw new TsnetError('INVALID_CONFIG', 'subnet: the pod network\'s subnet is its tsnet network\'s (give --network or --subnet, not both)', { details: { field: 'subnet' } });
          const w = await writeExampleConflist(confDir, parseSubnet(str(a, 'subnet') ?? '10.87.0.0/16', 'subnet'), bool(a, 'force'), network !== undefined ? checkName(network, 'network') : undefined);
          io.out(w.written ? `wrote ${w.file}\n` : `kept ${w.file} (exists; --force overwrites)\n`);
        }
        return 0;
      },
    },
  };
}
