// KVM_X86_SET_MSR_FILTER (issue 14 item 7): VmFd.setMsrFilter on real KVM, the
// addon's own checks of the 16 bitmap pointers, and the TypeScript checks before it.
import { describeKvm } from "@ts-vmm/test-utils";
import { afterEach, expect, it } from "vitest";
import { type TestVm, asm, makeVm } from "./guest.js";
import {
  Cap, KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_FILTER_READ, KVM_MSR_FILTER_WRITE, Kvm, type VcpuExit,
} from "../src/index.js";
import { MSR_FILTER, encodeMsrFilter } from "../src/layouts/msr-filter.js";
import { native } from "../src/native.js";

const MSR_IA32_SYSENTER_CS = 0x174;

let g: TestVm | undefined;
afterEach(() => {
  g?.close();
  g = undefined;
});

function expectKind<K extends VcpuExit["kind"]>(e: VcpuExit, kind: K): Extract<VcpuExit, { kind: K }> {
  expect(e.kind).toBe(kind);
  return e as Extract<VcpuExit, { kind: K }>;
}

// CPL0 (emulated on this host): ecx = SYSENTER_CS; rdmsr; out 0x3f8, eax; wrmsr; ud2
const RDMSR_OUT_WRMSR = [...asm.movEcx(MSR_IA32_SYSENTER_CS), 0x0f, 0x32, ...asm.movDx(0x3f8), ...asm.outDxEax, 0x0f, 0x30, ...asm.ud2];

describeKvm("KVM_X86_SET_MSR_FILTER", () => {
  it("the host offers KVM_CAP_X86_MSR_FILTER (the tests below need it)", () => {
    const kvm = new Kvm();
    try {
      expect(kvm.checkExtension(Cap.X86_MSR_FILTER)).toBeGreaterThan(0);
    } finally {
      kvm.close();
    }
  });

  it("without a filter KVM answers rdmsr of SYSENTER_CS itself (the control)", () => {
    g = makeVm(RDMSR_OUT_WRMSR, { cpl: 0, setup: (vm) => vm.enableCap(Cap.X86_USER_SPACE_MSR, [KVM_MSR_EXIT_REASON_FILTER]) });
    g.vcpu.setMsrs([{ index: MSR_IA32_SYSENTER_CS, data: 0x10n }]);
    const out = expectKind(g.vcpu.run(), "IoOut");
    expect([...out.data]).toEqual([0x10, 0, 0, 0]);
  });

  it("a denied MSR exits to user space with reason FILTER, for reads and writes", () => {
    g = makeVm(RDMSR_OUT_WRMSR, {
      cpl: 0,
      setup: (vm) => {
        vm.enableCap(Cap.X86_USER_SPACE_MSR, [KVM_MSR_EXIT_REASON_FILTER]);
        // default allow; one range denying reads and writes of SYSENTER_CS (bit 0 clear)
        vm.setMsrFilter({ ranges: [{ flags: KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, base: MSR_IA32_SYSENTER_CS, nmsrs: 1, bitmap: new Uint8Array(1) }] });
      },
    });
    g.vcpu.setMsrs([{ index: MSR_IA32_SYSENTER_CS, data: 0x10n }]);
    const rd = expectKind(g.vcpu.run(), "X86Rdmsr");
    expect(rd).toMatchObject({ index: MSR_IA32_SYSENTER_CS, reason: KVM_MSR_EXIT_REASON_FILTER });
    g.vcpu.setMsrExitResult(0x77n);
    const out = expectKind(g.vcpu.run(), "IoOut");
    expect([...out.data]).toEqual([0x77, 0, 0, 0]); // our answer, not the MSR's 0x10
    const wr = expectKind(g.vcpu.run(), "X86Wrmsr");
    expect(wr).toMatchObject({ index: MSR_IA32_SYSENTER_CS, reason: KVM_MSR_EXIT_REASON_FILTER });
    g.vcpu.setMsrExitResult(0n, true); // refused: #GP, no IDT → shutdown
    expectKind(g.vcpu.run(), "Shutdown");
    expect(g.vcpu.getMsrs([MSR_IA32_SYSENTER_CS])[0]!.data).toBe(0x10n);
  });

  it("a read-only range leaves writes alone; an allowing bit lets KVM answer", () => {
    g = makeVm(RDMSR_OUT_WRMSR, {
      cpl: 0,
      setup: (vm) => {
        vm.enableCap(Cap.X86_USER_SPACE_MSR, [KVM_MSR_EXIT_REASON_FILTER]);
        // 65 MSRs from 0x140 (bitmap of ceil(65/8) = 9 bytes; the kernel reads 16, padded
        // by setMsrFilter): SYSENTER_CS is bit 0x34, set = allowed
        const bitmap = new Uint8Array(9);
        bitmap[0x34 >> 3] = 1 << (0x34 & 7);
        vm.setMsrFilter({ ranges: [{ flags: KVM_MSR_FILTER_READ, base: 0x140, nmsrs: 65, bitmap }] });
      },
    });
    g.vcpu.setMsrs([{ index: MSR_IA32_SYSENTER_CS, data: 0x10n }]);
    expect([...expectKind(g.vcpu.run(), "IoOut").data]).toEqual([0x10, 0, 0, 0]);
    expectKind(g.vcpu.run(), "Shutdown"); // the wrmsr went to KVM (edx:eax = 0x3f8:0x10), then ud2
    expect(g.vcpu.getMsrs([MSR_IA32_SYSENTER_CS])[0]!.data).toBe(0x3f8_00000010n);
  });

  it("default deny: an MSR outside every range exits", () => {
    g = makeVm(RDMSR_OUT_WRMSR, {
      cpl: 0,
      setup: (vm) => {
        vm.enableCap(Cap.X86_USER_SPACE_MSR, [KVM_MSR_EXIT_REASON_FILTER]);
        vm.setMsrFilter({ defaultDeny: true, ranges: [{ flags: KVM_MSR_FILTER_READ, base: 0x10, nmsrs: 1, bitmap: new Uint8Array([1]) }] });
      },
    });
    expect(expectKind(g.vcpu.run(), "X86Rdmsr")).toMatchObject({ index: MSR_IA32_SYSENTER_CS, reason: KVM_MSR_EXIT_REASON_FILTER });
  });

  it("checks before the call: count, flags, nmsrs, base, bitmap length; KVM's EINVAL for default deny with no range", () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    try {
      const r = { flags: KVM_MSR_FILTER_READ, base: 0, nmsrs: 8, bitmap: new Uint8Array(1) };
      expect(() => vm.setMsrFilter({ ranges: Array.from({ length: 17 }, () => r) })).toThrow(expect.objectContaining({ code: "TooLarge" }));
      expect(() => vm.setMsrFilter({ ranges: [{ ...r, flags: 0 }] })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
      expect(() => vm.setMsrFilter({ ranges: [{ ...r, flags: 4 }] })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
      expect(() => vm.setMsrFilter({ ranges: [{ ...r, nmsrs: 0 }] })).toThrow(expect.objectContaining({ code: "OutOfRange" }));
      expect(() => vm.setMsrFilter({ ranges: [{ ...r, nmsrs: 0x3001, bitmap: new Uint8Array(0x601) }] })).toThrow(expect.objectContaining({ code: "OutOfRange" }));
      expect(() => vm.setMsrFilter({ ranges: [{ ...r, base: 2 ** 32 }] })).toThrow(expect.objectContaining({ code: "OutOfRange" }));
      expect(() => vm.setMsrFilter({ ranges: [{ ...r, nmsrs: 9 }] })).toThrow(expect.objectContaining({ code: "InvalidArgument" })); // 1 byte < 2
      expect(() => vm.setMsrFilter({ defaultDeny: true, ranges: [] })).toThrow(expect.objectContaining({ code: "EINVAL" }));
      vm.setMsrFilter({ ranges: Array.from({ length: 16 }, (_, i) => ({ ...r, base: i * 8 })) }); // 16 is the limit
      vm.setMsrFilter({ ranges: [{ ...r, nmsrs: 0x3000, bitmap: new Uint8Array(0x600) }] }); // the kernel's largest bitmap
      vm.setMsrFilter({ ranges: [] }); // default allow, no ranges: removes the filter
    } finally {
      vm.close();
      kvm.close();
    }
  });

  it("the addon checks every bitmap against what the kernel copies and writes the pointers itself", () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    const n = native();
    try {
      const one = encodeMsrFilter(0, [{ flags: KVM_MSR_FILTER_READ, base: 0, nmsrs: 65 }]);
      // nmsrs 65: BITS_TO_LONGS(65) * 8 = 16 bytes are copied, so 9 (= ceil(65/8)) is too few here
      expect(() => n.ioctlMsrFilter!(vm.fd, one, [new Uint8Array(9)])).toThrow(RangeError);
      expect(() => n.ioctlMsrFilter!(vm.fd, one, [])).toThrow(TypeError); // nmsrs > 0 without a bitmap
      expect(() => n.ioctlMsrFilter!(vm.fd, one.subarray(0, MSR_FILTER.size - 1), [new Uint8Array(16)])).toThrow(RangeError);
      expect(() => n.ioctlMsrFilter!(vm.fd, one, Array.from({ length: 17 }, () => new Uint8Array(16)))).toThrow(RangeError);
      // A host address the caller wrote into a pointer field is overwritten, not used:
      // range 1 has nmsrs 0 and a bogus pointer; the kernel sees NULL and skips it.
      const bogus = encodeMsrFilter(0, [{ flags: KVM_MSR_FILTER_READ, base: 0, nmsrs: 65 }]);
      new DataView(bogus.buffer).setBigUint64(MSR_FILTER.ranges + MSR_FILTER.rangeBitmap, 0xdead0000n, true);
      new DataView(bogus.buffer).setBigUint64(MSR_FILTER.ranges + MSR_FILTER.rangeSize + MSR_FILTER.rangeBitmap, 0xdead0000n, true);
      const before = bogus.slice();
      expect(n.ioctlMsrFilter!(vm.fd, bogus, [new Uint8Array(16)])).toBe(0);
      expect(bogus).toEqual(before); // nothing (no host address) written back
      // Refused in the generic path: ioctlBuf would pass the caller's pointers.
      expect(() => n.ioctlBuf(vm.fd, 0x4188aec6, bogus)).toThrow(TypeError);
    } finally {
      vm.close();
      kvm.close();
    }
  });
});
