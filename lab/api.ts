/**
 * What the lab layer needs (the network model's controller, the runtime, a records port for lab
 * records, locks, sysctls, the kernel's netem support) and the record it keeps per lab. The engine
 * (engine/engine.ts) wires real implementations; tests wire the same over a test host.
 */
import { z } from 'zod';
import type { Controller } from '../cnm/controller.js';
import type { Logger } from '../core/log.js';
import type { Runtime } from '../runtime/api.js';
import type { SysctlFor } from '../sys/netlink/api.js';
import { LabFileSchema } from './schema.js';

/**
 * One lab's record, written before `up` touches anything: `owned` names every object the lab may
 * have made (the union of what ran and what the new file wants), so `down` removes all of them,
 * and nothing else, also after a crash in the middle of `up`.
 */
export const LabRecordSchema = z.strictObject({
  schemaVersion: z.literal(1),
  name: z.string(),
  created: z.string(),
  updated: z.string(),
  /** "applying" while an `up` runs (or after it crashed); "ready" once the lab is what `spec` says. */
  status: z.enum(['applying', 'ready']),
  /** The file it came from, when known (for `down`/`inspect` without -f). */
  file: z.string().optional(),
  /** The file being (or last) applied, as parsed. */
  spec: LabFileSchema,
  /** While applying: the last file that was fully up (what a failed `up` rolls back to); null for a new lab. */
  previous: LabFileSchema.nullable(),
  owned: z.strictObject({
    containers: z.array(z.string()),
    networks: z.array(z.string()),
    switches: z.array(z.string()),
    links: z.array(z.string()),
  }),
});
export type LabRecord = z.infer<typeof LabRecordSchema>;
export type Owned = LabRecord['owned'];

export interface LabStore {
  get(name: string): Promise<LabRecord | undefined>;
  put(rec: LabRecord): Promise<void>;
  /** Succeeds if there is none. */
  delete(name: string): Promise<void>;
  list(): Promise<LabRecord[]>;
}

/** What `up` reports as it goes (the CLI draws it). */
export type LabProgress =
  | { readonly kind: 'plan'; readonly steps: readonly string[]; readonly totals: Readonly<Record<ProgressWhat, number>> }
  | { readonly kind: 'step'; readonly what: ProgressWhat; readonly name: string; readonly ok: boolean; readonly ms: number }
  | { readonly kind: 'rollback'; readonly reason: string };
export type ProgressWhat = 'remove' | 'network' | 'bridge' | 'node' | 'link' | 'exec' | 'impair';

export interface LabDeps {
  readonly controller: Controller;
  readonly runtime: Runtime;
  readonly labs: LabStore;
  /** A cross-process lock, released if the holder dies. */
  readonly withLock: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  /** Finishes or undoes what a crashed command left (containers, sandboxes, endpoints, links). */
  readonly reconcile: () => Promise<void>;
  readonly sysctl: SysctlFor;
  /** Whether the kernel has sch_netem (asked once per process by the engine). */
  readonly netemAvailable: () => Promise<boolean>;
  readonly randomHex: (bytes: number) => string;
  readonly now: () => Date;
  readonly log: Logger;
}

/** Labels tsnet puts on what a lab makes (containers, networks, switches, links). */
export const LABEL_LAB = 'tsnet.lab';
export const LABEL_KEY = 'tsnet.lab.key';
export const LABEL_HASH = 'tsnet.lab.hash';
