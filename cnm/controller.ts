/**
 * The controller: the one entry of every door into the network model. It sequences validate →
 * allocate → driver → persist → DNS for each operation and undoes what it did when a step fails;
 * it holds no kernel code and no state (records are re-read by id on every call). The work is in
 * small modules of free functions over `ControllerDeps` (networks.ts, sandboxes.ts, endpoints.ts,
 * publish.ts, reconcile.ts); this file binds them. Locks and their order: locks.ts.
 */
import type { EndpointRecord, LinkRecord, NetworkRecord, SandboxRecord, SwitchRecord } from './model.js';
import type { Impairment } from '../sys/api.js';
import type {
  ClusterNetworkSpec, ConnectRequest, ControllerDeps, CreateDoorEndpointRequest, CreateDoorNetworkRequest, CreateNetworkRequest, CreateSandboxRequest, NetworkDetails, PortRequest, SandboxHandle,
} from './deps.js';
import type { IfName, SandboxId } from '../core/net.js';
import type { Peer } from '../drivers/api.js';
import { connect, createDoorEndpoint, deleteDoorEndpoint, disconnect, getEndpoint, publishDoorEndpoint, unpublishDoorEndpoint } from './endpoints.js';
import { endpointsOf, findNetwork, findSandbox, netnsOf, specOf } from './lookup.js';
import { adoptClusterNetwork, createDoorNetwork, createNetwork, deleteDoorNetwork, deleteNetwork, dropClusterNetwork, ensurePredefined, findOrAdoptNetwork, syncClusterPeers, inspectNetwork, listNetworks, pruneNetworks } from './networks.js';
import { reconcile, reloadFirewall } from './reconcile.js';
import { createSandbox, deleteSandbox, listSandboxes } from './sandboxes.js';
import { createLink, createSwitch, deleteLink, deleteSwitch, impairLink, listLinks, listSwitches, type CreateLinkRequest, type CreateSwitchRequest } from './links.js';

export type { CreateLinkRequest, CreateSwitchRequest, LinkEndRequest } from './links.js';
export type {
  ClusterNetworkSpec, ClusterPort, RemoteEndpoint, CnmChange, ConnectRequest, ControllerDeps, CreateDoorEndpointRequest, CreateDoorNetworkRequest, CreateNetworkRequest, CreateSandboxRequest, NetworkDetails,
  NetworkMode, PortRequest, SandboxFiles, SandboxHandle, SubnetRequest,
} from './deps.js';
export { DEFAULT_BRIDGE } from './networks.js';
export { netnsOf, specOf };

export interface Controller {
  ensurePredefined(): Promise<void>;
  createNetwork(req: CreateNetworkRequest): Promise<NetworkRecord>;
  deleteNetwork(idOrName: string): Promise<void>;
  /** Removes every network without endpoints that is not predefined; returns their names. */
  pruneNetworks(): Promise<string[]>;
  listNetworks(): Promise<NetworkRecord[]>;
  findNetwork(idOrName: string): Promise<NetworkRecord>;
  inspectNetwork(idOrName: string): Promise<NetworkDetails>;
  createSandbox(req: CreateSandboxRequest): Promise<SandboxHandle>;
  findSandbox(idOrName: string): Promise<SandboxRecord>;
  listSandboxes(): Promise<SandboxRecord[]>;
  endpointsOf(sandboxId: SandboxId): Promise<EndpointRecord[]>;
  connect(sandbox: string, network: string, req?: ConnectRequest): Promise<EndpointRecord>;
  disconnect(sandbox: string, network: string): Promise<void>;
  /** Resolves with the endpoints this call removed (none when another remover got there first). */
  deleteSandbox(idOrName: string): Promise<readonly EndpointRecord[]>;
  /** Finishes or undoes what a crash interrupted and restores networks and published ports in the kernel. */
  reconcile(): Promise<{ readonly cleaned: string[]; readonly restored: string[] }>;
  /**
   * Re-applies every network's firewall policy and every published port from the records (after an
   * admin or a firewall manager flushed rules); returns the names of the networks and the ids of
   * the endpoints it applied. `force` (default true): whatever the kernel shows; false: only what
   * the kernel lacks (the daemon's watcher).
   */
  reloadFirewall(opts?: { readonly force?: boolean }): Promise<{ readonly networks: string[]; readonly endpoints: string[] }>;

  // Doors that own their sandboxes (Docker's remote driver): the same records, IPAM, driver and port picker.
  createDoorNetwork(req: CreateDoorNetworkRequest): Promise<NetworkRecord>;
  deleteDoorNetwork(id: string): Promise<void>;
  createDoorEndpoint(req: CreateDoorEndpointRequest & { readonly hostIf: IfName; readonly peerIf: IfName }): Promise<EndpointRecord>;
  publishDoorEndpoint(id: string, ports: readonly PortRequest[]): Promise<EndpointRecord>;
  unpublishDoorEndpoint(id: string): Promise<void>;
  deleteDoorEndpoint(id: string): Promise<void>;
  getEndpoint(id: string): Promise<EndpointRecord | undefined>;

  // Point-to-point links between sandboxes (and switch ports), and switches: links.ts.
  createLink(req: CreateLinkRequest): Promise<LinkRecord>;
  deleteLink(id: string): Promise<void>;
  listLinks(): Promise<LinkRecord[]>;
  /** Replaces the impairments of what leaves end `end` (0 or 1) of a link. */
  impairLink(id: string, end: number, imp: Impairment): Promise<LinkRecord>;
  createSwitch(req: CreateSwitchRequest): Promise<SwitchRecord>;
  deleteSwitch(idOrName: string): Promise<void>;
  listSwitches(): Promise<SwitchRecord[]>;
  // The cluster's agent: this host's copies of the cluster's networks.
  adoptClusterNetwork(c: ClusterNetworkSpec): Promise<NetworkRecord>;
  /** true if the copy was removed (false: gone already, or local endpoints still use it). */
  dropClusterNetwork(id: string): Promise<boolean>;
  /** The kernel's entries for the other hosts' endpoints of a cluster network, made exactly `peers`. */
  syncClusterPeers(id: string, peers: readonly Peer[]): Promise<{ readonly added: number; readonly removed: number }>;
}

export function createController(deps: ControllerDeps): Controller {
  return {
    ensurePredefined: () => ensurePredefined(deps),
    createNetwork: (req) => createNetwork(deps, req),
    deleteNetwork: (idOrName) => deleteNetwork(deps, idOrName),
    pruneNetworks: () => pruneNetworks(deps),
    listNetworks: () => listNetworks(deps),
    findNetwork: (idOrName) => (deps.cluster !== undefined ? findOrAdoptNetwork(deps, idOrName) : findNetwork(deps, idOrName)),
    inspectNetwork: (idOrName) => inspectNetwork(deps, idOrName),
    createSandbox: (req) => createSandbox(deps, req),
    findSandbox: (idOrName) => findSandbox(deps, idOrName),
    listSandboxes: () => listSandboxes(deps),
    endpointsOf: (sandboxId) => endpointsOf(deps, sandboxId),
    connect: (sandbox, network, req) => connect(deps, sandbox, network, req),
    disconnect: (sandbox, network) => disconnect(deps, sandbox, network),
    deleteSandbox: (idOrName) => deleteSandbox(deps, idOrName),
    reconcile: () => reconcile(deps),
    reloadFirewall: (opts) => reloadFirewall(deps, opts),
    createDoorNetwork: (req) => createDoorNetwork(deps, req),
    deleteDoorNetwork: (id) => deleteDoorNetwork(deps, id),
    createDoorEndpoint: (req) => createDoorEndpoint(deps, req),
    publishDoorEndpoint: (id, ports) => publishDoorEndpoint(deps, id, ports),
    unpublishDoorEndpoint: (id) => unpublishDoorEndpoint(deps, id),
    deleteDoorEndpoint: (id) => deleteDoorEndpoint(deps, id),
    getEndpoint: (id) => getEndpoint(deps, id),
    createLink: (req) => createLink(deps, req),
    deleteLink: (id) => deleteLink(deps, id),
    listLinks: () => listLinks(deps),
    impairLink: (id, end, imp) => impairLink(deps, id, end, imp),
    createSwitch: (req) => createSwitch(deps, req),
    deleteSwitch: (idOrName) => deleteSwitch(deps, idOrName),
    listSwitches: () => listSwitches(deps),
    adoptClusterNetwork: (c) => adoptClusterNetwork(deps, c),
    dropClusterNetwork: (id) => dropClusterNetwork(deps, id),
    syncClusterPeers: (id, peers) => syncClusterPeers(deps, id, peers),
  };
}
