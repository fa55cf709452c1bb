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
 * (its CNI service on RUN_DIR/cni.sock, cli/cni-service.ts) and, when no daemon listens, runs the
 * Node plugin (`tsnet-cni-node`, the loader above) itself. Same behaviour either way; with the
 * daemon a request does not pay a Node start. `--no-front-end` installs the Node plugin directly.
 */
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TsnetError } from '../../core/errors.js';
import { parseSubnet } from '../../core/net.js';
import { run } from '../../sys/exec.js';
import { bool, parseArgs, str, usage, type FlagSpec } from '../args.js';
import { cniSocketPath } from '../cni-service.js';
import type { Command, Io } from './types.js';

export const CNI_PLUGINS = ['tsnet-bridge', 'tsnet-ipam', 'tsnet-portmap'] as const;
const SHEBANG = '#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node';
const SHEBANG_SAFE = /^\/[A-Za-z0-9_.\/-]+$/;

const INSTALL: FlagSpec[] = [
  { name: 'bin-dir', type: 'string', help: 'where the plugin binaries go (default /opt/cni/bin)', placeholder: 'DIR' },
  { name: 'conf-dir', type: 'string', help: 'where the example conflist goes (default /etc/cni/net.d; "" for none)', placeholder: 'DIR' },
  { name: 'subnet', type: 'string', help: 'subnet of the example network (default 10.87.0.0/16)', placeholder: 'CIDR' },
  { name: 'suffix', type: 'string', help: 'file name suffix of the binaries (default none; dist/ uses .cjs)', placeholder: 'SUFFIX' },
  { name: 'no-snapshot', type: 'boolean', help: 'do not build a V8 startup snapshot (use the code cache only)' },
  { name: 'no-front-end', type: 'boolean', help: 'install the Node plugin under the plugin names, without the C front end that uses a running tsnet daemon' },
  { name: 'force', type: 'boolean', help: 'overwrite an existing example conflist' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

/** The example network configuration list written by `tsnet cni install`. */
export function exampleConflist(subnet: string): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: 'tsnet',
    plugins: [
      {
        type: 'tsnet-bridge',
        bridge: 'tsnet-cni0',
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: true,
        hairpinMode: true,
        capabilities: { portMappings: true, ips: true, mac: true, dns: true },
        ipam: { type: 'tsnet-ipam', ranges: [[{ subnet }]] },
      },
    ],
  };
}

export interface InstallResult {
  readonly binDir: string;
  readonly binaries: readonly string[];
  readonly snapshot: boolean;
  readonly conflist: string | undefined;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

/** Installs the binaries from `srcDir` (the directory of the running bundle) into `binDir`. */
/** Compiles the C front end to `out`; false (nothing written) without a working C compiler. */
async function compileFrontEnd(src: string, out: string, socket: string, nodeEntry: string): Promise<boolean> {
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    await run(['cc', '-O2', '-Wall', '-o', tmp, src, `-DTSNET_CNI_DEFAULT_SOCKET="${socket}"`, `-DTSNET_CNI_NODE="${nodeEntry}"`], { timeoutMs: 60_000 });
    await rename(tmp, out);
    return true;
  } catch {
    await rm(tmp, { force: true });
    return false;
  }
}

export async function installCni(opts: {
  readonly srcDir: string;
  readonly binDir: string;
  readonly suffix?: string;
  readonly snapshot?: boolean;
  /** The C front end (default true when a C compiler is there). */
  readonly frontEnd?: boolean;
  /** The daemon's CNI socket the front end uses by default (default /run/tsnet/cni.sock). */
  readonly socket?: string;
}): Promise<{ binaries: string[]; snapshot: boolean; frontEnd: boolean }> {
  const binDir = resolve(opts.binDir);
  const src = resolve(opts.srcDir);
  const socket = opts.socket ?? '/run/tsnet/cni.sock';
  if (!SHEBANG_SAFE.test(socket) || socket.length > 100) throw new TsnetError('INVALID_CONFIG', `run-dir: ${JSON.stringify(socket)} must be an absolute path of letters, digits, '_', '.', '-', '/' (at most 100 characters)`, { details: { field: 'run-dir' } });
  await mkdir(binDir, { recursive: true });
  const bundle = join(binDir, 'tsnet-cni.cjs');
  if (join(src, 'tsnet-cni.cjs') !== bundle) await copyFile(join(src, 'tsnet-cni.cjs'), bundle);
  const loader = (await readFile(join(src, 'tsnet-cni-loader.cjs'), 'utf8')).split('\n').slice(1).join('\n');
  const blob = join(binDir, 'tsnet-cni.blob');
  const binaries = CNI_PLUGINS.map((p) => join(binDir, `${p}${opts.suffix ?? ''}`));
  const nodeEntryName = `tsnet-cni-node${opts.suffix ?? ''}`;
  const frontEndBin = join(binDir, `tsnet-cni-client${opts.suffix ?? ''}`);
  const frontEnd = opts.frontEnd !== false && (await compileFrontEnd(join(src, 'tsnet-cni-client.c'), frontEndBin, socket, nodeEntryName));
  // With the front end, the Node plugin is one entry it runs; without, it is the three names.
  const nodeEntries = frontEnd ? [join(binDir, nodeEntryName)] : binaries;
  if (!frontEnd) await rm(join(binDir, nodeEntryName), { force: true });
  const write = async (shebang: string): Promise<void> => {
    for (const b of nodeEntries) {
      await writeFile(b, `${shebang}\n${loader}`);
      await chmod(b, 0o755);
    }
  };
  if (frontEnd) {
    for (const b of binaries) {
      const tmp = `${b}.${process.pid}.tmp`;
      await copyFile(frontEndBin, tmp);
      await chmod(tmp, 0o755);
      await rename(tmp, b);
    }
  }
  // VERSION through the names the runtime runs (the front end falls back to the Node entry when no
  // daemon listens; TSNET_CNI_SOCKET points it at a path where none does, to check the Node side).
  const works = async (): Promise<boolean> =>
    run([binaries[0] as string], { env: { CNI_COMMAND: 'VERSION', TSNET_CNI_SOCKET: join(binDir, 'no-daemon.sock') }, input: '{"cniVersion":"1.0.0"}', timeoutMs: 30_000 }).then((r) => r.stdout.includes('supportedVersions'), () => false);

  await rm(blob, { force: true });
  await rm(`${bundle}.cache`, { force: true });
  // The code cache, written by the first run of the loader (the fallback path).
  await write(SHEBANG);
  await run([process.execPath, nodeEntries[0] as string], { env: { CNI_COMMAND: 'VERSION' }, input: '{}', timeoutMs: 30_000 });
  let snapshot = false;
  if (opts.snapshot !== false && SHEBANG_SAFE.test(blob) && blob.length < 180) {
    const builder = join(binDir, `tsnet-cni.snapshot-builder.${process.pid}.cjs`);
    const code = (await readFile(bundle, 'utf8')).replace(/^\/\/# sourceMappingURL=.*$/m, '');
    await writeFile(builder, [
      'const module = { exports: {} };',
      `(function (module, exports) {\n${code}\n})(module, module.exports);`,
      "const { basename } = require('node:path');",
      'module.exports.preload().then(() => {',
      "  require('node:v8').startupSnapshot.setDeserializeMainFunction(() => {",
      "    void module.exports.runPlugin(basename(process.argv[1] ?? '').replace(/\\.cjs$/, '').replace(/^tsnet-/, ''));",
      '  });',
      '});',
      '',
    ].join('\n'));
    try {
      await run([process.execPath, '--snapshot-blob', blob, '--build-snapshot', builder], { timeoutMs: 120_000 });
      await write(`${SHEBANG} --snapshot-blob ${blob}`);
      snapshot = await works();
    } catch {
      snapshot = false;
    } finally {
      await rm(builder, { force: true });
    }
    if (!snapshot) {
      await rm(blob, { force: true });
      await write(SHEBANG);
    }
  }
  if (!(await works())) throw new TsnetError('INTERNAL', `cni install: ${binaries[0]} does not answer VERSION`, { details: { field: 'bin-dir' } });
  return { binaries, snapshot, frontEnd };
}

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
          const file = join(confDir, '10-tsnet.conflist');
          if ((await exists(file)) && !bool(a, 'force')) {
            io.out(`kept ${file} (exists; --force overwrites)\n`);
          } else {
            await mkdir(confDir, { recursive: true });
            await writeFile(file, `${JSON.stringify(exampleConflist(parseSubnet(str(a, 'subnet') ?? '10.87.0.0/16', 'subnet')), null, 2)}\n`);
            io.out(`wrote ${file}\n`);
          }
        }
        return 0;
      },
    },
  };
}
