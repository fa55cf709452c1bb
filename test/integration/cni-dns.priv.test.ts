/**
 * tsnet-bridge and tsnet's embedded DNS (issue #6, the `aliases` capability), driven as libcni
 * drives plugins (test/helpers/cni.ts), with `tsnet daemon` running in the isolated host and real
 * DNS packets sent from inside the container namespaces to the bridge's gateway: aliases, the
 * container name (K8S_POD_NAME) and the short id resolve for a neighbour, the result names the
 * gateway as nameserver, a container on another CNI network sees none of it, DEL and GC remove the
 * names; no daemon → ADD still works and the names come when one starts; malformed aliases → 7,
 * nothing created.
 */
import t from 'tap';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NetnsRef } from '../../core/net.js';
import { cniEndpointId } from '../../plugins/cni/names.js';
import { cniSocketPath } from '../../engine/cni-service.js';
import { bridgeList, CniError, Libcni, links, nsPath, reservations, world, type Attachment, type Conflist, type World } from '../helpers/cni.js';
import { cniRequestsServed, startDaemon } from '../helpers/cli.js';
import type { DnsResult } from '../helpers/dns-client.js';
import { dnsTool } from '../helpers/dns-tool-run.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

const tool = await dnsTool('cni-dns-tool');
t.teardown(() => tool.remove());
const ask = tool.ask;
const addrs = (r: DnsResult | undefined): string[] => (r?.answers ?? []).filter((a) => a.type === 'A' || a.type === 'PTR').map((a) => a.data);

/**
 * Asks until `name` resolves to `want` (or, with [], stops resolving). ADD and DEL wait for the
 * daemon's reload ack, so one try is the rule; but they give up waiting after 1 s (never failing),
 * which a heavily loaded machine can reach. Bounded: 50 tries, 100 ms apart. Returns the tries.
 */
async function settle(ns: NetnsRef, server: string, name: string, want: string[]): Promise<number> {
  for (let i = 1; i <= 50; i++) {
    const [r] = await ask(ns, server, [{ name, type: 'A' }]);
    if (r?.error === undefined && JSON.stringify(addrs(r)) === JSON.stringify(want)) return i; // an answer, not a timeout
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${name} did not settle to ${JSON.stringify(want)} at ${server}`);
}

/** A tsnet-bridge network with the aliases capability and this host's tsnet directories. */
function dnsList(w: World, name: string, bridge: string, subnet: string, extra: Record<string, unknown> = {}): Conflist {
  const base = bridgeList('1.1.0', w.dataDir);
  const p = base.plugins[0] as Record<string, unknown>;
  return {
    ...base,
    name,
    plugins: [{
      ...p, bridge, capabilities: { ...(p['capabilities'] as object), aliases: true },
      ipam: { type: 'tsnet-ipam', ranges: [[{ subnet }]], dataDir: w.dataDir },
      tsnetStateDir: w.host.stateDir, tsnetRunDir: w.host.runDir, ...extra,
    }],
  };
}

async function container(w: World, list: Conflist, id: string, aliases: readonly string[], podName?: string): Promise<{ a: Attachment; ns: NetnsRef; ip: string; result: Record<string, unknown> }> {
  const ns = await w.host.newNetns(id.slice(0, 4));
  const a: Attachment = { containerId: id, netns: nsPath(ns), ifName: 'eth0', capabilityArgs: { aliases: { [list.name]: aliases } }, ...(podName ? { args: `IgnoreUnknown=1;K8S_POD_NAME=${podName}` } : {}) };
  const result = await w.cni.addList(list, a);
  const ip = ((result['ips'] as { address: string }[])[0]?.address ?? '').split('/')[0] ?? '';
  return { a, ns, ip, result };
}

const recordsDir = (host: IsolatedHost): string => join(host.stateDir, 'records', 'cni-attachments');
const records = async (host: IsolatedHost): Promise<string[]> => (await readdir(recordsDir(host)).catch(() => [] as string[])).filter((f) => f.endsWith('.json'));

const WEB_ID = '0a1b2c3d4e5f60718293a4b5c6d7e8f9';

for (const via of ['standalone', 'daemon'] as const) t.test(`${via === 'daemon' ? 'through the daemon\'s CNI service (C front end): ' : ''}aliases, container name and short id resolve through the gateway; other networks do not see them; DEL and GC remove them`, { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w0 = await world(host);
    await startDaemon(host);
    // Standalone: the front end finds no daemon at its default socket and runs the Node plugin;
    // daemon: it hands every request to the running daemon's CNI service.
    const w: World = via === 'daemon' ? { ...w0, cni: new Libcni({ ns: w0.cni.ns, cniPath: w0.cni.cniPath, cacheDir: w0.cni.cacheDir, extraEnv: { TSNET_CNI_SOCKET: cniSocketPath(host.runDir) } }) } : w0;
    const lab = dnsList(w, 'lab', 'tcni0', '10.77.0.0/24');
    const other = dnsList(w, 'other', 'tcni1', '10.78.0.0/24');
    const web = await container(w, lab, WEB_ID, ['web', 'www.lab'], 'webctr');
    const client = await container(w, lab, 'client-0001', ['client']);
    const stranger = await container(w, other, 'stranger-0001', ['stranger']);
    t.same((web.result['dns'] as { nameservers?: string[] } | undefined)?.nameservers, ['10.77.0.1'], 'the result names the gateway as nameserver (Podman writes it into resolv.conf)');
    t.equal((await records(host)).length, 3, 'one record per attachment');

    t.comment(`names served after ${await settle(stranger.ns, '10.78.0.1', 'stranger', [stranger.ip])} tries (1: at once)`);
    const [byAlias, byDotted, byPod, byShortId, ptr, own] = await ask(client.ns, '10.77.0.1', [
      { name: 'web', type: 'A' },
      { name: 'www.lab', type: 'A' },
      { name: 'WebCtr', type: 'A' },
      { name: WEB_ID.slice(0, 12), type: 'A' },
      { name: `${web.ip.split('.').reverse().join('.')}.in-addr.arpa`, type: 'PTR' },
      { name: 'client', type: 'A' },
    ]);
    t.same(addrs(byAlias), [web.ip], 'alias');
    t.equal(byAlias?.aa, true, 'answered by tsnet as the authority');
    t.same(addrs(byDotted), [web.ip], 'a dotted alias');
    t.same(addrs(byPod), [web.ip], 'the container name from K8S_POD_NAME, case-insensitively');
    t.same(addrs(byShortId), [web.ip], 'the short container id');
    t.same(addrs(ptr), ['webctr'], 'PTR gives the canonical name (the container name)');
    t.same(addrs(own), [client.ip], 'a container resolves its own alias');

    const [hidden] = await ask(stranger.ns, '10.78.0.1', [{ name: 'web', type: 'A' }]);
    t.same(addrs(hidden), [], 'a container on another CNI network does not see the names of lab');
    t.equal(hidden?.rcode, 'NXDOMAIN', 'an unknown name there (an answer, not a timeout)');
    const [crossAsk] = await ask(client.ns, '10.77.0.1', [{ name: 'stranger', type: 'A' }]);
    t.same(addrs(crossAsk), [], 'and lab does not see them');
    t.equal(crossAsk?.rcode, 'NXDOMAIN');

    // CHECK: passes with the record, fails without it.
    await w.cni.checkList(lab, web.a);
    const webFile = join(recordsDir(host), `${cniEndpointId('lab', WEB_ID, 'eth0')}.json`);
    const saved = await readFile(webFile, 'utf8');
    await rm(webFile);
    const checkErr = await w.cni.checkList(lab, web.a).then(() => undefined, (e: unknown) => e);
    t.match(String((checkErr as CniError | undefined)?.result.json?.['details'] ?? ''), /tsnet DNS record of .* is missing/, 'CHECK reports a missing record');
    await writeFile(webFile, saved);

    // DEL: the names go at once; a second DEL is fine.
    await w.cni.delList(lab, web.a);
    await w.cni.delList(lab, web.a);
    t.comment(`names gone after ${await settle(client.ns, '10.77.0.1', 'web', [])} tries`);
    const [gone, goneId] = await ask(client.ns, '10.77.0.1', [{ name: 'web', type: 'A' }, { name: WEB_ID.slice(0, 12), type: 'A' }]);
    t.same(addrs(gone), [], 'the alias no longer resolves after DEL');
    t.same(addrs(goneId), [], 'nor the short id');
    t.same([gone?.rcode, goneId?.rcode], ['NXDOMAIN', 'NXDOMAIN'], 'answered NXDOMAIN');
    t.equal((await records(host)).length, 2, 'its record is gone');

    // GC: a record of an attachment the runtime no longer lists is removed (the other network's stays).
    const stale = await container(w, lab, 'stale-0001', ['stale']);
    await settle(client.ns, '10.77.0.1', 'stale', [stale.ip]);
    t.pass('the stale attachment resolves before GC');
    await w.cni.gcList(lab, [{ containerId: client.a.containerId, ifName: 'eth0' }]);
    await settle(client.ns, '10.77.0.1', 'stale', []);
    const [afterGc, clientStill] = await ask(client.ns, '10.77.0.1', [{ name: 'stale', type: 'A' }, { name: 'client', type: 'A' }]);
    t.same(addrs(afterGc), [], 'GC removed the stale name');
    t.equal(afterGc?.rcode, 'NXDOMAIN');
    t.same(addrs(clientStill), [client.ip], 'a listed attachment keeps its name');
    t.equal((await records(host)).length, 2, 'records of lab: the client; of other: the stranger');
    await w.cni.delList(lab, client.a);
    await w.cni.delList(other, stranger.a);
    t.same(await records(host), [], 'no record left');
    const servedN = await cniRequestsServed(host);
    if (via === 'daemon') t.ok((servedN ?? 0) >= 10, `the daemon served the requests (${servedN})`);
    else t.equal(servedN, 0, 'the daemon served none');
  });
});

t.test('no daemon: ADD works without naming the gateway; the names come when the daemon starts', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const lab = dnsList(w, 'lab', 'tcni0', '10.77.0.0/24');
    const web = await container(w, lab, WEB_ID, ['web']);
    const client = await container(w, lab, 'client-0001', []);
    t.equal((web.result['dns'] as { nameservers?: string[] } | undefined)?.nameservers, undefined, 'no daemon: the gateway is not named (the container keeps the runtime default resolvers)');
    t.equal((await records(host)).length, 2, 'the records are written anyway');
    await startDaemon(host);
    const [r] = await ask(client.ns, '10.77.0.1', [{ name: 'web', type: 'A' }]);
    t.same(addrs(r), [web.ip], 'a daemon started later serves the names');
    // tsnetDns: false turns it off even with the capability declared.
    const off = dnsList(w, 'quiet', 'tcni2', '10.79.0.0/24', { tsnetDns: false });
    const q = await container(w, off, 'quiet-0001', ['quiet']);
    t.equal((q.result['dns'] as { nameservers?: string[] } | undefined)?.nameservers, undefined, 'tsnetDns false: no nameserver');
    t.equal((await records(host)).length, 2, 'tsnetDns false: no record');
    for (const [l, c] of [[lab, web], [lab, client], [off, q]] as const) await w.cni.delList(l, c.a);
    t.same(await records(host), [], 'DEL removed every record');
  });
});

t.test('malformed aliases and DNS without a gateway: code 7 naming the field, nothing created', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const before = await links(host);
    const cases: [string, Record<string, unknown>, unknown, RegExp][] = [
      ['a name with a space', {}, { lab: ['bad name'] }, /runtimeConfig\.aliases\.lab\[0\]/],
      ['a label too long', {}, { lab: ['ok', `${'a'.repeat(64)}.x`] }, /runtimeConfig\.aliases\.lab\[1\]/],
      ['a label ending in a hyphen', {}, { lab: ['web-'] }, /runtimeConfig\.aliases\.lab\[0\]/],
      ['not a list', {}, { lab: 'web' }, /runtimeConfig\.aliases\.lab/],
      ['a number among the names', {}, { lab: [7] }, /runtimeConfig\.aliases\.lab\[0\]/],
      ['not an object', {}, 'web', /runtimeConfig\.aliases/],
      ['another network, not a list', {}, { lab: ['web'], other: 5 }, /runtimeConfig\.aliases\.other/],
      ['tsnetDns not a boolean', { tsnetDns: 'yes' }, { lab: ['web'] }, /tsnetDns/],
      ['tsnetStateDir relative', { tsnetStateDir: 'state' }, { lab: ['web'] }, /tsnetStateDir/],
      ['DNS without isGateway', { isGateway: false, isDefaultGateway: false }, { lab: ['web'] }, /isGateway/],
    ];
    let i = 0;
    for (const [what, extra, aliases, field] of cases) {
      const list = dnsList(w, 'lab', 'tcni0', '10.77.0.0/24', extra);
      const ns = await host.newNetns('bad');
      const err = await w.cni.addList(list, { containerId: `bad-${++i}`, netns: nsPath(ns), ifName: 'eth0', capabilityArgs: { aliases } }).then(() => undefined, (e: unknown) => e);
      t.ok(err instanceof CniError, `${what}: ADD fails`);
      const e = err as CniError;
      t.equal(e.code, 7, `${what}: code 7`);
      t.match(String(e.result.json?.['details'] ?? ''), field, `${what}: the message names the field`);
    }
    t.same(await links(host), before, 'no interface created (not even the bridge)');
    t.same(await reservations(w.dataDir, 'lab'), [], 'no address reserved');
    t.same(await records(host), [], 'no DNS record written');
    t.equal(await readFile(join(host.runDir, 'daemon.sock')).then(() => true, () => false), false, 'no daemon was started');
  });
});
