// The host CSPRNG for virtio-rng and random MAC addresses: node:crypto's randomFillSync, with
// node:crypto loaded on first use instead of at import. Loading it costs ~3 ms here, and the
// `ts-vmm` binary's start otherwise never needs it (vmm-reference DESIGN.md, start-up).
import { createRequire } from "node:module";

let fill: typeof import("node:crypto").randomFillSync | undefined;

/** Fills `buf` with cryptographically strong random bytes and returns it (node:crypto's `randomFillSync`). */
export function randomFill<T extends NodeJS.ArrayBufferView>(buf: T): T {
  fill ??= (createRequire(import.meta.url)("node:crypto") as typeof import("node:crypto")).randomFillSync;
  return fill(buf);
}
