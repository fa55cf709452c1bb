/**
 * tsnet-macvlan: the reference `macvlan` plugin's configuration translated onto tsnet's macvlan
 * driver (drivers/macvlan, the same one `tsnet network create -d macvlan` and the Docker plugin use)
 * with the shared IPAM (addresses.ts). No door-specific data path: config → the driver's network
 * spec and join request.
 *
 * Configuration (the reference plugin's keys; unknown keys are ignored, as a list shares them):
 *   master (the parent interface; default: the interface of the host's default route), mode
 *   (bridge, private, vepa, passthru; default bridge), mtu, ipam (required). `linkInContainer`
 *   (the parent inside the container's namespace) is not supported: error 2.
 */
import { TsnetError } from '../../core/errors.js';
import { parseIfName, parseIpAddr, parseMac, parsePrefix, prefixAddr, prefixNetwork, type IfName, type IpAddr, type MacAddr, type NetnsRef } from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import { UndoStack } from '../../core/undo.js';
import type { NetworkDriver, NetworkSpec, SubnetAssignment } from '../../drivers/api.js';
import { createMacvlanDriver } from '../../drivers/macvlan/index.js';
import { parseMacvlanOptions } from '../../drivers/macvlan/config.js';
import type { RouteSpec } from '../../sys/netlink/api.js';
import { addressFlow, parseIpamSection, type IpamSection } from './addresses.js';
import type { CniDeps } from './deps.js';
import { CNI_ERR, CniError } from './errors.js';
import { goField, goPath } from './go-json.js';
import { MacvlanConfShape, parseInput } from './schema.js';
import { CNI_SCOPE, cniEndpointId, cniNetworkId } from './names.js';
import type { Plugin, Request } from './skel.js';
import { fromWire, type Interface, type IpConfig, type Route } from './spec.js';

interface MacvlanConf extends IpamSection {
  readonly master: IfName | undefined;
  readonly mode: string;
  readonly mtu: number | undefined;
}

function parseMacvlanConf(c: Readonly<Record<string, unknown>>): MacvlanConf {
  const k = parseInput(MacvlanConfShape, c, '');
  if (k.linkInContainer === true) throw new CniError(CNI_ERR.UNSUPPORTED_FIELD, 'linkInContainer: a parent inside the container namespace is not supported by tsnet-macvlan', 'unsupported field');
  return {
    master: k.master === undefined ? undefined : parseIfName(k.master, 'master'),
    mode: k.mode ?? 'bridge',
    mtu: k.mtu === undefined || k.mtu === 0 ? undefined : k.mtu,
    ...parseIpamSection(c, 'tsnet-macvlan'),
  };
}

function runtimeMac(req: Request): MacAddr | undefined {
  const fromRc = goPath(req.config, ['runtimeConfig', 'mac']);
  if (fromRc !== undefined) return parseMac(fromRc as string, 'runtimeConfig.mac');
  const fromArgs = req.args.get('MAC');
  return fromArgs === undefined ? undefined : parseMac(fromArgs, 'CNI_ARGS MAC');
}

export function createMacvlanPlugin(deps: CniDeps): Plugin {
  const log = deps.log.child({ plugin: 'tsnet-macvlan' });
  const addresses = addressFlow(deps, log);
  const driver: NetworkDriver = createMacvlanDriver({
    hostNs: deps.hostNs, netlink: deps.netlink, sysctl: deps.sysctl, firewall: deps.firewall('none'), log: deps.log, randomHex: deps.randomHex, tc: deps.tc,
    withLock: (name, fn) => deps.withLock(`cni-${name}`, fn),
  });

  /** The parent: `master`, else the interface of the host's default route (as the reference plugin does). */
  async function parentOf(cfg: MacvlanConf): Promise<IfName> {
    if (cfg.master !== undefined) return cfg.master;
    const dflt = (await deps.netlink(deps.hostNs).listRoutes({ family: 4 })).find((r) => r.dst === '0.0.0.0/0' && r.dev !== undefined);
    if (dflt?.dev === undefined) throw new TsnetError('INVALID_CONFIG', 'master: not given, and the host has no default route to take it from', { details: { field: 'master' } });
    return dflt.dev;
  }

  async function networkOf(req: Request, cfg: MacvlanConf, subnets: readonly SubnetAssignment[]): Promise<{ spec: NetworkSpec; config: Record<string, unknown> }> {
    const parent = await parentOf(cfg);
    const id = cniNetworkId(req.name);
    const spec: NetworkSpec = { id, name: req.name, subnets, internal: false, options: { parent, macvlan_mode: cfg.mode, ...(cfg.mtu !== undefined ? { mtu: String(cfg.mtu) } : {}) }, owner: { scope: CNI_SCOPE, network: id } };
    // The driver's own option parser: the same checks (mode, mtu range) as every door.
    return { spec, config: { ...parseMacvlanOptions(spec.options) } };
  }

  return {
    async add(req) {
      const cfg = parseMacvlanConf(req.config);
      const netnsPath = req.netns as string;
      if (!(await deps.isNetns(netnsPath))) throw new CniError(CNI_ERR.INVALID_ENV, `CNI_NETNS: ${netnsPath} is not a network namespace`, 'invalid environment variable CNI_NETNS');
      const sandbox: NetnsRef = { kind: 'path', path: netnsPath };
      const undo = new UndoStack();
      try {
        const { result, ips } = await addresses.add(req, cfg, undo);
        const subnets = ips.filter((i) => i.gateway !== undefined).map((i) => ({ subnet: prefixNetwork(i.prefix), gateway: i.gateway as IpAddr }));
        const { spec, config } = await networkOf(req, cfg, subnets);
        await driver.createNetwork(spec, config); // checks the parent
        const routes: RouteSpec[] = (result.routes ?? []).map((r, k) => ({ dst: prefixNetwork(parsePrefix(r.dst, `routes[${k}].dst`)), ...(r.gw !== undefined ? { via: parseIpAddr(r.gw, `routes[${k}].gw`) } : {}) }));
        const ifName = req.ifName as IfName;
        const mac = runtimeMac(req);
        const joined = await driver.join({
          network: spec, config, endpointId: cniEndpointId(req.name, req.containerId, req.ifName), sandbox, ifName, hostIf: ifName,
          addresses: ips.map((i) => i.prefix), defaultRoute: false, routes, ...(mac !== undefined ? { mac } : {}),
        });
        undo.commit();
        const interfaces: Interface[] = [{ name: ifName, ...(joined.mac !== undefined ? { mac: joined.mac } : {}), sandbox: netnsPath, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) }];
        const ipConfigs: IpConfig[] = ips.map((i) => ({ address: i.prefix as string, ...(i.gateway !== undefined ? { gateway: i.gateway as string } : {}), interface: 0 }));
        const outRoutes: Route[] = (joined.routes ?? []).map((r) => ({ dst: r.dst, ...(r.via !== undefined ? { gw: r.via } : {}) }));
        log.info('added', { container: req.containerId, ifName, parent: spec.options['parent'], ips: ips.map((i) => prefixAddr(i.prefix)) });
        return { interfaces, ips: ipConfigs, routes: outRoutes, ...(result.dns !== undefined ? { dns: result.dns } : {}) };
      } catch (err) {
        await undo.unwind(log);
        throw err;
      }
    },
    async del(req) {
      const cfg = parseMacvlanConf(req.config);
      const prevRaw = goField(req.config, 'prevResult', 'nullable');
      const prev = prevRaw === undefined ? undefined : fromWire(prevRaw);
      const steps = [{ label: 'ipam', run: () => addresses.del(req, cfg, prev) }];
      if (req.netns !== undefined) {
        const sandbox: NetnsRef = { kind: 'path', path: req.netns };
        // The macvlan lives in the container's namespace: gone with it, else removed here.
        steps.push({ label: 'macvlan', run: async () => (await deps.isNetns(req.netns as string) ? deps.netlink(sandbox).removeLink(req.ifName as IfName) : undefined) });
      }
      await teardownAll(steps);
    },
    async check(req) {
      const cfg = parseMacvlanConf(req.config);
      const prevRaw = goField(req.config, 'prevResult', 'nullable');
      if (prevRaw === undefined) throw new TsnetError('INVALID_CONFIG', 'prevResult: missing (CHECK needs the result of ADD)', { details: { field: 'prevResult' } });
      const prev = fromWire(prevRaw);
      const want = (prev.ips ?? []).map((i) => parsePrefix(i.address, 'prevResult.ips.address'));
      const { spec, config } = await networkOf(req, cfg, []);
      const problems = await driver.checkJoin?.({
        network: spec, config, endpointId: cniEndpointId(req.name, req.containerId, req.ifName), sandbox: { kind: 'path', path: req.netns as string },
        ifName: req.ifName as IfName, hostIf: req.ifName as IfName, addresses: want, defaultRoute: false,
      });
      if (problems !== undefined && problems.length > 0) throw new TsnetError('NOT_FOUND', problems.join('; '), { details: { field: 'prevResult' } });
      await addresses.check(req, cfg, prev);
    },
    async status(req) {
      const cfg = parseMacvlanConf(req.config);
      await parentOf(cfg).then(async (p) => {
        if ((await deps.netlink(deps.hostNs).getLink(p)) === undefined) throw new CniError(CNI_ERR.NOT_AVAILABLE, `master ${p}: no such interface`, 'plugin not available');
      });
      await addresses.status(req, cfg);
    },
    async gc(req, valid) {
      await addresses.gc(req, parseMacvlanConf(req.config), valid);
    },
  };
}
