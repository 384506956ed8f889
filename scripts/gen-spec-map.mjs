#!/usr/bin/env node
// Generates docs/spec-map.md from the "§" references in each source file's
// header and MUST quotes: spec section → the files that implement it; and,
// for the NBD protocol, from references of the form proto.md "Heading" (or
// uri.md "Heading") to the headings of NetworkBlockDevice/nbd doc/.
//   node scripts/gen-spec-map.mjs          write docs/spec-map.md
//   node scripts/gen-spec-map.mjs --check  exit 1 if docs/spec-map.md is stale
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const titles = {
  2.1: "Device Status Field",
  2.2: "Feature Bits",
  2.3: "Notifications",
  2.4: "Device Reset",
  2.5: "Device Configuration Space",
  2.7: "Split Virtqueues",
  "2.7.1": "Driver Requirements: Virtqueues",
  "2.7.2": "Legacy Interfaces: A Note on Virtqueue Layout",
  "2.7.4": "Message Framing",
  "2.7.5": "The Virtqueue Descriptor Table",
  "2.7.5.3": "Indirect Descriptors",
  "2.7.6": "The Virtqueue Available Ring",
  "2.7.7": "Used Buffer Notification Suppression",
  "2.7.8": "The Virtqueue Used Ring",
  "2.7.10": "Available Buffer Notification Suppression",
  "2.7.13": "Supplying Buffers to The Device",
  "2.7.14": "Receiving Used Buffers From The Device",
  2.6: "Virtqueues",
  2.8: "Packed Virtqueues",
  "2.8.1": "Driver and Device Ring Wrap Counters",
  "2.8.2": "Polling of available and used descriptors",
  "2.8.6": "Next Flag: Descriptor Chaining",
  "2.8.7": "Indirect Flag: Scatter-Gather Support",
  "2.8.10": "Driver and Device Event Suppression",
  "2.8.3": "Write Flag",
  "2.8.4": "Element Address and Length",
  "2.8.5": "Scatter-Gather Support",
  "2.8.8": "In-order use of descriptors",
  "2.8.9": "Multi-buffer requests",
  "2.8.10.1": "Structure Size and Alignment",
  "2.8.11": "Driver Requirements: Virtqueues",
  "2.8.12": "Device Requirements: Virtqueues",
  "2.8.15": "Device Requirements: The Virtqueue Descriptor Table",
  "2.8.16": "Driver Requirements: The Virtqueue Descriptor Table",
  "2.8.17": "Driver Requirements: Scatter-Gather Support",
  "2.8.18": "Device Requirements: Scatter-Gather Support",
  "2.8.19": "Driver Requirements: Indirect Descriptors",
  "2.8.20": "Virtqueue Operation",
  "2.8.13": "The Virtqueue Descriptor Format",
  "2.8.14": "Event Suppression Structure Format",
  "2.8.21": "Supplying Buffers to The Device",
  "2.8.21.1": "Placing Available Buffers Into The Descriptor Ring",
  "2.8.21.1.1": "Driver Requirements: Updating flags",
  "2.8.21.2": "Sending Available Buffer Notifications",
  "2.8.21.3": "Implementation Example",
  "2.8.21.3.1": "Driver Requirements: Sending Available Buffer Notifications",
  "2.8.22": "Receiving Used Buffers From The Device",
  2.9: "Driver Notifications",
  3.1: "Device Initialization",
  4.1: "Virtio Over PCI Bus",
  "4.1.2": "PCI Device Discovery",
  "4.1.2.3": "Legacy Interfaces: A Note on PCI Device Discovery",
  "4.1.3": "PCI Device Layout",
  "4.1.4": "Virtio Structure PCI Capabilities",
  "4.1.4.3": "Common configuration structure layout",
  "4.1.4.3.2": "Driver Requirements: Common configuration structure layout",
  "4.1.4.4": "Notification structure layout",
  "4.1.4.5": "ISR status capability",
  "4.1.4.6": "Device-specific configuration",
  "4.1.4.9": "PCI configuration access capability",
  "4.1.4.10": "Legacy Interfaces: A Note on PCI Device Layout",
  "4.1.5": "PCI-specific Initialization And Device Operation",
  "4.1.5.1": "PCI: Device Initialization",
  "4.1.5.2": "PCI: Available Buffer Notifications",
  "4.1.5.3": "PCI: Used Buffer Notifications",
  "4.1.5.4": "PCI: Notification of Device Configuration Changes",
  4.2: "Virtio Over MMIO",
  "4.2.2": "MMIO Device Register Layout",
  "4.2.2.2": "Driver Requirements: MMIO Device Register Layout",
  "4.2.3": "MMIO-specific Initialization And Device Operation",
  "4.2.3.1": "MMIO: Device Initialization",
  "4.2.3.2": "MMIO: Virtqueue Configuration",
  "4.2.3.3": "MMIO: Available Buffer Notifications",
  "4.2.3.4": "MMIO: Notifications From The Device",
  "4.2.4": "MMIO: Legacy interface",
  5.2: "Block Device",
  "5.2.3": "Block: Feature bits",
  "5.2.4": "Block: Device configuration layout",
  "5.2.5": "Block: Device Initialization",
  "5.2.6": "Block: Device Operation",
  6: "Reserved Feature Bits",
};

function files(dir, out = []) {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) files(p, out);
    else if (n.endsWith(".ts") && !n.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

const map = new Map();
const nbd = new Map();
for (const f of files(join(root, "src"))) {
  for (const m of readFileSync(f, "utf8").matchAll(/\b((?:proto|uri)\.md) "([^"\n]+)"/g)) {
    const sec = `${m[1]} "${m[2]}"`;
    if (!nbd.has(sec)) nbd.set(sec, new Set());
    nbd.get(sec).add(relative(root, f));
  }
  // Only VIRTIO spec sections: skip lines that cite sections of other documents.
  const text = readFileSync(f, "utf8")
    .split("\n")
    .filter((l) => !/\.md\b|anchors/.test(l))
    .join("\n");
  for (const m of text.matchAll(/§\s?(\d+(?:\.\d+)*)/g)) {
    const sec = m[1];
    if (!map.has(sec)) map.set(sec, new Set());
    map.get(sec).add(relative(root, f));
  }
}
const key = (s) =>
  s
    .split(".")
    .map((n) => n.padStart(4, "0"))
    .join(".");
const rows = [...map.keys()].sort((a, b) => (key(a) < key(b) ? -1 : 1));
let md = "# Spec map\n\n";
md +=
  "Which file implements which section of the VIRTIO 1.2 specification (section numbers as in\n";
md +=
  "1.2/1.3: split ring §2.7, block device §5.2). Generated from the `§` references in the sources by\n";
md +=
  "`node scripts/gen-spec-map.mjs`; the test suite fails when it is stale. The vhost-user protocol\n";
md +=
  "(qemu/qemu `docs/interop/vhost-user.rst`) is implemented in `src/vhost-user/` and `src/spec/vhost-user.ts`.\n\n";
md += "| section | title | files |\n|---|---|---|\n";
for (const sec of rows) {
  const fl = [...map.get(sec)]
    .sort()
    .map((f) => `\`${f}\``)
    .join(", ");
  md += `| §${sec} | ${titles[sec] ?? ""} | ${fl} |\n`;
}
md += "\n## NBD protocol\n\n";
md +=
  "Which file implements which heading of the NBD protocol (NetworkBlockDevice/nbd `doc/proto.md`)\n";
md += "and of its URI format (`doc/uri.md`), from the `proto.md \"Heading\"` references.\n\n";
md += "| document | heading | files |\n|---|---|---|\n";
for (const sec of [...nbd.keys()].sort()) {
  const [doc, heading] = [sec.slice(0, sec.indexOf(" ")), sec.slice(sec.indexOf(" ") + 1)];
  const fl = [...nbd.get(sec)]
    .sort()
    .map((f) => `\`${f}\``)
    .join(", ");
  md += `| ${doc} | ${heading.replaceAll('"', "")} | ${fl} |\n`;
}
const out = join(root, "docs/spec-map.md");
if (process.argv.includes("--check")) {
  let cur = "";
  try {
    cur = readFileSync(out, "utf8");
  } catch {
    /* missing */
  }
  if (cur !== md) {
    console.error("docs/spec-map.md is stale: run node scripts/gen-spec-map.mjs");
    process.exit(1);
  }
  console.log("spec map ok");
} else {
  writeFileSync(out, md);
  console.log(`wrote ${relative(root, out)} (${rows.length} sections)`);
}
