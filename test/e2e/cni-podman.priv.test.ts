/**
 * A real runtime on tsnet's CNI plugins: Podman 4.3 with its CNI network backend, an image imported
 * offline from a busybox-static root filesystem, two containers on a tsnet conflist. They reach
 * each other, a published port answers a neighbour, and `podman rm` leaves nothing behind (no
 * veth, no reservation, no nft element).
 *
 * Podman keeps caches in fixed places (/var/lib/cni for libcni's result cache,
 * /var/lib/containers/cache, /var/tmp for import staging) that isolate.mjs cannot hide when they do
 * not exist on the machine, so every podman call runs in a mount namespace of its own with tmpfs
 * on /var/lib and /var/tmp and the test's own directories bound in (/var/lib and /var/tmp are
 * private mounts there, so nothing propagates back; /run/netns is made shared so the namespaces
 * podman mounts are seen by the next call).
 */
import t from 'tap';
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startDaemon, TSNET_BIN } from '../helpers/cli.js';
import { neighbour, nftElements } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

const WRAP = [
  'set -e',
  'mount -t tmpfs tsnet-podman /var/lib',
  'mount -t tmpfs tsnet-podman /var/tmp',
  'mkdir -p /var/lib/cni /var/lib/containers',
  'mount --bind "$W/var-lib-cni" /var/lib/cni',
  'mount --bind "$W/var-lib-containers" /var/lib/containers',
  'shift',
  'exec podman --root "$W/root" --runroot "$W/runroot" --storage-driver vfs "$@"',
].join('\n');

async function veths(host: IsolatedHost): Promise<number> {
  const out = (await host.exec(['ip', '-json', 'link', 'show'])).stdout;
  return (JSON.parse(out) as { ifname: string }[]).filter((l) => l.ifname.startsWith('veth')).length;
}

/**
 * Podman on a tsnet conflist (tsnet-bridge with `extra` keys) in the isolated host, the busybox image
 * imported: returns the podman runner and the directories.
 */
async function podmanWorld(host: IsolatedHost, extra: Record<string, unknown> = {}): Promise<{ podman: (...args: string[]) => Promise<string>; w: string; ipam: string }> {
  const w = join(host.stateDir, 'podman');
  const bin = join(w, 'bin');
  const netd = join(w, 'net.d');
  const ipam = join(w, 'ipam');
  const rootfs = join(w, 'rootfs');
  for (const d of [bin, netd, ipam, join(rootfs, 'bin'), join(rootfs, 'www'), join(w, 'var-lib-cni'), join(w, 'var-lib-containers'), join(w, 'root'), join(w, 'runroot')]) await mkdir(d, { recursive: true });
  await host.exec([process.execPath, TSNET_BIN, 'cni', 'install', '--bin-dir', bin, '--conf-dir', '']);
  await writeFile(join(netd, 'tsnet.conflist'), JSON.stringify({
    cniVersion: '1.0.0',
    name: 'tsnet',
    plugins: [{
      type: 'tsnet-bridge', bridge: 'tsnet-cni0', isGateway: true, isDefaultGateway: true, ipMasq: true, hairpinMode: true,
      capabilities: { portMappings: true, ips: true, mac: true, dns: true },
      ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.87.0.0/24' }]], dataDir: ipam },
      ...extra,
    }],
  }));
  const conf = join(w, 'containers.conf');
  await writeFile(conf, [
    '[containers]', 'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]',
    '[network]', 'network_backend = "cni"', `cni_plugin_dirs = ["${bin}"]`, `network_config_dir = "${netd}"`, 'default_network = "tsnet"',
    '[engine]', 'runtime = "runc"', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', '',
  ].join('\n'));
  // busybox-static root filesystem with relative links (absolute ones break inside the image)
  await host.exec(['cp', '/bin/busybox', join(rootfs, 'bin', 'busybox')]);
  for (const name of (await host.exec(['/bin/busybox', '--list'])).stdout.split('\n').filter((n) => n !== '' && n !== 'busybox')) {
    await symlink('busybox', join(rootfs, 'bin', name));
  }
  await writeFile(join(rootfs, 'www', 'index.html'), 'hello from tsnet\n');
  await host.exec(['tar', '-C', rootfs, '-cf', join(w, 'rootfs.tar'), '.']);
  // Podman bind-mounts container namespaces under /run/netns from inside its own mount namespace:
  // /run/netns must be a shared mount for the next podman call (and the test) to see them.
  await host.exec(['sh', '-c', 'mkdir -p /run/netns && (mountpoint -q /run/netns || mount --bind /run/netns /run/netns) && mount --make-shared /run/netns']);
  const podman = async (...args: string[]): Promise<string> =>
    (await host.exec(['unshare', '--mount', '--propagation', 'unchanged', '--', 'sh', '-c', WRAP, 'sh', 'podman', ...args], { env: { W: w, CONTAINERS_CONF: conf, HOME: w }, timeoutMs: 60_000 })).stdout.trim();
  await podman('import', '-q', '-c', 'ENV PATH=/bin', join(w, 'rootfs.tar'), 'localhost/bb:latest');
  return { podman, w, ipam };
}

t.test('podman (CNI backend) runs containers on a tsnet conflist', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const { podman, w, ipam } = await podmanWorld(host);
    await podman('run', '-d', '--name', 'web', '--network', 'tsnet', '-p', '8089:80', 'localhost/bb:latest', 'httpd', '-f', '-p', '80', '-h', '/www');
    const ip = await podman('inspect', 'web', '--format', '{{.NetworkSettings.Networks.tsnet.IPAddress}}');
    t.match(ip, /^10\.87\.0\.\d+$/, `web has an address from the tsnet range (${ip})`);
    const got = await podman('run', '--rm', '--network', 'tsnet', 'localhost/bb:latest', 'sh', '-c', `printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc ${ip} 80`);
    t.match(got, /hello from tsnet/, 'a second container reaches the first');
    const nbr = await neighbour(host);
    const pub = await host.execIn(nbr, ['sh', '-c', "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 192.168.77.1 8089"]);
    t.match(pub.stdout, /hello from tsnet/, 'the published port answers a neighbour');
    t.equal(await veths(host), 1, 'one veth while web runs');
    t.equal(await nftElements(host), 1, 'one port element while web runs');
    await podman('rm', '-f', '-t', '0', 'web');
    t.equal(await veths(host), 0, 'podman rm: no veth left');
    t.equal(await nftElements(host), 0, 'podman rm: no port element left');
    t.same((await readdir(join(ipam, 'tsnet'))).filter((f) => /^\d/.test(f)), [], 'podman rm: no reservation left');
    t.equal(await podman('ps', '-aq'), '', 'no container left');
    t.same(await readdir(join(w, 'var-lib-cni', 'results')).catch(() => []), [], 'no libcni cache entry left');
  });
});

t.test('podman: containers resolve each other by name through tsnet\'s DNS (aliases capability, tsnet daemon)', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    await startDaemon(host);
    const { podman } = await podmanWorld(host, { capabilities: { portMappings: true, aliases: true }, tsnetStateDir: host.stateDir, tsnetRunDir: host.runDir });
    await podman('run', '-d', '--name', 'web', '--network', 'tsnet', 'localhost/bb:latest', 'httpd', '-f', '-p', '80', '-h', '/www');
    const ip = await podman('inspect', 'web', '--format', '{{.NetworkSettings.Networks.tsnet.IPAddress}}');
    const out = await podman('run', '--rm', '--name', 'client', '--network', 'tsnet', 'localhost/bb:latest', 'sh', '-c', 'cat /etc/resolv.conf; nslookup web; printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | nc web 80');
    t.match(out, /^nameserver 10\.87\.0\.1$/m, 'Podman pointed the container at the gateway (the result\'s dns.nameservers)');
    t.match(out, new RegExp(`Address:\\s+${ip.replaceAll('.', '\\.')}\\b`), `nslookup web: ${ip}, the name Podman passed as K8S_POD_NAME`);
    t.match(out, /hello from tsnet/, 'and reaches it by name');
    await podman('rm', '-f', '-t', '0', 'web');
    t.same((await readdir(join(host.stateDir, 'records', 'cni-attachments')).catch(() => [])).filter((f) => f.endsWith('.json')), [], 'podman rm: no DNS record left');
  });
});
