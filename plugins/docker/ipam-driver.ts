/**
 * Docker's remote IpamDriver on tsnet's IPAM (ipam/api.ts). A Docker pool is a tsnet IPAM "network"
 * of its own, `docker-<16 hex>`, with one pool of one family; the PoolID is tsnet's pool id
 * (`docker-<16 hex>-ipv4`), so a PoolID maps back to it without any table. The subnet overlap check
 * therefore covers Docker's pools, tsnet's own networks and the host's routes alike.
 *
 * Docker's call order: RequestPool → RequestAddress(gateway) → RequestAddress(aux...) at network
 * create; RequestAddress per endpoint; ReleaseAddress... → ReleasePool at network delete. The
 * gateway is the pool's own gateway (tsnet's IPAM never hands it out), unless Docker asks for
 * another address (`--gateway`), which is then reserved like a static address.
 */
import { TsnetError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { addrFamily, parseIpAddr, parsePrefix, parseSubnet, prefixAddr, prefixLen, type Family, type NetworkId, type Prefix } from '../../core/net.js';
import type { Ipam, PoolRecord } from '../../ipam/api.js';
import type { IpamDriverApi, IpamRequest } from './protocol.js';

export const GATEWAY_ADDRESS_TYPE = 'com.docker.network.gateway';
const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
const POOL_ID = /^(docker-[0-9a-f]{16})-ipv([46])$/;

export interface DockerIpamDeps {
  readonly ipam: Ipam;
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
}

function invalid(field: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${msg}`, { details: { field } });
}

/** The tsnet IPAM network behind a Docker PoolID. */
function decodePoolId(raw: string): { readonly networkId: NetworkId; readonly family: Family } {
  const m = POOL_ID.exec(raw);
  if (!m) throw new TsnetError('NOT_FOUND', `PoolID ${JSON.stringify(raw)}: not a pool of this driver`, { details: { field: 'PoolID' } });
  return { networkId: m[1] as NetworkId, family: m[2] === '6' ? 6 : 4 };
}

/** "10.1.0.5" or "10.1.0.5/24" (both forms are sent) → the bare address. */
function bareAddress(raw: string, field: string): string {
  return raw.includes('/') ? prefixAddr(parsePrefix(raw, field)) : parseIpAddr(raw, field);
}

export function createDockerIpam(deps: DockerIpamDeps): IpamDriverApi {
  const { ipam } = deps;
  const log = deps.log.child({ component: 'docker-ipam' });

  async function poolOf(poolId: string): Promise<PoolRecord> {
    const { networkId, family } = decodePoolId(poolId);
    const pool = (await ipam.getPools(networkId)).find((p) => p.family === family);
    if (pool === undefined) throw new TsnetError('NOT_FOUND', `PoolID ${poolId}: no such pool`, { details: { field: 'PoolID' } });
    return pool;
  }
  const withLen = (pool: PoolRecord, ip: string): string => `${ip}/${prefixLen(pool.subnet)}`;

  return {
    getCapabilities: async () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
    getDefaultAddressSpaces: async () => ({ LocalDefaultAddressSpace: 'tsnet-local', GlobalDefaultAddressSpace: 'tsnet-global' }),

    async requestPool(req: IpamRequest<'RequestPool'>) {
      if (req.Pool === '' && req.SubPool !== '') throw invalid('SubPool', 'a sub-pool needs a pool (Pool is empty)');
      let subnet: Prefix | undefined;
      if (req.Pool !== '') {
        subnet = parseSubnet(req.Pool, 'Pool');
        if ((addrFamily(subnet) === 6) !== req.V6) throw invalid('Pool', `${req.Pool} is IPv${addrFamily(subnet)} but V6 is ${String(req.V6)}`);
      }
      if (req.SubPool !== '') parseSubnet(req.SubPool, 'SubPool');
      const networkId = `docker-${deps.randomHex(8)}` as NetworkId;
      const family: Family = req.V6 ? 6 : 4;
      const rec = await ipam.requestPool({
        networkId,
        family,
        ...(subnet !== undefined ? { subnet } : {}),
        ...(req.SubPool !== '' ? { ipRange: req.SubPool } : {}),
      });
      log.info('pool created', { pool: rec.poolId, subnet: rec.subnet });
      return { PoolID: rec.poolId, Pool: rec.subnet, Data: {} };
    },

    async releasePool(req: IpamRequest<'ReleasePool'>) {
      const { networkId } = decodePoolId(req.PoolID);
      await ipam.releasePool(networkId);
      log.info('pool released', { pool: req.PoolID });
    },

    async requestAddress(req: IpamRequest<'RequestAddress'>) {
      const pool = await poolOf(req.PoolID);
      const ip = req.Address === '' ? undefined : bareAddress(req.Address, 'Address');
      if (req.Options[REQUEST_ADDRESS_TYPE] === GATEWAY_ADDRESS_TYPE && (ip === undefined || ip === pool.gateway)) {
        return { Address: withLen(pool, pool.gateway), Data: {} };
      }
      // A fresh owner per request: a second static request for a held address must fail.
      const owner = `docker/${deps.randomHex(8)}`;
      const a = await ipam.requestAddress({ networkId: pool.networkId, owner, family: pool.family, ...(ip !== undefined ? { ip } : {}) });
      return { Address: a.address, Data: {} };
    },

    async releaseAddress(req: IpamRequest<'ReleaseAddress'>) {
      const pool = await poolOf(req.PoolID).catch((err: unknown) => {
        if (err instanceof TsnetError && err.code === 'NOT_FOUND' && POOL_ID.test(req.PoolID)) return undefined; // pool gone: nothing held
        throw err;
      });
      if (pool === undefined) return;
      const ip = bareAddress(req.Address, 'Address');
      if (ip === pool.gateway) return;
      await ipam.releaseAddress({ networkId: pool.networkId, addr: ip });
    },
  };
}
