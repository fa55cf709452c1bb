/**
 * A real dockerd (Debian docker.io) inside a test's isolated host, at Docker's defaults as users run
 * it (its iptables rules on: FORWARD policy drop when it turns forwarding on, DOCKER-USER, docker0)
 * unless told otherwise, with its own data root, exec root, socket and pid file, plus tsnet's Docker
 * plugin on /run/docker/plugins/tsnet.sock (a private
 * tmpfs under scripts/isolate.mjs). Images come offline: a busybox-static root filesystem with
 * relative links, `docker import`ed. dockerd, the containerd it starts, and the plugin are stopped
 * by PID when the host is torn down, even after a failure.
 */
import { chmod, mkdir, readFile, rm, stat, symlink, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execDetails, inNetns, run, type Argv } from '../../sys/exec.js';
import { TSNET_BIN } from './cli.js';
import type { IsolatedHost } from './isolated-host.js';

export const DOCKER = '/usr/bin/docker'; // /usr/local/bin/docker may be a newer client
export const PLUGIN_DIR = '/run/docker/plugins';
export const PLUGIN_SOCKET = join(PLUGIN_DIR, 'tsnet.sock');
export const IMAGE = 'tsnet-bb:latest';

export interface DockerResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Dockerd {
  /** `docker ARGS` against this dockerd; never rejects for a non-zero exit. */
  docker(...args: string[]): Promise<DockerResult>;
  /** Like docker() but rejects unless it succeeds; resolves with trimmed stdout. */
  ok(...args: string[]): Promise<string>;
  /** Stops dockerd (SIGTERM, as a service manager does) and starts it again on the same data. */
  restart(): Promise<void>;
  /** Stops the plugin and starts it again on the same state (its restart, dockerd untouched). */
  restartPlugin(): Promise<void>;
  /** The plugin's stderr so far (JSON log lines). */
  pluginLog(): string;
  readonly dataRoot: string;
  readonly execRoot: string;
}

interface Proc {
  readonly pid: number;
  readonly exited: Promise<void>;
  readonly log: () => string;
}

function spawnLogged(host: IsolatedHost, argv: Argv): Proc {
  const p = host.spawnIn(host.ns, argv);
  let log = '';
  // Drain both pipes (a full pipe would block the daemon); keep the tail for failure messages.
  const keep = (b: Buffer): void => {
    log = (log + b.toString('utf8')).slice(-200_000);
  };
  p.child.stdout.on('data', keep);
  p.child.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) => {
    if (p.child.exitCode !== null || p.child.signalCode !== null) resolve();
    p.child.once('exit', () => resolve());
  });
  return { pid: p.pid, exited, log: () => log };
}

async function waitFor(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

async function stopPid(pid: number, exited: Promise<void>, graceMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs)))]);
  clearTimeout(timer);
  if (!done) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
    await exited;
  }
}

async function killPidFile(path: string): Promise<void> {
  const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** A root filesystem tarball: /bin/busybox and a relative link per applet (absolute ones break). */
export async function busyboxRootfs(dir: string): Promise<string> {
  const root = join(dir, 'rootfs');
  await mkdir(join(root, 'bin'), { recursive: true });
  await mkdir(join(root, 'tmp'), { recursive: true });
  await copyFile('/bin/busybox', join(root, 'bin/busybox'));
  await chmod(join(root, 'bin/busybox'), 0o755);
  const list = (await run(['/bin/busybox', '--list'])).stdout.split('\n').filter((n) => n !== '' && n !== 'busybox');
  for (const n of list) await symlink('busybox', join(root, 'bin', n));
  const tar = join(dir, 'rootfs.tar');
  await run(['tar', '-C', root, '-cf', tar, '.']);
  return tar;
}

export interface DockerdOptions {
  /** Docker's own iptables rules (default true, as Docker runs by default). */
  readonly iptables?: boolean;
  /** Docker's default bridge docker0 (default true). */
  readonly dockerBridge?: boolean;
  /** Start tsnet's Docker plugin beside it (default true). */
  readonly plugin?: boolean;
  /** The firewall backend of the plugin (default nftables). */
  readonly firewall?: string;
}

export async function startDockerd(host: IsolatedHost, opts: DockerdOptions = {}): Promise<Dockerd> {
  const base = join(host.stateDir, 'docker');
  const dataRoot = join(base, 'data');
  const execRoot = join(host.runDir, 'docker-exec');
  const sock = join(host.runDir, 'docker.sock');
  const pidfile = join(host.runDir, 'docker.pid');
  await mkdir(dataRoot, { recursive: true });
  await mkdir(PLUGIN_DIR, { recursive: true });
  const env = { DOCKER_HOST: `unix://${sock}` };

  const docker = async (...args: string[]): Promise<DockerResult> => {
    try {
      const r = await run(inNetns(host.ns, [DOCKER, ...args]), { env, timeoutMs: 60_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const d = execDetails(err);
      if (!d || d.exitCode === null) throw err;
      return { code: d.exitCode, stdout: d.stdout, stderr: d.stderr };
    }
  };
  const ok = async (...args: string[]): Promise<string> => {
    const r = await docker(...args);
    if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  };

  let plugin: Proc | undefined;
  let pluginLogs = '';
  const startPlugin = async (): Promise<void> => {
    plugin = spawnLogged(host, [process.execPath, TSNET_BIN, '--state-dir', host.stateDir, '--run-dir', host.runDir, '--firewall', opts.firewall ?? 'nftables', '--log-level', 'info', 'docker-plugin', '--socket', PLUGIN_SOCKET]);
    await waitFor('the plugin socket', async () => (await stat(PLUGIN_SOCKET).catch(() => undefined))?.isSocket() === true, 10_000);
  };
  const stopPlugin = async (): Promise<void> => {
    if (!plugin) return;
    await stopPid(plugin.pid, plugin.exited, 5_000);
    pluginLogs += plugin.log();
    plugin = undefined;
  };

  let daemon: Proc | undefined;
  const start = async (): Promise<void> => {
    const argv: [string, ...string[]] = ['dockerd', '-H', `unix://${sock}`, '--data-root', dataRoot, '--exec-root', execRoot, '--pidfile', pidfile];
    if (opts.dockerBridge === false) argv.push('--bridge=none');
    if (opts.iptables === false) argv.push('--iptables=false', '--ip6tables=false');
    const d = spawnLogged(host, argv);
    daemon = d;
    await waitFor('dockerd', async () => (await docker('version', '--format', '{{.Server.Version}}')).code === 0, 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${d.log().slice(-3000)}`);
    });
  };
  const stop = async (): Promise<void> => {
    if (!daemon) return;
    await stopPid(daemon.pid, daemon.exited, 20_000);
    // dockerd stops its containerd on a clean exit; after a SIGKILL it would not.
    await killPidFile(join(execRoot, 'containerd', 'containerd.pid'));
    daemon = undefined;
  };

  host.defer(async () => {
    // Containers first (their shims are containerd's children), then the daemons, by PID.
    if (daemon) await docker('rm', '-f', ...(await docker('ps', '-aq')).stdout.split('\n').filter(Boolean)).catch(() => undefined);
    await stop();
    await stopPlugin();
    await rm(PLUGIN_SOCKET, { force: true });
  });

  if (opts.plugin !== false) await startPlugin();
  await start();
  return {
    docker,
    ok,
    async restart() {
      await stop();
      await start();
    },
    async restartPlugin() {
      if (opts.plugin === false) return;
      await stopPlugin();
      await startPlugin();
    },
    pluginLog: () => pluginLogs + (plugin?.log() ?? ''),
    dataRoot,
    execRoot,
  };
}

/** Imports the busybox image once per dockerd. */
export async function importBusybox(d: Dockerd, workDir: string): Promise<void> {
  await mkdir(workDir, { recursive: true });
  const tar = await busyboxRootfs(workDir);
  await d.ok('import', '-c', 'ENV PATH=/bin', tar, IMAGE);
}
