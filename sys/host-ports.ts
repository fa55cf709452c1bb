/**
 * What the host's side of port publishing needs to know, read in the namespace playing host: the
 * sockets host processes listen on (one `ss` process), the kernel's ephemeral port range, and the
 * addresses configured on the host.
 */
import type { IpAddr, NetnsRef, Port, Proto } from '../core/net.js';
import { inNetns, run } from './exec.js';
import type { SysctlFor } from './netlink/api.js';
import type { HostPorts, Listener, PortRange } from './api.js';

export type { HostPorts, Listener, PortRange };




/** `ss -Hln -t -u -S` output → listeners. Lines of other shapes are ignored. */
export function parseSsListeners(out: string): Listener[] {
  const res: Listener[] = [];
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/);
    const proto = f[0] as Proto;
    if (f.length < 5 || (proto !== 'tcp' && proto !== 'udp' && proto !== 'sctp')) continue;
    const local = f[4] ?? '';
    const colon = local.lastIndexOf(':');
    const port = Number(local.slice(colon + 1));
    if (colon < 0 || !Number.isInteger(port) || port < 1 || port > 65535) continue;
    // "0.0.0.0", "127.0.0.53%lo", "[::]", "[fe80::1]%eth0", "[::ffff:127.0.0.1]", "*"
    let addr = local.slice(0, colon).replace(/%[^\]]*$/, '');
    if (addr.startsWith('[') && addr.endsWith(']')) addr = addr.slice(1, -1);
    addr = addr.replace(/%.*$/, '');
    if (addr.startsWith('::ffff:') && addr.includes('.')) addr = addr.slice('::ffff:'.length);
    res.push({ proto, ip: addr === '*' ? '*' : (addr as IpAddr), port: port as Port });
  }
  return res;
}

/** "32768\t60999" → the range. */
export function parsePortRange(raw: string): PortRange {
  const [a, b] = raw.trim().split(/\s+/).map(Number);
  if (a === undefined || b === undefined || !Number.isInteger(a) || !Number.isInteger(b) || a < 1 || b > 65535 || b < a) {
    throw new Error(`unexpected ip_local_port_range ${JSON.stringify(raw)}`);
  }
  return { start: a as Port, end: b as Port };
}

export function createHostPorts(ns: NetnsRef, sysctl: SysctlFor): HostPorts {
  return {
    async listeners() {
      const { stdout } = await run(inNetns(ns, ['ss', '-Hln', '-t', '-u', '-S']), { timeoutMs: 10_000 });
      return parseSsListeners(stdout);
    },
    async ephemeralRange() {
      return parsePortRange(await sysctl(ns).get('net.ipv4.ip_local_port_range'));
    },
  };
}
