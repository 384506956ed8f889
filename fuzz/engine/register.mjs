// Loaded with `node --import tsx --import ./fuzz/engine/register.mjs`: sets
// up the global coverage counters and registers ./instrument-hooks.mjs so
// that every project source under src/ imported afterwards is instrumented.
import { register } from "node:module";
import { fileURLToPath } from "node:url";

/** Must match COUNTERS in instrument-hooks.mjs. */
const COUNTERS = 1 << 18;
globalThis.__virtioFuzzCov = new Uint8Array(COUNTERS);
globalThis.__virtioFuzzEdges = 0;
globalThis.__virtioFuzzNote = (n) => {
  if (n > globalThis.__virtioFuzzEdges) globalThis.__virtioFuzzEdges = n;
};
const src = fileURLToPath(new URL("../../src/", import.meta.url));
register("./instrument-hooks.mjs", import.meta.url, { data: { include: [src] } });
