import { readFileSync } from "node:fs";
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";
import { describe, expect, it } from "vitest";
import { normalizeCpuid } from "./normalize.js";

const recorded = (name: string): CpuidEntry[] =>
  (JSON.parse(readFileSync(new URL(`../../test/fixtures/normalize/${name}`, import.meta.url), "utf8")) as { entries: CpuidEntry[] }).entries;
const pvm = recorded("pvm-epyc-supported-cpuid.json");

/** A small AMD-style table (vendor AuthenticAMD, extended range to 0x8000001E) for the AMD topology leaves. */
const amd: CpuidEntry[] = [
  { function: 0, index: 0, flags: 0, eax: 0x10, ebx: 0x6874_7541, ecx: 0x444d_4163, edx: 0x6974_6e65 },
  { function: 1, index: 0, flags: 0, eax: 0x00a1_0f11, ebx: 0x0080_0800, ecx: 0x7ef8_3203, edx: 0x178b_fbff },
  { function: 0xb, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 0 },
  { function: 0x4000_0001, index: 0, flags: 0, eax: 0x0100_fefb, ebx: 0, ecx: 0, edx: 0 },
  { function: 0x8000_0000, index: 0, flags: 0, eax: 0x8000_0021, ebx: 0x6874_7541, ecx: 0x444d_4163, edx: 0x6974_6e65 },
  { function: 0x8000_0001, index: 0, flags: 0, eax: 0x00a1_0f11, ebx: 0, ecx: 0x75c2_37ff, edx: 0x2fd3_fbff },
  { function: 0x8000_0008, index: 0, flags: 0, eax: 0x3030, ebx: 0, ecx: 0x0000_750f, edx: 0 },
  { function: 0x8000_001e, index: 0, flags: 0, eax: 0x13, ebx: 0x109, ecx: 0x3, edx: 0 },
];

const get = (t: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry => {
  const e = t.find((x) => x.function === fn && x.index === index);
  if (!e) throw new Error(`no leaf 0x${fn.toString(16)}.${index}`);
  return e;
};
const sig = (e: CpuidEntry): string => Buffer.from(new Uint32Array([e.ebx, e.ecx, e.edx]).buffer).toString("latin1");

describe("normalizeCpuid on the recorded table of this machine", () => {
  it("sets the hypervisor bit, the KVM signature, features and the timing leaf", () => {
    const t = normalizeCpuid(pvm, { vcpuCount: 1, vcpuId: 0, tscKhz: 2_450_000, tscDeadline: true });
    expect(get(t, 1).ecx >>> 31).toBe(1);
    expect((get(t, 1).ecx >>> 24) & 1).toBe(1);
    const s = get(t, 0x4000_0000);
    expect(sig(s)).toBe("KVMKVMKVM\0\0\0");
    expect(s.eax).toBe(0x4000_0010);
    const kvmFeatures = get(pvm, 0x4000_0001).eax;
    expect(get(t, 0x4000_0001).eax).toBe((kvmFeatures & ~(1 << 15)) >>> 0);
    expect(get(t, 0x4000_0001).eax & 0b1001).toBe(0b1001); // KVM_FEATURE_CLOCKSOURCE and CLOCKSOURCE2 (kvmclock)
    expect(get(t, 0x4000_0010)).toMatchObject({ eax: 2_450_000, ebx: 1_000_000 });
    expect(t.filter((e) => e.function === 0x4000_0000)).toHaveLength(1);
  });

  it("leaves 0x40000010 out without a TSC frequency, and TSC-deadline off unless offered", () => {
    const t = normalizeCpuid(pvm, { vcpuCount: 1, vcpuId: 0 });
    expect(get(t, 0x4000_0000).eax).toBe(0x4000_0001);
    expect(t.some((e) => e.function === 0x4000_0010)).toBe(false);
    expect((get(t, 1).ecx >>> 24) & 1).toBe((get(pvm, 1).ecx >>> 24) & 1);
  });

  it.each([1, 2, 4, 7])("topology for %i vCPUs: APIC id = vCPU id in leaves 1, 0xB and 0x1F", (n) => {
    const bits = Math.ceil(Math.log2(n));
    for (let id = 0; id < n; id++) {
      const t = normalizeCpuid(pvm, { vcpuCount: n, vcpuId: id });
      expect(get(t, 1).ebx >>> 24).toBe(id);
      expect((get(t, 1).ebx >>> 16) & 0xff).toBe(n);
      expect((get(t, 1).edx >>> 28) & 1).toBe(n > 1 ? 1 : 0);
      expect((get(t, 1).ebx & 0xffff)).toBe(get(pvm, 1).ebx & 0xffff); // brand index, CLFLUSH size kept
      for (const fn of [0xb, 0x1f]) {
        const leaves = t.filter((e) => e.function === fn);
        if (get(pvm, 0).eax < fn) { expect(leaves).toHaveLength(0); continue; }
        expect(leaves.map((e) => [e.index, e.eax, e.ebx, e.ecx, e.edx])).toEqual([
          [0, 0, 1, 0x100, id],
          [1, bits, n, 0x201, id],
          [2, 0, 0, 2, id],
        ]);
        expect(leaves.every((e) => e.flags === 1)).toBe(true);
      }
      for (const e of t.filter((x) => x.function === 4 && (x.eax & 0x1f) !== 0)) expect(e.eax >>> 26).toBe(n - 1);
      const e8 = get(t, 0x8000_0008);
      expect(e8.ecx & 0xff).toBe(n - 1);
      expect((e8.ecx >>> 12) & 0xf).toBe(bits);
    }
  });

  it("does not modify its input", () => {
    const copy = structuredClone(pvm);
    normalizeCpuid(pvm, { vcpuCount: 4, vcpuId: 3, tscKhz: 1000 });
    expect(pvm).toEqual(copy);
  });

  it("refuses impossible vCPU ids and counts", () => {
    expect(() => normalizeCpuid(pvm, { vcpuCount: 2, vcpuId: 2 })).toThrow(RangeError);
    expect(() => normalizeCpuid(pvm, { vcpuCount: 0, vcpuId: 0 })).toThrow(RangeError);
    expect(() => normalizeCpuid(pvm, { vcpuCount: 1.5, vcpuId: 0 })).toThrow(RangeError);
    expect(() => normalizeCpuid(pvm, { vcpuCount: 1, vcpuId: 0, tscKhz: -1 })).toThrow(RangeError);
  });
});

describe("normalizeCpuid on an AMD-style table", () => {
  it("sets CmpLegacy, NC/ApicIdSize and the 0x8000001E ids", () => {
    const t = normalizeCpuid(amd, { vcpuCount: 4, vcpuId: 2 });
    expect(get(t, 0x8000_0001).ecx & 2).toBe(2);
    expect(get(t, 0x8000_0008).ecx & 0xf0ff).toBe((2 << 12) | 3);
    expect(get(t, 0x8000_0008).ecx & 0x0f00).toBe(0x0500); // PerfTscSize etc. kept
    expect(get(t, 0x8000_001e)).toMatchObject({ eax: 2, ebx: 2, ecx: 0, edx: 0 });
    expect(get(normalizeCpuid(amd, { vcpuCount: 1, vcpuId: 0 }), 0x8000_0001).ecx & 2).toBe(0);
  });

  it("keeps the KVM feature bits but MSI_EXT_DEST_ID", () => {
    const t = normalizeCpuid(amd, { vcpuCount: 1, vcpuId: 0 });
    expect(get(t, 0x4000_0001).eax).toBe(0x0100_fefb & ~(1 << 15));
  });

  it("sets MSI_EXT_DEST_ID when the VMM routes 15-bit destinations", () => {
    const t = normalizeCpuid(amd, { vcpuCount: 1, vcpuId: 0, msiExtDestId: true });
    expect(get(t, 0x4000_0001).eax).toBe((0x0100_fefb | (1 << 15)) >>> 0);
  });

  it("above 255 vCPUs: 8-bit fields saturate, the x2APIC id and core count are whole in 0xB", () => {
    const t = normalizeCpuid(amd, { vcpuCount: 300, vcpuId: 299 });
    expect(get(t, 1).ebx >>> 24).toBe(299 & 0xff);
    expect((get(t, 1).ebx >>> 16) & 0xff).toBe(255);
    expect(get(t, 0x8000_0008).ecx & 0xff).toBe(255);
    expect((get(t, 0x8000_0008).ecx >>> 12) & 0xf).toBe(9); // 2^9 >= 300
    expect(get(t, 0x8000_001e).eax).toBe(299);
  });
});
