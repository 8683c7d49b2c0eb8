import type { PioDevice } from "./pio-bus.js";

/** The port QEMU's isa-debug-exit uses in the ts-vmm harness. */
export const DEBUG_EXIT_PORT = 0xf4;

/**
 * The debug-exit port: a guest write of value `v` ends the VM, and the VMM's
 * process exits with `(v << 1) | 1` — the convention of QEMU's
 * `-device isa-debug-exit`, so the same test guest and harness work with both.
 */
export class DebugExit implements PioDevice {
  readonly #onExit: (value: number) => void;

  /** @param onExit receives the little-endian value the guest wrote (1, 2 or 4 bytes). */
  constructor(onExit: (value: number) => void) {
    this.#onExit = onExit;
  }

  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }

  write(_offset: number, data: Uint8Array): void {
    let v = 0;
    for (let i = data.length - 1; i >= 0; i--) v = v * 256 + (data[i] ?? 0);
    this.#onExit(v);
  }
}

/** The process exit code for a debug-exit value, as QEMU computes it (truncated to 8 bits by the OS). */
export function debugExitStatus(value: number): number {
  return ((value << 1) | 1) & 0xff;
}
