/** An in-memory ContainerStore (tests, and embedders that need no persistence). Copies on the way in and out. */
import { TsnetError } from '../core/errors.js';
import type { ContainerStore } from './api.js';
import { parseContainerRecord, type ContainerRecord } from './spec.js';

export function createMemoryContainerStore(initial: readonly ContainerRecord[] = []): ContainerStore {
  const byId = new Map<string, ContainerRecord>();
  for (const r of initial) byId.set(r.id, parseContainerRecord(structuredClone(r)));
  const copy = (r: ContainerRecord): ContainerRecord => structuredClone(r);
  return {
    async insert(record) {
      const r = parseContainerRecord(copy(record));
      if (byId.has(r.id)) throw new TsnetError('ALREADY_EXISTS', `container id ${r.id} already exists`, { details: { field: 'id', value: r.id } });
      for (const other of byId.values()) {
        if (other.name === r.name) throw new TsnetError('ALREADY_EXISTS', `container name ${r.name} is already in use by ${other.id.slice(0, 12)}`, { details: { field: 'name', value: r.name } });
      }
      byId.set(r.id, r);
    },
    async update(record) {
      const r = parseContainerRecord(copy(record));
      const old = byId.get(r.id);
      if (old === undefined) throw new TsnetError('NOT_FOUND', `no such container: ${r.id}`, { details: { field: 'id', value: r.id } });
      if (old.name !== r.name) throw new TsnetError('INVALID_CONFIG', `container ${r.id}: the name cannot change`, { details: { field: 'name', value: r.name } });
      byId.set(r.id, r);
      return copy(old);
    },
    async get(id) {
      const r = byId.get(id);
      return r === undefined ? undefined : copy(r);
    },
    async byName(name) {
      const r = [...byId.values()].find((x) => x.name === name);
      return r === undefined ? undefined : copy(r);
    },
    async list(idPrefix) {
      return [...byId.values()].filter((r) => idPrefix === undefined || r.id.startsWith(idPrefix)).map(copy);
    },
    async delete(id) {
      byId.delete(id);
    },
    listSetAside: async () => [],
    nameHolder: async (name) => [...byId.values()].find((x) => x.name === name)?.id,
    discardSetAside: async () => undefined,
  };
}
