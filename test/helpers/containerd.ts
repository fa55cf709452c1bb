/**
 * containerd 1.6 (Debian `containerd`) inside a test's isolated host: its own config, root, state
 * and socket under the host's directories, the CRI plugin disabled (the CRI path is driven through
 * go-cni directly, test/helpers/go-tools.ts), and `ctr` with an OCI image built by hand from
 * busybox-static.
 *
 * `ctr run --cni` reads the CNI configuration from /etc/cni/net.d and the plugins from
 * /opt/cni/bin, with no flag to change either. So every ctr call runs in a mount namespace of its
 * own in which /etc and /opt are overlays whose writes go to the test's directories, and the
 * test's configuration and plugin directories are bound on those two paths: nothing reaches the
 * real /etc or /opt, and concurrent tests do not see each other's configuration.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, type LongLived, type RunResult } from '../../sys/exec.js';
import { busyboxRootfs } from './dockerd.js';
import type { IsolatedHost } from './isolated-host.js';

const CTR_WRAP = [
  'set -e',
  'W="$1"; CONF="$2"; BIN="$3"; shift 3',
  'for d in etc opt; do mkdir -p "$W/$d-upper" "$W/$d-work"; mount -t overlay tsnet-ctr -o "lowerdir=/$d,upperdir=$W/$d-upper,workdir=$W/$d-work" "/$d"; done',
  'mkdir -p /etc/cni/net.d /opt/cni/bin',
  'mount --bind "$CONF" /etc/cni/net.d',
  'mount --bind "$BIN" /opt/cni/bin',
  'exec ctr -a "$W/containerd.sock" "$@"',
].join('\n');

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/**
 * An OCI image-layout tarball (one uncompressed layer: /bin/busybox and its applet links, PATH=/bin)
 * that `ctr images import` names `name`.
 */
export async function busyboxOciImage(dir: string, name: string): Promise<string> {
  const layout = join(dir, 'oci');
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layerTar = await busyboxRootfs(dir);
  const layer = await readFile(layerTar);
  const blob = async (data: Buffer | string): Promise<{ digest: string; size: number }> => {
    const digest = sha256(data);
    await writeFile(join(blobs, digest), data);
    return { digest: `sha256:${digest}`, size: Buffer.byteLength(data) };
  };
  const layerDesc = { mediaType: 'application/vnd.oci.image.layer.v1.tar', ...(await blob(layer)) };
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'], Cmd: ['sh'] }, rootfs: { type: 'layers', diff_ids: [layerDesc.digest] } });
  const configDesc = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await blob(config)) };
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers: [layerDesc] });
  const manifestDesc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...(await blob(manifest)) };
  const tag = name.split(':').pop() ?? 'latest';
  await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifestDesc, annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': tag } }] }));
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const out = join(dir, 'image.tar');
  await run(['tar', '-C', layout, '-cf', `${out}.tmp`, '.']);
  await rename(`${out}.tmp`, out);
  return out;
}

export interface Containerd {
  readonly dir: string;
  /** ctr with the CNI configuration of `cni.confDir` and the plugins of `cni.binDir` (see the header). */
  ctr(args: readonly string[], opts?: { readonly timeoutMs?: number }): Promise<RunResult>;
  /** The same, as a long-lived process (killed at the host's teardown). */
  spawnCtr(args: readonly string[]): LongLived;
}

/** Starts containerd in the host namespace; resolves once its socket answers. */
export async function startContainerd(host: IsolatedHost, cni: { readonly confDir: string; readonly binDir: string }): Promise<Containerd> {
  const dir = join(host.stateDir, 'containerd');
  await mkdir(dir, { recursive: true });
  const sock = join(dir, 'containerd.sock');
  const config = join(dir, 'config.toml');
  await writeFile(config, [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(host.runDir, 'containerd-state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${JSON.stringify(sock)}`,
    '',
  ].join('\n'));
  const daemon = host.spawnIn(host.ns, ['containerd', '--config', config]);
  daemon.child.stdout.resume(); // its log: read, or a full pipe blocks it
  daemon.child.stderr.resume();
  const argv = (args: readonly string[]): [string, ...string[]] => ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', CTR_WRAP, 'ctr-wrap', dir, cni.confDir, cni.binDir, ...args];
  const c: Containerd = {
    dir,
    ctr: (args, opts) => host.exec(argv(args), { timeoutMs: opts?.timeoutMs ?? 60_000 }),
    spawnCtr: (args) => host.spawnIn(host.ns, argv(args)),
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (daemon.child.exitCode !== null) throw new Error(`containerd exited ${daemon.child.exitCode}`);
    if (await stat(sock).then(() => true, () => false)) {
      if (await c.ctr(['version'], { timeoutMs: 5_000 }).then(() => true, () => false)) break;
    }
    if (Date.now() > deadline) throw new Error('containerd did not start within 20 s');
    await sleep(50);
  }
  // ctr run --rm removes its container and task; stop containerd cleanly before the host goes
  // (the host's teardown then only reaps it).
  host.defer(async () => {
    daemon.child.kill('SIGTERM');
    await daemon.close(3_000);
  });
  return c;
}
