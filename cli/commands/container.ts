/** `tsnet run|exec|ps|logs|stop|rm|inspect`: the bundled runtime plus the network model. */
import { TsnetError, isCode } from '../../core/errors.js';
import type { Controller, NetworkMode } from '../../cnm/controller.js';
import type { Runtime } from '../../runtime/api.js';
import type { ContainerRecord } from '../../runtime/spec.js';
import { bool, keyValues, list, parseArgs, str, table, usage, type FlagSpec } from '../args.js';
import { parseExpose, parsePublish, portBindings, portLines } from '../ports.js';
import { reported, type Command, type Io } from './types.js';

export interface ContainerDeps {
  readonly controller: Controller;
  readonly runtime: Runtime;
  readonly randomHex: (bytes: number) => string;
  /** Holds a cross-process lock while `fn` runs (a crash releases it). */
  readonly withLock: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  /** Finishes or undoes what a crashed command left (containers, sandboxes, endpoints, addresses). */
  readonly reconcile: () => Promise<void>;
}

const HELP: FlagSpec = { name: 'help', type: 'boolean', help: 'show this help' };
const RUN: FlagSpec[] = [
  { name: 'detach', short: 'd', type: 'boolean', help: 'run in the background and print the container ID' },
  { name: 'name', type: 'string', help: 'container name', placeholder: 'NAME' },
  { name: 'hostname', short: 'h', type: 'string', help: 'container host name', placeholder: 'NAME' },
  { name: 'network', type: 'string', help: 'NAME, host, none or container:NAME (default: bridge)', placeholder: 'NETWORK' },
  { name: 'ip', type: 'string', help: 'IPv4 address on the network', placeholder: 'IP' },
  { name: 'ip6', type: 'string', help: 'IPv6 address on the network', placeholder: 'IP' },
  { name: 'mac-address', type: 'string', help: 'MAC address', placeholder: 'MAC' },
  { name: 'network-alias', type: 'string', multiple: true, help: 'network-scoped alias', placeholder: 'NAME' },
  { name: 'publish', short: 'p', type: 'string', multiple: true, help: 'publish a port: [IP:][HOSTPORT]:CPORT[/tcp|udp|sctp] or CPORT; ranges allowed; no host port: an ephemeral one', placeholder: 'SPEC' },
  { name: 'expose', type: 'string', multiple: true, help: 'expose a port or range (published by -P)', placeholder: 'PORT[/PROTO]' },
  { name: 'publish-all', short: 'P', type: 'boolean', help: 'publish every exposed port on an ephemeral host port' },
  { name: 'dns', type: 'string', multiple: true, help: 'nameserver for resolv.conf', placeholder: 'IP' },
  { name: 'dns-search', type: 'string', multiple: true, help: 'search domain', placeholder: 'DOMAIN' },
  { name: 'dns-option', type: 'string', multiple: true, help: 'resolv.conf option', placeholder: 'OPT' },
  { name: 'add-host', type: 'string', multiple: true, help: 'add HOST:IP to /etc/hosts', placeholder: 'HOST:IP' },
  { name: 'env', short: 'e', type: 'string', multiple: true, help: 'environment KEY=VALUE', placeholder: 'KEY=VALUE' },
  { name: 'workdir', short: 'w', type: 'string', help: 'working directory', placeholder: 'DIR' },
  { name: 'rootfs', type: 'string', help: 'root filesystem directory (default: the host\'s tree, in its own mount namespace)', placeholder: 'DIR' },
  { name: 'label', short: 'l', type: 'string', multiple: true, help: 'label KEY=VALUE', placeholder: 'KEY=VALUE' },
  { name: 'rm', type: 'boolean', help: 'remove the container when it exits' },
  HELP,
];

function networkMode(raw: string | undefined): NetworkMode {
  if (raw === undefined || raw === 'default') return { kind: 'network', network: 'bridge' };
  if (raw === 'host') return { kind: 'host' };
  if (raw === 'none') return { kind: 'none' };
  if (raw.startsWith('container:')) {
    const target = raw.slice('container:'.length);
    if (target === '') throw new TsnetError('INVALID_CONFIG', 'network: container: needs a container name', { details: { field: 'network' } });
    return { kind: 'container', target };
  }
  return { kind: 'network', network: raw };
}

function addHosts(items: readonly string[]): { ip: string; names: string[] }[] {
  return items.map((item) => {
    const i = item.indexOf(':'); // HOST:IP; the IP may be IPv6 and contain ':'
    if (i <= 0 || i === item.length - 1) throw new TsnetError('INVALID_CONFIG', `add-host: expected HOST:IP, got ${JSON.stringify(item)}`, { details: { field: 'add-host' } });
    return { names: [item.slice(0, i)], ip: item.slice(i + 1).replace(/^\[|\]$/g, '') };
  });
}

function need(p: ReturnType<typeof parseArgs>, n: number, what: string, cmd: string): void {
  if (p.positionals.length < n) throw new TsnetError('INVALID_CONFIG', `${cmd}: requires ${what}; see tsnet ${cmd} --help`, { details: { field: what } });
}

function status(r: ContainerRecord): string {
  if (r.status === 'running') return `Up since ${r.startedAt ?? '?'}`;
  if (r.status === 'exited') return `Exited (${r.exitCode ?? '?'})${r.error ? `: ${r.error}` : ''}`;
  return 'Created';
}

export const containerCommands = (deps: () => Promise<ContainerDeps>): Record<string, Command> => ({
  run: {
    summary: 'Run a command in a new container',
    async run(argv: readonly string[], io: Io) {
      const p = parseArgs(argv, RUN, { stopAtPositional: true });
      if (bool(p, 'help')) return io.out(usage('run [OPTIONS] [--] COMMAND [ARG...]', 'Run a command in a new container, attached to a network.', RUN, 'tsnet run -d --name web --network lab -- node -e "require(\'http\').createServer((q,s)=>s.end(\'hi\')).listen(80)"'));
      need(p, 1, 'a command to run', 'run');
      const mode = networkMode(str(p, 'network'));
      const ip = str(p, 'ip');
      const ip6 = str(p, 'ip6');
      const mac = str(p, 'mac-address');
      const aliases = list(p, 'network-alias');
      const exposed = list(p, 'expose').map(parseExpose);
      const ports = [...list(p, 'publish').map(parsePublish), ...(bool(p, 'publish-all') ? exposed : [])];
      if (ports.length > 0 && mode.kind === 'container') throw new TsnetError('INVALID_CONFIG', 'publish: conflicting options: port publishing and the container type network mode', { details: { field: 'publish' } });
      if (ports.length > 0 && mode.kind === 'none') throw new TsnetError('INVALID_CONFIG', 'publish: a container on network "none" has no network to publish ports on', { details: { field: 'publish' } });
      if (ports.length > 0 && mode.kind === 'host') io.err('WARNING: Published ports are discarded when using host network mode\n');
      if (mode.kind !== 'network' && (ip !== undefined || ip6 !== undefined || mac !== undefined || aliases.length > 0)) {
        throw new TsnetError('INVALID_CONFIG', `${ip !== undefined ? 'ip' : ip6 !== undefined ? 'ip6' : mac !== undefined ? 'mac-address' : 'network-alias'}: only with a user-defined or the bridge network`, { details: { field: 'network' } });
      }
      const d = await deps();
      await d.reconcile();
      const id = d.randomHex(32);
      const name = str(p, 'name') ?? `tsnet_${id.slice(0, 8)}`;
      const env = keyValues(list(p, 'env'), 'env');
      const detach = bool(p, 'detach');
      // Held from the first record to the container record: a concurrent reconcile waits instead of
      // mistaking this half-made container for a crashed one.
      const started = await d.withLock(`container/${id}`, async () => {
        const sb = await d.controller.createSandbox({
          id, name, mode,
          ...(str(p, 'hostname') !== undefined ? { hostname: str(p, 'hostname') as string } : {}),
          extraHosts: addHosts(list(p, 'add-host')), dns: list(p, 'dns'), dnsSearch: list(p, 'dns-search'), dnsOptions: list(p, 'dns-option'),
          connect: { ...(ip !== undefined ? { ip } : {}), ...(ip6 !== undefined ? { ip6 } : {}), ...(mac !== undefined ? { mac } : {}), aliases, ports },
        });
        try {
          return await d.runtime.run({
            id, name, hostname: sb.record.hostname, argv: [...p.positionals], env,
            ...(str(p, 'workdir') !== undefined ? { cwd: str(p, 'workdir') as string } : {}),
            ...(str(p, 'rootfs') !== undefined ? { rootfs: str(p, 'rootfs') as string } : {}),
            netns: sb.netns,
            files: { '/etc/hosts': { hostPath: sb.record.hostsPath }, '/etc/resolv.conf': { hostPath: sb.record.resolvConfPath } },
            labels: keyValues(list(p, 'label'), 'label'),
            autoRemove: bool(p, 'rm'),
          }, {
            detach,
            onOutput: (c) => (c.stream === 'stdout' ? io.out(c.data.toString()) : io.err(c.data.toString())),
          });
        } catch (err) {
          // The container never ran: remove whatever exists of it (record, sandbox, addresses).
          await d.runtime.remove(id, { force: true }).catch(() => undefined);
          await d.controller.deleteSandbox(id).catch(() => undefined);
          throw err;
        }
      });
      if (started.detached) {
        io.out(`${id}\n`);
        return 0;
      }
      if (bool(p, 'rm')) await d.runtime.remove(id, { force: true }).catch(() => undefined);
      return started.exitCode ?? 1;
    },
  },
  exec: {
    summary: 'Run a command in a running container',
    async run(argv, io) {
      const specs: FlagSpec[] = [
        { name: 'env', short: 'e', type: 'string', multiple: true, help: 'environment KEY=VALUE', placeholder: 'KEY=VALUE' },
        { name: 'workdir', short: 'w', type: 'string', help: 'working directory', placeholder: 'DIR' },
        HELP,
      ];
      const p = parseArgs(argv, specs, { stopAtPositional: true });
      if (bool(p, 'help')) return io.out(usage('exec [OPTIONS] CONTAINER COMMAND [ARG...]', 'Run a command inside a running container (all its namespaces).', specs, 'tsnet exec web ip -br addr'));
      need(p, 2, 'a container and a command', 'exec');
      const [ref, cmd, ...args] = p.positionals as [string, string, ...string[]];
      const r = await (await deps()).runtime.exec(ref, [cmd, ...args], {
        env: keyValues(list(p, 'env'), 'env'),
        ...(str(p, 'workdir') !== undefined ? { cwd: str(p, 'workdir') as string } : {}),
      });
      io.out(r.stdout);
      io.err(r.stderr);
      return r.exitCode;
    },
  },
  ps: {
    summary: 'List containers',
    async run(argv, io) {
      const specs: FlagSpec[] = [
        { name: 'all', short: 'a', type: 'boolean', help: 'show all containers (default: running)' },
        { name: 'quiet', short: 'q', type: 'boolean', help: 'only IDs' },
        { name: 'format', type: 'string', help: 'table (default) or json', placeholder: 'FORMAT' },
        HELP,
      ];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('ps [OPTIONS]', 'List containers (running; -a for all).', specs, 'tsnet ps -a --format json'));
      const d = await deps();
      await d.reconcile();
      const all = (await d.runtime.list()).filter((r) => bool(p, 'all') || r.status === 'running').sort((a, b) => b.createdAt.localeCompare(a.createdAt));
      if (bool(p, 'quiet')) return io.out(all.map((r) => `${r.id.slice(0, 12)}\n`).join(''));
      const sandboxes = new Map((await d.controller.listSandboxes()).map((s) => [s.id, s]));
      const nets = new Map((await d.controller.listNetworks()).map((n) => [n.id, n.name]));
      const networksOf = async (id: string): Promise<string[]> => {
        const sb = sandboxes.get(id as never);
        if (!sb) return [];
        if (sb.netns.kind === 'host') return ['host'];
        if (sb.netns.kind === 'container') return [`container:${sandboxes.get(sb.netns.sandboxId)?.name ?? sb.netns.sandboxId.slice(0, 12)}`];
        const eps = await d.controller.endpointsOf(sb.id);
        return eps.length === 0 ? ['none'] : eps.map((e) => nets.get(e.networkId) ?? e.networkId.slice(0, 12));
      };
      if (str(p, 'format') === 'json') {
        const out = [];
        for (const r of all) out.push({ ...r, networks: await networksOf(r.id) });
        return io.out(`${JSON.stringify(out, null, 2)}\n`);
      }
      const rows = [];
      for (const r of all) rows.push([r.id.slice(0, 12), r.argv.join(' ').slice(0, 30), status(r), (await networksOf(r.id)).join(','), r.name]);
      io.out(table(['CONTAINER ID', 'COMMAND', 'STATUS', 'NETWORKS', 'NAMES'], rows));
    },
  },
  logs: {
    summary: 'Show a container\'s output',
    async run(argv, io) {
      const specs: FlagSpec[] = [{ name: 'follow', short: 'f', type: 'boolean', help: 'keep printing new output until the container exits' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('logs [OPTIONS] CONTAINER', 'Print what a container wrote to stdout and stderr.', specs, 'tsnet logs -f web'));
      need(p, 1, 'a container', 'logs');
      for await (const c of (await deps()).runtime.logs(p.positionals[0] ?? '', { follow: bool(p, 'follow') })) {
        if (c.stream === 'stdout') io.out(c.data.toString());
        else io.err(c.data.toString());
      }
    },
  },
  stop: {
    summary: 'Stop containers (SIGTERM, then SIGKILL after the timeout)',
    async run(argv, io) {
      const specs: FlagSpec[] = [{ name: 'time', short: 't', type: 'string', help: 'seconds to wait before SIGKILL (default 10)', placeholder: 'SECONDS' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('stop [OPTIONS] CONTAINER [CONTAINER...]', 'Stop one or more containers.', specs, 'tsnet stop -t 2 web'));
      need(p, 1, 'at least one container', 'stop');
      const t = str(p, 'time');
      const timeoutSec = t === undefined ? 10 : Number(t);
      if (!Number.isInteger(timeoutSec) || timeoutSec < 0) throw new TsnetError('INVALID_CONFIG', `time: expected whole seconds, got ${JSON.stringify(t)}`, { details: { field: 'time' } });
      const rt = (await deps()).runtime;
      for (const ref of p.positionals) {
        await rt.stop(ref, { timeoutSec });
        io.out(`${ref}\n`);
      }
    },
  },
  rm: {
    summary: 'Remove containers (and their network endpoints)',
    async run(argv, io) {
      const specs: FlagSpec[] = [{ name: 'force', short: 'f', type: 'boolean', help: 'kill a running container first' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('rm [OPTIONS] CONTAINER [CONTAINER...]', 'Remove containers; their endpoints, addresses and namespace go with them.', specs, 'tsnet rm -f web'));
      need(p, 1, 'at least one container', 'rm');
      const d = await deps();
      let first: unknown;
      for (const ref of p.positionals) {
        try {
          const rec = await d.runtime.remove(ref, { force: bool(p, 'force') });
          if (rec === undefined) {
            // No container record: a sandbox left by a crash can still be removed by name.
            await d.controller.deleteSandbox(ref);
          }
          io.out(`${ref}\n`);
        } catch (err) {
          first ??= err;
          io.err(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
        }
      }
      if (first !== undefined) throw reported(first);
    },
  },
  port: {
    summary: 'List a container\'s published ports',
    async run(argv, io) {
      const p = parseArgs(argv, [HELP]);
      if (bool(p, 'help')) return io.out(usage('port CONTAINER [PRIVATE_PORT[/PROTO]]', 'List port mappings, or the host addresses of one container port.', [HELP], 'tsnet port web 80/tcp'));
      need(p, 1, 'a container', 'port');
      const [ref, filter] = p.positionals as [string, string | undefined];
      if (p.positionals.length > 2) throw new TsnetError('INVALID_CONFIG', 'port: expected CONTAINER [PRIVATE_PORT[/PROTO]]', { details: { field: 'port' } });
      if (filter !== undefined) parseExpose(filter);
      const d = await deps();
      const sb = await d.controller.findSandbox(ref);
      const lines = portLines(portBindings((await d.controller.endpointsOf(sb.id)).flatMap((e) => e.ports)), filter);
      if (filter !== undefined && lines.length === 0) {
        throw new TsnetError('NOT_FOUND', `no public port '${filter.includes('/') ? filter : `${filter}/tcp`}' published for ${ref}`, { details: { field: 'port' } });
      }
      if (lines.length > 0) io.out(`${lines.join('\n')}\n`);
    },
  },
  inspect: {
    summary: 'Show containers in detail (JSON)',
    async run(argv, io) {
      const p = parseArgs(argv, [HELP]);
      if (bool(p, 'help')) return io.out(usage('inspect CONTAINER [CONTAINER...]', 'Show containers with their network settings, as JSON.', [HELP], 'tsnet inspect web'));
      need(p, 1, 'at least one container', 'inspect');
      const d = await deps();
      const out = [];
      for (const ref of p.positionals) {
        const rec = await d.runtime.inspect(ref);
        const sb = await d.controller.findSandbox(rec.id).catch((e: unknown) => (isCode(e, 'NOT_FOUND') ? undefined : Promise.reject(e)));
        const nets = new Map((await d.controller.listNetworks()).map((n) => [n.id, n]));
        const eps = sb ? await d.controller.endpointsOf(sb.id) : [];
        out.push({
          ...rec,
          NetworkSettings: {
            SandboxKey: sb?.netns.kind === 'host' ? 'host' : sb?.netns.path ?? '',
            HostsPath: sb?.hostsPath ?? '',
            ResolvConfPath: sb?.resolvConfPath ?? '',
            Ports: portBindings(eps.flatMap((e) => e.ports)),
            Networks: Object.fromEntries(eps.map((e) => {
              const n = nets.get(e.networkId);
              const v4 = e.addresses.find((a) => !a.includes(':'));
              const v6 = e.addresses.find((a) => a.includes(':'));
              return [n?.name ?? e.networkId, {
                NetworkID: e.networkId, EndpointID: e.id, Interface: e.ifName, HostInterface: e.hostIf ?? '', MacAddress: e.mac ?? '',
                IPAddress: v4?.split('/')[0] ?? '', IPPrefixLen: v4 ? Number(v4.split('/')[1]) : 0,
                GlobalIPv6Address: v6?.split('/')[0] ?? '', GlobalIPv6PrefixLen: v6 ? Number(v6.split('/')[1]) : 0,
                Gateway: e.defaultRoute ? (n?.subnets.find((s) => !s.subnet.includes(':'))?.gateway ?? '') : '',
                Aliases: e.aliases,
              }];
            })),
          },
        });
      }
      io.out(`${JSON.stringify(out, null, 2)}\n`);
    },
  },
});
