/**
 * Shared shape of the drivers without a data path of their own (host, none, container): the
 * sandbox's namespace is decided by the controller (the host's, a fresh one with only loopback, or
 * another container's), so network create/delete and join/leave touch nothing.
 */
import { TsnetError } from '../core/errors.js';
import type { DriverDeps, DriverType, NetworkDriver } from './api.js';

export function createNullDriver(type: Exclude<DriverType, 'bridge' | 'macvlan'>, deps: DriverDeps, publishError: string | undefined): NetworkDriver {
  const log = deps.log.child({ component: type });
  return {
    type,
    hasDataPath: false,
    validateNetwork(spec) {
      const keys = Object.keys(spec.options);
      if (keys.length > 0) throw new TsnetError('INVALID_CONFIG', `option ${keys[0] ?? ''}: the ${type} driver takes no options`, { details: { field: keys[0] } });
      if (spec.subnets.length > 0) throw new TsnetError('INVALID_CONFIG', `subnet: the ${type} driver has no IP addresses of its own`, { details: { field: 'subnet' } });
      return {};
    },
    createNetwork: async () => undefined,
    deleteNetwork: async () => undefined,
    restore: async () => ({ networks: [], endpoints: [] }),
    join: async () => ({}),
    leave: async () => undefined,
    async publish(req) {
      if (publishError !== undefined) throw new TsnetError('INVALID_CONFIG', publishError, { details: { field: 'publish' } });
      if (req.mappings.length > 0) log.warn('published ports are discarded when using host network mode', { endpoint: req.endpointId });
    },
    unpublish: async () => undefined,
  };
}
