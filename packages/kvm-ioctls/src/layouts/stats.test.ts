// The KVM stats file decoder on synthetic files: what a well-formed file gives, and a
// typed InvalidStats (never an out-of-bounds read) for every offset and count gone wrong.
import { describe, expect, it } from "vitest";
import {
  STATS_DESC_FIXED_BYTES,
  STATS_HEADER_BYTES,
  STATS_MAX_DATA_BYTES,
  decodeStatsData,
  decodeStatsDescriptors,
  decodeStatsHeader,
  decodeStatsName,
  statsDescBlockBytes,
} from "./stats.js";

interface D { name: string; flags: number; exponent?: number; size: number; offset: number; bucket?: number }

const NAME = 48;

function header(numDesc: number, nameSize = NAME): Uint8Array {
  const b = new Uint8Array(STATS_HEADER_BYTES);
  const dv = new DataView(b.buffer);
  dv.setUint32(4, nameSize, true);
  dv.setUint32(8, numDesc, true);
  dv.setUint32(12, 24, true);
  dv.setUint32(16, 24 + nameSize, true);
  dv.setUint32(20, 24 + nameSize + numDesc * (16 + nameSize), true);
  return b;
}

function block(ds: readonly D[], nameSize = NAME): Uint8Array {
  const each = STATS_DESC_FIXED_BYTES + nameSize;
  const b = new Uint8Array(ds.length * each);
  const dv = new DataView(b.buffer);
  ds.forEach((d, i) => {
    dv.setUint32(i * each, d.flags, true);
    dv.setInt16(i * each + 4, d.exponent ?? 0, true);
    dv.setUint16(i * each + 6, d.size, true);
    dv.setUint32(i * each + 8, d.offset, true);
    dv.setUint32(i * each + 12, d.bucket ?? 0, true);
    b.set(new TextEncoder().encode(d.name), i * each + 16);
  });
  return b;
}

const DS: D[] = [
  { name: "exits", flags: 0x000, size: 1, offset: 0 },
  { name: "halt_poll_success_ns", flags: 0x020, exponent: -9, size: 1, offset: 8 },
  { name: "halt_wait_hist", flags: 0x024, exponent: -9, size: 4, offset: 16 },
  { name: "guest_mode", flags: 0x041, size: 1, offset: 48 },
  { name: "lin", flags: 0x003, size: 2, offset: 56, bucket: 10 },
];

describe("KVM stats layout", () => {
  it("decodes header, descriptors and data", () => {
    const h = decodeStatsHeader(header(DS.length));
    expect(h).toEqual({ flags: 0, nameSize: 48, numDesc: 5, idOffset: 24, descOffset: 72, dataOffset: 72 + 5 * 64 });
    expect(statsDescBlockBytes(h)).toBe(5 * 64);
    const { descriptors, dataBytes } = decodeStatsDescriptors(h, block(DS));
    expect(dataBytes).toBe(72);
    expect(descriptors.map((d) => [d.name, d.type, d.unit, d.base, d.exponent, d.size])).toEqual([
      ["exits", "cumulative", "none", "pow10", 0, 1],
      ["halt_poll_success_ns", "cumulative", "seconds", "pow10", -9, 1],
      ["halt_wait_hist", "log-hist", "seconds", "pow10", -9, 4],
      ["guest_mode", "instant", "boolean", "pow10", 0, 1],
      ["lin", "linear-hist", "none", "pow10", 0, 2],
    ]);
    expect(descriptors[4]!.bucketSize).toBe(10);
    const data = new Uint8Array(72);
    const dv = new DataView(data.buffer);
    for (let i = 0; i < 9; i++) dv.setBigUint64(i * 8, BigInt(i + 1) << 40n, true);
    const v = decodeStatsData(descriptors, data);
    expect(v["exits"]).toBe(1n << 40n);
    expect(v["halt_wait_hist"]).toEqual([3n << 40n, 4n << 40n, 5n << 40n, 6n << 40n]);
    expect(v["guest_mode"]).toBe(7n << 40n);
    expect(v["lin"]).toEqual([8n << 40n, 9n << 40n]);
  });

  it("keeps unknown type, unit and base bits as unknown", () => {
    const h = decodeStatsHeader(header(1));
    const { descriptors } = decodeStatsDescriptors(h, block([{ name: "future", flags: 0x2f9, size: 1, offset: 0 }]));
    expect(descriptors[0]).toMatchObject({ type: "unknown", unit: "unknown", base: "unknown", flags: 0x2f9 });
  });

  it("refuses headers out of limits", () => {
    expect(() => decodeStatsHeader(new Uint8Array(23))).toThrow(expect.objectContaining({ code: "InvalidStats" }));
    expect(() => decodeStatsHeader(header(1, 0))).toThrow(expect.objectContaining({ code: "InvalidStats", message: expect.stringContaining("name_size 0") }));
    expect(() => decodeStatsHeader(header(1, 1 << 20))).toThrow(expect.objectContaining({ code: "InvalidStats" }));
    expect(() => decodeStatsHeader(header(1 << 20))).toThrow(expect.objectContaining({ code: "InvalidStats", message: expect.stringContaining("descriptors") }));
  });

  it("refuses descriptors whose name, size or offset do not add up", () => {
    const h = decodeStatsHeader(header(1));
    const one = (d: D): unknown => decodeStatsDescriptors(h, block([d]));
    const err = (msg: string) => expect.objectContaining({ code: "InvalidStats", message: expect.stringContaining(msg) });
    expect(() => one({ name: "", flags: 0, size: 1, offset: 0 })).toThrow(err("empty name"));
    expect(() => one({ name: "x".repeat(NAME), flags: 0, size: 1, offset: 0 })).toThrow(err("not NUL-terminated"));
    expect(() => one({ name: "a\u0001b", flags: 0, size: 1, offset: 0 })).toThrow(err("non-printable"));
    expect(() => one({ name: "zero", flags: 0, size: 0, offset: 0 })).toThrow(err("size 0"));
    expect(() => one({ name: "odd", flags: 0, size: 1, offset: 4 })).toThrow(err("multiple of 8"));
    expect(() => one({ name: "far", flags: 0, size: 1, offset: STATS_MAX_DATA_BYTES })).toThrow(err("beyond"));
    expect(() => decodeStatsDescriptors(h, new Uint8Array(10))).toThrow(err("descriptor block"));
    const h2 = decodeStatsHeader(header(2));
    expect(() => decodeStatsDescriptors(h2, block([DS[0]!, DS[0]!]))).toThrow(err("two descriptors"));
  });

  it("refuses a data block shorter than a descriptor needs", () => {
    const h = decodeStatsHeader(header(DS.length));
    const { descriptors } = decodeStatsDescriptors(h, block(DS));
    expect(() => decodeStatsData(descriptors, new Uint8Array(64))).toThrow(expect.objectContaining({ code: "InvalidStats" }));
  });

  it("names stop at the first NUL", () => {
    expect(decodeStatsName(new TextEncoder().encode("kvm-1/vcpu-0\0junk\u0001"), "id")).toBe("kvm-1/vcpu-0");
  });
});
