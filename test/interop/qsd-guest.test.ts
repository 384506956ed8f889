/**
 * The real-guest scenarios against qemu-storage-daemon's vhost-user-blk
 * export: proves the harness (guest, runner, checks) with the reference
 * backend, so the same scenarios can judge this project's CLI.
 *
 * @module
 */
import { startQsd } from "./guest/backends.ts";
import { guestScenarios } from "./guest/scenarios.ts";

guestScenarios("qemu-storage-daemon", startQsd);
