/**
 * End to end with a real dockerd (Debian docker.io) and `tsnet docker-plugin`, inside an isolated
 * host: `docker network create -d tsnet --ipam-driver tsnet`, containers reaching each other, `-p`
 * answering from the host, connect/disconnect, dockerd and plugin restarts, and `docker rm -f` +
 * `docker network rm` leaving no link, firewall element or record behind.
 */
import t from 'tap';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execDetails } from '../../sys/exec.js';
import { createNftablesFirewall } from '../../sys/firewall/nftables.js';
import { IMAGE, importBusybox, startDockerd, type Dockerd } from '../helpers/dockerd.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

const SERVER = ['nc', '-ll', '-p', '80', '-e', 'echo', 'hello'];

async function hostLinks(host: IsolatedHost): Promise<string[]> {
  return (JSON.parse((await host.exec(['ip', '-json', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname).sort();
}

/** The files under the state directory's records and reservations that the plugin may have made. */
async function leftRecords(host: IsolatedHost): Promise<string[]> {
  const out: string[] = [];
  for (const sub of ['records/docker-networks', 'records/docker-endpoints', 'records/ipam-pools', 'records/ipam-cursors']) {
    for (const f of await readdir(join(host.stateDir, sub)).catch(() => [])) out.push(`${sub}/${f}`);
  }
  for (const pool of await readdir(join(host.stateDir, 'reservations')).catch(() => [])) {
    for (const f of await readdir(join(host.stateDir, 'reservations', pool)).catch(() => [])) out.push(`reservations/${pool}/${f}`);
  }
  return out.sort();
}

/** TCP from the host namespace; the answer, or '' after `tries`. */
async function fromHost(host: IsolatedHost, addr: string, port: number, tries = 40): Promise<string> {
  for (let i = 0; i < tries; i++) {
    try {
      const r = await host.exec(['busybox', 'nc', '-w', '2', addr, String(port)], { input: '', timeoutMs: 5_000 });
      if (r.stdout.trim() !== '') return r.stdout.trim();
    } catch (err) {
      if (!execDetails(err)) throw err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return '';
}

/** TCP from a new container on `network` (retried while the server starts). */
async function fromContainer(d: Dockerd, network: string, target: string, tries = 10): Promise<string> {
  let last = '';
  for (let i = 0; i < tries; i++) {
    const r = await d.docker('run', '--rm', '--network', network, IMAGE, 'nc', '-w', '2', target, '80');
    if (r.code === 0 && r.stdout.trim() !== '') return r.stdout.trim();
    last = r.stderr.trim();
    await new Promise((res) => setTimeout(res, 150));
  }
  return `no answer: ${last}`;
}

async function execIn(d: Dockerd, container: string, ...argv: string[]): Promise<string> {
  return d.ok('exec', container, ...argv);
}

t.test('dockerd with tsnet as network and IPAM driver', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const d = await startDockerd(host);
    await importBusybox(d, join(host.stateDir, 'image'));
    const fw = createNftablesFirewall({ netns: host.ns });
    const linksBefore = await hostLinks(host);

    // A network: Docker's IPAM calls reach tsnet's IPAM; the bridge carries the gateway.
    const labId = await d.ok('network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.77.0.0/24', '--gateway', '10.77.0.254', 'lab');
    t.match(labId, /^[0-9a-f]{64}$/, 'network created');
    const bridge = `br-${labId.slice(0, 12)}`;
    const addrs = JSON.parse((await host.exec(['ip', '-json', 'addr', 'show', 'dev', bridge])).stdout) as { addr_info: { local: string; prefixlen: number }[] }[];
    t.same(addrs[0]?.addr_info.map((a) => `${a.local}/${a.prefixlen}`).filter((a) => !a.startsWith('fe80')), ['10.77.0.254/24'], 'the bridge has the gateway Docker asked for');
    const bad = await d.docker('network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.77.0.0/16', 'overlapping');
    t.not(bad.code, 0, 'an overlapping subnet is refused');
    t.match(bad.stderr, /overlaps/, `with the reason: ${bad.stderr.trim()}`);
    const badOpt = await d.docker('network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'mtu=9', 'badopt');
    t.match(badOpt.stderr, /option mtu: invalid value "9"/, 'a bad driver option names the option');

    // Two containers reach each other by name (Docker's embedded DNS) and by address.
    await d.ok('run', '-d', '--name', 'web', '--network', 'lab', '-p', '8080:80', '-p', '127.0.0.1:8081:80', IMAGE, ...SERVER);
    const webIp = await d.ok('inspect', '-f', '{{(index .NetworkSettings.Networks "lab").IPAddress}}', 'web');
    t.match(webIp, /^10\.77\.0\.\d+$/, `web has ${webIp}`);
    t.equal(await fromContainer(d, 'lab', 'web'), 'hello', 'container → container by name');
    t.equal(await fromContainer(d, 'lab', webIp), 'hello', 'container → container by address');
    const route = await d.ok('run', '--rm', '--network', 'lab', IMAGE, 'ip', 'route', 'show', 'default');
    t.match(route, /^default via 10\.77\.0\.254 dev eth0/, 'default route through the gateway');

    // -p: DNAT from the host, no proxy process.
    t.equal(await fromHost(host, '127.0.0.1', 8080), 'hello', '-p 8080:80 answers from the host');
    t.equal(await fromHost(host, '127.0.0.1', 8081), 'hello', '-p 127.0.0.1:8081:80 answers from the host');
    const ps = (await host.exec(['ps', '-eo', 'comm'])).stdout;
    t.notMatch(ps, /docker-proxy/, 'no userland proxy');
    t.equal((await fw.list()).endpoints.length, 1, 'one endpoint with published ports in the firewall');

    // connect / disconnect: a container on a second tsnet network joins lab and leaves it.
    await d.ok('network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'other');
    await d.ok('run', '-d', '--name', 'c2', '--network', 'other', IMAGE, 'sleep', '300');
    await d.ok('network', 'connect', 'lab', 'c2');
    t.match(await execIn(d, 'c2', 'ip', '-o', 'addr', 'show', 'dev', 'eth1'), /inet 10\.77\.0\.\d+\/24/, 'connect: eth1 on lab');
    t.equal(await execIn(d, 'c2', 'nc', '-w', '2', 'web', '80'), 'hello', 'connected container reaches web');
    const vethsConnected = (await hostLinks(host)).filter((l) => l.startsWith('veth')).length;
    await d.ok('network', 'disconnect', 'lab', 'c2');
    t.notMatch(await execIn(d, 'c2', 'ip', '-o', 'link'), /eth1/, 'disconnect: eth1 gone');
    t.equal((await hostLinks(host)).filter((l) => l.startsWith('veth')).length, vethsConnected - 1, 'disconnect: its host veth gone');
    const again = await d.docker('exec', 'c2', 'nc', '-w', '1', webIp, '80');
    t.not(again.stdout.trim(), 'hello', 'after disconnect lab is unreachable from c2');

    // dockerd restart (containers stop) and a plugin restart in between: state survives both.
    await d.restart();
    await d.restartPlugin();
    await d.ok('start', 'web', 'c2');
    t.equal(await fromContainer(d, 'lab', 'web'), 'hello', 'after dockerd and plugin restarts: container → container');
    t.equal(await fromHost(host, '127.0.0.1', 8080), 'hello', 'after restarts: -p answers from the host');
    await d.ok('network', 'connect', 'lab', 'c2');
    t.equal(await execIn(d, 'c2', 'nc', '-w', '2', 'web', '80'), 'hello', 'after restarts: connect works');

    // Removal leaves nothing behind.
    await d.ok('rm', '-f', 'web', 'c2');
    await d.ok('network', 'rm', 'lab', 'other');
    t.same(await hostLinks(host), linksBefore, 'no bridge or veth left');
    t.same(await fw.list(), { networks: [], endpoints: [] }, 'no firewall rule or port element left');
    t.same(await leftRecords(host), [], 'no record or address reservation left');
    t.equal((await d.ok('network', 'ls', '--filter', 'driver=tsnet', '-q')), '', 'docker has no tsnet network left');
    t.notMatch(d.pluginLog(), /"level":"error"/, 'the plugin logged no error');
  });
});
