/**
 * `virtio-ts` usage and start-up errors, through `main()` with an in-memory
 * io: each mistake is exactly one stderr line and exit status 2 (bad usage)
 * or 1 (image, socket); nothing reaches stdout and nothing is left behind.
 * The real process is covered in process.test.ts.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, openSync, closeSync, truncateSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import { COMMANDS, ExitStatus, main } from "../../src/cli/main.ts";
import { close, listenUnix } from "../../src/native/index.ts";
import { fdSnapshot, fdsOpenedSince, tempDir } from "../../src/native/test-support.ts";
import { MemoryIo } from "./support.ts";

const dir = tempDir("virtio-ts-cli-");
const IMAGE = join(dir.path, "disk.img");
closeSync(openSync(IMAGE, "w"));
truncateSync(IMAGE, 1 << 20);
const SOCK = join(dir.path, "vu.sock");
const base = ["vhost-user-blk", "--socket-path", SOCK, "--image", IMAGE];

/** Runs main; asserts one stderr line, no stdout, the exit status; returns the line. */
async function fails(argv: string[], status: number): Promise<string> {
  const io = new MemoryIo();
  const code = await main(argv, io);
  assert.equal(code, status, `exit status of ${argv.join(" ")}${io.dump()}`);
  assert.deepEqual(io.stdout, [], `nothing on stdout for ${argv.join(" ")}`);
  assert.equal(io.stderr.length, 1, `one stderr line for ${argv.join(" ")}${io.dump()}`);
  assert.equal(io.subscribers, 0, "no signal handler left behind");
  return io.stderr[0]!;
}

describe("virtio-ts usage", { timeout: 60_000 }, () => {
  test("every bad argument: one line naming it, exit status 2", async (t) => {
    t.after(dir.remove);
    const usage: [string[], RegExp][] = [
      [[], /^virtio-ts: missing command \(see virtio-ts --help\)$/],
      [["serve"], /^virtio-ts: unknown command "serve"/],
      [["--verbose"], /^virtio-ts: unknown flag "--verbose"/],
      [
        [...base, "--nope"],
        /^virtio-ts vhost-user-blk: unknown flag --nope \(see virtio-ts vhost-user-blk --help\)$/,
      ],
      [[...base, "-x"], /: unknown flag -x /],
      [[...base, "extra"], /: unexpected argument "extra" /],
      [["vhost-user-blk", "--image", IMAGE], /: give exactly one of --socket-path and --fd /],
      [[...base, "--fd", "5"], /: give exactly one of --socket-path and --fd /],
      [
        ["vhost-user-blk", "--socket", SOCK, "--blk-file", IMAGE, "--fd", "5"],
        /: give exactly one of --socket-path and --fd /,
      ],
      [["vhost-user-blk", "--socket", SOCK], /: give exactly one of --image, --nbd and --backing /],
      [[...base, "--nbd", "nbd://h/x"], /: give exactly one of --image, --nbd and --backing /],
      [[...base, "--format", "qcow2"], /: --format must be auto or raw, got "qcow2" /],
      [
        ["vhost-user-blk", "--socket", SOCK, "--nbd", "nbd://h/x", "--format", "raw"],
        /: --format applies to --image only /,
      ],
      [[...base, "--backing-option", "a=b"], /: --backing-option applies to --backing only /],
      [
        ["vhost-user-blk", "--socket", SOCK, "--backing", "s.mjs", "--backing-option", "ab"],
        /: --backing-option takes KEY=VALUE, got "ab" /,
      ],
      [["vhost-user-blk", "--image", IMAGE, "--socket"], /: --socket needs a value \(PATH\) /],
      [["vhost-user-blk", "--socket", "--image", IMAGE], /: --socket needs a value \(PATH\) /],
      [["vhost-user-blk", "--socket=", "--image", IMAGE], /: --socket needs a non-empty value /],
      [[...base, "--socket", SOCK], /: --socket-path is given more than once /],
      [[...base, "--blk-file", IMAGE], /: --image is given more than once /],
      [[...base, "--num-queues"], /: --num-queues needs a value \(N\) /],
      [[...base, "--num-queues", "two"], /: --num-queues must be an integer, got "two" /],
      [[...base, "--num-queues", "1.5"], /: --num-queues must be an integer, got "1.5" /],
      [[...base, "--num-queues", "0x2"], /: --num-queues must be an integer, got "0x2" /],
      [[...base, "--num-queues", "0"], /: --num-queues must be in 1\.\.1024, got 0 /],
      [[...base, "--num-queues", "-2"], /: --num-queues must be in 1\.\.1024, got -2 /],
      [[...base, "--num-queues", "1025"], /: --num-queues must be in 1\.\.1024, got 1025 /],
      [[...base, "--queue-size", "100"], /: --queue-size must be a power of two, got "100" /],
      [[...base, "--queue-size", "2"], /: --queue-size must be in 4\.\.32768, got 2 /],
      [[...base, "--queue-size", "65536"], /: --queue-size must be in 4\.\.32768, got 65536 /],
      [
        [...base, "--logical-block-size", "1000"],
        /: --logical-block-size must be 512, 1024, 2048 or 4096, got "1000" /,
      ],
      [
        [...base, "--logical-block-size", "8192"],
        /: --logical-block-size must be in 512\.\.4096, got 8192 /,
      ],
      [
        [...base, "--serial", "x".repeat(21)],
        /: --serial must be 1\.\.20 printable ASCII characters, got "x{21}" /,
      ],
      [
        [...base, "--serial", "disk\u00e9"],
        /: --serial must be 1\.\.20 printable ASCII characters/,
      ],
      [[...base, "--max-in-flight", "0"], /: --max-in-flight must be in 1\.\.32768, got 0 /],
      [[...base, "--read-only=yes"], /: --read-only takes no value /],
      [[...base, "--writeback", "--writeback"], /: --writeback is given more than once /],
      [["vhost-user-blk", "--fd", "1", "--image", IMAGE], /: --fd must be in 3\.\.65535, got 1 /],
      [
        [...base, "--log-level", "loud"],
        /: --log-level must be one of error, warn, info, debug, trace, got "loud" /,
      ],
      [[...base, "-v", "--log-level", "debug"], /: give one of --verbose and --log-level /],
      [[...base, "--log-format", "xml"], /: --log-format must be text or json, got "xml" /],
      [[...base, "--log-timestamp=yes"], /: --log-timestamp takes no value /],
    ];
    for (const [argv, expected] of usage) {
      assert.match(await fails(argv, ExitStatus.USAGE), expected, argv.join(" "));
    }
    assert.equal(existsSync(SOCK), false, "no socket was created");
  });

  test("--export mistakes: one line naming the export and the key, exit status 2", async () => {
    const x = (n: number): string => `socket=${join(dir.path, `x${n}.sock`)},image=${IMAGE}`;
    const exp = (...values: string[]): string[] => [
      "vhost-user-blk",
      ...values.flatMap((v) => ["--export", v]),
    ];
    const usage: [string[], RegExp][] = [
      [
        [...exp(x(1)), "--socket", SOCK],
        /: --socket-path cannot be combined with --export \(give socket-path= in each --export\) /,
      ],
      [[...exp(x(1)), "--image", IMAGE], /: --image cannot be combined with --export /],
      [exp(`${x(1)},colour=red`), /: --export 1: unknown key "colour" /],
      [exp(x(1), `${x(2)},num-queues=0`), /: --export 2: num-queues must be in 1\.\.1024, got 0 /],
      [
        exp(`${x(1)},queue-size=100`),
        /: --export 1: queue-size must be a power of two, got "100" /,
      ],
      [exp(`${x(1)},num-queues`), /: --export 1: num-queues needs a value \(num-queues=N\) /],
      [exp(`${x(1)},read-only=yes`), /: --export 1: read-only takes =on or =off, got "yes" /],
      [exp(`image=${IMAGE}`), /: --export 1: give exactly one of socket-path= and fd= /],
      [
        exp(`socket=${SOCK},socket-path=${SOCK},image=${IMAGE}`),
        /: --export 1: socket-path= is given more than once /,
      ],
      [exp(`socket=${SOCK}`), /: --export 1: give exactly one of image=, nbd= and backing= /],
      [exp(`${x(1)},id=a b`), /: --export 1: id must be 1\.\.32 of A-Z a-z 0-9 \. _ -, got "a b" /],
      [exp(`${x(1)},id=d`, `${x(2)},id=d,read-only`), /: --export 2: same id as --export 1 \(d\) /],
      [exp(x(1), `${x(1)},read-only`), /: --export 2: same socket as --export 1 /],
      [exp(x(1), x(2)), /: --export 2: same writable image as --export 1 /],
      [exp(`${x(1)},serial=a,b`), /: --export 1: unknown key "b" /],
    ];
    for (const [argv, expected] of usage) {
      assert.match(await fails(argv, ExitStatus.USAGE), expected, argv.join(" "));
    }
  });

  test("image and socket problems: one line, exit status 1, nothing left open", async (t) => {
    const d = tempDir("virtio-ts-cli-");
    t.after(d.remove);
    const img = (name: string, size: number): string => {
      const p = join(d.path, name);
      writeFileSync(p, Buffer.alloc(size));
      return p;
    };
    const odd = img("odd.img", 1000);
    const lbs = img("lbs.img", 3 * 512);
    const empty = img("empty.img", 0);
    const good = img("good.img", 1 << 20);
    const sock = join(d.path, "s.sock");
    const regular = img("regular-file", 10);
    const live = join(d.path, "live.sock");
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(live, resolve));
    t.after(() => server.close());
    const fileFd = openSync(good, "r");
    t.after(() => closeSync(fileFd));
    const serve = (image: string, ...rest: string[]): string[] => [
      "vhost-user-blk",
      "--image",
      image,
      ...(rest.includes("--fd") ? [] : ["--socket", sock]),
      ...rest,
    ];
    const before = fdSnapshot();
    const failures: [string[], RegExp][] = [
      [
        serve(join(d.path, "missing.img")),
        /^virtio-ts: disk image \S+missing\.img: does not exist$/,
      ],
      [serve(d.path), /^virtio-ts: disk image \S+: not a regular file$/],
      [
        serve(odd),
        /^virtio-ts: disk image \S+odd\.img: size 1000 is not a multiple of the 512-byte logical block size$/,
      ],
      [
        serve(lbs, "--logical-block-size", "4096"),
        /size 1536 is not a multiple of the 4096-byte logical block size$/,
      ],
      [serve(empty), /^virtio-ts: disk image \S+empty\.img: is empty \(0 bytes\)$/],
      [
        ["vhost-user-blk", "--image", good, "--socket", live],
        /^virtio-ts: socket \S+live\.sock is in use: a server already answers there$/,
      ],
      [
        ["vhost-user-blk", "--image", good, "--socket", regular],
        /^virtio-ts: socket \S+regular-file: the path exists and is not a socket \(not removed\)$/,
      ],
      [
        ["vhost-user-blk", "--image", good, "--socket", join(d.path, "no", "dir", "s.sock")],
        /^virtio-ts: socket \S+: its directory does not exist$/,
      ],
      [
        ["vhost-user-blk", "--image", good, "--socket", join(d.path, "x".repeat(120))],
        /^virtio-ts: socket \S+: path too long for a Unix socket \(at most 107 bytes\)$/,
      ],
      [serve(good, "--fd", "999"), /^virtio-ts: fd 999 is not open$/],
      [serve(good, "--fd", String(fileFd)), /^virtio-ts: fd \d+ is not a socket$/],
    ];
    for (const [argv, expected] of failures) {
      assert.match(await fails(argv, ExitStatus.FAILURE), expected, argv.join(" "));
    }
    assert.equal(existsSync(sock), false, "no socket left behind");
    assert.equal(existsSync(regular), true, "a regular file at the socket path is kept");
    assert.deepEqual(fdsOpenedSince(before), [], "every image and socket fd closed");
  });

  test("--help and --version", async () => {
    const io = new MemoryIo();
    assert.equal(await main(["--help"], io), ExitStatus.OK);
    for (const name of COMMANDS.keys()) assert.ok(io.stdout.some((l) => l.includes(name)));
    const v = new MemoryIo();
    assert.equal(await main(["--version"], v), ExitStatus.OK);
    assert.match(v.stdout.join("\n"), /^\d+\.\d+\.\d+/);
    // --help wins over any other (even bad) argument.
    const h = new MemoryIo();
    assert.equal(await main(["vhost-user-blk", "--num-queues", "zero", "-h"], h), ExitStatus.OK);
    assert.match(
      h.stdout[0]!,
      /^Usage: virtio-ts vhost-user-blk \(--socket-path PATH \| --fd N\) --image FILE/,
    );
    assert.deepEqual(h.stderr, []);
  });

  test("several exports: each listed, its lines named; a bad one stops the start with nothing left behind", async (t) => {
    const d = tempDir("virtio-ts-cli-");
    t.after(d.remove);
    const image = join(d.path, "disk.img");
    writeFileSync(image, Buffer.alloc(1 << 20));
    const [s1, s2] = [join(d.path, "1.sock"), join(d.path, "2.sock")];
    const before = fdSnapshot();
    const bad = new MemoryIo();
    const missing = join(d.path, "missing.img");
    const argvBad = ["vhost-user-blk", "--export", `socket=${s1},image=${image}`];
    argvBad.push("--export", `id=two,socket=${s2},image=${missing}`);
    assert.equal(await main(argvBad, bad), ExitStatus.FAILURE, bad.dump());
    assert.deepEqual(bad.stderr, [`virtio-ts: disk image ${missing}: does not exist`]);
    assert.equal(existsSync(s1), false, "the first export's socket is removed again");
    assert.deepEqual(fdsOpenedSince(before), []);

    const io = new MemoryIo();
    const argv = ["vhost-user-blk", "--export", `socket=${s1},image=${image},read-only`];
    argv.push(
      "--export",
      `id=two,socket=${s2},image=${image},read-only,serial=x,,y`,
      "--num-queues",
      "2",
    );
    const run = main(argv, io);
    await io.waitOut(new RegExp(`^listening on ${s2}$`));
    assert.deepEqual(io.stdout, [`listening on ${s1}`, `listening on ${s2}`]);
    io.signal("SIGTERM");
    assert.equal(await run, ExitStatus.OK, io.dump());
    assert.deepEqual(io.stderr, [
      `virtio-ts: export1: serving ${image} (1 MiB) as virtio-blk: 2 queues of 128, read-only, 1 I/O thread`,
      `virtio-ts: two: serving ${image} (1 MiB) as virtio-blk: 2 queues of 128, read-only, 1 I/O thread, serial x,y`,
      "virtio-ts: SIGTERM: stopping (draining requests in flight)",
      "virtio-ts: stopped",
    ]);
    assert.equal(existsSync(s1) || existsSync(s2), false, "sockets removed");
    assert.deepEqual(fdsOpenedSince(before), []);
  });

  test("a stale socket file is replaced; a stop signal removes the socket and releases everything", async (t) => {
    const d = tempDir("virtio-ts-cli-");
    t.after(d.remove);
    const image = join(d.path, "disk.img");
    writeFileSync(image, Buffer.alloc(1 << 20));
    const sock = join(d.path, "vu.sock");
    close(listenUnix(sock)); // a socket file nobody answers on
    mkdirSync(join(d.path, "unused"));
    const before = fdSnapshot();
    const io = new MemoryIo();
    const run = main(["vhost-user-blk", "--socket", sock, "--image", image], io);
    assert.equal(await io.waitOut(/^listening on /), `listening on ${sock}`);
    io.signal("SIGTERM");
    assert.equal(await run, ExitStatus.OK, io.dump());
    assert.equal(existsSync(sock), false, "socket removed");
    assert.deepEqual(io.stderr, [
      `virtio-ts: serving ${image} (1 MiB) as virtio-blk: 1 queue of 128, write-through, 1 I/O thread`,
      "virtio-ts: SIGTERM: stopping (draining requests in flight)",
      "virtio-ts: stopped",
    ]);
    assert.equal(io.subscribers, 0);
    assert.deepEqual(fdsOpenedSince(before), []);
  });
});
