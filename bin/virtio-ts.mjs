#!/usr/bin/env node
// The virtio-ts command. The package runs its TypeScript sources directly:
// tsx (a runtime dependency) is registered as a module loader, then the CLI
// entry is imported. No build step between a clone and the daemon.
import { register } from "tsx/esm/api";

register();
const { runProcess } = await import("../src/cli/main.ts");
await runProcess();
