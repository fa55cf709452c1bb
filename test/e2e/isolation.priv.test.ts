/**
 * Isolation and hairpin through the built CLI, real packets, both firewall backends, with
 * br_netfilter on (bridged frames pass netfilter, as on any host where Docker runs):
 * - an internal network's traffic never leaves its bridge, DNATed or not: a container on it that
 *   connects to its own gateway on a port another network published on 0.0.0.0 gets nothing;
 * - as with Docker 28, a container of another (non-internal) network reaches that published port
 *   (through its gateway or a host address) but not the container's address directly;
 * - self-hairpin: a container reaches its own published port through a host address and through
 *   its gateway, TCP and UDP, and sees the reply come from the address it connected to.
 */
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { cliFor, okCli, type Cli } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

const TOOLS = fileURLToPath(new URL('../helpers/net-tools.mjs', import.meta.url));

/** `tsnet exec NAME node net-tools PROTO-client ADDR PORT MSG`: the reply, or '' on failure. */
async function ask(cli: Cli, name: string, proto: 'tcp' | 'udp', addr: string, port: number, msg: string, tries: number): Promise<string> {
  for (let i = 0; i < tries; i++) {
    const r = await cli('exec', name, process.execPath, TOOLS, `${proto}-client`, addr, String(port), msg, '800');
    if (r.code === 0 && r.stdout.trim() !== '') return r.stdout.trim();
    if (i + 1 < tries) await new Promise((res) => setTimeout(res, 150));
  }
  return '';
}

for (const backend of ['nftables', 'iptables'] as const) {
  t.test(`${backend}: internal egress through another network's DNAT is dropped; self-hairpin via a host address and the gateway`, { skip: skipUnlessRoot }, async (t) => {
    await withIsolatedHost(async (host) => {
      const cli = cliFor(host, { firewall: backend });
      const ok = okCli(cli);
      host.defer(() => cli('daemon', '--stop'));
      host.defer(async () => {
        for (const n of ['w', 'i', 'o']) await cli('rm', '-f', n);
      });
      t.equal((await host.exec(['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables'])).stdout.trim(), '1', 'premise: br_netfilter is on');
      // A host address on a link to a neighbour.
      const nbr = await host.newNetns('nbr');
      await host.exec(['ip', 'link', 'add', 'vnb0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nbr.kind === 'path' ? nbr.path : '']);
      await host.exec(['ip', 'addr', 'add', '192.168.62.1/24', 'dev', 'vnb0']);
      await host.exec(['ip', 'link', 'set', 'vnb0', 'up']);

      await ok('network', 'create', '--subnet', '10.62.0.0/24', 'pub');
      await ok('network', 'create', '--internal', '--subnet', '10.63.0.0/24', 'sec');
      await ok('network', 'create', '--subnet', '10.64.0.0/24', 'other');
      // w answers TCP and UDP on :80, published on 0.0.0.0:9090.
      await ok('run', '-d', '--name', 'w', '--network', 'pub', '-p', '9090:80', '-p', '9090:80/udp', '--', '/bin/sh', '-c', `${process.execPath} ${TOOLS} udp-server 0.0.0.0 80 & exec ${process.execPath} ${TOOLS} tcp-server 0.0.0.0 80`);
      await ok('run', '-d', '--name', 'i', '--network', 'sec', '--', 'sleep', '600');
      await ok('run', '-d', '--name', 'o', '--network', 'other', '--', 'sleep', '600');
      const wIp = (JSON.parse(await ok('inspect', 'w')) as { NetworkSettings: { Networks: Record<string, { IPAddress: string }> } }[])[0]?.NetworkSettings.Networks['pub']?.IPAddress ?? '';

      // Self-hairpin first (it also waits for w's servers).
      t.equal(await ask(cli, 'w', 'tcp', '192.168.62.1', 9090, 'self', 30), 'hello self from 10.62.0.2 to 10.62.0.1', 'self-hairpin TCP via a host address (reply masqueraded to the gateway)');
      // (net-tools' UDP server reports its bound address, 0.0.0.0, as "from")
      t.match(await ask(cli, 'w', 'udp', '192.168.62.1', 9090, 'self', 20), /^hello self from \S+ to 10\.62\.0\.1$/, 'self-hairpin UDP via a host address');
      t.equal(await ask(cli, 'w', 'tcp', '10.62.0.1', 9090, 'gw', 10), 'hello gw from 10.62.0.2 to 10.62.0.1', 'self-hairpin TCP via the gateway');
      t.match(await ask(cli, 'w', 'udp', '10.62.0.1', 9090, 'gw', 10), /^hello gw from \S+ to 10\.62\.0\.1$/, 'self-hairpin UDP via the gateway');

      // Another, non-internal network: the published port yes (as Docker 28), the address no.
      t.match(await ask(cli, 'o', 'tcp', '10.64.0.1', 9090, 'o', 10), /^hello o from 10\.62\.0\.2 to /, 'another network reaches the published port through its own gateway');
      t.match(await ask(cli, 'o', 'udp', '192.168.62.1', 9090, 'o', 10), /^hello o from \S+ to 10\.62\.0\.1$/, '... and through a host address (UDP; masqueraded to the destination bridge\'s address)');
      t.equal(await ask(cli, 'o', 'tcp', wIp, 80, 'direct', 1), '', 'but not the container\'s address directly (networks are isolated)');

      // The internal network: nothing leaves its bridge, DNATed or not.
      t.equal(await ask(cli, 'i', 'tcp', '10.63.0.1', 9090, 'leak', 1), '', 'internal: its own gateway\'s DNAT to another network\'s published port (TCP) is dropped');
      t.equal(await ask(cli, 'i', 'udp', '10.63.0.1', 9090, 'leak', 1), '', 'internal: the same over UDP');
      t.equal(await ask(cli, 'i', 'tcp', wIp, 80, 'leak', 1), '', 'internal: the other container\'s address directly');
      const route = await ok('exec', 'i', 'ip', 'route', 'show', 'default');
      t.equal(route.trim(), '', 'internal: no default route (host addresses are not even routable)');
    });
  });
}
