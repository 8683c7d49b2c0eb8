import { closeSync, mkdtempSync, openSync, ftruncateSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DeviceKind, DeviceSpec } from "../src/index.js";

/** A sparse raw disk image in a fresh temp directory; remove() deletes both. */
export function tempDisk(sizeMiB: number): { path: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-disk-"));
  const path = join(dir, "disk.img");
  const fd = openSync(path, "w");
  ftruncateSync(fd, sizeMiB << 20);
  closeSync(fd);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** One device of each kind the VMM provides (blk backed by `disk`). */
export function allDevices(kinds: readonly DeviceKind[], disk: string): DeviceSpec[] {
  return kinds.map((k): DeviceSpec => {
    switch (k) {
      case "blk":
        return { kind: "blk", path: disk };
      case "vsock":
        return { kind: "vsock", cid: 42 };
      case "net":
        return { kind: "net" };
      default:
        return { kind: k };
    }
  });
}
