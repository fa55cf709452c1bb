/** ContainerStore over the embedded store (sys/store); ids and names unique across processes. */
import type { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import type { Store } from '../sys/store/api.js';
import type { ContainerStore } from './api.js';
import { ContainerRecordSchema, type ContainerRecord } from './spec.js';

export function createStoreContainerStore(store: Store): ContainerStore {
  const c = store.collection<ContainerRecord>({ name: 'containers', version: 1, schema: ContainerRecordSchema as unknown as z.ZodType<ContainerRecord> });
  const list = async (): Promise<ContainerRecord[]> => {
    const r = await c.list();
    if (r.errors.length > 0) throw new TsnetError('INTERNAL', `containers: ${r.errors.map((e) => e.message).join('; ')}`);
    return r.entries.map((e) => e.record);
  };
  return {
    insert: (record) =>
      store.withLock('containers/names', async () => {
        const clash = (await list()).find((x) => x.name === record.name || x.id === record.id);
        if (clash) {
          throw new TsnetError('ALREADY_EXISTS', clash.id === record.id ? `container id ${record.id} is already in use` : `the container name "${record.name}" is already in use by container ${clash.id.slice(0, 12)}`, { details: { field: 'name' } });
        }
        await c.create(record.id, record);
      }),
    async update(record) {
      if (!(await c.get(record.id))) throw new TsnetError('NOT_FOUND', `no such container: ${record.id}`);
      await c.put(record.id, record);
    },
    get: (id) => c.get(id),
    list,
    async delete(id) {
      await c.delete(id);
    },
  };
}
