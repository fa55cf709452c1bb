/**
 * The daemon's Prometheus metrics (`tsnet daemon --metrics-address HOST:PORT`, off by default),
 * through prom-client, Node's standard Prometheus client (loaded only when metrics are on: ~180 ms
 * on the reference machine, paid once at daemon start). At each scrape it reads the counters the
 * other services keep (DNS queries and answers, CNI requests, firewall repairs) and counts the
 * records (containers by state, networks by driver).
 */
import type { Logger } from '../core/log.js';
import type { DaemonService } from '../sys/api.js';

export interface MetricsDeps {
  readonly address: string;
  readonly log: Logger;
  /** The daemon's other services, read at scrape time. */
  readonly services: () => readonly DaemonService[];
  readonly containers: () => Promise<readonly { readonly status: string }[]>;
  readonly networks: () => Promise<readonly { readonly driver: string }[]>;
  readonly serve: (address: string, handler: () => Promise<{ contentType: string; body: string }>) => Promise<{ close(): Promise<void> }>;
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

type Status = Record<string, unknown>;
/** The one metric of each service counter: name, help, kind, and how to read it from the status. */
const COUNTERS: readonly { name: string; help: string; service: string; read: (s: Status) => number }[] = [
  { name: 'tsnet_dns_queries_total', help: 'DNS queries received by the embedded resolver (JS path)', service: 'dns', read: (s) => num(s['queries']) },
  { name: 'tsnet_dns_answers_cached_total', help: 'DNS answers served from the resolver\'s cache', service: 'dns', read: (s) => num(s['cacheHits']) },
  { name: 'tsnet_dns_forwarded_total', help: 'DNS queries forwarded upstream', service: 'dns', read: (s) => num(s['forwarded']) },
  { name: 'tsnet_dns_servfail_total', help: 'DNS queries answered SERVFAIL', service: 'dns', read: (s) => num(s['servfail']) },
  { name: 'tsnet_dns_dropped_total', help: 'DNS queries dropped (not from a container of the network, malformed)', service: 'dns', read: (s) => num(s['dropped']) },
  { name: 'tsnet_dns_native_answers_total', help: 'DNS answers replayed by the native UDP fast path', service: 'dns', read: (s) => num((s['native'] as Status | undefined)?.['hits']) },
  { name: 'tsnet_cni_requests_total', help: 'CNI requests served by the daemon', service: 'cni', read: (s) => num(s['requests']) },
  { name: 'tsnet_cni_failed_total', help: 'CNI requests that failed', service: 'cni', read: (s) => num(s['failed']) },
  { name: 'tsnet_firewall_checks_total', help: 'Ruleset checks by the firewall watcher', service: 'firewall', read: (s) => num(s['checks']) },
  { name: 'tsnet_firewall_repairs_total', help: 'Networks and published endpoints whose rules the watcher restored', service: 'firewall', read: (s) => num(s['restoredNetworks']) + num(s['restoredEndpoints']) },
  { name: 'tsnet_firewall_failures_total', help: 'Failed firewall restores', service: 'firewall', read: (s) => num(s['failures']) },
];

export function createMetricsService(d: MetricsDeps): DaemonService {
  let server: { close(): Promise<void> } | undefined;
  let scrapes = 0;
  return {
    name: 'metrics',
    async start() {
      const prom = await import('prom-client');
      const registry = new prom.Registry();
      const statusOf = (name: string): Status => {
        const s = d.services().find((x) => x.name === name);
        return s === undefined ? {} : s.status();
      };
      for (const c of COUNTERS) {
        // Counters the services keep: exposed as they are at scrape time.
        new prom.Counter({ name: c.name, help: c.help, registers: [registry], collect(this: { reset(): void; inc(n: number): void }) {
          this.reset();
          this.inc(c.read(statusOf(c.service)));
        } });
      }
      new prom.Gauge({ name: 'tsnet_containers', help: 'Containers by state', labelNames: ['state'], registers: [registry], async collect(this: { reset(): void; set(l: Record<string, string>, v: number): void }) {
        this.reset();
        const by = new Map<string, number>([['running', 0], ['created', 0], ['exited', 0]]);
        for (const c of await d.containers()) by.set(c.status, (by.get(c.status) ?? 0) + 1);
        for (const [state, n] of by) this.set({ state }, n);
      } });
      new prom.Gauge({ name: 'tsnet_networks', help: 'Networks by driver', labelNames: ['driver'], registers: [registry], async collect(this: { reset(): void; set(l: Record<string, string>, v: number): void }) {
        this.reset();
        const by = new Map<string, number>();
        for (const n of await d.networks()) by.set(n.driver, (by.get(n.driver) ?? 0) + 1);
        for (const [driver, n] of by) this.set({ driver }, n);
      } });
      server = await d.serve(d.address, async () => {
        scrapes++;
        return { contentType: registry.contentType, body: await registry.metrics() };
      });
      d.log.info('metrics served', { address: d.address });
    },
    async reload() {
      // Nothing cached: every scrape reads the services and the records.
    },
    async stop() {
      await server?.close();
      server = undefined;
    },
    status: () => ({ address: d.address, scrapes }),
  };
}
