/** Runs the built `tsnet` CLI inside a test's isolated host, with that host's state and run dirs. */
import { fileURLToPath } from 'node:url';
import type { NetnsRef } from '../../core/net.js';
import { execDetails, inNetns, run, type LongLived } from '../../sys/exec.js';
import type { IsolatedHost } from './isolated-host.js';

export const TSNET_BIN = fileURLToPath(new URL('../../dist/tsnet.js', import.meta.url));
/** The installed `tsnet` binary: the C front end (cli/bin/front.c), served by a running daemon, else the Node CLI. */
export const TSNET_FRONT = fileURLToPath(new URL('../../dist/tsnet', import.meta.url));

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export type Cli = (...args: string[]) => Promise<CliResult>;

/** Where a test's DNS daemon forwards unless told otherwise: a dead port on the isolated host's loopback, never the machine's real resolvers. */
export const NO_UPSTREAM = '127.0.0.1:9';

/**
 * The command line of `tsnet ARGS`: the installed binary, the C front end (served by the daemon once
 * one runs, else the Node CLI), as users run it, unless `frontEnd` is false or TSNET_TEST_CLI=node is
 * in the environment of `npm test` (then `node dist/tsnet.js`).
 */
export function tsnetArgv(args: readonly string[], frontEnd?: boolean): [string, ...string[]] {
  return (frontEnd ?? process.env['TSNET_TEST_CLI'] !== 'node') ? [TSNET_FRONT, ...args] : [process.execPath, TSNET_BIN, ...args];
}

export function cliFor(host: IsolatedHost, opts: {
  readonly firewall?: string; readonly ns?: NetnsRef; readonly dnsUpstream?: string; /** TSNET_DNS_NATIVE */ readonly dnsNative?: string;
  /** Another store on the same host. */ readonly stateDir?: string; readonly runDir?: string;
  /** More environment (DBUS_SYSTEM_BUS_ADDRESS...) */ readonly env?: Readonly<Record<string, string>>;
  /**
   * Through the installed `tsnet` binary, the C front end (served by the daemon once one runs, else
   * the Node CLI), as users run it: the default. false (or TSNET_TEST_CLI=node in the environment of
   * `npm test`): `node dist/tsnet.js` itself.
   */
  readonly frontEnd?: boolean;
} = {}): Cli {
  return async (...args) => {
    try {
      const r = await run(inNetns(opts.ns ?? host.ns, tsnetArgv(args, opts.frontEnd)), {
        env: { TSNET_STATE_DIR: opts.stateDir ?? host.stateDir, TSNET_RUN_DIR: opts.runDir ?? host.runDir, TSNET_FIREWALL: opts.firewall ?? 'nftables', TSNET_DNS_UPSTREAM: opts.dnsUpstream ?? NO_UPSTREAM, ...(opts.dnsNative !== undefined ? { TSNET_DNS_NATIVE: opts.dnsNative } : {}), ...opts.env },
        timeoutMs: 60_000,
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const d = execDetails(err);
      if (!d || d.exitCode === null) throw err;
      return { code: d.exitCode, stdout: d.stdout, stderr: d.stderr };
    }
  };
}

/** Like Cli but rejects unless the command succeeds; resolves with stdout. */
export function okCli(cli: Cli): (...args: string[]) => Promise<string> {
  return async (...args) => {
    const r = await cli(...args);
    if (r.code !== 0) throw new Error(`tsnet ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
}

/**
 * `tsnet daemon` in the isolated host (its state and run directories, forwarding to NO_UPSTREAM),
 * resolved once it is ready (every service started, its sockets bound), stopped at teardown.
 */
export async function startDaemon(host: IsolatedHost): Promise<LongLived> {
  const cli = cliFor(host);
  host.defer(() => cli('daemon', '--stop'));
  const p = host.spawnIn(host.ns, [process.execPath, TSNET_BIN, '--state-dir', host.stateDir, '--run-dir', host.runDir, 'daemon', '--upstream', NO_UPSTREAM]);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('tsnet daemon did not start')), 20_000);
    p.child.stderr.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return p;
}

/** Requests the running daemon's CNI service has served (`tsnet daemon --status`). */
export async function cniRequestsServed(host: IsolatedHost): Promise<number | undefined> {
  const s = JSON.parse(await okCli(cliFor(host))('daemon', '--status')) as { services?: { cni?: { requests?: number } } };
  return s.services?.cni?.requests;
}

/**
 * Waits (at most 15 s) until the daemon's first recovery pass is over. That pass (1 s after the
 * daemon starts) restores missing rules and ends with a full reload of every service (the DNS
 * cache included), so a test that checks which service repaired something, or counts cache hits,
 * waits for it first.
 */
export async function afterFirstRecovery(ok: (...args: string[]) => Promise<string>): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const st = JSON.parse(await ok('daemon', '--status')) as { services?: { recovery?: { passes?: number; failures?: number } } };
    const r = st.services?.recovery;
    if ((r?.passes ?? 0) + (r?.failures ?? 0) >= 1) return;
    if (Date.now() > deadline) throw new Error('the daemon\'s first recovery pass did not end within 15 s');
    await new Promise((res) => setTimeout(res, 100));
  }
}
