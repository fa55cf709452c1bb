/**
 * The pure request dispatcher of the Docker plugin: `POST /<Interface>.<Method>` with a raw body in,
 * an HTTP status and a JSON response object out. No sockets here (serve.ts carries the bytes).
 *
 * - Unknown path → 404 `{"Err":"..."}` (dockerd treats 404 as "not implemented").
 * - A body that is not JSON or does not match the request schema → 400 `{"Err":"..."}` naming the
 *   field (dockerd reads `Err` from any non-200 answer, whatever the interface).
 * - An application error → 200 with `{"Err":"..."}` for Plugin/NetworkDriver and `{"Error":"..."}`
 *   for IpamDriver (the two remote APIs name the field differently).
 * - Anything unexpected (a bug) → 500 `{"Err":"..."}`. The dispatcher never throws.
 */
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { IpamRequests, NetworkRequests, type IpamDriverApi, type NetworkDriverApi } from './protocol.js';

export interface DispatchResult {
  readonly status: number;
  readonly body: Readonly<Record<string, unknown>>;
}

export type Dispatcher = (path: string, rawBody: string) => Promise<DispatchResult>;

type Iface = 'Plugin' | 'NetworkDriver' | 'IpamDriver';

interface Route {
  readonly iface: Iface;
  readonly schema?: z.ZodType;
  readonly run: (req: never) => Promise<object | undefined | void>;
}

class BadRequest extends Error {}

function parseBody(path: string, raw: string, schema: z.ZodType | undefined): unknown {
  if (schema === undefined) return undefined; // no arguments: the body is ignored (dockerd sends none)
  let json: unknown;
  try {
    json = raw.trim() === '' ? undefined : JSON.parse(raw);
  } catch (err) {
    throw new BadRequest(`${path.slice(1)}: request body is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new BadRequest(`${path.slice(1)}: invalid request body: ${z.prettifyError(r.error).replaceAll('\n', '; ')}`);
  return r.data;
}

export function createDispatcher(api: { readonly network: NetworkDriverApi; readonly ipam: IpamDriverApi }, log: Logger): Dispatcher {
  const n = api.network;
  const i = api.ipam;
  const N = NetworkRequests;
  const empty = async (): Promise<object> => ({});
  const routes: Readonly<Record<string, Route>> = {
    '/Plugin.Activate': { iface: 'Plugin', run: async () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }) },

    '/NetworkDriver.GetCapabilities': { iface: 'NetworkDriver', run: () => n.getCapabilities() },
    '/NetworkDriver.GwAllocCheck': { iface: 'NetworkDriver', schema: N.GwAllocCheck, run: (r: z.output<typeof N.GwAllocCheck>) => n.gwAllocCheck(r) },
    '/NetworkDriver.AllocateNetwork': { iface: 'NetworkDriver', schema: N.AllocateNetwork, run: (r: z.output<typeof N.AllocateNetwork>) => n.allocateNetwork(r) },
    '/NetworkDriver.FreeNetwork': { iface: 'NetworkDriver', schema: N.FreeNetwork, run: (r: z.output<typeof N.FreeNetwork>) => n.freeNetwork(r) },
    '/NetworkDriver.CreateNetwork': { iface: 'NetworkDriver', schema: N.CreateNetwork, run: (r: z.output<typeof N.CreateNetwork>) => n.createNetwork(r) },
    '/NetworkDriver.DeleteNetwork': { iface: 'NetworkDriver', schema: N.DeleteNetwork, run: (r: z.output<typeof N.DeleteNetwork>) => n.deleteNetwork(r) },
    '/NetworkDriver.CreateEndpoint': {
      iface: 'NetworkDriver',
      schema: N.CreateEndpoint,
      run: async (r: z.output<typeof N.CreateEndpoint>) => {
        const iface = await n.createEndpoint(r);
        return iface === undefined ? {} : { Interface: iface };
      },
    },
    '/NetworkDriver.EndpointOperInfo': {
      iface: 'NetworkDriver',
      schema: N.EndpointOperInfo,
      run: async (r: z.output<typeof N.EndpointOperInfo>) => ({ Value: await n.endpointOperInfo(r) }),
    },
    '/NetworkDriver.DeleteEndpoint': { iface: 'NetworkDriver', schema: N.DeleteEndpoint, run: (r: z.output<typeof N.DeleteEndpoint>) => n.deleteEndpoint(r) },
    '/NetworkDriver.Join': { iface: 'NetworkDriver', schema: N.Join, run: (r: z.output<typeof N.Join>) => n.join(r) },
    '/NetworkDriver.Leave': { iface: 'NetworkDriver', schema: N.Leave, run: (r: z.output<typeof N.Leave>) => n.leave(r) },
    '/NetworkDriver.ProgramExternalConnectivity': {
      iface: 'NetworkDriver',
      schema: N.ProgramExternalConnectivity,
      run: (r: z.output<typeof N.ProgramExternalConnectivity>) => n.programExternalConnectivity(r),
    },
    '/NetworkDriver.RevokeExternalConnectivity': {
      iface: 'NetworkDriver',
      schema: N.RevokeExternalConnectivity,
      run: (r: z.output<typeof N.RevokeExternalConnectivity>) => n.revokeExternalConnectivity(r),
    },
    // Multi-host discovery (swarm): a local-scope driver has nothing to do with it.
    '/NetworkDriver.DiscoverNew': { iface: 'NetworkDriver', schema: N.DiscoverNew, run: empty },
    '/NetworkDriver.DiscoverDelete': { iface: 'NetworkDriver', schema: N.DiscoverDelete, run: empty },

    '/IpamDriver.GetCapabilities': { iface: 'IpamDriver', run: () => i.getCapabilities() },
    '/IpamDriver.GetDefaultAddressSpaces': { iface: 'IpamDriver', run: () => i.getDefaultAddressSpaces() },
    '/IpamDriver.RequestPool': { iface: 'IpamDriver', schema: IpamRequests.RequestPool, run: (r: z.output<typeof IpamRequests.RequestPool>) => i.requestPool(r) },
    '/IpamDriver.ReleasePool': { iface: 'IpamDriver', schema: IpamRequests.ReleasePool, run: (r: z.output<typeof IpamRequests.ReleasePool>) => i.releasePool(r) },
    '/IpamDriver.RequestAddress': {
      iface: 'IpamDriver',
      schema: IpamRequests.RequestAddress,
      run: (r: z.output<typeof IpamRequests.RequestAddress>) => i.requestAddress(r),
    },
    '/IpamDriver.ReleaseAddress': {
      iface: 'IpamDriver',
      schema: IpamRequests.ReleaseAddress,
      run: (r: z.output<typeof IpamRequests.ReleaseAddress>) => i.releaseAddress(r),
    },
  };

  return async (path, rawBody) => {
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (route === undefined) return { status: 404, body: { Err: `unknown method ${path.replace(/^\//, '')}` } };
    const started = Date.now();
    try {
      const req = parseBody(path, rawBody, route.schema);
      const res = (await route.run(req as never)) ?? {};
      log.debug('plugin call', { method: path.slice(1), ms: Date.now() - started });
      return { status: 200, body: res as Record<string, unknown> };
    } catch (err) {
      if (err instanceof BadRequest) {
        log.warn('bad plugin request', { method: path.slice(1), err: err.message });
        return { status: 400, body: { Err: err.message } };
      }
      const message = errorMessage(err);
      if (!(err instanceof TsnetError || err instanceof AggregateError)) {
        log.error('plugin call failed unexpectedly', { method: path.slice(1), err });
        return { status: 500, body: { Err: message } };
      }
      log.info('plugin call failed', { method: path.slice(1), err: message });
      return { status: 200, body: route.iface === 'IpamDriver' ? { Error: message } : { Err: message } };
    }
  };
}

function errorMessage(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(errorMessage).join('; ');
  return err instanceof Error ? err.message : String(err);
}
