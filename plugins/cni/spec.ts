/**
 * CNI wire types (SPEC 1.1.0) and the explicit conversions between result versions. Pure.
 *
 * Inside, a result is always the 1.x shape (`Result`). `toWire` writes it in the format of the
 * configuration's cniVersion (0.3.0/0.3.1/0.4.0 add `ips[].version`; 1.0.0 has no route
 * mtu/advmss/priority/table/scope and no interface socketPath/pciID), and `fromWire` reads a
 * `prevResult` of any supported version back into the 1.x shape, its keys matched as a Go plugin
 * matches them (./go-json.ts).
 */
import { CniError } from './errors.js';
import { goField, isJsonObject as isObj } from './go-json.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST: CniVersion = '1.1.0';

export interface Interface {
  readonly name: string;
  readonly mac?: string;
  readonly mtu?: number;
  readonly sandbox?: string;
  readonly socketPath?: string;
  readonly pciID?: string;
}
export interface IpConfig {
  /** CIDR: address with the subnet's prefix length. */
  readonly address: string;
  readonly gateway?: string;
  /** Index into `interfaces`; absent in IPAM results. */
  readonly interface?: number;
}
export interface Route {
  readonly dst: string;
  readonly gw?: string;
  readonly mtu?: number;
  readonly advmss?: number;
  readonly priority?: number;
  readonly table?: number;
  readonly scope?: number;
}
export interface Dns {
  readonly nameservers?: readonly string[];
  readonly domain?: string;
  readonly search?: readonly string[];
  readonly options?: readonly string[];
}
export interface Result {
  readonly interfaces?: readonly Interface[];
  readonly ips?: readonly IpConfig[];
  readonly routes?: readonly Route[];
  readonly dns?: Dns;
}

/** a < b, a = b, a > b as -1, 0, 1 for dotted versions. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

export function isSupported(v: string): v is CniVersion {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

const V1_ROUTE_EXTRAS = ['mtu', 'advmss', 'priority', 'table', 'scope'] as const;

/** The result as the configuration's version spells it. */
export function toWire(r: Result, version: CniVersion): Record<string, unknown> {
  const out: Record<string, unknown> = { cniVersion: version };
  const v1 = compareVersions(version, '1.0.0') >= 0;
  const v11 = compareVersions(version, '1.1.0') >= 0;
  if (r.interfaces !== undefined) {
    out['interfaces'] = r.interfaces.map((i) => {
      const { socketPath, pciID, ...rest } = i;
      return v11 ? { ...rest, ...(socketPath !== undefined ? { socketPath } : {}), ...(pciID !== undefined ? { pciID } : {}) } : rest;
    });
  }
  if (r.ips !== undefined) {
    out['ips'] = r.ips.map((ip) => (v1 ? { ...ip } : { version: ip.address.includes(':') ? '6' : '4', ...ip }));
  }
  if (r.routes !== undefined) {
    out['routes'] = r.routes.map((rt) => {
      if (v11) return { ...rt };
      const copy: Record<string, unknown> = { ...rt };
      for (const k of V1_ROUTE_EXTRAS) delete copy[k];
      return copy;
    });
  }
  if (r.dns !== undefined) out['dns'] = { ...r.dns };
  return out;
}

function bad(field: string, why: string): CniError {
  return new CniError(7, `${field}: ${why}`, `invalid ${field}`);
}

function str(o: Record<string, unknown>, k: string, field: string, required = false): string | undefined {
  const v = goField(o, k);
  if (v === undefined) {
    if (required) throw bad(`${field}.${k}`, 'missing');
    return undefined;
  }
  if (typeof v !== 'string') throw bad(`${field}.${k}`, 'must be a string');
  return v;
}
function num(o: Record<string, unknown>, k: string, field: string): number | undefined {
  const v = goField(o, k);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw bad(`${field}.${k}`, 'must be an integer');
  return v;
}
function strList(o: Record<string, unknown>, k: string, field: string): string[] | undefined {
  const v = goField(o, k, 'nullable');
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw bad(`${field}.${k}`, 'must be a list of strings');
  return v as string[];
}
type Defined<T> = { [K in keyof T as undefined extends T[K] ? never : K]: T[K] } & { [K in keyof T as undefined extends T[K] ? K : never]?: Exclude<T[K], undefined> };
/** Drops the undefined members (exactOptionalPropertyTypes). */
const defined = <T extends object>(o: T): Defined<T> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Defined<T>;

export function parseDns(raw: unknown, field: string): Dns | undefined {
  if (raw === undefined) return undefined;
  if (!isObj(raw)) throw bad(field, 'must be an object');
  return defined({
    nameservers: strList(raw, 'nameservers', field),
    domain: str(raw, 'domain', field),
    search: strList(raw, 'search', field),
    options: strList(raw, 'options', field),
  });
}

/** A list of objects, each read by `item` with its field path ("prevResult.ips[2]"). */
function objList<T>(raw: unknown, field: string, item: (o: Record<string, unknown>, f: string) => T): T[] {
  if (!Array.isArray(raw)) throw bad(field, 'must be a list');
  return raw.map((x: unknown, i) => {
    const f = `${field}[${i}]`;
    if (!isObj(x)) throw bad(f, 'must be an object');
    return item(x, f);
  });
}

export function parseRoutes(raw: unknown, field: string): Route[] | undefined {
  if (raw === undefined) return undefined;
  return objList(raw, field, (r, f) =>
    defined({
      dst: str(r, 'dst', f, true) as string,
      gw: str(r, 'gw', f),
      mtu: num(r, 'mtu', f),
      advmss: num(r, 'advmss', f),
      priority: num(r, 'priority', f),
      table: num(r, 'table', f),
      scope: num(r, 'scope', f),
    }),
  );
}

/** Reads a result of any supported version (a prevResult, or a delegated IPAM plugin's output). */
export function fromWire(raw: unknown, field = 'prevResult'): Result {
  if (!isObj(raw)) throw bad(field, 'must be an object');
  const out: { interfaces?: Interface[]; ips?: IpConfig[]; routes?: Route[]; dns?: Dns } = {};
  const interfaces = goField(raw, 'interfaces', 'nullable');
  if (interfaces !== undefined) {
    out.interfaces = objList(interfaces, `${field}.interfaces`, (x, f) =>
      defined({
        name: str(x, 'name', f, true) as string,
        mac: str(x, 'mac', f),
        mtu: num(x, 'mtu', f),
        sandbox: str(x, 'sandbox', f),
        socketPath: str(x, 'socketPath', f),
        pciID: str(x, 'pciID', f),
      }),
    );
  }
  const ips = goField(raw, 'ips', 'nullable');
  if (ips !== undefined) {
    out.ips = objList(ips, `${field}.ips`, (x, f) => {
      const address = str(x, 'address', f, true) as string;
      if (!/^[0-9a-fA-F.:]+\/\d{1,3}$/.test(address)) throw bad(`${f}.address`, `${JSON.stringify(address)} is not an address in CIDR form`);
      return defined({ address, gateway: str(x, 'gateway', f), interface: num(x, 'interface', f) });
    });
  }
  const routes = parseRoutes(goField(raw, 'routes', 'nullable'), `${field}.routes`);
  if (routes !== undefined) out.routes = routes;
  const dns = parseDns(goField(raw, 'dns'), `${field}.dns`);
  if (dns !== undefined) out.dns = dns;
  return out;
}
