/**
 * What tsnet's coexistence e2e tests share (test/e2e/coexist-*.priv.test.ts): a neighbour
 * "internet", two containers on network `lab` through the built CLI, the connectivity checks
 * (container to container by address and by name, a published port from the neighbour, egress),
 * and readings of the host's iptables.
 */
import type { Test } from 'tap';
import { fileURLToPath } from 'node:url';
import type { NetnsRef } from '../../core/net.js';
import { okCli, type Cli } from './cli.js';
import type { IsolatedHost } from './isolated-host.js';
import { request, retry, startServer } from './traffic.js';

const TOOLS = fileURLToPath(new URL('./net-tools.mjs', import.meta.url));
export const BACKENDS = ['nftables', 'iptables'] as const;

/** The neighbour "internet": 192.168.60.2 on a link to the host (192.168.60.1), a TCP server on :7777. */
export async function internet(host: IsolatedHost): Promise<NetnsRef> {
  const inet = await host.newNetns('inet');
  const p = inet.kind === 'path' ? inet.path : '';
  await host.exec(['ip', 'link', 'add', 'vinet0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p]);
  await host.exec(['ip', 'addr', 'add', '192.168.60.1/24', 'dev', 'vinet0']);
  await host.exec(['ip', 'link', 'set', 'vinet0', 'up']);
  await host.execIn(inet, ['ip', 'addr', 'add', '192.168.60.2/24', 'dev', 'eth0']);
  await host.execIn(inet, ['ip', 'link', 'set', 'eth0', 'up']);
  await startServer(host, inet, 'tcp', '0.0.0.0', 7777);
  return inet;
}

/**
 * Everyone else's iptables, both families: every rule, chain and non-default policy by table, in
 * order, counters and tsnet's own lines left out (an empty table tsnet's backend made is no change
 * to anyone's rules).
 */
export async function othersRules(host: IsolatedHost): Promise<string[]> {
  const out: string[] = [];
  for (const bin of ['iptables-save', 'ip6tables-save'] as const) {
    let table = '';
    for (const line of (await host.exec([bin])).stdout.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      if (/tsnet|TSNET/.test(line)) continue;
      const chain = /^:(\S+) (\S+)/.exec(line);
      if (chain && chain[2] === 'ACCEPT') continue; // a built-in chain at its default
      if (line.startsWith('-A') || chain) out.push(`${bin} ${table}: ${line.replace(/\s*\[\d+:\d+\]/, '')}`);
    }
  }
  return out;
}

/** From inside container `name` (net-tools' tcp-client: the container's resolv.conf resolves names). */
export const fromCtr = (cli: Cli, name: string, addr: string, port: number, msg: string) => async (): Promise<string> => {
  const r = await cli('exec', name, process.execPath, TOOLS, 'tcp-client', addr, String(port), msg, '1000');
  if (r.code !== 0) throw new Error(r.stderr.trim());
  return r.stdout.trim();
};

export async function connectivity(t: Test, label: string, cli: Cli, inet: NetnsRef, bIp: string): Promise<void> {
  t.match(await retry(fromCtr(cli, 'a', bIp, 80, 'addr')), /^hello addr from \S+ to \S+$/, `${label}: container → container by address`);
  t.match(await retry(fromCtr(cli, 'a', 'b', 80, 'name')), /^hello name from \S+ to \S+$/, `${label}: container → container by name (embedded DNS)`);
  t.match(await retry(() => request(inet, 'tcp', '192.168.60.1', 8080, 'pub', 1000)), /^hello pub from \S+ to 192\.168\.60\.2$/, `${label}: published port from a neighbour`);
  t.equal(await retry(fromCtr(cli, 'a', '192.168.60.2', 7777, 'out')), 'hello out from 192.168.60.2 to 192.168.60.1', `${label}: egress to the neighbour "internet" (masqueraded)`);
}

/** Two containers on network lab: b serves TCP :80, published on 8080. */
export async function containers(cli: Cli): Promise<string> {
  const ok = okCli(cli);
  await ok('network', 'create', '--subnet', '10.61.0.0/24', 'lab');
  await ok('run', '-d', '--name', 'a', '--network', 'lab', '--', 'sleep', '600');
  await ok('run', '-d', '--name', 'b', '--network', 'lab', '-p', '8080:80', '--', process.execPath, TOOLS, 'tcp-server', '0.0.0.0', '80');
  return (JSON.parse(await ok('inspect', 'b')) as { NetworkSettings: { Networks: Record<string, { IPAddress: string }> } }[])[0]?.NetworkSettings.Networks['lab']?.IPAddress ?? '';
}

export async function teardown(cli: Cli): Promise<void> {
  const ok = okCli(cli);
  await ok('rm', '-f', 'a', 'b');
  await ok('network', 'rm', 'lab');
  await cli('daemon', '--stop');
}

/** tsnet's let-through rules in `chain` for the bridge of network `lab`, or for any bridge. */
export const tsnetLines = async (host: IsolatedHost, chain: string, bridge?: string): Promise<string[]> =>
  (await host.exec(['iptables-save', '-t', 'filter'])).stdout
    .split('\n')
    .filter((l) => l.startsWith(`-A ${chain} `) && l.includes('tsnet:net:') && (bridge === undefined || new RegExp(`-[io] ${bridge} `).test(l)));

export async function labBridge(cli: Cli): Promise<string> {
  const n = JSON.parse(await okCli(cli)('network', 'inspect', 'lab')) as { Options?: Record<string, string>; Id: string }[];
  return n[0]?.Options?.['com.docker.network.bridge.name'] ?? `br-${n[0]?.Id.slice(0, 12) ?? ''}`;
}

