import t from 'tap';
import { diagnose, formatFindings, type HostFacts } from './doctor.js';
import { hostForwardFacts } from './engine.js';

const base: HostFacts = {
  backend: 'nftables',
  nftRuleset: 'table inet tsnet {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n',
  processes: ['bash', 'node'],
  sysctls: { 'net.ipv4.ip_forward': '1' },
  records: { networks: 2, endpointsWithPorts: 1 },
  kernel: { networks: 2, endpointsWithPorts: 1 },
};
const topics = (f: HostFacts): string[] => diagnose(f).map((x) => `${x.level}:${x.topic}`);

t.test('a clean host: everything ok (tsnet\'s own drop policy is not a finding)', async (t) => {
  t.same(topics(base), ['ok:firewall', 'ok:rules']);
  t.match(formatFindings(diagnose(base)), /^\[ ok \] firewall: tsnet programs nftables/);
});

t.test('ufw: detected from its config or its chains; the forward DROP default explained', async (t) => {
  const ufw = diagnose({ ...base, ufwConf: 'ENABLED=yes\n', ufwDefaults: 'DEFAULT_FORWARD_POLICY="DROP"\n' }).find((f) => f.topic === 'ufw');
  t.equal(ufw?.level, 'warning');
  t.match(ufw?.text, /not filtered by ufw/);
  t.match(ufw?.text, /DEFAULT_FORWARD_POLICY is DROP/);
  t.ok(topics({ ...base, nftRuleset: `${base.nftRuleset ?? ''}table ip filter {\n\tchain ufw-before-forward {\n\t}\n}\n` }).includes('warning:ufw'), 'from the ruleset');
  t.notOk(topics({ ...base, ufwConf: 'ENABLED=no\n' }).includes('warning:ufw'), 'disabled ufw is no finding');
});

t.test('firewalld, foreign forward drop policies, legacy rules, sysctls', async (t) => {
  t.ok(topics({ ...base, processes: ['firewalld'] }).includes('warning:firewalld'));
  t.ok(topics({ ...base, nftRuleset: 'table inet firewalld {\n}\n' }).includes('warning:firewalld'));
  const fwd = diagnose({ ...base, nftRuleset: 'table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n' }).find((f) => f.topic === 'forward policy');
  t.match(fwd?.text, /^ip filter FORWARD drops forwarded packets/);
  t.ok(topics({ ...base, legacyRules: '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\n' }).includes('warning:iptables-legacy'));
  t.notOk(topics({ ...base, legacyRules: '' }).includes('warning:iptables-legacy'), 'an empty legacy table is fine');
  t.ok(topics({ ...base, sysctls: { 'net.ipv4.ip_forward': '0' } }).includes('warning:ip_forward'));
});

t.test('rules missing from the kernel, nft broken', async (t) => {
  const r = diagnose({ ...base, kernel: { networks: 0, endpointsWithPorts: 0 } }).find((f) => f.topic === 'rules');
  t.equal(r?.level, 'error');
  t.match(r?.text, /0 of 2 networks and 0 of 1 containers .*tsnet firewall reload/);
  t.same(diagnose({ ...base, nftRuleset: undefined, nftError: 'nft: not found' })[0], { level: 'error', topic: 'nftables', text: 'nft does not work here (nft: not found): install nftables or use --firewall iptables' });
});

/** `iptables-save -t filter` with Docker 20.10 at its defaults and tsnet's let-through rules for one network. */
const DOCKER_SAVE = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -i br-lab -m comment --comment tsnet:net:abc -j ACCEPT
-A DOCKER-USER -o br-lab -m comment --comment tsnet:net:abc -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
`;
const OPEN_SAVE = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n';

t.test('Docker\'s iptables rules: found, and what tsnet did about them', async (t) => {
  const withDocker: HostFacts = {
    ...base,
    nftRuleset: `${base.nftRuleset ?? ''}table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n`,
    hostForward: hostForwardFacts({ 4: DOCKER_SAVE, 6: OPEN_SAVE }),
  };
  const docker = diagnose(withDocker).find((f) => f.topic === 'docker');
  t.equal(docker?.level, 'ok');
  t.match(docker?.text, /FORWARD policy DROP, DOCKER-USER chain\): tsnet lets its bridges through DOCKER-USER/);
  t.match(docker?.text, /2 rule\(s\) for 1 network\(s\) \(abc\), tagged "tsnet:net:<id>"/, 'says what tsnet wrote there');
  t.notOk(topics(withDocker).includes('warning:forward policy'), 'iptables\' own FORWARD drop is explained by the docker finding, not warned about twice');
  t.match(diagnose({ ...withDocker, backend: 'iptables', letThroughTo: 'tsnet' }).find((f) => f.topic === 'docker')?.text, /jumping to TSNET-FORWARD, which decides/, 'iptables backend');
  const blocked = diagnose({ ...withDocker, kernel: { networks: 2, endpointsWithPorts: 1, blocked: ['lab'] } }).find((f) => f.topic === 'host firewall');
  t.equal(blocked?.level, 'error', 'missing let-through rules are an error');
  t.match(blocked?.text, /1 network\(s\) \(lab\) are missing: .*tsnet firewall reload/);
  const idle = diagnose({ ...withDocker, hostForward: hostForwardFacts({ 4: DOCKER_SAVE.replace(/-A DOCKER-USER -[io] br-lab.*\n/g, '') }) }).find((f) => f.topic === 'docker');
  t.match(idle?.text, /no rules yet/, 'before tsnet has a network');
  const accept = diagnose({ ...base, hostForward: hostForwardFacts({ 4: DOCKER_SAVE.replace(':FORWARD DROP', ':FORWARD ACCEPT') }) }).find((f) => f.topic === 'docker');
  t.match(accept?.text, /does not drop: tsnet needs nothing/);
});

t.test('a FORWARD drop policy without Docker (ufw, an admin): what tsnet did', async (t) => {
  const save = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -i tsnet0 -m comment --comment tsnet:net:n1 -j ACCEPT\n-A FORWARD -o tsnet0 -m comment --comment tsnet:net:n1 -j ACCEPT\n-A FORWARD -j ufw-before-forward\nCOMMIT\n';
  const f = diagnose({ ...base, hostForward: hostForwardFacts({ 4: save, 6: save }) }).filter((x) => x.topic === 'forward policy');
  t.same(f.map((x) => x.level), ['ok', 'ok'], 'both families');
  t.match(f[0]?.text, /IPv4 iptables FORWARD policy is DROP .*head of FORWARD: 2 rule\(s\) for 1 network\(s\) \(n1\)/);
  t.match(f[1]?.text, /^the IPv6/);
  const ufw = diagnose({ ...base, hostForward: hostForwardFacts({ 4: save }), ufwConf: 'ENABLED=yes\n', ufwDefaults: 'DEFAULT_FORWARD_POLICY="DROP"\n' }).find((x) => x.topic === 'ufw');
  t.match(ufw?.text, /tsnet lets its own bridges through at the head of iptables FORWARD/);
  t.match(diagnose({ ...base, sysctls: { ...base.sysctls, 'net.bridge.bridge-nf-call-iptables': '1' } }).find((x) => x.topic === 'br_netfilter')?.text, /hairpin mode/);
  t.same(topics({ ...base, hostForward: hostForwardFacts({ 4: OPEN_SAVE, 6: OPEN_SAVE }) }), ['ok:firewall', 'ok:rules'], 'nothing drops: nothing to say');
});

t.test('firewalld: what tsnet did (its zone and policy, the bound bridges)', async (t) => {
  const ready = diagnose({ ...base, processes: ['firewalld'], firewalld: { running: true, zone: true, policy: true, interfaces: ['tsnet0', 'br-lab'] } }).find((f) => f.topic === 'firewalld');
  t.equal(ready?.level, 'ok');
  t.match(ready?.text, /zone of its own, "tsnet" \(target ACCEPT\).*policy "tsnet-forwarding".*Bound now: tsnet0, br-lab\./);
  const fresh = diagnose({ ...base, firewalld: { running: true, zone: false, policy: false, interfaces: [] } }).find((f) => f.topic === 'firewalld');
  t.equal(fresh?.level, 'warning');
  t.match(fresh?.text, /does not exist yet: tsnet creates it with its first network/);
  t.notOk(topics({ ...base, firewalld: { running: false, zone: false, policy: false, interfaces: [] } }).some((x) => x.endsWith(':firewalld')), 'not running: no finding');
});

t.test('the daemon, bridges and records: errors that name the fix', async (t) => {
  const down = diagnose({ ...base, daemon: { running: false, dnsNetworks: ['lab'] } }).find((f) => f.topic === 'daemon');
  t.equal(down?.level, 'error', 'a daemon DNS-enabled networks need, down: an error');
  t.match(down?.text, /not running: containers on lab get no answer to names/);
  t.match(down?.text, /tsnet daemon --install-unit/, 'names the fix');
  t.notOk(topics({ ...base, daemon: { running: false, dnsNetworks: [] } }).some((x) => x.endsWith(':daemon')), 'not needed, not running: nothing to say');
  t.ok(topics({ ...base, daemon: { running: true, pid: 7, dnsNetworks: ['lab'] } }).includes('ok:daemon'));
  const br = diagnose({ ...base, missingBridges: [{ network: 'lab', bridge: 'br-1234' }] }).find((f) => f.topic === 'bridge');
  t.match(br, { level: 'error', text: /lab: its bridge br-1234 is missing.*tsnet firewall reload/ });
  const recs = diagnose({ ...base, unreadable: [
    { kind: 'container', id: 'a'.repeat(64), path: '/s/corrupt/containers/a.json' },
    { kind: 'network', id: 'b'.repeat(64), path: '/s/corrupt/networks/b.json' },
    { kind: 'endpoint', id: 'c'.repeat(64), path: '/s/corrupt/endpoints/c.json' },
    { kind: 'engine', id: 'engine', path: '/s/corrupt/engine/engine.json' },
  ] }).filter((f) => f.topic === 'records');
  t.same(recs.map((f) => f.level), ['error', 'error', 'error', 'warning']);
  t.match(recs[0]?.text, new RegExp(`tsnet rm -f ${'a'.repeat(64)}`));
  t.match(recs[1]?.text, new RegExp(`tsnet network rm ${'b'.repeat(64)}`));
  t.match(recs[2]?.text, new RegExp(`tsnet rm -f ${'c'.repeat(16)} \\(its container\\)`));
  t.match(recs[3]?.text, /made anew/);
});
