import { GUEST_SSP_REG_ID, type CpuidEntry, type MsrEntry } from "@ts-vmm/kvm-ioctls";
import { describe, expect, it } from "vitest";
import { decodeSnapshotFile, encodeSnapshotFile } from "./file-format.js";
import { ClockRestore } from "./take.js";
import { msrsToSave, pvclockNs, readClockAndTscs, restoreVcpu, saveVcpu, withTsc, type VcpuSnapshot, type VcpuStateIo } from "./vcpu-state.js";

// A vCPU that answers from recorded values and records what is set: the KVM side of a
// CET guest on a host with SHSTK and IBT (values as a Linux guest with user shadow stacks
// leaves them: U_CET SH_STK_EN | WR_SHSTK_EN, PL3_SSP in its stack, GUEST_SSP of the kernel).
const RECORDED_MSRS = new Map<number, bigint>([
  [0x10, 0x1234_5678_9abcn], [0x1b, 0xfee0_0900n], [0x6e0, 0x2222n], [0xda0, 0x1800n],
  [0x6a0, 0x3n], [0x6a2, 0x4n], [0x6a4, 0xffff_c900_0001_0000n], [0x6a5, 0n], [0x6a6, 0n],
  [0x6a7, 0x7ffd_1234_5000n], [0x6a8, 0xffff_ffff_8260_0000n],
]);
const GUEST_SSP = 0xffff_c900_0000_7ff8n;
const cetCpuid = (shstk: boolean, ibt: boolean): CpuidEntry[] => [
  { function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 },
  { function: 7, index: 0, flags: 1, eax: 0, ebx: 0, ecx: shstk ? 1 << 7 : 0, edx: ibt ? 1 << 20 : 0 },
  { function: 0xd, index: 1, flags: 1, eax: 1 << 3, ebx: 0, ecx: 0, edx: 0 },
];

function recorder(cpuid: CpuidEntry[], refuse: ReadonlySet<number> = new Set()) {
  const calls: string[] = [];
  const set: { msrs: MsrEntry[]; oneReg: [bigint, bigint][] } = { msrs: [], oneReg: [] };
  const regs = { rax: 1n, rbx: 2n, rcx: 3n, rdx: 4n, rsi: 5n, rdi: 6n, rsp: 7n, rbp: 8n, r8: 9n, r9: 10n, r10: 11n, r11: 12n, r12: 13n, r13: 14n, r14: 15n, r15: 16n, rip: 0x1000n, rflags: 2n };
  const seg = { base: 0n, limit: 0xffff_ffff, selector: 8, type: 11, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 };
  const sregs2 = { cs: seg, ds: seg, es: seg, fs: seg, gs: seg, ss: seg, tr: seg, ldt: seg, gdt: { base: 0n, limit: 0 }, idt: { base: 0n, limit: 0 }, cr0: 0x8000_0011n, cr2: 0n, cr3: 0x1000n, cr4: 0x80_0020n, cr8: 0n, efer: 0xd00n, apicBase: 0xfee0_0900n, flags: 0n, pdptrs: [0n, 0n, 0n, 0n] as [bigint, bigint, bigint, bigint] };
  const events = { exception: { injected: 0, nr: 0, hasErrorCode: 0, pending: 0, errorCode: 0 }, interrupt: { injected: 0, nr: 0, soft: 0, shadow: 0 }, nmi: { injected: 0, pending: 0, masked: 0 }, sipiVector: 0, flags: 0, smi: { smm: 0, pending: 0, smmInsideNmi: 0, latchedInit: 0 }, tripleFault: { pending: 0 }, exceptionHasPayload: 0, exceptionPayload: 0n };
  const io: VcpuStateIo = {
    getRegs: () => regs, setRegs: () => void calls.push("regs"),
    getSregs2: () => sregs2, setSregs2: () => void calls.push("sregs2"),
    xsaveSize: 4096, getXsave: () => new Uint8Array(4096).fill(7), getXsave2: () => new Uint8Array(4096).fill(9), setXsave: () => void calls.push("xsave"),
    getXcrs: () => [{ xcr: 0, value: 0x207n }], setXcrs: () => void calls.push("xcrs"),
    getMsrs: (idx) => {
      const out: MsrEntry[] = [];
      for (const i of idx) {
        if (refuse.has(i) || !RECORDED_MSRS.has(i)) break; // KVM_GET_MSRS stops at the first it cannot read
        out.push({ index: i, data: RECORDED_MSRS.get(i)! });
      }
      return out;
    },
    setMsrs: (e) => (calls.push("msrs"), set.msrs.push(...e), e.length),
    getCpuid2: () => cpuid, setCpuid2: () => void calls.push("cpuid"),
    getLapic: () => new Uint8Array(1024).fill(1), setLapic: () => void calls.push("lapic"),
    getVcpuEvents: () => events, setVcpuEvents: () => void calls.push("events"),
    getMpState: () => 0, setMpState: () => void calls.push("mp"),
    getDebugRegs: () => ({ db: [0n, 0n, 0n, 0n], dr6: 0xffff0ff0n, dr7: 0x400n, flags: 0n }), setDebugRegs: () => void calls.push("debugregs"),
    getOneRegU64: (id) => {
      if (id !== GUEST_SSP_REG_ID) throw new Error(`unknown ONE_REG 0x${id.toString(16)}`);
      return GUEST_SSP;
    },
    setOneReg: (id, v) => (calls.push("oneReg"), void set.oneReg.push([id, v])),
    getTscKhz: () => 2_000_000, setTscKhz: () => void calls.push("tscKhz"),
  };
  return { io, calls, set };
}

describe("vCPU state with CET (recorded MSR and ONE_REG values)", () => {
  // The index list as a host without CET in KVM_GET_MSR_INDEX_LIST would give it (an unreadable 0x999 among them).
  const indexList = [0x1b, 0x999, 0x6e0, 0x10];

  it("saves IA32_XSS, the seven CET MSRs and GUEST_SSP, and restores them after the LAPIC, SSP after the MSRs", () => {
    const src = recorder(cetCpuid(true, true));
    const { indices, refusedRequired } = msrsToSave(src.io, indexList, cetCpuid(true, true));
    expect(refusedRequired).toEqual([]);
    expect(indices[0]).toBe(0x10); // TSC first
    expect(indices.at(-1)).toBe(0x6e0); // TSC_DEADLINE last
    expect(indices).not.toContain(0x999);
    expect(new Set(indices)).toEqual(new Set([0x10, 0x1b, 0x6e0, 0xda0, 0x6a0, 0x6a2, 0x6a4, 0x6a5, 0x6a6, 0x6a7, 0x6a8]));
    const saved = saveVcpu(src.io, 0, indices, true);
    expect(saved.guestSsp).toBe(GUEST_SSP);
    // Through the file format and back, as a restore in another process sees it.
    const loaded = (decodeSnapshotFile(encodeSnapshotFile({ v: saved })) as { v: VcpuSnapshot }).v;
    const dst = recorder(cetCpuid(true, true));
    restoreVcpu(dst.io, loaded, 2_000_000);
    for (const [i, v] of RECORDED_MSRS) expect(dst.set.msrs.find((m) => m.index === i)?.data, `MSR 0x${i.toString(16)}`).toBe(v);
    expect(dst.set.oneReg).toEqual([[0x2030_0003_0000_0000n, GUEST_SSP]]);
    expect(dst.calls[0]).toBe("cpuid");
    expect(dst.calls.indexOf("lapic")).toBeLessThan(dst.calls.indexOf("msrs"));
    expect(dst.calls.indexOf("msrs")).toBeLessThan(dst.calls.indexOf("oneReg"));
    expect(dst.calls.at(-1)).toBe("events");
    expect(dst.calls).not.toContain("tscKhz"); // same rate
    expect(loaded.xsave).toEqual(new Uint8Array(4096).fill(9)); // KVM_GET_XSAVE2 with KVM_CAP_XSAVE2
  });

  it("IBT only: U_CET and S_CET but no SSP MSRs and no GUEST_SSP", () => {
    const src = recorder(cetCpuid(false, true));
    const { indices } = msrsToSave(src.io, indexList, cetCpuid(false, true));
    expect(indices).toEqual(expect.arrayContaining([0x6a0, 0x6a2]));
    expect(indices).not.toContain(0x6a4);
    expect(saveVcpu(src.io, 0, indices, false).guestSsp).toBeUndefined();
  });

  it("reports a CET MSR KVM refuses to read instead of dropping it", () => {
    const src = recorder(cetCpuid(true, false), new Set([0x6a7]));
    expect(msrsToSave(src.io, indexList, cetCpuid(true, false)).refusedRequired).toEqual([0x6a7]);
  });

  it("sets the saved TSC rate when the new vCPU's differs, and fails on an MSR KVM_SET_MSRS refuses", () => {
    const src = recorder(cetCpuid(true, true));
    const saved = saveVcpu(src.io, 0, msrsToSave(src.io, indexList, cetCpuid(true, true)).indices, true);
    const dst = recorder(cetCpuid(true, true));
    restoreVcpu(dst.io, saved, 3_000_000);
    expect(dst.calls).toContain("tscKhz");
    const refusing = recorder(cetCpuid(true, true));
    refusing.io.setMsrs = (e) => e.findIndex((m) => m.index === 0x6a4);
    expect(() => restoreVcpu(refusing.io, saved, 2_000_000)).toThrow(/KVM_SET_MSRS refused MSR 0x6a4/);
  });
});

describe("the clock and the TSC (a restored Linux's kvm-clock against its TSC)", () => {
  it("reads KVM_GET_CLOCK and then each vCPU's IA32_TSC with nothing between, and puts the TSC read there into the snapshot", () => {
    const order: string[] = [];
    const vm = { getClock: () => (order.push("clock"), { clock: 5_000_000_000n }) };
    const tscAt = [0x1000n, 0x2000n];
    const vcpus = tscAt.map((t, id) => ({
      getMsrs: (idx: readonly number[]) => (order.push(`msrs${id}:${idx.join(",")}`), idx[0] === 0x10 ? [{ index: 0x10, data: t }] : []),
    }));
    expect(readClockAndTscs(vm, vcpus)).toEqual({ clock: 5_000_000_000n, tscs: [0x1000n, 0x2000n], exact: false });
    expect(order).toEqual(["clock", "msrs0:16", "msrs1:16"]);
    const refusing = [{ getMsrs: () => [] }];
    expect(() => readClockAndTscs(vm, refusing)).toThrow(/cannot read IA32_TSC/);
    const src = recorder(cetCpuid(false, false));
    const saved = saveVcpu(src.io, 0, msrsToSave(src.io, [0x10, 0x1b, 0x6e0], cetCpuid(false, false)).indices, true);
    const later = withTsc(saved, 0x9999n);
    expect(later.msrs).toEqual(saved.msrs.map((m) => (m.index === 0x10 ? { index: 0x10, data: 0x9999n } : m)));
    expect(later.msrs.find((m) => m.index === 0x6e0)?.data).toBe(0x2222n);
  });

  it("with KVM_CLOCK_HOST_TSC and the offsets, every TSC is the clock's host TSC plus the vCPU's offset (one instant); else, or scaled, IA32_TSC", () => {
    const HOST_TSC = 0x10_0000_0000n;
    const vm = { getClock: () => ({ clock: 7_000_000_000n, flags: 2 | 4 | 8, hostTsc: HOST_TSC }) };
    const offsets = [-0x8_0000_0000n & ((1n << 64n) - 1n), 5n];
    // IA32_TSC as KVM would read it a little after the clock (1000 cycles).
    const vcpus = offsets.map((o) => ({
      getTscOffset: () => o,
      getMsrs: (idx: readonly number[]) => (idx[0] === 0x10 ? [{ index: 0x10, data: (HOST_TSC + 1000n + o) & ((1n << 64n) - 1n) }] : []),
    }));
    expect(readClockAndTscs(vm, vcpus, true, 2_000_000)).toEqual({ clock: 7_000_000_000n, tscs: [0x8_0000_0000n, HOST_TSC + 5n], exact: true });
    // Scaled (the caller says no offsets), no host TSC, no attribute, or an IA32_TSC far from host + offset: the MSRs.
    expect(readClockAndTscs(vm, vcpus, false, 2_000_000).exact).toBe(false);
    expect(readClockAndTscs({ getClock: () => ({ clock: 1n, flags: 2, hostTsc: 0n }) }, vcpus, true, 2_000_000)).toEqual({ clock: 1n, tscs: [0x8_0000_0000n + 1000n, HOST_TSC + 1005n], exact: false });
    const noAttr = vcpus.map((v) => ({ getMsrs: v.getMsrs, getTscOffset: (): bigint => { throw Object.assign(new Error("ENXIO"), { code: "ENXIO" }); } }));
    expect(readClockAndTscs(vm, noAttr, true, 2_000_000).exact).toBe(false);
    const far = vcpus.map((v) => ({ getTscOffset: v.getTscOffset, getMsrs: () => [{ index: 0x10, data: 1n }] }));
    expect(readClockAndTscs(vm, far, true, 2_000_000).exact).toBe(false);
  });

  it("ClockRestore sets the clock once, reads it back with the host TSC and sets each TSC as an offset paired with it; IA32_TSC left out of the MSRs", () => {
    const cpuid = cetCpuid(false, false);
    const src = recorder(cpuid);
    const saved = saveVcpu(src.io, 0, msrsToSave(src.io, [0x6e0, 0x1b, 0x10], cpuid).indices, true); // TSC 0x1234_5678_9abc at 2 GHz
    const order: string[] = [];
    const SAVED_CLOCK = 9_000_000_000n;
    const HOST_TSC = 0x77_0000_0000n;
    const vm = {
      setClock: (c: { clock: bigint; flags: number }) => void order.push(`setClock ${c.clock} flags ${c.flags}`),
      // Read back 1.5 ms after the set.
      getClock: () => (order.push("getClock"), { clock: SAVED_CLOCK + 1_500_000n, flags: 2 | 4 | 8, realtime: 0n, hostTsc: HOST_TSC }),
    };
    const restore = new ClockRestore(vm, SAVED_CLOCK);
    const written: bigint[] = [];
    const offsetIo = { setTscOffset: (o: bigint) => void written.push(o), getTscOffset: () => written.at(-1)! };
    for (const id of [0, 1]) {
      const dst = recorder(cpuid);
      restoreVcpu(dst.io, { ...saved, id }, 2_000_000, () => restore.beforeMsrs(offsetIo, saved, 2_000_000));
      expect(dst.set.msrs.map((m) => m.index)).not.toContain(0x10);
      expect(dst.set.msrs.at(-1)!.index).toBe(0x6e0);
    }
    expect(order).toEqual([`setClock ${SAVED_CLOCK} flags 0`, "getClock"]);
    // At HOST_TSC the guest's TSC stands 1.5 ms (3 000 000 cycles at 2 GHz) past the saved one, as its clock does.
    const want = (0x1234_5678_9abcn + 3_000_000n - HOST_TSC) & ((1n << 64n) - 1n);
    expect(written).toEqual([want, want]);
    expect(restore.offsetsSet).toBe(2);
  });

  it("ClockRestore falls back to IA32_TSC without the host TSC, with a rate other than the host's, or when KVM does not keep the offset", () => {
    const cpuid = cetCpuid(false, false);
    const src = recorder(cpuid);
    const saved = saveVcpu(src.io, 0, msrsToSave(src.io, [0x6e0, 0x1b, 0x10], cpuid).indices, true);
    const vm = (flags: number) => ({ setClock: () => undefined, getClock: () => ({ clock: 1n, flags, realtime: 0n, hostTsc: 5n }) });
    const keeps = { setTscOffset: () => undefined, getTscOffset: () => -1n };
    const cases: [ClockRestore, Partial<{ setTscOffset(o: bigint): void; getTscOffset(): bigint }>, number][] = [
      [new ClockRestore(vm(2), 1n), keeps, 2_000_000], // no KVM_CLOCK_HOST_TSC
      [new ClockRestore(vm(8), 1n), keeps, 3_000_000], // the new vCPU runs at another rate
      [new ClockRestore(vm(8), 1n), keeps, 2_000_000], // the read-back differs from what was set
      [new ClockRestore(vm(8), 1n), {}, 2_000_000], // no attribute
      [new ClockRestore(vm(8), 1n), { setTscOffset: () => { throw new Error("ENXIO"); }, getTscOffset: () => 0n }, 2_000_000],
    ];
    for (const [r, io, hostKhz] of cases) {
      const dst = recorder(cpuid);
      restoreVcpu(dst.io, saved, hostKhz, () => r.beforeMsrs(io, saved, hostKhz));
      expect(dst.set.msrs[0]).toEqual({ index: 0x10, data: 0x1234_5678_9abcn });
      expect(r.offsetsSet).toBe(0);
    }
  });

  it("restore calls beforeMsrs (where the VM's clock is set) after the LAPIC and right before the MSRs, IA32_TSC first", () => {
    const cpuid = cetCpuid(false, false);
    const src = recorder(cpuid);
    const saved = saveVcpu(src.io, 0, msrsToSave(src.io, [0x6e0, 0x1b, 0x10], cpuid).indices, true);
    const dst = recorder(cpuid);
    restoreVcpu(dst.io, saved, 2_000_000, () => void dst.calls.push("clock"));
    expect(dst.calls.slice(dst.calls.indexOf("lapic"), dst.calls.indexOf("lapic") + 3)).toEqual(["lapic", "clock", "msrs"]);
    expect(dst.set.msrs[0]).toEqual({ index: 0x10, data: 0x1234_5678_9abcn });
    expect(dst.set.msrs.at(-1)!.index).toBe(0x6e0);
  });
});

describe("pvclockNs (the guest's kvm-clock from its pvclock page and TSC)", () => {
  const page = (version: number, stamp: bigint, system: bigint, mul: number, shift: number): Uint8Array => {
    const b = new Uint8Array(32);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, version, true);
    dv.setBigUint64(8, stamp, true);
    dv.setBigUint64(16, system, true);
    dv.setUint32(24, mul, true);
    dv.setInt8(28, shift);
    return b;
  };
  it("scales the TSC delta with mul/shift as the guest does; refuses a page in update and a TSC before the stamp", () => {
    // A 2.6 GHz TSC: mul = 2^32 * 1e9 / (2.6e9 * 2^-1) with shift -1 (Linux's pvclock form).
    const mul = Math.round((2 ** 32 * 1e9) / 1.3e9);
    expect(pvclockNs(page(2, 1000n, 5_000_000_000n, mul, -1), 1000n + 2_600_000_000n)).toBe(5_000_000_000n + ((1_300_000_000n * BigInt(mul)) >> 32n));
    expect(Number(pvclockNs(page(2, 1000n, 5_000_000_000n, mul, -1), 1000n + 2_600_000_000n)! - 6_000_000_000n)).toBeLessThan(2);
    expect(pvclockNs(page(2, 0n, 7n, 1 << 31, 1), 10n)).toBe(17n); // shift 1, mul 0.5: 10 cycles = 10 ns
    expect(pvclockNs(page(3, 0n, 7n, 1 << 31, 1), 10n)).toBeNull();
    expect(pvclockNs(page(2, 100n, 7n, 1 << 31, 1), 10n)).toBeNull();
    expect(() => pvclockNs(new Uint8Array(8), 0n)).toThrow(RangeError);
  });
});
