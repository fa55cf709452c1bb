/**
 * The "none" backend: tsnet programs no firewall at all (the user manages it). Input is still
 * validated, so a bad request fails the same way under every backend.
 */
import type { Firewall, FirewallListing } from './api.js';
import { validateEndpointPorts, validateNetworkPolicy } from './plan.js';

export function createNoneFirewall(): Firewall {
  return {
    backend: 'none',
    async ensureNetwork(p) {
      validateNetworkPolicy(p);
    },
    async removeNetwork() {
      // nothing to remove
    },
    async ensurePorts(p) {
      validateEndpointPorts(p);
    },
    async removePorts() {
      // nothing to remove
    },
    async list(): Promise<FirewallListing> {
      return { networks: [], endpoints: [] };
    },
    async removeAll() {
      // nothing to remove
    },
  };
}
