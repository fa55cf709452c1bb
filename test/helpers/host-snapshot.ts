/** What tsnet may leave in an isolated host, to compare before and after: links, addresses, routes, tsnet's nft lines, namespaces, records, reservations. */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { IsolatedHost } from './isolated-host.js';

/** What tsnet may leave in the host: links, addresses, routes, tsnet's nft lines, namespaces, records. */
export async function snapshot(host: IsolatedHost): Promise<Record<string, string[]>> {
  const j = async (...a: string[]): Promise<unknown> => JSON.parse((await host.exec(['ip', '-json', ...a])).stdout);
  const links = ((await j('link', 'show')) as { ifname: string }[]).map((l) => l.ifname).sort();
  const addrs = ((await j('addr', 'show')) as { ifname: string; addr_info: { local: string; prefixlen: number }[] }[])
    .flatMap((l) => l.addr_info.map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`)).filter((a) => !a.includes(' fe80::')).sort();
  const routes = ((await j('route', 'show', 'table', 'all')) as { dst: string; dev?: string }[]).map((r) => `${r.dst} ${r.dev ?? ''}`).filter((r) => !r.includes('fe80::') && !r.startsWith('ff00::')).sort();
  const nft = (await host.exec(['nft', 'list', 'ruleset'])).stdout.split('\n').map((l) => l.trim()).filter((l) => /elements|saddr|daddr|oifname|iifname|jump|goto/.test(l)).sort();
  const netns = (await readdir(join(host.runDir, 'netns')).catch(() => [])).sort();
  const records: string[] = [];
  for (const c of ['endpoints', 'sandboxes', 'containers']) {
    const files = await readdir(join(host.stateDir, c)).catch(() => []);
    records.push(...files.filter((f) => f.endsWith('.json')).map((f) => `${c}/${f}`));
  }
  const reservations = await readdir(join(host.stateDir, 'reservations'), { recursive: true }).catch(() => []);
  return { links, addrs, routes, nft, netns, records, reservations: reservations.filter((r) => r.includes('/')).sort() };
}

