/**
 * The container supervisor's entry point: `node shim.js CONTAINER_DIR`, started detached by the
 * runtime, one per container. A composition root: it hands the pure planning of shim-plan.ts to the
 * supervisor mechanism in sys/shim.ts, which does every file, /proc and process operation.
 */
import { superviseContainer } from '../sys/shim.js';
import {
  UNSHARE_SIGKILL_MESSAGE, containerArgv, exitCodeOf, fstabText, hostnameArgv, mountArgv, rootfsMountPoints, setupFailure, waiterArgv,
} from './shim-plan.js';
import type { ShimSpec } from './spec.js';

superviseContainer<ShimSpec>(process.argv[2], {
  waiterArgv, hostnameArgv, mountArgv, containerArgv, fstabText, rootfsMountPoints, setupFailure, exitCodeOf,
  unshareSigkillMessage: UNSHARE_SIGKILL_MESSAGE,
}).then(
  () => process.exit(0),
  () => process.exit(1),
);
