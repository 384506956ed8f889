/**
 * A small device type for the emulated transports' tests: two queues (max
 * 16 and 8), an 8-byte configuration space the driver may write at byte 4,
 * a device feature bit in each word. It records activations and kicks.
 * VIRTIO 1.2 §2 (a device as the framework sees it: ../device/backend.ts).
 *
 * @module
 */
import type { ActivationContext, VirtioDeviceBackend } from "../device/backend.ts";
import { ConfigSpace } from "../device/config-space.ts";
import { VirtioDevice } from "../device/virtio-device.ts";
import { GuestMemory } from "../memory/guest-memory.ts";
import { featureBit } from "../spec/virtio.ts";

/** The test device type. */
export class RegisterTestBackend implements VirtioDeviceBackend {
  readonly name = "regs-test";
  readonly deviceId = 2;
  readonly queueMaxSizes = [16, 8];
  readonly features = featureBit(3) | featureBit(40);
  readonly config = new ConfigSpace(Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]));
  readonly kicks: number[] = [];
  readonly activations: bigint[] = [];
  activate(ctx: ActivationContext): void {
    this.activations.push(ctx.features);
  }
  queueNotify(index: number): void {
    this.kicks.push(index);
  }
  writeConfig(offset: number, data: Uint8Array, config: ConfigSpace): void {
    if (offset === 4 && data.length === 1) config.store(4, data);
  }
}

/** A framework device over the test backend, `memoryBytes` of guest memory (64 KiB), logs collected. */
export function registerTestDevice(memoryBytes = 1 << 16): {
  device: VirtioDevice;
  backend: RegisterTestBackend;
  logs: string[];
} {
  const backend = new RegisterTestBackend();
  const logs: string[] = [];
  const memory = GuestMemory.createShared([{ guestPhysAddr: 0, size: memoryBytes }]);
  const device = new VirtioDevice(backend, { memory, log: (l) => logs.push(l) });
  return { device, backend, logs };
}

/** An interrupt line that records its level and counts. */
export function recordingLine(): {
  up: boolean;
  raises: number;
  lowers: number;
  raise(): void;
  lower(): void;
} {
  return {
    up: false,
    raises: 0,
    lowers: 0,
    raise() {
      this.up = true;
      this.raises++;
    },
    lower() {
      this.up = false;
      this.lowers++;
    },
  };
}
