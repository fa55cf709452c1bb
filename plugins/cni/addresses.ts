/**
 * A CNI interface plugin's addresses, the same for every tsnet interface plugin (tsnet-bridge,
 * tsnet-macvlan): the `ipam` section parsed once, addresses from the built-in IPAM (the shared
 * allocator over host-local's layout: ipam.ts → ipam/host-local.ts) or from the plugin named in
 * `ipam.type` (delegated with the same environment and configuration, as the spec says), and their
 * release, check, status and garbage collection.
 */
import { TsnetError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { parseIpAddr, parsePrefix, type IpAddr, type Prefix } from '../../core/net.js';
import type { UndoStack } from '../../core/undo.js';
import type { HostLocalStore } from '../../sys/store/api.js';
import type { CniDeps } from './deps.js';
import { CNI_ERR, CniError } from './errors.js';
import { goField, isJsonObject } from './go-json.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus, ourAddresses, parseIpamConfig, requestedIps, type IpamConfig } from './ipam.js';
import type { Attachment, Request } from './skel.js';
import { fromWire, type Result } from './spec.js';

/** ipam.type values served in process (host-local's on-disk layout). */
export const BUILTIN_IPAM = ['tsnet-ipam', 'tsnet', 'builtin'];

export interface IpamSection {
  readonly ipamRaw: Readonly<Record<string, unknown>>;
  /** Parsed when the IPAM is built in; undefined when delegated. */
  readonly ipam: IpamConfig | undefined;
  readonly ipamType: string;
}

export function parseIpamSection(c: Readonly<Record<string, unknown>>, plugin: string): IpamSection {
  const ipamRaw = goField(c, 'ipam', 'nullable');
  if (!isJsonObject(ipamRaw)) {
    throw new TsnetError('INVALID_CONFIG', `ipam: ${ipamRaw === undefined ? `missing (${plugin} needs addresses: give ipam.ranges or ipam.type)` : 'must be an object'}`, { details: { field: 'ipam' } });
  }
  const t = goField(ipamRaw, 'type');
  if (t !== undefined && (typeof t !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(t))) {
    throw new TsnetError('INVALID_CONFIG', `ipam.type: ${JSON.stringify(t)} is not a plugin name`, { details: { field: 'ipam.type' } });
  }
  const ipamType = (t as string | undefined) ?? 'tsnet-ipam';
  return { ipamRaw, ipam: BUILTIN_IPAM.includes(ipamType) ? parseIpamConfig(ipamRaw) : undefined, ipamType };
}

export interface Addresses {
  readonly result: Result;
  readonly ips: readonly { readonly prefix: Prefix; readonly gateway: IpAddr | undefined }[];
}

export interface AddressFlow {
  /** Reserves the attachment's addresses; their release is pushed on `undo`. */
  add(req: Request, s: IpamSection, undo: UndoStack): Promise<Addresses>;
  del(req: Request, s: IpamSection, prev: Result | undefined): Promise<void>;
  check(req: Request, s: IpamSection, prev: Result): Promise<void>;
  status(req: Request, s: IpamSection): Promise<void>;
  gc(req: Request, s: IpamSection, valid: readonly Attachment[]): Promise<void>;
}

export function addressFlow(deps: CniDeps, log: Logger): AddressFlow {
  const att = (req: Request): Attachment => ({ containerId: req.containerId, ifName: req.ifName });
  const store = (req: Request, s: IpamSection): Promise<HostLocalStore> => deps.openIpamStore(s.ipam?.dataDir, req.name);
  const delegate = (req: Request, s: IpamSection, verb: string): Promise<unknown> => deps.execPlugin(s.ipamType, verb, req.path, req.env, req.stdin);
  /** Forwards STATUS/GC to a delegated IPAM that may predate them (the reference 1.1.1 does). */
  const delegateLenient = async (req: Request, s: IpamSection, verb: string): Promise<void> => {
    try {
      await delegate(req, s, verb);
    } catch (err) {
      if (err instanceof CniError && err.code === CNI_ERR.INCOMPATIBLE_VERSION) {
        log.debug(`delegated ipam ${s.ipamType} does not implement ${verb} at ${req.cniVersion}`, {});
        return;
      }
      throw err;
    }
  };
  return {
    async add(req, s, undo) {
      let result: Result;
      if (s.ipam) {
        const cfg = s.ipam;
        const st = await store(req, s);
        result = await ipamAdd(st, cfg, att(req), requestedIps(req.config, req.args));
        const known = ourAddresses(cfg, result);
        undo.push('release addresses', () => ipamDel(st, att(req), known));
      } else {
        result = fromWire(await delegate(req, s, 'ADD'), `ipam ${s.ipamType} result`);
        undo.push(`ipam ${s.ipamType} DEL`, () => delegate(req, s, 'DEL'));
      }
      const ips = (result.ips ?? []).map((ip, i) => ({
        prefix: parsePrefix(ip.address, `ipam result ips[${i}].address`),
        gateway: ip.gateway === undefined ? undefined : parseIpAddr(ip.gateway, `ipam result ips[${i}].gateway`),
      }));
      if (ips.length === 0) throw new TsnetError('INVALID_CONFIG', `ipam: ${s.ipamType} returned no address`, { details: { field: 'ipam' } });
      return { result, ips };
    },
    async del(req, s, prev) {
      if (s.ipam) await ipamDel(await store(req, s), att(req), ourAddresses(s.ipam, prev));
      else await delegate(req, s, 'DEL');
    },
    async check(req, s, prev) {
      if (s.ipam) await ipamCheck(await store(req, s), s.ipam, att(req), prev);
      else await delegate(req, s, 'CHECK');
    },
    async status(req, s) {
      if (!s.ipam) {
        await delegateLenient(req, s, 'STATUS');
        return;
      }
      await ipamStatus(() => store(req, s), s.ipam);
    },
    async gc(req, s, valid) {
      if (s.ipam) {
        const released = await ipamGc(await store(req, s), valid, deps.isAlive);
        if (released.length > 0) log.info('gc released addresses', { network: req.name, ips: released });
      } else {
        await delegateLenient(req, s, 'GC');
      }
    },
  };
}
