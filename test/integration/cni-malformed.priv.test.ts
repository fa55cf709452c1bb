/**
 * 37 kinds of malformed CNI environment or configuration, each sent to the bundled tsnet-bridge as
 * libcni would: the spec's error JSON on stdout with the right code, a message naming the field,
 * exit status 1, and nothing created (no link, no reservation, no firewall state).
 */
import t from 'tap';
import { join } from 'node:path';
import { bridgeList, execPlugin, links, makeCniPath, nftElements, nsPath, reservations } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

interface Case {
  readonly name: string;
  readonly code: number;
  /** Matched against msg + details. */
  readonly names: RegExp;
  /** Env changes (undefined deletes). */
  readonly env?: Record<string, string | undefined>;
  /** Replaces stdin entirely. */
  readonly stdin?: string;
  /** Changes to the plugin configuration (undefined deletes a key). */
  readonly conf?: Record<string, unknown>;
  readonly ipam?: Record<string, unknown>;
}

const CASES: readonly Case[] = [
  { name: 'CNI_COMMAND missing', code: 4, names: /CNI_COMMAND/, env: { CNI_COMMAND: undefined } },
  { name: 'CNI_COMMAND unknown', code: 4, names: /CNI_COMMAND/, env: { CNI_COMMAND: 'ATTACH' } },
  { name: 'CNI_CONTAINERID missing', code: 4, names: /CNI_CONTAINERID/, env: { CNI_CONTAINERID: undefined } },
  { name: 'CNI_CONTAINERID with a slash', code: 4, names: /CNI_CONTAINERID/, env: { CNI_CONTAINERID: 'a/b' } },
  { name: 'CNI_IFNAME missing', code: 4, names: /CNI_IFNAME/, env: { CNI_IFNAME: undefined } },
  { name: 'CNI_IFNAME too long', code: 4, names: /CNI_IFNAME/, env: { CNI_IFNAME: 'abcdefghijklmnop' } },
  { name: 'CNI_IFNAME with a colon', code: 4, names: /CNI_IFNAME/, env: { CNI_IFNAME: 'eth0:1' } },
  { name: 'CNI_NETNS missing on ADD', code: 4, names: /CNI_NETNS/, env: { CNI_NETNS: undefined } },
  { name: 'CNI_NETNS relative', code: 4, names: /CNI_NETNS/, env: { CNI_NETNS: 'netns/x' } },
  { name: 'CNI_NETNS not a namespace', code: 4, names: /CNI_NETNS/, env: { CNI_NETNS: '/etc/hostname' } },
  { name: 'CNI_ARGS not KEY=VALUE', code: 4, names: /CNI_ARGS/, env: { CNI_ARGS: 'IgnoreUnknown=1;FOO' } },
  { name: 'stdin not JSON', code: 6, names: /not JSON/, stdin: '{"cniVersion": ' },
  { name: 'stdin a JSON array', code: 6, names: /JSON object/, stdin: '[]' },
  { name: 'cniVersion missing', code: 7, names: /cniVersion/, conf: { cniVersion: undefined } },
  { name: 'cniVersion 0.2.0', code: 1, names: /cniVersion/, conf: { cniVersion: '0.2.0' } },
  { name: 'cniVersion 9.9.9', code: 1, names: /cniVersion/, conf: { cniVersion: '9.9.9' } },
  { name: 'name missing', code: 7, names: /name/, conf: { name: undefined } },
  { name: 'name with a space', code: 7, names: /name/, conf: { name: 'bad name' } },
  { name: 'CHECK at 0.3.1', code: 1, names: /CHECK/, env: { CNI_COMMAND: 'CHECK' }, conf: { cniVersion: '0.3.1' } },
  { name: 'GC at 1.0.0', code: 1, names: /GC/, env: { CNI_COMMAND: 'GC' }, conf: { cniVersion: '1.0.0' } },
  { name: 'bridge name too long', code: 7, names: /bridge/, conf: { bridge: 'a-very-long-bridge-name' } },
  { name: 'mtu too small', code: 7, names: /mtu/, conf: { mtu: 10 } },
  { name: 'ipMasq not a boolean', code: 7, names: /ipMasq/, conf: { ipMasq: 'yes' } },
  { name: 'ipam missing', code: 7, names: /ipam/, conf: { ipam: undefined } },
  { name: 'ipam.ranges empty', code: 7, names: /ipam\.ranges/, ipam: { ranges: [] } },
  { name: 'subnet prefix length 33', code: 7, names: /ipam\.ranges\[0\]\[0\]\.subnet/, ipam: { ranges: [[{ subnet: '10.0.0.0/33' }]] } },
  { name: 'subnet with host bits', code: 7, names: /ipam\.ranges\[0\]\[0\]\.subnet/, ipam: { ranges: [[{ subnet: '10.0.0.1/24' }]] } },
  { name: 'rangeStart outside the subnet', code: 7, names: /rangeStart/, ipam: { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.1.5' }]] } },
  { name: 'overlapping ranges', code: 7, names: /overlaps/, ipam: { ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.0.0.0/25' }]] } },
  { name: 'dataDir relative', code: 7, names: /dataDir/, ipam: { ranges: [[{ subnet: '10.0.0.0/24' }]], dataDir: 'rel/dir' } },
  { name: 'hostPort out of range', code: 7, names: /portMappings\[0\]\.hostPort/, conf: { runtimeConfig: { portMappings: [{ hostPort: 70000, containerPort: 80, protocol: 'tcp' }] } } },
  { name: 'protocol icmp', code: 7, names: /portMappings\[0\]\.protocol/, conf: { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol: 'icmp' }] } } },
  { name: 'mac multicast', code: 7, names: /runtimeConfig\.mac/, conf: { runtimeConfig: { mac: '01:00:5e:00:00:01' } } },
  { name: 'requested IP outside the ranges', code: 7, names: /ips/, conf: { runtimeConfig: { ips: ['192.168.9.9'] } } },
  { name: 'ipam.type not on CNI_PATH', code: 7, names: /ipam\.type/, ipam: { type: 'no-such-ipam' } },
  { name: 'firewallBackend unknown', code: 7, names: /firewallBackend/, conf: { firewallBackend: 'pf' } },
  { name: 'vlan set', code: 2, names: /vlan/, conf: { vlan: 5 } },
  { name: 'prevResult.ips not a list', code: 7, names: /prevResult\.ips/, conf: { prevResult: { cniVersion: '1.1.0', ips: 'x' } } },
  { name: 'CNI_ARGS with an unknown key', code: 4, names: /CNI_ARGS: unknown argument FOO/, env: { CNI_ARGS: 'FOO=1' } },
  { name: 'CNI_ARGS IgnoreUnknown=yes', code: 4, names: /IgnoreUnknown/, env: { CNI_ARGS: 'IgnoreUnknown=yes;FOO=1' } },
  { name: 'dataDir is a file', code: 7, names: /dataDir/, ipam: { ranges: [[{ subnet: '10.0.0.0/24' }]], dataDir: '/etc/hostname' } },
  { name: 'dataDir is /dev/null', code: 7, names: /dataDir/, ipam: { ranges: [[{ subnet: '10.0.0.0/24' }]], dataDir: '/dev/null' } },
  { name: 'network name of 300 characters', code: 7, names: /name: 300 bytes/, conf: { name: 'n'.repeat(300) } },
];

t.test('malformed environment and configuration: right code, field named, nothing created', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cniPath = await makeCniPath(join(host.runDir, 'cni-bin'));
    const dataDir = join(host.stateDir, 'ipam');
    const ns = await host.newNetns('c');
    const base = bridgeList('1.1.0', dataDir).plugins[0] as Record<string, unknown>;
    const linksBefore = await links(host);
    t.ok(CASES.length >= 30, `${CASES.length} kinds`);
    for (const c of CASES) {
      const env: Record<string, string> = {};
      const merged: Record<string, string | undefined> = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'bad1', CNI_NETNS: nsPath(ns), CNI_IFNAME: 'eth0', CNI_PATH: cniPath, ...c.env };
      for (const [k, v] of Object.entries(merged)) if (v !== undefined) env[k] = v;
      const conf: Record<string, unknown> = { ...base, cniVersion: '1.1.0', name: 'tnet' };
      delete conf['capabilities'];
      for (const [k, v] of Object.entries(c.conf ?? {})) {
        if (v === undefined) delete conf[k];
        else conf[k] = v;
      }
      if (c.ipam) conf['ipam'] = { type: 'tsnet-ipam', dataDir, ...c.ipam };
      const r = await execPlugin(host.ns, join(cniPath, 'tsnet-bridge'), env, c.stdin ?? JSON.stringify(conf));
      const text = `${String(r.json?.['msg'])} ${String(r.json?.['details'])}`;
      t.equal(r.exit, 1, `${c.name}: exit status 1`);
      t.equal(r.json?.['code'], c.code, `${c.name}: code ${c.code}`);
      t.match(text, c.names, `${c.name}: names the field (${text.slice(0, 120)})`);
      t.type(r.json?.['cniVersion'], 'string', `${c.name}: error object carries cniVersion`);
    }
    t.same(await links(host), linksBefore, 'no link created');
    t.same(await reservations(dataDir), [], 'no address reserved');
    t.equal(await nftElements(host), 0, 'no firewall state');
    const ruleset = (await host.exec(['nft', 'list', 'ruleset'])).stdout;
    t.notMatch(ruleset, /table inet tsnet/, 'not even the tsnet table');
  });
});
