// Bad arguments and closed fds: typed errors before any syscall, never a crash.
import { MmapRegion } from "@ts-vmm/vmm-sys-util";
import { describeKvm } from "@ts-vmm/test-utils";
import { afterEach, describe, expect, it } from "vitest";
import { type TestVm, asm, makeVm } from "./guest.js";
import { Ioctl, Kvm, KvmError, type KvmNative, setNativeBinding, x86MsrRegId } from "../src/index.js";
import { native } from "../src/native.js";

let g: TestVm | undefined;
afterEach(() => {
  g?.close();
  g = undefined;
});

const code = (c: string) => expect.objectContaining({ code: c });

describeKvm("argument checks on real fds", () => {
  it("closed fds throw Closed", () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    vcpu.close();
    vcpu.close(); // idempotent
    expect(() => vcpu.run()).toThrow(code("Closed"));
    expect(() => vcpu.getRegs()).toThrow(code("Closed"));
    expect(() => vcpu.toTransferable()).toThrow(code("Closed"));
    vm.close();
    expect(() => vm.createVcpu(1)).toThrow(code("Closed"));
    expect(() => vm.getClock()).toThrow(code("Closed"));
    kvm.close();
    expect(() => kvm.apiVersion()).toThrow(code("Closed"));
    expect(() => kvm.createVm()).toThrow(code("Closed"));
    expect(kvm.closed && vm.closed && vcpu.closed).toBe(true);
  });

  it("wrong types and out-of-range numbers", () => {
    g = makeVm([...asm.ud2]);
    const { vm, vcpu, mem } = g;
    expect(() => vm.createVcpu(-1)).toThrow(code("InvalidArgument"));
    expect(() => vm.createVcpu(1.5)).toThrow(code("InvalidArgument"));
    expect(() => vm.createVcpu("1" as unknown as number)).toThrow(code("InvalidArgument"));
    expect(() => vm.checkExtension(NaN)).toThrow(code("InvalidArgument"));
    expect(() => vm.setUserMemoryRegion({ slot: 2 ** 32, guestPhysAddr: 0, memory: mem })).toThrow(code("OutOfRange"));
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x400000, memory: { address: 4096, size: 4096 } as unknown as MmapRegion })).toThrow(code("InvalidArgument"));
    expect(() => vm.setUserMemoryRegion(null as unknown as never)).toThrow(code("InvalidArgument"));
    // A slot number KVM does not have.
    expect(() => vm.setUserMemoryRegion({ slot: 40000, guestPhysAddr: 0x400000, memory: mem })).toThrow(code("EINVAL"));
    expect(() => vcpu.setRegs(undefined as unknown as never)).toThrow(code("InvalidArgument"));
    expect(() => vcpu.setMpState(-1)).toThrow(code("InvalidArgument"));
    expect(() => vcpu.interrupt(256)).toThrow(code("OutOfRange"));
    expect(() => vm.setIrqLine(-3, true)).toThrow(code("InvalidArgument"));
    expect(() => vm.registerIrqfd(-1, 0)).toThrow(code("InvalidArgument"));
    expect(() => vm.registerIoevent({ fd: 1.5 }, { kind: "pio", address: 0x10 })).toThrow(code("InvalidArgument"));
    expect(() => vm.registerIoevent(1, { kind: "pio", address: 0x10000 })).toThrow(code("OutOfRange"));
    expect(() => vm.registerIoevent(1, { kind: "dma" } as unknown as never)).toThrow(code("InvalidArgument"));
  });

  it("unaligned sizes and slots larger than their mapping", () => {
    g = makeVm([...asm.ud2]);
    const { vm, mem } = g;
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x400001, memory: mem })).toThrow(code("Unaligned"));
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x400000, memory: mem, size: 0x1001 })).toThrow(code("Unaligned"));
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x400000, memory: mem, memoryOffset: 12 })).toThrow(code("Unaligned"));
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x400000, memory: mem, size: mem.size + 4096 })).toThrow(code("OutOfRange"));
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x400000, memory: mem, memoryOffset: 4096, size: mem.size })).toThrow(code("OutOfRange"));
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 2 ** 52 - 4096, memory: mem })).toThrow(code("OutOfRange"));
    // Overlapping slot: KVM says EEXIST.
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x1000, memory: mem, size: 4096 })).toThrow(code("EEXIST"));
  });

  it("oversized tables are rejected before the call", () => {
    g = makeVm([...asm.ud2]);
    const { vm, vcpu, kvm } = g;
    const entry = { function: 0, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
    expect(() => vcpu.setCpuid2(Array(257).fill(entry))).toThrow(code("TooLarge"));
    expect(() => vcpu.setCpuid2([{ ...entry, eax: -1 }])).toThrow(code("InvalidArgument"));
    expect(() => kvm.getSupportedCpuid(1000)).toThrow(code("OutOfRange"));
    expect(() => vcpu.setMsrs(Array(257).fill({ index: 0x174, data: 0n }))).toThrow(code("TooLarge"));
    expect(() => vcpu.getMsrs(Array(300).fill(0x174))).toThrow(code("TooLarge"));
    expect(() => vm.setGsiRouting(Array(4097).fill({ gsi: 1, type: "irqchip", irqchip: 0, pin: 1 }))).toThrow(code("TooLarge"));
    expect(() => vm.setGsiRouting([{ gsi: 1, type: "irqchip", irqchip: 5, pin: 1 }])).toThrow(code("OutOfRange"));
    expect(() => vcpu.setXcrs(Array(17).fill({ xcr: 0, value: 1n }))).toThrow(code("TooLarge"));
    expect(() => vcpu.setXsave(new Uint8Array(100))).toThrow(code("InvalidArgument"));
    expect(() => vcpu.setLapic(new Uint8Array(1023))).toThrow(code("InvalidArgument"));
    expect(() => vm.setIrqchip(0, new Uint8Array(10))).toThrow(code("InvalidArgument"));
    expect(() => vcpu.setOneReg(x86MsrRegId(0x174), new Uint8Array(4))).toThrow(code("InvalidArgument"));
    expect(() => vcpu.setOneReg(x86MsrRegId(0x174), -1n)).toThrow(code("OutOfRange"));
  });

  it("ioeventfd datamatch must fit its length", () => {
    g = makeVm([...asm.ud2]);
    expect(() => g!.vm.registerIoevent(1, { kind: "pio", address: 0x10 }, { datamatch: 1 })).toThrow(code("InvalidArgument"));
    expect(() => g!.vm.registerIoevent(1, { kind: "pio", address: 0x10 }, { datamatch: 0x100, len: 1 })).toThrow(code("OutOfRange"));
    expect(() => g!.vm.registerIoevent(1, { kind: "pio", address: 0x10 }, { len: 3 as 4 })).toThrow(code("InvalidArgument"));
  });

  it("the addon refuses buffers smaller than the kernel would touch (RangeError/TypeError, no crash)", () => {
    g = makeVm([...asm.ud2]);
    const fd = g.vcpu.fd;
    const n = native();
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_GET_REGS, new Uint8Array(8))).toThrow(RangeError);
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_GET_SREGS, new Uint8Array(0))).toThrow(RangeError);
    const cpuid = new Uint8Array(48);
    new DataView(cpuid.buffer).setUint32(0, 100, true); // claims 100 entries, room for 1
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_SET_CPUID2, cpuid)).toThrow(RangeError);
    const msrs = new Uint8Array(16);
    new DataView(msrs.buffer).setUint32(0, 0xffffffff, true);
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_GET_MSRS, msrs)).toThrow(RangeError);
    const regList = new Uint8Array(16);
    new DataView(regList.buffer).setBigUint64(0, 1n << 40n, true);
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_GET_REG_LIST, regList)).toThrow(TypeError);
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_GET_XSAVE2, new Uint8Array(4096), 1 << 20)).toThrow(RangeError);
    const oneReg = new Uint8Array(16);
    new DataView(oneReg.buffer).setBigUint64(0, x86MsrRegId(0x174), true);
    expect(() => n.ioctlBufPtr(fd, Ioctl.KVM_GET_ONE_REG, oneReg, 8, new Uint8Array(4), 0)).toThrow(RangeError);
    expect(() => n.ioctlBufPtr(fd, Ioctl.KVM_GET_ONE_REG, oneReg, 12, new Uint8Array(8), 0)).toThrow(TypeError);
    expect(() => n.ioctlVal(fd, Ioctl.KVM_GET_REGS, 0)).toThrow(TypeError);
    expect(() => n.ioctlVal(fd, Ioctl.KVM_REINJECT_CONTROL, 0)).toThrow(TypeError);
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_RUN, new Uint8Array(8))).toThrow(TypeError);
    expect(() => n.ioctlBuf("x" as unknown as number, Ioctl.KVM_GET_REGS, new Uint8Array(144))).toThrow(TypeError);
    expect(() => n.ioctlBuf(fd, Ioctl.KVM_GET_REGS, [1, 2] as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => n.run(-1)).toThrow(TypeError);
    expect(() => n.run({} as unknown as number)).toThrow(TypeError);
    // And a well-formed call still works.
    expect(n.ioctlBuf(fd, Ioctl.KVM_GET_REGS, new Uint8Array(144))).toBe(0);
  });
});

describe("the TypeScript layer over an injected binding", () => {
  it("maps -errno to KvmError with the ioctl name", () => {
    const calls: number[] = [];
    const fake: KvmNative = {
      open: () => 100,
      close: () => 0,
      ioctlVal: (_fd, req) => {
        calls.push(req);
        return req === Ioctl.KVM_GET_API_VERSION ? 12 : req === Ioctl.KVM_CREATE_VM ? -24 : 0;
      },
      ioctlBuf: () => -22,
      ioctlBufPtr: () => -22,
      run: () => -4,
    };
    setNativeBinding(fake);
    try {
      const kvm = new Kvm();
      expect(() => kvm.createVm()).toThrow(expect.objectContaining({ code: "EMFILE", message: "KVM_CREATE_VM failed: EMFILE", errno: 24 }));
      expect(() => kvm.getSupportedCpuid()).toThrow(KvmError);
      expect(calls).toContain(Ioctl.KVM_CREATE_VM);
      kvm.close();
    } finally {
      setNativeBinding(undefined);
    }
  });

  it("retries an ioctl a signal interrupted (EINTR) and reports EINTR only from a signal storm", () => {
    let interrupts = 3;
    let storm = false;
    const calls: number[] = [];
    const fake: KvmNative = {
      open: () => 100,
      close: () => 0,
      ioctlVal: (_fd, req) => {
        if (req === Ioctl.KVM_GET_API_VERSION) return 12;
        calls.push(req);
        if (storm) return -4;
        return interrupts-- > 0 ? -4 : 7; // KVM_CREATE_VM: EINTR three times, then fd 7
      },
      ioctlBuf: () => (interrupts-- > 0 ? -4 : 0),
      ioctlBufPtr: () => -22,
      run: () => -4,
    };
    setNativeBinding(fake);
    try {
      const kvm = new Kvm();
      const vm = kvm.createVm();
      expect(vm.fd).toBe(7);
      expect(calls.filter((c) => c === Ioctl.KVM_CREATE_VM)).toHaveLength(4);
      storm = true;
      expect(() => kvm.createVm()).toThrow(expect.objectContaining({ code: "EINTR" }));
      expect(calls.filter((c) => c === Ioctl.KVM_CREATE_VM).length).toBe(4 + 1000);
      kvm.close();
    } finally {
      setNativeBinding(undefined);
    }
  });

  it("refuses a KVM with another API version", () => {
    setNativeBinding({ open: () => 100, close: () => 0, ioctlVal: () => 11, ioctlBuf: () => 0, ioctlBufPtr: () => 0, run: () => 0 });
    try {
      expect(() => new Kvm()).toThrow(expect.objectContaining({ code: "Unsupported" }));
    } finally {
      setNativeBinding(undefined);
    }
  });

  it("open failures are typed", () => {
    expect(() => new Kvm("/nonexistent/kvm")).toThrow(expect.objectContaining({ code: "ENOENT", ioctl: "open" }));
  });
});
