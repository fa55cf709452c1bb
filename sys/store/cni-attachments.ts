/**
 * The records CNI plugins leave for tsnet's DNS (issue #6, `aliases`): one record per attachment
 * registered with the embedded resolver, in the embedded store's collection "cni-attachments"
 * (STATE/records/cni-attachments/ID.json, written atomically like every record). tsnet-bridge
 * writes one on ADD and removes it on DEL and GC; the daemon's DNS service reads them all on
 * reload and cnm/dns.ts merges them with the CNM records into the resolver's inputs.
 *
 * The daemon reads them with `createCniAttachmentReader` (only changed files are read again), so an
 * ADD can wait for the daemon's reload without growing with the number of containers.
 *
 * A record carries what the resolver needs of its network (id, name, gateways, subnets), so no
 * network record is needed: a CNI network exists as long as one attachment on it is registered.
 */
import { mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import { isIpAddr, isPrefix, type IpAddr, type Prefix } from '../../core/net.js';
import { decodeRecord, encodeRecord, parseRecordId } from './api.js';
import { writeAtomic } from './fs.js';

const zIp = z.custom<IpAddr>(isIpAddr, 'expected an IP address');
const zPrefix = z.custom<Prefix>(isPrefix, 'expected a CIDR prefix');

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

const errno = (err: unknown): unknown => (typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined);
const SPEC = { name: 'cni-attachments', version: 1, schema: CniAttachmentSchema } as const;
const dirOf = (stateDir: string): string => join(stateDir, 'records', SPEC.name);

/**
 * The daemon's reader of the records, for every reload: a file is read and validated again only
 * when it changed (inode, mtime or size; writes replace files by rename, so a new record is a new
 * inode), so a reload costs a readdir and a stat per record (200 records: the full read took
 * ~60 ms, which an ADD waiting for the reload would pay). Unreadable files are reported, not read.
 */
export function createCniAttachmentReader(stateDir: string): () => Promise<{ readonly records: CniAttachmentRecord[]; readonly errors: readonly string[] }> {
  const dir = dirOf(stateDir);
  const cache = new Map<string, { readonly key: string; readonly record: CniAttachmentRecord }>();
  return async () => {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => !n.startsWith('.') && n.endsWith('.json')).sort();
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw new TsnetError('UNAVAILABLE', `list ${dir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      names = [];
    }
    const seen = new Set(names);
    for (const name of cache.keys()) if (!seen.has(name)) cache.delete(name);
    // All at once (libuv's pool runs them in parallel): one by one, 200 stats took ~20 ms.
    const results = await Promise.all(names.map(async (name): Promise<CniAttachmentRecord | string | undefined> => {
      const path = join(dir, name);
      try {
        const st = await stat(path);
        const key = `${st.ino}:${st.mtimeMs}:${st.size}`;
        let hit = cache.get(name);
        if (hit?.key !== key) {
          hit = { key, record: decodeRecord(SPEC, parseRecordId(name.slice(0, -'.json'.length)), await readFile(path, 'utf8'), path) };
          cache.set(name, hit);
        }
        return hit.record;
      } catch (err) {
        cache.delete(name);
        if (errno(err) === 'ENOENT') return undefined; // removed meanwhile
        return err instanceof Error ? err.message : String(err);
      }
    }));
    const records = results.filter((r): r is CniAttachmentRecord => typeof r === 'object');
    const errors = results.filter((r): r is string => typeof r === 'string');
    return { records, errors };
  };
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
 * The DNS registry a CNI plugin uses: the files of the collection in `stateDir`, in the store's
 * layout and record format (fs.ts: STATE/records/cni-attachments/ID.json, written atomically), but
 * without the store's per-record lock: each record has one writer at a time (the runtime serializes
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
  const dir = dirOf(o.stateDir);
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
