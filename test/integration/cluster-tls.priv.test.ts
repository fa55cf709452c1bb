/**
 * The cluster store over TLS as etcd documents it: a real etcd serving https with client
 * certificate authentication (`--cert-file --key-file --client-cert-auth --trusted-ca-file`), in a
 * namespace of its own inside the isolated host, certificates made by openssl; tsnet given
 * `--cluster-store-opt cafile= certfile= keyfile=`. Refused without a client certificate, with a CA
 * that did not sign the server's, over plain HTTP, and with half a client certificate.
 */
import t from 'tap';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../sys/exec.js';
import { cliFor } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

const ETCD_IP = '10.98.0.2';
const HOST_IP = '10.98.0.1';

/** A CA, a server certificate for ETCD_IP and a client certificate, all signed by the CA; and a second, unrelated CA. */
async function makeCerts(dir: string): Promise<Record<'ca' | 'otherCa' | 'serverCrt' | 'serverKey' | 'clientCrt' | 'clientKey', string>> {
  await mkdir(dir, { recursive: true });
  const p = (f: string): string => join(dir, f);
  const ssl = (...args: string[]): Promise<unknown> => run(['openssl', ...args], { timeoutMs: 30_000 });
  for (const ca of ['ca', 'other-ca']) {
    await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p(`${ca}.key`), '-out', p(`${ca}.crt`), '-days', '2', '-subj', `/CN=tsnet test ${ca}`);
  }
  // clientAuth too: etcd's gRPC gateway (what tsnet speaks to) dials the member's gRPC server with
  // the server's own certificate, which --client-cert-auth then checks (etcd issue #9785).
  await writeFile(p('server.ext'), `subjectAltName=IP:${ETCD_IP}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  await writeFile(p('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [who, cn] of [['server', 'etcd'], ['client', 'tsnet']] as const) {
    await ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p(`${who}.key`), '-out', p(`${who}.csr`), '-subj', `/CN=${cn}`);
    await ssl('x509', '-req', '-in', p(`${who}.csr`), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p(`${who}.crt`), '-days', '2', '-extfile', p(`${who}.ext`));
  }
  return { ca: p('ca.crt'), otherCa: p('other-ca.crt'), serverCrt: p('server.crt'), serverKey: p('server.key'), clientCrt: p('client.crt'), clientKey: p('client.key') };
}

t.test('the cluster store over TLS with client certificates', { skip: skipUnlessRoot, timeout: 300_000 }, async (t) => {
  await withIsolatedHost(async (host) => {
    const c = await makeCerts(join(host.stateDir, 'pki'));
    const ns = await host.newNetns('etcd');
    if (ns.kind !== 'path') throw new Error('no netns path');
    await host.exec(['ip', 'link', 'add', 'tl0', 'type', 'veth', 'peer', 'name', 'tl1']);
    await host.exec(['ip', 'link', 'set', 'tl1', 'netns', ns.path]);
    await host.exec(['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', 'tl0']);
    await host.exec(['ip', 'link', 'set', 'tl0', 'up']);
    await host.execIn(ns, ['ip', 'addr', 'add', `${ETCD_IP}/24`, 'dev', 'tl1']);
    await host.execIn(ns, ['ip', 'link', 'set', 'tl1', 'up']);
    const url = `https://${ETCD_IP}:2379`;
    host.spawnIn(ns, [
      'etcd', '--name', 'tls0', '--data-dir', join(host.stateDir, 'etcd-tls'),
      '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', `http://${ETCD_IP}:2380`, '--initial-advertise-peer-urls', `http://${ETCD_IP}:2380`, '--initial-cluster', `tls0=http://${ETCD_IP}:2380`,
      '--cert-file', c.serverCrt, '--key-file', c.serverKey, '--client-cert-auth', '--trusted-ca-file', c.ca,
    ]);
    const etcdctl = (...args: string[]): Promise<{ stdout: string }> => host.execIn(ns, ['etcdctl', '--endpoints', url, '--cacert', c.ca, '--cert', c.clientCrt, '--key', c.clientKey, ...args], { env: { ETCDCTL_API: '3' }, timeoutMs: 10_000 });
    let up = false;
    for (let i = 0; i < 100 && !up; i++) {
      up = await etcdctl('endpoint', 'health').then(() => true, () => false);
      if (!up) await new Promise((r) => setTimeout(r, 200));
    }
    t.ok(up, 'etcd serves https with client certificate authentication');
    host.defer(() => cliFor(host, { frontEnd: false })('daemon', '--stop'));

    const cli = cliFor(host, { frontEnd: false, env: { TSNET_CLUSTER_STORE: `etcd://${ETCD_IP}:2379`, TSNET_CLUSTER_ADVERTISE: HOST_IP } });
    const create = (name: string, ...opts: string[]): ReturnType<typeof cli> =>
      cli(...opts.flatMap((o) => ['--cluster-store-opt', o]), 'network', 'create', '-d', 'overlay', '--subnet', '10.97.0.0/24', name);

    // First, while nothing is saved (the options given add to what an earlier command saved).
    const half = await create('n-half', `cafile=${c.ca}`, `certfile=${c.clientCrt}`);
    t.equal(half.code, 2, 'certfile without keyfile: invalid configuration');
    t.match(half.stderr, /cluster-store-opt: certfile given without keyfile/);

    const plain = await create('n-plain');
    t.not(plain.code, 0, `plain HTTP to a TLS member is refused (exit ${plain.code})`);
    t.match(plain.stderr, /cluster store etcd:\/\/10\.98\.0\.2:2379/, `naming the store: ${plain.stderr.trim().split('\n')[0] ?? ''}`);

    const noClient = await create('n-noclient', `cafile=${c.ca}`);
    t.not(noClient.code, 0, 'the CA alone: refused, the member asks for a client certificate');
    t.match(noClient.stderr, /cluster store etcd:\/\//);

    const wrongCa = await create('n-wrongca', `cafile=${c.otherCa}`, `certfile=${c.clientCrt}`, `keyfile=${c.clientKey}`);
    t.not(wrongCa.code, 0, 'a CA that did not sign the member\'s certificate: refused');
    t.match(wrongCa.stderr, /certificate/i, `saying why: ${wrongCa.stderr.trim().split('\n')[0] ?? ''}`);

    const made = await create('n-tls', `cafile=${c.ca}`, `certfile=${c.clientCrt}`, `keyfile=${c.clientKey}`);
    t.equal(made.code, 0, `with the CA and a client certificate: created ${made.stderr.trim()}`);
    const keys = (await etcdctl('get', '--prefix', '', '--keys-only')).stdout;
    const id = (await cli('network', 'inspect', '-f', '{{.Id}}', 'n-tls')).stdout.trim();
    t.match(id, /^[0-9a-f]{64}$/, 'the network is there');
    t.ok(keys.includes(id.slice(0, 12)) || keys.includes('n-tls'), 'and in etcd, read back over TLS');
    const again = await cli('network', 'ls', '--format', '{{.Name}} {{.Scope}}');
    t.match(again.stdout, /n-tls swarm/, 'a later command without the options uses the saved TLS files');
    t.notMatch(again.stdout, /n-(plain|noclient|wrongca|half)/, 'nothing of the refused attempts exists');
    const rm = await cli('network', 'rm', 'n-tls');
    t.equal(rm.code, 0, `removed: ${rm.stderr.trim()}`);
  });
});
