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
  /** /etc/ufw/ufw.conf and /etc/default/ufw, when present. */
  readonly ufwConf?: string;
  readonly ufwDefaults?: string;
  /** Names (comm) of running processes. */
  readonly processes: readonly string[];
  readonly sysctls: Readonly<Record<string, string | undefined>>;
  /** What the records say tsnet published, and what the kernel shows. */
  readonly records: { readonly networks: number; readonly endpointsWithPorts: number };
  readonly kernel: { readonly networks: number; readonly endpointsWithPorts: number } | undefined;
}

export interface Finding {
  readonly level: 'ok' | 'warning' | 'error';
  readonly topic: string;
  readonly text: string;
}

const has = (text: string | undefined, re: RegExp): boolean => text !== undefined && re.test(text);

/** A base chain on the forward hook of another owner with a drop policy. */
function forwardDropChains(ruleset: string | undefined): string[] {
  if (ruleset === undefined) return [];
  const out: string[] = [];
  let table = '';
  let chain = '';
  for (const line of ruleset.split('\n')) {
    const t = /^table (\S+ \S+) \{/.exec(line);
    if (t) table = t[1] ?? '';
    const c = /^\s+chain (\S+) \{/.exec(line);
    if (c) chain = c[1] ?? '';
    if (/type filter hook forward .*policy drop;/.test(line) && !table.endsWith(' tsnet')) out.push(`${table} ${chain}`);
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

  const ufwEnabled = has(f.ufwConf, /^\s*ENABLED\s*=\s*yes/m) || has(f.nftRuleset, /chain ufw-/) || has(f.legacyRules, /:ufw-/);
  if (ufwEnabled) {
    const fwdDrop = has(f.ufwDefaults, /^\s*DEFAULT_FORWARD_POLICY\s*=\s*"?DROP/m);
    add('warning', 'ufw', [
      'ufw is active. Published ports are not filtered by ufw\'s rules (`ufw deny 8080` does not close a published port):',
      'the DNAT happens before ufw\'s INPUT rules and the packets are forwarded, as with Docker. To restrict a port, publish it',
      'on one address (-p 127.0.0.1:8080:80) or add rules to the forward path.',
      fwdDrop ? 'ufw\'s DEFAULT_FORWARD_POLICY is DROP: forwarded container traffic (egress and published ports) is dropped by ufw\'s chain even though tsnet accepts it; allow it with `ufw route allow in on <bridge>` / `ufw route allow out on <bridge>` or set DEFAULT_FORWARD_POLICY="ACCEPT" in /etc/default/ufw.' : '',
    ].filter(Boolean).join(' '));
  }
  const firewalld = f.processes.includes('firewalld') || has(f.nftRuleset, /^table inet firewalld /m);
  if (firewalld) {
    add('warning', 'firewalld', [
      'firewalld is active. A `firewall-cmd --reload` (or a restart) may remove tsnet\'s rules; the tsnet daemon restores them',
      'within 2 s, or run `tsnet firewall reload`. firewalld zones do not filter published ports; put tsnet\'s bridges in a',
      'zone (e.g. `firewall-cmd --zone=trusted --add-interface=tsnet0`) so that its forward policy does not drop container traffic.',
    ].join(' '));
  }
  for (const c of forwardDropChains(f.nftRuleset)) {
    add('warning', 'forward policy', `${c} drops forwarded packets by default: a drop in any table wins over tsnet's accept, so container egress and published ports may fail; allow tsnet's bridges there`);
  }
  if (has(f.legacyRules, /^-A /m) && f.backend !== 'none') {
    add('warning', 'iptables-legacy', 'rules exist in iptables-legacy, which nft does not show: both rule sets apply; make sure they do not drop forwarded traffic of tsnet\'s bridges');
  }
  if (f.sysctls['net.ipv4.ip_forward'] !== '1') {
    add('warning', 'ip_forward', 'net.ipv4.ip_forward is 0: tsnet turns it on when it creates a bridge network; until then containers have no egress');
  }
  if (f.sysctls['net.bridge.bridge-nf-call-iptables'] === '1') {
    add('ok', 'br_netfilter', 'br_netfilter is loaded: traffic between containers on one bridge passes the forward hook too (tsnet accepts it unless enable_icc=false)');
  }
  if (f.kernel !== undefined) {
    const missing = f.records.networks > f.kernel.networks || f.records.endpointsWithPorts > f.kernel.endpointsWithPorts;
    add(missing ? 'error' : 'ok', 'rules', missing
      ? `the kernel has rules for ${f.kernel.networks} of ${f.records.networks} networks and ${f.kernel.endpointsWithPorts} of ${f.records.endpointsWithPorts} containers with published ports: someone flushed them; run \`tsnet firewall reload\``
      : `tsnet's rules match its records (${f.records.networks} networks, ${f.records.endpointsWithPorts} containers with published ports)`);
  }
  return out;
}

export function formatFindings(fs: readonly Finding[]): string {
  return fs.map((x) => `[${x.level === 'ok' ? ' ok ' : x.level === 'warning' ? 'warn' : 'FAIL'}] ${x.topic}: ${x.text}\n`).join('');
}
