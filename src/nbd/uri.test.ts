import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorCode, isVirtioError } from "../errors.ts";
import { formatNbdTarget, parseNbdUri } from "./uri.ts";

test("uri.md examples give the export names it lists", () => {
  const cases: [string, string][] = [
    ["nbd://example.com/disk", "disk"],
    ["nbd+unix:///disk?socket=sock", "disk"],
    ["nbd://example.com/", ""],
    ["nbd://example.com", ""],
    ["nbd://example.com//disk", "/disk"],
    ["nbd://example.com/hello%20world", "hello world"],
  ];
  for (const [uri, name] of cases) assert.equal(parseNbdUri(uri).exportName, name, uri);
});

test("TCP: host, default and explicit port, IPv6 literal", () => {
  assert.deepEqual(parseNbdUri("nbd://example.com/disk"), {
    transport: "tcp",
    host: "example.com",
    port: 10809,
    exportName: "disk",
  });
  assert.deepEqual(parseNbdUri("nbd://127.0.0.1:4000/x"), {
    transport: "tcp",
    host: "127.0.0.1",
    port: 4000,
    exportName: "x",
  });
  assert.deepEqual(parseNbdUri("nbd://[::1]:4000/x"), {
    transport: "tcp",
    host: "::1",
    port: 4000,
    exportName: "x",
  });
});

test("Unix: socket path, abstract sockets, round trip through formatNbdTarget", () => {
  assert.deepEqual(parseNbdUri("nbd+unix:///?socket=/run/nbd%20x.sock"), {
    transport: "unix",
    path: "/run/nbd x.sock",
    exportName: "",
  });
  assert.equal(parseNbdUri("nbd+unix:///?socket=%00/abstract").transport, "unix");
  for (const uri of ["nbd+unix:///a%2Fb?socket=/tmp/s", "nbd://[::1]:99/e", "nbd://h:1/"]) {
    assert.deepEqual(parseNbdUri(formatNbdTarget(parseNbdUri(uri))), parseNbdUri(uri));
  }
});

test("every malformed form: one line naming what is wrong", () => {
  const cases: [string, RegExp][] = [
    ["", /not a URI/],
    ["disk.img", /not a URI/],
    ["http://example.com/disk", /unknown scheme http/],
    ["nbds://example.com/disk", /nbds needs TLS/],
    ["nbds+unix:///disk?socket=/s", /nbds\+unix needs TLS/],
    ["nbd:///disk", /no host/],
    ["nbd://example.com:99999/disk", /not a URI|bad port/],
    ["nbd://user@example.com/disk", /user info/],
    ["nbd://example.com/disk?tls-type=x509", /unknown query parameter "tls-type"/],
    ["nbd://example.com/disk#frag", /fragment/],
    ["nbd://example.com/%ff", /percent-encoded/],
    ["nbd://example.com/a%00b", /NUL/],
    [`nbd://example.com/${"a".repeat(4097)}`, /longer than 4096/],
    ["nbd+unix:///disk", /no socket=PATH/],
    ["nbd+unix:///disk?socket=", /no socket=PATH/],
    ["nbd+unix:///disk?socket=/a&socket=/b", /given twice/],
    ["nbd+unix://host/disk?socket=/s", /takes no host/],
    ["nbd+unix:///disk?socket=/s&x-foo=1", /unknown query parameter "x-foo"/],
  ];
  for (const [uri, match] of cases) {
    assert.throws(
      () => parseNbdUri(uri),
      (e: unknown) => {
        assert.ok(isVirtioError(e, ErrorCode.NBD_URI), `${uri}: ${String(e)}`);
        assert.match(e.message, match, uri);
        assert.ok(!e.message.includes("\n"), uri);
        return true;
      },
    );
  }
});
