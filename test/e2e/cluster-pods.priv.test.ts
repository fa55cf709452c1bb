/**
 * The Kubernetes pod network: three simulated nodes of one cluster (own namespaces, directories and
 * daemons, a real etcd on the underlay), one overlay network `pods`, and on every node `tsnet cni
 * install --network pods` as a node admin runs it. Pods are made as containerd 1.6's CRI plugin
 * makes them: a namespace, then go-cni with the node's configuration directory (loopback first,
 * then the first conflist, eth0, K8S_POD_* arguments). What must hold: each pod has an address of
 * the one subnet, distinct across nodes; pods on different nodes reach each other (ICMP, TCP) and
 * the far end sees the pod's own address (no NAT); a node reaches its own pods (kubelet's probes);
 * every node's inspect lists every pod; a hostPort answers at its node's address; a pod's name
 * resolves on another node's resolver; CHECK passes; DEL withdraws a pod everywhere and leaves
 * nothing on its node, and DEL again succeeds; a node whose daemon is stopped answers ADD with CNI
 * error 11 (try again later) and makes nothing.
 */
import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { REFERENCE_DIR } from '../helpers/cni.js';
import { makeCluster, NET_TOOLS, within, type SimHost } from '../helpers/cluster-hosts.js';
import { goCniDriver, goTools, type Pod } from '../helpers/go-tools.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

t.test('pods on three nodes of one overlay pod network', { skip: skipUnlessRoot, timeout: 300_000 }, (t) =>
  withIsolatedHost(async (host) => {
    const tools = await goTools();
    const cluster = await makeCluster(host, { hosts: 3, members: 1 });
    const [h1, h2, h3] = cluster.hosts as [SimHost, SimHost, SimHost];
    for (const h of cluster.hosts) await h.startDaemon();
    await h1.ok('network', 'create', '-d', 'overlay', '--subnet', '10.244.0.0/16', 'pods');

    const enter = (h: SimHost): string[] => ['nsenter', '-t', String(h.pid), '-m', '-n', '--'];
    const dirs = (h: SimHost): { bin: string; conf: string } => ({ bin: join(h.stateDir, 'cni-bin'), conf: join(h.stateDir, 'net.d') });
    for (const h of cluster.hosts) {
      const out = await h.ok('cni', 'install', '--bin-dir', dirs(h).bin, '--conf-dir', dirs(h).conf, '--network', 'pods');
      t.match(out, /wrote .*10-tsnet\.conflist/, `${h.name}: tsnet cni install --network pods`);
    }
    const driver = (h: SimHost) => goCniDriver(tools, host.ns, { confDir: dirs(h).conf, pluginDirs: [dirs(h).bin, REFERENCE_DIR], prefix: enter(h) });

    interface Made { readonly h: SimHost; readonly pod: Pod; readonly ip: string; readonly path: string }
    const makePod = async (h: SimHost, name: string, extra: Partial<Pod> = {}): Promise<Made> => {
      const nsName = `pod-${h.name}-${name}`;
      await h.exec(['ip', 'netns', 'add', nsName]);
      const path = `/run/netns/${nsName}`;
      const pod: Pod = { id: randomBytes(32).toString('hex'), netns: path, name, namespace: 'default', uid: randomUUID(), ...extra };
      const r = await driver(h).setup(pod);
      return { h, pod, ip: r.ip.split('/')[0] as string, path };
    };
    const inPod = (m: Made, argv: readonly string[], timeoutMs?: number) => m.h.exec(['nsenter', `--net=${m.path}`, '--', ...argv], timeoutMs);

    const p1 = await makePod(h1, 'web-1');
    const p2 = await makePod(h2, 'web-2');
    const p3 = await makePod(h3, 'web-3', { portMappings: [{ protocol: 'TCP', containerPort: 8080, hostPort: 30080 }] });
    const ips = [p1.ip, p2.ip, p3.ip];
    t.ok(ips.every((ip) => ip.startsWith('10.244.')), `every pod has an address of the pod network: ${ips.join(', ')}`);
    t.equal(new Set(ips).size, 3, 'three pods on three nodes: three addresses');

    // Every node's view lists every pod (local and remote endpoints).
    const seen = await within(5000, async () => {
      const d = JSON.parse(await h3.ok('network', 'inspect', 'pods', '--format', 'json')) as unknown;
      const text = JSON.stringify(d);
      return ips.every((ip) => text.includes(`${ip}/`) || text.includes(`"${ip}"`));
    });
    t.not(seen, undefined, `h3's inspect of pods lists the pods of all three nodes (${String(seen)} ms)`);

    // Pod to pod across nodes, without NAT; node to its own pod.
    const serve = async (m: Made): Promise<void> => {
      const server = host.spawnIn(host.ns, [...enter(m.h), 'nsenter', `--net=${m.path}`, '--', process.execPath, NET_TOOLS, 'tcp-server', '0.0.0.0', '8080'] as unknown as [string, ...string[]]);
      host.defer(async () => {
        server.child.kill('SIGKILL');
        await server.close(1000);
      });
      await new Promise<void>((resolve) => server.child.stdout.once('data', () => resolve()));
    };
    await serve(p2);
    await serve(p3);
    for (const [from, to] of [[p1, p2], [p3, p2]] as const) {
      const reached = await within(5000, async () => inPod(from, ['busybox', 'ping', '-c', '1', '-W', '1', to.ip]).then(() => true, () => false));
      t.not(reached, undefined, `${from.pod.name} on ${from.h.name} pings ${to.pod.name} on ${to.h.name} (${to.ip})`);
      const reply = (await inPod(from, [process.execPath, NET_TOOLS, 'tcp-client', to.ip, '8080', 'hi'])).stdout;
      t.match(reply, new RegExp(`to ${from.ip.replaceAll('.', '\\.')}\\n`), `TCP ${from.h.name} → ${to.h.name}: the server sees the pod's own address ${from.ip} (no NAT): ${reply.trim()}`);
    }
    const probe = (await h2.exec([process.execPath, NET_TOOLS, 'tcp-client', p2.ip, '8080', 'probe'])).stdout;
    t.match(probe, /hello probe/, `node h2 reaches its own pod ${p2.ip} (kubelet's probes)`);
    await t.resolves(driver(h1).check(p1.pod), 'CHECK of a pod passes');
    // A hostPort is published on the pod's node: another node reaches it at that node's address.
    const viaHostPort = (await h1.exec([process.execPath, NET_TOOLS, 'tcp-client', h3.ip, '30080', 'hostport'])).stdout;
    t.match(viaHostPort, /hello hostport from /, `h1 reaches pod web-3 through h3's hostPort ${h3.ip}:30080: ${viaHostPort.trim()}`);
    // The pod's name resolves on the network's resolver of another node.
    const resolved = await within(5000, async () => (await inPod(p1, ['busybox', 'nslookup', 'web-3', '10.244.0.1']).then((r) => r.stdout, () => '')).includes(p3.ip));
    t.not(resolved, undefined, `pod web-1 on h1 resolves web-3 (on h3) to ${p3.ip} through h1's resolver on the gateway`);

    // DEL: withdrawn everywhere, nothing left on its node; DEL again succeeds.
    const vethsBefore = (await h2.exec(['ip', '-o', 'link', 'show', 'type', 'veth'])).stdout.split('\n').filter(Boolean).length;
    await driver(h2).remove(p2.pod);
    const gone = await within(5000, async () => !(await h1.ok('network', 'inspect', 'pods', '--format', 'json')).includes(`${p2.ip}/`));
    t.not(gone, undefined, `after DEL on h2, h1 no longer lists ${p2.ip} (${String(gone)} ms)`);
    const vethsAfter = (await h2.exec(['ip', '-o', 'link', 'show', 'type', 'veth'])).stdout.split('\n').filter(Boolean).length;
    t.equal(vethsAfter, vethsBefore - 1, 'the pod\'s host end is gone from h2');
    t.equal((await h2.exec(['ip', '-n', `pod-h2-web-2`, '-o', 'addr', 'show', 'dev', 'eth0']).catch(() => ({ stdout: '' }))).stdout, '', 'eth0 is gone from the pod\'s namespace');
    await t.resolves(driver(h2).remove(p2.pod), 'DEL again succeeds');
    const p2b = await makePod(h2, 'web-2b');
    t.ok(p2b.ip.startsWith('10.244.'), `a new pod on h2 after the DEL: ${p2b.ip}`);

    // A node without its daemon: try again later, nothing made.
    await h3.ok('daemon', '--stop');
    const nsName = 'pod-h3-late';
    await h3.exec(['ip', 'netns', 'add', nsName]);
    const late: Pod = { id: randomBytes(32).toString('hex'), netns: `/run/netns/${nsName}`, name: 'late', namespace: 'default', uid: randomUUID() };
    const err = await driver(h3).setup(late).then(() => undefined, (e: unknown) => (e instanceof Error ? e.message : String(e)));
    t.match(err ?? '', /try again later|tsnet daemon/, `ADD on a node without its daemon fails with try again later: ${String(err).slice(-200)}`);
    t.equal((await h3.exec(['ip', '-n', nsName, '-o', 'link', 'show'])).stdout.split('\n').filter(Boolean).length, 1, 'and the pod\'s namespace has only lo');
  }));
