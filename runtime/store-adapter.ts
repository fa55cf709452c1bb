/**
 * ContainerStore over the embedded store (sys/store); ids and names unique across processes.
 *
 * Names are an index of create-exclusive reservations (`container-names/NAME` holds the id), so
 * neither the uniqueness check of `insert` nor a lookup by name reads every record: with 1,000
 * containers, listing them cost each `run` ~40 ms. The index is kept under the short
 * `containers/names` lock, the only place names are added; a reservation whose record is gone (a
 * crash between the two steps of a removal) is taken over. Records written before the index
 * existed are indexed once, by the first insert that finds no index marker.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import type { Store } from '../sys/store/api.js';
import type { ContainerStore } from './api.js';
import { ContainerRecordSchema, type ContainerRecord } from './spec.js';

const NAMES_LOCK = 'containers/names';
/** A name as a reservation key (keys are at most 200 characters; names up to 253). */
const keyOf = (name: string): string => (name.length <= 200 ? name : `${name.slice(0, 120)}@${createHash('sha256').update(name).digest('hex')}`);
const INDEX_MARKER = 'container-names';

export function createStoreContainerStore(store: Store, opts: { readonly onUnreadable?: (err: TsnetError) => void } = {}): ContainerStore {
  const report = opts.onUnreadable ?? (() => undefined);
  const c = store.collection<ContainerRecord>({ name: 'containers', version: 1, schema: ContainerRecordSchema as unknown as z.ZodType<ContainerRecord> });
  const names = store.reservations('container-names');
  const meta = store.collection<{ indexed: true }>({ name: 'indexes', version: 1, schema: z.strictObject({ indexed: z.literal(true) }) });
  // A record that cannot be read is set aside and reported, never a reason to fail on the others.
  const list = async (idPrefix?: string): Promise<ContainerRecord[]> => {
    const r = await c.list({ setAside: true, ...(idPrefix === undefined ? {} : { prefix: idPrefix }) });
    if (r.errors.length > 0) throw new TsnetError(r.errors[0]?.code ?? 'INTERNAL', `containers: ${r.errors.map((e) => e.message).join('; ')}`, { cause: r.errors[0] });
    for (const u of r.unreadable ?? []) report(u);
    return r.entries.map((e) => e.record);
  };
  /** The index for records older than it (once per state directory); the caller holds NAMES_LOCK. */
  const ensureIndex = async (): Promise<void> => {
    if ((await meta.get(INDEX_MARKER)) !== undefined) return;
    for (const r of await list()) {
      if (!(await names.reserve(keyOf(r.name), r.id)) && (await names.owner(keyOf(r.name))) !== r.id) {
        throw new TsnetError('INTERNAL', `containers: two records are named ${r.name}`);
      }
    }
    await meta.put(INDEX_MARKER, { indexed: true });
  };
  const inUse = (record: ContainerRecord, holder: string): TsnetError =>
    new TsnetError('ALREADY_EXISTS', `the container name "${record.name}" is already in use by container ${holder.slice(0, 12)}`, { details: { field: 'name' } });
  return {
    insert: (record) =>
      store.withLock(NAMES_LOCK, async () => {
        await ensureIndex();
        if (!(await names.reserve(keyOf(record.name), record.id))) {
          const holder = (await names.owner(keyOf(record.name))) ?? '';
          if (holder === record.id) throw new TsnetError('ALREADY_EXISTS', `container id ${record.id} is already in use`, { details: { field: 'name' } });
          if ((await c.get(holder).catch(() => undefined))?.name === record.name) throw inUse(record, holder);
          // Its record is gone: a removal that did not get to release the name.
          await names.release(keyOf(record.name), holder);
          if (!(await names.reserve(keyOf(record.name), record.id))) throw inUse(record, (await names.owner(keyOf(record.name))) ?? '');
        }
        try {
          await c.create(record.id, record);
        } catch (err) {
          await names.release(keyOf(record.name), record.id);
          if (err instanceof TsnetError && err.code === 'ALREADY_EXISTS') throw new TsnetError('ALREADY_EXISTS', `container id ${record.id} is already in use`, { details: { field: 'name' } });
          throw err;
        }
      }),
    async update(record) {
      let was: ContainerRecord | undefined;
      await c.upsert(record.id, (cur) => {
        if (cur === undefined) throw new TsnetError('NOT_FOUND', `no such container: ${record.id}`);
        was = cur;
        return record;
      });
      return was as ContainerRecord;
    },
    get: (id) => c.get(id, { setAside: true }),
    async byName(name) {
      const id = await names.owner(keyOf(name)).catch(() => undefined);
      if (id !== undefined && id !== '') {
        const r = await c.get(id, { setAside: true });
        if (r?.name === name) return r;
      }
      // Records older than the index (or a name not valid as a key) are found the slow way.
      if ((await meta.get(INDEX_MARKER)) !== undefined) return undefined;
      return (await list()).find((r) => r.name === name);
    },
    list,
    async delete(id) {
      const r = await c.get(id).catch(() => undefined);
      await c.delete(id);
      if (r !== undefined) await names.release(keyOf(r.name), id);
    },
    listSetAside: () => c.listSetAside(),
    async nameHolder(name) {
      return (await names.owner(keyOf(name)).catch(() => undefined)) || undefined;
    },
    async discardSetAside(id) {
      await c.discardSetAside(id);
      // Its name, if the index has one for it (one listing of the index: a rare path).
      await names.releaseOwner(id);
    },
  };
}
