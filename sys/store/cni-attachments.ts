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
import { TsnetError, fsError } from '../../core/errors.js';
import { fixedTempName, writeAtomic } from './atomic.js';
import type { CniAttachmentRecord, CniDnsRegistry } from './api.js';

export type { CniAttachmentRecord, CniDnsRegistry };


export const CNI_ATTACHMENTS = { name: 'cni-attachments', version: 1 } as const;
export const cniAttachmentsDir = (stateDir: string): string => join(stateDir, 'records', CNI_ATTACHMENTS.name);
export const errno = (err: unknown): unknown => (typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined);
/** The store's record ids (api.ts), checked before a path is built. */
const RECORD_ID = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$/;
function recordId(id: string): string {
  if (!RECORD_ID.test(id)) throw new TsnetError('INVALID_CONFIG', `record id: invalid value ${JSON.stringify(id)}`, { details: { field: 'record id', value: id } });
  return id;
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
        // One writer per attachment at a time (the runtime serializes its ADD and DEL): a fixed
        // temp name, which DEL removes too when a killed writer left it.
        await writeAtomic(dir, `${id}.json`, text, { fixedTemp: true });
      } catch (err) {
        throw fsError(`write ${file(id)}`, err, 'tsnetStateDir');
      }
    },
    async remove(id) {
      const [rec] = await Promise.all([
        unlink(file(id)).then(() => true, (err: unknown) => {
          if (errno(err) === 'ENOENT') return false;
          throw fsError(`remove ${file(id)}`, err);
        }),
        unlink(join(dir, fixedTempName(`${recordId(id)}.json`))).catch(() => undefined),
      ]);
      return rec;
    },
    async removeStaleTemps(keep) {
      const names = await readdir(dir).catch(() => [] as string[]);
      const stale = names.filter((n) => n.startsWith('.') && /\.json\.tmp(-\d+-[0-9a-f]+)?$/.test(n) && !keep(n.slice(1).replace(/\.json\.tmp.*$/, '')));
      for (const n of stale) await unlink(join(dir, n)).catch(() => undefined);
      return stale;
    },
    async ids(prefix) {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (errno(err) === 'ENOENT') return [];
        throw fsError(`list ${dir}`, err, 'tsnetStateDir');
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
