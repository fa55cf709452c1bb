/**
 * The composition root of the CNI plugin binaries (dist/tsnet-bridge.js, tsnet-ipam.js,
 * tsnet-portmap.js; entry points in plugins/cni/bin/). Reads the environment, builds the real sys
 * parts lazily (nothing heavy before the verb is known: VERSION and malformed input never start a
 * helper process), runs the skeleton and exits with its status.
 *
 * TSNET_CNI_LOG_LEVEL (debug, info, warn (default), error): JSON lines on stderr.
 */
import { randomBytes } from 'node:crypto';
import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { HOST_NETNS } from '../../core/net.js';
import { createJsonLogger, parseLogLevel } from '../../core/log.js';
import { run } from '../../sys/exec.js';
import { TsnetError } from '../../core/errors.js';
import { FIREWALL_BACKENDS, type Firewall, type FirewallBackend, type FirewallDeps } from '../../sys/firewall/api.js';
import { createIptablesFirewall } from '../../sys/firewall/iptables.js';
import { createNftablesFirewall } from '../../sys/firewall/nftables.js';
import { createNoneFirewall } from '../../sys/firewall/none.js';
import { createIproute2NetlinkFor } from '../../sys/netlink/iproute2.js';
import { isNetnsFile } from '../../sys/netns.js';
import { openHostLocalStore } from '../../sys/store/host-local.js';
import { abstractSocketLock, createLocker } from '../../sys/store/lock.js';
import { createSysctlFor } from '../../sys/sysctl.js';
import { createBridgePlugin } from './bridge.js';
import type { CniDeps } from './deps.js';
import { CNI_ERR, CniError } from './errors.js';
import { createIpamPlugin } from './ipam-plugin.js';
import { createPortmapPlugin } from './portmap.js';
import { dispatch, type Plugin } from './skel.js';

export type PluginKind = 'bridge' | 'ipam' | 'portmap';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

/** Finds `type` on CNI_PATH, executes it, parses its stdout (error JSON → CniError with its code). */
async function execPlugin(type: string, verb: string, path: readonly string[], env: Readonly<Record<string, string>>, stdin: string): Promise<unknown> {
  let bin: string | undefined;
  for (const dir of path) {
    const candidate = join(dir, type);
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) {
      bin = candidate;
      break;
    }
  }
  if (bin === undefined) throw new CniError(CNI_ERR.INVALID_CONFIG, `ipam.type: plugin ${JSON.stringify(type)} not found on CNI_PATH (${path.join(':')})`, 'failed to find plugin');
  let out: string;
  try {
    out = (await run([bin], { input: stdin, env: { ...env, CNI_COMMAND: verb }, timeoutMs: 60_000 })).stdout;
  } catch (err) {
    const d = (err as { details?: { stdout?: string; stderr?: string } }).details;
    const text = d?.stdout?.trim() ?? '';
    try {
      const e = JSON.parse(text) as { code?: unknown; msg?: unknown; details?: unknown };
      if (typeof e.code === 'number') {
        throw new CniError(e.code, `${type} ${verb}: ${String(e.msg ?? '')}${e.details ? `: ${String(e.details)}` : ''}`, String(e.msg ?? `${type} failed`));
      }
    } catch (inner) {
      if (inner instanceof CniError) throw inner;
    }
    throw new CniError(999, `${type} ${verb} failed: ${d?.stderr?.trim() || (err instanceof Error ? err.message : String(err))}`, `${type} failed`);
  }
  return out.trim() === '' ? undefined : JSON.parse(out);
}

function buildDeps(): CniDeps {
  const log = createJsonLogger({ write: (l) => process.stderr.write(l), level: parseLogLevel(process.env['TSNET_CNI_LOG_LEVEL'], 'warn') });
  const netlink = createIproute2NetlinkFor({ log });
  const firewalls = new Map<string, Firewall>();
  const fwDeps = { netns: HOST_NETNS, log };
  const make = { nftables: createNftablesFirewall, iptables: createIptablesFirewall, none: () => createNoneFirewall() } as const satisfies Record<FirewallBackend, (d: FirewallDeps) => Firewall>;
  const locker = createLocker({ crossProcess: abstractSocketLock('tsnet-cni'), label: 'tsnet-cni' });
  return {
    hostNs: HOST_NETNS,
    netlink,
    sysctl: createSysctlFor(),
    firewall(backend) {
      let fw = firewalls.get(backend);
      if (!fw) {
        if (!(FIREWALL_BACKENDS as readonly string[]).includes(backend)) {
          throw new TsnetError('INVALID_CONFIG', `firewallBackend: ${JSON.stringify(backend)} is not one of ${FIREWALL_BACKENDS.join(', ')}`, { details: { field: 'firewallBackend' } });
        }
        fw = make[backend as FirewallBackend](fwDeps);
        firewalls.set(backend, fw);
      }
      return fw;
    },
    log,
    randomHex: (n) => randomBytes(n).toString('hex'),
    openIpamStore: (dataDir, network) => openHostLocalStore({ ...(dataDir !== undefined ? { dataDir } : {}), network }),
    withLock: (name, fn) => locker.withLock(name, fn),
    isNetns: isNetnsFile,
    execPlugin,
  };
}

const FACTORIES = {
  bridge: createBridgePlugin,
  ipam: createIpamPlugin,
  portmap: createPortmapPlugin,
} as const satisfies Record<PluginKind, (deps: CniDeps) => Plugin>;

export async function runPlugin(kind: PluginKind): Promise<never> {
  const code = await dispatch(
    { env: process.env, readStdin, write: (t) => process.stdout.write(t) },
    async () => FACTORIES[kind](buildDeps()),
  );
  // Exit at once: the ip helper processes see EOF on their stdin and end by themselves.
  await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
  process.exit(code);
}
