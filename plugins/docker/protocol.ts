/**
 * Docker's plugin protocol (../shared/reference/protocols.md §4.2–4.4; moby
 * libnetwork/drivers/remote/api and libnetwork/ipams/remote/api): the request bodies as zod schemas
 * and the response shapes as types. Field names are Go's exported struct fields, exactly.
 *
 * Requests are decoded like Go's encoding/json does it on a plugin: unknown fields are ignored (a
 * newer dockerd adds fields; refusing them would break the plugin on every upgrade), a nil Go map
 * or slice arrives as `null`, and a missing field is its zero value. Everything tsnet then uses is
 * parsed again, with field names, by the handlers.
 */
import { z } from 'zod';

export const CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

/** `null` or absent → the zero value, as Go decodes it. */
const str = z.string().nullish().transform((v) => v ?? '');
const bool = z.boolean().nullish().transform((v) => v ?? false);
const anyMap = z.record(z.string(), z.unknown()).nullish().transform((v) => v ?? {});
const strMap = z.record(z.string(), z.string()).nullish().transform((v) => v ?? {});

/** driverapi.IPAMData as marshalled by dockerd: Pool and Gateway in CIDR form. */
export const IpamDataSchema = z.object({
  AddressSpace: str,
  Pool: str,
  Gateway: str,
  AuxAddresses: strMap,
});
const ipamData = z.array(IpamDataSchema).nullish().transform((v) => v ?? []);
const networkId = z.string().min(1);

export const EmptySchema = z.unknown();

export const NetworkRequests = {
  GwAllocCheck: z.object({ Options: anyMap }),
  AllocateNetwork: z.object({ NetworkID: networkId, Options: strMap, IPv4Data: ipamData, IPv6Data: ipamData }),
  FreeNetwork: z.object({ NetworkID: networkId }),
  CreateNetwork: z.object({ NetworkID: networkId, Options: anyMap, IPv4Data: ipamData, IPv6Data: ipamData }),
  DeleteNetwork: z.object({ NetworkID: networkId }),
  CreateEndpoint: z.object({
    NetworkID: networkId,
    EndpointID: z.string().min(1),
    Interface: z.object({ Address: str, AddressIPv6: str, MacAddress: str }).nullish().transform((v) => v ?? { Address: '', AddressIPv6: '', MacAddress: '' }),
    Options: anyMap,
  }),
  EndpointOperInfo: z.object({ NetworkID: networkId, EndpointID: z.string().min(1) }),
  DeleteEndpoint: z.object({ NetworkID: networkId, EndpointID: z.string().min(1) }),
  Join: z.object({ NetworkID: networkId, EndpointID: z.string().min(1), SandboxKey: str, Options: anyMap }),
  Leave: z.object({ NetworkID: networkId, EndpointID: z.string().min(1) }),
  ProgramExternalConnectivity: z.object({ NetworkID: networkId, EndpointID: z.string().min(1), Options: anyMap }),
  RevokeExternalConnectivity: z.object({ NetworkID: networkId, EndpointID: z.string().min(1) }),
  DiscoverNew: z.object({ DiscoveryType: z.number().int(), DiscoveryData: z.unknown() }),
  DiscoverDelete: z.object({ DiscoveryType: z.number().int(), DiscoveryData: z.unknown() }),
} as const;

export const IpamRequests = {
  RequestPool: z.object({ AddressSpace: str, Pool: str, SubPool: str, Options: strMap, V6: bool }),
  ReleasePool: z.object({ PoolID: z.string().min(1) }),
  RequestAddress: z.object({ PoolID: z.string().min(1), Address: str, Options: strMap }),
  ReleaseAddress: z.object({ PoolID: z.string().min(1), Address: z.string().min(1) }),
} as const;

export type NetworkRequest<M extends keyof typeof NetworkRequests> = z.output<(typeof NetworkRequests)[M]>;
export type IpamRequest<M extends keyof typeof IpamRequests> = z.output<(typeof IpamRequests)[M]>;
export type IpamData = z.output<typeof IpamDataSchema>;

export interface CapabilitiesResponse {
  readonly Scope: 'local' | 'global';
  readonly ConnectivityScope: 'local' | 'global';
  readonly GwAllocChecker?: boolean;
}
export interface EndpointInterface {
  readonly Address?: string;
  readonly AddressIPv6?: string;
  readonly MacAddress?: string;
}
export interface StaticRoute {
  readonly Destination: string;
  /** 0: via NextHop; 1: connected. */
  readonly RouteType: 0 | 1;
  readonly NextHop?: string;
}
export interface JoinResponse {
  readonly InterfaceName: { readonly SrcName: string; readonly DstPrefix: string };
  readonly Gateway?: string;
  readonly GatewayIPv6?: string;
  readonly StaticRoutes?: readonly StaticRoute[];
  readonly DisableGatewayService?: boolean;
}
export interface IpamCapabilitiesResponse {
  readonly RequiresMACAddress: boolean;
  readonly RequiresRequestReplay: boolean;
}
export interface AddressSpacesResponse {
  readonly LocalDefaultAddressSpace: string;
  readonly GlobalDefaultAddressSpace: string;
}
export interface RequestPoolResponse {
  readonly PoolID: string;
  readonly Pool: string;
  readonly Data: Readonly<Record<string, string>>;
}
export interface RequestAddressResponse {
  readonly Address: string;
  readonly Data: Readonly<Record<string, string>>;
}

/** What tsnet's remote network driver does; the dispatcher calls it with validated requests. */
export interface NetworkDriverApi {
  getCapabilities(): Promise<CapabilitiesResponse>;
  gwAllocCheck(req: NetworkRequest<'GwAllocCheck'>): Promise<{ SkipIPv4: boolean; SkipIPv6: boolean }>;
  allocateNetwork(req: NetworkRequest<'AllocateNetwork'>): Promise<{ Options: Record<string, string> }>;
  freeNetwork(req: NetworkRequest<'FreeNetwork'>): Promise<void>;
  createNetwork(req: NetworkRequest<'CreateNetwork'>): Promise<void>;
  deleteNetwork(req: NetworkRequest<'DeleteNetwork'>): Promise<void>;
  /** The Interface to return (only fields the request left empty), or undefined. */
  createEndpoint(req: NetworkRequest<'CreateEndpoint'>): Promise<EndpointInterface | undefined>;
  endpointOperInfo(req: NetworkRequest<'EndpointOperInfo'>): Promise<Record<string, unknown>>;
  deleteEndpoint(req: NetworkRequest<'DeleteEndpoint'>): Promise<void>;
  join(req: NetworkRequest<'Join'>): Promise<JoinResponse>;
  leave(req: NetworkRequest<'Leave'>): Promise<void>;
  programExternalConnectivity(req: NetworkRequest<'ProgramExternalConnectivity'>): Promise<void>;
  revokeExternalConnectivity(req: NetworkRequest<'RevokeExternalConnectivity'>): Promise<void>;
}

/** What tsnet's remote IPAM driver does. */
export interface IpamDriverApi {
  getCapabilities(): Promise<IpamCapabilitiesResponse>;
  getDefaultAddressSpaces(): Promise<AddressSpacesResponse>;
  requestPool(req: IpamRequest<'RequestPool'>): Promise<RequestPoolResponse>;
  releasePool(req: IpamRequest<'ReleasePool'>): Promise<void>;
  requestAddress(req: IpamRequest<'RequestAddress'>): Promise<RequestAddressResponse>;
  releaseAddress(req: IpamRequest<'ReleaseAddress'>): Promise<void>;
}
