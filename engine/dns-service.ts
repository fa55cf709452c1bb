/**
 * The embedded DNS resolver as a daemon service: on start and on every reload it reads the CNM
 * records, builds a new snapshot and hands it to the server (which swaps it without touching the
 * sockets that keep serving), and re-reads the upstreams.
 */
import { randomInt } from 'node:crypto';
import { dnsInputs } from '../cnm/dns.js';
import type { CnmState } from '../cnm/state.js';
import type { RemoteEndpoint } from '../cnm/controller.js';
import type { Logger } from '../core/log.js';
import type { CniAttachmentRecord } from '../sys/store/api.js';
import { buildSnapshot } from '../dns/records.js';
import { parseResolvConf } from '../dns/resolv-conf.js';
import { createDnsServer, type Upstream } from '../dns/server.js';
import { hostUpstreams } from '../dns/upstreams.js';
import type { DaemonService, RecordChanges } from '../sys/api.js';
import type { EndpointRecord, NetworkRecord, SandboxRecord } from '../cnm/model.js';
import type { DnsNativeLoad } from './dns-native.js';


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
  /** The native UDP fast path (engine/dns-native.ts); absent: JS only, reported as such. */
  readonly native?: DnsNativeLoad;
  /** The CNI plugins' attachment records (tsnet-bridge with DNS on), read at every reload; unreadable ones are logged and skipped. */
  readonly cniAttachments?: () => Promise<{ readonly records: readonly CniAttachmentRecord[]; readonly errors: readonly string[] }>;
  /** The other hosts' endpoints on cluster networks (the cluster agent's view), answered by name. */
  readonly remote?: () => readonly RemoteEndpoint[];
  /** Reads a file's text (the host's resolv.conf); undefined when it cannot be read. */
  readonly readFile: (path: string) => Promise<string | undefined>;
}

export function createDnsService(o: DnsServiceOptions): DaemonService {
  let upstreams: readonly Upstream[] = [];
  let version = 0;
  let records = 0;
  let failed: readonly string[] = [];
  let partialReloads = 0;
  let lastReloadMs = 0;
  const server = createDnsServer({
    log: o.log, port: o.port, upstreams: () => upstreams, randomId: () => randomInt(65_536),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    ...(o.maxInFlight !== undefined ? { maxInFlight: o.maxInFlight } : {}),
    ...(o.native?.addon !== undefined ? { native: o.native.addon } : {}),
  });
  const nativeNote = o.native?.note ?? 'not loaded: UDP answered in JS';
  // The records as last read, by id: a reload with changes re-reads only the records it names.
  let networks: readonly NetworkRecord[] = [];
  const endpoints = new Map<string, EndpointRecord>();
  const sandboxes = new Map<string, SandboxRecord>();
  let cni: readonly CniAttachmentRecord[] = [];

  async function readUpstreams(): Promise<void> {
    const src = o.upstreams;
    if (src.kind === 'fixed') upstreams = src.servers;
    else {
      const resolved = await o.readFile(src.resolvedPath);
      upstreams = hostUpstreams(parseResolvConf((await o.readFile(src.path)) ?? ''), resolved !== undefined ? parseResolvConf(resolved) : undefined);
    }
  }

  async function readAll(): Promise<void> {
    await readUpstreams();
    const [nets, eps, sbs, attachments] = await Promise.all([o.state.networks.list(), o.state.endpoints.list(), o.state.sandboxes.list(), o.cniAttachments?.()]);
    for (const err of attachments?.errors ?? []) o.log.warn('skipping an unreadable CNI attachment record', { err });
    networks = nets;
    endpoints.clear();
    for (const e of eps) endpoints.set(e.id, e);
    sandboxes.clear();
    for (const sb of sbs) sandboxes.set(sb.id, sb);
    cni = attachments?.records ?? [];
  }

  /** Re-reads one record into `into` (gone or unreadable: dropped, and an unreadable one reported). */
  async function reread<T>(into: Map<string, T>, id: string, get: (id: string) => Promise<T | undefined>): Promise<void> {
    const r = await get(id).catch((err: unknown) => {
      o.log.warn('skipping an unreadable record', { id, err: err instanceof Error ? err.message : String(err) });
      return undefined;
    });
    if (r === undefined) into.delete(id);
    else into.set(id, r);
  }

  async function readChanged(c: RecordChanges): Promise<void> {
    if (c.networks === true) networks = await o.state.networks.list();
    await Promise.all([
      ...(c.endpoints ?? []).map((id) => reread(endpoints, id, (x) => o.state.endpoints.get(x))),
      ...(c.sandboxes ?? []).map((id) => reread(sandboxes, id, (x) => o.state.sandboxes.get(x))),
    ]);
  }

  async function reload(changes?: RecordChanges): Promise<void> {
    const t0 = performance.now();
    if (changes === undefined) await readAll();
    else {
      partialReloads++;
      await readChanged(changes);
    }
    const inputs = dnsInputs(networks, [...endpoints.values()], [...sandboxes.values()], cni, o.remote?.() ?? []);
    const snap = buildSnapshot(++version, inputs.networks, inputs.endpoints);
    records = snap.records;
    failed = (await server.update(snap)).failed;
    lastReloadMs = Math.round((performance.now() - t0) * 100) / 100;
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
    status: () => ({ ...server.stats(), records, partialReloads, lastReloadMs, upstreams: upstreams.map((u) => `${u.host}:${u.port}`), failedListeners: failed, nativeFastPath: nativeNote }),
  };
}
