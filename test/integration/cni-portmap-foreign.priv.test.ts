/**
 * tsnet-portmap after the reference `bridge` plugin (containernetworking-plugins 1.1.1, a bridge
 * that is no tsnet network), both firewall backends, real packets, br_netfilter on: a published
 * port answers through 127.0.0.1 from the host (route_localnet on that bridge, masquerade of the
 * loopback flow) and from the pod to its own port through a host address and through its gateway
 * (hairpin, masqueraded), as the reference portmap does; DEL takes all of it away.
 */
import t from 'tap';
import { neighbour, nsPath, world, type Attachment, type Conflist } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';
import { reachable, request, retry, startServer } from '../helpers/traffic.js';

const V = '1.0.0';

/** This file's budget, as before: 20 tries, 100 ms apart. */
const retrySoon = (f: () => Promise<string>): Promise<string> => retry(f, 20, 100);

for (const backend of ['nftables', 'iptables'] as const) {
  t.test(`${backend}: reference bridge + tsnet-portmap: 127.0.0.1 and self-hairpin`, { skip: skipUnlessRoot }, async (t) => {
    await withIsolatedHost(async (host) => {
      const w = await world(host);
      await neighbour(host); // a host address, 192.168.77.1
      await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      t.equal((await host.exec(['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables'])).stdout.trim(), '1', 'premise: br_netfilter is on');
      // hairpinMode is what the reference portmap documents for hairpin; the bridge plugin's default is off.
      const list: Conflist = {
        cniVersion: V,
        name: 'fb',
        plugins: [
          { type: 'bridge', bridge: 'fb0', isGateway: true, isDefaultGateway: true, ipMasq: true, hairpinMode: true, ipam: { type: 'host-local', ranges: [[{ subnet: '10.86.0.0/24' }]], dataDir: w.dataDir } },
          { type: 'tsnet-portmap', firewallBackend: backend, capabilities: { portMappings: true } },
        ],
      };
      const ns = await host.newNetns('pod');
      const a: Attachment = { containerId: 'pod-a', netns: nsPath(ns), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8086, containerPort: 80, protocol: 'tcp' }, { hostPort: 8086, containerPort: 80, protocol: 'udp' }] } };
      const r = await w.cni.addList(list, a);
      const ip = (r['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
      t.match(ip, /^10\.86\.0\.\d+$/, `pod address ${ip}`);
      await startServer(host, ns, 'tcp', '0.0.0.0', 80);
      await startServer(host, ns, 'udp', '0.0.0.0', 80);
      t.equal((await host.exec(['sysctl', '-n', 'net.ipv4.conf.fb0.route_localnet'])).stdout.trim(), '1', 'route_localnet on the foreign bridge');

      t.match(await retrySoon(() => request(host.ns, 'tcp', '127.0.0.1', 8086, 'lo', 1000)), /^hello lo from \S+ to 10\.86\.0\.1$/, 'TCP through 127.0.0.1 from the host (masqueraded to the bridge address)');
      t.match(await retrySoon(() => request(host.ns, 'udp', '127.0.0.1', 8086, 'lo', 1000)), /^hello lo from \S+ to 10\.86\.0\.1$/, 'UDP through 127.0.0.1');
      t.equal(await retrySoon(() => request(ns, 'tcp', '192.168.77.1', 8086, 'self', 1000)), `hello self from ${ip} to 10.86.0.1`, 'the pod reaches its own port through a host address (TCP)');
      // (net-tools' UDP server reports its bound address, 0.0.0.0, as "from")
      t.match(await retrySoon(() => request(ns, 'udp', '192.168.77.1', 8086, 'self', 1000)), /^hello self from \S+ to 10\.86\.0\.1$/, '... UDP');
      t.equal(await retrySoon(() => request(ns, 'tcp', '10.86.0.1', 8086, 'gw', 1000)), `hello gw from ${ip} to 10.86.0.1`, '... and through its gateway');

      await w.cni.delList(list, a);
      t.notOk(await reachable(host.ns, 'tcp', '127.0.0.1', 8086, 800), 'DEL: the port is gone');
      const leftovers = backend === 'nftables'
        ? (await host.exec(['nft', 'list', 'table', 'inet', 'tsnet'])).stdout.split('\n').filter((l) => l.includes('10.86.0.'))
        : (await host.exec(['iptables-save'])).stdout.split('\n').filter((l) => l.includes('10.86.0.'));
      t.same(leftovers.filter((l) => /comment|tsnet/.test(l)), [], 'DEL: none of the attachment\'s DNAT or masquerade left');
    });
  });
}
