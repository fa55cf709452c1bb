/**
 * Simulated hosts of a cluster inside one isolated host: each a network namespace and a mount
 * namespace of its own (held by a `sleep` started under `unshare --mount`, entered with `nsenter
 * -t PID -m -n`), with its own state and run directories and its own `tsnet daemon`, all on an
 * underlay bridge (`ul0`, 10.99.0.0/24) together with a real etcd (one member or three, each in a
 * namespace of its own). Everything is made inside the isolated host and goes with it.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NetnsRef } from '../../core/net.js';
import { execDetails, inNetns, run, type LongLived } from '../../sys/exec.js';
import { NO_UPSTREAM, TSNET_BIN, tsnetArgv, type CliResult } from './cli.js';
import type { IsolatedHost } from './isolated-host.js';

export const UNDERLAY = '10.99.0';

export interface SimHost {
  readonly name: string;
  readonly ip: string;
  readonly ns: NetnsRef;
  readonly pid: number;
  readonly stateDir: string;
  readonly runDir: string;
  /** `tsnet ARGS` on this host. */
  cli(...args: string[]): Promise<CliResult>;
  /** Like cli, rejecting unless it succeeds; stdout. */
  ok(...args: string[]): Promise<string>;
  /** argv in this host's namespaces. */
  exec(argv: readonly string[], timeoutMs?: number): Promise<{ stdout: string; stderr: string }>;
  startDaemon(): Promise<LongLived>;
  /** SIGKILLs the daemon (its lease is then no longer renewed). */
  killDaemon(): Promise<void>;
}

export interface EtcdMember {
  readonly name: string;
  readonly ip: string;
  readonly ns: NetnsRef;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export interface Cluster {
  readonly hosts: readonly SimHost[];
  readonly etcd: readonly EtcdMember[];
  readonly storeUrl: string;
}

async function waitFor(p: LongLived, text: string, what: string, ms = 20_000): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${seen.slice(-500)}`)), ms);
    const on = (d: Buffer): void => {
      seen += d.toString();
      if (seen.includes(text)) {
        clearTimeout(timer);
        resolve();
      }
    };
    p.child.stderr.on('data', on);
    p.child.stdout.on('data', on);
    p.child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited ${String(code)}: ${seen.slice(-500)}`));
    });
  });
}

/** Attaches namespace `ns` to the underlay with address `ip`. */
async function plug(host: IsolatedHost, ns: NetnsRef, name: string, ip: string): Promise<void> {
  if (ns.kind !== 'path') throw new Error('a namespace file is needed');
  await host.exec(['ip', 'link', 'add', `ul-${name}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.path]);
  await host.exec(['ip', 'link', 'set', `ul-${name}`, 'master', 'ul0', 'up']);
  await host.execIn(ns, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  await host.execIn(ns, ['ip', 'link', 'set', 'eth0', 'up']);
}

export async function makeCluster(host: IsolatedHost, opts: { readonly hosts: number; readonly members: 1 | 3; readonly ttl?: number; readonly grace?: number }): Promise<Cluster> {
  await host.exec(['ip', 'link', 'add', 'ul0', 'type', 'bridge']);
  await host.exec(['ip', 'link', 'set', 'ul0', 'up']);
  const members: EtcdMember[] = [];
  const initial = Array.from({ length: opts.members }, (_, j) => `m${j}=http://${UNDERLAY}.${2 + j}:2380`).join(',');
  for (let j = 0; j < opts.members; j++) {
    const ns = await host.newNetns(`etcd${j}`);
    const ip = `${UNDERLAY}.${2 + j}`;
    await plug(host, ns, `e${j}`, ip);
    const dataDir = join(host.stateDir, `etcd-${j}`);
    await mkdir(dataDir, { recursive: true });
    let proc: LongLived | undefined;
    const m: EtcdMember = {
      name: `m${j}`, ip, ns,
      async start() {
        proc = host.spawnIn(ns, [
          'etcd', '--name', `m${j}`, '--data-dir', dataDir, '--listen-client-urls', `http://${ip}:2379`, '--advertise-client-urls', `http://${ip}:2379`,
          '--listen-peer-urls', `http://${ip}:2380`, '--initial-advertise-peer-urls', `http://${ip}:2380`, '--initial-cluster', initial,
          '--initial-cluster-state', 'new', '--heartbeat-interval', '100', '--election-timeout', '1000',
        ]);
        await waitFor(proc, 'ready to serve client requests', `etcd ${j}`); // one member or all: once it serves (a cluster: once it has a quorum)
      },
      async stop() {
        if (proc === undefined) return;
        proc.child.kill('SIGKILL');
        await proc.close(1000);
        proc = undefined;
      },
    };
    members.push(m);
  }
  await Promise.all(members.map((m) => m.start()));
  const storeUrl = `etcd://${members.map((m) => `${m.ip}:2379`).join(',')}`;
  const hosts: SimHost[] = [];
  for (let i = 1; i <= opts.hosts; i++) {
    const name = `h${i}`;
    const ns = await host.newNetns(name);
    const ip = `${UNDERLAY}.${10 + i}`;
    await plug(host, ns, name, ip);
    const holder = host.spawnIn(ns, ['unshare', '--mount', '--propagation', 'private', '--', 'sleep', '100000']);
    await new Promise((r) => setTimeout(r, 100));
    const pid = holder.pid;
    const stateDir = join(host.stateDir, name, 'state');
    const runDir = join(host.stateDir, name, 'run');
    await mkdir(stateDir, { recursive: true });
    await mkdir(runDir, { recursive: true });
    const enter = (argv: readonly string[]): [string, ...string[]] => ['nsenter', '-t', String(pid), '-m', '-n', '--', ...argv];
    const env = {
      TSNET_STATE_DIR: stateDir, TSNET_RUN_DIR: runDir, TSNET_FIREWALL: 'nftables', TSNET_DNS_UPSTREAM: NO_UPSTREAM,
      TSNET_CLUSTER_STORE: storeUrl, TSNET_CLUSTER_ADVERTISE: ip,
    };
    const cli = async (...args: string[]): Promise<CliResult> => {
      try {
        const r = await run(inNetns(host.ns, enter(tsnetArgv(args))), { env, timeoutMs: 60_000 });
        return { code: 0, stdout: r.stdout, stderr: r.stderr };
      } catch (err) {
        const d = execDetails(err);
        if (!d || d.exitCode === null) throw err;
        return { code: d.exitCode, stdout: d.stdout, stderr: d.stderr };
      }
    };
    let daemon: LongLived | undefined;
    const h: SimHost = {
      name, ip, ns, pid, stateDir, runDir, cli,
      async ok(...args) {
        const r = await cli(...args);
        if (r.code !== 0) throw new Error(`${name}: tsnet ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
        return r.stdout;
      },
      exec: (argv, timeoutMs = 20_000) => run(inNetns(host.ns, enter(argv)), { timeoutMs }),
      async startDaemon() {
        daemon = host.spawnIn(host.ns, enter([process.execPath, TSNET_BIN, '--state-dir', stateDir, '--run-dir', runDir, '--log-level', 'info', 'daemon', '--upstream', NO_UPSTREAM]) as [string, ...string[]]);
        await waitFor(daemon, 'daemon ready', `${name} daemon`);
        return daemon;
      },
      async killDaemon() {
        // Whichever daemon serves this host (one a command started, too): by its pid file.
        const pid = Number((await readFile(join(runDir, 'daemon.pid'), 'utf8').catch(() => '')).trim());
        if (Number.isInteger(pid) && pid > 0) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        if (daemon !== undefined) {
          daemon.child.kill('SIGKILL');
          await daemon.close(1000);
          daemon = undefined;
        }
      },
    };
    host.defer(async () => {
      await h.cli('daemon', '--stop').catch(() => undefined);
      await h.killDaemon();
    });
    // The cluster's settings, saved in the host's state directory (short TTL and grace for tests).
    await h.ok('--cluster-store-opt', `ttl=${opts.ttl ?? 4}`, '--cluster-store-opt', `grace=${opts.grace ?? 6}`, 'network', 'ls');
    hosts.push(h);
  }
  return { hosts, etcd: members, storeUrl };
}

/** Polls `check` every 20 ms for at most `ms`; the time it took, or undefined. */
export async function within(ms: number, check: () => Promise<boolean>): Promise<number | undefined> {
  const t0 = performance.now();
  for (;;) {
    if (await check().catch(() => false)) return performance.now() - t0;
    if (performance.now() - t0 > ms) return undefined;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** test/helpers/net-tools.mjs, run by Node inside containers (tcp-server, tcp-client, udp-...). */
export const NET_TOOLS = fileURLToPath(new URL('./net-tools.mjs', import.meta.url));

/** The container's IPv4 address on `net` (inspect). */
export async function ipOf(h: SimHost, name: string, net: string): Promise<string> {
  return (await h.ok('inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, name)).trim();
}

/** A TCP request from inside container `from` on host `h` to ADDR:PORT; the reply, or undefined. */
export async function tcpFrom(h: SimHost, from: string, addr: string, port: number, timeoutMs = 3000): Promise<string | undefined> {
  const r = await h.cli('exec', from, process.execPath, NET_TOOLS, 'tcp-client', addr, String(port), 'hi', String(timeoutMs));
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** `name` as container `from` on host `h` resolves it (first IPv4 address), or undefined. */
export async function resolveFrom(h: SimHost, from: string, name: string): Promise<string | undefined> {
  const r = await h.cli('exec', from, 'getent', 'ahostsv4', name);
  return r.code === 0 ? r.stdout.split(/\s+/)[0] : undefined;
}
