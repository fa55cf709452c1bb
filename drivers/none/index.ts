/** `--network none`: a sandbox of its own with loopback only. */
import type { DriverDeps, NetworkDriver } from '../api.js';
import { createNullDriver } from '../null-driver.js';

export const createNoneDriver = (deps: DriverDeps): NetworkDriver =>
  createNullDriver('none', deps, 'publish: a container on network "none" has no network to publish ports on');
