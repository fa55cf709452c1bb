/**
 * The daemon's Prometheus endpoint: HTTP on a TCP address (`--metrics-address`), GET /metrics
 * answered by the handler, 404 elsewhere, 405 for other methods.
 */
import { createServer } from 'node:http';
import { TsnetError } from '../core/errors.js';

export interface MetricsServer {
  readonly address: string;
  close(): Promise<void>;
}

/** "HOST:PORT" or "[V6]:PORT". */
export function parseHostPort(raw: string, field: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(raw);
  const port = Number(m?.[3]);
  if (!m || !(port > 0 && port < 65_536)) throw new TsnetError('INVALID_CONFIG', `${field}: expected HOST:PORT, got ${JSON.stringify(raw)}`, { details: { field, value: raw } });
  return { host: m[1] ?? m[2] ?? '', port };
}

export function serveMetrics(address: string, handler: () => Promise<{ readonly contentType: string; readonly body: string }>): Promise<MetricsServer> {
  const { host, port } = parseHostPort(address, 'metrics-address');
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    handler().then(
      (r) => res.writeHead(200, { 'content-type': r.contentType }).end(req.method === 'HEAD' ? undefined : r.body),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err instanceof Error ? err.message : String(err)}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new TsnetError('UNAVAILABLE', `metrics: cannot listen on ${address}: ${err.message}`, { cause: err })));
    server.listen(port, host, () => resolve({
      address,
      close: () => new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
    }));
  });
}
