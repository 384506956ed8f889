/**
 * `npm run demo`: a virtio driver and a virtio device in two worker threads,
 * talking through split virtqueues in one SharedArrayBuffer (the in-process
 * transport). The device is the example checksum device: it hashes each
 * request's payload and writes the hash back; the driver checks every
 * answer. Each scenario is a fresh session: feature negotiation (§3.1.1),
 * queue setup, DRIVER_OK, a burst of requests, reset.
 *
 * The table shows what flowed and how much notification traffic the
 * suppression schemes saved: kicks (driver → device) and calls
 * (device → driver) that the ring said were needed vs. suppressed, and how
 * many of those had to wake a sleeping thread (Atomics.notify).
 *
 * @module
 */
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, featureBit } from "../src/spec/virtio.ts";
import type { PumpOptions } from "./checksum-driver.ts";
import { runSession, type SessionReport } from "./session.ts";

const VERSION_1 = featureBit(VIRTIO_F_VERSION_1);
const EVENT_IDX = featureBit(VIRTIO_RING_F_EVENT_IDX);

interface Scenario {
  readonly name: string;
  readonly features: bigint;
  readonly spin: number;
  readonly run: PumpOptions;
}

const base = { payloadBytes: 64, waitTimeoutMs: 5000, verify: true } as const;
const SCENARIOS: readonly Scenario[] = [
  {
    name: "ping-pong (1 in flight)",
    features: VERSION_1 | EVENT_IDX,
    spin: 0,
    run: { ...base, total: 20_000, batch: 1, maxInFlight: 1 },
  },
  {
    name: "batch 32, EVENT_IDX",
    features: VERSION_1 | EVENT_IDX,
    spin: 0,
    run: { ...base, total: 200_000, batch: 32, maxInFlight: 256 },
  },
  {
    name: "batch 32, flags only",
    features: VERSION_1,
    spin: 0,
    run: { ...base, total: 200_000, batch: 32, maxInFlight: 256 },
  },
  {
    name: "batch 32, busy-poll",
    features: VERSION_1 | EVENT_IDX,
    spin: 2000,
    run: { ...base, total: 200_000, batch: 32, maxInFlight: 256 },
  },
];

function row(s: Scenario, r: SessionReport): string[] {
  const run = r.driver.runs[0]!;
  const res = run.result;
  const dev = r.device.device;
  const ok = res.mismatches === 0 && res.duplicates === 0 && res.missing === 0;
  const feat = (r.driver.features & EVENT_IDX) !== 0n ? "VERSION_1 EVENT_IDX" : "VERSION_1";
  return [
    s.name,
    feat,
    res.requests.toLocaleString("en-US"),
    `${mib(res.bytesOut)} / ${mib(res.bytesIn)}`,
    `${run.stats.kicksRung} / ${run.stats.kicksSuppressed}`,
    `${dev.notificationsSent} / ${dev.notificationsSuppressed}`,
    `${run.stats.kickWakeups} / ${r.device.transport.callWakeups}`,
    res.elapsedMs.toFixed(0),
    Math.round(res.requests / (res.elapsedMs / 1000)).toLocaleString("en-US"),
    ok ? "all ok" : `BAD ${res.mismatches}/${res.duplicates}/${res.missing}`,
  ];
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

async function main(): Promise<void> {
  console.log("virtio-ts in-process transport demo");
  console.log(
    "driver worker ⇄ device worker (checksum device), one SharedArrayBuffer, split virtqueue of 256\n",
  );
  const rows: string[][] = [];
  let allOk = true;
  for (const s of SCENARIOS) {
    const r = await runSession({
      features: s.features,
      queueSize: 256,
      mode: "checksum",
      deviceLoop: { wait: "block", spin: s.spin },
      driverSpin: s.spin,
      runs: [s.run],
      timeoutMs: 60_000,
    });
    if (r.device.log.length > 0) console.log(r.device.log.join("\n"));
    const cells = row(s, r);
    allOk &&= cells[cells.length - 1] === "all ok";
    rows.push(cells);
    console.log(`  ${s.name}: ${cells[2]} requests in ${cells[7]} ms`);
  }
  console.log();
  console.log(
    table(
      [
        "scenario",
        "negotiated",
        "requests",
        "payload out / hashes in",
        "kicks sent / suppr.",
        "calls sent / suppr.",
        "wakeups kick / call",
        "ms",
        "req/s",
        "checked",
      ],
      rows,
    ),
  );
  console.log(
    "\nkicks/calls: notifications the ring asked for vs. suppressed (EVENT_IDX or flags);" +
      "\nwakeups: of those, how many found the other thread asleep (Atomics.notify).",
  );
  if (!allOk) process.exitCode = 1;
}

await main();
