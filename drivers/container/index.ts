/** `--network container:NAME`: the sandbox is another container's namespace. */
import type { DriverDeps, NetworkDriver } from '../api.js';
import { createNullDriver } from '../null-driver.js';

export const createContainerDriver = (deps: DriverDeps): NetworkDriver =>
  createNullDriver('container', deps, 'conflicting options: port publishing and the container type network mode');
