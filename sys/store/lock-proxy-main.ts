/**
 * The lock helper (lock-proxy.ts), started in the network namespace playing "host" by a process
 * outside it: holds that process's store locks there, until its stdin closes.
 */
import { abstractSocketLock } from './lock.js';
import { serveLockProxy } from './lock-proxy.js';

await serveLockProxy(process.stdin, process.stdout, abstractSocketLock);
process.exit(0);
