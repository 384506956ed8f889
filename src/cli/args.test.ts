import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type FlagSpec, UsageError, formatFlagHelp, parseFlags, requireFlags } from "./args.ts";

const SPECS: readonly FlagSpec[] = [
  {
    name: "socket",
    kind: "string",
    metavar: "PATH",
    required: true,
    aliases: ["sock", "unix"],
    help: "socket",
  },
  { name: "count", kind: "integer", metavar: "N", min: 1, max: 64, help: "count\nsecond line" },
  {
    name: "size",
    kind: "integer",
    min: 4,
    max: 1024,
    check: (v) =>
      ((v as number) & ((v as number) - 1)) === 0 ? undefined : "must be a power of two",
    help: "size",
    group: "Ring",
  },
  { name: "ro", kind: "boolean", help: "ro", group: "Ring" },
  { name: "help", short: "h", kind: "boolean", help: "help", group: "Other" },
];

function usage(argv: string[]): string {
  try {
    const { flags } = parseFlags(argv, SPECS);
    requireFlags(flags, SPECS);
  } catch (e) {
    assert.ok(e instanceof UsageError, `a UsageError, got ${String(e)}`);
    assert.doesNotMatch(e.message, /\n/, "one line");
    return e.message;
  }
  assert.fail(`no error for ${JSON.stringify(argv)}`);
}

describe("parseFlags", () => {
  test("values separate and inline, booleans, short aliases, positionals, --", () => {
    const { flags, positionals } = parseFlags(
      ["--socket", "/s", "--count=3", "--ro", "-h", "pos", "--", "--size"],
      SPECS,
    );
    assert.deepEqual(
      [...flags],
      [
        ["socket", "/s"],
        ["count", 3],
        ["ro", true],
        ["help", true],
      ],
    );
    assert.deepEqual(positionals, ["pos", "--size"]);
    assert.equal(parseFlags(["--socket=-odd"], SPECS).flags.get("socket"), "-odd");
    assert.deepEqual([...parseFlags(["--sock", "/a"], SPECS).flags], [["socket", "/a"]]);
    assert.deepEqual([...parseFlags(["--unix=/b"], SPECS).flags], [["socket", "/b"]]);
    assert.equal(parseFlags(["--socket", "-"], SPECS).flags.get("socket"), "-");
  });

  test("every mistake is one line naming the flag", () => {
    const cases: [string[], RegExp][] = [
      [["--nope"], /^unknown flag --nope$/],
      [["-x"], /^unknown flag -x$/],
      [["--socket"], /^--socket needs a value \(PATH\)$/],
      [["--socket", "--ro"], /^--socket needs a value/],
      [["--socket="], /^--socket needs a non-empty value$/],
      [["--socket", "a", "--count", "two"], /^--count must be an integer, got "two"$/],
      [["--socket", "a", "--count", "1.5"], /must be an integer, got "1.5"/],
      [["--socket", "a", "--count", "0x2"], /must be an integer, got "0x2"/],
      [["--socket", "a", "--count", "01"], /must be an integer, got "01"/],
      [["--socket", "a", "--count", ""], /must be an integer, got ""/],
      [["--socket", "a", "--count", "0"], /^--count must be in 1\.\.64, got 0$/],
      [["--socket", "a", "--count", "-1"], /^--count must be in 1\.\.64, got -1$/],
      [["--socket", "a", "--count", "65"], /^--count must be in 1\.\.64, got 65$/],
      [["--socket", "a", "--count", "99999999999999999999"], /must be in 1\.\.64/],
      [["--socket", "a", "--size", "100"], /^--size must be a power of two, got "100"$/],
      [["--socket", "a", "--ro=yes"], /^--ro takes no value$/],
      [["--socket", "a", "--socket", "b"], /^--socket is given more than once$/],
      [["--sock", "a", "--socket", "b"], /^--socket is given more than once$/],
      [["--sock"], /^--sock needs a value \(PATH\)$/],
      [["--unix="], /^--unix needs a non-empty value$/],
      [["--ro"], /^--socket is required$/],
    ];
    for (const [argv, expected] of cases) assert.match(usage(argv), expected, argv.join(" "));
  });

  test("help lists every flag once, grouped, continuation lines aligned", () => {
    const help = formatFlagHelp(SPECS);
    for (const s of SPECS) assert.equal(help.split(`--${s.name}`).length, 2, s.name);
    const row = (names: string, text: string): string => `  ${names}`.padEnd(28) + text;
    assert.ok(
      help.startsWith(
        `Options:\n${row("--socket PATH", "socket")}\n${" ".repeat(28)}(also --sock, --unix)\n`,
      ),
      help,
    );
    assert.ok(help.includes(`\n${row("--count N", "count")}\n${" ".repeat(28)}second line\n`));
    assert.ok(help.includes("\n\nRing:\n"));
    assert.ok(help.endsWith(`\nOther:\n${row("-h, --help", "help")}`));
  });
});
