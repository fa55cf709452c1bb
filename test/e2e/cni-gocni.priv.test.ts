/**
 * Conformance on the path Kubernetes takes: tsnet-bridge and tsnet-portmap, installed by `tsnet cni
 * install`, driven by containerd's go-cni exactly as containerd 1.6's CRI plugin drives it for a pod
 * sandbox, and by libcni (cnitool), with what go-cni sends: capability objects with Go field names
 * (portMappings `HostPort`/`ContainerPort`/`Protocol`/`HostIP`, bandwidth `IngressRate`...,
 * dns `Servers`/`Searches`/`Options`) and CNI_ARGS K8S_POD_*, IgnoreUnknown=1.
 *
 * For each driver: ADD (the published hostPort answers a neighbour with the pod's reply, a real tbf
 * at each asked rate read back with `tc -j qdisc`, and counting the reply's bytes, the dns
 * capability in the result), CHECK, DEL (no interface, address reservation, nft element or rule
 * mentioning the pod left; the port withdrawn) and DEL again. The same conflist shape on the
 * reference plugins (/usr/lib/cni bridge + host-local + portmap + bandwidth) through the same two
 * drivers shows the harness sends what Go plugins accept. Then containerd 1.6 itself (`ctr run --rm
 * --cni` with an OCI image built from busybox-static) on the same conflist, and once more go-cni
 * through a running `tsnet daemon`, whose CNI service must serve every tsnet call.
 */
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import type { NetnsRef } from '../../core/net.js';
import { cniRequestsServed, startDaemon, TSNET_BIN } from '../helpers/cli.js';
import { busyboxOciImage, startContainerd } from '../helpers/containerd.js';
import { links, neighbour, nsPath, REFERENCE_DIR, reservations, type Conflist } from '../helpers/cni.js';
import { cnitoolDriver, goCniDriver, goTools, type CniDriver, type Pod } from '../helpers/go-tools.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { reachable, request, startServer } from '../helpers/traffic.js';

const INGRESS = 1_000_000; // bit/s
const EGRESS = 2_000_000;
const DNS = { servers: ['10.96.0.10'], searches: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'], options: ['ndots:5'] };
const NEIGHBOUR_TO_HOST = '192.168.77.1';
const IMAGE = 'docker.io/tsnet/busybox:1';

interface Tbf {
  readonly kind: string;
  readonly root?: boolean;
  readonly options?: { readonly rate?: number };
  readonly bytes?: number;
}

/** The root tbf of `dev` in `ns` with its counters (`tc -s -j qdisc show`), if any. */
async function tbf(host: IsolatedHost, ns: NetnsRef, dev: string): Promise<Tbf | undefined> {
  const out = (await host.execIn(ns, ['tc', '-s', '-j', 'qdisc', 'show', 'dev', dev])).stdout;
  return (JSON.parse(out) as Tbf[]).find((q) => q.kind === 'tbf' && q.root === true);
}

/** Does the host's firewall (nft ruleset, iptables rules) mention address `ip`? */
async function firewallMentions(host: IsolatedHost, ip: string): Promise<boolean> {
  const text = (await host.exec(['nft', 'list', 'ruleset'])).stdout + (await host.exec(['iptables-save'])).stdout;
  return new RegExp(`(?<![\\d.])${ip.replaceAll('.', '\\.')}(?![\\d])`).test(text);
}

interface Case {
  readonly impl: 'tsnet' | 'reference';
  readonly driver: CniDriver;
  readonly hostPort: number;
  readonly network: string;
  readonly bridge: string;
  readonly subnet: RegExp;
}

async function conformance(t: Test, host: IsolatedHost, nbr: NetnsRef, dataDir: string, c: Case): Promise<void> {
  const label = `${c.impl} via ${c.driver.label}`;
  const ns = await host.newNetns('pod');
  const pod: Pod = {
    id: `${c.impl}-${c.hostPort}-${randomBytes(6).toString('hex')}`, netns: nsPath(ns), name: `web-${c.hostPort}`, namespace: 'default', uid: randomUUID(),
    portMappings: [{ protocol: 'TCP', containerPort: 80, hostPort: c.hostPort }], ingressBandwidth: INGRESS, egressBandwidth: EGRESS, dns: DNS,
  };
  const ms: Record<string, number> = {};
  const timed = async <T>(verb: string, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      ms[verb] = Math.round(performance.now() - t0);
    }
  };

  const a = await timed('ADD', () => c.driver.setup(pod));
  t.match(a.ip, c.subnet, `${label}: ADD gave eth0 ${a.ip}`);
  if (c.impl === 'tsnet') t.same(a.dns, [{ nameservers: DNS.servers, search: DNS.searches, options: DNS.options }], `${label}: the dns capability (Servers, Searches, Options) is the result's dns`);

  await startServer(host, ns, 'tcp', '0.0.0.0', 80);
  const reply = await request(nbr, 'tcp', NEIGHBOUR_TO_HOST, c.hostPort);
  t.match(reply, new RegExp(` from ${a.ip.replaceAll('.', '\\.')} `), `${label}: HostPort ${c.hostPort} reached from a neighbour, answered by the pod (${reply})`);

  const hostVeth = a.hostInterfaces.find((n) => n.startsWith('veth'));
  t.ok(hostVeth, `${label}: the result names the host end of the veth`);
  const ingress = await tbf(host, host.ns, hostVeth ?? 'missing');
  t.equal(ingress?.options?.rate, INGRESS / 8, `${label}: IngressRate: a tbf at ${INGRESS} bit/s on ${hostVeth ?? '?'}`);
  t.ok((ingress?.bytes ?? 0) > 0, `${label}: the pod's traffic went through it (${ingress?.bytes ?? 0} bytes)`);
  // tsnet shapes egress at the container end; the reference plugin redirects it to an ifb device.
  const ifb = a.hostInterfaces.find((n) => n.startsWith('bwp'));
  const egress = c.impl === 'tsnet' ? await tbf(host, ns, 'eth0') : await tbf(host, host.ns, ifb ?? 'missing');
  t.equal(egress?.options?.rate, EGRESS / 8, `${label}: EgressRate: a tbf at ${EGRESS} bit/s on ${c.impl === 'tsnet' ? "the pod's eth0" : ifb ?? '?'}`);
  t.ok(await firewallMentions(host, a.ip), `${label}: the firewall forwards the port to ${a.ip}`);

  if (c.impl === 'tsnet') {
    await timed('CHECK', () => c.driver.check(pod));
    t.pass(`${label}: CHECK with the same input`);
  }
  // (The reference portmap 1.1.1 fails its own CHECK on an IPv4-only pod: see cni-interop.)

  await timed('DEL', () => c.driver.remove(pod));
  const left = (await links(host)).filter((l) => a.hostInterfaces.includes(l) && l !== c.bridge);
  t.same(left, [], `${label}: DEL left no host interface of the pod`);
  t.notOk((await reservations(dataDir, c.network)).includes(a.ip), `${label}: DEL released the address`);
  t.notOk(await firewallMentions(host, a.ip), `${label}: DEL left no nft element or rule for ${a.ip}`);
  t.notOk(await reachable(nbr, 'tcp', NEIGHBOUR_TO_HOST, c.hostPort), `${label}: the port is withdrawn`);
  await timed('DEL again', () => c.driver.remove(pod));
  t.pass(`${label}: DEL again succeeds`);
  t.comment(`${label}: ${Object.entries(ms).map(([k, v]) => `${k} ${v} ms`).join(', ')}; tbf ${(ingress?.options?.rate ?? 0) * 8} bit/s in, ${(egress?.options?.rate ?? 0) * 8} bit/s out; port ${c.hostPort} answered`);
}

t.test('go-cni (containerd CRI) and libcni drive tsnet-bridge + tsnet-portmap with Kubernetes-shaped input', { skip: skipUnlessRoot }, async (t) => {
  const started = performance.now();
  // built while tsnet installs (once per test run; a cached build takes ~20 ms)
  const toolsP = goTools().then((tools) => {
    t.comment(`Go programs (go-cni driver, cnitool) ready after ${Math.round(performance.now() - started)} ms`);
    return tools;
  });
  toolsP.catch(() => undefined);
  await withIsolatedHost(async (host) => {
    const bin = join(host.stateDir, 'opt-cni-bin');
    const dirs = ['--state-dir', host.stateDir, '--run-dir', host.runDir];
    const installing = performance.now();
    const out = (await host.exec([process.execPath, TSNET_BIN, ...dirs, 'cni', 'install', '--bin-dir', bin, '--conf-dir', ''], { timeoutMs: 120_000 })).stdout;
    t.match(out, /C front end/, `tsnet cni install: the C front end (Node plugin beside it), ${Math.round(performance.now() - installing)} ms`);
    const tools = await toolsP;
    const dataDir = join(host.stateDir, 'ipam');
    const cacheDir = join(host.stateDir, 'cnitool-cache');
    const nbr = await neighbour(host);
    await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);

    // What a Kubernetes node has in /etc/cni/net.d (the shape of containerd's 10-containerd-net.conflist):
    // an interface plugin with IPAM and a default route, then portmap.
    const tsnetList: Conflist = {
      cniVersion: '1.0.0',
      name: 'k8s-tsnet',
      plugins: [
        {
          type: 'tsnet-bridge', bridge: 'ktsnet0', isGateway: true, ipMasq: true, hairpinMode: true,
          capabilities: { bandwidth: true, dns: true, ips: true, mac: true },
          ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.92.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir },
        },
        { type: 'tsnet-portmap', capabilities: { portMappings: true } },
      ],
    };
    const refList: Conflist = {
      cniVersion: '1.0.0',
      name: 'k8s-ref',
      plugins: [
        {
          type: 'bridge', bridge: 'kref0', isGateway: true, ipMasq: true, hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.93.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        { type: 'bandwidth', capabilities: { bandwidth: true } },
      ],
    };
    const confDir = async (list: Conflist): Promise<string> => {
      const d = join(host.stateDir, `net.d-${list.name}`);
      await mkdir(d, { recursive: true });
      await writeFile(join(d, `10-${list.name}.conflist`), JSON.stringify(list, null, 2));
      return d;
    };
    const tsnetConf = await confDir(tsnetList);
    const refConf = await confDir(refList);
    // loopback (go-cni's lo network) comes from the reference plugins, as on a node
    const tsnetDirs = [bin, REFERENCE_DIR];
    const tsnetCase = (driver: CniDriver, hostPort: number): Case => ({ impl: 'tsnet', driver, hostPort, network: tsnetList.name, bridge: 'ktsnet0', subnet: /^10\.92\.0\.\d+$/ });
    const refCase = (driver: CniDriver, hostPort: number): Case => ({ impl: 'reference', driver, hostPort, network: refList.name, bridge: 'kref0', subnet: /^10\.93\.0\.\d+$/ });
    const cases: Case[] = [
      tsnetCase(goCniDriver(tools, host.ns, { confDir: tsnetConf, pluginDirs: tsnetDirs }), 30080),
      tsnetCase(cnitoolDriver(tools, host.ns, { confDir: tsnetConf, pluginDirs: tsnetDirs, network: tsnetList.name, cacheDir }), 30081),
      refCase(goCniDriver(tools, host.ns, { confDir: refConf, pluginDirs: [REFERENCE_DIR] }), 30082),
      refCase(cnitoolDriver(tools, host.ns, { confDir: refConf, pluginDirs: [REFERENCE_DIR], network: refList.name, cacheDir }), 30083),
    ];
    // Independent pods (own host ports, addresses, netns): all at once, as a node sets pods up;
    // but the reference portmap 1.1.1 races with itself creating its top-level chain on first use
    // ("CHAIN_USER_ADD failed (File exists)"), so its second pod starts after its first.
    const [tsnetGo, tsnetLib, refGo, refLib] = cases as [Case, Case, Case, Case];
    await Promise.all([conformance(t, host, nbr, dataDir, tsnetGo), conformance(t, host, nbr, dataDir, tsnetLib), conformance(t, host, nbr, dataDir, refGo).then(() => conformance(t, host, nbr, dataDir, refLib))]);
    t.same(await reservations(dataDir, tsnetList.name), [], 'no reservation left on the tsnet network');
    t.same(await reservations(dataDir, refList.name), [], 'none on the reference network');

    // containerd 1.6 itself: `ctr run --rm --cni` sets a container up through its own go-cni (the
    // loopback network, then the first configuration of /etc/cni/net.d; no capabilities) and
    // tears it down when the container exits.
    const ctrStarted = performance.now();
    await symlink(join(REFERENCE_DIR, 'loopback'), join(bin, 'loopback'));
    const containerd = await startContainerd(host, { confDir: tsnetConf, binDir: bin });
    await containerd.ctr(['images', 'import', await busyboxOciImage(join(host.stateDir, 'image'), IMAGE)]);
    const linksBefore = await links(host);
    const ctrRun = containerd.spawnCtr(['run', '--rm', '--cni', IMAGE, 'ctrpod1', 'sh', '-c', 'ip -o -4 addr show dev eth0; echo reply-from-ctr | nc -l -p 80']);
    const ctrExit = new Promise<number | null>((resolve) => ctrRun.child.once('exit', (code) => resolve(code)));
    ctrRun.child.stderr.resume();
    const ctrIp = await new Promise<string>((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error(`ctr run: no eth0 address within 30 s: ${seen}`)), 30_000);
      ctrRun.child.stdout.on('data', (d: Buffer) => {
        seen += d.toString();
        const m = / inet (\d+\.\d+\.\d+\.\d+)\//.exec(seen);
        if (m?.[1] !== undefined) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
    t.match(ctrIp, /^10\.92\.0\.\d+$/, `ctr run --cni: the container's eth0 has ${ctrIp} from tsnet-bridge`);
    t.ok((await reservations(dataDir, tsnetList.name)).includes(ctrIp), 'ctr run --cni: reserved by tsnet-ipam');
    let ctrReply = '';
    for (let i = 0; i < 50 && ctrReply === ''; i++) ctrReply = await request(host.ns, 'tcp', ctrIp, 80, 'ping', 1000).catch(async () => (await sleep(100), ''));
    t.equal(ctrReply, 'reply-from-ctr', 'ctr run --cni: the host reaches the container on the bridge');
    t.equal(await ctrExit, 0, 'ctr run --rm exits 0 once the container does (after its CNI DEL)');
    t.notOk((await reservations(dataDir, tsnetList.name)).includes(ctrIp), 'ctr run --rm: the address is released');
    t.same((await links(host)).filter((l) => !linksBefore.includes(l)), [], 'ctr run --rm: no interface left');
    t.notOk(await firewallMentions(host, ctrIp), 'ctr run --rm: no firewall rule for it');
    t.comment(`containerd: started, image imported, one container run with tsnet in ${Math.round(performance.now() - ctrStarted)} ms`);

    // The same through the daemon's CNI service: the front end hands every tsnet call to it.
    await startDaemon(host);
    const before = (await cniRequestsServed(host)) ?? 0;
    await conformance(t, host, nbr, dataDir, tsnetCase(goCniDriver(tools, host.ns, { confDir: tsnetConf, pluginDirs: tsnetDirs }), 30084));
    t.equal(((await cniRequestsServed(host)) ?? 0) - before, 8, 'tsnet daemon served all 8 tsnet calls (bridge and portmap: ADD, CHECK, DEL, DEL again)');
  });
  t.comment(`whole test ${Math.round(performance.now() - started)} ms`);
});
