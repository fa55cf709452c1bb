/**
 * The records CNI plugins leave for tsnet's DNS (issue #6, `aliases`): one record per attachment
 * registered with the embedded resolver, in the embedded store's layout and record format
 * (STATE/records/cni-attachments/ID.json, `{"schemaVersion":1,"id":ID,"record":{...}}`, written
 * atomically). tsnet-bridge writes one on ADD and removes it on DEL and GC (this module: no zod,
 * the plugin bundle stays small); the daemon's DNS service reads and validates them on reload
 * (cni-attachments-reader.ts) and cnm/dns.ts merges them with the CNM records.
 *
 * A record carries what the resolver needs of its network (id, name, gateways, subnets), so no
 * network record is needed: a CNI network exists as long as one attachment on it is registered.
 */
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError } from '../../core/errors.js';
import type { IpAddr, Prefix } from '../../core/net.js';
import { writeAtomic } from './atomic.js';

export interface CniAttachmentRecord {
  /** The DNS network's id (`cni-<network name>`, as the firewall owner of the network). */
  readonly networkId: string;
  /** The CNI network name (`name` of the configuration). */
  readonly network: string;
  /** The bridge's gateway addresses: where the resolver listens for this network. */
  readonly gateways: readonly IpAddr[];
  readonly subnets: readonly Prefix[];
  readonly containerId: string;
  readonly ifName: string;
  /** The container's addresses on the network. */
  readonly addresses: readonly IpAddr[];
  /** Names answered with `addresses`, the canonical (PTR) one first. */
  readonly names: readonly string[];
}

export const CNI_ATTACHMENTS = { name: 'cni-attachments', version: 1 } as const;
export const cniAttachmentsDir = (stateDir: string): string => join(stateDir, 'records', CNI_ATTACHMENTS.name);
export const errno = (err: unknown): unknown => (typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined);
/** The store's record ids (api.ts), checked before a path is built. */
const RECORD_ID = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$/;
function recordId(id: string): string {
  if (!RECORD_ID.test(id)) throw new TsnetError('INVALID_CONFIG', `record id: invalid value ${JSON.stringify(id)}`, { details: { field: 'record id', value: id } });
  return id;
}

/** The attachment records of tsnet's DNS and the daemon that serves them, as a CNI plugin sees them. */
export interface CniDnsRegistry {
  put(id: string, rec: CniAttachmentRecord): Promise<void>;
  /** true if the record existed. */
  remove(id: string): Promise<boolean>;
  /** Ids of the records whose id starts with `prefix`. */
  ids(prefix: string): Promise<string[]>;
  /**
   * Makes a running daemon reload and waits for its ack (at most `timeoutMs`: UNAVAILABLE beyond);
   * false if none runs.
   */
  reload(timeoutMs: number): Promise<boolean>;
}


/**
 * The DNS registry a CNI plugin uses: the files of the collection in `stateDir`, written as the
 * store writes records (atomic.ts) but without the store's per-record lock: each record has one writer at a time (the runtime serializes
 * ADD and DEL of an attachment), and a plugin process would pay for setting the lock up (measured
 * ~6-20 ms cold). `remove` and `ids` never create the state directory: a host where tsnet's DNS was
 * never used pays one failed unlink or readdir (DEL and GC run them for every attachment).
 */
export function createCniDnsRegistry(o: {
  readonly stateDir: string;
  /** sys/daemon-client.ts daemonCall. */
  readonly call: (socket: string, op: string, timeoutMs: number) => Promise<unknown>;
  readonly socket: string;
}): CniDnsRegistry {
  const dir = cniAttachmentsDir(o.stateDir);
  const file = (id: string): string => join(dir, `${recordId(id)}.json`);
  return {
    async put(id, rec) {
      const text = `${JSON.stringify({ schemaVersion: CNI_ATTACHMENTS.version, id: recordId(id), record: rec })}\n`;
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
    async reload(timeoutMs) {
      const r = await o.call(o.socket, 'reload', timeoutMs);
      if (r === undefined) return false;
      if (typeof r !== 'object' || r === null || (r as { ok?: unknown }).ok !== true) {
        throw new TsnetError('UNAVAILABLE', `daemon reload failed: ${JSON.stringify(r).slice(0, 200)}`);
      }
      return true;
    },
  };
}
