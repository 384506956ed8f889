/**
 * Soak: a real Linux guest runs mixed random reads and writes at iodepth 32
 * against `virtio-ts vhost-user-blk` (1 queue with O_DIRECT and a writeback
 * cache; 2 queues on 2 I/O threads through the page cache), and the guest's
 * watchdog fails the run if requests stay outstanding with no completion.
 * Short here; `npm run soak -- --minutes N` runs the same for longer.
 *
 * @module
 */
import { describe, test } from "node:test";
import { startVirtioTsCli } from "./guest/backends.ts";
import { soakScenario } from "./guest/soak.ts";

const SECONDS = 40;

describe("soak: mixed random I/O in a real guest, no stall", () => {
  test("1 queue, --direct --writeback", { timeout: 300_000 }, async (t) => {
    const r = await soakScenario(startVirtioTsCli, {
      numQueues: 1,
      seconds: SECONDS,
      cliArgs: ["--direct", "--writeback"],
    });
    t.diagnostic(`reads ${r.ios[0]}, writes ${r.ios[1]} in ${SECONDS} s`);
  });

  test("2 queues on 2 I/O threads", { timeout: 300_000 }, async (t) => {
    const r = await soakScenario(startVirtioTsCli, {
      numQueues: 2,
      seconds: SECONDS,
      cliArgs: ["--io-threads", "2"],
    });
    t.diagnostic(`reads ${r.ios[0]}, writes ${r.ios[1]} in ${SECONDS} s`);
  });
});
