/**
 * Installing the CNI plugins (`tsnet cni install`, and scripts/build.mjs for dist/): the binaries
 * tsnet-bridge, tsnet-ipam and tsnet-portmap and an example conflist.
 *
 * The three binaries are one small loader under three names (the name picks the plugin) beside the
 * shared bundle tsnet-cni.cjs. Start-up is what a CNI plugin is judged by, so a V8 startup
 * snapshot of the evaluated bundle (tsnet-cni.blob) is built with the node that runs this command
 * and named in the binaries' shebang; the binaries are then checked by running VERSION. If the
 * snapshot cannot be built or does not run (or the path does not fit a shebang), the binaries run
 * the bundle through a V8 code cache instead (slower start, same behaviour). A node upgrade
 * invalidates the snapshot: run `tsnet cni install` again.
 *
 * Front end: when a C compiler (`cc`) is there, the three names are instead a small C program
 * (plugins/cni/bin/client.c, compiled here) that hands the request to a running `tsnet daemon`
 * (its CNI service on RUN_DIR/cni.sock, engine/cni-service.ts) and, when no daemon listens, runs the
 * Node plugin (`tsnet-cni-node`, the loader above) itself. Same behaviour either way; with the
 * daemon a request does not pay a Node start. `--no-front-end` installs the Node plugin directly.
 * A composition root (processes and files through sys/).
 */
import { join, resolve } from 'node:path';
import { TsnetError } from '../core/errors.js';
import { run } from '../sys/exec.js';
import { copyExecutable, makeDir, pathExists, readText, removePath, replaceFile, setMode, writeInPlace } from '../sys/files.js';

export const CNI_PLUGINS = ['tsnet-bridge', 'tsnet-ipam', 'tsnet-portmap', 'tsnet-macvlan'] as const;
const SHEBANG = '#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node';
const SHEBANG_SAFE = /^\/[A-Za-z0-9_.\/-]+$/;


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
        capabilities: { portMappings: true, ips: true, mac: true, dns: true, bandwidth: true },
        ipam: { type: 'tsnet-ipam', ranges: [[{ subnet }]] },
      },
    ],
  };
}

/**
 * The configuration list of a pod network on tsnet network `network` (`tsnet cni install --network
 * NAME`): each node's daemon attaches pods to it (plugins/cni/attach.ts); with an overlay network,
 * pods of every node share its subnet and reach each other without NAT.
 */
export function networkConflist(network: string): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: network,
    plugins: [{ type: 'tsnet-bridge', tsnetNetwork: network, capabilities: { portMappings: true, ips: true, mac: true, aliases: true } }],
  };
}

export interface InstallResult {
  readonly binDir: string;
  readonly binaries: readonly string[];
  readonly snapshot: boolean;
  readonly conflist: string | undefined;
}

/** Compiles the C front end to `out`; false (nothing written) without a working C compiler. */
async function compileFrontEnd(src: string, out: string, socket: string, nodeEntry: string): Promise<boolean> {
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    await run(['cc', '-O2', '-Wall', '-o', tmp, src, `-DTSNET_CNI_DEFAULT_SOCKET="${socket}"`, `-DTSNET_CNI_NODE="${nodeEntry}"`], { timeoutMs: 60_000 });
    await copyExecutable(tmp, out);
    await removePath(tmp);
    return true;
  } catch {
    await removePath(tmp);
    return false;
  }
}

/** Installs the binaries from `srcDir` (the directory of the running bundle) into `binDir`. */
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
  await makeDir(binDir);
  const bundle = join(binDir, 'tsnet-cni.cjs');
  if (join(src, 'tsnet-cni.cjs') !== bundle) await copyExecutable(join(src, 'tsnet-cni.cjs'), bundle, 0o644);
  const loader = (await readText(join(src, 'tsnet-cni-loader.cjs'))).split('\n').slice(1).join('\n');
  const blob = join(binDir, 'tsnet-cni.blob');
  const binaries = CNI_PLUGINS.map((p) => join(binDir, `${p}${opts.suffix ?? ''}`));
  const nodeEntryName = `tsnet-cni-node${opts.suffix ?? ''}`;
  const frontEndBin = join(binDir, `tsnet-cni-client${opts.suffix ?? ''}`);
  const frontEnd = opts.frontEnd !== false && (await compileFrontEnd(join(src, 'tsnet-cni-client.c'), frontEndBin, socket, nodeEntryName));
  // With the front end, the Node plugin is one entry it runs; without, it is the three names.
  const nodeEntries = frontEnd ? [join(binDir, nodeEntryName)] : binaries;
  if (!frontEnd) await removePath(join(binDir, nodeEntryName));
  const write = async (shebang: string): Promise<void> => {
    for (const b of nodeEntries) {
      await replaceFile(b, `${shebang}\n${loader}`, 0o755);
      await setMode(b, 0o755);
    }
  };
  if (frontEnd) {
    for (const b of binaries) await copyExecutable(frontEndBin, b);
  }
  // VERSION through the names the runtime runs (the front end falls back to the Node entry when no
  // daemon listens; TSNET_CNI_SOCKET points it at a path where none does, to check the Node side).
  const works = async (): Promise<boolean> =>
    run([binaries[0] as string], { env: { CNI_COMMAND: 'VERSION', TSNET_CNI_SOCKET: join(binDir, 'no-daemon.sock') }, input: '{"cniVersion":"1.0.0"}', timeoutMs: 30_000 }).then((r) => r.stdout.includes('supportedVersions'), () => false);

  await removePath(blob);
  await removePath(`${bundle}.cache`);
  // The code cache, written by the first run of the loader (the fallback path).
  await write(SHEBANG);
  await run([process.execPath, nodeEntries[0] as string], { env: { CNI_COMMAND: 'VERSION' }, input: '{}', timeoutMs: 30_000 });
  let snapshot = false;
  if (opts.snapshot !== false && SHEBANG_SAFE.test(blob) && blob.length < 180) {
    const builder = join(binDir, `tsnet-cni.snapshot-builder.${process.pid}.cjs`);
    const code = (await readText(bundle)).replace(/^\/\/# sourceMappingURL=.*$/m, '');
    await writeInPlace(builder, [
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
      await removePath(builder);
    }
    if (!snapshot) {
      await removePath(blob);
      await write(SHEBANG);
    }
  }
  if (!(await works())) throw new TsnetError('INTERNAL', `cni install: ${binaries[0]} does not answer VERSION`, { details: { field: 'bin-dir' } });
  return { binaries, snapshot, frontEnd };
}


/** Writes the example conflist into `confDir` unless one is there (or `force`); the file, or undefined when kept. */
export async function writeExampleConflist(confDir: string, subnet: string, force: boolean, network?: string): Promise<{ readonly file: string; readonly written: boolean }> {
  const file = join(confDir, '10-tsnet.conflist');
  if ((await pathExists(file)) && !force) return { file, written: false };
  await writeInPlace(file, `${JSON.stringify(network !== undefined ? networkConflist(network) : exampleConflist(subnet), null, 2)}\n`);
  return { file, written: true };
}
