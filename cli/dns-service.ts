/**
 * The embedded DNS resolver as a daemon service: on start and on every reload it reads the CNM
 * records, builds a new snapshot and hands it to the server (which swaps it without touching the
 * sockets that keep serving), and re-reads the upstreams.
 */
import { randomInt } from 'node:crypto';
import { dnsInputs } from '../cnm/dns.js';
import type { CnmState } from '../cnm/state.js';
import type { Logger } from '../core/log.js';
import type { CniAttachmentRecord } from '../sys/store/cni-attachments.js';
import { buildSnapshot } from '../dns/records.js';
import { parseResolvConf } from '../dns/resolv-conf.js';
import { createDnsServer, type Upstream } from '../dns/server.js';
import { hostUpstreams } from '../dns/upstreams.js';
import type { DaemonService } from './daemon.js';
import type { DnsNativeLoad } from './dns-native.js';
import { readOptional } from './engine.js';

export type UpstreamSource =
  /** `--upstream` / TSNET_DNS_UPSTREAM: exactly these (tests point it at a fake inside their namespaces). */
  | { readonly kind: 'fixed'; readonly servers: readonly Upstream[] }
  /** The host's resolv.conf, following systemd-resolved's file when it names only a loopback stub. */
  | { readonly kind: 'resolv-conf'; readonly path: string; readonly resolvedPath: string };

export interface DnsServiceOptions {
  readonly state: CnmState;
  readonly log: Logger;
  readonly port: number;
  readonly upstreams: UpstreamSource;
  readonly timeoutMs?: number;
  readonly maxInFlight?: number;
  /** The native UDP fast path (cli/dns-native.ts); absent: JS only, reported as such. */
  readonly native?: DnsNativeLoad;
  /** The CNI plugins' attachment records (tsnet-bridge with DNS on), read at every reload; unreadable ones are logged and skipped. */
  readonly cniAttachments?: () => Promise<{ readonly records: readonly CniAttachmentRecord[]; readonly errors: readonly string[] }>;
}


export function createDnsService(o: DnsServiceOptions): DaemonService {
  let upstreams: readonly Upstream[] = [];
  let version = 0;
  let records = 0;
  let failed: readonly string[] = [];
  const server = createDnsServer({
    log: o.log, port: o.port, upstreams: () => upstreams, randomId: () => randomInt(65_536),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    ...(o.maxInFlight !== undefined ? { maxInFlight: o.maxInFlight } : {}),
    ...(o.native?.addon !== undefined ? { native: o.native.addon } : {}),
  });
  const nativeNote = o.native?.note ?? 'not loaded: UDP answered in JS';
  async function reload(): Promise<void> {
    const src = o.upstreams;
    if (src.kind === 'fixed') upstreams = src.servers;
    else {
      const resolved = await readOptional(src.resolvedPath);
      upstreams = hostUpstreams(parseResolvConf((await readOptional(src.path)) ?? ''), resolved !== undefined ? parseResolvConf(resolved) : undefined);
    }
    const [networks, endpoints, sandboxes, cni] = await Promise.all([o.state.networks.list(), o.state.endpoints.list(), o.state.sandboxes.list(), o.cniAttachments?.()]);
    for (const err of cni?.errors ?? []) o.log.warn('skipping an unreadable CNI attachment record', { err });
    const inputs = dnsInputs(networks, endpoints, sandboxes, cni?.records ?? []);
    const snap = buildSnapshot(++version, inputs.networks, inputs.endpoints);
    records = snap.records;
    failed = (await server.update(snap)).failed;
  }
  return {
    name: 'dns',
    async start() {
      if (o.native?.addon !== undefined) o.log.info('dns native fast path', { native: nativeNote });
      else o.log.warn('dns native fast path not in use', { native: nativeNote });
      await reload();
    },
    reload,
    stop: () => server.close(),
    status: () => ({ ...server.stats(), records, upstreams: upstreams.map((u) => `${u.host}:${u.port}`), failedListeners: failed, nativeFastPath: nativeNote }),
  };
}
