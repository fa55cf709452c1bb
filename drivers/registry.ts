/** The driver table: one factory per driver type, built once per composition root. */
import { TsnetError } from '../core/errors.js';
import { DRIVER_TYPES, type DriverDeps, type DriverType, type NetworkDriver } from './api.js';
import { createBridgeDriver } from './bridge/index.js';
import { createContainerDriver } from './container/index.js';
import { createHostDriver } from './host/index.js';
import { createMacvlanDriver } from './macvlan/index.js';
import { createNoneDriver } from './none/index.js';
import { createOverlayDriver } from './overlay/index.js';

export type DriverRegistry = (type: string) => NetworkDriver;

export function createDriverRegistry(deps: DriverDeps): DriverRegistry {
  const drivers = {
    bridge: createBridgeDriver(deps),
    host: createHostDriver(deps),
    none: createNoneDriver(deps),
    container: createContainerDriver(deps),
    macvlan: createMacvlanDriver(deps),
    overlay: createOverlayDriver(deps),
  } as const satisfies Record<DriverType, NetworkDriver>;
  return (type) => {
    if (!(DRIVER_TYPES as readonly string[]).includes(type)) {
      throw new TsnetError('INVALID_CONFIG', `driver: unknown driver ${JSON.stringify(type)} (known: ${DRIVER_TYPES.join(', ')})`, { details: { field: 'driver', value: type } });
    }
    return drivers[type as DriverType];
  };
}
