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
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import { parseIpAddr, parsePrefix, type IpAddr, type Prefix } from '../../core/net.js';
import { encodeRecord, parseRecordId, type Collection, type Store } from './api.js';
import { writeAtomic } from './fs.js';

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

/**
 * Validates one sample record, so that zod compiles the schema's parser now: a CNI plugin calls this
 * while its V8 startup snapshot is built, and each ADD then saves the ~6 ms of that first parse.
 */
export function warmCniAttachmentSchema(): void {
  CniAttachmentSchema.parse({ networkId: 'cni-x', network: 'x', gateways: ['10.0.0.1'], subnets: ['10.0.0.0/24'], containerId: 'x', ifName: 'eth0', addresses: ['10.0.0.2'], names: ['x'] });
}

const SPEC = { name: 'cni-attachments', version: 1, schema: CniAttachmentSchema } as const;

/** The collection of attachment records in `store` (ids: the attachment's endpoint id, plugins/cni/names.ts). */
export function cniAttachments(store: Store): Collection<CniAttachmentRecord> {
  return store.collection(SPEC);
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

const errno = (err: unknown): unknown => (typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined);

/**
 * The DNS registry a CNI plugin uses: the files of the collection in `stateDir`, in the store's
 * layout and record format (fs.ts: STATE/records/cni-attachments/ID.json, written atomically), but
 * without the store's per-record lock: each record has one writer at a time (the runtime serializes
 * ADD and DEL of an attachment), and a plugin process would pay for setting the lock up (measured
 * ~6-20 ms cold). `remove` and `ids` never create the state directory: a host where tsnet's DNS was
 * never used pays one failed unlink or readdir (DEL and GC run them for every attachment).
 */
export function createCniDnsRegistry(o: {
  readonly stateDir: string;
  readonly notify: (socket: string, op: string, timeoutMs: number) => Promise<boolean>;
  readonly socket: string;
}): CniDnsRegistry {
  const dir = join(o.stateDir, 'records', SPEC.name);
  const file = (id: string): string => join(dir, `${parseRecordId(id)}.json`);
  return {
    async put(id, rec) {
      const { text } = encodeRecord(SPEC, parseRecordId(id), rec);
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await writeAtomic(dir, `${id}.json`, text);
      } catch (err) {
        throw new TsnetError('UNAVAILABLE', `write ${file(id)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    },
    async remove(id) {
      try {
        await unlink(file(id));
        return true;
      } catch (err) {
        if (errno(err) === 'ENOENT') return false;
        throw new TsnetError('UNAVAILABLE', `remove ${file(id)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    },
    async ids(prefix) {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (errno(err) === 'ENOENT') return [];
        throw new TsnetError('UNAVAILABLE', `list ${dir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      return names.filter((n) => n.endsWith('.json') && !n.startsWith('.') && n.startsWith(prefix)).map((n) => n.slice(0, -'.json'.length)).sort();
    },
    notify: (timeoutMs) => o.notify(o.socket, 'reload', timeoutMs),
  };
}
