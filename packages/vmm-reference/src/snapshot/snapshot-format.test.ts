import { describe, expect, it } from "vitest";
import { crc64 } from "./crc64.js";
import { decodeSnapshotFile, encodeSnapshotFile, SNAPSHOT_FORMAT_VERSION } from "./file-format.js";
import { decodeState, encodeState } from "./json-codec.js";
import { cpuMismatch } from "./cpu-check.js";
import { snapshotBootRecord } from "./take.js";
import type { LinuxBoot } from "@ts-vmm/linux-loader";

const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    return `${(e as { code?: string }).code}: ${(e as Error).message}`;
  }
  return "no error";
};

describe("CRC-64/XZ", () => {
  it("has the catalogue check value and continues across calls", () => {
    const s = Buffer.from("123456789");
    expect(crc64(s)).toBe(0x995dc9bbdf1939fan);
    expect(crc64(s.subarray(4), crc64(s.subarray(0, 4)))).toBe(0x995dc9bbdf1939fan);
    expect(crc64(new Uint8Array(0))).toBe(0n);
  });

  it("slice-by-8 agrees with the bit-at-a-time definition for every length 0..64 and every split", () => {
    // The definition: reflected ECMA-182, one bit at a time, on a bigint.
    const slow = (d: Uint8Array): bigint => {
      let c = 0xffff_ffff_ffff_ffffn;
      for (const b of d) {
        c ^= BigInt(b);
        for (let k = 0; k < 8; k++) c = c & 1n ? (c >> 1n) ^ 0xc96c5795d7870f42n : c >> 1n;
      }
      return c ^ 0xffff_ffff_ffff_ffffn;
    };
    let seed = 0x2545f491;
    const bytes = new Uint8Array(64).map(() => ((seed = (seed * 1103515245 + 12345) >>> 0), seed >>> 24));
    for (let n = 0; n <= 64; n++) {
      const d = bytes.subarray(0, n);
      const want = slow(d);
      expect(crc64(d), `length ${n}`).toBe(want);
      for (const cut of [1, 3, 7, 8, 9]) if (cut < n) expect(crc64(d.subarray(cut), crc64(d.subarray(0, cut))), `length ${n} cut ${cut}`).toBe(want);
    }
  });
});

describe("snapshot file format", () => {
  const state = { a: 1n << 63n, b: new Uint8Array([1, 2, 255]), c: [{ d: "x" }], e: null };
  it("round-trips bigints and bytes", () => {
    expect(decodeSnapshotFile(encodeSnapshotFile(state))).toEqual(state);
    expect(decodeState(encodeState({ z: 0n }))).toEqual({ z: 0n });
  });
  it("refuses every flipped byte, a truncation, padding, another version and another magic", () => {
    const good = encodeSnapshotFile(state);
    for (let i = 0; i < good.byteLength; i++) {
      const b = good.slice();
      b[i] = b[i]! ^ 0x40;
      expect(code(() => decodeSnapshotFile(b))).toMatch(/^SnapshotInvalid: /);
    }
    expect(code(() => decodeSnapshotFile(good.subarray(0, good.byteLength - 1)))).toMatch(/SnapshotInvalid: .*truncated/);
    expect(code(() => decodeSnapshotFile(good.subarray(0, 10)))).toMatch(/SnapshotInvalid: .*truncated/);
    expect(code(() => decodeSnapshotFile(new Uint8Array([...good, 0])))).toMatch(/SnapshotInvalid: .*padded/);
    // A well-formed file of another version (its CRC correct) is refused for its version.
    expect(code(() => decodeSnapshotFile(encodeSnapshotFile(state, SNAPSHOT_FORMAT_VERSION + 1)))).toMatch(/SnapshotInvalid: .*format version 2/);
    const m = good.slice();
    m[0] = 0x58;
    expect(code(() => decodeSnapshotFile(m))).toMatch(/SnapshotInvalid: .*magic/);
  });
  it("refuses a tagged value that is not one", () => {
    expect(() => decodeState('{"x":{"$u64":"zz"}}')).toThrow(SyntaxError);
    expect(() => decodeState('{"x":{"$b64":"**"}}')).toThrow(SyntaxError);
    expect(() => decodeState('{"x":{"$b64":"AQ"}}')).toThrow(SyntaxError); // not canonical: "AQ==" is
    expect(() => decodeState('{"x":{"$b64":"AQ=\\n="}}')).toThrow(SyntaxError);
    expect(decodeState('{"x":[{"$b64":"AQI="},{"$u64":"ff"}]}')).toEqual({ x: [new Uint8Array([1, 2]), 255n] });
    // "__proto__" stays an own property: a tagged value under it must not become the prototype.
    const p = decodeState('{"__proto__":{"$b64":"AQ=="},"y":{"__proto__":{"$u64":"2"}}}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(p)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(p, "__proto__")?.value).toEqual(new Uint8Array([1]));
    expect(Object.getOwnPropertyDescriptor(p["y"], "__proto__")?.value).toBe(2n);
  });
});

describe("CPU check", () => {
  const vendor = (ebx: number, edx: number, ecx: number) => ({ function: 0, index: 0, flags: 0, eax: 0xd, ebx, ecx, edx });
  const amd = vendor(0x68747541, 0x69746e65, 0x444d4163);
  const intel = vendor(0x756e6547, 0x49656e69, 0x6c65746e);
  const leaf7 = (ebx: number) => ({ function: 7, index: 0, flags: 1, eax: 0, ebx, ecx: 0, edx: 0 });
  it("refuses another vendor and a feature KVM cannot give, naming the bit", () => {
    expect(cpuMismatch([amd, leaf7(0b101)], [amd, leaf7(0b101)])).toBeUndefined();
    expect(cpuMismatch([amd], [intel])).toMatch(/"AuthenticAMD" CPU and this host is "GenuineIntel"/);
    expect(cpuMismatch([amd, leaf7(1 << 16)], [amd, leaf7(0)])).toMatch(/CPUID.7.0:EBX bit 16/);
    // A bit KVM gives a vCPU although KVM_GET_SUPPORTED_CPUID leaves it out (PVM) counts as given.
    expect(cpuMismatch([amd, leaf7(1 << 16)], [amd, leaf7(0)], [leaf7(1 << 16)])).toBeUndefined();
  });
});

describe("the boot record in a snapshot", () => {
  it("keeps where the kernel went but not the bytes the loader wrote (they are in guest memory)", () => {
    const kernel = new Uint8Array(4 << 20).fill(0x90);
    const boot = {
      protocol: "linux64", kernel: { loadAddress: 0x100000, end: 0x500000, entry64: 0x100200, runtimeStart: 0x1000000, initSize: 0x2000000 },
      entry: 0x100200, initrd: { addr: 0x8000000, size: 1 << 20 }, cmdline: "console=ttyS0", cmdlineAddr: 0x20000, e820: [],
      bootParams: undefined, startInfoAddr: undefined, rsdpAddr: undefined, cpu: {},
      writes: [{ addr: 0x100000, data: kernel }, { addr: 0x8000000, data: new Uint8Array(1 << 20) }],
    } as unknown as LinuxBoot;
    const kept = snapshotBootRecord(boot);
    expect(kept.writes).toEqual([]);
    expect({ ...kept, writes: boot.writes }).toEqual(boot);
    expect(encodeState(kept).length).toBeLessThan(1024);
  });
});
