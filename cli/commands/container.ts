/**
 * `tsnet run|start|stop|restart|kill|wait|rm|exec|ps|logs|port|inspect`:
 * the bundled runtime plus the network model, with Docker's flags and output.
 *
 * A container's sandbox (network namespace, endpoints, addresses, host ports, DNS names) lives while
 * it runs: the runtime's exit hook deletes it when the container stops or ends, and `start` makes
 * a new one from the settings `run` kept in the record (container-config.ts).
 */
import { constants } from 'node:os';
import { TsnetError, isCode } from '../../core/errors.js';
import type { ContainerDeps } from '../../engine/engine.js';
import type { AttachConnection, InteractiveProcess, TermSize } from '../../runtime/api.js';
import type { ContainerRecord } from '../../runtime/spec.js';
import { bool, keyValues, list, parseArgs, str, usage, type FlagSpec } from '../args.js';
import { configuredNetworks, hostConfigView, networkMode, parseRunConfig, portsOf, sandboxRequest, type RunConfig } from '../container-config.js';
import { PS_HEADERS, PS_TABLE, inspectContainer, psFields, stateOf, type ContainerView } from '../docker-view.js';
import { anyOf, labelsMatch, parseFilters } from '../filters.js';
import { parseExpose, portBindings, portLines } from '../ports.js';
import { formatEach, formatList } from '../template.js';
import { eachRef, reported, type Command, type Io } from './types.js';

const HELP: FlagSpec = { name: 'help', type: 'boolean', help: 'show this help' };
const RUN: FlagSpec[] = [
  { name: 'detach', short: 'd', type: 'boolean', help: 'run in the background and print the container ID' },
  { name: 'interactive', short: 'i', type: 'boolean', help: 'keep stdin open and forward it to the container' },
  { name: 'tty', short: 't', type: 'boolean', help: 'give the container a pseudo-terminal (with -i: an interactive shell)' },
  { name: 'init', type: 'boolean', help: 'run an init (tini) as PID 1: it reaps zombies and forwards signals' },
  { name: 'name', type: 'string', help: 'container name', placeholder: 'NAME' },
  { name: 'hostname', short: 'h', type: 'string', help: 'container host name', placeholder: 'NAME' },
  { name: 'network', type: 'string', multiple: true, help: 'NAME, host, none or container:NAME (default: bridge); repeat to attach to several networks', placeholder: 'NETWORK' },
  { name: 'net', type: 'string', multiple: true, help: 'alias of --network', placeholder: 'NETWORK' },
  { name: 'ip', type: 'string', help: 'IPv4 address on the (first) network', placeholder: 'IP' },
  { name: 'ip6', type: 'string', help: 'IPv6 address on the (first) network', placeholder: 'IP' },
  { name: 'mac-address', type: 'string', help: 'MAC address on the (first) network', placeholder: 'MAC' },
  { name: 'network-alias', type: 'string', multiple: true, help: 'network-scoped alias on the (first) network', placeholder: 'NAME' },
  { name: 'publish', short: 'p', type: 'string', multiple: true, help: 'publish a port: [IP:][HOSTPORT]:CPORT[/tcp|udp|sctp] or CPORT; ranges allowed; no host port: an ephemeral one', placeholder: 'SPEC' },
  { name: 'expose', type: 'string', multiple: true, help: 'expose a port or range (published by -P)', placeholder: 'PORT[/PROTO]' },
  { name: 'publish-all', short: 'P', type: 'boolean', help: 'publish every exposed port on an ephemeral host port' },
  { name: 'dns', type: 'string', multiple: true, help: 'nameserver for resolv.conf', placeholder: 'IP' },
  { name: 'dns-search', type: 'string', multiple: true, help: 'search domain', placeholder: 'DOMAIN' },
  { name: 'dns-option', type: 'string', multiple: true, help: 'resolv.conf option', placeholder: 'OPT' },
  { name: 'dns-opt', type: 'string', multiple: true, help: 'alias of --dns-option', placeholder: 'OPT' },
  { name: 'add-host', type: 'string', multiple: true, help: 'add HOST:IP to /etc/hosts', placeholder: 'HOST:IP' },
  { name: 'env', short: 'e', type: 'string', multiple: true, help: 'environment KEY=VALUE, or KEY to pass this shell\'s value', placeholder: 'KEY[=VALUE]' },
  { name: 'workdir', short: 'w', type: 'string', help: 'working directory (default: the current directory on the host\'s tree, / with --rootfs)', placeholder: 'DIR' },
  { name: 'rootfs', type: 'string', help: 'root filesystem directory (default: the host\'s tree, in its own mount namespace)', placeholder: 'DIR' },
  { name: 'label', short: 'l', type: 'string', multiple: true, help: 'label KEY=VALUE', placeholder: 'KEY=VALUE' },
  { name: 'rm', type: 'boolean', help: 'remove the container when it exits' },
  HELP,
];

const EXEC: FlagSpec[] = [
  { name: 'detach', short: 'd', type: 'boolean', help: 'run the command in the background' },
  { name: 'interactive', short: 'i', type: 'boolean', help: 'keep stdin open and forward it' },
  { name: 'tty', short: 't', type: 'boolean', help: 'allocate a pseudo-terminal' },
  { name: 'user', short: 'u', type: 'string', help: 'NAME, UID, NAME:GROUP or UID:GID (the container\'s passwd and group files)', placeholder: 'USER' },
  { name: 'env', short: 'e', type: 'string', multiple: true, help: 'environment KEY=VALUE, or KEY to pass this shell\'s value', placeholder: 'KEY[=VALUE]' },
  { name: 'workdir', short: 'w', type: 'string', help: 'working directory', placeholder: 'DIR' },
  HELP,
];

/** `-i`/`-t`: the command reads the client's stdin or terminal, so it runs in the client's process. */
function attached(argv: readonly string[], specs: readonly FlagSpec[]): boolean {
  try {
    const p = parseArgs(argv, specs, { stopAtPositional: true });
    return bool(p, 'interactive') || bool(p, 'tty');
  } catch {
    return false; // the served command reports the bad flag
  }
}

/** Signals a foreground client forwards to its container (Docker's sig-proxy). */
const FORWARDED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
const ENDING: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
/** After a forwarded ending signal the container gets this long before it is killed (Docker's stop timeout). */
const GRACE_MS = 10_000;

function need(p: ReturnType<typeof parseArgs>, n: number, what: string, cmd: string): void {
  if (p.positionals.length < n) throw new TsnetError('INVALID_CONFIG', `${cmd}: requires ${what}; see tsnet ${cmd} --help`, { details: { field: what } });
}

/** `-e KEY=VALUE`, and `-e KEY` with this shell's value (left out when unset, as Docker does). */
function envOf(items: readonly string[], env: Io['env']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq === 0 || item === '') throw new TsnetError('INVALID_CONFIG', `env: invalid value ${JSON.stringify(item)}: expected KEY=VALUE or KEY`, { details: { field: 'env', value: item } });
    if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
    else if (env?.[item] !== undefined) out[item] = env[item] as string;
  }
  return out;
}

/** Docker's signal forms: KILL, SIGKILL, 9. */
function parseSignal(raw: string): NodeJS.Signals {
  const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, ILL: 4, TRAP: 5, ABRT: 6, BUS: 7, FPE: 8, KILL: 9, USR1: 10, SEGV: 11, USR2: 12, PIPE: 13, ALRM: 14, TERM: 15, STKFLT: 16, CHLD: 17, CONT: 18, STOP: 19, TSTP: 20, TTIN: 21, TTOU: 22, URG: 23, XCPU: 24, XFSZ: 25, VTALRM: 26, PROF: 27, WINCH: 28, IO: 29, PWR: 30, SYS: 31 };
  const up = raw.toUpperCase().replace(/^SIG/, '');
  if (/^\d+$/.test(raw)) {
    const name = Object.entries(SIGNALS).find(([, n]) => n === Number(raw))?.[0];
    if (name !== undefined) return `SIG${name}` as NodeJS.Signals;
  } else if (SIGNALS[up] !== undefined) return `SIG${up}` as NodeJS.Signals;
  throw new TsnetError('INVALID_CONFIG', `signal: invalid signal: ${raw}`, { details: { field: 'signal', value: raw } });
}

/** The run flags as the settings kept with the container. */
function runConfig(p: ReturnType<typeof parseArgs>): RunConfig {
  const nets = [...list(p, 'network'), ...list(p, 'net')];
  const mode = nets[0] ?? 'bridge';
  const m = networkMode(mode);
  const ip = str(p, 'ip');
  const ip6 = str(p, 'ip6');
  const mac = str(p, 'mac-address');
  const aliases = [...list(p, 'network-alias')];
  if (nets.length > 1) {
    const kinds = nets.map((n) => networkMode(n).kind);
    if (kinds.some((k) => k !== 'network')) throw new TsnetError('INVALID_CONFIG', 'network: conflicting options: cannot attach both user-defined and non-user-defined network-modes', { details: { field: 'network' } });
    if (new Set(nets).size !== nets.length) throw new TsnetError('INVALID_CONFIG', 'network: the same network is given twice', { details: { field: 'network' } });
  }
  const cfg: RunConfig = {
    mode,
    networks: m.kind === 'network' ? nets.length === 0 ? [{ name: 'bridge', aliases }] : nets.map((name, i) => ({
      name: networkMode(name).kind === 'network' ? (networkMode(name) as { network: string }).network : name,
      ...(i === 0 && ip !== undefined ? { ip } : {}), ...(i === 0 && ip6 !== undefined ? { ip6 } : {}), ...(i === 0 && mac !== undefined ? { mac } : {}),
      aliases: i === 0 ? aliases : [],
    })) : [],
    publish: [...list(p, 'publish')],
    expose: [...list(p, 'expose')],
    publishAll: bool(p, 'publish-all'),
    ...(str(p, 'hostname') !== undefined ? { hostname: str(p, 'hostname') as string } : {}),
    dns: [...list(p, 'dns')],
    dnsSearch: [...list(p, 'dns-search')],
    dnsOptions: [...list(p, 'dns-option'), ...list(p, 'dns-opt')],
    addHost: [...list(p, 'add-host')],
  };
  const ports = portsOf(cfg);
  for (const e of cfg.expose) parseExpose(e);
  if (ports.length > 0 && m.kind === 'container') throw new TsnetError('INVALID_CONFIG', 'publish: conflicting options: port publishing and the container type network mode', { details: { field: 'publish' } });
  if (ports.length > 0 && m.kind === 'none') throw new TsnetError('INVALID_CONFIG', 'publish: a container on network "none" has no network to publish ports on', { details: { field: 'publish' } });
  if (m.kind !== 'network' && (ip !== undefined || ip6 !== undefined || mac !== undefined || aliases.length > 0)) {
    throw new TsnetError('INVALID_CONFIG', `${ip !== undefined ? 'ip' : ip6 !== undefined ? 'ip6' : mac !== undefined ? 'mac-address' : 'network-alias'}: only with a user-defined or the bridge network`, { details: { field: 'network' } });
  }
  return cfg;
}

/** Makes the container's sandbox from its settings: the first network with the ports, then the others. */
async function attachNetworks(d: ContainerDeps, id: string, name: string, cfg: RunConfig): Promise<Awaited<ReturnType<ContainerDeps['controller']['createSandbox']>>> {
  const { req, extra } = sandboxRequest(id, name, cfg);
  const create = (): ReturnType<ContainerDeps['controller']['createSandbox']> => d.controller.createSandbox(req);
  const sb = await create().catch(async (err: unknown) => {
    // The name may be held by what a crash left (a run killed half-way, an orphaned --rm
    // container): recovered here, for this name only, then tried once more.
    const holder = err instanceof TsnetError && err.code === 'ALREADY_EXISTS' && err.details['field'] === 'name' ? err.details['holder'] : undefined;
    if (typeof holder === 'string' && holder !== id && (await d.recoverSandbox(holder))) return create();
    throw err;
  }).catch(async (err: unknown) => {
    throw await withPortHolder(d, err, cfg);
  });
  try {
    for (const n of extra) {
      await d.controller.connect(id, n.name, { ...(n.ip !== undefined ? { ip: n.ip } : {}), ...(n.ip6 !== undefined ? { ip6: n.ip6 } : {}), ...(n.mac !== undefined ? { mac: n.mac } : {}), aliases: n.aliases });
    }
  } catch (err) {
    await d.controller.deleteSandbox(id).catch(() => undefined);
    throw err;
  }
  return sb;
}

/** A refused host port: the message says which container holds it (Docker names the allocation). */
async function withPortHolder(d: ContainerDeps, err: unknown, cfg: RunConfig): Promise<unknown> {
  if (!(err instanceof TsnetError) || err.code !== 'ALREADY_EXISTS' || err.details['field'] !== 'publish') return err;
  const asked = portsOf(cfg).flatMap((p) => (p.hostPort === undefined ? [] : [{ proto: p.proto, start: p.hostPort.start, end: p.hostPort.end }]));
  const holders = new Set<string>();
  for (const sb of await d.controller.listSandboxes()) {
    for (const e of await d.controller.endpointsOf(sb.id)) {
      if (e.ports.some((m) => asked.some((a) => a.proto === m.proto && m.hostPort.start <= a.end && a.start <= m.hostPort.end))) holders.add(sb.name);
    }
  }
  if (holders.size === 0) return err;
  return new TsnetError(err.code, `${err.message} (held by container ${[...holders].join(', ')})`, { cause: err, details: err.details });
}

const dropSandbox = async (d: ContainerDeps, id: string): Promise<void> => {
  await d.controller.deleteSandbox(id).catch((err: unknown) => {
    if (!isCode(err, 'NOT_FOUND')) throw err;
  });
};

/** Starts a stopped container: a new sandbox from its settings, then its process. */
async function startContainer(d: ContainerDeps, ref: string): Promise<ContainerRecord> {
  const rec = await d.runtime.inspect(ref);
  if (rec.status === 'running') return rec;
  const cfg = parseRunConfig(rec.config);
  await d.controller.ensurePredefined();
  return d.withLock(`container/${rec.id}`, async () => {
    await dropSandbox(d, rec.id); // whatever an unobserved exit left
    await attachNetworks(d, rec.id, rec.name, cfg);
    try {
      return await d.runtime.start(rec.id);
    } catch (err) {
      await dropSandbox(d, rec.id).catch(() => undefined);
      throw err;
    }
  });
}

/** Feeds the client's stdin to `sink` (-i); the returned function stops reading. */
function pumpStdin(io: Io, sink: { write(b: Buffer): void; endInput(): void }): () => void {
  const stdin = io.stdin;
  if (stdin === undefined) {
    sink.endInput();
    return () => undefined;
  }
  const onData = (b: Buffer | string): void => sink.write(typeof b === 'string' ? Buffer.from(b) : b);
  const onEnd = (): void => sink.endInput();
  stdin.on('data', onData);
  stdin.once('end', onEnd);
  stdin.resume();
  return () => {
    stdin.off('data', onData);
    stdin.off('end', onEnd);
    stdin.pause();
    (stdin as { destroy?: () => void }).destroy?.();
  };
}

/** Raw mode and window-size forwarding while a terminal session runs (-t); the returned function restores. */
function terminalSession(io: Io, resize: (s: TermSize) => void): () => void {
  const term = io.terminal;
  if (term === undefined) return () => undefined;
  term.setRaw(true);
  const off = term.onResize(resize);
  return () => {
    off();
    term.setRaw(false);
  };
}

async function containerView(d: ContainerDeps, rec: ContainerRecord): Promise<ContainerView> {
  const sb = rec.status === 'running' ? await d.controller.findSandbox(rec.id).catch((e: unknown) => (isCode(e, 'NOT_FOUND') ? undefined : Promise.reject(e))) : undefined;
  const eps = sb !== undefined ? await d.controller.endpointsOf(sb.id) : [];
  return { record: rec, sandbox: sb, endpoints: eps, networks: configuredNetworks(parseRunConfig(rec.config)) };
}

/**
 * What `ps` shows of a container: its ports are its endpoints', and only a container run with
 * `-p`/`-P` has any, so the others cost no read of the network records (with 1,000 containers,
 * reading every one's sandbox and endpoints took longer than the rest of `ps`).
 */
async function psView(d: ContainerDeps, rec: ContainerRecord): Promise<ContainerView> {
  const cfg = parseRunConfig(rec.config);
  if (rec.status === 'running' && (cfg.publishAll || portsOf(cfg).length > 0)) return containerView(d, rec);
  return { record: rec, sandbox: undefined, endpoints: [], networks: configuredNetworks(cfg) };
}

const STATUSES = ['created', 'restarting', 'running', 'removing', 'paused', 'exited', 'dead'];

export const containerCommands = (deps: () => Promise<ContainerDeps>): Record<string, Command> => ({
  run: {
    summary: 'Run a command in a new container',
    local: (argv) => attached(argv, RUN),
    async run(argv: readonly string[], io: Io) {
      const p = parseArgs(argv, RUN, { stopAtPositional: true });
      if (bool(p, 'help')) return io.out(usage('run [OPTIONS] [--] COMMAND [ARG...]', 'Run a command in a new container, attached to a network. Without --rootfs it sees the host\'s tree and starts in the current directory.', RUN, 'tsnet run -d --name web --network lab -- node -e "require(\'http\').createServer((q,s)=>s.end(\'hi\')).listen(80)"'));
      need(p, 1, 'a command to run', 'run');
      const cfg = runConfig(p);
      const detach = bool(p, 'detach');
      const tty = bool(p, 'tty');
      const interactive = bool(p, 'interactive');
      const env = envOf(list(p, 'env'), io.env);
      const labels = keyValues(list(p, 'label'), 'label');
      const rootfs = str(p, 'rootfs');
      const cwd = str(p, 'workdir') ?? (rootfs === undefined && io.cwd !== undefined && io.cwd.startsWith('/') ? io.cwd : '/');
      const d = await deps();
      await d.controller.ensurePredefined(); // the default network (a read when it exists)
      const id = d.randomHex(32);
      const name = str(p, 'name') ?? `tsnet_${id.slice(0, 8)}`;
      let conn: AttachConnection | undefined;
      let stopStdin: () => void = () => undefined;
      let restoreTerm: () => void = () => undefined;
      let ending = 0;
      let grace: ReturnType<typeof setTimeout> | undefined;
      const offSignals = detach ? () => undefined : (io.onSignal?.(FORWARDED, (sig) => {
        // Forwarded to the container (sig-proxy); an ending signal gives it the stop timeout, a
        // second one (or the timeout) kills it. `--rm` then removes it as after any exit.
        void d.runtime.kill(id, sig).catch(() => undefined);
        if (!ENDING.includes(sig)) return;
        ending++;
        const kill = (): void => {
          void d.runtime.kill(id, 'SIGKILL').catch(() => undefined);
        };
        if (ending > 1) kill();
        else grace = setTimeout(kill, GRACE_MS);
      }) ?? (() => undefined));
      try {
        // Held from the first record to the container record: a concurrent reconcile waits instead of
        // mistaking this half-made container for a crashed one.
        const started = await d.withLock(`container/${id}`, async () => {
          const sb = await attachNetworks(d, id, name, cfg);
          try {
            const size = io.terminal?.size();
            return await d.runtime.run({
              id, name, hostname: sb.record.hostname, argv: [...p.positionals], env, cwd,
              ...(rootfs !== undefined ? { rootfs } : {}),
              netns: sb.netns,
              files: { '/etc/hosts': { hostPath: sb.record.hostsPath }, '/etc/resolv.conf': { hostPath: sb.record.resolvConfPath } },
              labels,
              autoRemove: bool(p, 'rm'),
              tty, openStdin: interactive, init: bool(p, 'init'),
              config: cfg,
            }, {
              detach,
              ...(size !== undefined ? { ttySize: size } : {}),
              ...(io.client !== undefined ? { client: io.client } : {}),
              ...(io.signal !== undefined ? { signal: io.signal } : {}),
              onOutput: (c) => (c.stream === 'stdout' ? io.out(c.data) : io.err(c.data)),
              onAttach: (c) => {
                conn = c;
                if (interactive) stopStdin = pumpStdin(io, c);
                if (tty) restoreTerm = terminalSession(io, (s) => c.resize(s.cols, s.rows));
              },
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
        return started.exitCode ?? 125;
      } finally {
        if (grace !== undefined) clearTimeout(grace);
        offSignals();
        stopStdin();
        restoreTerm();
        conn?.close();
      }
    },
  },
  start: {
    summary: 'Start stopped containers (their network is made anew)',
    async run(argv, io) {
      const p = parseArgs(argv, [HELP]);
      if (bool(p, 'help')) return io.out(usage('start CONTAINER [CONTAINER...]', 'Start stopped containers: a new sandbox with their networks, static addresses, aliases and published ports, then their command.', [HELP], 'tsnet start web'));
      need(p, 1, 'at least one container', 'start');
      const d = await deps();
      await eachRef(p.positionals, io, async (ref, io) => {
        await startContainer(d, ref);
        io.out(`${ref}\n`);
      });
    },
  },
  restart: {
    summary: 'Restart containers',
    async run(argv, io) {
      const specs: FlagSpec[] = [{ name: 'time', short: 't', type: 'string', help: 'seconds to wait before SIGKILL (default 10)', placeholder: 'SECONDS' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('restart [OPTIONS] CONTAINER [CONTAINER...]', 'Stop (SIGTERM, then SIGKILL after the timeout) and start containers again.', specs, 'tsnet restart -t 2 web'));
      need(p, 1, 'at least one container', 'restart');
      const timeoutSec = seconds(str(p, 'time'));
      const d = await deps();
      await eachRef(p.positionals, io, async (ref, io) => {
        await d.runtime.stop(ref, { timeoutSec });
        await startContainer(d, ref);
        io.out(`${ref}\n`);
      });
    },
  },
  kill: {
    summary: 'Send a signal to containers (default SIGKILL)',
    async run(argv, io) {
      const specs: FlagSpec[] = [{ name: 'signal', short: 's', type: 'string', help: 'signal: KILL (default), TERM, HUP, 15...', placeholder: 'SIGNAL' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('kill [OPTIONS] CONTAINER [CONTAINER...]', 'Send a signal to the main process (PID 1) of running containers.', specs, 'tsnet kill -s HUP web'));
      need(p, 1, 'at least one container', 'kill');
      const sig = parseSignal(str(p, 'signal') ?? 'KILL');
      const d = await deps();
      await eachRef(p.positionals, io, async (ref, io) => {
        await d.runtime.kill(ref, sig);
        io.out(`${ref}\n`);
      });
    },
  },
  wait: {
    summary: 'Wait for containers to stop and print their exit codes',
    async run(argv, io) {
      const p = parseArgs(argv, [HELP]);
      if (bool(p, 'help')) return io.out(usage('wait CONTAINER [CONTAINER...]', 'Block until each container stops, then print its exit code.', [HELP], 'tsnet wait web'));
      need(p, 1, 'at least one container', 'wait');
      const d = await deps();
      for (const ref of p.positionals) io.out(`${(await d.runtime.wait(ref)) ?? 255}\n`);
    },
  },
  exec: {
    summary: 'Run a command in a running container',
    local: (argv) => attached(argv, EXEC),
    async run(argv, io) {
      const specs = EXEC;
      const p = parseArgs(argv, specs, { stopAtPositional: true });
      if (bool(p, 'help')) return io.out(usage('exec [OPTIONS] CONTAINER COMMAND [ARG...]', 'Run a command inside a running container (all its namespaces), as long as it takes.', specs, 'tsnet exec -it web sh'));
      need(p, 2, 'a container and a command', 'exec');
      const [ref, cmd, ...args] = p.positionals as [string, string, ...string[]];
      const opts = {
        env: envOf(list(p, 'env'), io.env),
        ...(str(p, 'workdir') !== undefined ? { cwd: str(p, 'workdir') as string } : {}),
        ...(str(p, 'user') !== undefined ? { user: str(p, 'user') as string } : {}),
      };
      const rt = (await deps()).runtime;
      if (bool(p, 'detach')) {
        await rt.execDetached(ref, [cmd, ...args], opts);
        return 0;
      }
      const tty = bool(p, 'tty');
      const interactive = bool(p, 'interactive');
      const size = tty ? (io.terminal?.size() ?? { cols: 80, rows: 24 }) : undefined;
      const proc: InteractiveProcess = await rt.execInteractive(ref, [cmd, ...args], { ...opts, stdin: interactive, ...(size !== undefined ? { tty: size } : {}) });
      proc.onOutput((stream, data) => (stream === 'stdout' ? io.out(data) : io.err(data)));
      const stopStdin = interactive ? pumpStdin(io, proc) : () => undefined;
      const restore = tty ? terminalSession(io, (s) => proc.resize(s.cols, s.rows)) : () => undefined;
      const offSignals = tty ? () => undefined : (io.onSignal?.(FORWARDED, (s) => proc.kill(s)) ?? (() => undefined));
      try {
        const r = await proc.exited;
        return r.code ?? 128 + signalNo(r.signal);
      } finally {
        offSignals();
        stopStdin();
        restore();
      }
    },
  },
  ps: {
    summary: 'List containers',
    async run(argv, io) {
      const specs: FlagSpec[] = [
        { name: 'all', short: 'a', type: 'boolean', help: 'show all containers (default: running)' },
        { name: 'quiet', short: 'q', type: 'boolean', help: 'only IDs' },
        { name: 'filter', short: 'f', type: 'string', multiple: true, help: 'id, name, label, status, exited, network, ancestor, before, since (KEY=VALUE)', placeholder: 'FILTER' },
        { name: 'format', type: 'string', help: 'table, table TEMPLATE, json or a Go template', placeholder: 'FORMAT' },
        { name: 'last', short: 'n', type: 'string', help: 'the N last created containers (all states)', placeholder: 'N' },
        { name: 'latest', short: 'l', type: 'boolean', help: 'the last created container (all states)' },
        { name: 'no-trunc', type: 'boolean', help: 'do not truncate IDs and commands' },
        { name: 'size', short: 's', type: 'boolean', help: 'accepted for compatibility (tsnet containers have no writable layer)' },
        HELP,
      ];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('ps [OPTIONS]', 'List containers (running; -a for all).', specs, 'tsnet ps -a --filter status=exited --format "table {{.Names}}\\t{{.Status}}"'));
      const f = parseFilters(list(p, 'filter'), ['id', 'name', 'label', 'status', 'exited', 'network', 'ancestor', 'before', 'since']);
      for (const s of f.get('status') ?? []) if (!STATUSES.includes(s)) throw new TsnetError('INVALID_CONFIG', `filter: invalid filter 'status=${s}'`, { details: { field: 'filter', value: `status=${s}` } });
      for (const s of f.get('exited') ?? []) if (!/^\d+$/.test(s)) throw new TsnetError('INVALID_CONFIG', `filter: invalid filter 'exited=${s}'`, { details: { field: 'filter', value: `exited=${s}` } });
      const d = await deps();
      let all = (await d.runtime.list()).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
      for (const u of await d.runtime.unreadable()) {
        io.err(`Warning: container ${u.id.slice(0, 12)}: its record could not be read (kept as ${u.path}); remove what is left of it with: tsnet rm -f ${u.id}\n`);
      }
      const byRef = (ref: string): ContainerRecord | undefined => all.find((r) => r.name === ref || r.id === ref || (ref.length >= 3 && r.id.startsWith(ref)));
      const views = new Map<string, ContainerView>();
      for (const r of all) views.set(r.id, await psView(d, r));
      const netIds = new Map((await d.controller.listNetworks()).map((n) => [n.name, n.id]));
      const limit = bool(p, 'latest') ? 1 : str(p, 'last') !== undefined ? Number(str(p, 'last')) : undefined;
      const showAll = bool(p, 'all') || limit !== undefined || f.has('status') || f.has('exited');
      const bound = (key: string): ContainerRecord | undefined => {
        const ref = f.get(key)?.at(-1);
        if (ref === undefined) return undefined;
        const r = byRef(ref);
        if (r === undefined) throw new TsnetError('NOT_FOUND', `filter: no such container: ${ref}`, { details: { field: 'filter', value: `${key}=${ref}` } });
        return r;
      };
      const before = bound('before');
      const since = bound('since');
      all = all.filter((r) => {
        const v = views.get(r.id) as ContainerView;
        return (showAll || r.status === 'running')
          && anyOf(f, 'id', (x) => r.id.startsWith(x))
          && anyOf(f, 'name', (x) => r.name.includes(x.replace(/^\//, '')) || safeRegex(x)?.test(`/${r.name}`) === true)
          && labelsMatch(f, r.labels)
          && anyOf(f, 'status', (x) => stateOf(r) === x)
          && anyOf(f, 'exited', (x) => r.status === 'exited' && r.startedAt !== null && r.exitCode === Number(x))
          && anyOf(f, 'network', (x) => v.networks.some((n) => n === x || netIds.get(n) === x || (x.length >= 3 && (netIds.get(n) ?? '').startsWith(x))))
          && anyOf(f, 'ancestor', (x) => r.rootfs === x)
          && (before === undefined || r.createdAt < before.createdAt)
          && (since === undefined || r.createdAt > since.createdAt);
      });
      if (limit !== undefined) {
        if (!Number.isInteger(limit) || limit < 0) throw new TsnetError('INVALID_CONFIG', `last: expected a count, got ${JSON.stringify(str(p, 'last'))}`, { details: { field: 'last' } });
        all = all.slice(0, limit);
      }
      const trunc = !bool(p, 'no-trunc');
      if (bool(p, 'quiet')) return io.out(all.map((r) => `${trunc ? r.id.slice(0, 12) : r.id}\n`).join(''));
      const now = new Date();
      const rows = all.map((r) => psFields(views.get(r.id) as ContainerView, now, trunc));
      io.out(formatList(rows, str(p, 'format') ?? 'table', { defaultTable: PS_TABLE, headers: PS_HEADERS, json: (x) => x }));
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
        if (c.stream === 'stdout') io.out(c.data);
        else io.err(c.data);
      }
    },
  },
  stop: {
    summary: 'Stop containers (SIGTERM, then SIGKILL after the timeout)',
    async run(argv, io) {
      const specs: FlagSpec[] = [
        { name: 'time', short: 't', type: 'string', help: 'seconds to wait before SIGKILL (default 10)', placeholder: 'SECONDS' },
        { name: 'signal', short: 's', type: 'string', help: 'signal to send first (default TERM)', placeholder: 'SIGNAL' },
        HELP,
      ];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('stop [OPTIONS] CONTAINER [CONTAINER...]', 'Stop one or more containers; their addresses, host ports and names are released (start brings them back).', specs, 'tsnet stop -t 2 web'));
      need(p, 1, 'at least one container', 'stop');
      const timeoutSec = seconds(str(p, 'time'));
      const signal = str(p, 'signal') !== undefined ? parseSignal(str(p, 'signal') as string) : undefined;
      const rt = (await deps()).runtime;
      await eachRef(p.positionals, io, async (ref, io) => {
        await rt.stop(ref, { timeoutSec, ...(signal !== undefined ? { signal } : {}) });
        io.out(`${ref}\n`);
      });
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
      await eachRef(p.positionals, io, async (ref, io) => {
        const rec = await d.runtime.remove(ref, { force: bool(p, 'force') });
        if (rec === undefined) {
          // A container whose record could not be read: its process, directories and sandbox go.
          const purged = await d.runtime.purge(ref);
          if (purged !== undefined) await dropSandbox(d, purged);
          // No container record: a sandbox left by a crash can still be removed by name.
          else await d.controller.deleteSandbox(ref);
        }
        io.out(`${ref}\n`);
      });
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
      const sb = await d.controller.findSandbox(ref).catch(async (err: unknown) => {
        if (!isCode(err, 'NOT_FOUND')) throw err;
        await d.runtime.inspect(ref); // a stopped container has no ports published; NOT_FOUND if there is no container
        return undefined;
      });
      const lines = sb === undefined ? [] : portLines(portBindings((await d.controller.endpointsOf(sb.id)).flatMap((e) => e.ports)), filter);
      if (filter !== undefined && lines.length === 0) {
        throw new TsnetError('NOT_FOUND', `no public port '${filter.includes('/') ? filter : `${filter}/tcp`}' published for ${ref}`, { details: { field: 'port' } });
      }
      if (lines.length > 0) io.out(`${lines.join('\n')}\n`);
    },
  },
  inspect: {
    summary: 'Show containers in detail (JSON)',
    async run(argv, io) {
      const specs: FlagSpec[] = [
        { name: 'format', short: 'f', type: 'string', help: 'a Go template (e.g. {{.State.Pid}}) or json', placeholder: 'FORMAT' },
        { name: 'size', short: 's', type: 'boolean', help: 'accepted for compatibility' },
        HELP,
      ];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('inspect [OPTIONS] CONTAINER [CONTAINER...]', 'Show containers as Docker does (State, Config, HostConfig, NetworkSettings), as JSON or through a template.', specs, 'tsnet inspect -f "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}" web'));
      need(p, 1, 'at least one container', 'inspect');
      const d = await deps();
      const nets = new Map((await d.controller.listNetworks()).map((n) => [n.id as string, n]));
      const out: Record<string, unknown>[] = [];
      let first: unknown;
      for (const ref of p.positionals) {
        try {
          const rec = await d.runtime.inspect(ref);
          const view = await containerView(d, rec);
          out.push(inspectContainer(view, nets, hostConfigView(parseRunConfig(rec.config)), { logPath: '' }));
        } catch (err) {
          first ??= err;
          if (!isCode(err, 'NOT_FOUND')) throw err;
        }
      }
      const format = str(p, 'format');
      if (format === undefined) io.out(`${JSON.stringify(out, null, 4)}\n`);
      else io.out(formatEach(out, format));
      if (first !== undefined) {
        io.err(`Error: ${first instanceof Error ? first.message : String(first)}\n`);
        throw reported(first);
      }
    },
  },
});

function seconds(t: string | undefined): number {
  const v = t === undefined ? 10 : Number(t);
  if (!Number.isInteger(v) || v < 0) throw new TsnetError('INVALID_CONFIG', `time: expected whole seconds, got ${JSON.stringify(t)}`, { details: { field: 'time' } });
  return v;
}

function signalNo(s: string | null): number {
  return s === null ? 0 : (constants.signals as Record<string, number | undefined>)[s] ?? 0;
}

function safeRegex(s: string): RegExp | undefined {
  try {
    return new RegExp(s);
  } catch {
    return undefined;
  }
}
