/** host-local's on-disk layout in memory (sys/store/host-local.ts's contract), for unit tests of CNI IPAM callers. */
import type { HostLocalReservation, HostLocalStore } from '../../sys/store/api.js';

export interface MemoryHostLocal extends HostLocalStore {
  /** file name → content, as the directory would hold them (reservations and hints). */
  readonly files: Map<string, string>;
}

export function memoryHostLocal(): MemoryHostLocal {
  const files = new Map<string, string>();
  const parse = (ip: string, text: string): HostLocalReservation => {
    const [cid, ifn] = text.split('\r\n');
    return { ip, containerId: cid ?? '', ifName: ifn };
  };
  return {
    dir: '/mem',
    files,
    withLock: (fn) => fn(),
    async reserve(ip, cid, ifn) {
      if (files.has(ip)) return false;
      files.set(ip, `${cid.trim()}\r\n${ifn}`);
      return true;
    },
    lastReserved: async (rid) => files.get(`last_reserved_ip.${rid}`),
    setLastReserved: async (rid, ip) => void files.set(`last_reserved_ip.${rid}`, ip),
    get: async (ip) => (files.has(ip) ? parse(ip, files.get(ip) ?? '') : undefined),
    release: async (ip) => void files.delete(ip),
    list: async () => [...files].filter(([k]) => !k.startsWith('last_')).map(([k, v]) => parse(k, v)),
    removeStaleTemps: async () => [],
  };
}
