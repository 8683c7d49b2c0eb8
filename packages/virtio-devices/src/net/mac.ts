import { randomFill } from "../random.js";
import { VirtioDeviceError } from "../errors.js";

/**
 * Parses `aa:bb:cc:dd:ee:ff` (hex, `:` or `-`) into 6 bytes.
 * @throws {@link VirtioDeviceError} `"InvalidArgument"` for anything else, or a multicast address.
 */
export function parseMac(mac: string): Uint8Array {
  const m = typeof mac === "string" ? /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(mac) : null;
  if (m === null) throw new VirtioDeviceError("InvalidArgument", `MAC address must look like 52:54:00:12:34:56, got ${JSON.stringify(mac)}`);
  const b = Uint8Array.from(m.slice(1).map((h) => parseInt(h, 16)));
  if ((b[0]! & 1) !== 0) throw new VirtioDeviceError("InvalidArgument", `MAC address ${mac} is a multicast address`);
  return b;
}

/** Formats 6 bytes as `aa:bb:cc:dd:ee:ff`. */
export function formatMac(b: Uint8Array): string {
  return [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** A random unicast, locally administered MAC address (first byte `x2`, `x6`, `xa` or `xe`). */
export function randomMac(): Uint8Array {
  const b = randomFill(new Uint8Array(6));
  b[0] = (b[0]! & 0xfc) | 0x02;
  return b;
}
