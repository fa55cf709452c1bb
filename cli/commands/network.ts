/** `tsnet network create|ls|inspect|rm|prune|connect|disconnect`, with Docker's flags. */
import { TsnetError } from '../../core/errors.js';
import { parseIpAddr, parsePrefix, prefixAddr, prefixContains, prefixesOverlap, type Prefix } from '../../core/net.js';
import type { Controller, SubnetRequest } from '../../cnm/controller.js';
import { networkHasDns, type NetworkRecord } from '../../cnm/model.js';
import { bool, keyValues, list, parseArgs, str, usage, type FlagSpec } from '../args.js';
import { NETWORK_HEADERS, NETWORK_TABLE, networkFields } from '../docker-view.js';
import { anyOf, boolFilter, labelsMatch, parseFilters } from '../filters.js';
import { formatEach, formatList, goMap } from '../template.js';
import { eachRef, type Command, type Io } from './types.js';

const CREATE: FlagSpec[] = [
  { name: 'driver', short: 'd', type: 'string', help: 'driver: bridge (default) or macvlan (-o parent=IF, -o macvlan_mode=bridge|private|vepa|passthru)', placeholder: 'DRIVER' },
  { name: 'subnet', type: 'string', multiple: true, help: 'subnet in CIDR form (IPv4 or IPv6)', placeholder: 'CIDR' },
  { name: 'gateway', type: 'string', multiple: true, help: 'gateway for a subnet', placeholder: 'IP' },
  { name: 'ip-range', type: 'string', multiple: true, help: 'allocate container addresses from this sub-range', placeholder: 'CIDR' },
  { name: 'aux-address', type: 'string', multiple: true, help: 'reserve an address: NAME=IP', placeholder: 'NAME=IP' },
  { name: 'ipv6', type: 'boolean', help: 'enable IPv6 (a ULA /64 is chosen when no IPv6 --subnet is given)' },
  { name: 'internal', type: 'boolean', help: 'no external access (no egress, no published ports)' },
  { name: 'disable-dns', type: 'boolean', help: 'no embedded DNS on this network (containers get the host\'s resolvers)' },
  { name: 'opt', short: 'o', type: 'string', multiple: true, help: 'driver option KEY=VALUE (bridge: bridge, mtu, icc, masquerade, com.docker.network.*; macvlan: parent, macvlan_mode, mtu)', placeholder: 'KEY=VALUE' },
  { name: 'label', type: 'string', multiple: true, help: 'label KEY=VALUE', placeholder: 'KEY=VALUE' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];
const FORMAT: FlagSpec = { name: 'format', type: 'string', help: 'table, table TEMPLATE, json or a Go template', placeholder: 'FORMAT' };
const FILTER: FlagSpec = { name: 'filter', short: 'f', type: 'string', multiple: true, help: 'driver, id, label, name, scope, type (custom|builtin), dangling (KEY=VALUE)', placeholder: 'FILTER' };
const PREDEFINED = ['bridge', 'host', 'none'];
const HELP: FlagSpec = { name: 'help', short: 'h', type: 'boolean', help: 'show this help' };

/** Pairs each --gateway, --ip-range and --aux-address with the --subnet that contains it. */
export function subnetRequests(subnets: readonly string[], gateways: readonly string[], ranges: readonly string[], aux: readonly string[]): SubnetRequest[] {
  const parsed = subnets.map((s) => parsePrefix(s, 'subnet'));
  for (let i = 0; i < parsed.length; i++) {
    for (let j = i + 1; j < parsed.length; j++) {
      if (prefixesOverlap(parsed[i] as Prefix, parsed[j] as Prefix)) throw new TsnetError('INVALID_CONFIG', `subnet: ${subnets[i]} and ${subnets[j]} overlap`, { details: { field: 'subnet' } });
    }
  }
  const reqs: { subnet: string; gateway?: string; ipRange?: string; auxAddresses?: Record<string, string> }[] = subnets.map((subnet) => ({ subnet }));
  const owner = (field: string, ip: string): number => {
    const addr = field === 'ip-range' ? prefixAddr(parsePrefix(ip, field)) : parseIpAddr(ip, field);
    const idx = parsed.findIndex((p) => prefixContains(p, addr));
    if (idx < 0) {
      throw new TsnetError('INVALID_CONFIG', `${field}: ${ip} is not inside any --subnet${subnets.length ? ` (${subnets.join(', ')})` : ' (give --subnet)'}`, { details: { field } });
    }
    return idx;
  };
  for (const g of gateways) {
    const r = reqs[owner('gateway', g)];
    if (r?.gateway !== undefined) throw new TsnetError('INVALID_CONFIG', `gateway: two gateways for subnet ${r.subnet}`, { details: { field: 'gateway' } });
    if (r) r.gateway = g;
  }
  for (const g of ranges) {
    const r = reqs[owner('ip-range', g)];
    if (r?.ipRange !== undefined) throw new TsnetError('INVALID_CONFIG', `ip-range: two ranges for subnet ${r.subnet}`, { details: { field: 'ip-range' } });
    if (r) r.ipRange = g;
  }
  for (const [name, ip] of Object.entries(keyValues(aux, 'aux-address'))) {
    const r = reqs[owner('aux-address', ip)];
    if (r) r.auxAddresses = { ...(r.auxAddresses ?? {}), [name]: ip };
  }
  return reqs;
}

/** The `docker network inspect` shape. */
export async function inspectJson(c: Controller, n: NetworkRecord): Promise<Record<string, unknown>> {
  const d = await c.inspectNetwork(n.id);
  const containers: Record<string, unknown> = {};
  for (const e of d.endpoints) {
    containers[e.sandboxId] = {
      Name: e.sandboxName,
      EndpointID: e.id,
      MacAddress: e.mac ?? '',
      IPv4Address: e.addresses.find((a) => !a.includes(':')) ?? '',
      IPv6Address: e.addresses.find((a) => a.includes(':')) ?? '',
      Interface: e.ifName,
      HostInterface: e.hostIf ?? '',
      Aliases: e.aliases,
    };
  }
  // A cluster network's endpoints on the other hosts, with the host they run on.
  const prefixLenOf = n.subnets[0]?.subnet.split('/')[1] ?? '32';
  for (const r of d.remote ?? []) {
    containers[r.sandboxId] = { Name: r.names[0] ?? '', EndpointID: r.endpointId, MacAddress: r.mac, IPv4Address: `${r.ip}/${prefixLenOf}`, IPv6Address: '', Host: r.hostName || r.host };
  }
  const peers = [...new Map((d.remote ?? []).map((r) => [r.host, { Name: r.hostName || r.host, IP: r.vtep }])).values()];
  return {
    Name: n.name,
    Id: n.id,
    Created: n.created,
    Scope: n.scope === 'cluster' ? 'swarm' : 'local',
    Driver: n.driver,
    EnableIPv6: n.ipv6,
    IPAM: {
      Driver: 'default',
      Config: n.subnets.map((s) => ({
        Subnet: s.subnet,
        Gateway: s.gateway,
        ...(s.ipRange !== undefined ? { IPRange: s.ipRange } : {}),
        ...(s.auxAddresses !== undefined ? { AuxiliaryAddresses: s.auxAddresses } : {}),
      })),
    },
    Internal: n.internal,
    DNSEnabled: networkHasDns(n),
    Containers: goMap(containers),
    Options: goMap({ ...n.options, ...(typeof n.config['bridge'] === 'string' ? { 'com.docker.network.bridge.name': n.config['bridge'] } : {}) }),
    Labels: goMap({ ...n.labels }),
    Status: n.status,
    ...(n.scope === 'cluster' ? { Peers: peers } : {}),
  };
}

function needArgs(p: ReturnType<typeof parseArgs>, n: number, what: string, cmd: string): void {
  if (p.positionals.length < n) throw new TsnetError('INVALID_CONFIG', `${cmd}: requires ${what}; see tsnet ${cmd} --help`, { details: { field: what } });
}

export const networkCommands = (controller: () => Promise<Controller>): Record<string, Command> => ({
  create: {
    summary: 'Create a network',
    async run(argv: readonly string[], io: Io) {
      const p = parseArgs(argv, CREATE);
      if (bool(p, 'help')) return io.out(usage('network create [OPTIONS] NETWORK', 'Create a network.', CREATE, 'tsnet network create --subnet 10.20.0.0/24 --gateway 10.20.0.1 -o com.docker.network.bridge.name=br-lab lab'));
      needArgs(p, 1, 'exactly 1 argument (the network name)', 'network create');
      if (p.positionals.length > 1) throw new TsnetError('INVALID_CONFIG', 'network create: requires exactly 1 argument (the network name)', { details: { field: 'name' } });
      const c = await controller();
      const n = await c.createNetwork({
        name: p.positionals[0] ?? '',
        ...(str(p, 'driver') !== undefined ? { driver: str(p, 'driver') as string } : {}),
        subnets: subnetRequests(list(p, 'subnet'), list(p, 'gateway'), list(p, 'ip-range'), list(p, 'aux-address')),
        ipv6: bool(p, 'ipv6'),
        internal: bool(p, 'internal'),
        ...(bool(p, 'disable-dns') ? { dnsEnabled: false } : {}),
        options: keyValues(list(p, 'opt'), 'opt'),
        labels: keyValues(list(p, 'label'), 'label'),
      });
      io.out(`${n.id}\n`);
    },
  },
  ls: {
    summary: 'List networks',
    async run(argv, io) {
      const specs = [FILTER, FORMAT, { name: 'quiet', short: 'q', type: 'boolean', help: 'only IDs' } as FlagSpec, { name: 'no-trunc', type: 'boolean', help: 'full IDs' } as FlagSpec, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('network ls [OPTIONS]', 'List networks.', specs, 'tsnet network ls --filter driver=bridge --format "{{.Name}}: {{.ID}}"'));
      const f = parseFilters(list(p, 'filter'), ['driver', 'id', 'label', 'name', 'scope', 'type', 'dangling']);
      for (const v of f.get('type') ?? []) if (v !== 'custom' && v !== 'builtin') throw new TsnetError('INVALID_CONFIG', `filter: invalid filter: 'type'='${v}'`, { details: { field: 'filter', value: `type=${v}` } });
      const dangling = boolFilter(f, 'dangling');
      const c = await controller();
      let nets = await c.listNetworks();
      const used = dangling === undefined ? new Set<string>() : new Set((await Promise.all(nets.map(async (n) => ((await c.inspectNetwork(n.id)).endpoints.length > 0 ? n.id : '')))).filter(Boolean));
      nets = nets.filter((n) => anyOf(f, 'driver', (x) => n.driver === x)
        && anyOf(f, 'id', (x) => n.id.startsWith(x))
        && anyOf(f, 'name', (x) => n.name.includes(x))
        && anyOf(f, 'scope', (x) => x === 'local')
        && anyOf(f, 'type', (x) => (x === 'builtin') === PREDEFINED.includes(n.name))
        && labelsMatch(f, n.labels)
        && (dangling === undefined || dangling === (!PREDEFINED.includes(n.name) && !used.has(n.id))));
      const trunc = !bool(p, 'no-trunc');
      if (bool(p, 'quiet')) return io.out(nets.map((n) => `${trunc ? n.id.slice(0, 12) : n.id}\n`).join(''));
      io.out(formatList(nets.map((n) => networkFields(n, trunc)), str(p, 'format') ?? 'table', { defaultTable: NETWORK_TABLE, headers: NETWORK_HEADERS, json: (x) => x }));
    },
  },
  inspect: {
    summary: 'Show networks in detail (JSON)',
    async run(argv, io) {
      const specs = [{ name: 'format', short: 'f', type: 'string', help: 'a Go template (e.g. {{.IPAM.Config}}) or json', placeholder: 'FORMAT' } as FlagSpec, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('network inspect [OPTIONS] NETWORK [NETWORK...]', 'Show one or more networks, with their containers, as JSON or through a template.', specs, 'tsnet network inspect -f "{{range .IPAM.Config}}{{.Subnet}}{{end}}" bridge'));
      needArgs(p, 1, 'at least 1 argument (a network)', 'network inspect');
      const c = await controller();
      const out = [];
      for (const name of p.positionals) out.push(await inspectJson(c, await c.findNetwork(name)));
      const format = str(p, 'format');
      io.out(format === undefined ? `${JSON.stringify(out, null, 4)}\n` : formatEach(out, format));
    },
  },
  rm: {
    summary: 'Remove networks',
    async run(argv, io) {
      const specs = [HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('network rm NETWORK [NETWORK...]', 'Remove one or more networks (they must have no containers).', specs, 'tsnet network rm lab'));
      needArgs(p, 1, 'at least 1 argument (a network)', 'network rm');
      const c = await controller();
      await eachRef(p.positionals, io, async (name, io) => {
        await c.deleteNetwork(name);
        io.out(`${name}\n`);
      });
    },
  },
  prune: {
    summary: 'Remove all networks without containers',
    async run(argv, io) {
      const specs = [{ name: 'force', short: 'f', type: 'boolean', help: 'do not prompt (tsnet never prompts)' } as FlagSpec, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('network prune [OPTIONS]', 'Remove every user network that has no containers.', specs, 'tsnet network prune -f'));
      const removed = await (await controller()).pruneNetworks();
      io.out(removed.length > 0 ? `Deleted Networks:\n${removed.map((r) => `${r}\n`).join('')}` : '');
    },
  },
  connect: {
    summary: 'Connect a container to a network',
    async run(argv, io) {
      const specs: FlagSpec[] = [
        { name: 'ip', type: 'string', help: 'IPv4 address', placeholder: 'IP' },
        { name: 'ip6', type: 'string', help: 'IPv6 address', placeholder: 'IP' },
        { name: 'alias', type: 'string', multiple: true, help: 'network-scoped alias', placeholder: 'NAME' },
        { name: 'mac-address', type: 'string', help: 'MAC address', placeholder: 'MAC' },
        HELP,
      ];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('network connect [OPTIONS] NETWORK CONTAINER', 'Connect a running container to a network (a new ethN appears in it).', specs, 'tsnet network connect --ip 10.20.0.50 lab web'));
      needArgs(p, 2, '2 arguments (NETWORK CONTAINER)', 'network connect');
      await (await controller()).connect(p.positionals[1] ?? '', p.positionals[0] ?? '', {
        ...(str(p, 'ip') !== undefined ? { ip: str(p, 'ip') as string } : {}),
        ...(str(p, 'ip6') !== undefined ? { ip6: str(p, 'ip6') as string } : {}),
        ...(str(p, 'mac-address') !== undefined ? { mac: str(p, 'mac-address') as string } : {}),
        aliases: list(p, 'alias'),
      });
    },
  },
  disconnect: {
    summary: 'Disconnect a container from a network',
    async run(argv, io) {
      const specs = [{ name: 'force', short: 'f', type: 'boolean', help: 'accepted for compatibility' } as FlagSpec, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('network disconnect NETWORK CONTAINER', 'Disconnect a container from a network (its ethN goes away).', specs, 'tsnet network disconnect lab web'));
      needArgs(p, 2, '2 arguments (NETWORK CONTAINER)', 'network disconnect');
      await (await controller()).disconnect(p.positionals[1] ?? '', p.positionals[0] ?? '');
    },
  },
});
