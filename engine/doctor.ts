import type { Family } from '../core/net.js';
import type { FirewallBackend } from '../sys/firewall/api.js';

/**
 * `tsnet doctor`: what on this host changes how published ports and container traffic behave, and
 * what to do about it. Pure: `diagnose` turns facts read from the host (by the command) into
 * findings; unit-tested without root.
 */

export interface HostFacts {
  /** tsnet's firewall backend. */
  readonly backend: FirewallBackend;
  /** `nft list ruleset` (undefined: nft missing or failed, with the reason). */
  readonly nftRuleset: string | undefined;
  readonly nftError?: string;
  /** `iptables-legacy-save` output when that binary exists (rules nft cannot see). */
  readonly legacyRules?: string;
  /** What the host's iptables filter table does with forwarded packets, per family that has one. */
  readonly hostForward?: readonly HostForwardFact[];
  /** How tsnet's backend lets its bridges through another firewall's chain (undefined: backend none). */
  readonly letThroughTo?: 'accept' | 'tsnet';
  /** tsnet's firewall name (comment prefix of its rules, firewalld zone); default "tsnet". */
  readonly firewallName?: string;
  /** What firewalld shows over D-Bus (undefined: not asked). */
  readonly firewalld?: { readonly running: boolean; readonly zone: boolean; readonly policy: boolean; readonly interfaces: readonly string[] };
  /** /etc/ufw/ufw.conf and /etc/default/ufw, when present. */
  readonly ufwConf?: string;
  readonly ufwDefaults?: string;
  /** Names (comm) of running processes. */
  readonly processes: readonly string[];
  readonly sysctls: Readonly<Record<string, string | undefined>>;
  /** What the records say tsnet published, and what the kernel shows. */
  readonly records: { readonly networks: number; readonly endpointsWithPorts: number };
  readonly kernel: { readonly networks: number; readonly endpointsWithPorts: number; readonly blocked?: readonly string[] } | undefined;
  /** Whether the daemon answers, and the DNS-enabled networks with containers that need it. */
  readonly daemon?: { readonly running: boolean; readonly pid?: number; readonly dnsNetworks: readonly string[] };
  /** Ready bridge networks whose bridge is not in the kernel. */
  readonly missingBridges?: readonly { readonly network: string; readonly bridge: string }[];
  /** Records that could not be read (set aside). */
  readonly unreadable?: readonly { readonly kind: 'container' | 'network' | 'endpoint' | 'sandbox' | 'engine'; readonly id: string; readonly path: string }[];
}

export interface HostForwardFact {
  readonly family: Family;
  /** The policy of the filter table's FORWARD chain. */
  readonly policy: 'accept' | 'drop';
  /** Docker's DOCKER-USER chain exists and FORWARD jumps to it. */
  readonly dockerUser: boolean;
  /** tsnet's let-through rules in FORWARD / DOCKER-USER: their chain and owner network. */
  readonly rules: readonly { readonly chain: string; readonly network: string }[];
}

export interface Finding {
  readonly level: 'ok' | 'warning' | 'error';
  readonly topic: string;
  readonly text: string;
}

const has = (text: string | undefined, re: RegExp): boolean => text !== undefined && re.test(text);

/** A base chain on the forward hook of another owner with a drop policy (iptables' own FORWARD excepted when `skipIptables`). */
function forwardDropChains(ruleset: string | undefined, skipIptables: boolean): string[] {
  if (ruleset === undefined) return [];
  const out: string[] = [];
  let table = '';
  let chain = '';
  for (const line of ruleset.split('\n')) {
    const t = /^table (\S+ \S+) \{/.exec(line);
    if (t) table = t[1] ?? '';
    const c = /^\s+chain (\S+) \{/.exec(line);
    if (c) chain = c[1] ?? '';
    const iptables = (table === 'ip filter' || table === 'ip6 filter') && chain === 'FORWARD';
    if (/type filter hook forward .*policy drop;/.test(line) && !table.endsWith(' tsnet') && !(skipIptables && iptables)) out.push(`${table} ${chain}`);
  }
  return out;
}

export function diagnose(f: HostFacts): Finding[] {
  const out: Finding[] = [];
  const add = (level: Finding['level'], topic: string, text: string): void => {
    out.push({ level, topic, text });
  };

  if (f.backend === 'nftables' && f.nftRuleset === undefined) {
    add('error', 'nftables', `nft does not work here (${f.nftError ?? 'unknown error'}): install nftables or use --firewall iptables`);
  } else if (f.backend !== 'none') {
    add('ok', 'firewall', `tsnet programs ${f.backend}; published ports are DNAT rules in the kernel (no proxy processes)`);
  } else {
    add('warning', 'firewall', 'firewall backend "none": no NAT, no published ports, no isolation between networks');
  }

  const iptablesSeen = (f.hostForward ?? []).length > 0;
  const hostDrops = hostFirewallFindings(f);
  out.push(...hostDrops);

  const ufwEnabled = has(f.ufwConf, /^\s*ENABLED\s*=\s*yes/m) || has(f.nftRuleset, /chain ufw-/) || has(f.legacyRules, /:ufw-/);
  if (ufwEnabled) {
    const fwdDrop = has(f.ufwDefaults, /^\s*DEFAULT_FORWARD_POLICY\s*=\s*"?DROP/m);
    add('warning', 'ufw', [
      'ufw is active. Published ports are not filtered by ufw\'s rules (`ufw deny 8080` does not close a published port):',
      'the DNAT happens before ufw\'s INPUT rules and the packets are forwarded, as with Docker. To restrict a port, publish it',
      'on one address (-p 127.0.0.1:8080:80) or add rules to the forward path.',
      fwdDrop ? 'ufw\'s DEFAULT_FORWARD_POLICY is DROP: tsnet lets its own bridges through at the head of iptables FORWARD (see "forward policy"); ufw\'s settings and chains are left as they are.' : '',
    ].filter(Boolean).join(' '));
  }
  const firewalld = f.processes.includes('firewalld') || has(f.nftRuleset, /^table inet firewalld /m);
  const zone = f.firewallName ?? 'tsnet';
  if (f.firewalld?.running === true && f.backend !== 'none') {
    const z = f.firewalld;
    add(z.zone && z.policy ? 'ok' : 'warning', 'firewalld', [
      'firewalld runs: its forward chain rejects interfaces of no zone, so tsnet puts its bridges in a zone of its own,',
      `"${zone}" (target ACCEPT), and lets traffic into them with the policy "${zone}-forwarding", as Docker does with its "docker" zone.`,
      z.zone ? `Bound now: ${z.interfaces.length === 0 ? 'none' : z.interfaces.join(', ')}.` : 'The zone does not exist yet: tsnet creates it with its first network.',
      'firewalld zones do not filter published ports (DNAT happens first). After `firewall-cmd --reload` the tsnet daemon re-binds them within about a second, or run `tsnet firewall reload`.',
    ].join(' '));
  } else if (firewalld) {
    add('warning', 'firewalld', [
      'firewalld is active. A `firewall-cmd --reload` (or a restart) may remove tsnet\'s rules; the tsnet daemon restores them',
      'within 2 s, or run `tsnet firewall reload`. firewalld zones do not filter published ports; put tsnet\'s bridges in a',
      'zone (e.g. `firewall-cmd --zone=trusted --add-interface=tsnet0`) so that its forward policy does not drop container traffic.',
    ].join(' '));
  }
  for (const c of forwardDropChains(f.nftRuleset, iptablesSeen)) {
    add('warning', 'forward policy', `${c} drops forwarded packets by default: a drop in any table wins over tsnet's accept, so container egress and published ports may fail; allow tsnet's bridges there`);
  }
  if (has(f.legacyRules, /^-A /m) && f.backend !== 'none') {
    add('warning', 'iptables-legacy', 'rules exist in iptables-legacy, which nft does not show: both rule sets apply; make sure they do not drop forwarded traffic of tsnet\'s bridges');
  }
  if (f.sysctls['net.ipv4.ip_forward'] !== '1') {
    add('warning', 'ip_forward', 'net.ipv4.ip_forward is 0: tsnet turns it on when it creates a bridge network; until then containers have no egress');
  }
  if (f.sysctls['net.bridge.bridge-nf-call-iptables'] === '1') {
    add('ok', 'br_netfilter', 'br_netfilter is loaded: traffic between containers on one bridge passes the forward hook too (tsnet accepts it unless enable_icc=false, and lets it through a dropping FORWARD chain); tsnet\'s bridge ports are in hairpin mode, so a container reaches its own published port');
  }
  if (f.kernel !== undefined) {
    const missing = f.records.networks > f.kernel.networks || f.records.endpointsWithPorts > f.kernel.endpointsWithPorts;
    add(missing ? 'error' : 'ok', 'rules', missing
      ? `the kernel has rules for ${f.kernel.networks} of ${f.records.networks} networks and ${f.kernel.endpointsWithPorts} of ${f.records.endpointsWithPorts} containers with published ports: someone flushed them; run \`tsnet firewall reload\``
      : `tsnet's rules match its records (${f.records.networks} networks, ${f.records.endpointsWithPorts} containers with published ports)`);
  }
  out.push(...stateFindings(f));
  return out;
}

/** What the daemon, the bridges and the records say: each finding names the fix. */
function stateFindings(f: HostFacts): Finding[] {
  const out: Finding[] = [];
  const d = f.daemon;
  if (d !== undefined && !d.running && d.dnsNetworks.length > 0) {
    out.push({
      level: 'error', topic: 'daemon',
      text: `the tsnet daemon is not running: containers on ${d.dnsNetworks.join(', ')} get no answer to names, and flushed firewall rules are not repaired; start it under a service manager (\`tsnet daemon --install-unit\` with systemd) or now with \`setsid tsnet daemon\` (a \`tsnet run\` also starts it, under its watchdog)`,
    });
  } else if (d !== undefined && d.running) {
    out.push({ level: 'ok', topic: 'daemon', text: `the tsnet daemon runs${d.pid !== undefined ? ` (pid ${d.pid})` : ''}: embedded DNS, firewall watcher` });
  }
  for (const b of f.missingBridges ?? []) {
    out.push({ level: 'error', topic: 'bridge', text: `network ${b.network}: its bridge ${b.bridge} is missing (deleted by hand?): \`tsnet firewall reload\` makes it again, with its rules` });
  }
  for (const u of f.unreadable ?? []) {
    const fix = u.kind === 'network' ? `tsnet network rm ${u.id}`
      : u.kind === 'endpoint' ? `tsnet rm -f ${u.id.slice(0, 16)} (its container)`
      : u.kind === 'engine' ? undefined
      : `tsnet rm -f ${u.id}`;
    out.push(fix === undefined
      ? { level: 'warning', topic: 'records', text: `the engine record could not be read and was made anew (the old one is kept as ${u.path}; delete it once looked at)` }
      : { level: 'error', topic: 'records', text: `${u.kind} ${u.id.slice(0, 12)}: its record could not be read (kept as ${u.path}); remove what is left of it with \`${fix}\`` });
  }
  return out;
}

const FAMILY_NAME = { 4: 'IPv4', 6: 'IPv6' } as const satisfies Record<Family, string>;

/**
 * What the host's iptables does with forwarded packets (Docker's rules, a drop policy set by ufw or
 * an admin), and what tsnet did about it: its let-through rules, by network, in DOCKER-USER or
 * FORWARD (tagged `<name>:net:<id>`); an error for networks whose rules are missing.
 */
function hostFirewallFindings(f: HostFacts): Finding[] {
  const out: Finding[] = [];
  const name = f.firewallName ?? 'tsnet';
  const forwardChain = `${name.toUpperCase()}-FORWARD`;
  const jumps = f.letThroughTo === 'tsnet';
  const blocked = f.kernel?.blocked ?? [];
  for (const h of f.hostForward ?? []) {
    const where = (chain: string): string => {
      const rules = h.rules.filter((r) => r.chain === chain);
      const nets = [...new Set(rules.map((r) => r.network))].sort();
      return rules.length === 0
        ? `no rules yet (tsnet adds them when it creates a network)`
        : `${rules.length} rule(s) for ${nets.length} network(s) (${nets.join(', ')}), tagged "${name}:net:<id>"`;
    };
    const fam = FAMILY_NAME[h.family];
    const DOCKER_USER = 'DOCKER-USER';
    if (h.dockerUser) {
      if (h.policy === 'drop') {
        out.push({ level: 'ok', topic: 'docker', text: `Docker's iptables rules are active (${fam}: FORWARD policy DROP, ${DOCKER_USER} chain): tsnet lets its bridges through ${DOCKER_USER}, the chain Docker documents for other software, ${jumps ? `jumping to ${forwardChain}, which decides` : 'accepting (tsnet\'s own table still decides)'}: ${where(DOCKER_USER)}. Docker's own rules and policy are untouched.` });
      } else {
        out.push({ level: 'ok', topic: 'docker', text: `Docker's chains exist (${fam}) but FORWARD does not drop: tsnet needs nothing in them` });
      }
    } else if (h.policy === 'drop') {
      out.push({ level: 'ok', topic: 'forward policy', text: `the ${fam} iptables FORWARD policy is DROP (ufw, or an administrator): ${jumps ? `tsnet's own chain ${forwardChain} heads FORWARD and decides its bridges' packets` : `tsnet accepts its bridges at the head of FORWARD: ${where('FORWARD')}`}; the policy itself is left as it is` });
    }
  }
  if (blocked.length > 0) {
    out.push({ level: 'error', topic: 'host firewall', text: `the host's iptables FORWARD chain drops forwarded packets and tsnet's let-through rules for ${blocked.length} network(s) (${blocked.join(', ')}) are missing: their containers are cut off; run \`tsnet firewall reload\` (the tsnet daemon puts them back by itself within about a second)` });
  }
  return out;
}

export function formatFindings(fs: readonly Finding[]): string {
  return fs.map((x) => `[${x.level === 'ok' ? ' ok ' : x.level === 'warning' ? 'warn' : 'FAIL'}] ${x.topic}: ${x.text}\n`).join('');
}
