/**
 * tsnet-ipam: the IPAM plugin, host-local-compatible in options and on-disk layout (see ipam.ts and
 * sys/store/host-local.ts), so that `"ipam": {"type": "tsnet-ipam", ...}` and `"type":
 * "host-local"` are interchangeable on a node, reservations included. Adds STATUS and GC, which
 * host-local lacks.
 */
import { TsnetError } from '../../core/errors.js';
import type { CniDeps } from './deps.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus, ourAddresses, parseIpamConfig, requestedIps, type IpamConfig } from './ipam.js';
import type { Plugin, Request } from './skel.js';
import { goField } from './go-json.js';
import { fromWire, type Result } from './spec.js';

function conf(req: Request): IpamConfig {
  return parseIpamConfig(goField(req.config, 'ipam', 'nullable'));
}

function prev(req: Request): Result | undefined {
  const p = goField(req.config, 'prevResult', 'nullable');
  return p === undefined ? undefined : fromWire(p);
}

export function createIpamPlugin(deps: CniDeps): Plugin {
  const log = deps.log.child({ plugin: 'tsnet-ipam' });
  const store = (req: Request, cfg: IpamConfig): ReturnType<CniDeps['openIpamStore']> => deps.openIpamStore(cfg.dataDir, req.name);
  const att = (req: Request): { containerId: string; ifName: string } => ({ containerId: req.containerId, ifName: req.ifName });
  return {
    async add(req) {
      const cfg = conf(req);
      const requested = requestedIps(req.config, req.args);
      const r = await ipamAdd(await store(req, cfg), cfg, att(req), requested);
      log.info('reserved', { container: req.containerId, ips: r.ips?.map((i) => i.address) });
      return r;
    },
    async del(req) {
      const cfg = conf(req);
      await ipamDel(await store(req, cfg), att(req), ourAddresses(cfg, prev(req)));
    },
    async check(req) {
      const cfg = conf(req);
      const p = prev(req);
      if (p === undefined) throw new TsnetError('INVALID_CONFIG', 'prevResult: missing (CHECK needs the result of ADD)', { details: { field: 'prevResult' } });
      await ipamCheck(await store(req, cfg), cfg, att(req), p);
    },
    async status(req) {
      const cfg = conf(req);
      await ipamStatus(() => store(req, cfg), cfg);
    },
    async gc(req, valid) {
      const cfg = conf(req);
      const released = await ipamGc(await store(req, cfg), valid, deps.isAlive);
      if (released.length > 0) log.info('gc released addresses', { network: req.name, ips: released });
    },
  };
}
