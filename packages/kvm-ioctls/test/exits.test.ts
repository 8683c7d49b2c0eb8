// Every exit kind this machine can provoke, from hand-built micro-guests.
import { describeKvm } from "@ts-vmm/test-utils";
import { afterEach, expect, it } from "vitest";
import { type TestVm, MMIO_BASE, asm, makeVm } from "./guest.js";
import { Cap, KVM_INTERNAL_ERROR_EMULATION, KVM_MSR_EXIT_REASON_UNKNOWN, type VcpuExit } from "../src/index.js";

let g: TestVm | undefined;
afterEach(() => {
  g?.close();
  g = undefined;
});

function expectKind<K extends VcpuExit["kind"]>(e: VcpuExit, kind: K): Extract<VcpuExit, { kind: K }> {
  expect(e.kind).toBe(kind);
  return e as Extract<VcpuExit, { kind: K }>;
}

describeKvm("exits from micro-guests", () => {
  it("IoOut: port, size, count and the byte written", () => {
    g = makeVm([...asm.movDx(0x3f8), ...asm.movAl(0x41), ...asm.outDxAl, ...asm.ud2]);
    const e = expectKind(g.vcpu.run(), "IoOut");
    expect(e).toMatchObject({ port: 0x3f8, size: 1, count: 1 });
    expect([...e.data]).toEqual([0x41]);
    expectKind(g.vcpu.run(), "Shutdown");
  });

  it("IoIn: the guest reads the value the handler put in data", () => {
    g = makeVm([...asm.movDx(0x60), ...asm.inEaxDx, ...asm.movDx(0x3f8), ...asm.outDxEax, ...asm.ud2]);
    const e = expectKind(g.vcpu.run(), "IoIn");
    expect(e).toMatchObject({ port: 0x60, size: 4, count: 1 });
    e.data.set([0xef, 0xbe, 0xad, 0xde]);
    const out = expectKind(g.vcpu.run(), "IoOut");
    expect(out.size).toBe(4);
    expect([...out.data]).toEqual([0xef, 0xbe, 0xad, 0xde]);
    expect(g.vcpu.getRegs().rax & 0xffffffffn).toBe(0xdeadbeefn);
  });

  it("MmioWrite: address, length and bytes", () => {
    g = makeVm([...asm.movRdi(MMIO_BASE + 0x50), ...asm.movEax(0x12345678), ...asm.movMemRdiEax, ...asm.ud2]);
    const e = expectKind(g.vcpu.run(), "MmioWrite");
    expect(e.address).toBe(MMIO_BASE + 0x50);
    expect(e.len).toBe(4);
    expect([...e.data]).toEqual([0x78, 0x56, 0x34, 0x12]);
    expectKind(g.vcpu.run(), "Shutdown");
  });

  it("MmioRead: the guest sees the value the handler filled", () => {
    g = makeVm([...asm.movRdi(MMIO_BASE + 8), ...asm.movEaxMemRdi, ...asm.movDx(0x3f8), ...asm.outDxEax, ...asm.ud2]);
    const e = expectKind(g.vcpu.run(), "MmioRead");
    expect(e.address).toBe(MMIO_BASE + 8);
    expect(e.len).toBe(4);
    e.data.set([1, 2, 3, 4]);
    const out = expectKind(g.vcpu.run(), "IoOut");
    expect([...out.data]).toEqual([1, 2, 3, 4]);
  });

  it("the hot exit objects are reused and rewritten: two IoOut exits, then an MmioWrite", () => {
    g = makeVm([
      ...asm.movDx(0x3f8), ...asm.movAl(0x41), ...asm.outDxAl,
      ...asm.movDx(0x80), ...asm.movAl(0x42), ...asm.outDxAl,
      ...asm.movRdi(MMIO_BASE + 0x10), ...asm.movEax(0x01020304), ...asm.movMemRdiEax,
      ...asm.ud2,
    ]);
    const a = expectKind(g.vcpu.run(), "IoOut");
    expect(a).toMatchObject({ port: 0x3f8, size: 1, count: 1 });
    expect([...a.data]).toEqual([0x41]);
    const b = expectKind(g.vcpu.run(), "IoOut");
    expect(b).toBe(a);
    expect(b).toMatchObject({ port: 0x80, size: 1, count: 1 });
    expect([...b.data]).toEqual([0x42]);
    const m = expectKind(g.vcpu.run(), "MmioWrite");
    expect(m).toMatchObject({ address: MMIO_BASE + 0x10, len: 4 });
    expect([...m.data]).toEqual([4, 3, 2, 1]);
    expect(a.kind).toBe("IoOut"); // the IoOut object keeps its kind
    expectKind(g.vcpu.run(), "Shutdown");
  });

  it("Hlt at CPL0 (emulated here) exits as Hlt without an irqchip", () => {
    g = makeVm([...asm.hlt, ...asm.ud2], { cpl: 0 });
    expectKind(g.vcpu.run(), "Hlt");
  });

  it("Shutdown: ud2 with no IDT triple-faults", () => {
    g = makeVm([...asm.ud2]);
    expectKind(g.vcpu.run(), "Shutdown");
  });

  it("InternalError: an instruction KVM's emulator cannot handle at CPL0", () => {
    // vzeroupper (VEX-encoded) is not emulated: KVM reports an emulation failure.
    g = makeVm([0xc5, 0xf8, 0x77, ...asm.ud2], { cpl: 0 });
    const e = g.vcpu.run();
    if (e.kind === "InternalError") {
      expect(e.suberror).toBe(KVM_INTERNAL_ERROR_EMULATION);
      expect(e.data.length).toBeGreaterThan(0);
    } else {
      // Hosts with hardware CPL0 execution run it natively; the guest then reaches ud2.
      expect(e.kind).toBe("Shutdown");
    }
  });

  it("Debug: single-step through KVM_SET_GUEST_DEBUG (at CPL0: the emulator honours it here)", () => {
    g = makeVm([...asm.movAl(1), ...asm.movAl(2), ...asm.ud2], { cpl: 0 });
    g.vcpu.setGuestDebug({ control: 0x1 | 0x2 }); // ENABLE | SINGLESTEP
    const e = expectKind(g.vcpu.run(), "Debug");
    expect(e.exception).toBe(1); // #DB
    expect(e.pc).toBe(0x1002n);
    g.vcpu.setGuestDebug({ control: 0 });
    expectKind(g.vcpu.run(), "Shutdown");
  });

  it("X86Rdmsr / X86Wrmsr with user-space MSR exits; the guest reads the answer", () => {
    // CPL0 (emulated): rdmsr 0xdead; out 0x3f8, eax; wrmsr 0xdead; ud2
    g = makeVm([...asm.movEcx(0xdead), 0x0f, 0x32, ...asm.movDx(0x3f8), ...asm.outDxEax, 0x0f, 0x30, ...asm.ud2], {
      cpl: 0,
      setup: (vm) => vm.enableCap(Cap.X86_USER_SPACE_MSR, [KVM_MSR_EXIT_REASON_UNKNOWN]),
    });
    const rd = expectKind(g.vcpu.run(), "X86Rdmsr");
    expect(rd).toMatchObject({ index: 0xdead, reason: KVM_MSR_EXIT_REASON_UNKNOWN });
    g.vcpu.setMsrExitResult(0x1234n);
    const out = expectKind(g.vcpu.run(), "IoOut");
    expect([...out.data]).toEqual([0x34, 0x12, 0, 0]);
    const wr = expectKind(g.vcpu.run(), "X86Wrmsr");
    expect(wr.index).toBe(0xdead);
    expect(wr.data & 0xffffffffn).toBe(0x1234n); // eax written back; edx holds the port
    g.vcpu.setMsrExitResult(0n, true); // refuse: the guest takes #GP, and with no IDT shuts down
    expectKind(g.vcpu.run(), "Shutdown");
  });

  it("IrqWindowOpen when an interrupt window is requested and IF=1", () => {
    g = makeVm([...asm.jmpSelf]);
    const r = g.vcpu.getRegs();
    r.rflags |= 0x200n; // IF
    g.vcpu.setRegs(r);
    g.vcpu.setRequestInterruptWindow(true);
    expectKind(g.vcpu.run(), "IrqWindowOpen");
    expect(g.vcpu.readyForInterruptInjection).toBe(true);
    g.vcpu.interrupt(0x20); // with no IDT the guest then shuts down
    g.vcpu.setRequestInterruptWindow(false);
    expectKind(g.vcpu.run(), "Shutdown");
  });

  it("many exits in a row reuse views and keep data correct", () => {
    const code = [...asm.movEcx(50), ...asm.movDx(0x3f8)];
    const loop = code.length;
    code.push(...asm.movAl(0), 0x88, 0xc8 /* mov al, cl */, ...asm.outDxAl, ...asm.decEcx);
    code.push(...asm.jnz(code.length, loop), ...asm.ud2);
    g = makeVm(code);
    const seen: number[] = [];
    for (;;) {
      const e = g.vcpu.run();
      if (e.kind !== "IoOut") {
        expect(e.kind).toBe("Shutdown");
        break;
      }
      seen.push(e.data[0]!);
    }
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => 50 - i));
  });
});
