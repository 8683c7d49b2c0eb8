import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";

/** A single-region test memory of exactly `size` bytes at `start`. */
export function makeMemory(size = 0x20000, start = 0): GuestMemoryArrayBuffer {
  return GuestMemoryArrayBuffer.fromRanges([{ start, size }], { shared: false });
}
