/** A container's /etc/hosts, in Docker's layout (pure). */
import type { IpAddr } from '../core/net.js';

export interface HostEntry {
  readonly ip: IpAddr;
  readonly names: readonly string[];
}

const BASE = [
  '127.0.0.1\tlocalhost',
  '::1\tlocalhost ip6-localhost ip6-loopback',
  'fe00::\tip6-localnet',
  'ff00::\tip6-mcastprefix',
  'ff02::1\tip6-allnodes',
  'ff02::2\tip6-allrouters',
];

/**
 * `extra` are `--add-host` entries; `self` are the container's own addresses with its hostname (and
 * name/aliases), written last as Docker does.
 */
export function hostsFile(opts: { readonly extra?: readonly HostEntry[]; readonly self: readonly HostEntry[]; readonly ipv6?: boolean }): string {
  const lines = opts.ipv6 === false ? BASE.filter((l) => !l.includes(':')) : [...BASE];
  for (const e of [...(opts.extra ?? []), ...opts.self]) {
    if (e.names.length > 0) lines.push(`${e.ip}\t${[...new Set(e.names)].join(' ')}`);
  }
  return `${lines.join('\n')}\n`;
}
