/**
 * NBD URIs: `nbd://HOST[:PORT]/EXPORT` and `nbd+unix:///EXPORT?socket=PATH`.
 * NetworkBlockDevice/nbd doc/uri.md "NBD URI scheme", uri.md "NBD URI
 * authority", uri.md "NBD URI export name", uri.md "NBD URI socket parameter".
 *
 * TLS is not spoken, so the TLS schemes are refused (uri.md "Clients which do
 * not support TLS": they "SHOULD give an error"). Every malformed form gets
 * one line naming what is wrong (`VIRTIO_ERR_NBD_URI`).
 *
 * @module
 */
import { ErrorCode, VirtioError } from "../errors.ts";
import { NBD_DEFAULT_PORT, NBD_MAX_STRING_LENGTH } from "../spec/nbd.ts";

/** Where an NBD server listens and which export to ask for. */
export type NbdTarget =
  | {
      readonly transport: "tcp";
      readonly host: string;
      readonly port: number;
      readonly exportName: string;
    }
  | { readonly transport: "unix"; readonly path: string; readonly exportName: string };

function bad(uri: string, why: string): VirtioError {
  return new VirtioError(ErrorCode.NBD_URI, `NBD URI ${JSON.stringify(uri)}: ${why}`);
}

/** The export name: the path without its leading "/", percent-decoded (uri.md "NBD URI export name"). */
function exportNameOf(uri: string, pathname: string): string {
  let name: string;
  try {
    name = decodeURIComponent(pathname.startsWith("/") ? pathname.slice(1) : pathname);
  } catch {
    throw bad(uri, "the export name is not valid percent-encoded UTF-8");
  }
  // proto.md "Conventions": a string "MUST NOT contain NUL characters" and "MUST be no longer than 4096 bytes".
  if (name.includes("\0")) throw bad(uri, "the export name contains NUL");
  if (Buffer.byteLength(name) > NBD_MAX_STRING_LENGTH)
    throw bad(uri, `the export name is longer than ${NBD_MAX_STRING_LENGTH} bytes`);
  return name;
}

function checkQuery(uri: string, url: URL, allowed: readonly string[]): void {
  for (const key of new Set(url.searchParams.keys())) {
    if (!allowed.includes(key))
      throw bad(uri, `unknown query parameter "${key}" (TLS parameters are not supported)`);
    if (url.searchParams.getAll(key).length > 1) throw bad(uri, `"${key}" is given twice`);
  }
}

function parseTcp(uri: string, url: URL): NbdTarget {
  if (url.username !== "" || url.password !== "")
    throw bad(uri, "user info is only for TLS, which is not supported");
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "") throw bad(uri, "no host (expected nbd://HOST[:PORT]/EXPORT)");
  checkQuery(uri, url, []);
  const port = url.port === "" ? NBD_DEFAULT_PORT : Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(uri, `bad port ${url.port}`);
  return { transport: "tcp", host, port, exportName: exportNameOf(uri, url.pathname) };
}

function parseUnix(uri: string, url: URL): NbdTarget {
  if (url.host !== "" || url.username !== "")
    throw bad(uri, "a Unix socket URI takes no host (expected nbd+unix:///EXPORT?socket=PATH)");
  checkQuery(uri, url, ["socket"]);
  const path = url.searchParams.get("socket");
  if (path === null || path === "") throw bad(uri, "no socket=PATH query parameter");
  return { transport: "unix", path, exportName: exportNameOf(uri, url.pathname) };
}

/**
 * Parses an NBD URI.
 *
 * @example
 * ```ts
 * parseNbdUri("nbd+unix:///disk?socket=/run/nbd.sock");
 * // { transport: "unix", path: "/run/nbd.sock", exportName: "disk" }
 * ```
 * @throws {VirtioError} `NBD_URI` with one line naming what is wrong.
 */
export function parseNbdUri(uri: string): NbdTarget {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw bad(
      uri,
      "not a URI (expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)",
    );
  }
  if (url.hash !== "") throw bad(uri, "a fragment (#…) has no meaning here");
  switch (url.protocol) {
    case "nbd:":
      return parseTcp(uri, url);
    case "nbd+unix:":
      return parseUnix(uri, url);
    case "nbds:":
    case "nbds+unix:":
      throw bad(uri, `${url.protocol.slice(0, -1)} needs TLS, which is not supported`);
    default:
      throw bad(uri, `unknown scheme ${url.protocol.slice(0, -1)} (expected nbd or nbd+unix)`);
  }
}

/** The URI of a target (for logs and specs). */
export function formatNbdTarget(t: NbdTarget): string {
  const name = encodeURIComponent(t.exportName);
  if (t.transport === "unix") return `nbd+unix:///${name}?socket=${encodeURIComponent(t.path)}`;
  const host = t.host.includes(":") ? `[${t.host}]` : t.host;
  return `nbd://${host}:${t.port}/${name}`;
}
