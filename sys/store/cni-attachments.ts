/**
 * The records CNI plugins leave for tsnet's DNS (issue #6, `aliases`): one record per attachment
 * registered with the embedded resolver, in the embedded store's collection "cni-attachments"
 * (STATE/records/cni-attachments/ID.json, written atomically like every record). tsnet-bridge
 * writes one on ADD and removes it on DEL and GC; the daemon's DNS service reads them all on
 * reload and cnm/dns.ts merges them with the CNM records into the resolver's inputs.
 *
 * A record carries what the resolver needs of its network (id, name, gateways, subnets), so no
 * network record is needed: a CNI network exists as long as one attachment on it is registered.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { parseIpAddr, parsePrefix, type IpAddr, type Prefix } from '../../core/net.js';
import type { Collection, Store } from './api.js';

const ok = (fn: () => unknown): boolean => {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
};
const zIp = z.custom<IpAddr>((v) => typeof v === 'string' && ok(() => parseIpAddr(v)), 'expected an IP address');
const zPrefix = z.custom<Prefix>((v) => typeof v === 'string' && ok(() => parsePrefix(v)), 'expected a CIDR prefix');

export const CniAttachmentSchema = z.strictObject({
  /** The DNS network's id (`cni-<network name>`, as the firewall owner of the network). */
  networkId: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,127}$/),
  /** The CNI network name (`name` of the configuration). */
  network: z.string().min(1).max(256),
  /** The bridge's gateway addresses: where the resolver listens for this network. */
  gateways: z.array(zIp).min(1),
  subnets: z.array(zPrefix),
  containerId: z.string().min(1).max(256),
  ifName: z.string().min(1).max(15),
  /** The container's addresses on the network. */
  addresses: z.array(zIp).min(1),
  /** Names answered with `addresses`, the canonical (PTR) one first. */
  names: z.array(z.string().min(1).max(253)).min(1),
});
export type CniAttachmentRecord = z.infer<typeof CniAttachmentSchema>;

/** The collection of attachment records in `store` (ids: the attachment's endpoint id, plugins/cni/names.ts). */
export function cniAttachments(store: Store): Collection<CniAttachmentRecord> {
  return store.collection({ name: 'cni-attachments', version: 1, schema: CniAttachmentSchema });
}

/** The attachment records of tsnet's DNS and the daemon that serves them, as a CNI plugin sees them. */
export interface CniDnsRegistry {
  put(id: string, rec: CniAttachmentRecord): Promise<void>;
  /** true if the record existed. */
  remove(id: string): Promise<boolean>;
  /** Ids of the records whose id starts with `prefix`. */
  ids(prefix: string): Promise<string[]>;
  /**
   * Asks a running daemon to reload, without waiting for it to finish (its reload reads every
   * record); false if none runs. `timeoutMs` bounds the wait for the daemon to accept.
   */
  notify(timeoutMs: number): Promise<boolean>;
}

/**
 * The DNS registry a CNI plugin uses: records in the fs store of `stateDir`, opened on first use, and
 * the daemon of `runDir`. `remove` and `ids` never create the state directory: a host where tsnet's
 * DNS was never used only pays one stat (DEL and GC run them for every attachment).
 */
export function createCniDnsRegistry(o: {
  readonly stateDir: string;
  readonly runDir: string;
  readonly openStore: (dir: string) => Promise<Store>;
  readonly notify: (socket: string, op: string, timeoutMs: number) => Promise<boolean>;
  readonly socket: string;
}): CniDnsRegistry {
  let col: Promise<Collection<CniAttachmentRecord>> | undefined;
  const open = (): Promise<Collection<CniAttachmentRecord>> => (col ??= o.openStore(o.stateDir).then(cniAttachments));
  // The fs store's layout (fs.ts): STATE/records/COLLECTION/.
  const exists = (): Promise<boolean> => stat(join(o.stateDir, 'records', 'cni-attachments')).then(() => true, () => false);
  return {
    async put(id, rec) {
      await (await open()).put(id, rec);
    },
    async remove(id) {
      return (await exists()) ? (await open()).delete(id) : false;
    },
    async ids(prefix) {
      if (!(await exists())) return [];
      return (await (await open()).list({ prefix })).entries.map((e) => e.id);
    },
    notify: (timeoutMs) => o.notify(o.socket, 'reload', timeoutMs),
  };
}
