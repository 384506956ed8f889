/**
 * The cost targets (issue 10's table) checked against one run's results:
 * each target is a ratio against qemu-storage-daemon (or the C ringtest)
 * from the same run, or an absolute bound on memory or idle CPU. A target
 * whose measurement is absent says "not measured", never "met".
 *
 * @module
 */
import type { GuestPoint } from "./guest-bench.ts";
import type { GuestlessPoint } from "./guestless-bench.ts";
import type { BenchResults } from "./report.ts";
import type { RingBenchReport } from "./ring-bench.ts";
import type { Table } from "./lib/table.ts";

/** One target, what was measured, and whether it is met (undefined: not measured). */
export interface TargetCheck {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean | undefined;
}

const NOT_MEASURED = { measured: "not measured", met: undefined } as const;

function worst<T>(
  items: readonly T[],
  value: (t: T) => number | undefined,
  pick: "min" | "max",
): { item: T; value: number } | undefined {
  let best: { item: T; value: number } | undefined;
  for (const item of items) {
    const v = value(item);
    if (v === undefined) continue;
    if (!best || (pick === "min" ? v < best.value : v > best.value)) best = { item, value: v };
  }
  return best;
}

/** The worst cell of a ratio target and how many cells met it. */
function cells<T>(
  items: readonly T[],
  value: (t: T) => number | undefined,
  name: (t: T) => string,
  pick: "min" | "max",
): Pick<TargetCheck, "measured" | "met"> {
  const ok = (v: number): boolean => (pick === "min" ? v >= 1 : v <= 1);
  const w = worst(items, value, pick);
  if (!w) return NOT_MEASURED;
  const values = items.map(value).filter((v): v is number => v !== undefined);
  const met = values.filter(ok).length;
  return {
    measured: `${pick === "min" ? "lowest" : "highest"} ${w.value.toFixed(2)}× (${name(w.item)}); ${met} of ${values.length} met`,
    met: met === values.length,
  };
}

/** An absolute bound on one measured value. */
function bound(
  value: number | undefined,
  limit: number,
  what: (v: number) => string,
): Pick<TargetCheck, "measured" | "met"> {
  return value === undefined ? NOT_MEASURED : { measured: what(value), met: value <= limit };
}

/**
 * Our sleeping ring (ring-wait) against the C ringtest with --sleep, at kick
 * batch 32 and ping-pong: median over median; not measured without C figures.
 */
function ringVsC(ring: RingBenchReport | undefined): Pick<TargetCheck, "measured" | "met"> {
  const jobs = ["batch-32", "ping-pong"] as const;
  const ratioOf = (job: (typeof jobs)[number]): number | undefined => {
    const ours = ring?.points.find(
      (p) => p.transport === "ring-wait" && (p.layout ?? "split") === "split" && p.job === job,
    );
    const c = ring?.c?.find((p) => p.mode === "sleep" && p.job === job);
    return ours && c && c.roundTripsPerSec.median > 0
      ? ours.roundTripsPerSec.median / c.roundTripsPerSec.median
      : undefined;
  };
  return cells(jobs, ratioOf, (job) => `ring-wait ${job} vs C --sleep`, "min");
}

const gName = (p: GuestPoint): string => `${p.label}, ${p.queues}q`;
const glName = (p: GuestlessPoint): string => `${p.rw} QD${p.depth}, ${p.queues}q`;

/** Every target, checked on medians. */
export function checkTargets(r: BenchResults): TargetCheck[] {
  const guest = r.guest?.points.filter((p) => p.backend === "virtio-ts") ?? [];
  const direct = r.guest?.points.filter((p) => p.backend === "virtio-ts-direct") ?? [];
  const gl = r.guestless?.points.filter((p) => p.backend === "virtio-ts") ?? [];
  const hwm = (q: number): number | undefined =>
    r.guestless?.memory.find((m) => m.backend === "virtio-ts" && m.queues === q)?.hwmMiB.median;
  const fp = r.footprint?.rows.find((x) => x.backend === "virtio-ts");
  const exportsN = r.footprint?.options.exports ?? 16;
  return [
    {
      target:
        "Guest-less IOPS ≥ 1.0× qemu-storage-daemon in every cell (4K randread, randwrite; QD 1/32/128; 1 and 2 queues)",
      ...cells(gl, (p) => p.iopsRatio?.median, glName, "min"),
    },
    {
      target: "Guest-less backend CPU per I/O ≤ 1.0× in every cell",
      ...cells(gl, (p) => p.cpuPerIoRatio?.median, glName, "max"),
    },
    {
      target: "Real guest backend CPU per I/O ≤ 1.0× in every workload (page-cache pairing)",
      ...cells(guest, (p) => p.cpuPerIoRatio?.median, gName, "max"),
    },
    {
      target: "Real guest backend CPU per I/O ≤ 1.0× in every workload (O_DIRECT pairing)",
      ...cells(direct, (p) => p.cpuPerIoRatio?.median, gName, "max"),
    },
    {
      target: "In-process ring ≥ 1.0× Linux's C ringtest (sleep batch 32, ping-pong)",
      ...ringVsC(r.ring),
    },
    {
      target: "Peak RSS under load, 1 queue / 1 I/O thread ≤ 64 MiB",
      ...bound(hwm(1), 64, (v) => `${v.toFixed(1)} MiB (guest-less, VmHWM, median)`),
    },
    {
      target: "Peak RSS under load, 2 queues ≤ 80 MiB",
      ...bound(hwm(2), 80, (v) => `${v.toFixed(1)} MiB (guest-less, VmHWM, median)`),
    },
    {
      target: "Peak RSS under load, --io-threads 0 ≤ 48 MiB",
      ...bound(
        fp?.smallHwmMiB?.median ?? undefined,
        48,
        (v) => `${v.toFixed(1)} MiB (VmHWM, median)`,
      ),
    },
    {
      target: "Idle backend with a connected front-end < 1 % of one CPU",
      ...bound(fp?.idleCpuPercent?.median ?? undefined, 0.999, (v) => `${v.toFixed(2)} %`),
    },
    {
      target: `One process serving ${exportsN} exports: RSS per added export ≤ 4 MiB, every export passes under load`,
      ...(fp?.perAddedExportMiB
        ? {
            measured: `${fp.perAddedExportMiB.median.toFixed(2)} MiB per added export; ${fp.loadPassed} of ${fp.loadRuns} export runs passed`,
            met: fp.perAddedExportMiB.median <= 4 && fp.loadPassed === fp.loadRuns,
          }
        : NOT_MEASURED),
    },
  ];
}

/** The targets as a table. */
export function targetsTable(checks: readonly TargetCheck[]): Table {
  return {
    header: ["target", "measured (virtio-ts; ratios × qemu-storage-daemon, medians)", "met"],
    rows: checks.map((c) => [
      c.target,
      c.measured,
      c.met === undefined ? "–" : c.met ? "yes" : "**no**",
    ]),
  };
}
