/**
 * The daemon's side of the CNI plugins' DNS records (cni-attachments.ts): their schema, and a reader
 * that validates them. Not imported by the plugins (zod stays out of their bundle).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import { isIpAddr, isPrefix, type IpAddr, type Prefix } from '../../core/net.js';
import { decodeRecord, parseRecordId, type RecordSpec } from './api.js';
import { CNI_ATTACHMENTS, cniAttachmentsDir, errno, type CniAttachmentRecord } from './cni-attachments.js';

const zIp = z.custom<IpAddr>(isIpAddr, 'expected an IP address');
const zPrefix = z.custom<Prefix>(isPrefix, 'expected a CIDR prefix');

export const CniAttachmentSchema: z.ZodType<CniAttachmentRecord> = z.strictObject({
  networkId: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,127}$/),
  network: z.string().min(1).max(256),
  gateways: z.array(zIp).min(1),
  subnets: z.array(zPrefix),
  containerId: z.string().min(1).max(256),
  ifName: z.string().min(1).max(15),
  addresses: z.array(zIp).min(1),
  names: z.array(z.string().min(1).max(253)).min(1),
});

/** The collection's spec, for the store (tests read the plugins' files through it). */
export const CNI_ATTACHMENTS_SPEC: RecordSpec<CniAttachmentRecord> = { ...CNI_ATTACHMENTS, schema: CniAttachmentSchema };
const SPEC = CNI_ATTACHMENTS_SPEC;

/**
 * The daemon's reader of the records, for every reload: a file is read and validated again only
 * when it changed (inode, mtime or size; writes replace files by rename, so a new record is a new
 * inode), so a reload costs a readdir and a stat per record (200 records: the full read took
 * ~60 ms, which an ADD waiting for the reload would pay). Unreadable files are reported, not read.
 */
export function createCniAttachmentReader(stateDir: string): () => Promise<{ readonly records: CniAttachmentRecord[]; readonly errors: readonly string[] }> {
  const dir = cniAttachmentsDir(stateDir);
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
