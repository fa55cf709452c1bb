/**
 * The CNI plugins' input shapes as zod/mini schemas (zod/mini: the plugin bundle starts from a V8
 * snapshot and full zod would add ~450 KB to it), read with Go's key matching (go-json.ts): a
 * `goStruct` reads each of its fields as encoding/json would set it (any case, later spellings win,
 * null per field kind) and ignores the other keys, as a CNI configuration shared by a list must be.
 * `parseInput` turns the first issue into INVALID_CONFIG naming the full path
 * (`runtimeConfig.portMappings[0].hostPort: ...`). Semantics that need more than a shape (ranges
 * inside their subnet, burst with rate) are checks on the parsed value, next to their owners.
 */
import * as z from 'zod/mini';
import { TsnetError } from '../../core/errors.js';
import { isIpAddr } from '../../core/net.js';
import { goField, isJsonObject, type GoKind } from './go-json.js';

type Shape = Record<string, z.core.$ZodType>;

/**
 * An object of Go struct fields: `shape`'s keys read with goField (`kinds` says which are slices,
 * maps or pointers, which a null resets), unknown keys ignored. A value that is not an object fails
 * as one.
 */
export function goStruct<S extends Shape>(shape: S, kinds: Partial<Record<keyof S, GoKind>> = {}) {
  return z.pipe(
    z.transform((raw: unknown) => {
      if (!isJsonObject(raw)) return raw;
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(shape)) {
        const v = goField(raw, key, kinds[key as keyof S] ?? 'value');
        if (v !== undefined) out[key] = v;
      }
      return out;
    }),
    z.object(shape),
  );
}

/** A JSON list that null or absence leaves out (a Go slice); `message` for anything else. */
export const goList = <T extends z.core.$ZodType>(item: T, message = 'must be a list') => z.optional(z.nullable(z.array(item, message)));

export const zPort = z.number().check(z.int('must be an integer 1-65535'), z.minimum(1, 'must be an integer 1-65535'), z.maximum(65_535, 'must be an integer 1-65535'));
export const zCount = z.number().check(z.int('must be a non-negative integer'), z.minimum(0, 'must be a non-negative integer'), z.maximum(Number.MAX_SAFE_INTEGER, 'must be a non-negative integer'));

/** `path` as CNI configurations name fields: `a.b[0].c`. */
function pathText(base: string, path: readonly PropertyKey[]): string {
  let out = base;
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out === '' ? '' : '.'}${String(p)}`;
  return out;
}

/** Parses `value` at `field`; INVALID_CONFIG naming the first bad field otherwise. */
export function parseInput<T extends z.core.$ZodType>(schema: T, value: unknown, field: string): z.output<T> {
  const r = z.safeParse(schema, value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = pathText(field, issue?.path ?? []);
  const what = issue?.code === 'invalid_type' && isJsonObject(value) === false && (issue.path ?? []).length === 0 ? `must be ${issue.expected === 'object' ? 'an object' : issue.expected === 'array' ? 'a list' : `a ${issue.expected}`}` : issue?.message ?? 'invalid';
  throw new TsnetError('INVALID_CONFIG', `${where}: ${what}`, { details: { field: where } });
}

// ---- the capabilities runtimes pass (go-cni sends Go field names) ------------------------------

export const PortMappingSchema = goStruct({
  hostPort: zPort,
  containerPort: zPort,
  protocol: z.optional(z.string().check(z.refine((s) => ['tcp', 'udp', 'sctp'].includes(s.toLowerCase()), 'must be tcp, udp or sctp'))),
  hostIP: z.optional(z.string().check(z.refine((s) => s === '' || isIpAddr(s), 'expected an IP address'))),
});
export const PortMappingsSchema = goList(PortMappingSchema, 'must be a list');

export const BandwidthSchema = goStruct({
  ingressRate: z.optional(zCount),
  ingressBurst: z.optional(zCount),
  egressRate: z.optional(zCount),
  egressBurst: z.optional(zCount),
});

export const DnsCapabilitySchema = goStruct(
  { servers: goList(z.string('must be a list of strings'), 'must be a list of strings'), searches: goList(z.string('must be a list of strings'), 'must be a list of strings'), options: goList(z.string('must be a list of strings'), 'must be a list of strings') },
  { servers: 'nullable', searches: 'nullable', options: 'nullable' },
);

// ---- plugin configurations ------------------------------------------------------------------

const zBool = z.optional(z.boolean('must be true or false'));

export const BridgeConfShape = goStruct({
  bridge: z.optional(z.string('must be a string')),
  isGateway: zBool,
  isDefaultGateway: zBool,
  ipMasq: zBool,
  hairpinMode: zBool,
  icc: zBool,
  mtu: z.optional(z.number('must be an integer 68-65535')),
  vlan: z.optional(z.number()),
  firewallBackend: z.optional(z.string('must be a string')),
});

export const MacvlanConfShape = goStruct({
  master: z.optional(z.string('must be an interface name').check(z.minLength(1, 'must be an interface name'))),
  mode: z.optional(z.string('must be a string')),
  mtu: z.optional(z.number().check(z.int('must be an integer'))),
  linkInContainer: z.optional(z.boolean('must be true or false')),
});
