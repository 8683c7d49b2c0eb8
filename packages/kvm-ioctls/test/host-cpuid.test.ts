// hostCpuid() against what Linux says about the same CPU: /proc/cpuinfo and,
// where readable, the cpuid driver (/dev/cpu/0/cpuid).
import { closeSync, existsSync, openSync, readFileSync, readSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { KvmError, hostCpuid } from "../src/index.js";

const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)![1]!.split(/\s+/);
const bit = (v: number, b: number): boolean => ((v >>> b) & 1) === 1;
/** Linux's cpuid driver, if present and readable by this user (root, usually). */
const driver = ((): number | undefined => {
  if (!existsSync("/dev/cpu/0/cpuid")) return undefined;
  try {
    return openSync("/dev/cpu/0/cpuid", "r");
  } catch {
    return undefined;
  }
})();

describe("hostCpuid", () => {
  it("leaf 0 names the vendor /proc/cpuinfo names", () => {
    const r = hostCpuid(0);
    const s = [r.ebx, r.edx, r.ecx].map((x) => Buffer.from(Uint32Array.of(x).buffer).toString("latin1")).join("");
    expect(s).toBe(/^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)![1]);
    expect(r.eax).toBeGreaterThanOrEqual(7);
  });
  it("feature bits agree with /proc/cpuinfo flags", () => {
    const l1 = hostCpuid(1);
    const l7 = hostCpuid(7, 0);
    const x1 = hostCpuid(0x8000_0001);
    const cases: [string, boolean][] = [
      ["sse2", bit(l1.edx, 26)], ["pni", bit(l1.ecx, 0)], ["x2apic", bit(l1.ecx, 21)], ["hypervisor", bit(l1.ecx, 31)],
      ["avx2", bit(l7.ebx, 5)], ["smep", bit(l7.ebx, 7)], ["lm", bit(x1.edx, 29)], ["nx", bit(x1.edx, 20)],
    ];
    for (const [flag, set] of cases) expect([flag, set]).toEqual([flag, flags.includes(flag)]);
  });
  it.skipIf(driver === undefined)("matches Linux's cpuid driver (/dev/cpu/0/cpuid) on CPU-independent leaves (skipped only where that device cannot be opened: no root, or no cpuid driver; the /proc/cpuinfo checks above still run)", () => {
    const fd = driver!;
    try {
      const buf = Buffer.alloc(16);
      for (const [leaf, sub] of [[0, 0], [7, 0], [0xd, 0], [0xd, 1], [0x8000_0000, 0], [0x8000_0001, 0]] as const) {
        readSync(fd, buf, 0, 16, (BigInt(sub) << 32n) | BigInt(leaf));
        const r = hostCpuid(leaf, sub);
        expect([leaf, sub, r.eax, r.ebx, r.ecx, r.edx]).toEqual([leaf, sub, buf.readUInt32LE(0), buf.readUInt32LE(4), buf.readUInt32LE(8), buf.readUInt32LE(12)]);
      }
    } finally {
      closeSync(fd);
    }
  });
  it("rejects leaves and subleaves outside 32 bits before the instruction", () => {
    expect(() => hostCpuid(-1)).toThrow(KvmError);
    expect(() => hostCpuid(2 ** 32)).toThrow(expect.objectContaining({ code: "OutOfRange" }) as Error);
    expect(() => hostCpuid(0, 1.5)).toThrow(expect.objectContaining({ code: "InvalidArgument" }) as Error);
  });
});
