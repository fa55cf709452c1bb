import t from 'tap';
import { diagnose, formatFindings, type HostFacts } from './doctor.js';

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
