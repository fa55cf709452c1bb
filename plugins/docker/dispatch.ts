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
  /** Takes the route's own request type (checked where the route is built), hence `never` here. */
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
  const I = IpamRequests;
  const nd = <S extends z.ZodType>(schema: S, run: (r: z.output<S>) => Promise<object | undefined | void>): Route => ({ iface: 'NetworkDriver', schema, run });
  const ip = <S extends z.ZodType>(schema: S, run: (r: z.output<S>) => Promise<object | undefined | void>): Route => ({ iface: 'IpamDriver', schema, run });
  const routes: Readonly<Record<string, Route>> = {
    '/Plugin.Activate': { iface: 'Plugin', run: async () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }) },

    '/NetworkDriver.GetCapabilities': { iface: 'NetworkDriver', run: () => n.getCapabilities() },
    '/NetworkDriver.GwAllocCheck': nd(N.GwAllocCheck, (r) => n.gwAllocCheck(r)),
    '/NetworkDriver.AllocateNetwork': nd(N.AllocateNetwork, (r) => n.allocateNetwork(r)),
    '/NetworkDriver.FreeNetwork': nd(N.FreeNetwork, (r) => n.freeNetwork(r)),
    '/NetworkDriver.CreateNetwork': nd(N.CreateNetwork, (r) => n.createNetwork(r)),
    '/NetworkDriver.DeleteNetwork': nd(N.DeleteNetwork, (r) => n.deleteNetwork(r)),
    '/NetworkDriver.CreateEndpoint': nd(N.CreateEndpoint, async (r) => {
      const iface = await n.createEndpoint(r);
      return iface === undefined ? {} : { Interface: iface };
    }),
    '/NetworkDriver.EndpointOperInfo': nd(N.EndpointOperInfo, async (r) => ({ Value: await n.endpointOperInfo(r) })),
    '/NetworkDriver.DeleteEndpoint': nd(N.DeleteEndpoint, (r) => n.deleteEndpoint(r)),
    '/NetworkDriver.Join': nd(N.Join, (r) => n.join(r)),
    '/NetworkDriver.Leave': nd(N.Leave, (r) => n.leave(r)),
    '/NetworkDriver.ProgramExternalConnectivity': nd(N.ProgramExternalConnectivity, (r) => n.programExternalConnectivity(r)),
    '/NetworkDriver.RevokeExternalConnectivity': nd(N.RevokeExternalConnectivity, (r) => n.revokeExternalConnectivity(r)),
    // Multi-host discovery (swarm): a local-scope driver has nothing to do with it.
    '/NetworkDriver.DiscoverNew': nd(N.DiscoverNew, empty),
    '/NetworkDriver.DiscoverDelete': nd(N.DiscoverDelete, empty),

    '/IpamDriver.GetCapabilities': { iface: 'IpamDriver', run: () => i.getCapabilities() },
    '/IpamDriver.GetDefaultAddressSpaces': { iface: 'IpamDriver', run: () => i.getDefaultAddressSpaces() },
    '/IpamDriver.RequestPool': ip(I.RequestPool, (r) => i.requestPool(r)),
    '/IpamDriver.ReleasePool': ip(I.ReleasePool, (r) => i.releasePool(r)),
    '/IpamDriver.RequestAddress': ip(I.RequestAddress, (r) => i.requestAddress(r)),
    '/IpamDriver.ReleaseAddress': ip(I.ReleaseAddress, (r) => i.releaseAddress(r)),
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
