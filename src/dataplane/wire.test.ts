import { test } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode, VirtioError } from "../errors.ts";
import { fromWireError, toWireError } from "./wire.ts";

test("wire errors keep a VirtioError's code and details, and TypeError / RangeError", () => {
  const e = fromWireError(
    toWireError(new VirtioError(ErrorCode.DESC_LOOP, "loop", { head: 3 })),
  ) as VirtioError;
  assert.ok(e instanceof VirtioError);
  assert.equal(e.code, ErrorCode.DESC_LOOP);
  assert.deepEqual(e.details, { head: 3 });
  assert.ok(fromWireError(toWireError(new RangeError("r"))) instanceof RangeError);
  assert.ok(fromWireError(toWireError(new TypeError("t"))) instanceof TypeError);
  assert.equal(fromWireError(toWireError("plain")).message, "plain");
});
