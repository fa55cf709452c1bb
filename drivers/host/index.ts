/** `--network host`: the sandbox is the host's namespace. Published ports are discarded, as Docker does. */
import type { DriverDeps, NetworkDriver } from '../api.js';
import { createNullDriver } from '../null-driver.js';

export const createHostDriver = (deps: DriverDeps): NetworkDriver => createNullDriver('host', deps, undefined);
