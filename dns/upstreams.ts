/** Where the resolver forwards (pure): `--upstream` lists and the host's resolv.conf files. */
import { TsnetError } from '../core/errors.js';
import { parseIpAddr } from '../core/net.js';
import { upstreamServers, type ResolvConf } from './resolv-conf.js';
import type { Upstream } from './server.js';

/** "IP", "IP:PORT", "[IPv6]:PORT" or "IPv6", comma-separated. */
export function parseUpstreams(raw: string, field = 'upstream'): Upstream[] {
  return raw.split(',').map((s) => s.trim()).filter((s) => s !== '').map((item) => {
    const bad = (why: string): TsnetError => new TsnetError('INVALID_CONFIG', `${field}: ${JSON.stringify(item)}: ${why}`, { details: { field, value: item } });
    let host = item;
    let port = '53';
    const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(item);
    if (v6) {
      host = v6[1] ?? '';
      port = v6[2] ?? '53';
    } else if ((item.match(/:/g) ?? []).length === 1) {
      [host, port] = item.split(':') as [string, string];
    }
    const p = /^\d{1,5}$/.test(port) ? Number(port) : NaN;
    if (!(p >= 1 && p <= 65_535)) throw bad('port must be 1-65535');
    try {
      return { host: parseIpAddr(host, field), port: p };
    } catch {
      throw bad('expected IP, IP:PORT or [IPv6]:PORT');
    }
  });
}

/** The host's upstreams (loopback stubs replaced by systemd-resolved's real servers), port 53. */
export function hostUpstreams(host: ResolvConf, resolved: ResolvConf | undefined): Upstream[] {
  return upstreamServers(host, resolved).map((a) => ({ host: a, port: 53 }));
}
